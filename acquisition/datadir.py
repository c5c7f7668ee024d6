"""The files of an embedded catalog: relocation after a move or copy, and the health of its SQLite table store.

An embedded catalog (``hotstage.acquisition.storage.embedded_app``) is a directory holding ``catalog.db`` (tiled's SQLite
catalog: run metadata, node tree, data sources), ``data/`` (zarr arrays) and ``tables.sqlite`` (the scalar columns
of every stream, one SQL table per stream layout). Tiled 0.2 records where each data source's files are as an
*absolute* URI in the ``assets`` table of ``catalog.db`` (``file://localhost/<root>/data/<uid>/<stream>/<key>``,
``sqlite://localhost/<root>/tables.sqlite``) and has no relative form, so a directory that was moved or copied
points at its old place: tiled refuses the zarr files ("outside the readable storage area") and cannot find the
table store (``KeyError('sqlite://localhost//old/tables.sqlite')``).

``relocate(root)`` repairs that on opening: asset URIs under another root whose file exists under this root are
rewritten to this root in one SQLite transaction of ``catalog.db`` (with one log line). A copy has its own
``catalog.db``, so the original is untouched and both open. URIs whose file is not under this root are left alone.

``check_tables(path)`` is a cheap health check of ``tables.sqlite`` (it also puts the file in WAL mode, see
``hotstage.acquisition.storage.location._enable_wal``): SQLite detects a truncated or overwritten file when it reads the header and
the schema, and each table's last page is read (``max(rowid)``). Damage inside a page is only seen when that page
is read; ``TableStoreGuard`` turns such errors, at any time, into one ``DamagedStoreError`` line naming the file.
A damaged store leaves the metadata (``catalog.db``) and the arrays (``data/``) readable; nothing is recorded into
it until it is repaired (see ``DamagedStoreError.recovery``).
"""

from __future__ import annotations

import atexit
import json
import logging
import re
import sqlite3
from pathlib import Path
from typing import Any

__all__ = ["DamagedStoreError", "TableStoreGuard", "check_tables", "is_read_request", "relocate", "warn_at_exit"]

logger = logging.getLogger(__name__)

CATALOG_DB = "catalog.db"
TABLES = "tables.sqlite"
ARRAYS = "data"
#: Messages of SQLite (Python's sqlite3 and the ADBC driver alike) that mean the file itself is damaged.
_DAMAGE = re.compile(r"malformed|not a database|file is encrypted|disk I/O error|database corrupt", re.I)
_SQLITE_MESSAGE = re.compile(r"database disk image is malformed|file is not a database|file is encrypted or is "
                             r"not a database|disk I/O error|no such table: \S+")
#: tiled 0.2 POST endpoints that only read (a column list in the body); every other POST/PUT/PATCH/DELETE writes.
READ_POSTS = ("/api/v1/table/partition/", "/api/v1/table/full/", "/api/v1/container/full/",
              "/api/v1/awkward/buffers/")


class DamagedStoreError(ValueError):
    """A SQLite file of the catalog is damaged or missing pieces; the message is one line saying how to recover.

    A ``ValueError`` so that the CLI prints it as one line (exit status 2).
    """

    def __init__(self, path: Path, reason: str, *, what: str | None = None, refusing: bool = False) -> None:
        self.path = Path(path)
        self.reason = reason
        if self.path.name == CATALOG_DB:
            what = what or "the runs in it are unreadable"
            recovery = (f"restore it from a backup, or rebuild it with `sqlite3 {self.path} .recover | sqlite3 "
                        f"recovered.db` and put recovered.db in its place")
        else:
            what = what or ("the scalar columns of every run are unreadable (run metadata and arrays are not "
                            "affected)")
            recovery = (f"move it aside and restore it from a backup, or rebuild it with `sqlite3 {self.path} "
                        f".recover | sqlite3 recovered.sqlite` and put recovered.sqlite in its place")
        self.recovery = recovery
        refused = "; nothing is recorded until it is repaired" if refusing else ""
        super().__init__(f"{self.path} is damaged ({reason}): {what}{refused}; {recovery}")


# --------------------------------------------------------------------------------------- relocation


def storage_uris(root: Path) -> tuple[str, str]:
    """The URI prefix of array files and the URI of the table store, exactly as tiled records them for ``root``."""
    return f"file://localhost{root}/{ARRAYS}/", f"sqlite://localhost/{root}/{TABLES}"


