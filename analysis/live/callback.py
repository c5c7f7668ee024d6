"""`LiveAnalysis`: a RunEngine subscriber that analyses every run off the RunEngine's thread.

DESIGN.md, "Data flow": the live analysis runs off the RunEngine's thread so that it never slows acquisition; if it
falls behind it says so, and it still processes every event.

* ``__call__(name, doc)`` only appends to an unbounded queue (``queue.SimpleQueue``: O(1), never blocks, never
  drops) — the RunEngine never waits for an analysis.
* The documents are taken in order and routed by run (start ``uid``, descriptor ``run_start``, event
  ``descriptor``; like event-model's ``RunRouter``, runs may interleave) to one `hotstage.analysis.live.run.DerivedRun`
  per raw run, which writes the derived run through ``sink`` — the session's `CatalogWriter` (it stores any
  run's documents, routed by uid) or any ``callable(name, doc)``.
* Where the analysis runs: ``process=True`` (the session's choice) runs it in a separate *analysis process*,
  ``python -m hotstage.analysis.live.worker`` as its own interpreter (`hotstage.analysis.consumer`: started by
  ``subprocess``, never ``multiprocessing``, so the user's ``__main__`` is never re-imported: an unguarded script
  or ``python -`` runs once; analysers must be classes of an importable module, pickled by name: one defined in
  ``__main__`` is refused with a ValueError, use ``process=False`` for those). Measured on the 2-core rig machine
  with the demo at time_scale 600: analysing in a thread of the RunEngine's process competes with the
  RunEngine and the simulated instruments for the GIL, stretched the run from 8 s to 19 s wall and cut the XRD
  patterns acquired on the 5 °C cadence from 123 to 35 (the furnace keeps ramping while the RunEngine waits).
  In the process mode a courier thread ships batches of documents as frames on the process's stdin (a reader
  thread on the other side drains it, so neither side blocks on a full pipe) and a receiver thread hands the
  derived documents from its stdout to ``sink`` in order (in a session: back onto the document bus, to the
  writer). The analysis process runs at a lower priority (``ANALYSIS_NICENESS``): its documents queue,
  the RunEngine's timing cannot wait. ``process=False`` runs the same code in one worker thread of this process
  (no pickling: analysers defined anywhere, e.g. in a test, work; fine for replay, where no RunEngine competes).
* Backlog = documents accepted but not yet analysed (and their derived documents handed to the sink). When it
  exceeds ``warn_backlog`` a warning is logged (at most every ``warn_interval`` s); for each run the backlog when
  its raw stop arrived and the delay from the raw stop to the derived stop are kept in ``stats[raw_uid]`` and
  logged at INFO.
* An exception anywhere in the analysis of one document is logged and never kills the worker (per-event failures
  are recorded in the derived run itself, see `hotstage.analysis.live.run`).
* ``wait(timeout)`` blocks until everything accepted so far is analysed and handed to the sink; ``close(timeout)``
  does that and stops, ending any derived run whose raw run never stopped (exit_status "fail", reason "raw run has
  no stop document"). A derived run's stop follows its raw run's (`hotstage.analysis.live.run.derived_exit_status`).
* If the analysis process dies (killed, out of memory), the parent ends every derived run it had started and not
  yet ended with a stop document of its own (exit_status "fail", the reason naming the death and
  ``hotstage replay``), so no derived run is left without a stop. The process ignores SIGINT and SIGHUP (Ctrl-C and
  a closed terminal reach the whole process group; they are the acquisition's business, which closes the analysis).

Memory per run: the analysers (one `PhaseQuantifier` with its tables) and a few floats per event for the summary;
no raw document is kept once analysed; statistics are kept for the newest `MAX_STATS` runs.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from ..phase_quant import warm_up
from ..consumer import ConsumerProcess
from .modalities import StreamAnalyser
from .parameters import AnalysisParameters
from .run import DerivedRun, Sink

__all__ = ["LiveAnalysis", "RunRouter"]

log = logging.getLogger(__name__)
_STOP = object()
MAX_STATS = 100  # runs whose statistics are kept (oldest dropped)
SEND_INTERVAL = 0.02  # s: the courier ships what has queued at most this often (batches, fewer pipe writes)
WORKER_MODULE = "hotstage.analysis.live.worker"  # the analysis process's module, run as __main__


class RunRouter:
    """Routes raw documents of any number of runs to one DerivedRun each (used in-thread or in the process)."""

    def __init__(self, params: AnalysisParameters, sink: Sink, mode: str = "live",
                 analysers: Mapping[str, type[StreamAnalyser]] | None = None,
                 on_start: Callable[[str, str], None] | None = None,
                 on_stop: Callable[[str, DerivedRun], None] | None = None) -> None:
        """`on_start(raw_uid, derived_uid)` and `on_stop(raw_uid, run)` report each run's progress."""
        self.params, self.sink, self.mode, self.analysers = params, sink, mode, analysers
        self.on_start, self.on_stop = on_start, on_stop
        self.runs: dict[str, DerivedRun] = {}
        self._descriptors: dict[str, str] = {}  # raw descriptor uid → raw run uid

    def __call__(self, name: str, doc: Mapping[str, Any]) -> None:
        """Dispatch one raw document (start, descriptor, event, event_page, stop; others are ignored)."""
        try:
            self._route(name, doc)
        except Exception:  # noqa: BLE001 - the analysis must survive anything
            log.exception("live analysis: failed on a %s document", name)

    def _route(self, name: str, doc: Mapping[str, Any]) -> None:
        if name == "start":
            run = DerivedRun(doc, self.params, self.sink, mode=self.mode, analysers=self.analysers)
            self.runs[doc["uid"]] = run
            if self.on_start:
                self.on_start(doc["uid"], run.uid)
        elif name == "descriptor":
            raw_uid = doc.get("run_start", "")
            if raw_uid in self.runs:
                self._descriptors[doc["uid"]] = raw_uid
                self.runs[raw_uid](name, doc)
        elif name in ("event", "event_page"):
            raw_uid = self._descriptors.get(doc.get("descriptor", ""))
            if raw_uid is not None:
                self.runs[raw_uid](name, doc)
        elif name == "stop":
            raw_uid = doc.get("run_start", "")
            run = self.runs.pop(raw_uid, None)
            if run is None:
                return
            self._forget(raw_uid)
            run(name, doc)
            if self.on_stop:
                self.on_stop(raw_uid, run)

    def _forget(self, raw_uid: str) -> None:
        """Drop the routing entries of a finished run (memory stays flat over many runs)."""
        for d in [d for d, r in self._descriptors.items() if r == raw_uid]:
            del self._descriptors[d]

    def end_open_runs(self) -> None:
        """End every derived run whose raw run never sent its stop."""
        for raw_uid, run in list(self.runs.items()):
            try:
                run.stop(None, reason="raw run has no stop document")
            except Exception:  # noqa: BLE001
                log.exception("live analysis: could not end the derived run of %s", raw_uid)
            self._forget(raw_uid)
            if self.on_stop:
                self.on_stop(raw_uid, run)
        self.runs.clear()


