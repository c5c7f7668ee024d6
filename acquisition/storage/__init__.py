"""Storage of bluesky runs in a Tiled catalog (embedded or server), written off the RunEngine's thread.

Where the data go (see docs/architecture.md, "Data flow"):

* ``open_catalog()`` gives a Tiled client container. By default it is *embedded*: a SQLite catalog
  (``catalog.db``), zarr/file array storage (``data/``) and a SQLite table store (``tables.sqlite``)
  under the data directory (``data_dir`` argument, else ``$HOTSTAGE_DATA``, else ``./hotstage-data/``),
  served in-process by ``tiled.server.app.build_app`` through ``Context.from_app``. With ``uri`` (or
  ``$HOTSTAGE_TILED_URI``) it connects to a Tiled server instead (``api_key`` or ``$TILED_API_KEY``).
  A table store is required because TiledWriter puts scalars in SQL tables and arrays longer than
  16 elements (``bluesky_tiled_plugins...tiled_writer.MAX_ARRAY_SIZE``) in zarr arrays.
* ``CatalogWriter`` is the RunEngine subscriber. Its ``__call__`` only enqueues (a few µs). By default
  (``process=True``) the writing happens in a separate *writer process* (``hotstage.acquisition.storage.worker``,
  its own interpreter: a consumer of the document bus)
  that opens its own client on the same catalog (embedded: the same SQLite/zarr directory, served by its
  own in-process Tiled app; server: HTTP), so the Tiled app's ~30 ms of CPU per request never competes
  with the RunEngine for the GIL. ``process=False`` keeps everything in one background thread of this
  process (``ThreadCatalogWriter``; handy to inject faults in tests, but it costs 7-15 % per point at
  20 ms exposure and 17-62 % at none — benchmarks/storage.py). Both flush event rows on a timer
  (default every 0.25 s), so an event is readable within ~0.5 s and the RunEngine never waits for I/O.
* Readers and the writer process share the embedded SQLite files: ``catalog.db`` keeps tiled's own journal
  mode (a rollback journal: its writes are short metadata updates) and ``open_catalog`` puts ``tables.sqlite``
  in WAL mode, so readers in this process never see "database is locked" while the writer process appends
  (tests/test_storage.py polls a run while it is written from the other process).

Reading a run back with a plain Tiled client (bluesky-tiled-plugins 2.0 layout, verified: streams are
direct children of the run, there is no ``streams`` namespace; each stream is a composite node holding
an ``internal`` table of scalars plus one zarr array per array-valued key)::

    from tiled.client import from_uri          # or: from hotstage.acquisition.storage import open_catalog
    c = from_uri("http://127.0.0.1:8000", api_key="...")   # or c = open_catalog("./hotstage-data")
    ds = c[uid]["primary"].read()              # xarray.Dataset, dims ("time", "dim_int_1", ...)

``c[uid].metadata["start"]`` / ``["stop"]`` hold the start and stop documents; ``c[uid].documents()``
replays the run as (name, doc) pairs (embedded mode registers the needed json-seq exporter; a server
must list it under ``media_types: BlueskyRun: application/json-seq:
bluesky_tiled_plugins.exporters:json_seq_exporter`` in its config).

Why time-based batching and why the details live in ``hotstage.acquisition.storage.engine``: see that module.

The package, bottom to top (each module imports only those above it; tests/test_bus.py checks the graph is
acyclic): ``location`` (where a catalog lives, ``open_catalog``) and ``engine`` (``WriterEngine``: TiledWriter,
timed row flushes, retries, resume) import nothing of the package; ``spool`` (the durable copy on disk, ``hotstage
spool flush``) uses both; ``writer`` (``CatalogWriter``: the RunEngine side, courier thread, acknowledgements,
restarts) uses all three; ``worker`` (``python -m hotstage.acquisition.storage.worker``: the writer process) uses
``location`` and ``engine`` and is never imported by the others (it runs only as a process). Every public name is
re-exported here.
"""

from hotstage.acquisition.storage.engine import REOPEN_EXIT, ReopenNeeded, WriteError, WriterEngine
from hotstage.acquisition.storage.location import (
    API_KEY_ENV,
    DATA_ENV,
    DEFAULT_DATA_DIR,
    JSON_SEQ,
    JSON_SEQ_EXPORTER,
    URI_ENV,
    CatalogLocation,
    catalog_location,
    close_catalog,
    default_data_dir,
    describe_location,
    embedded_app,
    open_catalog,
    read_stream,
    serve_catalog,
)
from hotstage.acquisition.storage.spool import (
    SPOOL_ENV,
    FlushResult,
    Spool,
    default_spool_dir,
    flush_spool,
    pending_runs,
)
from hotstage.acquisition.storage.writer import (
    CLOSE_TIMEOUT_S,
    DATA_DOCUMENTS,
    FLUSH_TIMEOUT_S,
    REOPEN_AFTER,
    REOPEN_DELAY_S,
    CatalogWriter,
    ProcessCatalogWriter,
    RemoteWriteError,
    StorageError,
    ThreadCatalogWriter,
)

__all__ = [
    "API_KEY_ENV", "CLOSE_TIMEOUT_S", "DATA_DOCUMENTS", "DATA_ENV", "DEFAULT_DATA_DIR", "FLUSH_TIMEOUT_S", "JSON_SEQ",
    "JSON_SEQ_EXPORTER", "REOPEN_AFTER", "REOPEN_DELAY_S", "REOPEN_EXIT", "SPOOL_ENV", "URI_ENV", "CatalogLocation",
    "CatalogWriter", "FlushResult", "ProcessCatalogWriter", "RemoteWriteError", "ReopenNeeded", "Spool",
    "StorageError", "ThreadCatalogWriter", "WriteError", "WriterEngine", "catalog_location", "close_catalog",
    "default_data_dir", "default_spool_dir", "describe_location", "embedded_app", "flush_spool", "open_catalog",
    "pending_runs", "read_stream", "serve_catalog",
]
