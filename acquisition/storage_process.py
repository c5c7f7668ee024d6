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
  times (default once), starts a new writer process in *resume* mode and re-sends context + un-acknowledged
  documents in order; the resuming engine attaches to the nodes the dead writer created and skips rows it
  already wrote (see ``acquisition.storage_engine``). After that, documents stay held in ``unacked`` and
  ``alive`` is False; ``restart()`` tries again by hand.
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
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
import weakref
from collections import deque
from typing import Any

from acquisition.spool import Spool, default_spool_dir
from acquisition.storage import CatalogLocation, CatalogWriter, catalog_location, close_catalog
from acquisition.storage_engine import WriteError, WriterEngine, is_transient

__all__ = ["ProcessCatalogWriter", "RemoteWriteError"]

logger = logging.getLogger("acquisition.storage")


#: Modules a "forkserver" imports once, so that each writer process forks ready (~0.3 s instead of ~2.5 s).
_PRELOAD = (
    "acquisition.storage_process",
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
        """Send the sequence number of a document given up (the parent holds the document)."""
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
    try:
        client = _open_with_retry(location, reporter, options["max_attempts"], options["backoff"])
    except Exception as exc:  # noqa: BLE001
        acks_conn.send(("fatal", f"cannot open {location!r}: {exc!r}"))
        raise SystemExit(2) from exc
    engine = WriterEngine(
        client, reporter, max_attempts=options["max_attempts"], backoff=options["backoff"],
        validate_events=options["validate_events"], tiled_writer_kwargs=options["tiled_writer_kwargs"],
        resume=resume,
    )
    acks_conn.send(("ready", os.getpid()))
    inbox: queue.SimpleQueue[tuple] = queue.SimpleQueue()

    def read() -> None:
        """Drain the docs pipe into ``inbox`` so the parent's sends never wait for a write to finish."""
        while True:
            try:
                inbox.put(docs_conn.recv())
            except (EOFError, OSError):
                inbox.put(("eof",))
                return

    threading.Thread(target=read, name="hotstage-writer-reader", daemon=True).start()
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
    close_catalog(client)


# ------------------------------------------------------------------------------- parent side


class ProcessCatalogWriter(CatalogWriter):
    """The default CatalogWriter: documents are written by a separate writer process (see module docstring).

    Extra options over ``ThreadCatalogWriter``: ``send_interval`` (courier tick, s), ``restarts`` (automatic
    restarts of a dead writer process), ``start_method`` ("forkserver" or "spawn"), ``ready_timeout``. Extra state: ``unacked`` (documents not
    yet acknowledged, held here), ``restart_count``, ``pid`` (the current writer process).
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
    ) -> None:
        """Resolve where the catalog is, start the writer process and the courier thread.

        Waits up to ``ready_timeout`` s (None or 0: not at all) for the writer process to have opened the
        catalog (~2-4 s of imports), so that the first event of the first run is visible within 1 s too.
        ``spool_dir``: where every document is spooled on its way (default ``acquisition.spool.default_spool_dir``).
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
        self._failed_runs: set[str] = set()  # runs with a document the writer gave up on: their spool files stay
        self.spool = Spool(spool_dir if spool_dir is not None else default_spool_dir(self.location))
        """Durable copy of every document not yet known to be stored (``acquisition.spool``)."""
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

    def flush(self, timeout: float | None = None) -> bool:
        """Ask the writer process to write its rows now, then wait until everything enqueued is stored."""
        self._flush_requests += 1
        return super().flush(timeout)

    def _can_progress(self) -> bool:
        """flush() keeps waiting while a writer process runs or is about to be restarted."""
        return not self._dead and self._courier.is_alive()

    def restart(self) -> None:
        """Start a new writer process by hand after the automatic restarts were used up."""
        self._manual_restart = True
        self._wake.set()

    def close(self, timeout: float | None = None) -> bool:
        """Send everything, let the writer process store it and exit; True if all were stored.

        What is not stored within ``timeout`` (the catalog is unreachable, say) stays in the spool: the
        courier and the writer process are stopped and ``hotstage spool flush`` writes it later.
        """
        self._closing = True
        self._wake.set()
        self._courier.join(timeout)
        done = not self._courier.is_alive()
        if not done or self.backlog:
            logger.warning("CatalogWriter.close: %d documents still not stored (writer process %s); they are "
                           "kept in the spool %s: run `hotstage spool flush` once the catalog is reachable",
                           self.backlog, "alive" if self.alive else "dead", self.spool.directory)
        if not done:
            self._abandon()
        self.spool.close()
        return done and self.backlog == 0

    def _abandon(self) -> None:
        """Stop the courier and the writer process, spooling whatever the courier had not yet taken."""
        self._abandoned = True
        self._wake.set()
        self._courier.join(5.0)
        self._take_inbox()  # the courier has stopped: this thread owns the inbox and the spool now
        if self._proc is not None and self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5.0)

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
                    self._run_context.pop(doc.get("run_start"), None)
                    if doc.get("run_start") not in self._failed_runs:  # else its spool file keeps the failed one
                        self.spool.finish(doc.get("run_start", ""))
            self._mark_stored(seq)
        elif kind == "error":
            e = msg[1]
            self._record(WriteError(e["time"], e["what"], e["uid"], e["attempt"],
                                    RemoteWriteError(e["type"], e["repr"]), e["transient"], e["gave_up"]))
        elif kind == "failed":
            for seq, name, doc in self._unacked:
                if seq == msg[1]:
                    self.failed.append((name, doc))
                    self._failed_runs.add(self.spool.run_of(name, doc))
                    break
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
        if not taken:
            return
        try:
            self.spool.append(taken)
        except OSError:  # a full or failing disk must not stop acquisition: the documents are still held here
            logger.exception("CatalogWriter: could not spool %d documents to %s", len(taken), self.spool.directory)
        for item in taken:
            seq, name, doc = item
            self._unacked.append(item)
            if name == "start":
                self._run_context[doc["uid"]] = [item]
            elif name == "descriptor" and doc.get("run_start") in self._run_context:
                self._run_context[doc["run_start"]].append(item)
            self._outbox.append(item)

    def _writer_died(self) -> None:
        """The writer process is gone: log loudly, restart it (if allowed) and queue the re-send."""
        code = self._proc.exitcode
        logger.critical(
            "CatalogWriter: writer process %s died (exit code %s); %d documents not acknowledged are held here",
            self._proc.pid, code, len(self._unacked),
        )
        if self.restart_count >= self.restarts and not self._manual_restart:
            if not self._dead:
                logger.critical("CatalogWriter: no restart left; documents stay in memory (writer.unacked)")
            self._dead = True
            return
        self._manual_restart = False
        self._dead = False
        self.restart_count += 1
        self._spawn(resume=True)
        resend: dict[int, tuple[int, str, dict]] = {}
        for items in self._run_context.values():
            for item in items:
                resend[item[0]] = item
        for item in self._unacked:
            resend[item[0]] = item
        self._outbox = [resend[s] for s in sorted(resend)]
        logger.critical("CatalogWriter: restarted the writer process (pid %s); re-sending %d documents",
                        self._proc.pid, len(self._outbox))

    def _courier_loop(self) -> None:
        """Every ``send_interval`` (or when woken): send new documents, forward flush/close, read acks, watch."""
        while not self._abandoned:
            self._wake.wait(self.send_interval)
            self._wake.clear()
            if self._abandoned:
                return
            self._take_inbox()
            ok = True
            if self._dead:
                if self._manual_restart:
                    self._writer_died()
                elif self._closing:
                    return
                continue
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