class _OpenDerived:
    """A derived run the sink has seen started: its raw run and its events per stream so far."""

    def __init__(self, raw_uid: str) -> None:
        self.raw_uid = raw_uid
        self.counts: dict[str, int] = {}


def _run_info(run: DerivedRun) -> dict[str, Any]:
    """What the parent learns about a finished derived run."""
    return {"derived_uid": run.uid, "errors": run.error_count, "events": dict(run.summary.counts)}


# ------------------------------------------------------------------------------------------- process side
def single_threaded_blas() -> None:
    """Limit BLAS (OpenBLAS) to one thread in this process.

    The fits call BLAS on small matrices, where threads gain nothing, and OpenBLAS threads spin while waiting:
    with its default of one thread per core they took the second core of the 2-core rig machine away from the
    RunEngine. One thread also makes the summation order, hence the numbers, the same run after run (replay).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scipy's usual installs
        log.info("threadpoolctl not installed: BLAS keeps its default thread count")
        return
    threadpool_limits(limits=1, user_api="blas")


ANALYSIS_NICENESS: int = 5
"""The analysis process runs this much nicer than the acquisition: its work queues and may wait, the RunEngine's
and the instruments' timing may not (on 2 cores, cold fits and re-selections at a phase transition otherwise take
CPU from a real-time run: a starved RunEngine misses cadence points or a furnace settle)."""


def _lower_priority() -> None:
    """Raise this process's niceness by ANALYSIS_NICENESS where the OS allows it (POSIX); else leave it."""
    try:
        os.nice(ANALYSIS_NICENESS)
    except (AttributeError, OSError):  # no os.nice (Windows) or not permitted: run at normal priority
        log.debug("live analysis: niceness unchanged")


