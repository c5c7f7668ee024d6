"""The catalog writer that writes from a separate process, so storage never competes with the RunEngine for the GIL.

Why a process (measured with benchmarks/storage.py on the project machine): the in-process Tiled app spends
~30 ms of CPU per request; with the writer in a thread of the RunEngine's process that CPU is taken under
the GIL, costing 7-15 % per point at 20 ms exposure and 17-62 % with no exposure. In another process it
only competes for a core.

Processes, channels and acknowledgements::

    RunEngine thread ── __call__: inbox.put((seq, name, doc)) ──► courier thread (parent, every send_interval)
        courier: inbox → un-acked list (kept until acknowledged) → pipe "docs" ──► writer process
        writer process: reader thread (drains the pipe, never blocks the sender) → main thread →
            WriterEngine (TiledWriter + timed row flushes + retries, acquisition.storage_engine)
        writer process ── pipe "acks": ("ack", seq) / ("error", …) / ("failed", seq) ──► courier
        courier: pops acknowledged documents, advances the stored watermark, wakes flush()

* ``seq`` numbers every document. The writer process acknowledges ``seq`` once every document up to it is
  stored (start/descriptor/stop when written, events when their rows are flushed). ``flush()`` sends a
  "flush now" request and returns once the acknowledgement reaches the ``seq`` it started with.
* The parent keeps every un-acknowledged document, plus the start and descriptor documents of every run
  whose stop is not yet acknowledged (the context a new writer needs). If the writer process dies (the
  courier polls ``is_alive`` every ``send_interval``), the parent logs it at CRITICAL level and, ``restarts``
  times (default once), starts a new writer process in *resume* mode and re-sends, in order, every document
  of every run not yet stopped (its spool file, plus the context and the un-acknowledged documents); the
  resuming engine attaches to the nodes that exist and skips rows already stored (see
  ``hotstage.acquisition.storage_engine``), so a run is complete even if the catalog lost what had been acknowledged
  (a deleted ``catalog.db`` is created anew by the new writer). After that, documents stay held in
  ``unacked`` and ``alive`` is False; ``restart()`` tries again by hand.
* Reopening: when one write failed ``REOPEN_AFTER`` times with transient errors (not "database is locked"),
  the writer process reports ("reopen", why) and exits with ``REOPEN_EXIT``: its catalog client may be what
  is broken (a SQLite connection opened while the data directory was read-only stays read-only). The parent
  logs one WARNING line and starts a new writer process the same way, after ``REOPEN_DELAY_S`` doubled per
  reopen since the last acknowledgement (up to ``backoff[1]``); reopens are counted in ``reopen_count``, not
  against ``restarts``.
* Spool failure (full or read-only disk): the documents are held in memory, in order, and the spool is
  retried every ``SPOOL_RETRY_S``; meanwhile ``__call__`` raises ``StorageError`` after each data document
  so the plan stops (heater off) instead of acquiring data that could not be kept. If the spool still fails
  at ``close()``, each affected run is written complete (its spool file plus the held documents) to a rescue
  directory ``$TMPDIR/hotstage-rescue-<time>-<pid>/`` and its spool file removed; the WARNING line names the
  directory and the command (``HOTSTAGE_SPOOL=<dir> hotstage spool flush``).
* Deadlines: ``flush()`` and ``close()`` wait at most ``FLUSH_TIMEOUT_S`` / ``CLOSE_TIMEOUT_S`` (60 s) by
  default. After ``close()``'s deadline the courier and the writer process are stopped, the documents not
  stored stay in the spool, one WARNING line names them and ``hotstage spool flush``, ``unstored_runs`` lists
  the runs and ``close()`` returns False. A Ctrl-C while ``close()`` waits does the same, then re-raises.
* At interpreter exit an unclosed writer is closed (drained, up to 30 s) before multiprocessing terminates
  its daemonic writer process (``atexit`` runs later registrations first).
* Pipes, not ``multiprocessing.Queue``: the courier sends one pickled batch per tick (no feeder thread
  waking per document), and the writer's reader thread drains the docs pipe continuously, so the two
  directions can never dead-lock on full pipe buffers.
* Start method "forkserver" (default; "spawn" where it does not exist, or on request): a fresh interpreter,
  started like "spawn" (never a fork of the RunEngine's threaded process), imports tiled and the writer
  once (``_PRELOAD``); each writer process is forked from it. Measured: first writer ready in ~2.5 s, every
  further one (another CatalogWriter, or a restart after a crash) in ~0.6 s; with "spawn" ~2.5-3 s each.
  The writer opens its own client (embedded: ``open_catalog`` on the same directory — its own in-process
  Tiled app on the same SQLite (WAL) and zarr files; server: HTTP). The constructor waits for it
  (``ready_timeout``); documents enqueued before it is ready just queue.
"""

