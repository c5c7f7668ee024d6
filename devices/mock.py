"""In-memory stand-ins for the instruments: ``device.connect(mock=True)`` talks to one of these instead of VISA.

They answer the same commands as the real instruments, in the same formats, so a device definition can be
imported, constructed, connected, described, read, moved and triggered in tests (or in a notebook) without a
server, a cable or a VISA library. They are deliberately simple and instantaneous:

* :class:`MockLakeShore336`: a Model 336 whose control input reads the setpoint while the heater range is not 0
  (the furnace "arrives" at once) and keeps its last value while the heater is off; the sample input reads
  0.5 K below it. Ramping is recorded but never in progress (``RAMPST?`` → 0).
* :class:`MockScpiArray`: a SCPI array instrument whose ``*OPC?`` completes at once; ``FETC:DATA?`` returns a
  smooth peak on the axis; the wavelength (XRD) is Cu Kα1.

Unknown commands raise :class:`~hotstage.devices.visa.InstrumentReplyError` naming the command, as a real
instrument's error queue would, so a driver typo fails a mock test too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from .visa import DEFAULT_RETRY, DEFAULT_TIMEOUT_S, InstrumentReplyError

__all__ = ["MockInstrument", "MockLakeShore336", "MockScpiArray"]

Reply = str | np.ndarray | None


class MockInstrument:
    """The :class:`~hotstage.devices.visa.VisaInstrument` API (query/write/query_block/lock/close) over a handler.

    ``handler(command)`` returns the reply (a string, an array for binary blocks) or None for a command.
    Every message is appended to ``received`` (tests check the wire sequence). ``;`` joins several messages
    in one, as the Model 336 allows: each part is handled and the replies are joined with ``;``.
    """

    backend = "mock"

    def __init__(self, resource: str, *, instrument: str, handler: Callable[[str], Reply]) -> None:
        """Answer ``resource``'s messages with ``handler``."""
        self.resource_name = resource
        self.instrument = instrument
        self.handler = handler
        self.lock = threading.RLock()
        self.retry = DEFAULT_RETRY
        self.reconnects = 0
        self.retries = 0
        self.received: list[str] = []
        self.closed = False
        self._timeout_s = DEFAULT_TIMEOUT_S

    def _handle(self, message: str) -> Reply:
        """One message, possibly compound (``a;b``)."""
        if self.closed:
            raise InstrumentReplyError(f"{self.instrument}: mock session of {self.resource_name} is closed",
                                       instrument=self.instrument, command=message, resource=self.resource_name)
        with self.lock:
            self.received.append(message)
            parts = [part.strip() for part in message.split(";")]
            replies = [self._one(part) for part in parts]
        if len(replies) == 1:
            return replies[0]
        return ";".join(str(r) for r in replies if r is not None)

    def _one(self, command: str) -> Reply:
        try:
            return self.handler(command)
        except InstrumentReplyError:
            raise
        except Exception as exc:
            raise InstrumentReplyError(
                f"{self.instrument}: mock {self.resource_name} cannot answer {command!r}: {exc}",
                instrument=self.instrument, command=command, resource=self.resource_name,
            ) from exc

    def _parsed(self, command: str, reply: Reply, parse: Callable[[str], Any] | None) -> Any:
        if parse is None:
            return reply
        try:
            return parse(str(reply))
        except InstrumentReplyError:
            raise
        except Exception as exc:
            raise InstrumentReplyError(
                f"{self.instrument}: command {command!r} on {self.resource_name} gave an unusable reply: {exc}",
                instrument=self.instrument, command=command, resource=self.resource_name,
            ) from exc

    # -- the VisaInstrument API -------------------------------------------------------------------
    @property
    def timeout_s(self) -> float:
        """Default I/O timeout in wall seconds (nothing waits on a mock)."""
        return self._timeout_s

    def set_timeout(self, timeout_s: float) -> None:
        """Change the nominal I/O timeout."""
        self._timeout_s = float(timeout_s)

    def write(self, command: str, *, retry: bool | None = None) -> None:
        """Handle a command (no reply)."""
        self._handle(command)

    def query(self, command: str, *, timeout_s: float | None = None, parse: Callable[[str], Any] | None = None,
              retry: bool = True) -> Any:
        """Handle a query; the reply stripped, or ``parse(reply)``."""
        reply = self._handle(command)
        if reply is None:
            raise InstrumentReplyError(f"{self.instrument}: {command!r} on mock {self.resource_name} has no reply",
                                       instrument=self.instrument, command=command, resource=self.resource_name)
        return self._parsed(command, str(reply).strip(), parse)

    def query_float(self, command: str, *, timeout_s: float | None = None) -> float:
        """A query whose reply is one number."""
        return self.query(command, parse=float)

    def query_block(self, command: str, *, timeout_s: float | None = None,
                    check: Callable[[np.ndarray], None] | None = None) -> np.ndarray:
        """A binary-block query: the handler's array as float64, checked by ``check``."""
        values = np.asarray(self._handle(command), dtype=np.float64)
        if check is not None:
            check(values)
        return values

    def clear_input(self) -> None:
        """Nothing is ever pending."""

    def reconnect(self) -> None:
        """Count a reconnect (nothing to reopen)."""
        self.reconnects += 1

    def close(self) -> None:
        """Refuse further exchanges."""
        self.closed = True

    def __repr__(self) -> str:
        return f"MockInstrument({self.resource_name!r}, instrument={self.instrument!r})"


