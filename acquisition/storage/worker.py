"""The writer process: ``python -m hotstage.acquisition.storage.worker``, one consumer of the document bus.

Started by ``hotstage.acquisition.storage.writer.ProcessCatalogWriter`` as its own interpreter
(``hotstage.analysis.consumer.ConsumerProcess``: never a fork or a re-import of the user's ``__main__``). Its
first frame on stdin is ``{"location": CatalogLocation, "options": {...}, "resume": bool}``; then it receives
``("docs", [(seq, name, doc), ...])``, ``("flush",)`` and ``("close",)`` and answers on stdout with ``("ready",
pid)``, ``("ack", seq)``, ``("error", {...})``, ``("failed", seq)``, ``("reopen", why)`` and ``("fatal", why)`` (the
protocol and the parent's side: ``hotstage.acquisition.storage.writer``).

Inside: a reader thread drains stdin (the parent's sends never wait for a write to finish), the main thread hands
batches to a ``WriterEngine`` (``hotstage.acquisition.storage.engine``), flushes event rows on a timer and
acknowledges the stored watermark. It opens its own client on the catalog (embedded: ``open_catalog`` on the same
directory — its own in-process Tiled app on the same SQLite (WAL) and zarr files; server: HTTP). Start-up costs
~2-3 s of imports (tiled) per writer process. stdin ending (the parent closed it, or died) is "close": what was
received is written, then the process exits; the parent's spool holds what it had not stored.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import signal
import threading
import time
from typing import Any

from hotstage.acquisition.storage.engine import (REOPEN_EXIT, ReopenNeeded, WriteError, WriterEngine, is_transient,
                                                 set_aside_orphans)
from hotstage.acquisition.storage.location import CatalogLocation, close_catalog
from hotstage.analysis.consumer import ParentChannel, exit_done

__all__ = ["main", "writer_main"]


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


def writer_main(location: CatalogLocation, options: dict[str, Any], channel: Any, resume: bool) -> None:
    """The writer process' work: receive batches, write them through a WriterEngine, acknowledge (on ``channel``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the RunEngine's business; the parent closes us
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    reporter = _ChildReporter(channel)
    # A damaged table store is reported once, by the parent that opened the catalog first; this process refusing
    # to write through it is reported to the parent on the channel, not as a second line on the shared stderr.
    logging.getLogger("hotstage.acquisition.datadir").setLevel(logging.ERROR)
    inbox: queue.SimpleQueue[tuple] = queue.SimpleQueue()

    def read() -> None:
        """Drain the docs pipe into ``inbox`` so the parent's sends never wait for a write to finish."""
        while True:
            try:
                inbox.put(channel.recv())
            except (EOFError, OSError):
                inbox.put(("eof",))
                return

    # Reading starts before the catalog is opened: a catalog that cannot be opened must not block the parent's
    # courier on a full pipe (it would stop spooling too).
    threading.Thread(target=read, name="hotstage-writer-reader", daemon=True).start()
    try:
        client = _open_with_retry(location, reporter, options["max_attempts"], options["backoff"])
    except Exception as exc:  # noqa: BLE001
        channel.send(("fatal", f"cannot open {location!r}: {exc!r}"))
        raise SystemExit(2) from exc
    engine = WriterEngine(
        client, reporter, max_attempts=options["max_attempts"], backoff=options["backoff"],
        validate_events=options["validate_events"], tiled_writer_kwargs=options["tiled_writer_kwargs"],
        resume=resume, reopen_after=options["reopen_after"],
        on_recreate=functools.partial(set_aside_orphans, location.data_dir) if resume else None,
    )
    channel.send(("ready", os.getpid()))
    try:
        _serve(engine, reporter, inbox, options)
    except ReopenNeeded as why:
        # The client may be what is broken: a new process opens a new one (the parent re-sends what is needed).
        reporter.send_ack()
        channel.send(("reopen", str(why)))
        os._exit(REOPEN_EXIT)  # no cleanup: closing a broken client can hang, and the parent holds everything
    except (BrokenPipeError, ConnectionResetError, EOFError):
        # The parent died (SIGKILL): its spool holds every document; `hotstage spool flush` stores them. A
        # traceback here would only hide the guardian's line on the terminal.
        os._exit(1)
    close_catalog(client)
    exit_done()  # everything is stored and the catalog closed


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




def main() -> None:
    """``python -m hotstage.acquisition.storage.worker``: take the channel, read the start-up frame, write."""
    channel = ParentChannel()
    try:
        init = channel.recv()
        writer_main(init["location"], init["options"], channel, init["resume"])
    except (BrokenPipeError, ConnectionResetError, EOFError):
        os._exit(1)  # the parent is gone (its spool holds every document): quietly, no traceback on its terminal


if __name__ == "__main__":
    main()
