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

Raw-socket instruments need an explicit read terminator (there is no END line on a socket); the
terminators are passed by the device modules (CR LF for the Lake Shore 336, LF for SCPI instruments).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
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
    ) -> None:
        """Open ``resource`` with ``backend``; ``serial`` holds pyvisa ASRL attributes (baud_rate, …)."""
        self.resource_name = resource
        self.instrument = instrument
        self.backend = backend
        self.lock = resource_lock(resource)
        self._timeout_s = float(timeout_s)
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
        try:
            res = rm.open_resource(resource)
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
        self._res = res
        try:
            res.read_termination = read_termination
            res.write_termination = write_termination
            res.timeout = self._timeout_s * 1000.0
            if serial and res.interface_type == constants.InterfaceType.asrl:
                for attr, value in serial.items():
                    setattr(res, attr, value)
            if resource.upper().endswith("::SOCKET"):
                _disable_nagle(res)
        except Exception as exc:
            self.close()
            raise InstrumentConnectionError(
                f"{instrument}: cannot configure VISA resource {resource!r}: {exc}",
                instrument=instrument,
                resource=resource,
            ) from exc

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

    def write(self, command: str) -> None:
        """Send one command (no reply expected)."""
        with self.lock:
            try:
                self._res.write(command)
            except Exception as exc:
                raise self._error(command, exc) from exc

    def query(self, command: str, *, timeout_s: float | None = None) -> str:
        """Send a query and return the reply stripped of whitespace."""
        with self.lock, self._timeout(timeout_s):
            try:
                return self._res.query(command).strip()
            except Exception as exc:
                raise self._error(command, exc) from exc

    def query_float(self, command: str, *, timeout_s: float | None = None) -> float:
        """Send a query whose reply is one number (``+0295.150``) and return it as float."""
        reply = self.query(command, timeout_s=timeout_s)
        try:
            return float(reply)
        except ValueError as exc:
            raise InstrumentReplyError(
                f"{self.instrument}: reply {reply!r} to {command!r} on {self.resource_name} is not a number",
                instrument=self.instrument,
                command=command,
                resource=self.resource_name,
            ) from exc

    def query_block(self, command: str, *, timeout_s: float | None = None) -> np.ndarray:
        """Query an IEEE-488.2 definite-length block of little-endian float64 and return it."""
        with self.lock, self._timeout(timeout_s):
            try:
                values = self._res.query_binary_values(
                    command, datatype="d", is_big_endian=False, container=np.ndarray
                )
            except Exception as exc:
                raise self._error(command, exc) from exc
        return np.asarray(values, dtype=np.float64)

    def clear_input(self) -> None:
        """Discard any stale bytes waiting in the receive buffer (best effort)."""
        with self.lock:
            try:
                self._res.flush(constants.BufferOperation.discard_read_buffer)
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
        """The parent's instrument (raises a clear error when not connected)."""
        visa = getattr(self.parent, "_visa", None)
        if visa is None:
            raise InstrumentConnectionError(f"{self.name}: parent device has no open VISA instrument")
        return visa

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

    def get(self, **kwargs: Any) -> Any:
        """Query the instrument now and return the parsed value."""
        cmd = _render(self._query, self.parent)
        reply = self._visa.query(cmd)
        try:
            value = self._parse(reply)
        except Exception as exc:
            raise InstrumentReplyError(
                f"{self._visa.instrument}: cannot parse reply {reply!r} to {cmd!r} on "
                f"{self._visa.resource_name} for signal {self.name}: {exc}",
                instrument=self._visa.instrument,
                command=cmd,
                resource=self._visa.resource_name,
            ) from exc
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
