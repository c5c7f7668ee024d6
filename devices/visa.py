"""VISA transport for hotstage instruments: opening resources, locked query/write, binary blocks.

Every instrument in ``devices`` talks through one :class:`VisaInstrument`, a thin wrapper around a
pyvisa ``MessageBasedResource`` that

* opens the resource with a chosen pyvisa backend: ``"@py"`` (pyvisa-py: ``TCPIP0::host::port::SOCKET``
  raw sockets and ``ASRL...`` serial ports), ``"<file.yaml>@sim"`` (pyvisa-sim, unit tests) or ``None``
  (pyvisa's default, i.e. an installed vendor VISA such as NI-VISA or Keysight IO Libraries);
* serialises every exchange with one re-entrant lock per VISA resource string, so that a status watcher
  thread and the RunEngine's reads never interleave a write and someone else's reply on the same wire;
* turns every transport failure into an :class:`InstrumentError` whose message names the instrument,
  the command and the resource, so that a failed run says *which* cable to look at;
* reads IEEE-488.2 definite-length blocks (``#<n><len><bytes>``, IEEE 488.2-1992 §8.7.9) of
  little-endian float64 with ``query_binary_values(datatype='d', is_big_endian=False,
  container=numpy.ndarray)`` — pyvisa keeps reading until the announced length (plus the read
  terminator) has arrived, so data bytes equal to LF inside the block are harmless.

Transient faults and the retry policy (bounded exponential backoff; see :class:`RetryPolicy`):

* Every *query* is idempotent and is retried: at most ``attempts`` tries (default 3), waiting
  ``backoff_s`` × ``factor``ⁿ (0.05 s, 0.1 s, … capped at ``max_backoff_s``) between tries and never
  starting a new try after ``budget_s`` wall seconds. What happens before a retry depends on the failure:
  a **dropped connection** (reset, broken pipe, VISA connection lost, a closed session) or a **timeout**
  (no reply, or a reply so slow it would arrive after we gave up) → the VISA session is closed and reopened
  (a fresh socket cannot deliver a stale late reply); a **garbage or truncated reply** (the parser rejects
  it, or a binary block header/length is wrong) → the input buffer is drained and the query re-asked (a
  second bad reply in a row also reconnects).
* *Writes* are retried only when the command is idempotent (``idempotent(command)``, given by the device:
  absolute settings such as ``SETP 1,<K>``, ``RAMP``, ``RANGE``, ``CONF:INT``, ``ABOR``). A write has no reply,
  so it is confirmed by the next successful reply on the same connection (messages are executed in order).
  Writes sent since the last good reply are remembered; when the connection has to be reopened they are
  re-sent first (idempotent ones) — a non-idempotent one among them (``INIT``) raises
  :class:`InstrumentInDoubtError`, and the device decides (``hotstage.devices.spectrometers``: ask
  ``STAT:OPER:COND?``, ``ABOR`` + ``INIT`` only when no acquisition is running).
* Destructive queries (``SYST:ERR?``, ``*ESR?``) are asked once (``retry=False``).
* When the tries are used up the error raised names the instrument, the command, the resource, the number
  of tries and the last failure: :class:`InstrumentTimeoutError`, :class:`InstrumentConnectionError` or
  :class:`InstrumentReplyError`.

Before each exchange on a raw socket the driver checks, without blocking, that the peer has not closed
the connection and that no stale bytes wait in the receive buffer (they are drained); pyvisa-py's own
``clear()`` would spin forever on a socket the peer has closed, so it is never used on sockets.

Raw-socket instruments need an explicit read terminator (there is no END line on a socket); the
terminators are passed by the device modules (CR LF for the Lake Shore 336, LF for SCPI instruments).
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyvisa
from pyvisa import constants, rname
from ophyd import Signal, SignalRO
from ophyd.status import Status
from pyvisa.errors import VisaIOError

__all__ = [
    "InstrumentError",
    "InstrumentConnectionError",
    "InstrumentIdentityError",
    "InstrumentReplyError",
    "InstrumentTimeoutError",
    "InstrumentInDoubtError",
    "NotConnectedError",
    "RetryPolicy",
    "VisaInstrument",
    "open_instrument",
    "resource_manager",
    "resource_lock",
    "VisaSignal",
    "VisaSignalRO",
]

#: Default I/O timeout (wall seconds) of a single query: generous for a 115 kB block on a LAN,
#: tiny compared with a run; longer waits (``*OPC?`` during an integration) pass their own timeout.
DEFAULT_TIMEOUT_S = 5.0


class InstrumentError(RuntimeError):
    """An instrument exchange failed; the message names instrument, command and resource."""

    def __init__(self, message: str, *, instrument: str = "", command: str = "", resource: str = ""):
        super().__init__(message)
        self.instrument = instrument
        self.command = command
        self.resource = resource


class InstrumentConnectionError(InstrumentError):
    """The VISA resource could not be opened (missing, refused, wrong backend)."""


class InstrumentIdentityError(InstrumentError):
    """``*IDN?`` answered, but not with the model the device driver was written for."""


class InstrumentReplyError(InstrumentError):
    """The instrument replied with something the driver cannot parse or reported an error."""


class InstrumentTimeoutError(InstrumentError):
    """The instrument did not answer within the I/O timeout (after the allowed retries)."""


class InstrumentInDoubtError(InstrumentError):
    """The connection was lost after a non-idempotent command was sent: whether it executed is unknown."""


class NotConnectedError(InstrumentConnectionError):
    """A device was used before its ``connect()`` (constructing a device opens nothing)."""


def not_connected(device: Any) -> NotConnectedError:
    """The error for using ``device`` before ``connect()``: names the device and its resource."""
    name = getattr(device, "name", None) or type(device).__name__
    resource = getattr(device, "resource", "") or ""
    where = f" ({resource})" if resource else ""
    return NotConnectedError(
        f"{name}{where} is not connected: call connect() first (or connect(mock=True) for an in-memory instrument)",
        instrument=name,
        resource=resource,
    )


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff for idempotent exchanges (see the module doc)."""

    attempts: int = 3
    """Tries of one exchange, the first included."""
    backoff_s: float = 0.05
    """Wait before the second try (wall s); multiplied by ``factor`` for each further try."""
    factor: float = 2.0
    max_backoff_s: float = 0.5
    budget_s: float = 20.0
    """No new try starts later than this many wall seconds after the first one."""

    def delay(self, attempt: int) -> float:
        """Wait before try number ``attempt`` (1 = the first retry)."""
        return min(self.max_backoff_s, self.backoff_s * self.factor ** max(0, attempt - 1))


