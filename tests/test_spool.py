"""The storage spool (acquisition.spool): nothing acquired is lost when the acquiring process dies, nothing is
written twice when the spool is flushed. The server-outage case is in tests/test_storage_server.py.

The crash is real: a child process runs a plan with the default (process) CatalogWriter on an embedded catalog
and SIGKILLs itself mid-run; `hotstage spool flush` then writes what the spool holds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from acquisition.jsonl import dump_line, load_jsonl
from acquisition.spool import RECOVERED_REASON, Spool, pending_runs
from acquisition.storage import close_catalog, open_catalog

HOTSTAGE = shutil.which("hotstage") or str(Path(sys.executable).with_name("hotstage"))
SEND_INTERVAL_EVENTS = 10
"""Crash bound in events: one courier tick (50 ms) of a plan acquiring every 10 ms, with a margin of 2x."""


def test_spool_files_per_run_and_finish(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    start = {"uid": "run-1", "time": 1.0}
    desc = {"uid": "d-1", "run_start": "run-1", "name": "primary", "data_keys": {}, "time": 1.0}
    event = {"uid": "e-1", "descriptor": "d-1", "seq_num": 1, "time": 1.1, "data": {"x": np.arange(3.0)},
             "timestamps": {"x": 1.1}}
    spool.append([(1, "start", start), (2, "descriptor", desc), (3, "event", event)])
    spool.append([(4, "start", {"uid": "run-2", "time": 2.0})])
    assert [p.name for p in pending_runs(tmp_path)] == ["run-1.jsonl", "run-2.jsonl"]
    docs = list(load_jsonl(tmp_path / "run-1.jsonl"))
    assert [n for n, _ in docs] == ["start", "descriptor", "event"] and docs[2][1]["data"]["x"] == [0.0, 1.0, 2.0]
    spool.finish("run-1")
    assert [p.name for p in pending_runs(tmp_path)] == ["run-2.jsonl"]
    spool.close()
    assert spool.spooled == 4


def test_spool_writes_large_arrays_in_binary_bit_exact(tmp_path: Path) -> None:
    """Large arrays are spooled as base64 of their bytes (cheap for the courier thread), read back exactly;
    lines written the old way (arrays as lists) still read."""
    spectrum = np.random.default_rng(1).random(4000)
    spectrum[[3, 7]] = [np.nan, -np.inf]
    image = np.arange(200, dtype=np.uint16).reshape(10, 20)
    event = {"uid": "e-1", "descriptor": "d-1", "seq_num": 1, "time": 1.1, "data": {
        "spectrum": spectrum, "image": image, "small": np.arange(3.0), "det": float("nan"),
        "text": '@not-a-placeholder:0@"'}, "timestamps": {"spectrum": 1.1}}
    spool = Spool(tmp_path)
    spool.append([(1, "start", {"uid": "run-1", "time": 1.0}),
                  (2, "descriptor", {"uid": "d-1", "run_start": "run-1", "data_keys": {}, "time": 1.0}),
                  (3, "event", event)])
    spool.close()
    text = (tmp_path / "run-1.jsonl").read_text()
    assert text.count("__ndarray__") == 2 and len(text) < 4000 * 12  # not 4000 float reprs
    (_, _, (_, got)) = load_jsonl(tmp_path / "run-1.jsonl")
    data = got["data"]
    assert data["spectrum"].dtype == np.float64 and np.array_equal(data["spectrum"], spectrum, equal_nan=True)
    assert data["image"].dtype == np.uint16 and data["image"].shape == (10, 20) and (data["image"] == image).all()
    assert data["small"] == [0.0, 1.0, 2.0] and np.isnan(data["det"]) and data["text"] == event["data"]["text"]
    old = tmp_path / "old.jsonl"
    old.write_text(dump_line("event", event))  # the format before binary arrays (and of recorded runs)
    ((_, got_old),) = load_jsonl(old)
    assert np.array_equal(got_old["data"]["spectrum"], spectrum, equal_nan=True)


def test_torn_last_line_is_skipped(tmp_path: Path) -> None:
    """A process killed while writing leaves half a line: it was never on disk whole, so it is not a document."""
    path = tmp_path / "x.jsonl"
    path.write_text(dump_line("start", {"uid": "a"}) + dump_line("stop", {"uid": "b", "run_start": "a"})[:-9])
    assert [n for n, _ in load_jsonl(path)] == ["start"]
    event = {"uid": "e", "data": {"x": np.arange(100.0)}}
    path.write_text(dump_line("start", {"uid": "a"}) + dump_line("event", event, binary_arrays=True)[:-40])
    assert [n for n, _ in load_jsonl(path)] == ["start"]  # cut inside the base64 text


CRASHING_RUN = """
import os, signal, sys
import bluesky.plan_stubs as bps
from bluesky import RunEngine
from ophyd.sim import SynSignal, det
import numpy as np
from acquisition.storage import CatalogWriter

