"""The writing core shared by both catalog writers: TiledWriter, timed row flushes, retries, resume after a crash.

``WriterEngine`` runs in exactly one thread: the writer thread of ``ThreadCatalogWriter`` or the main thread
of the writer process of ``ProcessCatalogWriter`` (``hotstage.acquisition.storage.worker``). It knows nothing
about queues; its owner hands it ``(seq, name, doc)`` items in order and calls ``flush_events()``; the engine reports
back through a ``Reporter`` (stored watermark, errors, documents given up).

Why the engine flushes rows itself (numbers measured on the project machine, DESIGN.md "Facts about the
stack"): TiledWriter's default ``batch_size`` (10000) holds every event until the stop document, and
``batch_size=1`` costs ~43 ms per scalar event and ~100 ms per 4000-float array event. So TiledWriter runs
with an effectively infinite batch size and ``_flush_run_writer`` writes the pending rows on the owner's
timer — the one place that touches bluesky-tiled-plugins internals (``_RunWriter._internal_data_cache`` /
``_write_internal_data``, the same calls ``_RunWriter.stop`` makes; verified against 2.0.12).

Resume (``resume=True``, used by a restarted writer process): documents that a killed writer may already
have written are re-sent. The engine then attaches to what exists instead of creating it again (a second
``create_container`` of the same key is HTTP 409): the run container, its stream containers, the stream's
``internal`` table and zarr arrays; events whose ``seq_num`` is already in the table are skipped; and array
rows are always patched at the table's row count, so rows a killed writer patched into an array without
appending the matching table rows (arrays are written first, ``_RunWriter._write_internal_data``) are written
again in place, never twice.

Exactly once, in every mode: an event whose ``seq_num`` was already written for its stream (in this run, by this
engine or — resume — found in the table) is dropped with a debug log. bluesky's RunEngine re-emits events with
the same ``seq_num`` when it replays messages after a pause or suspension (it restores its sequence counters
to the last checkpoint), so the stored rows of a stream are its distinct ``seq_num`` and match the stop
document's ``num_events`` (a mismatch is logged as a warning at the stop).

Retries, reopening and deadlines: every write is retried with exponential backoff. Transient errors (transport,
HTTP 5xx/429, OS and SQLite operational errors) are retried, but after ``reopen_after`` attempts of one write
(default None: never) the engine raises ``ReopenNeeded`` instead: its client may be what is broken (a SQLite
connection opened while the data directory was read-only stays read-only; a deleted ``catalog.db`` stays
deleted for the connections that had it open), so the owner must open a new client and resume (the process
writer starts a new writer process, ``hotstage.acquisition.storage.writer``). "database is locked" never asks
for a reopen: another writer holds the lock and a new connection would wait for it just the same. A row flush
that fails part-way is retried without writing any row twice and without losing the array values
(``_flush_run_writer``: bluesky-tiled-plugins removes the arrays from the cached rows before patching them, and
a node created by a request whose data never arrived is written into, not created again).
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy
from bluesky_tiled_plugins.writing.tiled_writer import RunNormalizer, TiledWriter
from event_model import DocumentNames, schema_validators

__all__ = ["REOPEN_EXIT", "ReopenNeeded", "Reporter", "WriteError", "WriterEngine", "is_transient", "set_aside_orphans"]

logger = logging.getLogger("hotstage.acquisition.storage")

REOPEN_EXIT = 75
"""Exit status of a writer process that asks for a new one (EX_TEMPFAIL): its catalog client kept failing."""


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


class Reporter(Protocol):
    """What the engine tells its owner."""

    def stored(self, seq: int) -> None:
        """Everything up to and including ``seq`` is stored (or given up)."""

    def error(self, err: WriteError) -> None:
        """One failed attempt (already retried or about to be)."""

    def failed(self, seq: int, name: str, doc: dict) -> None:
        """A document failed for good (non-transient error, ``max_attempts`` exhausted)."""


class _GiveUp(Exception):
    """Raised inside the engine when a non-transient error exhausted its attempts."""


class ReopenNeeded(Exception):
    """A write kept failing with transient errors ``reopen_after`` times: the owner should open a new client.

    The engine is unusable afterwards (a document may be half handed over): build a new one in resume mode.
    """


def is_transient(exc: BaseException) -> bool:
    """Return True for errors worth retrying indefinitely: transport failures, HTTP 5xx/429, OS errors."""
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        return status >= 500 or status == 429
    if isinstance(exc, (httpx.TransportError, OSError, TimeoutError)):
        return True
    # SQLAlchemy/SQLite/ADBC "database is locked" and similar operational errors; SQLite's "disk I/O error" is what
    # a full disk often gives (SQLITE_IOERR on the WAL index), even when wrapped as damage (DamagedStoreError).
    text = str(exc)
    return type(exc).__name__ in {"OperationalError", "ConnectionError"} or "database is locked" in text \
        or "disk I/O error" in text or "database or disk is full" in text


def _reopen_helps(exc: BaseException) -> bool:
    """False for a lock held by another writer (a new connection waits just the same), else True."""
    text = str(exc)
    return "database is locked" not in text and "database is busy" not in text


class _NodeShim:
    """Stands in for a run container during resume: ``create_container`` returns the existing child."""

    def __init__(self, node: Any) -> None:
        """Wrap the existing run container."""
        self._node = node

    def create_container(self, key: str, **_: Any) -> Any:
        """Return the existing child ``key`` (a composite stream node; ``.base`` gives its container)."""
        return self._node[key]


class _FlushableNormalizer(RunNormalizer):
    """RunNormalizer that tells its engine which _RunWriter it feeds, retries failed writes and resumes.

    TiledWriter instantiates its ``normalizer`` once per run and subscribes that run's ``_RunWriter`` to
    it; this is the public hook through which the engine finds the writer to flush.
    """

    def __init__(self, *, owner: WriterEngine, **kwargs: Any) -> None:
        """Remember the owning engine; the rest is RunNormalizer's."""
        super().__init__(**kwargs)
        self._owner = owner
        self._uid: str | None = None
        self._run_writer: Any = None
        self._attached = False
        self._stream_of: dict[str, str] = {}  # descriptor uid -> stream name
        self._written: dict[str, set[int]] = {}  # stream name -> seq_nums handed over (resume: and found stored)
        self.table_rows: dict[str, int] = {}  # stream -> rows in its internal table (arrays are patched there)
        self.failed_flush: set[str] = set()  # streams whose pending rows failed to flush at least once

    def subscribe(self, func, name="all"):
        """Subscribe the run writer and register it with the owner for timed flushes."""
        self._run_writer = func
        self._owner._register_run_writer(self, func)
        return super().subscribe(func, name)

    def start(self, doc):
        """Remember the run uid (for error records), then normalize as usual."""
        self._uid = doc["uid"]
        return super().start(doc)

    def descriptor(self, doc):
        """Normalize and write the descriptor, then let the owner route this stream's events here directly."""
        self._stream_of[doc["uid"]] = doc.get("name", "primary")
        super().descriptor(doc)
        self._owner._descriptor_routes[doc["uid"]] = self

    def event(self, doc):
        """Normalize and write an event, unless its stream already has its ``seq_num`` (a replay: dropped)."""
        stream = self._stream_of.get(doc["descriptor"])
        if stream is not None:
            written = self._written.setdefault(stream, set())
            if doc["seq_num"] in written:
                logger.debug("event seq_num %s of stream %r of run %s already written: replayed, dropped",
                             doc["seq_num"], stream, self._uid)
                self._owner.dropped += 1
                return None
            written.add(doc["seq_num"])
        return super().event(doc)

    def emit(self, name, doc):
        """Validate, then write through the run writer, retrying failed writes (never re-normalizing)."""
        name = str(getattr(name, "name", name))
        if name != "event" or self._owner.validate_events:
            schema_validators[DocumentNames[name]].validate(doc)
        if self._owner.resume and self._resumed(name, doc):
            return
        if name == "stop":
            self._check_counts(doc)
            # the rows first, the safe way (_RunWriter.stop would write them with arrays lost on a failed patch)
            self._owner._attempt(functools.partial(_flush_run_writer, self, self._run_writer), what="flush",
                                 uid=self._uid)
        self._owner._attempt(functools.partial(self.dispatcher.process, name, doc), what=name, uid=self._uid)
        if name == "stop":
            self._owner._unregister_run_writer(self)

    def _check_counts(self, stop: dict) -> None:
        """Warn if the stop document's ``num_events`` differ from the rows this run's streams will hold."""
        counts = {stream: len(nums) for stream, nums in self._written.items() if nums}
        claimed = {k: v for k, v in (stop.get("num_events") or {}).items() if v}
        if claimed != counts:
            logger.warning("run %s: the stop document counts %s events, the catalog holds %s", self._uid,
                           claimed, counts)

    # ------------------------------------------------------------------ resume after a writer crash

    def _resumed(self, name: str, doc: dict) -> bool:
        """Attach to what a killed writer stored; return True if the document needs no further writing."""
        rw = self._run_writer
        if name == "start":
            root = self._owner._attempt(functools.partial(self._existing, self._owner.tiled_writer.client,
                                                          doc["uid"]), what="resume", uid=doc["uid"])
            if root is None:
                if self._owner.on_recreate is not None:
                    self._owner.on_recreate(doc["uid"])
                return False
            rw.access_tags = doc.get("tiled_access_tags")
            rw.root_node = root
            self._attached = True
            return True
        if not self._attached:
            return False
        if name == "descriptor":
            stream = doc["name"]
            node = self._owner._attempt(functools.partial(self._existing, rw.root_node, stream),
                                        what="resume", uid=self._uid)
            if node is None:
                if self._owner.on_recreate is not None:
                    self._owner.on_recreate(self._uid, stream)
                return False
            if stream in rw._desc_nodes:  # a later descriptor of the same stream (configuration update)
                done = {u.get("uid") for u in rw._desc_nodes[stream].metadata.get("_config_updates", [])}
                if doc["uid"] in done or rw._desc_nodes[stream].metadata.get("uid") == doc["uid"]:
                    rw._desc_nodes[doc["uid"]] = rw._desc_nodes[stream]
                    return True
                return False
            real_root = rw.root_node
            rw.root_node = _NodeShim(real_root)
            try:
                rw.descriptor(doc)  # same bookkeeping (array keys, node references), no container created
            finally:
                rw.root_node = real_root
            self._owner._attempt(functools.partial(self._attach_stream, stream), what="resume", uid=self._uid)
            return True
        return False  # events: already stored ones were dropped by event() (their seq_nums are in _written)

    @staticmethod
    def _existing(parent: Any, key: str) -> Any:
        """Return ``parent[key]`` or None if it does not exist."""
        try:
            return parent[key]
        except KeyError:
            return None

    def _attach_stream(self, stream: str) -> None:
        """Point the run writer at the stream's existing table and arrays and note what the table holds.

        Array rows beyond the table's (written by a killed writer whose table append never happened) are simply
        written again: arrays are always patched at the table's row count (``_flush_run_writer``).
        """
        rw = self._run_writer
        desc_node = rw._desc_nodes[stream]
        children = set(desc_node.keys())
        seq_nums: set[int] = set()
        rows = 0
        if "internal" in children:
            table = desc_node["internal"]
            rw._internal_tables[stream] = table
            column = table.read(["seq_num"])["seq_num"]
            seq_nums = {int(s) for s in column}
            rows = len(column)
        self.table_rows[stream] = rows
        self._written.setdefault(stream, set()).update(seq_nums)
        for key in rw._int_array_keys[stream]:
            if key in children:
                rw._internal_arrays[f"{stream}/{key}"] = desc_node[key]
            elif self._owner.on_recreate is not None:  # killed between the array's files and its node
                self._owner.on_recreate(self._uid, stream, key)