NO_RETRY = RetryPolicy(attempts=1)
DEFAULT_RETRY = RetryPolicy()


class _Garbage(Exception):
    """Internal: a reply that arrived complete but does not parse."""


def _kind(exc: BaseException) -> str:
    """Classify a failure: 'timeout', 'link' (reconnect) or 'garbage' (drain and re-ask)."""
    if isinstance(exc, VisaIOError):
        return "timeout" if exc.error_code == constants.StatusCode.error_timeout else "link"
    if isinstance(exc, (OSError, pyvisa.errors.InvalidSession)):
        return "link"
    return "garbage"


_RM_LOCK = threading.Lock()
_RESOURCE_MANAGERS: dict[str, pyvisa.ResourceManager] = {}
_RESOURCE_LOCKS: dict[str, threading.RLock] = {}


def resource_manager(backend: str | None = None) -> pyvisa.ResourceManager:
    """Return the (cached) pyvisa ResourceManager for a backend string ("@py", "x.yaml@sim", None).

    pyvisa hands every caller in the process the same manager per backend, so other code (a user's
    script, a test) may close it under us: a closed one is replaced rather than used.
    """
    key = backend or ""
    with _RM_LOCK:
        rm = _RESOURCE_MANAGERS.get(key)
        if rm is not None and not _is_open(rm):
            rm = None
        if rm is None:
            try:
                rm = pyvisa.ResourceManager(backend) if backend else pyvisa.ResourceManager()
            except Exception as exc:  # pyvisa raises OSError/ValueError/… depending on the backend
                raise InstrumentConnectionError(
                    f"cannot create a pyvisa ResourceManager for backend {backend!r}: {exc}"
                ) from exc
            _RESOURCE_MANAGERS[key] = rm
        return rm


