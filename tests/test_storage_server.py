"""Server mode of acquisition.storage: a real ``tiled serve config`` subprocess on 127.0.0.1, written by CatalogWriter.

The server serves a SQLite catalog in tmp_path with a writable zarr directory and a SQLite table store, a
single-user API key (alphanumeric, DESIGN.md "Facts about the stack") and the BlueskyRun -> json-seq exporter
(needed by ``run.documents()``); config keys checked against tiled 0.2.20's
``tiled/config_schemas/service_configuration.yml`` (``trees[].tree/path/args``, ``authentication.
single_user_api_key``, ``media_types``, ``uvicorn.host/port``).

PostgreSQL variant (not run here): install PostgreSQL 15 from Debian (``apt-get install postgresql``), create
a database, and replace the two SQLite URIs in the config by ``postgresql+asyncpg://user:pw@127.0.0.1/catalog``
(``args.uri``) and ``postgresql://user:pw@127.0.0.1/tables`` (the table entry of ``writable_storage``);
everything else in these tests stays the same.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import httpx
import numpy as np
import pytest
import bluesky.plan_stubs as bps
import bluesky.plans as bp
from bluesky import RunEngine
from ophyd.sim import SynSignal, det, motor
from tiled.client import from_uri

from hotstage.acquisition.storage.spool import flush_spool, pending_runs
from hotstage.acquisition.storage import CatalogWriter, close_catalog, describe_location, open_catalog, read_stream

# End to end (`pytest -m e2e`, run by .ci/run): a Tiled server over HTTP.
pytestmark = pytest.mark.e2e

warnings.filterwarnings("ignore", category=DeprecationWarning)
ARRAY_LEN = 4000
TILED = Path(sys.executable).with_name("tiled")


def free_port() -> int:
    """Ask the kernel for a free TCP port on 127.0.0.1 (released at once; the server binds it next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TiledServer:
    """A ``tiled serve config`` subprocess bound to 127.0.0.1 on a fixed port (restartable on the same port)."""

    def __init__(self, root: Path) -> None:
        """Write the config for a catalog under ``root``."""
        self.root = root
        self.port = free_port()
        self.api_key = secrets.token_hex(16)  # alphanumeric, as tiled requires
        self.uri = f"http://127.0.0.1:{self.port}"
        (root / "data").mkdir(parents=True, exist_ok=True)
        self.config = root / "cfg.yml"
        self.config.write_text(
            "trees:\n"
            "  - path: /\n"
            "    tree: catalog\n"
            "    args:\n"
            f"      uri: sqlite+aiosqlite:///{root / 'catalog.db'}\n"
            "      writable_storage:\n"
            f"        - file://{root / 'data'}\n"
            f"        - sqlite:///{root / 'tables.sqlite'}\n"
            "      init_if_not_exists: true\n"
            "authentication:\n"
            f"  single_user_api_key: {self.api_key}\n"
            "media_types:\n"
            "  BlueskyRun:\n"
            "    application/json-seq: bluesky_tiled_plugins.exporters:json_seq_exporter\n"
            "uvicorn:\n"
            "  host: 127.0.0.1\n"
            f"  port: {self.port}\n"
        )
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it answers."""
        self.log = open(self.root / "server.log", "ab")
        self.proc = subprocess.Popen([str(TILED), "serve", "config", str(self.config)],
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=self.root)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tiled server exited: {(self.root / 'server.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.uri}/api/v1/", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError("tiled server did not answer")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A running Tiled server with a fresh catalog; torn down after the module."""
    srv = TiledServer(tmp_path_factory.mktemp("tiled-server"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def spool_in_tmp(tmp_path, monkeypatch):
    """Server-mode writers spool under the default data dir (./hotstage-data/spool): keep it in tmp_path."""
    monkeypatch.setenv("HOTSTAGE_SPOOL", str(tmp_path / "spool"))
    return tmp_path / "spool"


@pytest.fixture
def spectrum():
    """A 4000-float array signal with reproducible values."""
    rng = np.random.default_rng(2)
    return SynSignal(func=lambda: rng.random(ARRAY_LEN), name="spectrum")


def test_run_written_through_server_and_read_by_plain_client(server, spectrum, monkeypatch):
    monkeypatch.setenv("HOTSTAGE_TILED_URI", server.uri)
    monkeypatch.setenv("TILED_API_KEY", server.api_key)
    assert describe_location() == f"Tiled server {server.uri}"
    catalog = open_catalog()  # from the environment
    try:
        RE = RunEngine()
        recorded = []
        RE.subscribe(lambda name, doc: recorded.append((name, doc)))
        with CatalogWriter(catalog) as writer:
            assert writer.location.uri == server.uri and writer.pid != os.getpid()
            RE.subscribe(writer)
            (uid,) = RE(bp.scan([det, spectrum], motor, -1, 1, 5), sample={"name": "server-test"})
            assert writer.flush(timeout=30)
            assert not writer.errors and not writer.failed
    finally:
        close_catalog(catalog)

    plain = from_uri(server.uri, api_key=server.api_key)
    run = plain[uid]
    assert run.metadata["start"]["sample"] == {"name": "server-test"}
    assert run.metadata["stop"]["exit_status"] == "success"
    ds = run["primary"].read()
    events = [d for n, d in recorded if n == "event"]
    np.testing.assert_allclose(ds["motor"].values, np.linspace(-1, 1, 5))
    np.testing.assert_array_equal(ds["spectrum"].values, np.array([e["data"]["spectrum"] for e in events]))
    names = [name for name, _ in run.documents()]  # json-seq exporter configured on the server
    assert names[0] == "start" and names[-1] == "stop" and "descriptor" in names
    assert httpx.get(f"{server.uri}/api/v1/search/", timeout=5).status_code == 401  # no key, no access


def run_with_outage(server, spectrum, points: int):
    """A run of ``points`` events (det + spectrum); the server is stopped before the 4th, once the first are stored."""
    yield from bps.open_run()
    for i in range(points):
        if i == 3:
            yield from bps.sleep(0.5)  # let the first events be stored
            server.stop()
        yield from bps.trigger_and_read([det, spectrum])
        yield from bps.sleep(0.05)
    yield from bps.close_run()


def test_server_outage_mid_run_is_retried_and_loses_nothing(server, spectrum):
    """Stop the server while a run is acquired, start it again: the writer retries and the run is complete."""
    catalog = open_catalog(uri=server.uri, api_key=server.api_key)
    writer = CatalogWriter(catalog, flush_interval=0.1, backoff=(0.1, 0.5))
    RE = RunEngine()
    RE.subscribe(writer)
    recorded = []
    RE.subscribe(lambda name, doc: recorded.append((name, doc)))
    points = 10

    try:
        RE(run_with_outage(server, spectrum, points))
        time.sleep(0.5)
        assert writer.backlog > 0 and not writer.flush(timeout=0.5)
        server.start()
        assert writer.flush(timeout=60)
        # tiled's client retries connection errors itself ("Retrying…"); whatever reaches the writer is transient
        assert all(e.transient for e in writer.errors) and not writer.failed
        assert writer.restart_count == 0
    finally:
        assert writer.close(timeout=30)
        close_catalog(catalog)
    uid = recorded[0][1]["uid"]
    run = from_uri(server.uri, api_key=server.api_key)[uid]
    assert run.metadata["stop"]["num_events"] == {"primary": points}
    seq_nums = run["primary"].base["internal"].read(["seq_num"])["seq_num"]
    np.testing.assert_array_equal(seq_nums, np.arange(1, points + 1))
    events = [d for n, d in recorded if n == "event"]
    np.testing.assert_array_equal(read_stream(run)["spectrum"].values,
                                  np.array([e["data"]["spectrum"] for e in events]))


def test_outage_outlasting_the_session_is_written_from_the_spool(server, spectrum, spool_in_tmp):
    """The server goes away and the session ends before it is back: close() keeps the documents in the spool;
    once the server is back, flush_spool writes the run, every event once, with its own stop document."""
    catalog = open_catalog(uri=server.uri, api_key=server.api_key)
    writer = CatalogWriter(catalog, flush_interval=0.1, backoff=(0.1, 0.5))
    assert writer.spool.directory == spool_in_tmp
    RE = RunEngine()
    RE.subscribe(writer)
    recorded = []
    RE.subscribe(lambda name, doc: recorded.append((name, doc)))
    points = 8

    try:
        RE(run_with_outage(server, spectrum, points))  # the run goes on without its catalog
        assert not writer.close(timeout=3)  # not stored: kept in the spool
        assert not writer.alive
    finally:
        close_catalog(catalog)
    uid = recorded[0][1]["uid"]
    (spooled,) = pending_runs(spool_in_tmp)
    assert spooled.stem == uid
    server.start()
    client = from_uri(server.uri, api_key=server.api_key)
    (result,) = flush_spool(client, spool_in_tmp)
    assert result.status == "written" and not result.stop_added and result.events == points, result
    assert pending_runs(spool_in_tmp) == []
    run = client[uid]
    assert run.metadata["stop"]["exit_status"] == "success"
    assert run.metadata["stop"]["num_events"] == {"primary": points}
    seq_nums = run["primary"].base["internal"].read(["seq_num"])["seq_num"]
    np.testing.assert_array_equal(seq_nums, np.arange(1, points + 1))  # the first events were stored live: once
    events = [d for n, d in recorded if n == "event"]
    np.testing.assert_array_equal(read_stream(run)["spectrum"].values,
                                  np.array([e["data"]["spectrum"] for e in events]))
