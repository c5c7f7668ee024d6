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
from urllib.parse import parse_qsl

from hotstage.acquisition.datadir import is_read_request

__all__ = ["KeyGate", "ServeError", "ServerKeys", "is_loopback", "resolve_keys", "serve"]

logger = logging.getLogger(__name__)

WRITE_KEY_ENV = "TILED_API_KEY"
READ_KEY_ENV = "HOTSTAGE_READ_API_KEY"
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


def gated_app(root: Path, keys: ServerKeys) -> Any:
    """The embedded catalog's tiled app (internal random key, damage answered with 503) behind ``KeyGate``."""
    from tiled.config import Authentication

    from hotstage.acquisition.storage import embedded_app

    internal = secrets.token_hex(32)
    app = embedded_app(root, Authentication(single_user_api_key=internal), allow_damaged=True, raise_errors=False)
    return KeyGate(app, write_key=keys.write, read_key=keys.read, internal_key=internal)


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
          api_key: str | None = None, read_key: str | None = None) -> None:
    """Serve the embedded catalog under ``data_dir`` at ``host:port`` until interrupted (see the module doc)."""
    import uvicorn

    from hotstage.acquisition.storage import URI_ENV, default_data_dir

    if not 1 <= port <= 65535:
        raise ServeError(f"--port {port}: not a TCP port (1–65535)")
    root = (Path(data_dir) if data_dir is not None else default_data_dir()).expanduser().resolve()
    if not is_loopback(host) and not (api_key or os.environ.get(WRITE_KEY_ENV)):  # before anything is written
        raise ServeError(f"--host {host} is reachable from other machines: give the read-write key explicitly "
                         f"(${WRITE_KEY_ENV} or --api-key) to serve there, or serve on 127.0.0.1")
    sock = _listen(host, port)  # a port in use is reported before a key is generated or the catalog opened
    try:
        keys = resolve_keys(root, api_key, read_key)
        app = gated_app(root, keys)
        url = f"http://{f'[{host}]' if ':' in host else host}:{sock.getsockname()[1]}"
        print(f"hotstage: serving the embedded catalog {root} at {url}\n"
              f"  keys only in the header 'Authorization: Apikey <key>'\n"
              f"  read-write key {shown(keys.write)}  {keys.write_source}\n"
              f"  read-only key  {shown(keys.read)}  {keys.read_source}\n"
              f"  clients: {URI_ENV}={url} {WRITE_KEY_ENV}=<key>", flush=True)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