def _old_location(uri: str, root: Path, known: set[str]) -> str | None:
    """The root an asset URI was recorded under, if its file is (or, for the table store, belongs) under ``root``."""
    if uri.startswith("sqlite://localhost/") and uri.endswith(f"/{TABLES}"):
        return uri[len("sqlite://localhost/"):-len(f"/{TABLES}")]
    if not uri.startswith("file://localhost/"):
        return None
    path = uri[len("file://localhost"):]
    for old in known:
        if path.startswith(f"{old}/{ARRAYS}/"):
            return old
    marker = f"/{ARRAYS}/"
    start = path.find(marker)
    while start > 0:  # the old root may itself contain "/data/": try every split, keep the one whose file is here
        old, rest = path[:start], path[start + len(marker):]
        if (root / ARRAYS / rest).exists():
            return old
        start = path.find(marker, start + 1)
    return None


def _stale_assets(con: sqlite3.Connection, root: Path) -> list[tuple[int, str]]:
    """Assets of the two storages of a hotstage catalog whose URI is not under ``root``."""
    file_prefix, tables_uri = storage_uris(root)
    rows = con.execute("SELECT id, data_uri FROM assets WHERE data_uri LIKE 'file://%' "
                       "OR data_uri LIKE 'sqlite://%'").fetchall()
    return [(i, u) for i, u in rows if u != tables_uri and not u.startswith(file_prefix)]


def relocate(root: Path) -> int:
    """Rewrite the asset URIs of a catalog moved or copied to ``root``; return how many were rewritten.

    Idempotent and safe with several processes opening the directory at once (the rewrite holds SQLite's write
    lock and looks again under it). Raises ``DamagedStoreError`` if ``catalog.db`` is not a readable database.
    """
    root = Path(root)
    db = root / CATALOG_DB
    if not db.exists():
        return 0
    con = sqlite3.connect(db, timeout=60, isolation_level=None)
    try:
        if not _stale_assets(con, root):
            return 0
        con.execute("BEGIN IMMEDIATE")
        try:
            moved, missing = _rewrite(con, root, _stale_assets(con, root))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):  # an empty or foreign file: tiled initialises or complains itself
            return 0
        if not _DAMAGE.search(str(exc)):
            raise
        raise DamagedStoreError(db, str(exc)) from None
    except sqlite3.DatabaseError as exc:
        raise DamagedStoreError(db, str(exc)) from None
    finally:
        con.close()
    if moved:
        olds = ", ".join(sorted(moved))
        logger.warning("data directory %s was moved or copied from %s: %d file locations in %s now point here",
                       root, olds, sum(moved.values()), db.name)
    if missing:
        logger.warning("%d file locations in %s are not under %s and were left as they are (e.g. %s)",
                       len(missing), db, root, missing[0])
    return sum(moved.values())


def _rewrite(con: sqlite3.Connection, root: Path, stale: list[tuple[int, str]]) -> tuple[dict[str, int], list[str]]:
    """Point each stale asset at this root (merging with an asset already recorded there); inside a transaction."""
    file_prefix, tables_uri = storage_uris(root)
    known: set[str] = set()
    moved: dict[str, int] = {}
    missing: list[str] = []
    for asset_id, uri in sorted(stale, key=lambda r: not r[1].startswith("sqlite")):  # table store first: its root
        old = _old_location(uri, root, known)
        if old is None:
            missing.append(uri)
            continue
        known.add(old)
        new = tables_uri if uri.startswith("sqlite") else file_prefix + uri[len(f"file://localhost{old}/{ARRAYS}/"):]
        clash = con.execute("SELECT id FROM assets WHERE data_uri = ?", (new,)).fetchone()
        if clash is None:
            con.execute("UPDATE assets SET data_uri = ? WHERE id = ?", (new, asset_id))
        else:  # written here once already (e.g. by a version without relocation): one asset, both data sources
            con.execute("UPDATE OR IGNORE data_source_asset_association SET asset_id = ? WHERE asset_id = ?",
                        (clash[0], asset_id))
            con.execute("DELETE FROM data_source_asset_association WHERE asset_id = ?", (asset_id,))
            con.execute("DELETE FROM assets WHERE id = ?", (asset_id,))
        moved[old] = moved.get(old, 0) + 1
    return moved, missing