data, log = sys.argv[1], open(sys.argv[2], "w")
writer = CatalogWriter(data)            # the default process writer, spool in <data>/spool
RE = RunEngine({})
RE.subscribe(writer)
def note(name, doc):
    if name == "event":
        log.write(f"{doc['seq_num']}\\n"); log.flush()
RE.subscribe(note)
spectrum = SynSignal(func=lambda: np.random.default_rng(0).random(2000), name="spectrum")
def plan():
    yield from bps.open_run(md={"purpose": "crash test"})
    for i in range(10000):
        yield from bps.trigger_and_read([det, spectrum])
        yield from bps.sleep(0.01)
        if i == 60:
            os.kill(os.getpid(), signal.SIGKILL)   # no cleanup, no stop document, nothing flushed
RE(plan())
"""


def test_crash_of_the_process_loses_at_most_one_courier_tick(tmp_path: Path) -> None:
    data = tmp_path / "data"
    acquired_log = tmp_path / "acquired.txt"
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(CRASHING_RUN), str(data), str(acquired_log)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == -9, proc.stderr[-2000:]
    acquired = [int(s) for s in acquired_log.read_text().split()]
    assert len(acquired) == 61
    (spooled,) = pending_runs(data / "spool")  # the run never got a stop: its spool file is still there

    env = {**os.environ, "HOTSTAGE_DATA": str(data)}
    env.pop("HOTSTAGE_TILED_URI", None)
    flushed = subprocess.run([HOTSTAGE, "spool", "flush", "--json"], capture_output=True, text=True, env=env,
                             timeout=180)
    assert flushed.returncode == 0, flushed.stderr[-2000:]
    (result,) = json.loads(flushed.stdout)
    assert result["run_uid"] == spooled.stem and result["status"] == "written" and result["stop_added"]
    assert pending_runs(data / "spool") == []

    catalog = open_catalog(data)
    try:
        run = catalog[spooled.stem]
        seq = np.asarray(run["primary"].base["internal"].read(["seq_num"])["seq_num"], dtype=int)
        stop = run.metadata["stop"]
    finally:
        close_catalog(catalog)
    assert len(set(seq.tolist())) == len(seq)  # nothing written twice (the dying writer had stored some)
    assert set(seq.tolist()) <= set(acquired)
    assert len(acquired) - len(seq) <= SEND_INTERVAL_EVENTS, (len(acquired), len(seq))
    assert sorted(seq.tolist()) == list(range(1, len(seq) + 1))  # what is lost is only the newest
    assert stop["exit_status"] == "fail" and stop["reason"] == RECOVERED_REASON
    assert stop["num_events"] == {"primary": len(seq)}

    again = subprocess.run([HOTSTAGE, "spool", "flush", "--json"], capture_output=True, text=True, env=env,
                           timeout=180)
    assert again.returncode == 0 and json.loads(again.stdout) == []


def test_a_run_still_being_written_is_not_flushed(tmp_path: Path) -> None:
    """The flush skips a spool file whose writer still holds its lock (a run being acquired elsewhere)."""
    from acquisition.spool import flush_spool

    spool = Spool(tmp_path / "spool")
    spool.append([(1, "start", {"uid": "live-run", "time": 1.0, "scan_id": 1})])
    catalog = open_catalog(tmp_path / "data")
    try:
        (result,) = flush_spool(catalog, tmp_path / "spool")
        assert result.status == "in use" and "live-run" not in catalog
    finally:
        spool.close()
        close_catalog(catalog)
    assert [p.stem for p in pending_runs(tmp_path / "spool")] == ["live-run"]
