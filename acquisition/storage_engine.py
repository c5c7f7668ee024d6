"""The writing core shared by both catalog writers: TiledWriter, timed row flushes, retries, resume after a crash.

``WriterEngine`` runs in exactly one thread: the writer thread of ``ThreadCatalogWriter`` or the main thread
of the writer process of ``ProcessCatalogWriter`` (``acquisition.storage_process``). It knows nothing about
queues; its owner hands it ``(seq, name, doc)`` items in order and calls ``flush_events()``; the engine reports
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
``internal`` table and zarr arrays; events whose ``seq_num`` is already in the table are skipped; and when
the killed writer had patched an array but not yet appended the matching table rows (arrays are written
first, ``_RunWriter._write_internal_data``), those rows' array values are not written twice.
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from bluesky_tiled_plugins.writing.tiled_writer import RunNormalizer, TiledWriter
from event_model import DocumentNames, schema_validators

__all__ = ["Reporter", "WriteError", "WriterEngine", "is_transient"]


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


def is_transient(exc: BaseException) -> bool:
    """Return True for errors worth retrying indefinitely: transport failures, HTTP 5xx/429, OS errors."""
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        return status >= 500 or status == 429
    if isinstance(exc, (httpx.TransportError, OSError, TimeoutError)):
        return True
    # SQLAlchemy/SQLite/ADBC "database is locked" and similar operational errors.
    return type(exc).__name__ in {"OperationalError", "ConnectionError"} or "database is locked" in str(exc)


@dataclass
class _StreamResume:
    """What a killed writer had already stored for one stream (resume mode)."""

    seq_nums: set[int]
    rows: int  # rows in the internal table, plus rows handed over since the resume
    array_rows: dict[str, int] = field(default_factory=dict)


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
        self._resume: dict[str, _StreamResume] = {}  # by stream name

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
        super().descriptor(doc)
        self._owner._descriptor_routes[doc["uid"]] = self

    def emit(self, name, doc):
        """Validate, then write through the run writer, retrying failed writes (never re-normalizing)."""
        name = str(getattr(name, "name", name))
        if name != "event" or self._owner.validate_events:
            schema_validators[DocumentNames[name]].validate(doc)
        if self._owner.resume and self._resumed(name, doc):
            return
        self._owner._attempt(functools.partial(self.dispatcher.process, name, doc), what=name, uid=self._uid)
        if name == "event" and self._resume:
            self._after_resumed_event(doc)
        if name == "stop":
            self._owner._unregister_run_writer(self)

    # ------------------------------------------------------------------ resume after a writer crash

    def _resumed(self, name: str, doc: dict) -> bool:
        """Attach to what a killed writer stored; return True if the document needs no further writing."""
        rw = self._run_writer
        if name == "start":
            root = self._owner._attempt(functools.partial(self._existing, self._owner.tiled_writer.client,
                                                          doc["uid"]), what="resume", uid=doc["uid"])
            if root is None:
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
        if name == "event":
            stream = rw._desc_nodes[doc["descriptor"]].item["id"] if doc["descriptor"] in rw._desc_nodes else None
            info = self._resume.get(stream)
            return info is not None and doc["seq_num"] in info.seq_nums
        return False

    @staticmethod
    def _existing(parent: Any, key: str) -> Any:
        """Return ``parent[key]`` or None if it does not exist."""
        try:
            return parent[key]
        except KeyError:
            return None

    def _attach_stream(self, stream: str) -> None:
        """Point the run writer at the stream's existing table and arrays and note what they hold."""
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
        info = _StreamResume(seq_nums=seq_nums, rows=rows)
        for key in rw._int_array_keys[stream]:
            if key in children:
                arr = desc_node[key]
                rw._internal_arrays[f"{stream}/{key}"] = arr
                info.array_rows[key] = int(arr.shape[0])
        self._resume[stream] = info

    def _after_resumed_event(self, doc: dict) -> None:
        """Drop array values the killed writer already wrote for this (new) table row."""
        rw = self._run_writer
        stream = rw._desc_nodes[doc["descriptor"]].item["id"]
        info = self._resume.get(stream)
        if info is None:
            return
        row = rw._internal_data_cache[stream][-1]
        for key, have in info.array_rows.items():
            if have > info.rows:
                row.pop(key, None)
        info.rows += 1


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


class WriterEngine:
    """Hands documents to a TiledWriter in order, writes buffered rows on request, retries, reports.

    Transient errors (transport, HTTP 5xx/429, OS/SQLite locking) are retried for ever with exponential
    backoff; others ``max_attempts`` times, after which the document is reported as failed. Not
    thread-safe: one thread owns it.
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
    ) -> None:
        """Create the TiledWriter on ``client`` (a writable Tiled container client)."""
        self.reporter = reporter
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
            except Exception as exc:  # noqa: BLE001 - every failure is recorded, none is swallowed
                transient = is_transient(exc)
                gave_up = not transient and attempt >= self.max_attempts
                self.reporter.error(WriteError(time.time(), what, uid, attempt, exc, transient, gave_up))
                if gave_up:
                    raise _GiveUp(what) from exc
                time.sleep(delay)
                delay = min(delay * 2, self.backoff[1])
        raise AssertionError("unreachable")

    def flush_events(self) -> None:
        """Write the buffered event rows of every active run (retrying), then report everything handed as stored."""
        if self.unflushed:
            for normalizer, run_writer in list(self._run_writers.values()):
                try:
                    self._attempt(functools.partial(_flush_run_writer, run_writer), what="flush",
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
