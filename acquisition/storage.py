"""Storage of bluesky runs in a Tiled catalog (embedded or server), written off the RunEngine's thread.

Where the data go (see /work/shared/DESIGN.md, "Data flow" and "Contracts a user relies on"):

* ``open_catalog()`` gives a Tiled client container. By default it is *embedded*: a SQLite catalog
  (``catalog.db``), zarr/file array storage (``data/``) and a SQLite table store (``tables.sqlite``)
  under the data directory (``data_dir`` argument, else ``$HOTSTAGE_DATA``, else ``./hotstage-data/``),
  served in-process by ``tiled.server.app.build_app`` through ``Context.from_app``. With ``uri`` (or
  ``$HOTSTAGE_TILED_URI``) it connects to a Tiled server instead (``api_key`` or ``$TILED_API_KEY``).
  A table store is required because TiledWriter puts scalars in SQL tables and arrays longer than
  16 elements (``bluesky_tiled_plugins...tiled_writer.MAX_ARRAY_SIZE``) in zarr arrays.
* ``CatalogWriter`` is the RunEngine subscriber. Its ``__call__`` only enqueues (a few µs). By default
  (``process=True``) the writing happens in a separate *writer process* (``hotstage.acquisition.storage_process``)
  that opens its own client on the same catalog (embedded: the same SQLite/zarr directory, served by its
  own in-process Tiled app; server: HTTP), so the Tiled app's ~30 ms of CPU per request never competes
  with the RunEngine for the GIL. ``process=False`` keeps everything in one background thread of this
  process (``ThreadCatalogWriter``; handy to inject faults in tests, but it costs 7-15 % per point at
  20 ms exposure and 17-62 % at none — benchmarks/storage.py). Both flush event rows on a timer
  (default every 0.25 s), so an event is readable within ~0.5 s and the RunEngine never waits for I/O.
* Readers and the writer process share the embedded SQLite files: ``catalog.db`` keeps tiled's own journal
  mode (a rollback journal: its writes are short metadata updates) and ``open_catalog`` puts ``tables.sqlite``
  in WAL mode, so readers in this process never see "database is locked" while the writer process appends (tests/test_storage.py
  polls a run while it is written from the other process).

Reading a run back with a plain Tiled client (bluesky-tiled-plugins 2.0 layout, verified: streams are
direct children of the run, there is no ``streams`` namespace; each stream is a composite node holding
an ``internal`` table of scalars plus one zarr array per array-valued key)::

    from tiled.client import from_uri          # or: from acquisition.storage import open_catalog
    c = from_uri("http://127.0.0.1:8000", api_key="...")   # or c = open_catalog("./hotstage-data")
    ds = c[uid]["primary"].read()              # xarray.Dataset, dims ("time", "dim_int_1", ...)

``c[uid].metadata["start"]`` / ``["stop"]`` hold the start and stop documents; ``c[uid].documents()``
replays the run as (name, doc) pairs (embedded mode registers the needed json-seq exporter; a server
must list it under ``media_types: BlueskyRun: application/json-seq:
bluesky_tiled_plugins.exporters:json_seq_exporter`` in its config).

Why time-based batching and why the details live in ``hotstage.acquisition.storage_engine``: see that module.
"""

from __future__ import annotations

import copy
import itertools
import logging
import os
import queue
import threading
import time
import warnings
import weakref
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hotstage.acquisition.storage_engine import ReopenNeeded, WriteError, WriterEngine

__all__ = [
    "CatalogLocation",
    "CatalogWriter",
    "StorageError",
    "ThreadCatalogWriter",
    "catalog_location",
    "WriteError",
    "close_catalog",
    "default_data_dir",
    "describe_location",
    "open_catalog",
    "read_stream",
]

logger = logging.getLogger(__name__)

#: Default data directory when neither ``data_dir`` nor ``$HOTSTAGE_DATA`` is given (DESIGN.md, CLI).
DEFAULT_DATA_DIR = "hotstage-data"
DATA_ENV = "HOTSTAGE_DATA"
URI_ENV = "HOTSTAGE_TILED_URI"
API_KEY_ENV = "TILED_API_KEY"
#: MIME type and exporter that make ``BlueskyRun.documents()`` work (without them: HTTP 406).
JSON_SEQ = "application/json-seq"
JSON_SEQ_EXPORTER = "bluesky_tiled_plugins.exporters:json_seq_exporter"


# --------------------------------------------------------------------------------------- catalog