# --------------------------------------------------------------------------------------- table store health


def check_tables(path: Path) -> str | None:
    """Put ``path`` in WAL mode and check it cheaply; return why it is damaged, or None if it reads well.

    Opens the file with Python's ``sqlite3`` (see ``hotstage.acquisition.storage.location._enable_wal`` for why only once per
    process). A missing file is created (empty) by SQLite, as tiled would.
    """
    con = sqlite3.connect(path, timeout=60)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for name in tables:
            try:
                con.execute(f'SELECT max(rowid) FROM "{name.replace(chr(34), chr(34) * 2)}"').fetchone()
            except sqlite3.OperationalError as exc:
                if _DAMAGE.search(str(exc)):
                    return str(exc)
        return None
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.OperationalError) and not _DAMAGE.search(str(exc)):
            raise  # e.g. "database is locked" after 60 s: not damage
        return str(exc)
    finally:
        con.close()


def is_read_request(method: str, path: str) -> bool:
    """Whether a tiled request only reads: GET/HEAD/OPTIONS, or one of tiled's POSTs that carry a column list."""
    method = method.upper()
    if method in ("GET", "HEAD", "OPTIONS"):
        return True
    return method == "POST" and path.startswith(READ_POSTS)


def table_store_error(exc: BaseException, tables: Path, catalog_db: Path) -> DamagedStoreError | None:
    """The ``DamagedStoreError`` an exception raised while serving a request amounts to, if any."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, DamagedStoreError):
            return e
        text = str(e)
        origin = type(e).__module__
        if _DAMAGE.search(text):
            in_catalog = origin.startswith(("sqlite3", "aiosqlite", "sqlalchemy"))
            return DamagedStoreError(catalog_db if in_catalog else tables, _first_line(text))
        if "no such table" in text and origin.startswith("adbc"):
            return DamagedStoreError(tables, _first_line(text), what="the scalar table of a run is missing (was "
                                     "the file replaced by an older or empty one?); the other runs' tables are "
                                     "readable")
        if isinstance(e, BaseExceptionGroup):
            todo.extend(e.exceptions)
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)
    return None


def _first_line(text: str) -> str:
    """SQLite's own words from a driver's message ("database disk image is malformed"), without the query."""
    found = _SQLITE_MESSAGE.search(text)
    return found.group(0) if found else " ".join(text.split())[:200]


#: Files whose damage this process has reported as an error already (so the warning at exit is not repeated).
_REPORTED: set[Path] = set()


def reported(error: DamagedStoreError) -> DamagedStoreError:
    """Note that ``error`` is being raised (no warning about the same file at exit); return it."""
    _REPORTED.add(error.path)
    return error


def warn_at_exit(error: DamagedStoreError) -> None:
    """Log ``error`` as a warning when the process exits, unless it was raised as an error meanwhile.

    A command that only reads metadata (``hotstage runs``) thus ends with the one line naming the file and how to
    recover, and one that hit the damage (``hotstage show``) prints only its error line, not the same line twice.
    """
    def warn() -> None:
        if error.path not in _REPORTED:
            _REPORTED.add(error.path)
            logger.warning("%s", error)

    atexit.register(warn)


class TableStoreGuard:
    """ASGI middleware of the embedded tiled app: damage of the table store becomes one ``DamagedStoreError``.

    In process (``raise_errors=True``: the app behind ``Context.from_app``) the error is raised to the client
    call, which the CLI prints as one line; behind a server it is a 503 response carrying the same line. With
    ``damage`` (the store was found damaged on opening) every write request is refused the same way.
    """

    def __init__(self, app: Any, *, tables: Path, catalog_db: Path, damage: str | None = None,
                 raise_errors: bool = True) -> None:
        self.app = app
        self.tables = tables
        self.catalog_db = catalog_db
        self.damage = damage
        self.raise_errors = raise_errors

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.damage is not None and not is_read_request(scope["method"], scope["path"]):
            await self._fail(DamagedStoreError(self.tables, self.damage, refusing=True), send)
            return
        started = False

        async def tracking_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            error = table_store_error(exc, self.tables, self.catalog_db)
            if error is None or started:
                raise
            await self._fail(error, send)

    async def _fail(self, error: DamagedStoreError, send: Any) -> None:
        reported(error)
        if self.raise_errors:
            raise error
        body = json.dumps({"detail": str(error)}).encode()
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
