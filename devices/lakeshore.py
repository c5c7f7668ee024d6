"""Lake Shore Model 336 temperature controller as an ophyd Device driving the hot-stage furnace.

Protocol (Lake Shore Model 336 user manual, chapter 6 "Computer interface operation"):

* Transports: Ethernet raw socket on TCP port 7777 (``TCPIP0::<host>::7777::SOCKET``), USB virtual
  serial port (``ASRL<n>::INSTR``; manual §6.3: 57 600 baud, 7 data bits, odd parity, 1 stop bit) or
  pyvisa-sim (``simulated/visa/hotstage.yaml``). Messages end in CR LF both ways (the 336 accepts LF
  alone on input; we always send CR LF and read up to CR LF). Commands do not reply; queries reply
  with one line. ``;`` may join several commands in one message (not used here: one exchange per
  message keeps error attribution exact).
* Temperatures on the wire are Kelvin (``KRDG?``), users work in °C: T[°C] = T[K] − 273.15 (ITS-90
  offset). Reply format of readings and setpoints: ``+0295.150`` (sign, 4 integer digits, 3 decimals).

Commands this driver sends (``<out>`` = control loop/output 1–2, ``<in>`` = input A–D):

=====================================  ===================================================
``*IDN?``                              ``LSCI,MODEL336,<serial>/<option>,<firmware>``
``KRDG? <in>``                         Kelvin reading, ``+0295.150``
``SETP? <out>`` / ``SETP <out>,<K>``   setpoint in K (we write ``%.3f``)
``RAMP? <out>`` / ``RAMP <out>,<0|1>,<K/min>``  reply ``<0|1>,<rate>`` e.g. ``1,+10.0``;
                                       rate 0.1–100 K/min (we write ``%.1f``)
``RAMPST? <out>``                      ``0`` | ``1`` (setpoint ramp in progress)
``RANGE? <out>`` / ``RANGE <out>,<r>``  0 off, 1 low, 2 medium, 3 high
``HTR? <out>``                         heater output in percent, ``+045.2``
``TLIMIT <in>,<K>`` / ``TLIMIT? <in>``  temperature limit in K (0 = off): above it the controller itself
                                       turns all control outputs off (``set_temperature_limit``)
=====================================  ===================================================

``set(T_C)`` writes, in this order: (only when the heater range is 0/off) ``RAMP <out>,0,<rate>``,
``SETP <out>,<readback K>``, ``RAMP <out>,1,<rate>`` so the 336's setpoint ramp starts from where the
furnace actually is (the 336 ramps from its present setpoint value), then ``SETP <out>,<target K>``, then
(only when it was off) ``RANGE <out>,<heater_range_on>``. A watcher thread polls ``KRDG? <in>`` and
finishes the status only when the *readback* has stayed within ``tolerance`` °C of the target for
``settle_time`` experiment seconds. It fails with :class:`FurnaceSettleTimeout` after
|ΔT|/rate·(1+``timeout_fraction``) + ``settle_time`` + ``timeout_margin`` experiment seconds.

Time base: a real rig runs at ``time_scale = 1`` (experiment seconds are wall seconds). The simulated rig
runs its world ``time_scale`` times faster than wall time, so every experiment-second duration
(settle time, timeout) is divided by ``time_scale`` to get wall seconds.

Faults: every exchange goes through ``hotstage.devices.visa``'s retry policy. Queries (``*IDN?``, ``KRDG?``,
``SETP?``, ``RAMP?``, ``RAMPST?``, ``RANGE?``, ``HTR?``) are re-asked; replies are checked against the
formats above (fixed decimals), so a truncated or garbled reply is re-asked rather than misread. Every
command this driver writes (``SETP``, ``RAMP``, ``RANGE``; also ``OUTMODE``, ``PID``, ``MOUT``) sets an
absolute state, so it is idempotent: re-sent after a dropped connection. ``heater_off(confirm=True)``
reads ``RANGE?`` back.

Connecting: constructing the device opens nothing (so definitions can be imported and built offline);
``connect(timeout=...)`` opens the VISA session and checks ``*IDN?``, raising one error that names the device and
the resource when either fails. ``connect(mock=True)`` (or ``mock=True`` at construction) talks to an in-memory
Model 336 instead (``hotstage.devices.mock``). Reading or moving an unconnected device raises
:class:`~hotstage.devices.visa.NotConnectedError` ("... call connect() first").

Settings are configuration signals (``read_configuration()``, hence every event descriptor's ``configuration``):
``tolerance`` (°C), ``settle_time`` (experiment s), ``timeout_margin`` (experiment s), ``timeout_fraction``,
``fallback_rate`` (°C/min), ``heater_range_on`` (1–3), ``end_of_plan`` (below), next to the controller's own
``ramp_rate``, ``ramp_on`` and ``heater_range``. ``locate()`` gives bluesky's Location (``bps.locate``).

End of a plan — ``end_of_plan`` (configuration signal, recorded in every descriptor), ``"hold"`` (default) or
``"off"``. bluesky's RunEngine calls ``stop(success=True)`` on every object a plan ``set()`` whenever it stops
them: at the end of a plan, and also on pause, suspension, failure, abort and halt (bluesky 1.15 passes
``success=True`` in every case). ``stop()`` therefore always fails pending set statuses with
:class:`FurnaceSetCancelled` and switches the heater off (``RANGE <out>,0``), except in exactly one case: the
RunEngine calling it is ending a plan that succeeded without interruption (its exit status is "success", it was
not paused, stopped, aborted or halted) and ``end_of_plan`` is ``"hold"`` — then the controller keeps
regulating at the setpoint, so ``bps.mv(furnace, 200)`` followed by ``bp.count`` measures a sample held at 200 °C.
``stop()`` called outside a RunEngine follows its ``success`` argument (``stop()`` = heater off). ``pause()``
(the RunEngine calls it on pause and on suspension) switches the heater off too; ``resume()`` does not switch it
back on. ``unstage()`` never touches the heater. hotstage's own plans run inside
``hotstage.plans.safety.safe_furnace_wrapper``, which sets ``end_of_plan`` to ``"off"`` for the plan and switches
the heater off (confirmed) however the plan ends.
"""

