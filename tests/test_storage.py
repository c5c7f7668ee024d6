"""Tests of acquisition.storage: embedded Tiled catalog, the non-blocking CatalogWriter, reading back.

Devices are ophyd.sim (``det``, ``motor``, a 4000-float array signal): the thing under test is storage.
The default CatalogWriter writes from a separate process (acquisition/storage/worker.py, its own interpreter) while
these tests read the same embedded SQLite/zarr catalog from this process; ``process=False`` selects the thread writer.
Faults are real: a SIGKILLed writer process, an exclusive SQLite lock held on the table store.
"""

from __future__ import annotations

import gc
import os
import signal
import sqlite3
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from bluesky import RunEngine
import bluesky.plan_stubs as bps
import bluesky.plans as bp
from event_model import DocumentNames, schema_validators
from ophyd.sim import SynSignal, det, motor
from tiled.client import from_context

from hotstage.acquisition.storage import CatalogWriter, ThreadCatalogWriter, close_catalog, open_catalog, read_stream
from hotstage.acquisition.storage.engine import WriterEngine
from hotstage.acquisition.storage import ProcessCatalogWriter

warnings.filterwarnings("ignore", category=DeprecationWarning)
ARRAY_LEN = 4000


@pytest.fixture
def spectrum():
    """A 4000-float array signal with reproducible values."""
    rng = np.random.default_rng(1)
    return SynSignal(func=lambda: rng.random(ARRAY_LEN), name="spectrum")


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    """An embedded catalog in a fresh data dir, shared by this module's tests (each looks up its own runs)."""
    c = open_catalog(tmp_path_factory.mktemp("catalog") / "data")
    yield c
    close_catalog(c)


@pytest.fixture(scope="module")
def stored(catalog):
    """A RunEngine with the default (process) CatalogWriter subscribed, shared; yields (RE, writer)."""
    RE = RunEngine()
    writer = CatalogWriter(catalog)
    RE.subscribe(writer)
    yield RE, writer
    assert writer.close(timeout=30)


def plain_client(catalog):
    """A second, independent plain Tiled client on the same server (not the writer's client object)."""
    return from_context(catalog.context)


def test_scan_is_stored_and_read_back(catalog, stored, spectrum):
    RE, writer = stored
    recorded = []
    RE.subscribe(lambda name, doc: recorded.append((name, doc)))
    (uid,) = RE(bp.scan([det, spectrum], motor, -1, 1, 7), sample={"name": "CsPbI3-test", "cspbi3_wt_frac": 0.4})
    assert writer.flush(timeout=20)
    assert writer.backlog == 0 and not writer.errors and not writer.failed

    run = plain_client(catalog)[uid]
    assert run.metadata["start"]["sample"] == {"name": "CsPbI3-test", "cspbi3_wt_frac": 0.4}
    assert run.metadata["stop"]["exit_status"] == "success"
    assert run.metadata["stop"]["num_events"] == {"primary": 7}
    assert "primary" in run
    ds = read_stream(run, "primary")
    assert ds["spectrum"].shape == (7, ARRAY_LEN)
    assert ds["det"].shape == (7,)
    events = [d for n, d in recorded if n == "event"]
    np.testing.assert_allclose(ds["motor"].values, np.linspace(-1, 1, 7))
    np.testing.assert_allclose(ds["det"].values, [e["data"]["det"] for e in events])
    np.testing.assert_array_equal(ds["spectrum"].values, np.array([e["data"]["spectrum"] for e in events]))
    # the three-line plain read from the module docstring
    assert plain_client(catalog)[uid]["primary"].read()["spectrum"].shape == (7, ARRAY_LEN)


@pytest.fixture
def startup_frozen():
    """Objects alive before the test frozen out of the garbage collector (as a Session does for its runs): late in
    the suite a full collection of this process walks ~2·10⁶ objects and stops its threads ~0.7 s, the reader's own
    pause, not the writer's latency (see `hotstage.acquisition.session.Session._freeze_startup`)."""
    gc.freeze()
    yield
    gc.unfreeze()