def analysis_main(params: AnalysisParameters, mode: str, analysers: Any, channel: Any) -> None:
    """The analysis process's work: receive raw documents, send derived documents and progress back (``channel``:
    `hotstage.analysis.consumer.ParentChannel`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the RunEngine's business; the parent closes us
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a closed terminal: the parent ends the session and closes us
    _lower_priority()
    single_threaded_blas()
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def read() -> None:
        """Drain the docs pipe so the parent's courier never blocks on a full pipe."""
        while True:
            try:
                inbox.put(channel.recv())
            except (EOFError, OSError):
                inbox.put(("close",))
                return

    threading.Thread(target=read, name="hotstage-analysis-reader", daemon=True).start()
    outbox: list[tuple[str, dict]] = []
    router = RunRouter(
        params, lambda n, d: outbox.append((n, d)), mode, analysers,
        on_start=lambda raw, derived: channel.send(("started", raw, derived)),
        on_stop=lambda raw, run: channel.send(("stopped", raw, _run_info(run))),
    )
    warm_up()  # the compiled fitting kernels load before the first pattern (seconds once after an install)
    channel.send(("ready",))
    processed = 0
    while True:
        msg = inbox.get()
        if msg[0] == "close":
            router.end_open_runs()
            channel.send(("out", outbox, processed))
            channel.close()
            return
        for name, doc in msg[1]:
            router(name, doc)
            processed += 1
            if outbox:  # ship derived documents at once: the catalog shows them live
                channel.send(("out", outbox, processed))
                outbox = []
        channel.send(("out", outbox, processed))
        outbox = []


