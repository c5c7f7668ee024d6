"""`hotstage serve`: the embedded catalog as a Tiled HTTP server, behind a key gate.

Access control (issue 11): every request must carry a key in the header ``Authorization: Apikey <key>`` — the
header tiled's Python client sends for ``from_uri(uri, api_key=KEY)``. There are two keys:

* the **read-write** key (``--api-key``, else ``$TILED_API_KEY``): everything, including writing runs (hotstage's
  writer: ``HOTSTAGE_TILED_URI=http://host:port`` and ``TILED_API_KEY=<read-write key>``);
* the **read-only** key (``--read-key``, else ``$HOTSTAGE_READ_API_KEY``): GET/HEAD/OPTIONS and tiled's few POSTs
  that only read (``hotstage.acquisition.datadir.is_read_request``); any other request gets 403 — a run's metadata (its
  stop document, say) cannot be changed with it.

A key not given is generated and kept in ``DATA/server-keys.json`` (mode 0600) for the next start; the server
prints only the first characters of each key, never a key in full. Keys in URLs (``?api_key=``, which tiled itself
would accept) are refused with 400 (URLs end up in logs and browser histories), the access log is off, and
``/docs``, ``/openapi.json`` and the rest need a key like everything else (only the server description
``GET /api/v1/`` — version and formats, no data — is answered without one: tiled's client asks for it before it
sends its key): nothing reaches tiled without passing
the gate (``KeyGate``), and tiled itself runs with a random internal key that the gate substitutes, so a request
that somehow bypassed the gate would still be refused by tiled. The server refuses to listen on an address other
than loopback unless the read-write key was given explicitly (option or environment).

Why a gate instead of tiled's own scoped API keys: those need tiled's authentication database and an identity
provider; two fixed keys checked in front of tiled's single-user mode are enough for a lab and easy to audit.

Facility catalog (issue 12): with ``--database postgresql://USER@HOST:PORT/DB`` (else ``$HOTSTAGE_CATALOG_DATABASE``)
the catalog's metadata and its tables (events) live in that PostgreSQL database and only the arrays (zarr) and the
keys file under the data directory; several rigs can then write at once (SQLite has one writer at a time). The
password never goes on the command line: ``$PGPASSWORD``, ``~/.pgpass``, or inside the URI in
``$HOTSTAGE_CATALOG_DATABASE``. It is then handed to tiled's drivers (asyncpg for the catalog, libpq through ADBC for
the tables) only through this process's environment, so it appears in no URI tiled keeps, logs or stores.
The embedded SQLite catalog stays the default.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from hotstage.acquisition.datadir import is_read_request

__all__ = ["Database", "KeyGate", "ServeError", "ServerKeys", "is_loopback", "parse_database", "prepare_database",
           "resolve_keys", "serve"]

logger = logging.getLogger(__name__)

WRITE_KEY_ENV = "TILED_API_KEY"
READ_KEY_ENV = "HOTSTAGE_READ_API_KEY"
DATABASE_ENV = "HOTSTAGE_CATALOG_DATABASE"
#: how long the start waits for the database to answer before it gives up (one line, exit 2)
CONNECT_TIMEOUT_S = 15.0
KEYS_FILE = "server-keys.json"
#: tiled's client reads a key back from its header with ``^Apikey (\w+)$``: keep keys to those characters.
KEY_PATTERN = re.compile(r"[A-Za-z0-9_]{16,256}")
SHOWN = 4  # characters of a key that are printed


class ServeError(ValueError):
    """The server cannot start as asked (bad key, unsafe address, port in use): one line, exit status 2."""


@dataclass(frozen=True)
class ServerKeys:
    """The read-write and read-only keys and where each came from (for the start message; never printed whole)."""

    write: str
    read: str
    write_source: str
    read_source: str
    write_explicit: bool


def shown(key: str) -> str:
    """The first characters of a key, enough to tell keys apart."""
    return f"{key[:SHOWN]}…"


def _checked(key: str, source: str) -> str:
    if not KEY_PATTERN.fullmatch(key):
        raise ServeError(f"{source}: an API key must be 16 to 256 letters, digits or underscores (got "
                         f"{len(key)} characters); make one with `python -c \"import secrets; "
                         f"print(secrets.token_hex(32))\"`")
    return key


def resolve_keys(root: Path, api_key: str | None = None, read_key: str | None = None,
                 environ: dict[str, str] | None = None) -> ServerKeys:
    """The keys: option, else environment, else ``root/server-keys.json``, else new ones (written there, 0600)."""
    env = os.environ if environ is None else environ
    stored_path = root / KEYS_FILE
    stored = _read_keys_file(stored_path)
    found: dict[str, tuple[str, str]] = {}
    for name, option, option_name, env_name in (("read_write", api_key, "--api-key", WRITE_KEY_ENV),
                                                 ("read_only", read_key, "--read-key", READ_KEY_ENV)):
        if option:
            found[name] = (_checked(option, option_name), option_name)
        elif env.get(env_name):
            found[name] = (_checked(env[env_name], f"${env_name}"), f"${env_name}")
        elif stored.get(name):
            found[name] = (_checked(stored[name], f"{stored_path} {name}"), f"kept in {stored_path}")
    missing = [name for name in ("read_write", "read_only") if name not in found]
    if missing:
        new = {name: secrets.token_hex(32) for name in missing}
        _write_keys_file(stored_path, {**stored, **new})
        for name, key in new.items():
            found[name] = (key, f"generated, kept in {stored_path} (mode 0600)")
    (write, write_source), (read, read_source) = found["read_write"], found["read_only"]
    if secrets.compare_digest(write, read):
        raise ServeError(f"the read-only key ({read_source}) is the read-write key ({write_source}): give two "
                         f"different keys")
    return ServerKeys(write, read, write_source, read_source,
                      write_explicit=write_source in ("--api-key", f"${WRITE_KEY_ENV}"))


def _read_keys_file(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ServeError(f"{path}: unreadable ({exc}); delete it to have new keys generated") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ServeError(f"{path}: not a JSON object of keys; delete it to have new keys generated")
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
        logger.warning("%s was readable by others; its mode is now 0600 (consider new keys)", path)
    return data


def _write_keys_file(path: Path, keys: dict[str, str]) -> None:
    """Write the keys file readable by its owner only (created 0600, never world-readable for an instant)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(keys, f, indent=1)
    os.replace(tmp, path)


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` resolves to is a loopback address (127.0.0.0/8, ::1)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


class KeyGate:
    """ASGI middleware in front of the tiled app: the key, from the ``Authorization`` header only, decides.

    No or a wrong key: 401. A key in the query string: 400 (whatever the header says). The read-only key and a
    request that writes: 403. Otherwise the request goes on to tiled with tiled's internal key in its place and
    without cookies (tiled also reads keys from a cookie). Lifespan events pass through; so does, without a key,
    tiled's server description ``GET /api/v1/`` (``_is_about``).
    """

    def __init__(self, app: Any, *, write_key: str, read_key: str, internal_key: str) -> None:
        self.app = app
        self._write = write_key.encode()
        self._read = read_key.encode()
        self._internal = f"Apikey {internal_key}".encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await _refuse(scope, send, *refusal)
            return
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"authorization", b"cookie")]
        if not _is_about(scope):
            headers.append((b"authorization", self._internal))
        await self.app({**scope, "headers": headers}, receive, send)

    def _refusal(self, scope: dict) -> tuple[int, str] | None:
        """(status, reason) of a refused request, or None."""
        query = scope.get("query_string", b"").decode("latin-1")
        if any(k.strip().lower() == "api_key" for k, _ in parse_qsl(query, keep_blank_values=True)):
            return 400, ("API keys are not accepted in URLs (they end up in logs): send the header "
                         "'Authorization: Apikey <key>'")
        if _is_about(scope):
            return None
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, key = header.partition(b" ")
        if scheme.lower() != b"apikey" or not key:
            return 401, "an API key is required in the header 'Authorization: Apikey <key>'"
        key = key.strip()
        if secrets.compare_digest(key, self._write):
            return None
        if secrets.compare_digest(key, self._read):
            if scope["type"] == "websocket" or is_read_request(scope["method"], scope["path"]):
                return None
            return 403, "the read-only key cannot change the catalog: use the read-write key"
        return 401, "wrong API key"


def _is_about(scope: dict) -> bool:
    """``GET /api/v1/``: tiled's server description (version, formats, "authentication required"; no data), which
    tiled's client fetches *before* it sends its key. Answered anonymously (tiled sees no key), like tiled does."""
    return scope["type"] == "http" and scope["method"] in ("GET", "HEAD") and scope["path"] in ("/api/v1/", "/api/v1")


async def _refuse(scope: dict, send: Any, status: int, reason: str) -> None:
    if scope["type"] == "websocket":  # closing before accepting: the client sees HTTP 403
        await send({"type": "websocket.close", "code": 1008, "reason": reason})
        return
    body = json.dumps({"detail": reason}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Apikey"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def gated_app(root: Path, keys: ServerKeys, database: Database | None = None) -> Any:
    """The catalog's tiled app (internal random key) behind ``KeyGate``: the embedded catalog under ``root``
    (damage answered with 503), or with ``database`` the PostgreSQL catalog (arrays under ``root/data``)."""
    from tiled.config import Authentication

    internal = secrets.token_hex(32)
    authentication = Authentication(single_user_api_key=internal)
    if database is not None:
        app = database_app(root, database, authentication)
    else:
        from hotstage.acquisition.storage import embedded_app

        app = embedded_app(root, authentication, allow_damaged=True, raise_errors=False)
    return KeyGate(app, write_key=keys.write, read_key=keys.read, internal_key=internal)


@dataclass(frozen=True)
class Database:
    """A PostgreSQL catalog database as the user named it, split into a URI without password and the password."""

    host: str
    port: int
    name: str
    user: str | None
    password: str | None  # from the URI (``$HOTSTAGE_CATALOG_DATABASE``); else libpq's own sources decide
    source: str  # "--database" or "$HOTSTAGE_CATALOG_DATABASE", for error lines

    @property
    def uri(self) -> str:
        """``postgresql://USER@HOST:PORT/DB``: no password, safe to print."""
        user = f"{quote(self.user, safe='')}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"postgresql://{user}{host}:{self.port}/{quote(self.name, safe='')}"

    def environment(self) -> dict[str, str]:
        """What libpq and asyncpg read for the user and password (``PGUSER``, ``PGPASSWORD``), as far as given."""
        env = {}
        if self.user:
            env["PGUSER"] = self.user
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        return env


def parse_database(text: str, source: str = "--database") -> Database:
    """Check a PostgreSQL URI (``postgresql://[USER[:PASSWORD]@]HOST[:PORT]/DB``); errors never echo the password.

    A password is refused on the command line (``--database``): other users see options in ``ps``.
    """
    try:
        parts = urlsplit(text)
        port = parts.port or 5432
    except ValueError as exc:
        raise ServeError(f"{source}: not a database URI ({exc}); expected postgresql://USER@HOST:PORT/DB") from None
    scheme = parts.scheme.lower()
    if scheme not in ("postgresql", "postgres", "postgresql+asyncpg"):
        shown_scheme = f"{scheme}://" if scheme else "no scheme"
        raise ServeError(f"{source}: {shown_scheme} is not a PostgreSQL URI; expected postgresql://USER@HOST:PORT/DB "
                         f"(the embedded SQLite catalog needs no --database)")
    name = unquote(parts.path.lstrip("/"))
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    safe = Database(parts.hostname or "", port, name, user, None, source).uri
    if not parts.hostname:
        raise ServeError(f"{source} {safe}: no host; expected postgresql://USER@HOST:PORT/DB")
    if not name or "/" in name:
        raise ServeError(f"{source} {safe}: no database name; expected postgresql://USER@HOST:PORT/DB")
    if parts.query or parts.fragment:
        raise ServeError(f"{source} {safe}: connection parameters after '?' are not supported; use libpq's "
                         f"environment variables (PGSSLMODE, PGCONNECT_TIMEOUT, ...)")
    if password is not None and source == "--database":
        raise ServeError(f"--database {safe}: a password on the command line is visible to other users (ps); put it "
                         f"in $PGPASSWORD or ~/.pgpass, or the whole URI in ${DATABASE_ENV}")
    return Database(parts.hostname, port, name, user, password, source)


def _database_failure(db: Database, exc: BaseException) -> ServeError:
    """One line for a database that cannot be used, without the password (whatever the driver put in its text)."""
    import asyncpg

    if isinstance(exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError):
        why = (f"authentication failed for user {db.user or '(default)'} (password from "
               f"{'the URI' if db.password is not None else '$PGPASSWORD or ~/.pgpass'})")
    elif isinstance(exc, asyncpg.InvalidCatalogNameError):
        why = f"database {db.name!r} does not exist (create it: see the README, Facility catalog)"
    elif isinstance(exc, TimeoutError):
        why = f"no answer within {CONNECT_TIMEOUT_S:g} s"
    elif isinstance(exc, OSError):
        why = f"cannot connect ({exc.strerror or exc.__class__.__name__})"
    else:
        why = f"{exc.__class__.__name__}: {exc}"
    why = " ".join(why.split())
    if db.password:
        why = why.replace(db.password, "***")
    return ServeError(f"{db.source} {db.uri}: {why}")


async def _connect_once(db: Database) -> None:
    """Connect and disconnect: an unusable database becomes one line (``ServeError``) before anything else."""
    import asyncpg

    try:
        connection = await asyncpg.connect(host=db.host, port=db.port, database=db.name, user=db.user,
                                           password=db.password, timeout=CONNECT_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - every driver failure becomes one line
        raise _database_failure(db, exc) from None
    await connection.close()


async def _prepare_database(db: Database) -> bool:
    """Make the database a tiled catalog if it is not one; True if it was new."""
    from sqlalchemy.ext.asyncio import create_async_engine
    from tiled.alembic_utils import DatabaseUpgradeNeeded, UninitializedDatabase, check_database
    from tiled.catalog.core import ALL_REVISIONS, REQUIRED_REVISION, initialize_database

    from sqlalchemy.exc import SQLAlchemyError

    engine = create_async_engine(_catalog_uri(db))
    try:
        try:
            await check_database(engine, REQUIRED_REVISION, ALL_REVISIONS)
            return False
        except UninitializedDatabase:
            pass
        await initialize_database(engine)  # one transaction: nothing is left half-made if it fails
        return True
    except DatabaseUpgradeNeeded:
        raise ServeError(f"{db.source} {db.uri}: the catalog was made by another tiled version; upgrade it with "
                         f"`tiled catalog upgrade-database {db.uri}` (PGPASSWORD set)") from None
    except SQLAlchemyError as exc:  # e.g. a role that may not create tables: one line, not the SQL
        text = str(getattr(exc, "orig", None) or exc).split("\n")[0]
        text = re.sub(r"^<class '[\w.]+'>: ", "", text)
        if db.password:
            text = text.replace(db.password, "***")
        raise ServeError(f"{db.source} {db.uri}: cannot make the catalog's tables ({text}); the role needs to own "
                         f"the database (README, Facility catalog)") from None
    finally:
        await engine.dispose()


def prepare_database(db: Database) -> None:
    """Check that the database answers (else one line: ``ServeError``) and make it a tiled catalog if it is new.

    From here on the user and password reach tiled's drivers through this process's environment only
    (``Database.environment``): tiled's own init writes its URI into a temporary alembic.ini, so no URI carries it.
    """
    import asyncio

    from tiled.alembic_utils import stamp_head
    from tiled.catalog.alembic_constants import ALEMBIC_DIR, ALEMBIC_INI_TEMPLATE_PATH

    asyncio.run(_connect_once(db))
    os.environ.update(db.environment())
    if asyncio.run(_prepare_database(db)):
        stamp_head(ALEMBIC_INI_TEMPLATE_PATH, ALEMBIC_DIR, _catalog_uri(db))  # as `tiled catalog init` does


def _catalog_uri(db: Database) -> str:
    return f"postgresql+asyncpg://{db.uri.removeprefix('postgresql://')}"


def database_app(root: Path, db: Database, authentication: Any) -> Any:
    """A tiled app whose catalog and tables are in PostgreSQL (``prepare_database`` first) and whose arrays are
    under ``root/data``."""
    from tiled.catalog import from_uri as catalog_from_uri
    from tiled.server.app import build_app

    catalog_uri = _catalog_uri(db)
    (root / "data").mkdir(parents=True, exist_ok=True)
    # The table store gets the URI without user: tiled would otherwise send the password "None" (its
    # RemoteSQLStorage joins user and a missing password); libpq takes both from PGUSER/PGPASSWORD.
    table_uri = f"postgresql://{db.uri.split('@', 1)[1] if db.user else db.uri.removeprefix('postgresql://')}"
    adapter = catalog_from_uri(catalog_uri, writable_storage=[f"file://{root / 'data'}", table_uri])
    logging.getLogger("tiled.server.app").setLevel(logging.WARNING)
    return build_app(adapter, authentication=authentication, serialization_registry=_serialization_registry())


def _serialization_registry() -> Any:
    """tiled's default serializers plus BlueskyRun -> json-seq (``run.documents()``, replay), as the embedded catalog."""
    import copy

    from bluesky_tiled_plugins.exporters import json_seq_exporter
    from tiled.media_type_registration import default_serialization_registry

    registry = copy.deepcopy(default_serialization_registry)
    registry.register("BlueskyRun", "application/json-seq", json_seq_exporter)
    return registry


def _listen(host: str, port: int) -> socket.socket:
    """Bind and listen before announcing anything, so the message names the address really served."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise ServeError(f"--host {host}: not an address of this machine ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def serve(data_dir: str | os.PathLike[str] | None = None, *, host: str = "127.0.0.1", port: int = 8000,
          api_key: str | None = None, read_key: str | None = None, database: str | None = None) -> None:
    """Serve the catalog at ``host:port`` until interrupted (see the module doc): the embedded catalog under
    ``data_dir``, or with ``database`` (else ``$HOTSTAGE_CATALOG_DATABASE``) a PostgreSQL catalog whose arrays and
    keys file are under ``data_dir``."""
    import uvicorn

    from hotstage.acquisition.storage import URI_ENV, default_data_dir

    if not 1 <= port <= 65535:
        raise ServeError(f"--port {port}: not a TCP port (1–65535)")
    if database is None and os.environ.get(DATABASE_ENV):
        db = parse_database(os.environ[DATABASE_ENV], f"${DATABASE_ENV}")
    else:
        db = parse_database(database) if database is not None else None
    root = (Path(data_dir) if data_dir is not None else default_data_dir()).expanduser().resolve()
    if not is_loopback(host) and not (api_key or os.environ.get(WRITE_KEY_ENV)):  # before anything is written
        raise ServeError(f"--host {host} is reachable from other machines: give the read-write key explicitly "
                         f"(${WRITE_KEY_ENV} or --api-key) to serve there, or serve on 127.0.0.1")
    sock = _listen(host, port)  # a port in use is reported before a key is generated or the catalog opened
    try:
        if db is not None:
            prepare_database(db)  # an unusable database is reported before a key is generated
        keys = resolve_keys(root, api_key, read_key)
        app = gated_app(root, keys, db)
        url = f"http://{f'[{host}]' if ':' in host else host}:{sock.getsockname()[1]}"
        what = (f"the PostgreSQL catalog {db.uri} (arrays in {root / 'data'})" if db is not None
                else f"the embedded catalog {root}")
        print(f"hotstage: serving {what} at {url}\n"
              f"  keys only in the header 'Authorization: Apikey <key>'\n"
              f"  read-write key {shown(keys.write)}  {keys.write_source}\n"
              f"  read-only key  {shown(keys.read)}  {keys.read_source}\n"
              f"  clients: {URI_ENV}={url} {WRITE_KEY_ENV}=<key>", flush=True)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
