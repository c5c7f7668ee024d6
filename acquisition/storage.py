"""Storage of bluesky runs in a Tiled catalog (embedded or server), written off the RunEngine's thread.

Where the data go (see /work/shared/DESIGN.md, "Data flow" and "Contracts a user relies on"):

* ``open_catalog()`` gives a Tiled client container. By default it is *embedded*: a SQLite catalog
  (``catalog.db``), zarr/file array storage (``data/``) and a SQLite table store (``tables.sqlite``)
  under the data directory (``data_dir`` argument, else ``$HOTSTAGE_DATA``, else ``./hotstage-data/``),
  served in-process by ``tiled.server.app.build_app`` through ``Context.from_app``. With ``uri`` (or
  ``$HOTSTAGE_TILED_URI``) it connects to a Tiled server instead (``api_key`` or ``$TILED_API_KEY``).
  A table store is required because TiledWriter puts scalars in SQL tables and arrays longer than
  16 elements (``bluesky_tiled_plugins...tiled_writer.MAX_ARRAY_SIZE``) in zarr arrays.
* ``CatalogWriter`` is the RunEngine subscriber. Its ``__call__`` only enqueues (a few µs); one
  background thread hands documents to bluesky-tiled-plugins' ``TiledWriter`` and flushes the event
  rows on a timer (default every 0.25 s, or sooner when 200 events wait), so an event is readable
  within ~0.5 s and the RunEngine never waits for HTTP.

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

Why time-based batching (measured on the project machine, DESIGN.md "Facts about the stack"):
TiledWriter's default ``batch_size`` (10000) keeps every event in memory until the stop document,
so nothing is visible live; ``batch_size=1`` writes one HTTP request per event, ~43 ms per scalar
event and ~100 ms per 4000-float array event, on the RunEngine's thread. Packing events into an
EventPage does not help: ``_RunWriter.event_page`` unpacks the page and writes per event when
``batch_size=1``. So the writer thread runs TiledWriter with an effectively infinite batch size and
forces the pending rows out itself (``_flush_run_writer``) — the one place that touches
bluesky-tiled-plugins internals (``_RunWriter._internal_data_cache`` / ``_write_internal_data``,
the same calls ``_RunWriter.stop`` makes).
"""

from __future__ import annotations

import copy
import functools
import itertools
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from event_model import DocumentNames, schema_validators
from bluesky_tiled_plugins.writing.tiled_writer import RunNormalizer, TiledWriter

