"""The storage spool: a durable local copy of every document on its way to the catalog.

Why: an overnight run must survive the catalog (or the Tiled server) going away and the acquiring process itself
dying. The process catalog writer (`hotstage.acquisition.storage.writer`) appends every document to the spool as its
courier thread takes it from the RunEngine's inbox, *before* sending it to the writer process, and fsyncs the
touched files once per courier tick. A run's spool file is deleted when its stop document is acknowledged as
stored. So:

* catalog or server unavailable during a run: the run goes on (the writer process retries for ever, the
  documents are in memory *and* on disk); when the catalog comes back they are written automatically; if the
  session ends first, `hotstage spool flush` (also run at the start of every session) writes them later;
* crash of the process (SIGKILL, power loss): at most the documents of the last courier tick are lost
  (``send_interval``, 50 ms of acquisition: handed to the writer's inbox but not yet appended and fsynced).
  `flush_spool` then writes what was spooled and, since the run never got a stop document, adds one with
  ``exit_status = "fail"`` and a reason saying it was recovered from the spool.

Nothing is written twice: a flush writes through the writer engine in *resume* mode, which attaches to the nodes
that exist and skips the events whose ``seq_num`` is already stored (`hotstage.acquisition.storage.engine`); a run whose
stop document is already stored is only removed from the spool.

Damage (`flush_one`): a line that is not one whole document (torn by a crash or a full disk, usually the last) is
skipped with a warning naming the file and the line, and everything else is written. A file with no usable start
document (and whose run the catalog does not know either) cannot be written anywhere: it is moved to
``unreadable/`` inside the spool directory, with one warning, so that later sessions do not trip over it again.
A catalog that keeps failing stops the flush (the file stays; `hotstage spool flush` again later).

Full disk: `Spool.append` writes each run's lines with one ``write`` and cuts the files back to their previous
length if any write or fsync fails, so the caller can retry the same documents without tearing or doubling
lines (`hotstage.acquisition.storage.writer` holds them in memory meanwhile and stops the run: no data are acquired that
could not be kept). `rescue_run` writes a run's documents to another directory when the spool's disk stays full.

Layout: one JSONL file per run (``<run uid>.jsonl``, `hotstage.acquisition.jsonl` format, large numeric arrays in its
binary form — ``dump_line(..., binary_arrays=True)``: ~0.05 ms instead of ~1.4 ms for a 4000-float array on the
courier thread, which shares the GIL with the RunEngine; older spool files, arrays as lists, read the same)
in the spool directory:
``$HOTSTAGE_SPOOL`` if set, else ``spool/`` inside the embedded catalog's directory, or, for a Tiled server,
inside the default data directory (``$HOTSTAGE_DATA`` or ``./hotstage-data``). The writing process holds an
exclusive `flock` on each file it writes, so a flush never touches a run that is still being acquired.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hotstage.acquisition.jsonl import Document, dump_line, read_documents
from hotstage.acquisition.storage.engine import ReopenNeeded, WriterEngine, set_aside_orphans
from hotstage.acquisition.storage.location import CatalogLocation, catalog_location, default_data_dir

__all__ = ["SPOOL_ENV", "UNREADABLE_DIR", "FlushResult", "Spool", "default_spool_dir", "doc_key", "flush_spool",
           "pending_runs", "rescue_run", "unique_documents"]

log = logging.getLogger("hotstage.acquisition.storage")

SPOOL_ENV = "HOTSTAGE_SPOOL"
UNATTRIBUTED = "_unattributed"
"""File stem for documents that name no run the spool has seen (never expected from a RunEngine)."""
UNREADABLE_DIR = "unreadable"
"""Sub-directory of the spool where files that cannot be written to any catalog are set aside."""
RECOVERED_REASON = "recovered from the storage spool: the acquiring process ended before the run's stop document"
FLUSH_REOPEN_AFTER = 4
"""Attempts of one write, on transient errors, before `flush_one` calls the catalog unavailable (~1.4 s)."""


def default_spool_dir(location: CatalogLocation | None = None) -> Path:
    """``$HOTSTAGE_SPOOL``, else ``<embedded catalog>/spool``, else ``<default data dir>/spool`` (module doc)."""
    env = os.environ.get(SPOOL_ENV)
    if env:
        return Path(env).expanduser().resolve()
    if location is not None and location.data_dir:
        return Path(location.data_dir) / "spool"
    return default_data_dir().expanduser().resolve() / "spool"


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (a write may be short)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def doc_key(name: str, doc: dict[str, Any]) -> tuple[str, Any]:
    """What identifies a document (its uid), to tell repeats apart; documents without one are never repeats."""
    key = doc.get("uid") or doc.get("datum_id")
    return (name, key if key is not None else id(doc))


class Spool:
    """Appends documents to one file per run and fsyncs them; `finish(run)` deletes a run's file once stored."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        """Use (and create) ``directory``."""
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._fds: dict[str, int] = {}
        self._run_of: dict[str, str] = {}  # descriptor / resource uid -> run uid
        self.spooled = 0

    def path(self, run_uid: str) -> Path:
        """The spool file of one run."""
        return self.directory / f"{run_uid}.jsonl"

    def run_of(self, name: str, doc: dict[str, Any]) -> str:
        """The run a document belongs to (remembering descriptors and resources as they pass)."""
        if name == "start":
            return doc["uid"]
        if name in ("descriptor", "resource", "stream_resource"):
            run = doc.get("run_start") or UNATTRIBUTED
            self._run_of[doc["uid"]] = run
            return run
        if name == "stop":
            return doc.get("run_start") or UNATTRIBUTED
        key = {"event": "descriptor", "event_page": "descriptor", "datum": "resource",
               "datum_page": "resource", "stream_datum": "stream_resource"}.get(name)
        return self._run_of.get(doc.get(key, ""), UNATTRIBUTED) if key else UNATTRIBUTED

    def _fd(self, run_uid: str) -> int:
        """The open, locked spool file of a run (raw file descriptor, appending)."""
        fd = self._fds.get(run_uid)
        if fd is None:
            fd = os.open(self.path(run_uid), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:
                os.close(fd)
                raise
            self._fds[run_uid] = fd
        return fd

    def append(self, items: Iterable[tuple[int, str, dict[str, Any]]]) -> None:
        """Append (seq, name, doc) items; returns once they are on disk (written and fsynced).

        On an OSError (full disk, read-only file system) every file touched is cut back to its length before the
        call and the error is raised: nothing of these items stays on disk, so a retry writes each line once.
        """
        chunks: dict[str, list[str]] = {}
        count = 0
        for _, name, doc in items:
            chunks.setdefault(self.run_of(name, doc), []).append(dump_line(name, doc, binary_arrays=True))
            count += 1
        touched: list[tuple[int, int]] = []
        try:
            for run, lines in chunks.items():
                fd = self._fd(run)
                touched.append((fd, os.fstat(fd).st_size))
                _write_all(fd, "".join(lines).encode("utf-8"))
            for fd, _ in touched:
                os.fsync(fd)
        except OSError:
            for fd, size in touched:
                try:
                    os.ftruncate(fd, size)
                except OSError:
                    log.exception("spool: could not cut a file back after a failed write")
            raise
        self.spooled += count

    def read(self, run_uid: str) -> list[Document]:
        """The whole documents in a run's spool file (none if it has no file)."""
        try:
            docs, bad = read_documents(self.path(run_uid))
        except FileNotFoundError:
            return []
        if bad:
            log.warning("spool %s: skipped unreadable line(s) %s", self.path(run_uid), _numbers(bad))
        return docs

    def finish(self, run_uid: str) -> None:
        """The run's stop document is stored: forget the run and delete its file."""
        fd = self._fds.pop(run_uid, None)
        for key in [k for k, v in self._run_of.items() if v == run_uid]:
            del self._run_of[key]
        try:
            self.path(run_uid).unlink()
        except FileNotFoundError:
            pass
        if fd is not None:
            os.close(fd)  # after the unlink: no other process can lock the file in between

    def close(self) -> None:
        """Close the files (what is still in them stays for `flush_spool`)."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def rescue_run(directory: Path, run_uid: str, docs: Iterable[Document]) -> Path:
    """Write a run's documents, complete, to ``directory/<run>.jsonl`` (fsynced) and return the file.

    For when the spool's own disk cannot take them: `hotstage spool flush` with ``HOTSTAGE_SPOOL=directory``
    writes them like any spool file.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{run_uid}.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for name, doc in docs:
            f.write(dump_line(name, doc, binary_arrays=True))
        f.flush()
        os.fsync(f.fileno())
    return path


def _numbers(lines: list[int], most: int = 10) -> str:
    """Line numbers for a message: the first ``most`` and how many more."""
    text = ", ".join(map(str, lines[:most]))
    return text + (f" and {len(lines) - most} more" if len(lines) > most else "")


def pending_runs(directory: str | os.PathLike[str]) -> list[Path]:
    """The spool files in ``directory`` (runs whose documents are not all known to be stored)."""
    d = Path(directory)
    return sorted(d.glob("*.jsonl")) if d.is_dir() else []


@dataclass
class FlushResult:
    """What `flush_spool` did with one spool file."""

    run_uid: str
    documents: int = 0
    events: int = 0
    status: str = "written"  # "written", "already stored", "in use", "failed", "unreadable"
    stop_added: bool = False
    errors: list[str] = field(default_factory=list)
    skipped_lines: list[int] = field(default_factory=list)
    """Line numbers skipped as unreadable (torn or damaged lines)."""
    moved_to: str | None = None
    """Where an unreadable file was set aside (status "unreadable")."""
    catalog_unavailable: bool = False
    """The catalog kept failing: the file stays for a later flush."""


class _Collect:
    """A writer-engine reporter that keeps failures (the flush is synchronous: nothing else to report)."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.failures: list[str] = []

    def stored(self, seq: int) -> None:
        pass

    def error(self, err: Any) -> None:
        self.errors.append(str(err))

    def failed(self, seq: int, name: str, doc: dict) -> None:
        self.failures.append(f"{name} {doc.get('uid', '')}")


def _recovered_stop(docs: list[Document]) -> dict[str, Any] | None:
    """A stop document for a spooled run that has none (None if the run has no start).

    ``num_events`` counts each stream's distinct ``seq_num`` (what the writer stores: a repeated one once).
    """
    start = next((doc for name, doc in docs if name == "start"), None)
    if start is None:
        return None
    streams = {doc["uid"]: doc.get("name", "primary") for name, doc in docs if name == "descriptor"}
    seen: dict[str, set[int]] = {}
    for name, doc in docs:
        if name == "event":
            seen.setdefault(streams.get(doc["descriptor"], "?"), set()).add(doc["seq_num"])
        elif name == "event_page":
            seen.setdefault(streams.get(doc["descriptor"], "?"), set()).update(doc["seq_num"])
    counts = Counter({stream: len(nums) for stream, nums in seen.items()})
    last = max((float(doc.get("time", 0.0)) for _, doc in docs if isinstance(doc.get("time"), (int, float))),
               default=time.time())
    return {"uid": str(uuid.uuid4()), "run_start": start["uid"], "time": last, "exit_status": "fail",
            "reason": RECOVERED_REASON, "num_events": dict(counts)}


def _stop_stored(client: Any, run_uid: str) -> bool:
    """True if the catalog already holds this run's stop document."""
    try:
        return bool(client[run_uid].metadata.get("stop"))
    except KeyError:
        return False


def _stored_start(client: Any, run_uid: str) -> dict[str, Any] | None:
    """The run's start document if the catalog holds the run (a spool file whose start line was torn)."""
    try:
        start = client[run_uid].metadata.get("start")
    except KeyError:
        return None
    return dict(start) if start else None


def unique_documents(docs: list[Document]) -> list[Document]:
    """The documents in order, each (name, uid) once."""
    seen: set[tuple[str, Any]] = set()
    out = []
    for name, doc in docs:
        key = doc_key(name, doc)
        if key not in seen:
            seen.add(key)
            out.append((name, doc))
    return out


def _set_aside(path: Path, result: FlushResult, why: str) -> FlushResult:
    """Move an unreadable spool file to ``unreadable/`` (one warning) so no later flush tries it again."""
    target_dir = path.parent / UNREADABLE_DIR
    target_dir.mkdir(exist_ok=True)
    target = target_dir / path.name
    if target.exists():
        target = target_dir / f"{path.stem}.{int(time.time())}{path.suffix}"
    os.replace(path, target)
    result.status = "unreadable"
    result.moved_to = str(target)
    result.errors.append(why)
    log.warning("spool %s: %s; moved to %s (it cannot be written to a catalog)", path, why, target)
    return result


def flush_one(client: Any, path: Path, data_dir: str | None = None) -> FlushResult:
    """Write one spool file to the catalog (resume mode: nothing twice) and delete it when all is stored.

    Unreadable lines are skipped with a warning; a file without a usable start document is set aside
    (`UNREADABLE_DIR`); a catalog that keeps failing leaves the file in place (``catalog_unavailable``).
    ``data_dir``: the embedded catalog's directory (array files of a run the catalog lost are set aside first).
    """
    result = FlushResult(run_uid=path.stem)
    with open(path, "a", encoding="utf-8") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            result.status = "in use"  # its run is still being acquired by another process
            return result
        if not path.exists():  # finished and deleted by its writer while we waited for the lock
            result.status = "already stored"
            return result
        docs, bad = read_documents(path)
        if bad:
            result.skipped_lines = bad
            log.warning("spool %s: skipped unreadable line(s) %s (torn by a crash or a full disk); writing the "
                        "other %d documents", path, _numbers(bad), len(docs))
        docs = unique_documents(docs)
        result.documents = len(docs)
        result.events = sum(1 for name, _ in docs if name == "event")
        if not docs and not bad:
            result.status = "already stored"
            path.unlink()
            return result
        if not any(name == "start" for name, _ in docs):
            start = _stored_start(client, result.run_uid)
            if start is None:
                return _set_aside(path, result, f"no start document ({len(docs)} documents, {len(bad)} "
                                                "unreadable lines)")
            docs.insert(0, ("start", start))
        if _stop_stored(client, result.run_uid):
            result.status = "already stored"
            path.unlink()
            return result
        if not any(name == "stop" for name, _ in docs):
            stop = _recovered_stop(docs)
            if stop is not None:
                docs.append(("stop", stop))
                result.stop_added = True
        reporter = _Collect()
        engine = WriterEngine(client, reporter, max_attempts=3, backoff=(0.2, 2.0), resume=True,
                              reopen_after=FLUSH_REOPEN_AFTER,
                              on_recreate=functools.partial(set_aside_orphans, data_dir))
        try:
            for seq, (name, doc) in enumerate(docs, 1):
                engine.hand_over(seq, name, doc)
            engine.flush_events()
        except ReopenNeeded as exc:
            result.status = "failed"
            result.catalog_unavailable = True
            result.errors = [f"the catalog is unavailable: {exc}"]
            return result  # the file stays: try again once the catalog is writable
        result.errors = reporter.errors
        if reporter.failures:
            result.status = "failed"
            result.errors = [*reporter.failures, *reporter.errors]
            return result  # the file stays: nothing is lost, try again later
        path.unlink()
    return result


def flush_spool(client: Any, directory: str | os.PathLike[str]) -> list[FlushResult]:
    """Write every spool file in ``directory`` to the catalog ``client`` (see `flush_one`); one result each.

    Once the catalog turns out unavailable the remaining files are not tried (each would wait for it again).
    """
    try:
        data_dir = catalog_location(client).data_dir
    except (TypeError, ValueError):
        data_dir = None
    results: list[FlushResult] = []
    unavailable = False
    for path in pending_runs(directory):
        if unavailable:
            results.append(FlushResult(run_uid=path.stem, status="failed", catalog_unavailable=True,
                                       errors=["not tried: the catalog is unavailable"]))
            continue
        try:
            results.append(flush_one(client, path, data_dir))
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others; it stays on disk
            log.exception("spool flush of %s failed", path)
            results.append(FlushResult(run_uid=path.stem, status="failed", errors=[repr(exc)]))
        r = results[-1]
        unavailable = r.catalog_unavailable
        log.info("spool %s: %s (%d documents%s)", r.run_uid, r.status, r.documents,
                 ", stop added" if r.stop_added else "")
    return results