from __future__ import annotations

import atexit
import functools
import logging
import multiprocessing
import os
import queue
import signal
import tempfile
import threading
import time
import weakref
from collections import deque
from pathlib import Path
from typing import Any

from hotstage.acquisition.spool import Spool, default_spool_dir, doc_key, rescue_run, unique_documents
from hotstage.acquisition.storage import (
    CLOSE_TIMEOUT_S,
    FLUSH_TIMEOUT_S,
    REOPEN_AFTER,
    CatalogLocation,
    CatalogWriter,
    StorageError,
    _runs_text,
    catalog_location,
    close_catalog,
)
from hotstage.acquisition.storage_engine import ReopenNeeded, WriteError, WriterEngine, is_transient, set_aside_orphans

__all__ = ["REOPEN_EXIT", "ProcessCatalogWriter", "RemoteWriteError"]

REOPEN_EXIT = 75
"""Exit status of a writer process that asks for a new one (EX_TEMPFAIL): its catalog client kept failing."""
SPOOL_RETRY_S = 1.0
"""Seconds between attempts to spool the documents held in memory after the spool failed."""

logger = logging.getLogger("hotstage.acquisition.storage")


#: Modules a "forkserver" imports once, so that each writer process forks ready (~0.3 s instead of ~2.5 s).
_PRELOAD = (
    "hotstage.acquisition.storage_process",
    "bluesky_tiled_plugins.writing.tiled_writer",
    "tiled.client",
    "tiled.catalog",
    "tiled.server.app",
)


class RemoteWriteError(Exception):
    """An exception raised in the writer process, carried back as its type name and repr."""

    def __init__(self, type_name: str, text: str) -> None:
        """Keep the original type name and repr."""
        super().__init__(text)
        self.type_name = type_name
        self.text = text

    def __repr__(self) -> str:
        """The original exception's repr."""
        return self.text


# ------------------------------------------------------------------------------- writer process side


class _ChildReporter:
    """Engine reports (writer process) -> messages on the acks pipe; acks are coalesced per cycle."""

    def __init__(self, conn: Any) -> None:
        """Send on ``conn``."""
        self.conn = conn
        self.stored_seq = 0
        self.sent_seq = 0

    def stored(self, seq: int) -> None:
        """Note the stored watermark; ``send_ack`` sends it."""
        self.stored_seq = max(self.stored_seq, seq)

    def send_ack(self) -> None:
        """Send the watermark if it advanced."""
        if self.stored_seq > self.sent_seq:
            self.conn.send(("ack", self.stored_seq))
            self.sent_seq = self.stored_seq

    def error(self, err: WriteError) -> None:
        """Send one failed attempt."""
        exc = err.exception
        self.conn.send(("error", {
            "time": err.time, "what": err.what, "uid": err.uid, "attempt": err.attempt,
            "type": type(exc).__name__, "repr": repr(exc)[:2000], "transient": err.transient,
            "gave_up": err.gave_up,
        }))

    def failed(self, seq: int, name: str, doc: dict) -> None:
        """Send the sequence number of a document given up (the parent holds the document; 0: re-sent history)."""
        self.conn.send(("failed", seq))