# ------------------------------------------------------------------------------------------- the subscriber
class LiveAnalysis:
    """RunEngine subscriber: raw documents in (queued), derived runs out through `sink` (module docstring)."""

    def __init__(self, sink: Sink, params: AnalysisParameters | None = None, *, mode: str = "live",
                 process: bool = True, analysers: Mapping[str, type[StreamAnalyser]] | None = None,
                 warn_backlog: int = 100, warn_interval: float = 10.0, start_method: str | None = None,
                 name: str = "hotstage-live-analysis") -> None:
        """Start the worker (thread, or courier + receiver threads and the analysis process).

        ``start_method`` is ignored (kept for callers): the analysis process is always its own interpreter."""
        self.sink = sink
        self.params = params or AnalysisParameters()
        self.mode = mode
        self.process = bool(process)
        self.analysers = analysers
        self.warn_backlog = int(warn_backlog)
        self.warn_interval = float(warn_interval)
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.enqueued = 0
        self.processed = 0
        self.max_backlog = 0
        self.derived_uids: OrderedDict[str, str] = OrderedDict()  # raw uid → derived uid (newest MAX_STATS)
        self.stats: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._stop_enqueued: dict[str, tuple[float, int]] = {}
        self._cond = threading.Condition()
        self._closing = False
        self._dead = False
        self._last_warning = 0.0
        self._threads: list[threading.Thread] = []
        self._ready = threading.Event()
        self._open_runs: dict[str, _OpenDerived] = {}  # derived runs whose stop the sink has not seen (process mode)
        self._descriptor_runs: dict[str, tuple[str, str]] = {}  # derived descriptor uid → (derived uid, stream)
        if self.process:
            in_main = sorted(k for k, cls in (analysers or {}).items() if getattr(cls, "__module__", "") == "__main__")
            if in_main:
                raise ValueError(f"analysers {in_main} are defined in __main__, which the analysis process never "
                                 "imports: define them in a module, or use process=False")
            self._proc = ConsumerProcess(WORKER_MODULE, {"params": self.params, "mode": mode,
                                                         "analysers": analysers}, name=name)
            self._threads = [threading.Thread(target=self._courier, name=f"{name}-courier", daemon=True),
                             threading.Thread(target=self._receiver, name=f"{name}-receiver", daemon=True)]
        else:
            warm_up()
            self._ready.set()
            self._router = RunRouter(self.params, sink, mode, analysers, self._started, self._stopped_local)
            self._threads = [threading.Thread(target=self._work, name=name, daemon=True)]
        for t in self._threads:
            t.start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the worker has loaded its compiled kernels (True) or `timeout` s passed (False); documents
        sent before are queued, not lost — waiting keeps that one-off CPU load out of the first run."""
        return self._ready.wait(timeout) and not self._dead

    # ------------------------------------------------------------------ RunEngine side (cheap)
    def __call__(self, name: str, doc: dict) -> None:
        """Enqueue one document (RunEngine thread): O(1), never blocks."""
        if self._closing:
            raise RuntimeError("LiveAnalysis is closed; documents can no longer be accepted")
        if self._dead:  # the analysis process died (logged loudly); keep nothing that nobody will take
            return
        if name == "stop":
            self._stop_enqueued[doc.get("run_start", "")] = (time.monotonic(), self.enqueued - self.processed)
        self.enqueued += 1
        self.queue.put((name, doc))

    # ------------------------------------------------------------------ state
    @property
    def backlog(self) -> int:
        """Documents accepted but not yet analysed (and handed to the sink)."""
        return self.enqueued - self.processed

    @property
    def alive(self) -> bool:
        """True while the analysis runs (worker thread, or the process and its threads)."""
        if self._dead:
            return False
        if self.process and not self._proc.is_alive():
            return False
        return all(t.is_alive() for t in self._threads)

    def derived_uid(self, raw_uid: str) -> str | None:
        """The uid of the derived run of a raw run (once its start was analysed), else None."""
        return self.derived_uids.get(raw_uid)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every document accepted so far is analysed; False on timeout or a dead analysis."""
        target = self.enqueued
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self.processed < target:
                if not self.alive:
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(0.2 if remaining is None else min(remaining, 0.2))
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Analyse what is queued, end derived runs left open, stop; True if everything was analysed."""
        if self._closing:
            return not any(t.is_alive() for t in self._threads)
        done = self.wait(timeout)
        self._closing = True
        self.queue.put(_STOP)
        for t in self._threads:
            t.join(timeout)
        if self.process:
            self._proc.join(5.0 if timeout is None else timeout)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(2.0)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(2.0)
            self._proc.stop(timeout=0.0)  # release its pipes
        if not done:
            log.warning("LiveAnalysis.close: %d documents were not analysed", self.backlog)
        return done

    def __enter__(self) -> LiveAnalysis:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ bookkeeping (either mode)
    def _started(self, raw_uid: str, derived_uid: str) -> None:
        """A derived run was opened."""
        self._remember(self.derived_uids, raw_uid, derived_uid)

    def _stopped(self, raw_uid: str, info: dict[str, Any]) -> None:
        """A derived run was ended: keep and log how far behind the analysis was."""
        enqueued_at, backlog = self._stop_enqueued.pop(raw_uid, (time.monotonic(), 0))
        info = {**info, "backlog_at_raw_stop": backlog, "lag_s": time.monotonic() - enqueued_at,
                "max_backlog": self.max_backlog}
        self._remember(self.stats, raw_uid, info)
        log.info("live analysis of run %s: derived run %s complete %.2f s after the raw stop "
                 "(backlog at the raw stop: %d documents; %d analysis errors)",
                 raw_uid, info["derived_uid"], info["lag_s"], backlog, info["errors"])

    def _stopped_local(self, raw_uid: str, run: DerivedRun) -> None:
        self._stopped(raw_uid, _run_info(run))

    @staticmethod
    def _remember(store: OrderedDict, key: str, value: Any) -> None:
        """Insert, keeping only the newest MAX_STATS entries."""
        store[key] = value
        while len(store) > MAX_STATS:
            store.popitem(last=False)

    def _advance(self, processed: int) -> None:
        """Mark documents analysed (their derived documents are with the sink) and watch the backlog."""
        with self._cond:
            self.processed = processed
            self._cond.notify_all()
        backlog = self.backlog
        if backlog > self.max_backlog:
            self.max_backlog = backlog
        if backlog > self.warn_backlog:
            now = time.monotonic()
            if now - self._last_warning > self.warn_interval:
                self._last_warning = now
                log.warning("live analysis is %d documents behind acquisition (it will catch up; nothing is "
                            "dropped)", backlog)

    # ------------------------------------------------------------------ thread mode
    def _work(self) -> None:
        """Take documents in order and route them (thread mode)."""
        n = 0
        while True:
            item = self.queue.get()
            if item is _STOP:
                self._router.end_open_runs()
                return
            self._router(*item)
            n += 1
            self._advance(n)

    # ------------------------------------------------------------------ process mode
    def _courier(self) -> None:
        """Ship queued documents to the analysis process in batches; forward close."""
        while True:
            batch: list[tuple[str, dict]] = []
            stop = False
            item = self.queue.get()
            while True:
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
            try:
                if batch:
                    self._proc.send(("docs", batch))
                if stop:
                    self._proc.send(("close",))
                    return
            except (BrokenPipeError, ConnectionError, OSError):
                self._died()
                return
            time.sleep(SEND_INTERVAL)

    def _receiver(self) -> None:
        """Hand derived documents to the sink in order; track progress and per-run statistics."""
        while True:
            try:
                msg = self._proc.recv()
            except (EOFError, OSError):
                if not self._closing:
                    self._died()
                self._end_orphans()
                return
            kind = msg[0]
            if kind == "out":
                for name, doc in msg[1]:
                    self._note(name, doc)
                    try:
                        self.sink(name, doc)
                    except Exception:  # noqa: BLE001 - a sink failure must not stop the analysis
                        log.exception("live analysis: the sink refused a derived %s document", name)
                self._advance(msg[2])
            elif kind == "started":
                self._started(msg[1], msg[2])
            elif kind == "stopped":
                self._stopped(msg[1], msg[2])
            elif kind == "ready":
                log.debug("live analysis process %s ready", self._proc.pid)
                self._ready.set()

    def _note(self, name: str, doc: Mapping[str, Any]) -> None:
        """Keep track of the derived runs the sink has seen started and not yet stopped (receiver thread)."""
        if name == "start":
            self._open_runs[doc["uid"]] = _OpenDerived(str(doc.get("derived_from", "")))
        elif name == "descriptor" and doc.get("run_start") in self._open_runs:
            self._descriptor_runs[doc["uid"]] = (doc["run_start"], str(doc.get("name", "")))
        elif name == "event" and doc.get("descriptor") in self._descriptor_runs:
            run_uid, stream = self._descriptor_runs[doc["descriptor"]]
            counts = self._open_runs[run_uid].counts
            counts[stream] = counts.get(stream, 0) + 1
        elif name == "stop":
            self._open_runs.pop(doc.get("run_start", ""), None)
            for d in [d for d, (r, _) in self._descriptor_runs.items() if r == doc.get("run_start")]:
                del self._descriptor_runs[d]

    def _end_orphans(self) -> None:
        """The analysis process is gone: give every derived run it left open a stop document ("fail")."""
        code = self._proc.exitcode if self.process else None
        for uid, run in list(self._open_runs.items()):
            reason = (f"live analysis process ended (exit code {code}) before this derived run was complete; "
                      f"re-run the analysis with `hotstage replay {run.raw_uid}`")
            stop = {"uid": str(uuid.uuid4()), "run_start": uid, "time": time.time(), "exit_status": "fail",
                    "reason": reason, "num_events": dict(run.counts)}
            try:
                self.sink("stop", stop)
            except Exception:  # noqa: BLE001 - logged; the derived run stays without a stop
                log.exception("live analysis: could not end derived run %s", uid)
            else:
                log.error("live analysis: derived run %s of raw run %s ended: %s", uid, run.raw_uid, reason)
            self._open_runs.pop(uid, None)
        self._descriptor_runs.clear()

    def _died(self) -> None:
        """The analysis process is gone: say so loudly (acquisition and storage of raw data go on)."""
        if not self._dead:
            self._dead = True
            self._ready.set()  # nobody waits for a dead worker
            log.critical("live analysis process died (exit code %s); %d documents were not analysed. Raw data "
                         "are stored as usual; re-run the analysis with `hotstage replay`.",
                         self._proc.exitcode, self.backlog)
            with self._cond:
                self._cond.notify_all()
