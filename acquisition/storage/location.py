"""Where a catalog lives and how to open it: embedded (a data directory) or a Tiled server.

``open_catalog``/``embedded_app``/``CatalogLocation`` (picklable, so the writer process opens the same catalog),
the data-directory defaults, ``describe_location`` for messages. Depends on nothing else of the storage package
(the bottom of ``hotstage.acquisition.storage``'s import graph).
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "API_KEY_ENV",
    "DATA_ENV",
    "URI_ENV",
    "CatalogLocation",
    "catalog_location",
    "close_catalog",
    "default_data_dir",
    "describe_location",
    "embedded_app",
    "open_catalog",
    "read_stream",
    "serve_catalog",
]

logger = logging.getLogger("hotstage.acquisition.storage")

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


def init_sqlite_catalog(catalog_db: Path) -> None:
    """Make a new ``catalog.db`` a tiled catalog in this process: what ``tiled catalog init`` does (create the
    tables, stamp the alembic head). Tiled's own ``init_if_not_exists`` runs that command in a subprocess, a new
    interpreter importing tiled: 2-6 s for every new data directory, most of a test session's start-up. The
    tables are created on a thread of its own (asyncio.run needs a thread without a running loop: the caller may
    be inside one)."""
    import asyncio
    import threading

    from sqlalchemy.ext.asyncio import create_async_engine
    from tiled.alembic_utils import stamp_head
    from tiled.catalog.alembic_constants import ALEMBIC_DIR, ALEMBIC_INI_TEMPLATE_PATH
    from tiled.catalog.core import initialize_database

    uri = f"sqlite+aiosqlite:///{catalog_db}"
    failure: list[BaseException] = []

    async def create() -> None:
        engine = create_async_engine(uri)
        try:
            await initialize_database(engine)
        finally:
            await engine.dispose()

    def run() -> None:
        try:
            asyncio.run(create())
            stamp_head(ALEMBIC_INI_TEMPLATE_PATH, ALEMBIC_DIR, uri)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(exc)

    worker = threading.Thread(target=run, name="catalog-init")
    worker.start()
    worker.join()
    if failure:
        raise failure[0]


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
    if not catalog_db.exists():
        init_sqlite_catalog(catalog_db)
    adapter = catalog_from_uri(f"sqlite:///{catalog_db}",
                               writable_storage=[f"file://{root / 'data'}", f"sqlite:///{tables}"])
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
