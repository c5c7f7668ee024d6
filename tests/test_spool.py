"""The storage spool (acquisition/storage/spool.py): nothing acquired is lost when the acquiring process dies,
nothing is written twice when the spool is flushed. The server-outage case is in tests/test_storage_server.py.

The crash is real: a child process runs a plan with the default (process) CatalogWriter on an embedded catalog
and SIGKILLs itself mid-run; `hotstage spool flush` then writes what the spool holds.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hotstage.acquisition.jsonl import dump_line, load_jsonl
from hotstage.acquisition.storage.spool import RECOVERED_REASON, Spool, pending_runs
from hotstage.acquisition.storage import close_catalog, open_catalog

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
from hotstage.acquisition.storage import CatalogWriter

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


@pytest.mark.slow  # the attack table's SIGKILL / read-only / disk-full rows cover the same outcome in CI
@pytest.mark.e2e  # storage under attack (killed or blocked processes, full or read-only disks): pytest -m e2e
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
    from hotstage.acquisition.storage.spool import flush_spool

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


# ---------------------------------------------------------------------------------------------- damage and full disk
def a_run(points: int = 6, length: int = 500) -> list[tuple[str, dict]]:
    """The documents of a real count run: ``det`` and a ``length``-float array per event."""
    import bluesky.plans as bp
    from bluesky import RunEngine
    from ophyd.sim import SynSignal, det

    rng = np.random.default_rng(7)
    spectrum = SynSignal(func=lambda: rng.random(length), name="spectrum")
    docs: list[tuple[str, dict]] = []
    RE = RunEngine({})
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    RE(bp.count([det, spectrum], points))
    return docs


def spool_run(directory: Path, docs: list[tuple[str, dict]]) -> Path:
    """Write a run to a spool directory as the writer does; return its file."""
    spool = Spool(directory)
    spool.append((i, name, doc) for i, (name, doc) in enumerate(docs, 1))
    spool.close()
    return spool.path(docs[0][1]["uid"])


def stored_rows(catalog, uid: str) -> tuple[list[int], np.ndarray, dict]:
    """(seq_nums, spectrum rows, stop document) of a stored run."""
    run = catalog[uid]
    seq = [int(s) for s in run["primary"].base["internal"].read(["seq_num"])["seq_num"]]
    return seq, np.asarray(run["primary"].read()["spectrum"].values), run.metadata["stop"]


def test_flush_skips_torn_lines_and_stores_everything_else(tmp_path: Path, caplog) -> None:
    """A torn line in the middle (an overwritten block) and a torn last line (a crash while writing): each costs
    that line only; the rest is stored, the stop document (torn) is recovered with counts equal to the rows."""
    from hotstage.acquisition.storage.spool import flush_spool

    docs = a_run()
    uid = docs[0][1]["uid"]
    path = spool_run(tmp_path / "spool", docs)
    lines = path.read_bytes().split(b"\n")  # 1 start, 2 descriptor, 3-8 events 1-6, 9 stop, "" after the last \n
    assert len(lines) == 10 and lines[-1] == b""
    lines[4] = lines[4][: len(lines[4]) // 2]  # event seq_num 3 torn in the middle of the file
    path.write_bytes(b"\n".join(lines[:8]) + b"\n" + lines[8][:40])  # the stop line cut short, no newline
    catalog = open_catalog(tmp_path / "data")
    try:
        with caplog.at_level("WARNING", logger="hotstage.acquisition.storage"):
            (result,) = flush_spool(catalog, tmp_path / "spool")
        assert result.status == "written" and result.skipped_lines == [5, 9] and result.stop_added, result
        assert any(str(path) in r.getMessage() and "5, 9" in r.getMessage() for r in caplog.records)
        seq, spectra, stop = stored_rows(catalog, uid)
    finally:
        close_catalog(catalog)
    events = {d["seq_num"]: d for n, d in docs if n == "event"}
    assert seq == [1, 2, 4, 5, 6]
    np.testing.assert_array_equal(spectra, np.array([events[s]["data"]["spectrum"] for s in seq]))
    assert stop["exit_status"] == "fail" and stop["num_events"] == {"primary": len(seq)}
    assert pending_runs(tmp_path / "spool") == []


def test_a_torn_start_line_takes_the_start_the_catalog_holds(tmp_path: Path) -> None:
    """The writer had stored the run's start (and a few rows) before the process died; the spool file's first line
    is torn: the flush attaches to the stored run and writes the rest, each row once."""
    from hotstage.acquisition.storage.spool import flush_spool
    from hotstage.acquisition.storage.engine import WriterEngine

    docs = a_run()
    uid = docs[0][1]["uid"]
    path = spool_run(tmp_path / "spool", docs)
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"{not json\n" + b"\n".join(lines[1:]))
    catalog = open_catalog(tmp_path / "data")
    try:
        engine = WriterEngine(catalog, type("Quiet", (), {"stored": lambda *a: None, "error": lambda *a: None,
                                                           "failed": lambda *a: None})())
        for seq, (name, doc) in enumerate(docs[:4], 1):  # start, descriptor, events 1-2
            engine.hand_over(seq, name, doc)
        engine.flush_events()
        (result,) = flush_spool(catalog, tmp_path / "spool")
        assert result.status == "written" and result.skipped_lines == [1] and not result.stop_added, result
        seq, _, stop = stored_rows(catalog, uid)
    finally:
        close_catalog(catalog)
    assert seq == [1, 2, 3, 4, 5, 6] and stop["exit_status"] == "success"


def test_unreadable_files_are_set_aside_once(tmp_path: Path, caplog) -> None:
    """Garbage and a file with no start document (of a run no catalog knows) go to spool/unreadable/ with one
    warning each; the next flush (the next session) does not see them again."""
    from hotstage.acquisition.storage.spool import UNREADABLE_DIR, flush_spool

    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    (spool_dir / "garbage.jsonl").write_bytes(bytes(range(256)) * 20)
    events_only = [(n, d) for n, d in a_run(3) if n == "event"]
    (spool_dir / "orphan.jsonl").write_text("".join(dump_line(n, d) for n, d in events_only))
    (spool_dir / "notes.txt").write_text("not a spool file")
    catalog = open_catalog(tmp_path / "data")
    try:
        with caplog.at_level("WARNING", logger="hotstage.acquisition.storage"):
            results = flush_spool(catalog, spool_dir)
        assert [(r.run_uid, r.status) for r in results] == [("garbage", "unreadable"), ("orphan", "unreadable")]
        assert sorted(p.name for p in (spool_dir / UNREADABLE_DIR).iterdir()) == ["garbage.jsonl", "orphan.jsonl"]
        moved = [r for r in caplog.records if "moved to" in r.getMessage()]
        assert len(moved) == 2 and all(UNREADABLE_DIR in r.getMessage() for r in moved)
        caplog.clear()
        assert flush_spool(catalog, spool_dir) == [] and not caplog.records
    finally:
        close_catalog(catalog)
    assert (spool_dir / "notes.txt").exists()


def test_append_on_a_full_disk_leaves_no_partial_line_and_retries_cleanly(tmp_path: Path) -> None:
    """ENOSPC part-way through an append: the file is cut back to where it was (no torn line, nothing twice), the
    error is raised, and the same documents appended once there is room are each on disk once."""
    from hotstage.acquisition.jsonl import read_documents

    from storage_faults import small_disk

    docs = a_run(8, length=4000)  # ~45 kB per event line
    with small_disk(tmp_path / "disk") as disk:
        spool = Spool(disk.directory)
        spool.append([(1, *docs[0]), (2, *docs[1])])
        path = spool.path(docs[0][1]["uid"])
        before = path.stat().st_size
        rest = [(i, name, doc) for i, (name, doc) in enumerate(docs[2:], 3)]
        disk.fill()
        with pytest.raises(OSError) as err:
            spool.append(rest)
        assert err.value.errno == errno.ENOSPC
        assert path.stat().st_size == before
        disk.free()
        spool.append(rest)
        spool.close()
        got, bad = read_documents(path)
    assert not bad and [(n, d["uid"]) for n, d in got] == [(n, d["uid"]) for n, d in docs]