def test_events_visible_while_plan_runs(catalog, stored, spectrum, startup_frozen):
    """Every event is readable by a plain client while its run is still open (no waiting for the stop document).

    An outcome, not a latency: the run stays open until the reader saw every event (or 60 s). How soon they become
    visible is measured in benchmarks/storage.py (0.24-0.70 s on the 2-core project machine)."""
    RE, writer = stored
    points, period = 12, 0.25
    acquired: dict[int, float] = {}
    uid_box: list[str] = []

    def note(name, doc):
        if name == "start":
            uid_box.append(doc["uid"])
        elif name == "event":
            acquired[doc["seq_num"]] = doc["time"]

    RE.subscribe(note)
    seen: dict[int, float] = {}
    read_errors: list[BaseException] = []
    stop = threading.Event()
    reader = plain_client(catalog)

    node: list = []  # the stream's table, looked up once (as a live viewer would), then only read

    def poll():
        while not stop.is_set():
            if uid_box:
                try:
                    if not node:
                        node.append(reader[uid_box[0]]["primary"].base["internal"])
                    table = node[0].read(["seq_num"])
                except KeyError:
                    table = None
                except Exception as exc:  # e.g. "database is locked" while the other process writes
                    read_errors.append(exc)
                    table = None
                now = time.time()
                if table is not None:
                    for s in table["seq_num"]:
                        seen.setdefault(int(s), now)
            time.sleep(0.03)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()

    def plan():
        yield from bps.open_run()
        for _ in range(points):
            yield from bps.trigger_and_read([det, spectrum])
            yield from bps.sleep(period)
        deadline = time.monotonic() + 60.0
        while len(seen) < points and time.monotonic() < deadline:  # the run stays open meanwhile
            yield from bps.sleep(0.1)
        yield from bps.close_run()

    try:
        RE(plan())
    finally:
        stop.set()
        poller.join(5)
    assert isinstance(writer, ProcessCatalogWriter) and writer.pid != os.getpid()
    assert not read_errors, read_errors[:3]
    assert set(acquired) == set(range(1, points + 1))
    assert set(seen) == set(acquired), sorted(set(acquired) - set(seen))  # all seen while the run was open


def test_documents_replay_and_validate(catalog, stored, spectrum):
    RE, writer = stored
    (uid,) = RE(bp.count([det, spectrum], 4))
    assert writer.flush(timeout=20)
    docs = list(plain_client(catalog)[uid].documents())
    names = [name for name, _ in docs]
    assert names[0] == "start" and names[-1] == "stop"
    assert names.count("descriptor") == 1
    n_events = sum(len(d["seq_num"]) if n == "event_page" else 1 for n, d in docs if n.startswith("event"))
    assert n_events == 4
    for name, doc in docs:
        schema_validators[DocumentNames[name]].validate(doc)
    event = next(d for n, d in docs if n == "event")
    assert len(event["data"]["spectrum"]) == ARRAY_LEN


def test_failed_run_keeps_stop_and_events(catalog, stored):
    RE, writer = stored

    class Boom(RuntimeError):
        pass

    def plan():
        yield from bps.open_run(md={"purpose": "fail"})
        for i in range(3):
            yield from bps.mv(motor, i)
            yield from bps.trigger_and_read([det, motor])
        raise Boom("furnace on fire")

    with pytest.raises(Boom):
        RE(plan())
    assert writer.flush(timeout=20)
    runs = plain_client(catalog)
    (uid,) = [k for k in runs if runs[k].metadata["start"].get("purpose") == "fail"]
    run = runs[uid]
    assert run.metadata["stop"]["exit_status"] == "fail"
    assert "furnace on fire" in run.metadata["stop"]["reason"]
    np.testing.assert_allclose(run["primary"].read()["motor"].values, [0, 1, 2])