def _is_open(rm: pyvisa.ResourceManager) -> bool:
    """True while the manager's VISA session is usable (pyvisa raises InvalidSession once it is closed)."""
    try:
        rm.session  # noqa: B018 - the property access is the check
    except pyvisa.errors.InvalidSession:
        return False
    return True


def _disable_nagle(res: pyvisa.resources.MessageBasedResource) -> None:
    """Send each command at once (TCP_NODELAY) on a raw-socket resource.

    With Nagle's algorithm on, a command written right after another waits for the peer's delayed ACK,
    ~40 ms per exchange on Linux. pyvisa-py (0.8) does not implement VI_ATTR_TCPIP_NODELAY for SOCKET
    resources, so the option is set on its socket directly; other backends get the VISA attribute.
    """
    try:
        res.set_visa_attribute(constants.ResourceAttribute.tcpip_nodelay, constants.VI_TRUE)
        return
    except Exception:  # noqa: BLE001 - unsupported by this backend: fall through to the socket
        pass
    session = getattr(res.visalib, "sessions", {}).get(res.session)
    sock = getattr(session, "interface", None)
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def resource_lock(resource: str) -> threading.RLock:
    """Return the one re-entrant lock shared by everything that talks to this VISA resource."""
    with _RM_LOCK:
        lock = _RESOURCE_LOCKS.get(resource)
        if lock is None:
            lock = _RESOURCE_LOCKS[resource] = threading.RLock()
        return lock