def _kelvin(value: float) -> str:
    """The Model 336's number format: ``+0295.150``."""
    return f"{value:+09.3f}"


class MockLakeShore336:
    """Command handler of an in-memory Model 336 (see the module doc for its simple physics)."""

    def __init__(self, ambient_K: float = 298.15) -> None:
        """Start at ``ambient_K`` with the heater off, setpoint at ambient, ramp off at 10 K/min."""
        self.temperature_K = float(ambient_K)
        self.setpoint_K = {1: float(ambient_K), 2: float(ambient_K)}
        self.ramp = {1: (0, 10.0), 2: (0, 10.0)}
        self.range = {1: 0, 2: 0}
        self.limits_K: dict[str, float] = {}

    def _control(self) -> float:
        if any(self.range.values()):
            self.temperature_K = self.setpoint_K[1] if self.range[1] else self.setpoint_K[2]
        return self.temperature_K

    def __call__(self, command: str) -> Reply:
        """Answer one command of the Model 336 set this package uses."""
        head, _, args = command.strip().partition(" ")
        head = head.upper()
        fields = [f.strip() for f in args.split(",")] if args else []
        if head == "*IDN?":
            return "LSCI,MODEL336,MOCK000/0000000,0.0"
        if head == "KRDG?":
            t = self._control()
            return _kelvin(t if fields[0].upper() == "A" else t - 0.5)
        if head == "SETP?":
            return _kelvin(self.setpoint_K[int(fields[0])])
        if head == "SETP":
            self.setpoint_K[int(fields[0])] = float(fields[1])
            return None
        if head == "RAMP?":
            on, rate = self.ramp[int(fields[0])]
            return f"{on},{rate:+.1f}"
        if head == "RAMP":
            self.ramp[int(fields[0])] = (int(fields[1]), float(fields[2]))
            return None
        if head == "RAMPST?":
            return "0"
        if head == "RANGE?":
            return str(self.range[int(fields[0])])
        if head == "RANGE":
            self.range[int(fields[0])] = int(fields[1])
            return None
        if head == "HTR?":
            return "+050.0" if self.range[int(fields[0])] else "+000.0"
        if head == "TLIMIT":
            self.limits_K[fields[0].upper()] = float(fields[1])
            return None
        if head == "TLIMIT?":
            return _kelvin(self.limits_K.get(fields[0].upper(), 0.0))
        if head == "*ESR?":
            return "0"
        if head in ("*CLS", "*ESE", "*SRE", "OUTMODE", "PID", "MOUT", "MODE"):
            return None
        raise ValueError("not a command of the mock Model 336")


class MockScpiArray:
    """Command handler of an in-memory SCPI array instrument (PL, FTIR, XRD)."""

    def __init__(self, *, model: str, axis_unit: str, axis: np.ndarray, wavelength_A: float = 1.5406) -> None:
        """``axis`` in ``axis_unit``; the data is a smooth peak at the axis' centre."""
        self.model = model
        self.axis_unit = axis_unit
        self.axis = np.asarray(axis, dtype=np.float64)
        centre, width = float(np.mean(self.axis)), float(np.ptp(self.axis)) / 20.0 or 1.0
        self.data = 10.0 + 1000.0 * np.exp(-0.5 * ((self.axis - centre) / width) ** 2)
        self.wavelength_A = float(wavelength_A)
        self.integration_s = 1.0
        self.acquisitions = 0

    def __call__(self, command: str) -> Reply:
        """Answer one SCPI command of the set this package uses."""
        head, _, args = command.strip().partition(" ")
        head = head.upper()
        if head == "*IDN?":
            return f"HOTSTAGE-MOCK,{self.model},MOCK0000,0.0"
        if head == "CONF:INT":
            self.integration_s = float(args)
            return None
        if head == "CONF:INT?":
            return f"{self.integration_s:g}"
        if head == "INIT":
            self.acquisitions += 1
            return None
        if head == "*OPC?":
            return "1"
        if head == "FETC:AXIS:UNIT?":
            return self.axis_unit
        if head == "FETC:AXIS?":
            return self.axis
        if head == "FETC:DATA?":
            return self.data
        if head == "SOUR:WAV?":
            return f"{self.wavelength_A:.5f}"
        if head == "SYST:ERR?":
            return '0,"No error"'
        if head == "STAT:OPER:COND?":
            return "0"
        if head in ("ABOR", "*CLS", "FORM"):
            return None
        raise ValueError("not a command of the mock SCPI instrument")