from __future__ import annotations

import logging
import math
import re
import sys
import threading
import time
from types import FrameType
from typing import Any

from ophyd import Component as Cpt
from ophyd import Device, Kind, Signal
from ophyd.status import DeviceStatus
from pyvisa import constants

from .mock import MockInstrument, MockLakeShore336
from .settings import ChoiceSignal, SettingSignal, non_negative, positive
from .visa import (
    DEFAULT_TIMEOUT_S,
    InstrumentIdentityError,
    InstrumentReplyError,
    RetryPolicy,
    VisaInstrument,
    VisaSignal,
    VisaSignalRO,
    not_connected,
    open_instrument,
)

log = logging.getLogger(__name__)

__all__ = [
    "LakeShore336Furnace",
    "FurnaceSetStatus",
    "FurnaceSettleTimeout",
    "FurnaceSetCancelled",
    "kelvin_to_celsius",
    "celsius_to_kelvin",
    "LS336_SERIAL",
    "END_OF_PLAN_CHOICES",
]

#: Values of the furnace's ``end_of_plan`` setting (module doc).
END_OF_PLAN_CHOICES = ("hold", "off")

#: ITS-90: 0 °C = 273.15 K.
ZERO_CELSIUS_K = 273.15
#: Model 336 manual §6.3 (USB virtual serial port settings), as pyvisa ASRL attributes.
LS336_SERIAL: dict[str, Any] = {
    "baud_rate": 57600,
    "data_bits": 7,
    "parity": constants.Parity.odd,
    "stop_bits": constants.StopBits.one,
}
#: Model 336 manual, RAMP command: rate 0.1–100 K/min.
RAMP_RATE_MIN = 0.1
RAMP_RATE_MAX = 100.0


def kelvin_to_celsius(kelvin: float) -> float:
    """Kelvin (wire) to °C (user)."""
    return float(kelvin) - ZERO_CELSIUS_K


def celsius_to_kelvin(celsius: float) -> float:
    """°C (user) to Kelvin (wire)."""
    return float(celsius) + ZERO_CELSIUS_K


# Reply formats of the Model 336 (manual ch. 6; fixed decimals), checked strictly so that a truncated
# reply ("+029" of "+0295.150") is rejected and re-asked instead of being read as 29 K.
_DECIMAL = re.compile(r"^[+-]?\d+\.\d+$")
_RAMP = re.compile(r"^([01]),([+-]?\d+(?:\.\d*)?)$")
_DIGIT = re.compile(r"^[+]?(\d)$")

#: Commands that set an absolute state: re-sending one after a lost connection is harmless.
IDEMPOTENT_COMMANDS = (
    "SETP ", "RAMP ", "RANGE ", "OUTMODE ", "PID ", "MOUT ", "MODE ", "TLIMIT ", "*CLS", "*ESE ", "*SRE ",
)


