"""hotstage under bluesky-queueserver: Redis and `hotstage qserver` (the RE Manager with the hotstage profile) on the
simulated rig, driven through bluesky-queueserver-api the way a beamline client does.

The fixture starts its own `redis-server` (free port, temporary directory, nothing saved) and `hotstage qserver` on
free ZMQ ports; the test opens the environment, checks what the server lists, submits `insitu_ramp` with JSON
arguments (program as a dict, devices by name), runs the queue and finds the complete raw and derived runs in the
catalog; closing the environment closes the session (heater off, every document stored); SIGTERM stops it all.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

REDIS = shutil.which("redis-server")
PROGRAM = {"start_C": 25, "segments": [{"kind": "ramp", "to_C": 60, "rate_C_per_min": 10},
                                        {"kind": "cool", "to_C": 45, "rate_C_per_min": 10}]}
CADENCE = {"xrd": {"every_C": 5}, "pl": {"every_C": 5}}
START_TIMEOUT_S = 240.0
"""Generous: on a loaded 2-core machine the worker imports the stack, opens the rig, the catalog and the analysis."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def redis_addr(tmp_path: Path) -> Iterator[str]:
    """A Redis server of this test's own: free port, temporary directory, no persistence."""
    if REDIS is None:
        pytest.fail("redis-server is not installed (Debian: apt-get install redis-server; .ci/run installs it)")
    port = free_port()
    workdir = tmp_path / "redis"
    workdir.mkdir()
    proc = subprocess.Popen([REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        from hotstage.acquisition.qserver import redis_problem

        wait_for(lambda: redis_problem(f"127.0.0.1:{port}", timeout=1.0) is None, 30, "redis-server to answer")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


class QServer:
    """`hotstage qserver` in its own process, its output in a file."""

    def __init__(self, root: Path, redis_addr: str) -> None:
        self.root = root
        self.data = root / "data"
        self.control = f"tcp://127.0.0.1:{free_port()}"
        self.info = f"tcp://127.0.0.1:{free_port()}"
        self.rig = root / "rig.toml"
        self.rig.write_text("[rig]\ntime_scale = 240\n")
        self.log = root / "qserver.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hotstage.acquisition.cli", "qserver", "--redis-addr", redis_addr, "--rig",
             str(self.rig), "--data", str(self.data), "--zmq-control-addr", self.control,
             "--zmq-info-addr", self.info],
            stdout=self.log.open("w"), stderr=subprocess.STDOUT, cwd=root,
            env={**os.environ, "MPLBACKEND": "Agg"},
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def api(self) -> Any:
        from bluesky_queueserver_api.zmq import REManagerAPI

        return REManagerAPI(zmq_control_addr=self.control, timeout_recv=30.0)


@pytest.fixture
def qserver(tmp_path: Path, redis_addr: str) -> Iterator[QServer]:
    server = QServer(tmp_path, redis_addr)
    api = server.api()
    try:
        def up() -> bool:
            assert server.proc.poll() is None, server.output()
            try:
                return bool(api.status().get("manager_state"))
            except Exception:  # noqa: BLE001 - not listening yet
                return False

        wait_for(up, START_TIMEOUT_S, "the RE Manager to answer", interval=1.0)
        yield server
    finally:
        api.close()
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGTERM)
            try:
                server.proc.wait(timeout=180)
            except subprocess.TimeoutExpired:
                server.proc.kill()
                server.proc.wait()