@dataclass(frozen=True)
class CatalogLocation:
    """Where a catalog lives, picklable, so another process can open it: a data dir or a server URI."""

    data_dir: str | None = None
    uri: str | None = None
    api_key: str | None = None
    #: Opened with ``allow_damaged`` (a writer on it then opens it so too: its writes are refused and spooled).
    allow_damaged: bool = False

    def open(self):
        """Open a client on this catalog (``open_catalog`` with the same arguments)."""
        return open_catalog(self.data_dir, uri=self.uri, api_key=self.api_key, allow_damaged=self.allow_damaged)

    def __repr__(self) -> str:
        """Show where, never the API key."""
        where = f"uri={self.uri!r}" if self.uri else f"data_dir={self.data_dir!r}"
        return f"CatalogLocation({where})"


#: Location of every client context ``open_catalog`` created (so a writer process can open the same catalog).
_LOCATIONS: weakref.WeakKeyDictionary[Any, CatalogLocation] = weakref.WeakKeyDictionary()


def catalog_location(target: Any) -> CatalogLocation:
    """Resolve a client (from ``open_catalog``, or any HTTP Tiled client), a path or a URI to a location."""
    if isinstance(target, CatalogLocation):
        return target
    if isinstance(target, (str, os.PathLike)):
        text = os.fspath(target)
        if text.startswith(("http://", "https://")):
            return CatalogLocation(uri=text, api_key=os.environ.get(API_KEY_ENV) or None)
        return CatalogLocation(data_dir=str(Path(text).expanduser().resolve()))
    context = getattr(target, "context", None)
    if context is None:
        raise TypeError(f"not a Tiled client, path or URI: {target!r}")
    if context in _LOCATIONS:
        location = _LOCATIONS[context]
    else:
        api_uri = str(context.api_uri)
        if not api_uri.startswith(("http://", "https://")) or "local-tiled-app" in api_uri:
            raise ValueError("an in-process Tiled client not made by open_catalog(): pass its data directory")
        location = CatalogLocation(uri=api_uri.removesuffix("/").removesuffix("/api/v1"), api_key=context.api_key)
    if any(getattr(target, "path_parts", None) or ()):
        raise ValueError("CatalogWriter writes at the catalog root; pass the root client")
    return location


def default_data_dir() -> Path:
    """Return the data directory: ``$HOTSTAGE_DATA`` if set, else ``./hotstage-data`` (DESIGN.md)."""
    return Path(os.environ.get(DATA_ENV) or DEFAULT_DATA_DIR)


def _serialization_registry():
    """Return tiled's default serialization registry plus BlueskyRun -> json-seq (for replay)."""
    from bluesky_tiled_plugins.exporters import json_seq_exporter
    from tiled.media_type_registration import default_serialization_registry

    registry = copy.deepcopy(default_serialization_registry)
    registry.register("BlueskyRun", JSON_SEQ, json_seq_exporter)
    return registry


_WAL_DONE: set[Path] = set()


def _enable_wal(path: Path) -> str | None:
    """Put a SQLite file in WAL mode (persistent), so readers do not fail while the writer appends; return why
    the file is damaged, or None (``hotstage.acquisition.datadir.check_tables``, in the same connection).

    Without WAL the ADBC SQLite driver tiled uses for the table store raises "database is locked" to a
    reader polling a run that is being written (seen in tests of live visibility).
    Once per healthy file per process, before tiled's readers exist: this opens the file with Python's own SQLite
    library, and closing that connection releases every POSIX lock the process holds on the file, including
    the WAL read locks of the ADBC driver's (separate) SQLite library. Readers robbed of their locks were
    seen to read a stale snapshot for good (runs written afterwards came back with empty tables) once a
    restarted writer process reset the WAL: in the fault suite, whose storage-outage case used to take its
    lock from the test process. So a process that opens the same catalog again does not reopen the file.
    """
    from hotstage.acquisition.datadir import check_tables

    path = Path(path).resolve()
    if path in _WAL_DONE:
        return None
    damage = check_tables(path)
    if damage is None:
        _WAL_DONE.add(path)
    return damage