class VisaInstrument:
    """A pyvisa message-based resource with a per-resource lock and instrument-named errors."""

    def __init__(
        self,
        resource: str,
        *,
        instrument: str,
        backend: str | None = "@py",
        read_termination: str = "\n",
        write_termination: str = "\n",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        serial: Mapping[str, Any] | None = None,
        retry: RetryPolicy | None = None,
        idempotent: Callable[[str], bool] | None = None,
        open_timeout_s: float | None = None,
    ) -> None:
        """Open ``resource`` with ``backend``; ``serial`` holds pyvisa ASRL attributes (baud_rate, …).

        ``retry`` is the policy for transient failures (default :data:`DEFAULT_RETRY`); ``idempotent(cmd)``
        says whether a write may be re-sent (default: none may); ``open_timeout_s`` bounds opening the session
        (wall s; default: the backend's).
        """
        self.resource_name = resource
        self.instrument = instrument
        self.backend = backend
        self.lock = resource_lock(resource)
        self._timeout_s = float(timeout_s)
        self._read_termination = read_termination
        self._write_termination = write_termination
        self._serial = dict(serial) if serial else None
        self._open_timeout_ms = None if open_timeout_s is None else max(1, int(float(open_timeout_s) * 1000.0))
        self.retry = retry or DEFAULT_RETRY
        self.idempotent: Callable[[str], bool] = idempotent or (lambda command: False)
        self._unconfirmed: list[str] = []
        self.reconnects = 0
        """How many times the session was reopened after a failure (diagnostics, tests)."""
        self.retries = 0
        """How many exchanges were re-tried (diagnostics, tests)."""
        rm = resource_manager(backend)
        if backend and backend.endswith("@sim"):
            # pyvisa-sim does not raise for an unknown resource (it hands back a dead session): check first.
            known = {rname.to_canonical_name(r) for r in rm.list_resources("?*")}
            if rname.to_canonical_name(resource) not in known:
                raise InstrumentConnectionError(
                    f"{instrument}: VISA resource {resource!r} not found in {backend!r} "
                    f"(defined: {', '.join(sorted(known))})",
                    instrument=instrument,
                    resource=resource,
                )
        self._res = self._open()

    def _open(self) -> pyvisa.resources.MessageBasedResource:
        """Open and configure the VISA session (terminators, timeout, serial settings, TCP_NODELAY)."""
        resource, instrument, backend = self.resource_name, self.instrument, self.backend
        rm = resource_manager(backend)
        try:
            if self._open_timeout_ms is None:
                res = rm.open_resource(resource)
            else:
                res = rm.open_resource(resource, open_timeout=self._open_timeout_ms)
        except Exception as exc:
            raise InstrumentConnectionError(
                f"{instrument}: cannot open VISA resource {resource!r} with backend "
                f"{backend or 'default'!r}: {exc}",
                instrument=instrument,
                resource=resource,
            ) from exc
        if not isinstance(res, pyvisa.resources.MessageBasedResource):
            res.close()
            raise InstrumentConnectionError(
                f"{instrument}: VISA resource {resource!r} is not message based",
                instrument=instrument,
                resource=resource,
            )
        try:
            res.read_termination = self._read_termination
            res.write_termination = self._write_termination
            res.timeout = self._timeout_s * 1000.0
            if self._serial and res.interface_type == constants.InterfaceType.asrl:
                for attr, value in self._serial.items():
                    setattr(res, attr, value)
            if resource.upper().endswith("::SOCKET"):
                _disable_nagle(res)
        except Exception as exc:
            try:
                res.close()
            except Exception:
                pass
            raise InstrumentConnectionError(
                f"{instrument}: cannot configure VISA resource {resource!r}: {exc}",
                instrument=instrument,
                resource=resource,
            ) from exc
        return res

    def reconnect(self) -> None:
        """Close and reopen the VISA session (a fresh socket: no stale replies, a dropped link restored)."""
        with self.lock:
            try:
                self._res.close()
            except Exception:
                pass
            self.reconnects += 1
            log.warning("%s: reopening %s", self.instrument, self.resource_name)
            self._res = self._open()

    def _socket(self) -> socket.socket | None:
        """The raw socket of a pyvisa-py TCPIP SOCKET session (None for other backends)."""
        try:
            session = self._res.visalib.sessions.get(self._res.session)
        except Exception:
            return None
        sock = getattr(session, "interface", None)
        return sock if isinstance(sock, socket.socket) else None

    def _drain(self) -> bool:
        """Discard bytes waiting to be read, without blocking; False if the peer has closed the connection."""
        sock = self._socket()
        if sock is None:
            try:
                self._res.flush(constants.BufferOperation.discard_read_buffer)
            except Exception:
                pass
            return True
        session = self._res.visalib.sessions.get(self._res.session)
        pending = getattr(session, "_pending_buffer", None)
        if pending:
            log.warning("%s: discarding %d stale bytes", self.instrument, len(pending))
            pending.clear()
        for _ in range(1024):  # at most ~4 MB of junk
            try:
                ready, _, _ = select.select([sock], [], [], 0)
            except (OSError, ValueError):
                return False
            if not ready:
                return True
            try:
                chunk = sock.recv(4096)
            except OSError:
                return False
            if not chunk:
                return False
            log.warning("%s: discarding %d stale bytes", self.instrument, len(chunk))
        return True

    def _ensure_link(self) -> None:
        """Before an exchange on a raw socket: drain stale bytes; reopen (re-sending unconfirmed writes) if closed."""
        if self._socket() is not None and not self._drain():
            self.reconnect()
            self._replay()

    def _replay(self) -> None:
        """Re-send the writes not yet confirmed by a reply; InstrumentInDoubtError for a non-idempotent one."""
        pending, self._unconfirmed = self._unconfirmed, []
        for command in pending:
            if not self.idempotent(command):
                raise InstrumentInDoubtError(
                    f"{self.instrument}: connection to {self.resource_name} was lost after {command!r} was sent; "
                    "whether it executed is unknown and it is not safe to repeat blindly",
                    instrument=self.instrument,
                    command=command,
                    resource=self.resource_name,
                )
            self._res.write(command)
            self._unconfirmed.append(command)

    # -- helpers ----------------------------------------------------------------------------------
    def _error(self, command: str, exc: BaseException, cls: type[InstrumentError] = InstrumentError) -> InstrumentError:
        """Build an error naming instrument, command and resource."""
        timed_out = isinstance(exc, VisaIOError) and exc.error_code == constants.StatusCode.error_timeout
        what = "timed out" if timed_out else "failed"
        if cls is InstrumentError and isinstance(exc, OSError):  # refused / reset / unreachable
            cls = InstrumentConnectionError
        return cls(
            f"{self.instrument}: command {command!r} on {self.resource_name} {what}: {exc}",
            instrument=self.instrument,
            command=command,
            resource=self.resource_name,
        )

    @contextmanager
    def _timeout(self, timeout_s: float | None) -> Iterator[None]:
        """Temporarily use another I/O timeout (wall seconds) for one exchange."""
        if timeout_s is None:
            yield
            return
        old = self._res.timeout
        self._res.timeout = max(float(timeout_s), 0.001) * 1000.0
        try:
            yield
        finally:
            self._res.timeout = old

    # -- public API -------------------------------------------------------------------------------
    @property
    def timeout_s(self) -> float:
        """Default I/O timeout in wall seconds."""
        return self._timeout_s

    @property
    def resource(self) -> pyvisa.resources.MessageBasedResource:
        """The underlying pyvisa resource (take ``lock`` before using it directly)."""
        return self._res

    def set_timeout(self, timeout_s: float) -> None:
        """Change the default I/O timeout (wall seconds)."""
        with self.lock:
            self._timeout_s = float(timeout_s)
            self._res.timeout = self._timeout_s * 1000.0

    def _final_error(self, command: str, exc: BaseException, tries: int, started: float) -> InstrumentError:
        """The error raised once retrying is over: names instrument, command, resource, tries, last failure."""
        if isinstance(exc, InstrumentError):  # raised by a parser (e.g. identity): already names everything
            if tries > 1:
                exc.args = (f"{exc} ({tries} tries)",)
            return exc
        if isinstance(exc, _Garbage):
            cls: type[InstrumentError] = InstrumentReplyError
            what = f"gave an unusable reply: {exc}"
        elif _kind(exc) == "timeout":
            cls, what = InstrumentTimeoutError, f"timed out: {exc}"
        else:
            cls, what = InstrumentConnectionError, f"failed, connection lost: {type(exc).__name__}: {exc}"
        return cls(
            f"{self.instrument}: command {command!r} on {self.resource_name} {what} "
            f"({tries} tries in {time.monotonic() - started:.2f} s)",
            instrument=self.instrument,
            command=command,
            resource=self.resource_name,
        )

    def _exchange(
        self, command: str, do: Callable[[], Any], policy: RetryPolicy, timeout_s: float | None, *, reply: bool = True
    ) -> Any:
        """Run one exchange ``do()`` under the lock with the retry policy (see the module doc).

        ``reply``: the exchange read a reply, which confirms every write sent before it on this connection.
        """
        with self.lock:
            started = time.monotonic()
            garbage_in_a_row = 0
            tries = 0
            while True:
                tries += 1
                try:
                    self._ensure_link()
                    with self._timeout(timeout_s):
                        result = do()
                    if reply:
                        self._unconfirmed.clear()  # a good reply confirms every write sent before it
                    return result
                except InstrumentInDoubtError:
                    raise
                except Exception as exc:  # noqa: BLE001 - classified below
                    kind = "garbage" if isinstance(exc, (_Garbage, InstrumentError)) else _kind(exc)
                    last = exc
                if tries >= policy.attempts or time.monotonic() - started > policy.budget_s:
                    raise self._final_error(command, last, tries, started) from last
                self.retries += 1
                log.warning("%s: %r on %s: %s (%s); retry %d", self.instrument, command, self.resource_name,
                            type(last).__name__, kind, tries)
                time.sleep(policy.delay(tries))
                try:
                    if kind == "garbage":
                        garbage_in_a_row += 1
                        if garbage_in_a_row >= 2 or not self._drain():
                            self.reconnect()
                            self._replay()
                    else:
                        garbage_in_a_row = 0
                        self.reconnect()
                        self._replay()
                except InstrumentInDoubtError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the next try (or the final error) reports it
                    last = exc
                    if tries + 1 >= policy.attempts:
                        raise self._final_error(command, last, tries, started) from last

    def write(self, command: str, *, retry: bool | None = None) -> None:
        """Send one command (no reply expected); re-sent after a failure only if idempotent (or ``retry``)."""
        again = self.idempotent(command) if retry is None else retry
        policy = self.retry if again else NO_RETRY

        def do() -> None:
            self._res.write(command)

        with self.lock:
            self._exchange(command, do, policy, None, reply=False)
            self._unconfirmed.append(command)

    def query(
        self,
        command: str,
        *,
        timeout_s: float | None = None,
        parse: Callable[[str], Any] | None = None,
        retry: bool = True,
    ) -> Any:
        """Send a query and return the reply stripped of whitespace, or ``parse(reply)``.

        A reply ``parse`` rejects (any exception) counts as garbage: drained and re-asked. ``retry=False``
        for destructive queries (``SYST:ERR?``).
        """

        def do() -> Any:
            reply = self._res.query(command).strip()
            if parse is None:
                return reply
            try:
                return parse(reply)
            except InstrumentError:
                raise
            except Exception as exc:
                raise _Garbage(f"reply {reply[:80]!r} does not parse: {exc}") from exc

        return self._exchange(command, do, self.retry if retry else NO_RETRY, timeout_s)

    def query_float(self, command: str, *, timeout_s: float | None = None) -> float:
        """Send a query whose reply is one number (``+0295.150``) and return it as float."""
        return self.query(command, timeout_s=timeout_s, parse=float)

    def query_block(
        self, command: str, *, timeout_s: float | None = None, check: Callable[[np.ndarray], None] | None = None
    ) -> np.ndarray:
        """Query an IEEE-488.2 definite-length block of little-endian float64 and return it.

        A malformed block (bad header, fewer bytes than announced → timeout) is retried as any query;
        ``check(values)`` may raise to reject a block (e.g. wrong length), which also counts as garbage.
        """

        def do() -> np.ndarray:
            try:
                values = self._res.query_binary_values(
                    command, datatype="d", is_big_endian=False, container=np.ndarray
                )
            except (ValueError, TypeError, IndexError) as exc:  # pyvisa's block parser
                raise _Garbage(f"malformed binary block: {exc}") from exc
            out = np.asarray(values, dtype=np.float64)
            if check is not None:
                try:
                    check(out)
                except Exception as exc:
                    raise _Garbage(str(exc)) from exc
            return out

        return self._exchange(command, do, self.retry, timeout_s)

    def clear_input(self) -> None:
        """Discard any stale bytes waiting in the receive buffer (best effort, never blocks)."""
        with self.lock:
            try:
                if not self._drain():
                    self.reconnect()
            except Exception:
                pass

    def close(self) -> None:
        """Close the VISA session (the ResourceManager stays cached for other devices)."""
        with self.lock:
            try:
                self._res.close()
            except Exception:
                pass

    def __repr__(self) -> str:
        return f"VisaInstrument({self.resource_name!r}, instrument={self.instrument!r}, backend={self.backend!r})"


