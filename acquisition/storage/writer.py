"""The RunEngine-side catalog writers: ``CatalogWriter`` (the subscriber), its writer-process and writer-thread forms.

``CatalogWriter(...)`` builds a ``ProcessCatalogWriter`` (default: the writing happens in a writer process, a
consumer of the document bus) or a ``ThreadCatalogWriter`` (``process=False``: a background thread of this
process). Why a process (measured with benchmarks/storage.py on the project machine): the in-process Tiled app
spends ~30 ms of CPU per request; with the writer in a thread of the RunEngine's process that CPU is taken under
the GIL, costing 7-15 % per point at 20 ms exposure and 17-62 % with no exposure. In another process it
only competes for a core.

Processes, channels and acknowledgements (``ProcessCatalogWriter``)::

    RunEngine thread ── __call__: inbox.put((seq, name, doc)) ──► courier thread (parent, every send_interval)
        courier: inbox → spool (fsync'd) → un-acked (kept until acknowledged) → its stdin ──► writer process
        writer process (``python -m hotstage.acquisition.storage.worker``): reader thread (drains stdin, never
            blocks the sender) → main thread → WriterEngine (TiledWriter + timed row flushes + retries,
            ``hotstage.acquisition.storage.engine``)
        writer process ── stdout: ("ack", seq) / ("error", …) / ("failed", seq) ──► courier
        courier: pops acknowledged documents, advances the stored watermark, wakes flush()

* The writer process is its own interpreter (``hotstage.analysis.consumer.ConsumerProcess``: ``subprocess``,
  never ``multiprocessing``), so the user's ``__main__`` is never re-imported (an unguarded script or
  ``python -`` runs once); frames are length-prefixed pickles on its stdin/stdout.
* ``seq`` numbers every document. The writer process acknowledges ``seq`` once every document up to it is
  stored (start/descriptor/stop when written, events when their rows are flushed). ``flush()`` sends a
  "flush now" request and returns once the acknowledgement reaches the ``seq`` it started with.
* The parent keeps every un-acknowledged document, plus the start and descriptor documents of every run
  whose stop is not yet acknowledged (the context a new writer needs). If the writer process dies (the
  courier polls it every ``send_interval``), the parent logs it at CRITICAL level and, ``restarts``
  times (default once), starts a new writer process in *resume* mode and re-sends, in order, every document
  of every run not yet stopped (its spool file, plus the context and the un-acknowledged documents); the
  resuming engine attaches to the nodes that exist and skips rows already stored (see
  ``hotstage.acquisition.storage.engine``), so a run is complete even if the catalog lost what had been acknowledged
  (a deleted ``catalog.db`` is created anew by the new writer). After that, documents stay held in
  ``unacked`` and ``alive`` is False; ``restart()`` tries again by hand.
* Reopening: when one write failed ``REOPEN_AFTER`` times with transient errors (not "database is locked"),
  the writer process reports ("reopen", why) and exits with ``REOPEN_EXIT``: its catalog client may be what
  is broken (a SQLite connection opened while the data directory was read-only stays read-only). The parent
  logs one WARNING line and starts a new writer process the same way, after ``REOPEN_DELAY_S`` doubled per
  reopen since the last acknowledgement (up to ``backoff[1]``); reopens are counted in ``reopen_count``, not
  against ``restarts``. A writer process killed by SIGBUS is reopened the same way: SQLite's memory-mapped WAL
  index faults so when its file turns unwritable (read-only or immutable data directory) — the storage's state,
  not a bug of the writer.
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
* At interpreter exit an unclosed writer is closed (drained, up to 30 s) before its writer process is stopped
  (``atexit``); a writer process whose parent died reads the end of its stdin, stores what it had and exits.
* The courier sends one pickled batch per tick (no thread waking per document), and the writer's reader thread
  drains its stdin continuously, so the two directions can never dead-lock on full pipe buffers.
* Start-up: the writer process imports tiled and opens its own client (~2-3 s); the constructor waits for it
  (``ready_timeout``); documents enqueued before it is ready just queue. A restart costs the same.
"""

from __future__ import annotations

