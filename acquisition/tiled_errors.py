"""Tiled misconfiguration at the command line's edge: one line naming the URI and what is wrong, exit status 2.

With `$HOTSTAGE_TILED_URI` set (and no `--data`), every command that opens the catalog talks to a Tiled server. A
wrong URI (not http/https, no host), a server that is down, a wrong or missing `$TILED_API_KEY`, or an address where
no Tiled server answers used to surface as a traceback (or a `ConnectError` after tiled's retry spinner) with exit
status 1. `check_server` opens the server once, before a session starts or a read command reads anything, with
tiled's retries switched off (a misconfiguration is not transient; a server that is merely slow still gets the
client's timeout), and turns each of those into `CatalogServerError`: a ValueError with ONE line, which
`hotstage.acquisition.cli` prints as `hotstage: error: …` with exit status 2. The key itself is never printed.

Once a session runs, a server that goes away is not an input error: the writer retries and the spool keeps every
document (README, Troubleshooting); this module is only the check at the start.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from hotstage.acquisition.storage import API_KEY_ENV, URI_ENV

__all__ = ["CatalogServerError", "check_server", "server_errors"]


class CatalogServerError(ValueError):
    """The Tiled server named by `$HOTSTAGE_TILED_URI` cannot be used (one line; exit status 2)."""


def check_server(uri: str | None = None, api_key: str | None = None) -> None:
    """Open the Tiled server at `uri` (default `$HOTSTAGE_TILED_URI`) once with `api_key` (default `$TILED_API_KEY`);
    CatalogServerError naming the URI and what is wrong unless it answers as a Tiled server that accepts the key."""
    import stamina
    from tiled.client import from_uri

    uri = uri or os.environ.get(URI_ENV, "")
    api_key = api_key or os.environ.get(API_KEY_ENV) or None
    where = f"${URI_ENV}={uri}"
    try:
        parts = urlsplit(uri)
        host = parts.hostname
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        raise CatalogServerError(f"{where}: not a valid URI ({exc})") from None
    if parts.scheme not in ("http", "https") or not host:
        raise CatalogServerError(f"{where}: not the http:// or https:// address of a Tiled server "
                                 "(e.g. http://127.0.0.1:8000)")
    was_active = stamina.is_active()
    stamina.set_active(False)  # one attempt: no "Retrying…" spinner for a misconfiguration
    try:
        with server_errors(uri, api_key):
            client = from_uri(uri, api_key=api_key)
            try:
                client.context.close()
            except Exception:  # noqa: BLE001 - closing a probe's connection pool is best effort
                pass
    finally:
        stamina.set_active(was_active)


@contextmanager
def server_errors(uri: str, api_key: str | None) -> Iterator[None]:
    """Turn the exceptions of opening a Tiled server into CatalogServerError (one line, the key never in it)."""
    import httpx
    from tiled.client.utils import ClientError

    where = f"${URI_ENV}={uri}"
    try:
        yield
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise CatalogServerError(f"{where}: not a valid http(s) URI ({_text(exc, api_key)})") from None
    except httpx.ConnectError as exc:
        raise CatalogServerError(f"{where}: cannot connect ({_text(exc, api_key)}): is the server running, and are "
                                 "the host, port and http/https right?") from None
    except httpx.TimeoutException as exc:
        raise CatalogServerError(f"{where}: no answer in time ({type(exc).__name__}): is the server running and "
                                 "reachable?") from None
    except ClientError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        raise CatalogServerError(f"{where}: {_status(status, api_key, _text(exc, api_key))}") from None
    except RuntimeError as exc:
        if "api key" not in str(exc).lower() and "api_key" not in str(exc).lower():
            raise
        raise CatalogServerError(f"{where}: the server requires an API key: set ${API_KEY_ENV}") from None
    except httpx.HTTPError as exc:
        raise CatalogServerError(f"{where}: {type(exc).__name__}: {_text(exc, api_key)}") from None
    except ValueError as exc:  # e.g. an answer that is not a Tiled server's JSON
        raise CatalogServerError(f"{where}: no Tiled server answers there ({_text(exc, api_key)})") from None


def _status(status: int | None, api_key: str | None, text: str) -> str:
    """What an HTTP error status means for the user."""
    if status == 401:
        return (f"the server refused the API key in ${API_KEY_ENV} (401 Unauthorized)" if api_key else
                f"the server requires an API key: set ${API_KEY_ENV} (401 Unauthorized)")
    if status == 403:
        return f"the API key in ${API_KEY_ENV} is not allowed to use this catalog (403 Forbidden)"
    if status == 404:
        return "no Tiled server at this address (404 Not Found): check the host, port and path"
    return f"the server answered {status if status is not None else 'with an error'} ({text})"


def _text(exc: BaseException, api_key: str | None) -> str:
    """The exception's message on one line, with the key (should it appear) masked."""
    text = " ".join(str(exc).split())
    if api_key:
        text = text.replace(api_key, "<key>")
    return text[:300]