def open_instrument(
    resource: str,
    *,
    instrument: str,
    backend: str | None = "@py",
    read_termination: str = "\n",
    write_termination: str = "\n",
    timeout_s: float = DEFAULT_TIMEOUT_S,
    serial: Mapping[str, Any] | None = None,
    retry: RetryPolicy | None = None,
    idempotent: Callable[[str], bool] | None = None,
    open_timeout_s: float | None = None,
) -> VisaInstrument:
    """Open a VISA resource for one instrument (see :class:`VisaInstrument`)."""
    return VisaInstrument(
        resource,
        instrument=instrument,
        backend=backend,
        read_termination=read_termination,
        write_termination=write_termination,
        timeout_s=timeout_s,
        serial=serial,
        retry=retry,
        idempotent=idempotent,
        open_timeout_s=open_timeout_s,
    )


# ------------------------------------------------------------------------------------------------
# ophyd signals backed by VISA queries (not EPICS): get() asks the instrument, put() writes to it.
# ------------------------------------------------------------------------------------------------
CommandSpec = str | Callable[[Any], str]


def _render(spec: CommandSpec, owner: Any, value: Any = None) -> str:
    """Render a command: a format string (``{dev}`` = owner, ``{value}``) or a callable."""
    if callable(spec):
        return spec(owner) if value is None else spec(owner, value)
    return spec.format(dev=owner, value=value)