import atexit
import itertools
import logging
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

from hotstage.acquisition.storage.engine import REOPEN_EXIT, ReopenNeeded, WriteError, WriterEngine
from hotstage.acquisition.storage.location import CatalogLocation, catalog_location, close_catalog
from hotstage.acquisition.storage.spool import Spool, default_spool_dir, doc_key, rescue_run, unique_documents
from hotstage.analysis.consumer import ConsumerProcess

__all__ = [
    "CLOSE_TIMEOUT_S",
    "FLUSH_TIMEOUT_S",
    "REOPEN_AFTER",
    "CatalogWriter",
    "ProcessCatalogWriter",
    "RemoteWriteError",
    "StorageError",
    "ThreadCatalogWriter",
]

logger = logging.getLogger("hotstage.acquisition.storage")

WORKER_MODULE = "hotstage.acquisition.storage.worker"
"""The writer process's module (run as ``__main__`` in its own interpreter)."""
SPOOL_RETRY_S = 1.0
"""Seconds between attempts to spool the documents held in memory after the spool failed."""
SIGBUS = int(getattr(signal, "SIGBUS", 7))
"""A writer process killed by SIGBUS faulted on SQLite's memory-mapped WAL index of a catalog file that turned
unwritable (immutable or read-only directory): a storage condition, reopened like ``REOPEN_EXIT``, not a crash."""


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


CLOSE_TIMEOUT_S = 60.0
"""Default deadline of ``CatalogWriter.close()``: what is not stored by then stays in the spool."""
FLUSH_TIMEOUT_S = 60.0
"""Default deadline of ``CatalogWriter.flush()``."""
REOPEN_AFTER = 5
"""Attempts of one write (transient errors, ~3 s with the default backoff) before the writer opens a new client."""
REOPEN_DELAY_S = 1.0
"""First wait before a new client is opened after ``REOPEN_AFTER`` failures; doubles per reopen, up to backoff[1]."""
DATA_DOCUMENTS = frozenset({"descriptor", "event", "event_page", "resource", "datum", "datum_page",
                            "stream_resource", "stream_datum"})
"""Documents refused (``StorageError``) while acquired data cannot be kept; start and stop are always taken."""


class StorageError(RuntimeError):
    """Acquired data cannot be kept (the spool's disk is full or read-only): raised into the plan to stop it."""


def _runs_text(runs: list[str], most: int = 3) -> str:
    """Run uids for a message: the first ``most`` and how many more."""
    text = ", ".join(runs[:most]) or "(none)"
    return text + (f" and {len(runs) - most} more" if len(runs) > most else "")


