"""`hotstage serve` behind its key gate (acquisition.catalog_server): read-only and read-write keys, header only.

A real server: ``python -m hotstage.acquisition.cli serve`` in a subprocess on 127.0.0.1, serving an embedded catalog that
holds one run; clients are tiled's own (``from_uri(uri, api_key=...)``, which sends ``Authorization: Apikey``),
httpx for what tiled's client would not send, and hotstage's writer (``HOTSTAGE_TILED_URI`` + ``TILED_API_KEY``).
"""

from __future__ import annotations

import os
import secrets
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import bluesky.plans as bp
import httpx
import numpy as np
import pytest
from bluesky import RunEngine
from ophyd.sim import SynSignal, det, motor
from tiled.client import from_uri
from tiled.client.utils import ClientError

from hotstage.acquisition.catalog_server import KEYS_FILE, ServeError, parse_database, resolve_keys
from hotstage.acquisition.storage import CatalogWriter, close_catalog, open_catalog

warnings.filterwarnings("ignore", category=DeprecationWarning)
WRITE_KEY = secrets.token_hex(24)
READ_KEY = secrets.token_hex(24)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TILED_API_KEY", "HOTSTAGE_READ_API_KEY", "HOTSTAGE_TILED_URI", "HOTSTAGE_DATA",
                        "HOTSTAGE_CATALOG_DATABASE", "PGPASSWORD")}
    return {**env, **extra}


def serve_cmd(data: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "hotstage.acquisition.cli", "--data", str(data), "serve", *args]


def scan_documents(n: int = 5) -> list[tuple[str, dict]]:
    """A scan of det and a 100-float spectrum (a zarr array), as documents."""
    rng = np.random.default_rng(5)
    spectrum = SynSignal(func=lambda: rng.random(100), name="spectrum")
    docs: list[tuple[str, dict]] = []
    RE = RunEngine()
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    RE(bp.scan([det, spectrum], motor, -1, 1, n), sample={"name": "gate"})
    return docs


class Server:
    """The `hotstage serve` subprocess and what it printed (also used by tests/test_facility.py)."""

    def __init__(self, data: Path, *args: str, **env: str) -> None:
        """Start ``hotstage --data DATA serve --port P ARGS`` with both keys (and ``env``) in its environment."""
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        env = serve_env(TILED_API_KEY=WRITE_KEY, HOTSTAGE_READ_API_KEY=READ_KEY, **env)
        self.err = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe nobody drains (the server logs requests)
        self.proc = subprocess.Popen(serve_cmd(data, "--port", str(self.port), *args), stdout=subprocess.PIPE,
                                     stderr=self.err, text=True, env=env)
        self.lines: list[str] = []  # a thread reads stdout: select() cannot see lines already in the text buffer
        threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True).start()
        deadline = time.monotonic() + 240
        while "clients:" not in self.stdout:
            assert self.proc.poll() is None, self.stderr
            assert time.monotonic() < deadline, "no start message"
            time.sleep(0.2)
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.uri}/api/v1/", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise TimeoutError("server does not answer")

    @property
    def stdout(self) -> str:
        return "".join(self.lines)

    @property
    def stderr(self) -> str:
        self.err.seek(0)
        return self.err.read()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.err.close()


@pytest.fixture(scope="module")
def run_docs() -> list[tuple[str, dict]]:
    return scan_documents()


@pytest.fixture(scope="module")
def server(tmp_path_factory, run_docs):
    """A data directory with one run, served with explicit keys (environment); stopped after the module."""
    data = tmp_path_factory.mktemp("served") / "hotstage-data"
    catalog = open_catalog(data)
    try:
        with CatalogWriter(catalog, process=False) as writer:
            for name, doc in run_docs:
                writer(name, doc)
            assert writer.flush(timeout=60) and not writer.failed
    finally:
        close_catalog(catalog)
    srv = Server(data)
    yield srv
    srv.stop()


@pytest.mark.e2e
def test_start_message_shows_only_key_prefixes(server):
    assert WRITE_KEY not in server.stdout and READ_KEY not in server.stdout
    assert f"{WRITE_KEY[:4]}…" in server.stdout and f"{READ_KEY[:4]}…" in server.stdout
    assert f"HOTSTAGE_TILED_URI={server.uri}" in server.stdout