def open_catalog(
    data_dir: str | os.PathLike[str] | None = None,
    uri: str | None = None,
    api_key: str | None = None,
    *,
    allow_damaged: bool = False,
):
    """Open the run catalog: a Tiled server if ``uri`` is given (or ``$HOTSTAGE_TILED_URI`` is set and no
    ``data_dir`` is given: an explicit directory wins over the environment), else embedded.

    The embedded catalog lives under ``data_dir`` (default ``$HOTSTAGE_DATA`` or ``./hotstage-data``),
    is created if missing and sees the runs written earlier into the same directory, also after the directory
    was moved or copied (``hotstage.acquisition.datadir.relocate``). A damaged ``tables.sqlite`` raises
    ``DamagedStoreError`` (one line: the file and how to recover), unless ``allow_damaged``: then one warning is
    logged, metadata and arrays stay readable, reading scalar columns raises ``DamagedStoreError`` and writing is
    refused. Close the client with ``close_catalog(client)`` (or ``client.context.close()``) when done.
    """
    from tiled.client import from_context, from_uri

    uri = uri or (os.environ.get(URI_ENV) if data_dir is None else None) or None
    if uri:
        api_key = api_key or os.environ.get(API_KEY_ENV) or None
        client = from_uri(uri, api_key=api_key)
        _LOCATIONS[client.context] = CatalogLocation(uri=uri, api_key=api_key)
        return client

    from tiled.client import Context

    root = Path(data_dir) if data_dir is not None else default_data_dir()
    root = root.expanduser().resolve()
    app = embedded_app(root, allow_damaged=allow_damaged)
    client = from_context(Context.from_app(app))
    _LOCATIONS[client.context] = CatalogLocation(data_dir=str(root), allow_damaged=allow_damaged)
    return client


def embedded_app(root: Path, authentication: Any = None, *, allow_damaged: bool = False,
                 raise_errors: bool = True) -> Any:
    """The Tiled app serving the embedded catalog under ``root`` (created if missing; see ``open_catalog``).

    Before tiled opens anything: asset paths of a moved or copied directory are rewritten to ``root`` and the
    table store is checked (``hotstage.acquisition.datadir``). ``raise_errors``: damage of the table store found while
    serving a request is raised as ``DamagedStoreError`` (in process) rather than answered with HTTP 503 (server).
    """
    from tiled.catalog import from_uri as catalog_from_uri
    from tiled.server.app import build_app

    from hotstage.acquisition.datadir import (CATALOG_DB, TABLES, DamagedStoreError, TableStoreGuard, relocate, reported,
                                     warn_at_exit)

    (root / "data").mkdir(parents=True, exist_ok=True)
    catalog_db = root / CATALOG_DB
    tables = root / TABLES
    relocate(root)
    damage = _enable_wal(tables)
    error = None
    if damage is not None:
        error = DamagedStoreError(tables, damage, refusing=True)
        if not allow_damaged:
            raise reported(error)
        if raise_errors:
            warn_at_exit(error)  # in process: once, at exit, unless a command already failed on it
        else:
            logger.warning("%s", error)
    adapter = catalog_from_uri(
        f"sqlite:///{catalog_db}",
        writable_storage=[f"file://{root / 'data'}", f"sqlite:///{tables}"],
        # tiled runs "tiled catalog init" in a subprocess (~2 s); skip it once the database exists.
        init_if_not_exists=not catalog_db.exists(),
    )
    # The in-process app logs its version at INFO and starlette warns about its test transport: noise
    # for a user at a terminal, in this process and in the writer process alike.
    logging.getLogger("tiled.server.app").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette.testclient`")
    app = build_app(adapter, authentication=authentication, serialization_registry=_serialization_registry())
    app.add_middleware(TableStoreGuard, tables=tables, catalog_db=catalog_db, damage=damage,
                       raise_errors=raise_errors)
    app.state.table_store_damage = error
    return app


def serve_catalog(data_dir: str | os.PathLike[str] | None = None, *, host: str = "127.0.0.1", port: int = 8000,
                  api_key: str | None = None, read_key: str | None = None) -> None:
    """Serve the embedded catalog over HTTP until interrupted (``hotstage serve``): see ``hotstage.acquisition.catalog_server``
    (read-write and read-only keys, accepted only in the ``Authorization: Apikey <key>`` header)."""
    from hotstage.acquisition.catalog_server import serve

    serve(data_dir, host=host, port=port, api_key=api_key, read_key=read_key)


def describe_location(data_dir: str | os.PathLike[str] | None = None, uri: str | None = None) -> str:
    """Say where runs go, with the same precedence as ``open_catalog`` (for CLI messages)."""
    uri = uri or (os.environ.get(URI_ENV) if data_dir is None else None) or None
    if uri:
        return f"Tiled server {uri}"
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    return f"embedded catalog {root.expanduser().resolve()}"


def close_catalog(client) -> None:
    """Close the client's context (stops the in-process server of an embedded catalog)."""
    client.context.close()


def read_stream(run, stream: str = "primary"):
    """Read one stream of a stored run as an ``xarray.Dataset`` (scalars and arrays, dim ``time``)."""
    return run[stream].read()


# --------------------------------------------------------------------------------------- writers

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
    a separate process, ``hotstage.acquisition.storage_process``) or, with ``process=False``, a ``ThreadCatalogWriter``
    (writing in a background thread of this process). ``client_or_location`` is a client from
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
      stored once (``hotstage.acquisition.storage_engine``).
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
                    from hotstage.acquisition.storage_process import ProcessCatalogWriter

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