def _open_with_retry(location: CatalogLocation, reporter: _ChildReporter, max_attempts: int,
                     backoff: tuple[float, float]) -> Any:
    """Open the catalog, retrying transient failures for ever and others ``max_attempts`` times."""
    delay = backoff[0]
    attempt = 0
    while True:
        attempt += 1
        try:
            return location.open()
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            transient = is_transient(exc)
            gave_up = not transient and attempt >= max_attempts
            reporter.error(WriteError(time.time(), "open catalog", None, attempt, exc, transient, gave_up))
            if gave_up:
                raise
            time.sleep(delay)
            delay = min(delay * 2, backoff[1])


def writer_main(location: CatalogLocation, options: dict[str, Any], docs_conn: Any, acks_conn: Any,
                resume: bool) -> None:
    """Entry point of the writer process: receive batches, write them through a WriterEngine, acknowledge."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the RunEngine's business; the parent closes us
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    reporter = _ChildReporter(acks_conn)
    inbox: queue.SimpleQueue[tuple] = queue.SimpleQueue()

    def read() -> None:
        """Drain the docs pipe into ``inbox`` so the parent's sends never wait for a write to finish."""
        while True:
            try:
                inbox.put(docs_conn.recv())
            except (EOFError, OSError):
                inbox.put(("eof",))
                return

    # Reading starts before the catalog is opened: a catalog that cannot be opened must not block the parent's
    # courier on a full pipe (it would stop spooling too).
    threading.Thread(target=read, name="hotstage-writer-reader", daemon=True).start()
    try:
        client = _open_with_retry(location, reporter, options["max_attempts"], options["backoff"])
    except Exception as exc:  # noqa: BLE001
        acks_conn.send(("fatal", f"cannot open {location!r}: {exc!r}"))
        raise SystemExit(2) from exc
    engine = WriterEngine(
        client, reporter, max_attempts=options["max_attempts"], backoff=options["backoff"],
        validate_events=options["validate_events"], tiled_writer_kwargs=options["tiled_writer_kwargs"],
        resume=resume, reopen_after=options["reopen_after"],
        on_recreate=functools.partial(set_aside_orphans, location.data_dir) if resume else None,
    )
    acks_conn.send(("ready", os.getpid()))
    try:
        _serve(engine, reporter, inbox, options)
    except ReopenNeeded as why:
        # The client may be what is broken: a new process opens a new one (the parent re-sends what is needed).
        reporter.send_ack()
        acks_conn.send(("reopen", str(why)))
        os._exit(REOPEN_EXIT)  # no cleanup: closing a broken client can hang, and the parent holds everything
    except (BrokenPipeError, ConnectionResetError, EOFError):
        # The parent died (SIGKILL): its spool holds every document; `hotstage spool flush` stores them. A
        # traceback here would only hide the guardian's line on the terminal.
        os._exit(1)
    close_catalog(client)


def _serve(engine: WriterEngine, reporter: _ChildReporter, inbox: queue.SimpleQueue, options: dict[str, Any]) -> None:
    """The writer process' loop: hand batches to the engine, flush rows on time, acknowledge; until "close"."""
    flush_interval, max_batch = options["flush_interval"], options["max_batch"]
    next_flush = None  # when the oldest unflushed event's rows are due
    streams_written: set[str] = set()  # descriptors whose first rows are due at once (see below)
    closing = False
    while not closing:
        timeout = None if next_flush is None else max(0.0, next_flush - time.monotonic())
        messages = []
        try:
            messages.append(inbox.get(timeout=timeout))
            while True:
                messages.append(inbox.get_nowait())
        except queue.Empty:
            pass
        urgent = False
        for msg in messages:
            kind = msg[0]
            if kind == "docs":
                for seq, name, doc in msg[1]:
                    engine.hand_over(seq, name, doc)
                    if engine.unflushed >= max_batch:
                        engine.flush_events()
                    if engine.unflushed and next_flush is None:
                        next_flush = time.monotonic() + flush_interval
                    if name == "event" and doc["descriptor"] not in streams_written:
                        # A stream's first rows create its table and array nodes (~0.7 s in the embedded
                        # catalog, against ~0.2 s for a later flush): start that at once, not a tick later.
                        streams_written.add(doc["descriptor"])
                        next_flush = time.monotonic()
                    if not engine.unflushed:
                        next_flush = None
            elif kind == "flush":
                urgent = True
            elif kind in ("close", "eof"):
                closing = True
        if urgent or closing or (next_flush is not None and time.monotonic() >= next_flush):
            engine.flush_events()
            next_flush = None
        reporter.send_ack()