@pytest.mark.e2e
@pytest.mark.parametrize("path", ["/docs", "/openapi.json", "/api/v1/search/", "/api/v1/metadata/", "/"])
def test_nothing_without_a_key(server, path):
    assert httpx.get(server.uri + path, timeout=10).status_code == 401
    wrong = {"Authorization": f"Apikey {secrets.token_hex(24)}"}
    assert httpx.get(server.uri + path, headers=wrong, timeout=10).status_code == 401
    ok = httpx.get(server.uri + "/docs", headers={"Authorization": f"Apikey {READ_KEY}"}, timeout=10)
    assert ok.status_code == 200


@pytest.mark.e2e
def test_keys_in_urls_are_refused(server):
    for key in (WRITE_KEY, READ_KEY):
        assert httpx.get(f"{server.uri}/api/v1/search/?api_key={key}", timeout=10).status_code == 400
        with_header = httpx.get(f"{server.uri}/api/v1/search/?api_key={key}",
                                headers={"Authorization": f"Apikey {key}"}, timeout=10)
        assert with_header.status_code == 400
    assert server.proc.poll() is None


@pytest.mark.e2e
def test_read_key_reads_but_cannot_change_a_run(server, run_docs):
    uid = run_docs[0][1]["uid"]
    reader = from_uri(server.uri, api_key=READ_KEY)  # tiled's client: the key goes in the header
    run = reader[uid]
    stop = dict(run.metadata["stop"])
    assert stop["exit_status"] == "success"
    events = [d for n, d in run_docs if n == "event"]
    ds = run["primary"].read()  # table (scalars) and zarr (spectrum)
    np.testing.assert_array_equal(ds["spectrum"].values, np.array([e["data"]["spectrum"] for e in events]))
    np.testing.assert_allclose(ds["motor"].values, np.linspace(-1, 1, 5))
    assert [n for n, _ in run.documents()][0] == "start"

    with pytest.raises(ClientError, match="403"):
        run.update_metadata({"stop": {**stop, "exit_status": "tampered"}})
    headers = {"Authorization": f"Apikey {READ_KEY}"}
    for method in ("PATCH", "PUT", "POST", "DELETE"):
        r = httpx.request(method, f"{server.uri}/api/v1/metadata/{uid}", headers=headers, json={}, timeout=10)
        assert r.status_code == 403, (method, r.text)
    assert from_uri(server.uri, api_key=READ_KEY)[uid].metadata["stop"]["exit_status"] == "success"


@pytest.mark.e2e
def test_write_key_can_change_a_run(server, run_docs):
    uid = run_docs[0][1]["uid"]
    run = from_uri(server.uri, api_key=WRITE_KEY)[uid]
    stop = dict(run.metadata["stop"])
    run.update_metadata({"stop": {**stop, "exit_status": "tampered"}})
    try:
        assert from_uri(server.uri, api_key=READ_KEY)[uid].metadata["stop"]["exit_status"] == "tampered"
    finally:
        run.update_metadata({"stop": stop})
    assert from_uri(server.uri, api_key=READ_KEY)[uid].metadata["stop"]["exit_status"] == "success"


@pytest.mark.e2e
def test_hotstage_writer_writes_through_the_gate_with_the_write_key(server, monkeypatch, tmp_path):
    monkeypatch.setenv("HOTSTAGE_TILED_URI", server.uri)
    monkeypatch.setenv("TILED_API_KEY", WRITE_KEY)
    monkeypatch.setenv("HOTSTAGE_SPOOL", str(tmp_path / "spool"))
    docs = scan_documents(4)
    catalog = open_catalog()
    try:
        with CatalogWriter(catalog) as writer:  # the writer process, over HTTP
            for name, doc in docs:
                writer(name, doc)
            assert writer.flush(timeout=120)
            assert not writer.errors and not writer.failed
    finally:
        close_catalog(catalog)
    run = from_uri(server.uri, api_key=READ_KEY)[docs[0][1]["uid"]]
    assert run.metadata["stop"]["num_events"] == {"primary": 4}
    events = [d for n, d in docs if n == "event"]
    np.testing.assert_array_equal(run["primary"].read()["spectrum"].values,
                                  np.array([e["data"]["spectrum"] for e in events]))