class CatalogWriter:
    """RunEngine subscriber that stores documents in a Tiled catalog without ever blocking the RunEngine.

    ``CatalogWriter(client_or_location, *, process=True, ...)`` builds a ``ProcessCatalogWriter`` (writing in
    a separate writer process, ``hotstage.acquisition.storage.worker``) or, with ``process=False``, a
    ``ThreadCatalogWriter`` (writing in a background thread of this process). ``client_or_location`` is a client from
    ``open_catalog``, any HTTP Tiled client, a data directory, a server URI or a ``CatalogLocation``; an
    in-process client that ``open_catalog`` did not make cannot be reopened elsewhere, so it gets the
    thread writer (with a warning).

    Common behaviour:

    * ``__call__(name, doc)`` (RunEngine thread) appends to an unbounded in-memory inbox — never drops,
      never waits. Documents are kept by reference: producers must not mutate a document after emitting
      it (bluesky does not). While acquired data cannot be kept (the process writer's spool disk is full),
      a data document (descriptor, event, …) is still taken but ``StorageError`` is raised after it: bluesky
      raises it into the plan, which stops the run with the heater off (its stop document is taken).
    * Event rows are written on a timer (``flush_interval``, default 0.25 s, sooner when ``max_batch``
      events wait); start/descriptor/stop are written as they arrive; stop writes the run's remaining rows.
      An event whose stream already has its ``seq_num`` (bluesky's replay after a pause or suspension) is
      stored once (``hotstage.acquisition.storage.engine``).
    * A failed write keeps its document and is retried with exponential backoff (``backoff``): transient
      errors (transport, HTTP 5xx/429, OS/SQLite errors) until ``REOPEN_AFTER`` attempts of one write, after
      which the writer opens a new client on the same catalog and resumes (a broken SQLite connection is
      never retried for ever); "database is locked" is retried on the same client; other errors
      ``max_attempts`` times, after which the document goes to ``failed`` (kept). Every error is logged
      and kept in ``errors``.
    * ``flush(timeout)`` returns True once everything enqueued before the call is stored (False on
      timeout; default ``FLUSH_TIMEOUT_S``); ``close(timeout)`` drains everything and stops, waiting at most
      ``CLOSE_TIMEOUT_S`` by default, and returns True only if everything was stored (else one WARNING line
      says where the rest is and which command finishes the job); ``backlog`` = documents not yet stored;
      ``unstored_runs`` = the runs they belong to; ``alive`` = the writer is running. Use as a context
      manager to close on exit.
    """

    def __new__(cls, *args: Any, process: bool = True, **kwargs: Any):
        """Pick the implementation: the writer process by default, the writer thread with ``process=False``."""
        if cls is CatalogWriter:
            cls = ThreadCatalogWriter
            if process:
                try:
                    catalog_location(args[0] if args else kwargs.get("client_or_location"))
                except ValueError as exc:
                    logger.warning("CatalogWriter: %s; writing from a thread of this process instead", exc)
                else:
                    cls = ProcessCatalogWriter
        return super().__new__(cls)

    def _init_common(self, *, flush_interval: float, max_batch: int, max_attempts: int,
                     backoff: tuple[float, float], max_errors_kept: int, validate_events: bool) -> None:
        """State shared by both implementations: inbox, sequence numbers, errors, the stored watermark."""
        self.flush_interval = float(flush_interval)
        self.max_batch = int(max_batch)
        self.max_attempts = int(max_attempts)
        self.backoff = backoff
        self.validate_events = validate_events
        self.errors: deque[WriteError] = deque(maxlen=max_errors_kept)
        self.error_count = 0
        self.failed: list[tuple[str, dict]] = []
        self.inbox: queue.SimpleQueue[tuple[int, str, dict]] = queue.SimpleQueue()
        self._seq = itertools.count(1)
        self._enqueued = 0  # highest sequence number handed to the inbox
        self._stored = 0  # highest sequence number stored (all earlier ones too)
        self._cond = threading.Condition()
        self._wake = threading.Event()
        self._closing = False
        self._refusing: str | None = None  # why data documents are refused (StorageError), None while all is well
        self.reopen_count = 0
        """How many times the writer opened a new client after repeated failures."""
        self._reopen_streak = 0  # reopens since the last progress (their delay doubles)

    # ---------------------------------------------------------------- RunEngine side (cheap)

    def __call__(self, name: str, doc: dict) -> None:
        """Enqueue one document (RunEngine thread): O(1), never blocks on storage.

        Raises ``StorageError`` after taking a data document while acquired data cannot be kept.
        """
        if self._closing:
            raise RuntimeError("CatalogWriter is closed; documents can no longer be accepted")
        seq = next(self._seq)
        self._enqueued = seq
        self.inbox.put((seq, name, doc))
        refusing = self._refusing
        if refusing is not None and name in DATA_DOCUMENTS:
            raise StorageError(refusing)

    # ---------------------------------------------------------------- public state

    @property
    def backlog(self) -> int:
        """Documents accepted but not yet stored."""
        return self._enqueued - self._stored

    @property
    def alive(self) -> bool:
        """True while the writer runs."""
        raise NotImplementedError

    @property
    def unstored_runs(self) -> list[str]:
        """Uids of the runs with documents not (yet) in the catalog (for the message after ``close()``)."""
        raise NotImplementedError

    def flush(self, timeout: float | None = FLUSH_TIMEOUT_S) -> bool:
        """Wait until everything enqueued so far is stored; True if so, False on timeout or a dead writer.

        ``timeout=None`` waits as long as the writer may still store them.
        """
        target = self._enqueued
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._wake.set()
            while self._stored < target:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                if not self._can_progress():
                    return self._stored >= target
                self._cond.wait(timeout=0.1 if remaining is None else min(remaining, 0.1))
        return True

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the writer can store documents (the thread writer always can)."""
        return self.alive

    def _can_progress(self) -> bool:
        """True while the writer may still store more (flush keeps waiting)."""
        return self.alive

    def close(self, timeout: float | None = CLOSE_TIMEOUT_S) -> bool:
        """Drain every queued document, write it, and stop (at most ``timeout`` s); True if all were stored."""
        raise NotImplementedError

    def __enter__(self) -> CatalogWriter:
        """Use as a context manager: ``with CatalogWriter(c) as w: RE.subscribe(w)``."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close, draining everything (within the default deadline)."""
        self.close()

    # ---------------------------------------------------------------- bookkeeping for the writers

    def _record(self, err: WriteError) -> None:
        """Record and log one failed attempt (a first attempt at ERROR, unless the writer is already reopening)."""
        self.errors.append(err)
        self.error_count += 1
        if (err.attempt == 1 and not self._reopen_streak) or err.gave_up:
            logger.error("CatalogWriter: %s", err, exc_info=err.exception)
        else:
            logger.warning("CatalogWriter: %s", err)

    def _mark_stored(self, seq: int) -> None:
        """Advance the stored watermark and wake ``flush()`` waiters."""
        with self._cond:
            if seq > self._stored:
                self._reopen_streak = 0
            self._stored = max(self._stored, seq)
            self._cond.notify_all()

    def _reopen_delay(self) -> float:
        """Seconds to wait before the next reopen: ``REOPEN_DELAY_S`` doubled per reopen since the last progress."""
        delay = min(max(self.backoff[1], REOPEN_DELAY_S), REOPEN_DELAY_S * 2 ** self._reopen_streak)
        self._reopen_streak += 1
        self.reopen_count += 1
        return delay