# ------------------------------------------------------------------------------- parent side


class ProcessCatalogWriter(CatalogWriter):
    """The default CatalogWriter: documents are written by a separate writer process (see module docstring).

    Extra options over ``ThreadCatalogWriter``: ``send_interval`` (courier tick, s), ``restarts`` (automatic
    restarts of a dead writer process), ``start_method`` ("forkserver" or "spawn"), ``ready_timeout``,
    ``spool_dir``, ``reopen_after``. Extra state: ``unacked`` (documents not yet acknowledged, held here),
    ``restart_count``, ``reopen_count``, ``pid`` (the current writer process), ``spool``, ``rescue_dir``
    (where ``close()`` had to put documents the spool could not take, else None).
    """

    def __init__(
        self,
        client_or_location: Any,
        *,
        process: bool = True,
        flush_interval: float = 0.25,
        send_interval: float = 0.05,
        max_batch: int = 200,
        max_attempts: int = 5,
        backoff: tuple[float, float] = (0.2, 10.0),
        max_errors_kept: int = 1000,
        validate_events: bool = False,
        tiled_writer_kwargs: dict[str, Any] | None = None,
        restarts: int = 1,
        start_method: str = "forkserver",
        ready_timeout: float | None = 60.0,
        name: str = "hotstage-catalog-writer",
        spool_dir: str | os.PathLike[str] | None = None,
        reopen_after: int | None = REOPEN_AFTER,
    ) -> None:
        """Resolve where the catalog is, start the writer process and the courier thread.

        Waits up to ``ready_timeout`` s (None or 0: not at all) for the writer process to have opened the
        catalog (~2-4 s of imports), so that the first event of the first run is visible within 1 s too.
        ``spool_dir``: where every document is spooled on its way (default ``hotstage.acquisition.spool.default_spool_dir``);
        ``StorageError`` if it cannot be created.
        """
        self._init_common(flush_interval=flush_interval, max_batch=max_batch, max_attempts=max_attempts,
                          backoff=backoff, max_errors_kept=max_errors_kept, validate_events=validate_events)
        self.location = catalog_location(client_or_location)
        self.client = None if isinstance(client_or_location, (str, os.PathLike, CatalogLocation)) \
            else client_or_location
        self.send_interval = float(send_interval)
        self.restarts = int(restarts)
        self.restart_count = 0
        self.name = name
        self._options = {
            "flush_interval": self.flush_interval, "max_batch": self.max_batch,
            "max_attempts": self.max_attempts, "backoff": tuple(backoff),
            "validate_events": validate_events, "tiled_writer_kwargs": dict(tiled_writer_kwargs or {}),
            "reopen_after": reopen_after,
        }
        if start_method not in multiprocessing.get_all_start_methods():
            start_method = "spawn"
        self._mp = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            self._mp.set_forkserver_preload(list(_PRELOAD))
        self._unacked: deque[tuple[int, str, dict]] = deque()
        self._run_context: dict[str, list[tuple[int, str, dict]]] = {}
        self._outbox: list[tuple[int, str, dict]] = []
        self._flush_requests = 0
        self._flush_sent = 0
        self._close_sent = False
        self._dead = False  # writer process gone and no restart left
        self._manual_restart = False
        self._proc: Any = None
        self._abandoned = False
        self._reopen_why: str | None = None  # the writer process asked for a new one (and why)
        self._respawn_at: float | None = None  # when to start the next writer process after a reopen request
        self._failed_runs: set[str] = set()  # runs with a document the writer gave up on: their spool files stay
        self._unspooled: deque[tuple[str, tuple[int, str, dict]]] = deque()  # (run, item) the spool refused
        self._spool_retry_at = 0.0
        self._spool_problem = ""  # the spool's last OSError, for messages
        self.rescue_dir: Path | None = None
        directory = Path(spool_dir) if spool_dir is not None else default_spool_dir(self.location)
        try:
            self.spool = Spool(directory)
            """Durable copy of every document not yet known to be stored (``hotstage.acquisition.spool``)."""
        except OSError as exc:
            raise StorageError(f"cannot create the storage spool {directory}: {exc.strerror or exc}") from exc
        self._ready = threading.Event()
        self._spawn(resume=False)
        self._courier = threading.Thread(target=self._courier_loop, name=f"{name}-courier", daemon=True)
        self._courier.start()
        ref = weakref.ref(self)
        atexit.register(lambda: (w := ref()) is not None and not w._closing and w.close(timeout=30))
        if ready_timeout and not self.wait_ready(ready_timeout):
            logger.warning("CatalogWriter: writer process not ready after %s s; documents queue meanwhile",
                           ready_timeout)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the current writer process has opened the catalog; True if it has."""
        return self._ready.wait(timeout)

    # ---------------------------------------------------------------- public state

    @property
    def alive(self) -> bool:
        """True while the writer process runs (and the courier thread feeds it)."""
        return self._proc is not None and self._proc.is_alive() and self._courier.is_alive()

    @property
    def pid(self) -> int | None:
        """Process id of the current writer process."""
        return None if self._proc is None else self._proc.pid

    @property
    def unacked(self) -> int:
        """Documents held here because the writer process has not yet acknowledged them."""
        return len(self._unacked) + self.inbox.qsize()

    @property
    def unstored_runs(self) -> list[str]:
        """Runs whose stop document is not acknowledged yet, or with a document the writer gave up on."""
        return sorted(set(self._run_context) | self._failed_runs)

    def flush(self, timeout: float | None = FLUSH_TIMEOUT_S) -> bool:
        """Ask the writer process to write its rows now, then wait until everything enqueued is stored."""
        self._flush_requests += 1
        return super().flush(timeout)

    def _can_progress(self) -> bool:
        """flush() keeps waiting while a writer process runs or is about to be (re)started."""
        return not self._dead and self._courier.is_alive()

    def restart(self) -> None:
        """Start a new writer process by hand after the automatic restarts were used up."""
        self._manual_restart = True
        self._wake.set()

    def close(self, timeout: float | None = CLOSE_TIMEOUT_S) -> bool:
        """Send everything, let the writer process store it and exit (at most ``timeout`` s); True if all were
        stored.

        What is not stored by then (the catalog is unreachable, say) stays in the spool: the courier and the
        writer process are stopped, one WARNING line names the runs and ``hotstage spool flush``, and False is
        returned. A Ctrl-C while waiting does the same and is then re-raised.
        """
        self._closing = True
        self._wake.set()
        try:
            self._courier.join(timeout)
        except KeyboardInterrupt:
            self._finish_close()
            raise
        return self._finish_close()

    def _finish_close(self) -> bool:
        """After close()'s wait: stop what still runs, keep the rest on disk, say where; True if all is stored."""
        if self._courier.is_alive():
            self._abandon()
        self._take_inbox()  # the courier has stopped: this thread owns the inbox and the spool now
        if self._unspooled:
            self._spool_held(force=True)
        if self._unspooled:
            self._rescue()
        self.spool.close()
        stored = self._stored >= self._enqueued
        if not stored:
            self._warn_unstored()
        elif self.failed:
            logger.warning("CatalogWriter.close: %d documents of run(s) %s could not be written (see the errors "
                           "above); their spool files are kept in %s: `hotstage spool flush` tries them again",
                           len(self.failed), _runs_text(sorted(self._failed_runs)), self.spool.directory)
        return stored and not self.failed

    def _warn_unstored(self) -> None:
        """The one line that says what is not in the catalog, where it is, and what finishes the job."""
        runs = _runs_text(self.unstored_runs)
        if self._unspooled:
            logger.critical("CatalogWriter.close: %d documents of run(s) %s are not in the catalog and could not be "
                            "written to the spool %s (%s) nor to %s: they are lost when this process exits",
                            self.backlog, runs, self.spool.directory, self._spool_problem,
                            self.rescue_dir or tempfile.gettempdir())
        elif self.rescue_dir is not None:
            logger.warning("CatalogWriter.close: %d documents of run(s) %s are not yet in the catalog; the spool %s "
                           "could not take them all (%s), so they are kept in %s: run `HOTSTAGE_SPOOL=%s hotstage "
                           "spool flush` once the catalog is writable", self.backlog, runs, self.spool.directory,
                           self._spool_problem, self.rescue_dir, self.rescue_dir)
        else:
            logger.warning("CatalogWriter.close: %d documents of run(s) %s are not yet in the catalog; they are kept "
                           "in the spool %s: run `hotstage spool flush` once the catalog is writable",
                           self.backlog, runs, self.spool.directory)

    def _abandon(self) -> None:
        """Stop the courier and the writer process (the courier's last tick spools what it had taken)."""
        self._abandoned = True
        self._wake.set()
        self._courier.join(5.0)
        if self._proc is not None and self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5.0)
        self._courier.join(5.0)  # a courier blocked on the dead writer's pipe is free now

    # ---------------------------------------------------------------- spool

    def _spool_items(self, taken: list[tuple[int, str, dict]]) -> None:
        """Spool newly taken documents, behind any held ones (one run's file stays in order)."""
        if self._unspooled or not taken:
            self._unspooled.extend((self.spool.run_of(item[1], item[2]), item) for item in taken)
            self._spool_held()
            return
        try:
            self.spool.append(taken)
        except OSError as exc:
            self._unspooled.extend((self.spool.run_of(item[1], item[2]), item) for item in taken)
            self._spool_failed(exc)

    def _spool_held(self, force: bool = False) -> None:
        """Retry the documents the spool refused (at most every ``SPOOL_RETRY_S``, unless ``force``)."""
        if not self._unspooled or (not force and time.monotonic() < self._spool_retry_at):
            return
        try:
            self.spool.append(item for _, item in self._unspooled)
        except OSError as exc:
            self._spool_failed(exc)
            return
        logger.warning("CatalogWriter: the spool %s takes documents again (%d held ones written); data documents "
                       "are accepted again", self.spool.directory, len(self._unspooled))
        self._unspooled.clear()
        self._refusing = None

    def _spool_failed(self, exc: OSError) -> None:
        """The spool refused documents: hold them, retry later, refuse new data documents (StorageError)."""
        self._spool_retry_at = time.monotonic() + SPOOL_RETRY_S
        self._spool_problem = exc.strerror or str(exc)
        if self._refusing is None:
            self._refusing = (f"cannot keep acquired data: spool {self.spool.directory}: {exc.strerror or exc}; "
                              "the run is stopped")
            logger.error("CatalogWriter: %s (%d documents held in memory and retried)", self._refusing,
                         len(self._unspooled))

    def _forget_unspooled(self, run: str) -> None:
        """A run's stop is stored: its held documents are in the catalog, no need to spool them."""
        if self._unspooled:
            self._unspooled = deque(entry for entry in self._unspooled if entry[0] != run)
            if not self._unspooled:
                self._refusing = None

    def _rescue(self) -> None:
        """Write each run with documents the spool refused, complete, to a rescue directory (module docstring)."""
        held: dict[str, list[tuple[str, dict]]] = {}
        for run, (_, name, doc) in self._unspooled:
            held.setdefault(run, []).append((name, doc))
        directory = Path(tempfile.gettempdir()) / f"hotstage-rescue-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        for run, docs in held.items():
            try:
                rescue_run(directory, run, unique_documents(self.spool.read(run) + docs))
            except OSError as exc:
                logger.error("CatalogWriter: cannot write run %s to %s either: %s", run, directory, exc)
                continue
            self.rescue_dir = directory
            self.spool.finish(run)  # the rescued copy is complete: one file per run, no partial twin
            self._unspooled = deque(entry for entry in self._unspooled if entry[0] != run)

    # ---------------------------------------------------------------- courier thread

    def _spawn(self, resume: bool) -> None:
        """Start a writer process with fresh pipes."""
        docs_r, self._docs_w = self._mp.Pipe(duplex=False)
        self._acks_r, acks_w = self._mp.Pipe(duplex=False)
        self._proc = self._mp.Process(
            target=writer_main, args=(self.location, self._options, docs_r, acks_w, resume),
            name=self.name, daemon=True,
        )
        self._ready.clear()
        self._proc.start()
        docs_r.close()
        acks_w.close()
        self._close_sent = False
        self._flush_sent = 0 if self._flush_requests else self._flush_sent

    def _send(self, message: tuple) -> bool:
        """Send one message to the writer process; False if it is gone."""
        try:
            self._docs_w.send(message)
            return True
        except (BrokenPipeError, ConnectionError, OSError):
            return False

    def _receive(self) -> bool:
        """Handle every message waiting on the acks pipe; False once the writer process closed it."""
        try:
            while self._acks_r.poll():
                self._handle(self._acks_r.recv())
        except (EOFError, OSError):
            return False
        return True

    def _handle(self, msg: tuple) -> None:
        """Apply one message from the writer process."""
        kind = msg[0]
        if kind == "ack":
            seq = msg[1]
            while self._unacked and self._unacked[0][0] <= seq:
                _, name, doc = self._unacked.popleft()
                if name == "stop":
                    run = doc.get("run_start", "")
                    self._run_context.pop(run, None)
                    self._forget_unspooled(run)
                    if run not in self._failed_runs:  # else its spool file keeps the failed one
                        self.spool.finish(run)
            self._mark_stored(seq)
        elif kind == "error":
            e = msg[1]
            self._record(WriteError(e["time"], e["what"], e["uid"], e["attempt"],
                                    RemoteWriteError(e["type"], e["repr"]), e["transient"], e["gave_up"]))
        elif kind == "failed":
            if msg[1] <= 0:  # a re-sent document of a run's history: keep the spool files of every run re-sent
                self._failed_runs.update(self._run_context)
            for seq, name, doc in self._unacked:
                if seq == msg[1]:
                    self.failed.append((name, doc))
                    self._failed_runs.add(self.spool.run_of(name, doc))
                    break
        elif kind == "reopen":
            self._reopen_why = msg[1]
        elif kind == "fatal":
            logger.critical("CatalogWriter: writer process cannot work: %s", msg[1])
        elif kind == "ready":
            self._ready.set()
            logger.debug("CatalogWriter: writer process %s ready", msg[1])

    def _take_inbox(self) -> None:
        """Move newly enqueued documents to the spool (on disk first), the un-acked list, the run context and
        the outbox."""
        taken = []
        try:
            while True:
                taken.append(self.inbox.get_nowait())
        except queue.Empty:
            pass
        self._spool_items(taken)  # also retries held documents, when due
        for item in taken:
            seq, name, doc = item
            self._unacked.append(item)
            if name == "start":
                self._run_context[doc["uid"]] = [item]
            elif name == "descriptor" and doc.get("run_start") in self._run_context:
                self._run_context[doc["run_start"]].append(item)
            self._outbox.append(item)

    def _history(self) -> list[tuple[int, str, dict]]:
        """What a new writer process needs, in order: every document of every run not yet stopped (from its
        spool file and the context held here) that is not un-acknowledged, as seq 0; then the un-acknowledged."""
        unacked = {doc_key(name, doc) for _, name, doc in self._unacked}
        seen: set[tuple[str, Any]] = set()
        history: list[tuple[int, str, dict]] = []
        for run, context in self._run_context.items():
            spooled = self.spool.read(run)
            keys = {doc_key(name, doc) for name, doc in spooled}
            missing = [(name, doc) for _, name, doc in context if doc_key(name, doc) not in keys]
            for name, doc in missing + spooled:
                key = doc_key(name, doc)
                if key not in unacked and key not in seen:
                    seen.add(key)
                    history.append((0, name, doc))
        return history + list(self._unacked)

    def _respawn(self, level: int = logging.WARNING) -> None:
        """Start a new writer process in resume mode and queue everything it needs."""
        self._spawn(resume=True)
        self._outbox = self._history()
        logger.log(level, "CatalogWriter: restarted the writer process (pid %s); re-sending %d documents (%d not "
                   "acknowledged)", self._proc.pid, len(self._outbox), len(self._unacked))

    def _writer_died(self) -> None:
        """The writer process is gone: a reopen request waits and starts a new one; a crash is logged loudly and
        restarted (if allowed)."""
        code = self._proc.exitcode
        if self._abandoned:
            return  # close() gave up and stopped it
        if self._reopen_why is not None or code == REOPEN_EXIT:
            delay = self._reopen_delay()
            logger.warning("CatalogWriter: the catalog kept failing (%s); opening it again in a new writer process "
                           "in %.1f s (reopen %d)", self._reopen_why or "no reason given", delay, self.reopen_count)
            self._reopen_why = None
            self._respawn_at = time.monotonic() + delay
            return
        logger.critical(
            "CatalogWriter: writer process %s died (exit code %s); %d documents not acknowledged are held here",
            self._proc.pid, code, len(self._unacked),
        )
        if self.restart_count >= self.restarts and not self._manual_restart:
            if not self._dead:
                logger.critical("CatalogWriter: no restart left; documents stay in memory (writer.unacked) and in "
                                "the spool %s", self.spool.directory)
            self._dead = True
            return
        self._manual_restart = False
        self._dead = False
        self.restart_count += 1
        self._respawn(logging.CRITICAL)

    def _courier_loop(self) -> None:
        """Every ``send_interval`` (or when woken): send new documents, forward flush/close, read acks, watch."""
        while True:
            self._wake.wait(self.send_interval)
            self._wake.clear()
            self._take_inbox()
            if self._abandoned:
                return
            ok = True
            if self._dead:
                if self._manual_restart:
                    self._writer_died()
                elif self._closing:
                    return
                continue
            if self._respawn_at is not None:
                if time.monotonic() < self._respawn_at:
                    continue
                self._respawn_at = None
                self._respawn()
            if self._outbox:
                ok = self._send(("docs", self._outbox))
                if ok:
                    self._outbox = []
            if ok and self._flush_requests > self._flush_sent:
                ok = self._send(("flush",))
                self._flush_sent = self._flush_requests
            ok = self._receive() and ok
            if self._closing and ok and not self._outbox and not self._close_sent:
                ok = self._send(("close",))
                self._close_sent = True
            if not ok or not self._proc.is_alive():
                self._proc.join(1.0)
                self._receive()
                finished = self._close_sent and self._proc.exitcode == 0 and self.inbox.qsize() == 0 \
                    and self._stored >= self._enqueued
                if finished:
                    with self._cond:
                        self._cond.notify_all()
                    return
                self._writer_died()