def _child(parent: Any, key: str) -> Any:
    """``parent[key]`` if the catalog holds it, else None."""
    return parent[key] if key in set(parent.keys()) else None


def _stored_rows(normalizer: _FlushableNormalizer, run_writer: Any, stream: str, rows: list[dict]) -> list[dict]:
    """After a failed flush: the rows the table does not hold yet (the failed attempt may have appended them);
    updates the stream's table row count from the catalog."""
    table = run_writer._internal_tables.get(stream)
    if table is None:
        table = _child(run_writer._desc_nodes[stream], "internal")
        if table is None:
            return rows
        run_writer._internal_tables[stream] = table
    stored = {int(s) for s in table.read(["seq_num"])["seq_num"]}
    normalizer.table_rows[stream] = len(stored)
    return [row for row in rows if int(row["seq_num"]) not in stored]


def _patch_arrays(run_writer: Any, stream: str, rows: list[dict], offset: int, look: bool) -> None:
    """Write the rows' values of every internal array that exists at row ``offset`` (overwriting: a retry or a
    resumed writer writes the same rows again, never after them) and take them out of ``rows``.

    Arrays that do not exist yet stay in ``rows`` for ``_RunWriter._write_internal_data`` to create (with its
    metadata and dimension names); ``look``: first check whether the catalog has one (created by a failed attempt
    whose data never arrived, or by a killed writer).
    """
    desc_node = run_writer._desc_nodes[stream]
    for key in run_writer._int_array_keys[stream]:
        if not any(key in row for row in rows):
            continue
        arr = run_writer._internal_arrays.get(f"{stream}/{key}")
        if arr is None and look:
            arr = _child(desc_node, key)
            if arr is not None:
                run_writer._internal_arrays[f"{stream}/{key}"] = arr
        if arr is None:
            continue
        values = [row.pop(key) for row in rows if key in row]
        lengths = {len(v) if hasattr(v, "__len__") else None for v in values}
        if len(lengths) > 1 and None not in lengths:  # as _write_internal_data: pad short rows with NaN
            longest = max(lengths)
            values = [list(v) + [numpy.nan] * (longest - len(v)) for v in values]
        arr.patch(numpy.asarray(values, dtype=arr.dtype), offset=(offset,), extend=True)