__all__ = [
    "CatalogWriter",
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


def _enable_wal(path: Path) -> None:
    """Put a SQLite file in WAL mode (persistent), so readers do not fail while the writer appends.

    Without it the ADBC SQLite driver tiled uses for the table store raises "database is locked" to a
    reader polling a run that is being written (seen in tests of live visibility).
    """
    import sqlite3

    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA journal_mode=WAL")
    finally:
        con.close()


def open_catalog(
    data_dir: str | os.PathLike[str] | None = None,
    uri: str | None = None,
    api_key: str | None = None,
):
    """Open the run catalog: a Tiled server if ``uri``/``$HOTSTAGE_TILED_URI`` is set, else embedded.

    The embedded catalog lives under ``data_dir`` (default ``$HOTSTAGE_DATA`` or ``./hotstage-data``),
    is created if missing and sees the runs written earlier into the same directory. Close it with
    ``close_catalog(client)`` (or ``client.context.close()``) when done.
    """
    from tiled.client import from_context, from_uri

    uri = uri or os.environ.get(URI_ENV) or None
    if uri:
        return from_uri(uri, api_key=api_key or os.environ.get(API_KEY_ENV) or None)

    from tiled.catalog import from_uri as catalog_from_uri
    from tiled.client import Context
    from tiled.server.app import build_app

    root = Path(data_dir) if data_dir is not None else default_data_dir()
    root = root.expanduser().resolve()
    (root / "data").mkdir(parents=True, exist_ok=True)
    catalog_db = root / "catalog.db"
    _enable_wal(root / "tables.sqlite")
    adapter = catalog_from_uri(
        f"sqlite:///{catalog_db}",
        writable_storage=[f"file://{root / 'data'}", f"sqlite:///{root / 'tables.sqlite'}"],
        # tiled runs "tiled catalog init" in a subprocess (~2 s); skip it once the database exists.
        init_if_not_exists=not catalog_db.exists(),
    )
    app = build_app(adapter, serialization_registry=_serialization_registry())
    return from_context(Context.from_app(app))


def describe_location(data_dir: str | os.PathLike[str] | None = None, uri: str | None = None) -> str:
    """Say where runs go, with the same precedence as ``open_catalog`` (for CLI messages)."""
    uri = uri or os.environ.get(URI_ENV) or None
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


# --------------------------------------------------------------------------------------- writer


@dataclass
class WriteError:
    """One failed attempt to store something: when, what (document name / flush), and the exception."""

    time: float
    what: str
    uid: str | None
    attempt: int
    exception: BaseException
    transient: bool
    gave_up: bool = False

    def __str__(self) -> str:
        """Render as one log-friendly line."""
        state = "gave up" if self.gave_up else ("will retry" if self.transient else "failed")
        return f"{self.what} (uid={self.uid}) attempt {self.attempt}: {self.exception!r} [{state}]"


class _GiveUp(Exception):
    """Raised inside the writer thread when a non-transient error exhausted its attempts."""


def _is_transient(exc: BaseException) -> bool:
    """Return True for errors worth retrying indefinitely: transport failures, HTTP 5xx/429, OS errors."""
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        return status >= 500 or status == 429
    if isinstance(exc, (httpx.TransportError, OSError, TimeoutError)):
        return True
    # SQLAlchemy/SQLite/ADBC "database is locked" and similar operational errors.
    return type(exc).__name__ in {"OperationalError", "ConnectionError"} or "database is locked" in str(exc)


class _FlushableNormalizer(RunNormalizer):
    """RunNormalizer that tells its CatalogWriter which _RunWriter it feeds and retries failed writes.

    TiledWriter instantiates its ``normalizer`` once per run and subscribes that run's ``_RunWriter`` to
    it; this is the public hook through which the CatalogWriter finds the writer to flush.
    """

    def __init__(self, *, owner: CatalogWriter, **kwargs: Any) -> None:
        """Remember the owning CatalogWriter; the rest is RunNormalizer's."""
        super().__init__(**kwargs)
        self._owner = owner
        self._uid: str | None = None

    def subscribe(self, func, name="all"):
        """Subscribe the run writer and register it with the owner for timed flushes."""
        self._owner._register_run_writer(self, func)
        return super().subscribe(func, name)

    def start(self, doc):
        """Remember the run uid (for error records), then normalize as usual."""
        self._uid = doc["uid"]
        return super().start(doc)

    def descriptor(self, doc):
        """Normalize and write the descriptor, then let the owner route this stream's events here directly."""
        super().descriptor(doc)
        self._owner._descriptor_routes[doc["uid"]] = self

    def emit(self, name, doc):
        """Validate, then write through the run writer, retrying failed writes (never re-normalizing)."""
        name = str(getattr(name, "name", name))
        if name != "event" or self._owner.validate_events:
            schema_validators[DocumentNames[name]].validate(doc)
        self._owner._attempt(functools.partial(self.dispatcher.process, name, doc), what=name, uid=self._uid)
        if name == "stop":
            self._owner._unregister_run_writer(self)


def _flush_run_writer(run_writer: Any) -> int:
    """Write the event rows a bluesky-tiled-plugins ``_RunWriter`` holds; return how many were written.

    Mirrors the first loop of ``_RunWriter.stop``. Safe to retry after a failure: arrays are popped
    from the cached rows only after they were written, and the cache is cleared only on success.
    """
    written = 0
    for desc_name, cache in list(run_writer._internal_data_cache.items()):
        if cache:
            run_writer._write_internal_data(cache, desc_node=run_writer._desc_nodes[desc_name])
            written += len(cache)
            cache.clear()
    return written


class CatalogWriter:
    """RunEngine subscriber that stores documents in a Tiled catalog without ever blocking the RunEngine.

    * ``__call__(name, doc)`` (RunEngine thread) appends to an unbounded in-memory inbox — never drops,
      never waits.
    * One daemon thread wakes every ``flush_interval`` s (default 0.25; or at once on ``flush()`` /
      ``close()``), takes every queued document, hands them in order to a ``TiledWriter`` (created with a
      ``batch_size`` so large it never flushes by itself) and then writes the buffered event rows: one
      table append + one array patch per stream and tick (sooner when ``max_batch`` events wait).
      Start/descriptor/stop are written as they are handed over; stop writes the run's remaining rows.
      So an event is readable at most ~``flush_interval`` + one write (~0.1-0.2 s) after acquisition.
    * A failed write keeps its document (or rows) and is retried with exponential backoff; transient
      errors (transport, HTTP 5xx/429, OS/SQLite locking) are retried for ever, others ``max_attempts``
      times, after which the document goes to ``failed`` (kept in memory; a durable spool is the
      intended replacement: it would sit behind ``inbox`` and receive ``failed``). Every error is
      logged and recorded in ``errors``.
    * ``flush(timeout)`` waits until everything enqueued before the call is stored; ``close(timeout)``
      drains everything and stops the thread. ``backlog`` = documents not yet stored.

    Documents are kept by reference: producers must not mutate a document after emitting it
    (bluesky does not).
    """

    def __init__(
        self,
        client,
        *,
        flush_interval: float = 0.25,
        max_batch: int = 200,
        max_attempts: int = 5,
        backoff: tuple[float, float] = (0.2, 10.0),
        max_errors_kept: int = 1000,
        validate_events: bool = False,
        tiled_writer_kwargs: dict[str, Any] | None = None,
        name: str = "hotstage-catalog-writer",
    ) -> None:
        """Create the writer and start its thread; ``client`` is a writable Tiled container client."""
        self.client = client
        self.flush_interval = float(flush_interval)
        self.max_batch = int(max_batch)
        self.max_attempts = int(max_attempts)
        self.validate_events = validate_events
        self.backoff = backoff
        self.errors: deque[WriteError] = deque(maxlen=max_errors_kept)
        self.error_count = 0
        self.failed: list[tuple[str, dict]] = []
        self.inbox: queue.SimpleQueue[tuple[int, str, dict]] = queue.SimpleQueue()
        kwargs = dict(tiled_writer_kwargs or {})
        kwargs.setdefault("batch_size", 2**62)
        self.tiled_writer = TiledWriter(
            client, normalizer=functools.partial(_FlushableNormalizer, owner=self), **kwargs
        )
        self._seq = itertools.count(1)
        self._enqueued = 0  # highest sequence number handed to the inbox
        self._stored = 0  # highest sequence number durably stored (all earlier ones too)
        self._pending: deque[tuple[int, str, dict]] = deque()  # taken from inbox, not yet handed over
        self._unflushed = 0  # events handed to TiledWriter whose rows are not yet written
        self._handed = 0  # highest sequence number handed to TiledWriter
        self._run_writers: dict[int, tuple[_FlushableNormalizer, Any]] = {}
        self._descriptor_routes: dict[str, _FlushableNormalizer] = {}
        self._cond = threading.Condition()
        self._wake = threading.Event()
        self._closing = False
        self._closed = False
        self.flushes = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- RunEngine side (cheap)

    def __call__(self, name: str, doc: dict) -> None:
        """Enqueue one document (RunEngine thread): O(1), never blocks on storage."""
        if self._closing:
            raise RuntimeError("CatalogWriter is closed; documents can no longer be accepted")
        seq = next(self._seq)
        self._enqueued = seq
        self.inbox.put((seq, name, doc))

    # ---------------------------------------------------------------- public state

    @property
    def backlog(self) -> int:
        """Documents accepted but not yet stored (queued, being retried, or buffered event rows)."""
        return self.inbox.qsize() + len(self._pending) + self._unflushed

    @property
    def alive(self) -> bool:
        """True while the writer thread runs."""
        return self._thread.is_alive()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything enqueued so far is stored; True if so, False on timeout."""
        target = self._enqueued
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._wake.set()
            while self._stored < target:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                if not self._thread.is_alive():
                    return self._stored >= target
                self._cond.wait(timeout=0.1 if remaining is None else min(remaining, 0.1))
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Drain every queued document, write it, and stop the thread; True if all were stored."""
        if not self._closing:
            self._closing = True
            self._wake.set()
        self._thread.join(timeout)
        done = not self._thread.is_alive()
        if not done:
            logger.warning("CatalogWriter.close: %d documents still not stored after %s s", self.backlog, timeout)
        return done and self.backlog == 0

    def __enter__(self) -> CatalogWriter:
        """Use as a context manager: ``with CatalogWriter(c) as w: RE.subscribe(w)``."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close, draining everything."""
        self.close()

    # ---------------------------------------------------------------- writer thread

    def _register_run_writer(self, normalizer: _FlushableNormalizer, run_writer: Any) -> None:
        """Called (writer thread) when TiledWriter starts a run: remember its _RunWriter."""
        self._run_writers[id(normalizer)] = (normalizer, run_writer)

    def _unregister_run_writer(self, normalizer: _FlushableNormalizer) -> None:
        """Called (writer thread) once a run's stop document is stored."""
        self._run_writers.pop(id(normalizer), None)
        for desc_uid in [k for k, v in self._descriptor_routes.items() if v is normalizer]:
            del self._descriptor_routes[desc_uid]

    def _record(self, what: str, uid: str | None, attempt: int, exc: BaseException, transient: bool,
                gave_up: bool = False) -> None:
        """Record and log one failed attempt."""
        err = WriteError(time.time(), what, uid, attempt, exc, transient, gave_up)
        self.errors.append(err)
        self.error_count += 1
        if attempt == 1 or gave_up:
            logger.error("CatalogWriter: %s", err, exc_info=exc)
        else:
            logger.warning("CatalogWriter: %s", err)

    def _attempt(self, func: Callable[[], Any], *, what: str, uid: str | None) -> Any:
        """Run ``func`` (one write), retrying with backoff; raise _GiveUp after max_attempts hard failures."""
        delay = self.backoff[0]
        for attempt in itertools.count(1):
            try:
                return func()
            except Exception as exc:  # noqa: BLE001 - every failure is recorded, none is swallowed
                transient = _is_transient(exc)
                gave_up = not transient and attempt >= self.max_attempts
                self._record(what, uid, attempt, exc, transient, gave_up)
                if gave_up:
                    raise _GiveUp(what) from exc
                time.sleep(delay)
                delay = min(delay * 2, self.backoff[1])
        raise AssertionError("unreachable")

    def _flush_events(self) -> None:
        """Write the buffered event rows of every active run (retrying), then mark everything handed as stored."""
        if self._unflushed:
            for normalizer, run_writer in list(self._run_writers.values()):
                try:
                    self._attempt(functools.partial(_flush_run_writer, run_writer), what="flush",
                                  uid=normalizer._uid)
                except _GiveUp:
                    # Rows stay cached in the run writer; its stop document will try again.
                    pass
            self.flushes += 1
        self._unflushed = 0
        self._mark_stored(self._handed)

    def _mark_stored(self, seq: int) -> None:
        """Advance the stored watermark and wake ``flush()`` waiters."""
        with self._cond:
            self._stored = max(self._stored, seq)
            self._cond.notify_all()

    def _hand_over(self, seq: int, name: str, doc: dict) -> None:
        """Give one document to TiledWriter; a document that fails for good goes to ``failed``."""
        try:
            route = self._descriptor_routes.get(doc["descriptor"]) if name == "event" else None
            if route is not None:
                # Straight to the run's normalizer: RunRouter would pack the event into a page, run a
                # no-op Filler and unpack it again (~0.6 ms per event, measured).
                route("event", doc)
            else:
                self.tiled_writer(name, doc)
        except _GiveUp:
            self.failed.append((name, doc))
        except Exception as exc:  # noqa: BLE001 - normalization/routing errors are deterministic
            self._record(name, doc.get("uid") or doc.get("run_start"), 1, exc, False, gave_up=True)
            self.failed.append((name, doc))
        self._handed = seq
        if name in ("event", "event_page"):
            self._unflushed += len(doc["seq_num"]) if name == "event_page" else 1
        elif not self._unflushed:
            self._mark_stored(seq)

    def _loop(self) -> None:
        """Writer thread: every ``flush_interval`` (or when woken by flush/close) take all queued documents,
        hand them over in order and write the buffered event rows.

        The RunEngine's ``__call__`` never wakes this thread: waking it per document would make it contend
        for the GIL once per event; ticking lets it do one burst of work per interval instead.
        """
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                while True:
                    item = self.inbox.get_nowait()
                    self._pending.append(item)
            except queue.Empty:
                pass
            while self._pending:
                seq, name, doc = self._pending.popleft()
                self._hand_over(seq, name, doc)
                if self._unflushed >= self.max_batch:
                    self._flush_events()
            self._flush_events()
            if self._closing and self.inbox.qsize() == 0:
                self._closed = True
                with self._cond:
                    self._cond.notify_all()
                return