class _ThreadReporter:
    """Engine reports (writer thread) -> the ThreadCatalogWriter's public state."""

    def __init__(self, writer: ThreadCatalogWriter) -> None:
        """Report to ``writer``."""
        self.writer = writer

    def stored(self, seq: int) -> None:
        """Everything up to ``seq`` is stored."""
        self.writer._stored_up_to(seq)

    def error(self, err: WriteError) -> None:
        """One failed attempt."""
        self.writer._record(err)

    def failed(self, seq: int, name: str, doc: dict) -> None:
        """A document failed for good."""
        self.writer.failed.append((name, doc))
        run = doc.get("run_start") or (doc.get("uid") if name == "start" else None)
        self.writer._failed_runs.add(run or self.writer._desc_run.get(doc.get("descriptor", ""), "?"))


class ThreadCatalogWriter(CatalogWriter):
    """The writer in a background thread of this process (``CatalogWriter(..., process=False)``).

    One daemon thread wakes every ``flush_interval`` s (or at once on ``flush()``/``close()``), takes every
    queued document and hands them in order to a ``WriterEngine``, then writes the buffered event rows.
    Simple and easy to fault-inject (``tiled_writer`` is reachable), but the Tiled app's CPU per request
    competes with the RunEngine for the GIL (benchmarks/storage.py).

    Reopening: documents are held until stored, with the start and descriptors of every run not yet stopped;
    after ``REOPEN_AFTER`` failures of one write the thread opens a new client on the same catalog (when it
    knows where that is: a location, or a client from ``open_catalog``) and hands them to a new engine in
    resume mode. It keeps no spool: what is not stored when ``close()`` gives up is lost with the process.
    """

    def __init__(
        self,
        client_or_location: Any,
        *,
        process: bool = False,
        flush_interval: float = 0.25,
        max_batch: int = 200,
        max_attempts: int = 5,
        backoff: tuple[float, float] = (0.2, 10.0),
        max_errors_kept: int = 1000,
        validate_events: bool = False,
        tiled_writer_kwargs: dict[str, Any] | None = None,
        name: str = "hotstage-catalog-writer",
        reopen_after: int | None = REOPEN_AFTER,
    ) -> None:
        """Create the engine on the client (opening the location if given one) and start the thread."""
        self._init_common(flush_interval=flush_interval, max_batch=max_batch, max_attempts=max_attempts,
                          backoff=backoff, max_errors_kept=max_errors_kept, validate_events=validate_events)
        self._location: CatalogLocation | None
        if isinstance(client_or_location, (str, os.PathLike, CatalogLocation)):
            self._location = catalog_location(client_or_location)
            self.client = self._location.open()
            self._own_client = True
        else:
            self.client = client_or_location
            self._own_client = False
            try:
                self._location = catalog_location(client_or_location)
            except (TypeError, ValueError):
                self._location = None  # cannot be reopened: retried on this client
        self._engine_kwargs: dict[str, Any] = {
            "max_attempts": max_attempts, "backoff": backoff, "validate_events": validate_events,
            "tiled_writer_kwargs": tiled_writer_kwargs,
            "reopen_after": reopen_after if self._location is not None else None,
        }
        self.engine = WriterEngine(self.client, _ThreadReporter(self), **self._engine_kwargs)
        self.tiled_writer = self.engine.tiled_writer
        self._pending: deque[tuple[int, str, dict]] = deque()
        self._unstored: deque[tuple[int, str, dict]] = deque()  # handed to the engine, not yet stored
        self._context: dict[str, list[tuple[int, str, dict]]] = {}  # run -> start, descriptors (until stopped)
        self._failed_runs: set[str] = set()
        self._desc_run: dict[str, str] = {}  # descriptor uid -> run uid (to name the run of a failed event)
        self._abandoned = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def flushes(self) -> int:
        """How many timed row flushes wrote something."""
        return self.engine.flushes

    @property
    def alive(self) -> bool:
        """True while the writer thread runs."""
        return self._thread.is_alive()

    @property
    def unstored_runs(self) -> list[str]:
        """Runs not yet stopped in the catalog, or with a document that failed for good."""
        return sorted(set(self._context) | self._failed_runs)

    def close(self, timeout: float | None = CLOSE_TIMEOUT_S) -> bool:
        """Drain every queued document, write it, and stop the thread (at most ``timeout`` s); True if all
        were stored. After the deadline the thread stops and one WARNING line says what is lost."""
        if not self._closing:
            self._closing = True
            self._wake.set()
        self._thread.join(timeout)
        done = not self._thread.is_alive()
        if not done:
            self._abandoned = True
            self._wake.set()
            logger.warning("CatalogWriter.close: %d documents of run(s) %s are not in the catalog after %s s; the "
                           "thread writer keeps no spool: they are lost when this process exits", self.backlog,
                           _runs_text(self.unstored_runs), timeout)
        elif self._own_client:
            close_catalog(self.client)
            self._own_client = False
        return done and self.backlog == 0

    # ---------------------------------------------------------------- writer thread

    def _stored_up_to(self, seq: int) -> None:
        """Forget the documents stored up to ``seq`` (and the context of runs whose stop is stored)."""
        while self._unstored and self._unstored[0][0] <= seq:
            _, name, doc = self._unstored.popleft()
            if name == "stop":
                self._context.pop(doc.get("run_start"), None)
        self._mark_stored(seq)

    def _hand(self, item: tuple[int, str, dict]) -> None:
        """Hand one document to the engine, holding it (and a run's context) until it is stored."""
        seq, name, doc = item
        self._unstored.append(item)
        if name == "start":
            self._context[doc["uid"]] = [item]
        elif name == "descriptor":
            self._desc_run[doc["uid"]] = doc.get("run_start", "?")
            if doc.get("run_start") in self._context:
                self._context[doc["run_start"]].append(item)
        self.engine.hand_over(seq, name, doc)
        if self.engine.unflushed >= self.max_batch:
            self.engine.flush_events()

    def _reopen(self, why: ReopenNeeded) -> None:
        """Open a new client on the catalog, a new engine in resume mode, and queue what is held again."""
        delay = self._reopen_delay()
        logger.warning("CatalogWriter: %s; opening the catalog again in %.1f s", why, delay)
        if self._wake.wait(delay) and self._abandoned:
            return
        assert self._location is not None
        try:
            client = self._location.open()
        except Exception as exc:  # noqa: BLE001 - retried at the next failure
            logger.warning("CatalogWriter: cannot open %r again yet: %r", self._location, exc)
            client = self.client
        else:
            if self._own_client:
                try:
                    close_catalog(self.client)
                except Exception:  # noqa: BLE001 - a broken client may fail to close; it is dropped anyway
                    logger.debug("closing the old client failed", exc_info=True)
            self.client, self._own_client = client, True
        self.engine = WriterEngine(client, _ThreadReporter(self), resume=True, **self._engine_kwargs)
        self.tiled_writer = self.engine.tiled_writer
        held = {item[0]: item for items in self._context.values() for item in items}
        held.update((item[0], item) for item in self._unstored)
        self._unstored.clear()
        self._context.clear()
        self._pending.extendleft(reversed([held[s] for s in sorted(held)]))

    def _loop(self) -> None:
        """Writer thread: every ``flush_interval`` (or when woken) hand over all queued documents, write rows.

        The RunEngine's ``__call__`` never wakes this thread: waking it per document would make it contend
        for the GIL once per event; ticking lets it do one burst of work per interval instead.
        """
        while not self._abandoned:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                while True:
                    self._pending.append(self.inbox.get_nowait())
            except queue.Empty:
                pass
            try:
                while self._pending and not self._abandoned:
                    self._hand(self._pending.popleft())
                self.engine.flush_events()
            except ReopenNeeded as why:
                self._reopen(why)
                continue
            if self._closing and self.inbox.qsize() == 0:
                with self._cond:
                    self._cond.notify_all()
                return