def _idempotent(command: str) -> bool:
    """Retry policy of the Model 336 commands: every setting this driver writes is absolute (module doc)."""
    return command.upper().startswith(IDEMPOTENT_COMMANDS)


def _number(reply: str) -> float:
    """A fixed-decimal number such as ``+0295.150`` or ``+045.2``; ValueError otherwise (e.g. truncated)."""
    if not _DECIMAL.match(reply):
        raise ValueError(f"{reply!r} is not a Model 336 number (+dddd.ddd)")
    return float(reply)


def _parse_c(reply: str) -> float:
    """Parse a Kelvin reading such as ``+0295.150`` into °C."""
    return kelvin_to_celsius(_number(reply))


_LIMIT = re.compile(r"^[+]?\d+(?:\.\d+)?$")


def _parse_limit(reply: str) -> float:
    """A ``TLIMIT?`` reply in K: ``+0450.000`` or the manual's ``+nnnn`` (no sign or decimals also accepted)."""
    if not _LIMIT.match(reply):
        raise ValueError(f"{reply!r} is not a TLIMIT? reply (+nnnn K)")
    return float(reply)


def _parse_ramp(reply: str) -> tuple[int, float]:
    """Parse a ``RAMP?`` reply ``<0|1>,<rate>`` into (on, K/min)."""
    m = _RAMP.match(reply.replace(" ", ""))
    if not m:
        raise ValueError(f"{reply!r} is not a RAMP? reply (<0|1>,<rate>)")
    return int(m.group(1)), float(m.group(2))


def _parse_digit(reply: str) -> int:
    """One-digit integer reply (``RANGE?`` 0-3, ``RAMPST?`` 0/1)."""
    m = _DIGIT.match(reply)
    if not m:
        raise ValueError(f"{reply!r} is not a one-digit reply")
    return int(m.group(1))


class FurnaceSettleTimeout(TimeoutError):
    """The furnace readback did not settle at the target in the allowed time."""


class FurnaceSetCancelled(RuntimeError):
    """A pending furnace set() was cancelled by stop() or superseded by a newer set()."""


class FurnaceSetStatus(DeviceStatus):
    """Status of one furnace move: target (°C), allowed time (experiment s), last readback."""

    def __init__(self, device: Device, *, target: float, timeout_exp_s: float, **kwargs: Any) -> None:
        """Record the target and the allowed time; ophyd's own timeout is not used."""
        super().__init__(device, **kwargs)
        self.target = float(target)
        self.timeout_exp_s = float(timeout_exp_s)
        self.last_readback: float = math.nan
        self.cancel_event = threading.Event()

    def _fail(self, exc: BaseException) -> None:
        """Fail unless already done (races between watcher and stop() are benign)."""
        self.cancel_event.set()
        try:
            self.set_exception(exc)
        except Exception:
            pass


class _OptionalInputSignal(VisaSignalRO):
    """Reading of the optional sample input: NaN without a query when no input is configured."""

    def get(self, **kwargs: Any) -> Any:
        """Query only when the parent has a sample input."""
        if getattr(self.parent, "sample_input", None) is None:
            self._cache(math.nan)
            return math.nan
        return super().get(**kwargs)


def _ramp_rate_cmd(dev: "LakeShore336Furnace", rate: float) -> str:
    """RAMP command keeping the present on/off state, changing the rate (°C/min == K/min)."""
    on, _ = dev._query_ramp()
    return f"RAMP {dev.output},{on},{_check_rate(rate):.1f}"


def _ramp_on_cmd(dev: "LakeShore336Furnace", on: Any) -> str:
    """RAMP command keeping the present rate, switching ramping on/off."""
    _, rate = dev._query_ramp()
    return f"RAMP {dev.output},{int(bool(on))},{rate:.1f}"


def _check_rate(rate: float) -> float:
    """Validate a ramp rate against the 336's range: 0.1–100 K/min, or 0 meaning "step, no ramp" (manual)."""
    rate = float(rate)
    if not (rate == 0.0 or RAMP_RATE_MIN <= rate <= RAMP_RATE_MAX):
        raise ValueError(
            f"ramp rate {rate} °C/min outside the Model 336 range {RAMP_RATE_MIN}–{RAMP_RATE_MAX} (or 0 = no ramp)"
        )
    return rate


def _check_range(value: Any) -> int:
    """Validate a heater range 0–3."""
    r = int(value)
    if r not in (0, 1, 2, 3):
        raise ValueError(f"heater range {value!r} not in 0 (off), 1 (low), 2 (medium), 3 (high)")
    return r