def _flush_run_writer(normalizer: _FlushableNormalizer, run_writer: Any) -> int:
    """Write the event rows a bluesky-tiled-plugins ``_RunWriter`` holds; return how many were written.

    Like the first loop of ``_RunWriter.stop`` (arrays first, then the table), made exactly-once and safe to
    retry after a failure part-way (full disk, read-only catalog): it works on copies of the cached rows (a
    failed patch loses nothing: ``_write_internal_data`` removes arrays from the rows it is given), patches every
    existing array at the table's row count (writing the same rows again overwrites them), and, on a retry,
    first asks the catalog which rows the table already holds. The cache is cleared only on success.
    """
    written = 0
    for stream, cache in list(run_writer._internal_data_cache.items()):
        if not cache:
            continue
        retry = stream in normalizer.failed_flush
        normalizer.failed_flush.add(stream)
        rows = [dict(row) for row in cache]
        if retry:
            rows = _stored_rows(normalizer, run_writer, stream, rows)
        offset = normalizer.table_rows.get(stream, 0)
        if rows:
            _patch_arrays(run_writer, stream, rows, offset, look=retry or offset > 0)
            run_writer._write_internal_data(rows, desc_node=run_writer._desc_nodes[stream])
        normalizer.table_rows[stream] = offset + len(rows)
        normalizer.failed_flush.discard(stream)
        written += len(cache)
        cache.clear()
    return written