def test_insitu_ramp_from_the_queue_server_is_stored_raw_and_derived(qserver: QServer) -> None:
    from bluesky_queueserver_api import BPlan

    api = qserver.api()
    try:
        api.environment_open()
        api.wait_for_idle(timeout=START_TIMEOUT_S)
        status = api.status()
        assert status["worker_environment_exists"] is True, qserver.output()[-3000:]
        assert status["re_state"] == "idle"

        # what the server offers: the hotstage plans with their parameters, no helper generators
        plans = api.plans_allowed()["plans_allowed"]
        assert {"insitu_ramp", "step_and_hold", "sintering_array", "count"} <= set(plans)
        assert not {"settle", "wait_until_cool", "pause_for_sample_change", "sintering_program"} & set(plans)
        params = {p["name"]: p for p in plans["insitu_ramp"]["parameters"]}
        assert list(params) == ["furnace", "detectors", "program", "cadence", "md"]
        assert params["program"]["annotation"]["type"] == "dict[str, typing.Any]"
        assert params["furnace"]["annotation"]["type"] == "__MOVABLE__"
        assert "__READABLE__" in params["detectors"]["annotation"]["type"]
        assert "segments" in params["program"]["description"]
        assert [p["name"] for p in plans["step_and_hold"]["parameters"]][:3] == ["furnace", "detectors",
                                                                                  "temperatures"]
        assert "compositions" in {p["name"] for p in plans["sintering_array"]["parameters"]}
        assert {"furnace", "xrd", "thz", "pl"} <= set(api.devices_allowed()["devices_allowed"])

        # a queue item is JSON only: devices by name, the program as its dict form
        item = BPlan("insitu_ramp", "furnace", {"xrd": "xrd", "pl": "pl"}, PROGRAM, cadence=CADENCE,
                     md={"operator": "qserver-test"})
        json.dumps(item.to_dict())
        added = api.item_add(item)
        assert added["success"], added
        assert api.status()["items_in_queue"] == 1
        api.queue_start()
        api.wait_for_idle(timeout=600)
        history = api.history_get()["items"]
        assert history and history[-1]["result"]["exit_status"] == "completed", history[-1]["result"]
        (uid,) = history[-1]["result"]["run_uids"]

        api.environment_close()
        api.wait_for_idle(timeout=START_TIMEOUT_S)
        assert api.status()["worker_environment_exists"] is False
        # closing the environment closed the session: heater confirmed off, every document stored
        wait_for(lambda: "queue server session closed" in qserver.output(), 120, "the session to close")
        assert "session closed: heater off (confirmed), every document stored" in qserver.output(), \
            qserver.output()[-3000:]
        # ... before the worker reported it was closing: the manager joined a finished process
        assert "Failed to properly join the worker process" not in qserver.output(), qserver.output()[-3000:]
    finally:
        api.close()

    from hotstage.acquisition.storage import close_catalog, open_catalog
    from hotstage.plans.program import TemperatureProgram
    from tiled.queries import Key

    catalog = open_catalog(qserver.data)
    try:
        raw = catalog[uid]
        start, stop = raw.metadata["start"], raw.metadata["stop"]
        assert stop["exit_status"] == "success"
        assert start["plan_name"] == "insitu_ramp" and start["operator"] == "qserver-test"
        args = json.loads(json.dumps(start["plan_args"]))
        assert args["furnace"] == "furnace" and args["detectors"] == {"xrd": "xrd", "pl": "pl"}
        assert args["limits"]["max_C"] == start["rig"]["limits"]["max_C"]  # the rig's limits were applied
        assert TemperatureProgram.from_dict(args["program"]) == TemperatureProgram.from_dict(PROGRAM)
        n_xrd = stop["num_events"]["xrd"]
        assert n_xrd >= 5 and raw["xrd"].read()["xrd_counts"].shape[0] == n_xrd
        assert stop["num_events"]["pl"] >= 5
        derived = list(catalog.search(Key("start.derived_from") == uid))
        assert len(derived) == 1, derived
        drun = catalog[derived[0]]
        assert drun.metadata["stop"]["exit_status"] == "success"
        assert sum(drun.metadata["stop"]["num_events"].values()) > 0
    finally:
        close_catalog(catalog)

    # SIGTERM: the manager is stopped in order and `hotstage qserver` exits 128 + 15
    qserver.proc.send_signal(signal.SIGTERM)
    assert qserver.proc.wait(timeout=180) == 143, qserver.output()[-3000:]
    assert "could not stop the RE Manager in order" not in qserver.output(), qserver.output()[-3000:]
    assert "Traceback" not in qserver.output(), qserver.output()[-5000:]


def test_the_workers_run_engine_drains_after_every_plan() -> None:
    """`RE(plan)`, `resume`, `abort`... end with the analysis drained and the writer flushed, even when the plan
    raised; every other attribute is the RunEngine's own (what the queue server's worker reads and sets)."""
    from hotstage.acquisition.qserver import DrainingRunEngine

    calls: list[str] = []

    class Engine:
        state = "idle"
        md: dict[str, Any] = {}

        def __call__(self, plan: Any, *subs: Any, **md: Any) -> tuple[str, ...]:
            calls.append("run")
            if plan == "fails":
                raise RuntimeError("plan failed")
            return ("uid",)

        def resume(self) -> tuple[str, ...]:
            calls.append("resume")
            return ()

    class Writer:
        def flush(self) -> None:
            calls.append("flush")

    class FakeSession:
        RE, writer = Engine(), Writer()

        def wait_for_analysis(self) -> float:
            calls.append("analysis")
            return 0.0

    RE = DrainingRunEngine(FakeSession())
    assert RE("plan", {"all": []}, operator="x") == ("uid",) and calls == ["run", "analysis", "flush"]
    with pytest.raises(RuntimeError, match="plan failed"):
        RE("fails")
    assert calls[3:] == ["run", "analysis", "flush"]
    RE.resume()
    assert calls[6:] == ["resume", "analysis", "flush"]
    assert RE.state == "idle"
    RE.md = {"beamline": "lab"}
    assert FakeSession.RE.md == {"beamline": "lab"}


def test_redis_addresses_as_start_re_manager_takes_them() -> None:
    from hotstage.acquisition.qserver import redis_host_port

    assert redis_host_port("localhost") == ("localhost", 6379)
    assert redis_host_port("127.0.0.1:6380/2") == ("127.0.0.1", 6380)
    assert redis_host_port("redis://db.lab:7000") == ("db.lab", 7000)
    for bad in (":6379", "host:port", "host:70000"):
        with pytest.raises(ValueError, match="--redis-addr"):
            redis_host_port(bad)


def test_qserver_without_redis_is_one_line_exit_2(tmp_path: Path) -> None:
    """No Redis at the address: one line naming it, exit status 2, no manager started."""
    port = free_port()
    result = subprocess.run([sys.executable, "-m", "hotstage.acquisition.cli", "qserver", "--redis-addr",
                             f"127.0.0.1:{port}", "--data", str(tmp_path / "d")],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hotstage: error: --redis-addr") and f":{port}" in lines[0], lines
    assert not (tmp_path / "d").exists()