def _check_range_on(value: Any) -> int:
    """A heater range that heats: 1 (low), 2 (medium) or 3 (high)."""
    r = _check_range(value)
    if r == 0:
        raise ValueError("heater range used to heat must be 1 (low), 2 (medium) or 3 (high), not 0 (off)")
    return r


def _fraction(value: Any) -> float:
    """A timeout fraction: finite, >= 0."""
    return non_negative(value)


def _engine_ending_cleanly(frame: FrameType | None) -> bool | None:
    """Whether the bluesky RunEngine up the call stack is ending a plan that succeeded without interruption.

    None when no RunEngine is calling (a direct ``stop()``). bluesky 1.15 calls ``stop(success=True)`` alike at
    the end of a plan, on pause, suspension, failure, abort and halt, so the RunEngine's own state is consulted:
    its exit status, whether it was interrupted, and its state machine. Anything unexpected counts as not clean
    (the heater goes off): this can only err towards safety. The RunEngine is recognised by its attributes,
    since devices do not import bluesky (docs/architecture.md).
    """
    while frame is not None:
        engine = frame.f_locals.get("self")
        if engine is not None and hasattr(engine, "_movable_objs_touched") and hasattr(engine, "_exit_status"):
            try:
                return (
                    getattr(engine, "_exit_status", None) == "success"
                    and getattr(engine, "_interrupted", True) is False
                    and getattr(engine, "state", None) == "running"
                )
            except Exception:  # noqa: BLE001 - an unknown RunEngine: be safe
                return False
        frame = frame.f_back
    return None