def set_aside_orphans(data_dir: str | None, uid: str, *parts: str) -> None:
    """Move ``<data_dir>/data/<uid>[/<stream>[/<key>]]`` aside if it exists, before that run, stream or array is
    created in the catalog again.

    A node the catalog does not hold but whose array files exist cannot be created again: tiled refuses to create
    a zarr array where one exists (``ContainsArrayError``). That happens to a whole run when ``catalog.db`` was
    deleted or replaced while it was written, and to one stream or array when a writer process was killed between
    creating the array's files and committing its node. Its documents are all re-sent (from the spool), so its
    arrays are written anew; the old files are kept under ``<name>.orphaned-<time>`` with a warning.
    """
    if not data_dir:
        return
    old = Path(data_dir, "data", uid, *parts)
    if not old.exists():
        return
    target = old.with_name(f"{old.name}.orphaned-{time.strftime('%Y%m%dT%H%M%S')}")
    os.replace(old, target)
    what = "/".join((uid, *parts))
    logger.warning("%s is not in the catalog but its array files are (catalog.db deleted or replaced, or a writer "
                   "killed while it created them): moved them to %s; written again from the re-sent documents",
                   what, target)


class WriterEngine:
    """Hands documents to a TiledWriter in order, writes buffered rows on request, retries, reports.

    Transient errors (transport, HTTP 5xx/429, OS/SQLite errors) are retried with exponential backoff, for
    ever or, with ``reopen_after``, until one write failed that often (then ``ReopenNeeded``: see the module
    docstring); others ``max_attempts`` times, after which the document is reported as failed. ``dropped``
    counts replayed events dropped. Not thread-safe: one thread owns it.
    """

    def __init__(
        self,
        client: Any,
        reporter: Reporter,
        *,
        max_attempts: int = 5,
        backoff: tuple[float, float] = (0.2, 10.0),
        validate_events: bool = False,
        tiled_writer_kwargs: dict[str, Any] | None = None,
        resume: bool = False,
        reopen_after: int | None = None,
        on_recreate: Callable[..., None] | None = None,
    ) -> None:
        """Create the TiledWriter on ``client`` (a writable Tiled container client).

        ``on_recreate(uid, *parts)`` (resume mode) is called before a run, stream (``stream``) or array
        (``stream, key``) the catalog does not hold is created from its re-sent documents (``set_aside_orphans``:
        array files left by a catalog that was replaced or a writer killed mid-creation).
        """
        self.reporter = reporter
        self.reopen_after = reopen_after
        self.on_recreate = on_recreate
        self.dropped = 0
        self.max_attempts = int(max_attempts)
        self.backoff = backoff
        self.validate_events = validate_events
        self.resume = resume
        kwargs = dict(tiled_writer_kwargs or {})
        kwargs.setdefault("batch_size", 2**62)
        self.tiled_writer = TiledWriter(
            client, normalizer=functools.partial(_FlushableNormalizer, owner=self), **kwargs
        )
        self.unflushed = 0  # events handed to TiledWriter whose rows are not yet written
        self.handed = 0  # highest sequence number handed to TiledWriter
        self.flushes = 0
        self._run_writers: dict[int, tuple[_FlushableNormalizer, Any]] = {}
        self._descriptor_routes: dict[str, _FlushableNormalizer] = {}

    def _register_run_writer(self, normalizer: _FlushableNormalizer, run_writer: Any) -> None:
        """Called when TiledWriter starts a run: remember its _RunWriter."""
        self._run_writers[id(normalizer)] = (normalizer, run_writer)

    def _unregister_run_writer(self, normalizer: _FlushableNormalizer) -> None:
        """Called once a run's stop document is stored."""
        self._run_writers.pop(id(normalizer), None)
        for desc_uid in [k for k, v in self._descriptor_routes.items() if v is normalizer]:
            del self._descriptor_routes[desc_uid]

    def _attempt(self, func: Callable[[], Any], *, what: str, uid: str | None) -> Any:
        """Run ``func`` (one write), retrying with backoff; raise _GiveUp after max_attempts hard failures."""
        delay = self.backoff[0]
        for attempt in itertools.count(1):
            try:
                return func()
            except ReopenNeeded:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure is recorded, none is swallowed
                transient = is_transient(exc)
                gave_up = not transient and attempt >= self.max_attempts
                self.reporter.error(WriteError(time.time(), what, uid, attempt, exc, transient, gave_up))
                if gave_up:
                    raise _GiveUp(what) from exc
                if transient and self.reopen_after is not None and attempt >= self.reopen_after \
                        and _reopen_helps(exc):
                    raise ReopenNeeded(f"{what} (uid={uid}) failed {attempt} times, last: {exc!r}") from exc
                time.sleep(delay)
                delay = min(delay * 2, self.backoff[1])
        raise AssertionError("unreachable")

    def flush_events(self) -> None:
        """Write the buffered event rows of every active run (retrying), then report everything handed as stored."""
        if self.unflushed:
            for normalizer, run_writer in list(self._run_writers.values()):
                try:
                    self._attempt(functools.partial(_flush_run_writer, normalizer, run_writer), what="flush",
                                  uid=normalizer._uid)
                except _GiveUp:
                    pass  # rows stay cached in the run writer; its stop document will try again
            self.flushes += 1
        self.unflushed = 0
        if self.handed:
            self.reporter.stored(self.handed)

    def hand_over(self, seq: int, name: str, doc: dict) -> None:
        """Give one document to TiledWriter; a document that fails for good is reported as failed."""
        try:
            route = self._descriptor_routes.get(doc["descriptor"]) if name == "event" else None
            if route is not None:
                # Straight to the run's normalizer: RunRouter would pack the event into a page, run a
                # no-op Filler and unpack it again (~0.6 ms per event, measured).
                route("event", doc)
            else:
                self.tiled_writer(name, doc)
        except ReopenNeeded:
            raise
        except _GiveUp:
            self.reporter.failed(seq, name, doc)
        except Exception as exc:  # noqa: BLE001 - normalization/routing errors are deterministic
            uid = doc.get("uid") or doc.get("run_start")
            self.reporter.error(WriteError(time.time(), name, uid, 1, exc, False, gave_up=True))
            self.reporter.failed(seq, name, doc)
        self.handed = seq
        if name in ("event", "event_page"):
            self.unflushed += len(doc["seq_num"]) if name == "event_page" else 1
        elif not self.unflushed:
            self.reporter.stored(seq)