class VisaSignalRO(SignalRO):
    """Read-only ophyd signal whose get() sends ``query`` to the parent's VISA instrument.

    ``query`` is a format string (``"KRDG? {dev.control_input}"``) or a callable of the parent device;
    ``parse`` turns the stripped reply into the user value (e.g. Kelvin -> °C). The parent device must
    expose its :class:`VisaInstrument` as ``_visa``.
    """

    def __init__(
        self,
        *,
        query: CommandSpec,
        parse: Callable[[str], Any] = float,
        units: str | None = None,
        precision: int | None = None,
        **kwargs: Any,
    ) -> None:
        """Store the query/parse callables and describe() metadata."""
        super().__init__(**kwargs)
        self._query = query
        self._parse = parse
        self._units = units
        self._precision = precision
        self._metadata.update(units=units, precision=precision)

    @property
    def _visa(self) -> VisaInstrument:
        """The parent's instrument (raises NotConnectedError, naming the device, before its connect())."""
        visa = getattr(self.parent, "_visa", None)
        if visa is None:
            raise not_connected(self.parent if self.parent is not None else self)
        return visa

    @property
    def connected(self) -> bool:
        """True once the parent device is connected (its ``connect()`` opened the instrument) and not destroyed."""
        return getattr(self.parent, "_visa", None) is not None and not self._destroyed

    @property
    def source_name(self) -> str:
        """'visa://<resource>/<query>' so that the descriptor says where the number came from."""
        visa = getattr(self.parent, "_visa", None)
        res = visa.resource_name if visa is not None else "?"
        try:
            cmd = _render(self._query, self.parent)
        except Exception:
            cmd = "?"
        return f"visa://{res}/{cmd}"

    def _cache(self, value: Any) -> None:
        """Store a fresh value as the signal's readback and run value subscriptions."""
        Signal.put(self, value, force=True)

    @property
    def command(self) -> str:
        """The query this signal sends (rendered for its parent, e.g. ``KRDG? A``)."""
        return _render(self._query, self.parent)

    def parse_reply(self, reply: str) -> Any:
        """Parse one stripped reply to this signal's query and keep it as the readback."""
        value = self._parse(reply)
        self._cache(value)
        return value

    def get(self, **kwargs: Any) -> Any:
        """Query the instrument now and return the parsed value."""
        cmd = self.command
        visa = self._visa
        try:
            value = visa.query(cmd, parse=self._parse)
        except InstrumentReplyError as exc:
            exc.args = (f"{exc} [signal {self.name}]",)
            raise
        self._cache(value)
        return value

    def describe(self) -> dict[str, dict[str, Any]]:
        """Signal.describe() plus units/precision when known."""
        desc = super().describe()
        if self._units is not None:
            desc[self.name]["units"] = self._units
        if self._precision is not None:
            desc[self.name]["precision"] = self._precision
        return desc


class VisaSignal(VisaSignalRO):
    """Read-write VISA signal: put() sends ``write`` (format string with ``{value}`` or callable)."""

    def __init__(self, *, write: CommandSpec, **kwargs: Any) -> None:
        """Store the write command spec; the rest as :class:`VisaSignalRO`."""
        super().__init__(**kwargs)
        self._write = write
        self._metadata.update(write_access=True)

    def put(self, value: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Write the value to the instrument, then cache it (no read-back round trip)."""
        cmd = _render(self._write, self.parent, value)
        self._visa.write(cmd)
        self._cache(value)

    def set(self, value: Any, **kwargs: Any):  # type: ignore[override]
        """Write synchronously and return a finished Status (instrument writes are immediate)."""
        status = Status(obj=self)
        try:
            self.put(value)
        except Exception as exc:
            status.set_exception(exc)
        else:
            status.set_finished()
        return status