class LakeShore336Furnace(Device):
    """Hot-stage furnace behind a Lake Shore 336: °C for users, Kelvin on the wire, settling set()."""

    temperature = Cpt(
        VisaSignalRO, query="KRDG? {dev.control_input}", parse=_parse_c, units="degC", precision=3, kind=Kind.hinted
    )
    sample_temperature = Cpt(
        _OptionalInputSignal, query="KRDG? {dev.sample_input}", parse=_parse_c, units="degC", precision=3,
        kind=Kind.normal,
    )
    setpoint = Cpt(
        VisaSignal,
        query="SETP? {dev.output}",
        write=lambda dev, v: f"SETP {dev.output},{celsius_to_kelvin(v):.3f}",
        parse=_parse_c,
        units="degC",
        precision=3,
        kind=Kind.normal,
    )
    ramp_rate = Cpt(
        VisaSignal,
        query="RAMP? {dev.output}",
        write=_ramp_rate_cmd,
        parse=lambda r: _parse_ramp(r)[1],
        units="degC/min",
        precision=1,
        kind=Kind.config,
    )
    ramp_on = Cpt(
        VisaSignal,
        query="RAMP? {dev.output}",
        write=_ramp_on_cmd,
        parse=lambda r: _parse_ramp(r)[0],
        kind=Kind.config,
    )
    ramping = Cpt(VisaSignalRO, query="RAMPST? {dev.output}", parse=_parse_digit, kind=Kind.normal)
    heater_range = Cpt(
        VisaSignal,
        query="RANGE? {dev.output}",
        write=lambda dev, v: f"RANGE {dev.output},{_check_range(v)}",
        parse=_parse_digit,
        kind=Kind.config,
    )
    heater_output = Cpt(
        VisaSignalRO, query="HTR? {dev.output}", parse=_number, units="%", precision=1, kind=Kind.normal
    )
    tolerance = Cpt(SettingSignal, value=1.0, units="degC", check=positive, kind=Kind.config)
    """Half-width of the band the readback must stay in for ``settle_time`` before a set() finishes (°C)."""
    settle_time = Cpt(SettingSignal, value=30.0, units="s", check=non_negative, kind=Kind.config)
    """Experiment seconds the readback must stay within ``tolerance`` of the target."""
    timeout_margin = Cpt(SettingSignal, value=120.0, units="s", check=non_negative, kind=Kind.config)
    """Experiment seconds added to a move's allowed time (see ``settle_timeout``)."""
    timeout_fraction = Cpt(SettingSignal, value=0.25, check=_fraction, kind=Kind.config)
    """Fraction of the ramp time added to a move's allowed time."""
    fallback_rate = Cpt(SettingSignal, value=10.0, units="degC/min", check=positive, kind=Kind.config)
    """Rate (°C/min) that sizes the allowed time when setpoint ramping is off."""
    heater_range_on = Cpt(SettingSignal, value=3, check=_check_range_on, kind=Kind.config)
    """Heater range (1 low, 2 medium, 3 high) a set() switches on when the heater was off."""
    end_of_plan = Cpt(ChoiceSignal, value="hold", choices=END_OF_PLAN_CHOICES, kind=Kind.config)
    """What the heater does when a plan ends successfully: "hold" (keep regulating) or "off" (module doc)."""
    stops = Cpt(Signal, value=0, kind=Kind.omitted)
    """How many times stop() has run (pause, suspension, abort, end of plan). The RunEngine replays the messages
    since the last checkpoint on resume, which can switch the heater back on before the plan sees it was off;
    a plan that finds this count changed knows it was interrupted and re-arms its ramp from the readback."""

    timebase: Any = None
    """Where settle waits take their time: None is the wall clock; an object with ``wall()`` (monotonic wall
    seconds) and ``sleep(wall_s)`` replaces it, e.g. a stepped simulated clock whose ``sleep`` jumps simulated
    time instead of waiting (``hotstage.simulated.clock.SimClock``), so a set() settles in lock-step."""


    def __init__(
        self,
        resource: str,
        *,
        name: str,
        output: int = 1,
        control_input: str = "A",
        sample_input: str | None = "B",
        resource_manager: str | None = None,
        time_scale: float = 1.0,
        tolerance: float = 1.0,
        settle_time: float = 30.0,
        timeout_margin: float = 120.0,
        timeout_fraction: float = 0.25,
        fallback_rate: float = 10.0,
        heater_range_on: int = 3,
        poll_interval: float | None = None,
        end_of_plan: str = "hold",
        io_timeout: float = DEFAULT_TIMEOUT_S,
        serial: dict[str, Any] | None = None,
        check_identity: bool = True,
        retry: RetryPolicy | None = None,
        mock: bool = False,
        **kwargs: Any,
    ) -> None:
        """Describe the controller at ``resource`` (backend ``resource_manager``, default "@py"); opens nothing.

        ``connect()`` opens it and checks it is a Model 336 (``mock=True``: an in-memory one instead).
        ``retry``: the transient-fault policy of every exchange (default ``hotstage.devices.visa.DEFAULT_RETRY``).
        ``end_of_plan``: "hold" or "off", what the heater does when a plan ends successfully (module doc).

        Durations ``settle_time``/``timeout_margin`` are experiment seconds; ``time_scale`` is
        experiment seconds per wall second; ``poll_interval`` (wall s) defaults to
        min(0.5, settle_time/time_scale/10) but not below 10 ms; ``fallback_rate`` (°C/min) sizes the
        timeout when setpoint ramping is off.
        """
        if output not in (1, 2):
            raise ValueError(f"output must be 1 or 2 (heater outputs of the Model 336), got {output!r}")
        if time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
        self.resource = resource
        self.output = int(output)
        self.control_input = str(control_input).upper()
        self.sample_input = None if sample_input is None else str(sample_input).upper()
        self.time_scale = float(time_scale)
        self.resource_manager = resource_manager
        self.io_timeout = float(io_timeout)
        self.serial = serial
        self.check_identity = bool(check_identity)
        self.retry = retry
        self.mock = bool(mock)
        self._poll_interval = poll_interval
        self._last_target: float | None = None
        self._pending: list[FurnaceSetStatus] = []
        self._pending_lock = threading.Lock()
        self._visa: VisaInstrument | None = None
        self.compound_reads = not (resource_manager or "@py").endswith("@sim")
        """read() sends one compound message (see read); False queries each signal on its own."""
        super().__init__("", name=name, **kwargs)
        if self.sample_input is None:
            self.sample_temperature.kind = Kind.omitted
        self.tolerance.put(tolerance)
        self.settle_time.put(settle_time)
        self.timeout_margin.put(timeout_margin)
        self.timeout_fraction.put(timeout_fraction)
        self.fallback_rate.put(fallback_rate)
        self.heater_range_on.put(heater_range_on)
        self.end_of_plan.put(end_of_plan)

    def connect(self, *, timeout: float | None = None, mock: bool | None = None) -> "LakeShore336Furnace":
        """Open the VISA session and check ``*IDN?`` (a Model 336); returns the device. A no-op when connected.

        ``timeout`` (wall s) bounds opening the session and each try of the identity query (default: the
        backend's open timeout and ``io_timeout``; the transport's retry policy still applies). ``mock`` (default:
        the constructor's) uses an in-memory Model 336
        (``hotstage.devices.mock.MockLakeShore336``). Failing to open or identify raises one
        InstrumentError naming the device and the resource; the session is closed again.
        """
        if self._visa is not None:
            return self
        mock = self.mock if mock is None else bool(mock)
        instrument = f"Lake Shore 336 '{self.name}'"
        visa: Any
        if mock:
            visa = MockInstrument(self.resource, instrument=instrument, handler=MockLakeShore336())
        else:
            visa = open_instrument(
                self.resource,
                instrument=instrument,
                backend=self.resource_manager or "@py",
                read_termination="\r\n",
                write_termination="\r\n",
                timeout_s=self.io_timeout,
                serial=LS336_SERIAL if self.serial is None else self.serial,
                retry=self.retry,
                idempotent=_idempotent,
                open_timeout_s=timeout,
            )
        self._visa = visa
        self.mock = mock
        if self.check_identity:
            try:
                self.identify(timeout_s=timeout)
            except BaseException:
                self._visa = None
                visa.close()
                raise
        return self

    # -- plain instrument operations --------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """True between a successful ``connect()`` and ``destroy()``."""
        return self._visa is not None and super().connected

    @property
    def visa(self) -> VisaInstrument:
        """The transport (its ``lock`` serialises every exchange with this controller); NotConnectedError before
        ``connect()``."""
        if self._visa is None:
            raise not_connected(self)
        return self._visa

    def read(self) -> dict[str, dict[str, Any]]:
        """Every read signal in one exchange: the 336 takes several queries joined by ``;`` in one message and
        answers them in one reply joined by ``;`` (manual ch. 6, message syntax). One round trip per event
        instead of six matters on a real controller too (each serial exchange costs tens of ms).
        A reply that does not split into one valid answer per query is garbage: drained and re-asked.
        pyvisa-sim matches whole messages only, so on a ``@sim`` backend each signal is queried on its own."""
        signals = [getattr(self, attr) for attr in self.read_attrs]
        if not self.compound_reads or not all(isinstance(sig, VisaSignalRO) for sig in signals):
            return super().read()
        command = ";".join(sig.command for sig in signals)

        def parse(reply: str) -> list[Any]:
            parts = reply.split(";")
            if len(parts) != len(signals):
                raise ValueError(f"{len(parts)} answers to {len(signals)} queries")
            return [sig.parse_reply(part.strip()) for sig, part in zip(signals, parts)]

        values = self.visa.query(command, parse=parse)
        return {sig.name: {"value": value, "timestamp": sig.timestamp} for sig, value in zip(signals, values)}

    @property
    def position(self) -> float:
        """Present control-input temperature in °C (the readback a set() settles on)."""
        return float(self.temperature.get())

    def locate(self) -> dict[str, float]:
        """bluesky ``Location`` in °C: ``setpoint`` is the target of the last set() (the controller's ``SETP?``
        before any), ``readback`` the control input now. Makes the furnace ``bluesky.protocols.Locatable``."""
        readback = float(self.temperature.get())
        setpoint = self._last_target if self._last_target is not None else float(self.setpoint.get())
        return {"setpoint": setpoint, "readback": readback}

    def identify(self, *, timeout_s: float | None = None) -> str:
        """Query ``*IDN?`` and check it is a Lake Shore MODEL336; return the identity string.

        A mismatch is re-asked like any unusable reply (a garbled identity must not condemn a good
        instrument) and ends in InstrumentIdentityError; nothing is written before the identity is known.
        """

        def check(reply: str) -> str:
            fields = [f.strip() for f in reply.split(",")]
            if len(fields) < 4 or fields[0] != "LSCI" or fields[1] != "MODEL336":
                raise InstrumentIdentityError(
                    f"{self.visa.instrument}: {self.resource} answered *IDN? with {reply!r}; "
                    "expected 'LSCI,MODEL336,<serial>/<option>,<firmware>'",
                    instrument=self.visa.instrument,
                    command="*IDN?",
                    resource=self.resource,
                )
            return reply

        return self.visa.query("*IDN?", parse=check, timeout_s=timeout_s)

    def _query_ramp(self) -> tuple[int, float]:
        """Return (ramp on 0/1, rate K/min) from ``RAMP? <out>``."""
        return self.visa.query(f"RAMP? {self.output}", parse=_parse_ramp)

    def configure_ramp(self, rate_C_per_min: float, *, on: bool = True) -> None:
        """Enable (or disable) setpoint ramping at ``rate_C_per_min`` (°C/min == K/min)."""
        rate = _check_rate(rate_C_per_min)
        self.visa.write(f"RAMP {self.output},{int(bool(on))},{rate:.1f}")
        self.ramp_rate._cache(rate)
        self.ramp_on._cache(int(bool(on)))

    def heater_off(self, *, confirm: bool = False) -> None:
        """Switch the heater output off (``RANGE <out>,0``).

        ``confirm=True`` reads ``RANGE?`` back (re-sending the command if the link dropped in between, see
        ``hotstage.devices.visa``) and raises InstrumentReplyError unless the controller reports 0: the safety paths
        (plans.safety.ensure_heater_off, the over-temperature suspender) use it.
        """
        self.visa.write(f"RANGE {self.output},0")
        self.heater_range._cache(0)
        if confirm:
            rng = self.visa.query(f"RANGE? {self.output}", parse=_parse_digit)
            self.heater_range._cache(rng)
            if rng != 0:
                raise InstrumentReplyError(
                    f"{self.visa.instrument}: heater still on (RANGE? {self.output} -> {rng}) after "
                    f"'RANGE {self.output},0' on {self.resource}; switch it off at the controller",
                    instrument=self.visa.instrument,
                    command=f"RANGE {self.output},0",
                    resource=self.resource,
                )

    def set_temperature_limit(self, max_C: float | None) -> dict[str, float | None]:
        """Arm the controller's own over-temperature interlock: ``TLIMIT <in>,<K>`` on the control and sample inputs.

        Above the limit the Model 336 turns every control output off by itself (manual ch. 6, TLIMIT), so the
        furnace is protected even when this computer hangs or the link is gone. ``None`` turns the limits off
        (0 K). Each limit is read back (``TLIMIT? <in>``) and must agree within 0.5 K, else InstrumentReplyError
        (the command is absolute, so a dropped link simply re-sends it). Returns input → limit in °C (None = off).
        """
        if max_C is not None and not (math.isfinite(float(max_C)) and celsius_to_kelvin(float(max_C)) > 0.0):
            raise ValueError(f"temperature limit must be a finite temperature above 0 K, got {max_C!r} °C")
        limit_K = 0.0 if max_C is None else round(celsius_to_kelvin(float(max_C)), 1)
        inputs = [self.control_input]
        if self.sample_input is not None and self.sample_input != self.control_input:
            inputs.append(self.sample_input)
        out: dict[str, float | None] = {}
        for inp in inputs:
            command = f"TLIMIT {inp},{limit_K:.1f}"
            self.visa.write(command)
            readback = self.visa.query(f"TLIMIT? {inp}", parse=_parse_limit)
            if abs(readback - limit_K) > 0.5:
                raise InstrumentReplyError(
                    f"{self.visa.instrument}: temperature limit of input {inp} reads {readback:g} K after "
                    f"'{command}' on {self.resource}; set it at the controller (Input setup, Temperature Limit)",
                    instrument=self.visa.instrument,
                    command=command,
                    resource=self.resource,
                )
            out[inp] = None if readback == 0.0 else kelvin_to_celsius(readback)
        return out

    @property
    def poll_interval(self) -> float:
        """Wall seconds between readback polls of the settle watcher."""
        if self._poll_interval is not None:
            return float(self._poll_interval)
        return min(0.5, max(0.01, float(self.settle_time.get()) / self.time_scale / 10.0))

    def settle_timeout(self, start_C: float, target_C: float, rate_C_per_min: float | None) -> float:
        """Allowed experiment seconds for a move: |ΔT|/rate·(1+fraction) + settle_time + margin."""
        rate = rate_C_per_min if rate_C_per_min and rate_C_per_min > 0 else float(self.fallback_rate.get())
        ramp_s = abs(float(target_C) - float(start_C)) / rate * 60.0
        return (ramp_s * (1.0 + float(self.timeout_fraction.get())) + float(self.settle_time.get())
                + float(self.timeout_margin.get()))

    # -- ophyd movable API ------------------------------------------------------------------------
    def set(self, value: float, *, timeout: float | None = None, **kwargs: Any) -> FurnaceSetStatus:  # type: ignore[override]
        """Go to ``value`` °C; the status finishes when the readback has settled (see module doc).

        ``timeout`` (experiment seconds) overrides the one derived from distance and ramp rate.
        """
        target = float(value)
        if not math.isfinite(target):
            raise ValueError(f"furnace target must be finite, got {value!r}")
        self._cancel_pending(FurnaceSetCancelled(f"{self.name}: superseded by a new set({target:g} °C)"))
        visa = self.visa
        with visa.lock:
            start = self.temperature.get()
            rng = visa.query(f"RANGE? {self.output}", parse=_parse_digit)
            on, rate = self._query_ramp()
            if rng == 0:
                # The 336 ramps from its present setpoint; start the ramp from the actual readback.
                if on:
                    visa.write(f"RAMP {self.output},0,{rate:.1f}")
                visa.write(f"SETP {self.output},{celsius_to_kelvin(start):.3f}")
                if on:
                    visa.write(f"RAMP {self.output},1,{rate:.1f}")
            visa.write(f"SETP {self.output},{celsius_to_kelvin(target):.3f}")
            self.setpoint._cache(target)
            self._last_target = target
            if rng == 0:
                range_on = int(self.heater_range_on.get())
                visa.write(f"RANGE {self.output},{range_on}")
                self.heater_range._cache(range_on)
        allowed = float(timeout) if timeout is not None else self.settle_timeout(start, target, rate if on else None)
        status = FurnaceSetStatus(self, target=target, timeout_exp_s=allowed)
        status.last_readback = start
        with self._pending_lock:
            self._pending.append(status)
        status.add_callback(self._forget)
        threading.Thread(
            target=self._watch, args=(status,), name=f"{self.name}-settle-{target:g}C", daemon=True
        ).start()
        return status

    def _forget(self, status: FurnaceSetStatus) -> None:
        """Drop a finished status from the pending list."""
        with self._pending_lock:
            if status in self._pending:
                self._pending.remove(status)

    def _watch(self, status: FurnaceSetStatus) -> None:
        """Poll the readback until settled for settle_time, the timeout, or cancellation."""
        wall = time.monotonic if self.timebase is None else self.timebase.wall
        t0 = wall()
        in_band_since: float | None = None
        poll = self.poll_interval
        while not status.done:
            try:
                reading = self.temperature.get()
            except Exception as exc:
                status._fail(exc)
                return
            now = wall()
            status.last_readback = reading
            tolerance, settle_time = float(self.tolerance.get()), float(self.settle_time.get())
            if abs(reading - status.target) <= tolerance:
                if in_band_since is None:
                    in_band_since = now
                if (now - in_band_since) * self.time_scale >= settle_time:
                    try:
                        status.set_finished()
                    except Exception:
                        pass
                    return
            else:
                in_band_since = None
            elapsed_exp = (now - t0) * self.time_scale
            if elapsed_exp >= status.timeout_exp_s:
                status._fail(
                    FurnaceSettleTimeout(
                        f"{self.name}: did not settle at {status.target:.3f} °C (±{tolerance:g} °C for "
                        f"{settle_time:g} s) within {status.timeout_exp_s:.1f} experiment s; last readback "
                        f"{reading:.3f} °C after {elapsed_exp:.1f} experiment s "
                        f"({now - t0:.2f} wall s, time_scale {self.time_scale:g}) on {self.resource}"
                    )
                )
                return
            if self.timebase is not None:
                self.timebase.sleep(poll)
                if status.cancel_event.is_set():
                    return
            elif status.cancel_event.wait(poll):
                return

    def _cancel_pending(self, exc: BaseException) -> None:
        """Fail every pending set status with ``exc``."""
        with self._pending_lock:
            pending = list(self._pending)
            self._pending.clear()
        for status in pending:
            status._fail(exc)

    def stop(self, *, success: bool = False) -> None:
        """Cancel pending moves; heater off (``RANGE <out>,0``) unless a plan ended cleanly with ``end_of_plan``
        "hold" (module doc: bluesky passes success=True on pause, failure and abort too, so the RunEngine's own
        state decides)."""
        self.stops.put(int(self.stops.get()) + 1)
        self._cancel_pending(FurnaceSetCancelled(f"{self.name}: set() cancelled by stop(success={success})"))
        if success and self.end_of_plan.get() == "hold":
            clean = _engine_ending_cleanly(sys._getframe(1))
            if clean is None or clean:
                return
        self.heater_off()

    def pause(self) -> None:
        """The RunEngine pauses or suspends: heater off (never raises; a failure is logged, the caller's
        heater-off paths and the over-temperature interlocks remain)."""
        try:
            self.heater_off()
        except Exception as exc:  # noqa: BLE001 - the RunEngine must still be able to pause
            log.error("%s: heater off on pause failed: %s", self.name, exc)

    def resume(self) -> None:
        """The RunEngine resumes: nothing to do (the heater stays off until a plan sets the furnace again)."""

    def destroy(self) -> None:
        """Cancel pending moves and close the VISA session."""
        self._cancel_pending(FurnaceSetCancelled(f"{self.name}: device destroyed"))
        visa, self._visa = self._visa, None
        if visa is not None:
            visa.close()
        super().destroy()

    close = destroy