@pytest.mark.e2e
def test_non_loopback_host_needs_an_explicit_key(tmp_path):
    result = subprocess.run(serve_cmd(tmp_path / "d", "--host", "0.0.0.0", "--port", str(free_port())),
                            capture_output=True, text=True, timeout=120, env=serve_env())
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "0.0.0.0" in result.stderr and "TILED_API_KEY" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (tmp_path / "d").exists()  # nothing created: no directory, no keys file


@pytest.mark.e2e
def test_port_in_use_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(serve_cmd(tmp_path / "d", "--port", str(port)), capture_output=True, text=True,
                                timeout=120, env=serve_env(TILED_API_KEY=WRITE_KEY))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and f"127.0.0.1:{port}" in result.stderr and "in use" in result.stderr
    assert result.stdout == "" and not (tmp_path / "d" / KEYS_FILE).exists()  # nothing announced or generated


def test_keys_are_generated_once_and_stored_owner_only(tmp_path):
    keys = resolve_keys(tmp_path, environ={})
    path = tmp_path / KEYS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys.write != keys.read and not keys.write_explicit
    again = resolve_keys(tmp_path, environ={})  # reused at the next start
    assert (again.write, again.read) == (keys.write, keys.read) and "kept in" in again.write_source
    explicit = resolve_keys(tmp_path, environ={"TILED_API_KEY": WRITE_KEY})
    assert explicit.write == WRITE_KEY and explicit.write_explicit and explicit.read == keys.read
    assert resolve_keys(tmp_path, api_key=READ_KEY, environ={"TILED_API_KEY": WRITE_KEY}).write == READ_KEY
    with pytest.raises(ServeError, match="--api-key"):
        resolve_keys(tmp_path, api_key="short")
    with pytest.raises(ServeError, match="different keys"):
        resolve_keys(tmp_path, api_key=WRITE_KEY, read_key=WRITE_KEY)


def test_a_database_uri_is_split_into_a_printable_uri_and_the_password():
    db = parse_database("postgresql://rig%40a:p%2Fw@db.example.org/hot%20stage", "$HOTSTAGE_CATALOG_DATABASE")
    assert (db.host, db.port, db.name, db.user, db.password) == ("db.example.org", 5432, "hot stage", "rig@a", "p/w")
    assert db.uri == "postgresql://rig%40a@db.example.org:5432/hot%20stage"  # no password: safe to print
    assert db.environment() == {"PGUSER": "rig@a", "PGPASSWORD": "p/w"}  # how it reaches the drivers
    plain = parse_database("postgres://127.0.0.1:5433/catalog")
    assert plain.uri == "postgresql://127.0.0.1:5433/catalog" and plain.environment() == {}  # libpq's defaults


@pytest.mark.parametrize(
    ("uri", "needle"),
    [
        ("postgresql://hotstage:hunter22@127.0.0.1/hotstage", "$PGPASSWORD"),  # a password in `ps`
        ("mysql://hotstage@127.0.0.1/hotstage", "mysql:// is not a PostgreSQL URI"),
        ("127.0.0.1/hotstage", "no scheme is not a PostgreSQL URI"),
        ("postgresql://hotstage@127.0.0.1:5432/", "no database name"),
        ("postgresql:///hotstage", "no host"),
        ("postgresql://hotstage:hunter22@127.0.0.1:99999/hotstage", "not a database URI"),
        ("postgresql://hotstage@127.0.0.1/hotstage?sslmode=require", "PGSSLMODE"),
    ],
)
def test_a_bad_database_uri_is_one_line_without_the_password(uri, needle):
    with pytest.raises(ServeError) as err:
        parse_database(uri)
    message = str(err.value)
    assert needle in message and message.startswith("--database") and "\n" not in message
    assert "hunter22" not in message