@pytest.mark.e2e  # a writer process drained at close (separate interpreter)
def test_close_drains_everything(catalog, spectrum):
    RE = RunEngine()
    writer = CatalogWriter(catalog, flush_interval=5.0)  # nothing would be written for 5 s on its own
    RE.subscribe(writer)
    (uid,) = RE(bp.count([det, spectrum], 5))
    assert writer.backlog > 0
    assert writer.close(timeout=20)
    assert writer.backlog == 0 and not writer.alive
    run = plain_client(catalog)[uid]
    assert run.metadata["stop"]["exit_status"] == "success"
    assert read_stream(run)["det"].shape == (5,)
    with pytest.raises(RuntimeError):
        writer("start", {})


def test_write_errors_are_recorded_and_retried(catalog):
    """Thread writer: a failing write is logged, exposed in ``errors`` and retried; the document is not lost."""
    RE = RunEngine()
    writer = CatalogWriter(catalog, process=False, flush_interval=0.05, backoff=(0.05, 0.1))
    assert isinstance(writer, ThreadCatalogWriter)
    calls = {"n": 0}
    real = writer.tiled_writer.client.create_container

    def flaky_create_container(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise OSError("simulated outage")
        return real(*args, **kwargs)

    writer.tiled_writer.client.create_container = flaky_create_container
    RE.subscribe(writer)
    (uid,) = RE(bp.count([det], 3))
    assert writer.close(timeout=20)
    assert len(writer.errors) == 2 and all(e.transient and not e.gave_up for e in writer.errors)
    assert "simulated outage" in str(writer.errors[0])
    assert not writer.failed
    run = plain_client(catalog)[uid]
    assert run.metadata["stop"]["exit_status"] == "success"
    assert read_stream(run)["det"].shape == (3,)


@pytest.mark.e2e  # writer processes started, stopped and started again on one catalog (separate interpreters)
def test_reopen_sees_old_runs_and_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("HOTSTAGE_DATA", str(tmp_path / "from-env"))
    monkeypatch.delenv("HOTSTAGE_TILED_URI", raising=False)
    c = open_catalog()
    assert (tmp_path / "from-env" / "catalog.db").exists()
    RE = RunEngine()
    writer = CatalogWriter(tmp_path / "from-env")  # a location, not a client: the writer process opens it
    RE.subscribe(writer)
    (uid,) = RE(bp.count([det], 2), sample={"name": "persist"})
    assert writer.close(timeout=20)
    close_catalog(c)

    c2 = open_catalog(tmp_path / "from-env")
    try:
        assert uid in c2
        assert c2[uid].metadata["start"]["sample"]["name"] == "persist"
        assert c2[uid]["primary"].read()["det"].shape == (2,)
    finally:
        close_catalog(c2)


@pytest.mark.e2e  # storage under attack (killed or blocked processes, full or read-only disks): pytest -m e2e
def test_sqlite_lock_errors_in_writer_process_are_reported_and_retried(tmp_path, spectrum):
    """An exclusive lock on tables.sqlite held by this process: the writer process retries, reports, loses nothing."""
    c = open_catalog(tmp_path / "data")
    try:
        RE = RunEngine()
        writer = CatalogWriter(c, flush_interval=0.05, backoff=(0.05, 0.2))
        RE.subscribe(writer)
        assert writer.wait_ready(600)  # writer process up (its own interpreter: tiled's imports; slow when busy)
        con = sqlite3.connect(tmp_path / "data" / "tables.sqlite", isolation_level=None, timeout=0)
        con.execute("BEGIN EXCLUSIVE")
        try:
            (uid,) = RE(bp.count([det, spectrum], 3))
            deadline = time.monotonic() + 20
            while not writer.errors and time.monotonic() < deadline:
                time.sleep(0.05)
            assert writer.backlog > 0  # the rows cannot be stored while the lock is held
        finally:
            con.execute("ROLLBACK")
            con.close()
        assert writer.flush(timeout=30)
        assert writer.errors and all(e.transient and not e.gave_up for e in writer.errors)
        assert "locked" in str(writer.errors[0])
        assert not writer.failed and writer.alive
        ds = read_stream(c[uid])
        assert ds["det"].shape == (3,) and ds["spectrum"].shape == (3, ARRAY_LEN)
        assert writer.close(timeout=20)
    finally:
        close_catalog(c)


@pytest.mark.slow  # the attack table's SIGKILL / read-only / disk-full rows cover the same outcome in CI
@pytest.mark.e2e  # storage under attack (killed or blocked processes, full or read-only disks): pytest -m e2e
def test_killed_writer_process_loses_nothing(catalog, spectrum):
    """SIGKILL the writer process mid-run: the parent restarts it, re-sends what was not acknowledged, run complete."""
    RE = RunEngine()
    writer = CatalogWriter(catalog, flush_interval=0.1)
    RE.subscribe(writer)
    recorded = []
    RE.subscribe(lambda name, doc: recorded.append((name, doc)))
    assert writer.flush(timeout=30)  # writer process up
    first_pid = writer.pid
    points = 40
    killed = threading.Event()

    def killer():
        deadline = time.monotonic() + 30
        while writer._stored < 12 and time.monotonic() < deadline:  # start, descriptor, >= 10 events stored
            time.sleep(0.005)
        os.kill(first_pid, signal.SIGKILL)
        killed.set()

    threading.Thread(target=killer, daemon=True).start()

    def plan():
        yield from bps.open_run(md={"purpose": "kill"})
        for _ in range(points):
            yield from bps.trigger_and_read([det, spectrum])
            yield from bps.sleep(0.03)
        yield from bps.close_run()

    RE(plan())
    assert killed.wait(5)
    assert writer.flush(timeout=60)
    assert writer.restart_count == 1 and writer.pid != first_pid and writer.alive
    assert writer.unacked == 0 and not writer.failed
    uid = recorded[0][1]["uid"]
    run = plain_client(catalog)[uid]
    assert run.metadata["stop"]["exit_status"] == "success"
    assert run.metadata["stop"]["num_events"] == {"primary": points}
    ds = read_stream(run)
    events = [d for n, d in recorded if n == "event"]
    seq_nums = run["primary"].base["internal"].read(["seq_num"])["seq_num"]
    np.testing.assert_array_equal(seq_nums, np.arange(1, points + 1))
    np.testing.assert_allclose(ds["det"].values, [e["data"]["det"] for e in events])
    np.testing.assert_array_equal(ds["spectrum"].values, np.array([e["data"]["spectrum"] for e in events]))
    assert writer.close(timeout=20)


class _Collect:
    """Reporter that keeps what the engine reports."""

    def __init__(self) -> None:
        self.stored_seq, self.errors, self.failed = 0, [], []

    def stored(self, seq):
        self.stored_seq = max(self.stored_seq, seq)

    def error(self, err):
        self.errors.append(err)

    def failed(self, seq, name, doc):  # noqa: F811 - the Reporter protocol's name
        self.failed.append((name, doc))


def _counted_run(spectrum, points: int) -> tuple[str, list[tuple[int, tuple[str, dict]]], list[dict]]:
    """A `count` of det and spectrum: its uid, its documents numbered from 1 as the writer numbers them, its
    events."""
    RE = RunEngine()
    docs = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    (uid,) = RE(bp.count([det, spectrum], points))
    items = list(enumerate(docs, start=1))
    return uid, items, [d for _, (n, d) in items if n == "event"]


def test_resume_skips_rows_and_array_rows_already_written(catalog, spectrum):
    """A resuming engine given the whole run again attaches to the nodes, writes each row and array row once.

    The crash window where an array was patched but its table rows were not appended (arrays go first) is
    reproduced for real: one extra array row is written by hand, as the killed writer would have.
    """
    uid, items, events = _counted_run(spectrum, 6)

    first = WriterEngine(catalog, _Collect())
    for seq, (name, doc) in items[:5]:  # start, descriptor, 3 events
        first.hand_over(seq, name, doc)
    first.flush_events()
    arr = catalog[uid]["primary"].base["spectrum"]
    arr.patch(np.asarray([events[3]["data"]["spectrum"]]), offset=(arr.shape[0],), extend=True)

    report = _Collect()
    second = WriterEngine(catalog, report, resume=True)
    for seq, (name, doc) in items:
        second.hand_over(seq, name, doc)
    second.flush_events()
    assert not report.errors and not report.failed and report.stored_seq == len(items)
    ds = read_stream(plain_client(catalog)[uid])
    seq_nums = plain_client(catalog)[uid]["primary"].base["internal"].read(["seq_num"])["seq_num"]
    np.testing.assert_array_equal(seq_nums, np.arange(1, 7))
    np.testing.assert_array_equal(ds["spectrum"].values, np.array([e["data"]["spectrum"] for e in events]))
    np.testing.assert_allclose(ds["det"].values, [e["data"]["det"] for e in events])
    assert plain_client(catalog)[uid].metadata["stop"]["exit_status"] == "success"


def test_resume_sets_aside_an_array_whose_files_exist_without_its_node(catalog, spectrum, caplog):
    """A writer killed between creating an array's files and committing its node leaves files tiled refuses to
    create again (``ContainsArrayError``: a CI run lost a run's stop document to it). The resuming engine moves
    them aside and writes the array anew from the re-sent documents."""
    import functools

    import zarr

    from hotstage.acquisition.storage.engine import set_aside_orphans
    from hotstage.acquisition.storage.location import catalog_location

    uid, items, events = _counted_run(spectrum, 3)
    first = WriterEngine(catalog, _Collect())
    for seq, (name, doc) in items[:2]:  # start, descriptor: killed before any array node was committed
        first.hand_over(seq, name, doc)
    first.flush_events()
    root = catalog_location(catalog).data_dir
    orphan = Path(root, "data", uid, "primary", "spectrum")
    zarr.create_array(store=str(orphan), shape=(1, 3), dtype="f8")  # the killed writer's half-made array
    report = _Collect()
    second = WriterEngine(catalog, report, resume=True, on_recreate=functools.partial(set_aside_orphans, root))
    for seq, (name, doc) in items:
        second.hand_over(seq, name, doc)
    second.flush_events()
    assert not report.errors and not report.failed and report.stored_seq == len(items)
    ds = read_stream(plain_client(catalog)[uid])
    np.testing.assert_array_equal(ds["spectrum"].values, np.array([e["data"]["spectrum"] for e in events]))
    assert plain_client(catalog)[uid].metadata["stop"]["exit_status"] == "success"
    assert len(list(orphan.parent.glob("spectrum.orphaned-*"))) == 1
    assert "spectrum is not in the catalog" in caplog.text


# ------------------------------------------------------------------------------ storage faults: deadlines, reopening
def free_port() -> int:
    """A TCP port nothing listens on (released at once)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.e2e  # storage under attack (killed or blocked processes, full or read-only disks): pytest -m e2e
def test_close_with_an_unreachable_catalog_gives_up_and_the_spool_holds_everything(tmp_path, spectrum, caplog):
    """No catalog at all (a Tiled server that is not there): the run is acquired, ``close(timeout)`` returns False
    at its deadline with one warning naming the run and ``hotstage spool flush``; the spool holds every document,
    and flushing it into a catalog later stores the run complete."""
    from hotstage.acquisition.jsonl import read_documents
    from hotstage.acquisition.storage.spool import flush_spool, pending_runs

    writer = CatalogWriter(f"http://127.0.0.1:{free_port()}", spool_dir=tmp_path / "spool", ready_timeout=0,
                           backoff=(0.05, 0.2))
    RE = RunEngine()
    recorded = []
    RE.subscribe(lambda name, doc: recorded.append((name, doc)))
    RE.subscribe(writer)
    (uid,) = RE(bp.count([det, spectrum], 5))
    with caplog.at_level("WARNING", logger="hotstage.acquisition.storage"):
        assert not writer.close(timeout=3)
    assert not writer.alive and writer.unstored_runs == [uid] and writer.backlog == len(recorded)
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("CatalogWriter.close")]
    assert uid in line and str(tmp_path / "spool") in line and "`hotstage spool flush`" in line
    (spooled,) = pending_runs(tmp_path / "spool")
    docs, bad = read_documents(spooled)
    assert not bad and [(n, d["uid"]) for n, d in docs] == [(n, d["uid"]) for n, d in recorded]

    c = open_catalog(tmp_path / "data")
    try:
        (result,) = flush_spool(c, tmp_path / "spool")
        assert result.status == "written" and not result.stop_added
        run = c[uid]
        assert run.metadata["stop"]["num_events"] == {"primary": 5}
        np.testing.assert_array_equal(read_stream(run)["spectrum"].values,
                                      np.array([d["data"]["spectrum"] for n, d in recorded if n == "event"]))
    finally:
        close_catalog(c)


@pytest.mark.slow  # the attack table's SIGKILL / read-only / disk-full rows cover the same outcome in CI
@pytest.mark.e2e  # storage under attack (killed or blocked processes, full or read-only disks): pytest -m e2e
def test_catalog_read_only_for_a_while_is_reopened_and_loses_nothing(tmp_path, spectrum):
    """The data directory turns read-only for 4 s mid-run (every write refused, open files too), then writable
    again: the writer process retries, opens the catalog anew in a new process (a SQLite connection that failed
    this way stays broken), and every event is stored once, arrays included.

    (Process writer only: with the immutable flag, SQLite's memory-mapped WAL index faults with SIGBUS in the
    process that maps it, so a thread writer would take the test process down; its reopening is tested below
    by fault injection.)"""
    from storage_faults import read_only

    data = tmp_path / "data"
    open_catalog(data).context.close()  # created before the writer starts
    writer = CatalogWriter(data, spool_dir=tmp_path / "spool", flush_interval=0.1, backoff=(0.1, 0.5))
    RE = RunEngine()
    recorded = []
    RE.subscribe(lambda name, doc: recorded.append((name, doc)))
    RE.subscribe(writer)
    points = 120
    with read_only(data) as switch:
        def plan():
            yield from bps.open_run()
            for i in range(points):
                if i == 20:
                    assert writer.flush(timeout=30)  # the first rows are stored before the outage
                    switch.on()
                    threading.Timer(4.0, switch.off).start()
                yield from bps.trigger_and_read([det, spectrum])
                yield from bps.sleep(0.04)
            yield from bps.close_run()

        (uid,) = RE(plan())
        assert writer.flush(timeout=120)
    assert switch.how is None  # the timer switched it back
    assert writer.reopen_count >= 1 and writer.errors and not writer.failed
    assert writer.close(timeout=30)
    assert_complete(data, uid, recorded, points)


def assert_complete(data, uid, recorded, points):
    """The run in the catalog under ``data`` holds every recorded event once, arrays included, and its stop."""
    c = open_catalog(data)
    try:
        run = c[uid]
        seq = run["primary"].base["internal"].read(["seq_num"])["seq_num"]
        np.testing.assert_array_equal(seq, np.arange(1, points + 1))
        np.testing.assert_array_equal(read_stream(run)["spectrum"].values,
                                      np.array([d["data"]["spectrum"] for n, d in recorded if n == "event"]))
        assert run.metadata["stop"]["num_events"] == {"primary": points}
    finally:
        close_catalog(c)


@pytest.mark.e2e  # storage under attack (killed or blocked processes, full or read-only disks): pytest -m e2e
def test_thread_writer_reopens_its_client_after_repeated_failures(tmp_path, spectrum, monkeypatch):
    """Thread writer: row writes fail as on a read-only SQLite connection until the client is replaced; after
    ``reopen_after`` attempts the writer opens a new client and a resuming engine, and loses nothing."""
    import hotstage.acquisition.storage.engine as engine_module

    data = tmp_path / "data"
    writer = CatalogWriter(data, process=False, flush_interval=0.1, backoff=(0.05, 0.2), reopen_after=3)
    broken_client = writer.client
    real_flush = engine_module._flush_run_writer

    class OperationalError(Exception):
        """Named like SQLAlchemy's (``is_transient`` goes by the name)."""

    def flush_on_a_broken_connection(normalizer, run_writer):
        if outage.is_set() and run_writer.root_node.context is broken_client.context:
            raise OperationalError("(sqlite3.OperationalError) attempt to write a readonly database")
        return real_flush(normalizer, run_writer)

    outage = threading.Event()
    monkeypatch.setattr(engine_module, "_flush_run_writer", flush_on_a_broken_connection)
    RE = RunEngine()
    recorded = []
    RE.subscribe(lambda name, doc: recorded.append((name, doc)))
    RE.subscribe(writer)
    points = 40

    def plan():
        yield from bps.open_run()
        for i in range(points):
            if i == 10:
                assert writer.flush(timeout=30)
                outage.set()
            yield from bps.trigger_and_read([det, spectrum])
            yield from bps.sleep(0.02)
        yield from bps.close_run()

    (uid,) = RE(plan())
    assert writer.flush(timeout=60)
    assert writer.reopen_count == 1 and writer.client is not broken_client and not writer.failed
    assert sum("readonly" in str(e) for e in writer.errors) == 3
    assert writer.close(timeout=30)
    assert_complete(data, uid, recorded, points)


@pytest.mark.slow  # the attack table's SIGKILL / read-only / disk-full rows cover the same outcome in CI
@pytest.mark.e2e  # storage under attack (killed or blocked processes, full or read-only disks): pytest -m e2e
def test_full_spool_stops_the_run_and_close_rescues_what_it_could_not_keep(tmp_path, spectrum, caplog, monkeypatch):
    """The spool's disk fills up mid-run while the catalog is unreachable: the next data document raises
    ``StorageError`` into the plan (the run stops, its stop document is taken), close() writes the run complete to
    a rescue directory under $TMPDIR with one line naming it, and a flush from there stores every event once."""
    import tempfile

    from hotstage.acquisition.storage.spool import flush_spool
    from hotstage.acquisition.storage import StorageError
    from storage_faults import small_disk

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    with small_disk(tmp_path / "disk") as disk:
        writer = CatalogWriter(f"http://127.0.0.1:{free_port()}", spool_dir=disk.directory, ready_timeout=0,
                               backoff=(0.05, 0.2))
        RE = RunEngine()
        recorded = []
        RE.subscribe(lambda name, doc: recorded.append((name, doc)))  # before the writer: sees what it took
        RE.subscribe(writer)

        def plan():
            yield from bps.open_run()
            for i in range(200):
                if i == 5:
                    disk.fill()
                yield from bps.trigger_and_read([det, spectrum])
                yield from bps.sleep(0.02)
            yield from bps.close_run()

        with pytest.raises(StorageError, match="cannot keep acquired data: spool .*the run is stopped"):
            RE(plan())
        with caplog.at_level("WARNING", logger="hotstage.acquisition.storage"):
            assert not writer.close(timeout=3)
    names = [n for n, _ in recorded]
    assert names[-1] == "stop" and recorded[-1][1]["exit_status"] == "fail"
    assert "cannot keep acquired data" in recorded[-1][1]["reason"]
    events = [d for n, d in recorded if n == "event"]
    assert 5 < len(events) < 200
    assert writer.rescue_dir is not None and writer.rescue_dir.parent == tmp_path / "tmp"
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("CatalogWriter.close")]
    assert f"HOTSTAGE_SPOOL={writer.rescue_dir} hotstage spool flush" in line
    c = open_catalog(tmp_path / "data")
    try:
        (result,) = flush_spool(c, writer.rescue_dir)
        assert result.status == "written" and not result.stop_added
        run = c[recorded[0][1]["uid"]]
        seq = run["primary"].base["internal"].read(["seq_num"])["seq_num"]
        np.testing.assert_array_equal(seq, np.arange(1, len(events) + 1))
        np.testing.assert_array_equal(read_stream(run)["spectrum"].values,
                                      np.array([d["data"]["spectrum"] for d in events]))
        assert run.metadata["stop"]["num_events"] == {"primary": len(events)}
    finally:
        close_catalog(c)