# ------------------------------------------------------------------------------- parent side


class ProcessCatalogWriter(CatalogWriter):
    """The default CatalogWriter: documents are written by a separate writer process (see module docstring).

    Extra options over ``ThreadCatalogWriter``: ``send_interval`` (courier tick, s), ``restarts`` (automatic
    restarts of a dead writer process), ``start_method`` (ignored, kept for callers: the writer process is always
    its own interpreter, module docstring), ``ready_timeout``,
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
        start_method: str | None = None,
        ready_timeout: float | None = 60.0,
        name: str = "hotstage-catalog-writer",
        spool_dir: str | os.PathLike[str] | None = None,
        reopen_after: int | None = REOPEN_AFTER,
    ) -> None:
        """Resolve where the catalog is, start the writer process and the courier thread.

        Waits up to ``ready_timeout`` s (None or 0: not at all) for the writer process to have opened the
        catalog (~2-4 s of imports), so that the first event of the first run is visible within 1 s too.
        ``spool_dir``: where every document is spooled on its way (default
        ``hotstage.acquisition.storage.spool.default_spool_dir``); ``StorageError`` if it cannot be created.
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
            """Durable copy of every document not yet known to be stored (``hotstage.acquisition.storage.spool``)."""
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
        if self._proc is not None:
            self._proc.stop(timeout=5.0)  # it has exited (or was stopped): release its pipes
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
            self._proc.kill()
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
        if self._proc is not None:
            self._proc.stop(timeout=0.0)  # the old one is gone (or asked to go): release its pipes
        self._ready.clear()
        self._proc = ConsumerProcess(WORKER_MODULE, {"location": self.location, "options": self._options,
                                                     "resume": resume}, name=self.name)
        self._close_sent = False
        self._flush_sent = 0 if self._flush_requests else self._flush_sent

    def _send(self, message: tuple) -> bool:
        """Send one message to the writer process; False if it is gone."""
        try:
            self._proc.send(message)
            return True
        except (BrokenPipeError, ConnectionError, OSError):
            return False

    def _receive(self) -> bool:
        """Handle every message waiting on the acks pipe; False once the writer process closed it."""
        try:
            while self._proc.poll():
                self._handle(self._proc.recv())
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
        if code == -SIGBUS and self._reopen_why is None:
            self._reopen_why = ("the writer process faulted on a memory-mapped catalog file (SIGBUS: the file's disk "
                                "or permissions changed under it)")
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
