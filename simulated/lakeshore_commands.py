"""Model 336 command groups beyond the control loop: inputs, curves, heater set-up, alarms, relays, zones,
display, interface, operation status and autotune, as plain emulator state.

Source: Lake Shore Model 336 user manual, chapter 6 "Computer Interface Operation", section 6.6 (command
list; formats quoted per handler below). The state here does not drive the plant (``hotstage.simulated.thermal``):
it is what the controller stores and echoes, so that peer drivers (Lake Shore's ``lakeshore.Model336``, QCoDeS's
``LakeshoreModel336``) read back what they wrote, in the manual's formats.

Conventions (manual 6.6): string fields may be quoted; in a command an empty field keeps the present value
(the official driver sends ``ALARM A,0,,,,,,`` and ``RELAY 1,1,,``); queries never take empty fields.
Deviations, stated: SCAL (SoftCal) writes only the header of the target curve; ``ATUNE`` completes at once
(``TUNEST?`` reports no active tuning, no error); ``NET``/``WEBLOG`` are stored, not applied.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ExecError", "Model336Settings", "num", "integer", "fields", "split_fields", "INPUT_LETTERS"]

INPUT_LETTERS = ("A", "B", "C", "D")

# RDGST? bits (manual, RDGST? query): 1 invalid reading, 16 temp underrange, 32 temp overrange,
# 64 sensor units zero, 128 sensor units overrange.
RDGST_INVALID = 1
RDGST_SENSOR_OVER = 128


class ExecError(ValueError):
    """Bad, missing or out-of-range parameter (execution error, *ESR bit 4)."""


def num(s: str, lo: float | None = None, hi: float | None = None) -> float:
    """Parse a numeric field within [lo, hi]."""
    try:
        v = float(s)
    except (TypeError, ValueError):
        raise ExecError(f"not a number: {s!r}") from None
    if v != v or (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ExecError(f"out of range: {s!r}")
    return v


def integer(s: str, lo: int, hi: int) -> int:
    """Parse an integer field within [lo, hi] (``+1`` and ``1.0`` accepted)."""
    v = num(s, lo, hi)
    if v != int(v):
        raise ExecError(f"not an integer: {s!r}")
    return int(v)


def fields(args: list[str], n: int, optional: int = 0, *, blanks: bool = False) -> list[str]:
    """Check the field count (n required, up to ``optional`` more); empty fields only if ``blanks``."""
    if not (n <= len(args) <= n + optional) or (not blanks and any(a == "" for a in args)):
        raise ExecError(f"expected {n} parameter(s), got {args!r}")
    return args


def split_fields(rest: str) -> list[str]:
    """Split a parameter list at commas outside double quotes; strip blanks and the quotes."""
    out: list[str] = []
    cur: list[str] = []
    quoted = False
    for ch in rest:
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur).strip())
    return out


def _keep(new: str, old: Any, parse: Callable[[str], Any]) -> Any:
    """An empty command field keeps the present value."""
    return old if new == "" else parse(new)


def _text(s: str, n: int) -> str:
    """A string field of at most ``n`` characters (longer is an execution error, as the manual's limits)."""
    if len(s) > n:
        raise ExecError(f"string longer than {n}: {s!r}")
    return s


@dataclass
class InputSetup:
    """INTYPE / INCRV / INNAME / FILTER / DIOCUR of one input."""

    sensor_type: int  # 0 disabled, 1 diode, 2 platinum RTD, 3 NTC RTD, 4 thermocouple, 5 capacitance
    autorange: int
    range: int
    compensation: int
    units: int  # 1 kelvin, 2 celsius, 3 sensor
    curve: int
    name: str
    filter: tuple[int, int, int] = (0, 10, 10)  # on/off, points 2-64, window 1-10 %
    diode_current: int = 0  # 0 = 10 µA, 1 = 1 mA


@dataclass
class Curve:
    """CRVHDR fields and the CRVPT table (index -> (units, kelvin))."""

    name: str = "User Curve"
    serial: str = ""
    fmt: int = 2  # 1 mV/K, 2 V/K, 3 ohm/K, 4 log ohm/K
    limit_K: float = 375.0
    coefficient: int = 1  # 1 negative, 2 positive
    points: dict[int, tuple[float, float]] = field(default_factory=dict)


# Standard curves (manual table "Standard curves", curve locations 1-20; unlisted numbers are empty).
_STANDARD_CURVES: dict[int, tuple[str, str, int, float, int]] = {
    1: ("DT-470", "Curve 10", 2, 475.0, 1),
    2: ("DT-670", "Standard C", 2, 500.0, 1),
    3: ("DT-500-D", "DT-500-D", 2, 365.0, 1),
    4: ("DT-500-E1", "DT-500-E1", 2, 330.0, 1),
    6: ("PT-100", "DIN 43760", 3, 800.0, 2),
    7: ("PT-1000", "DIN 43760", 3, 800.0, 2),
    8: ("RX-102A-AA", "RX-102A-AA", 4, 40.0, 1),
    9: ("RX-202A-AA", "RX-202A-AA", 4, 40.0, 1),
    12: ("Type K", "Type K", 1, 1645.0, 2),
    13: ("Type E", "Type E", 1, 1188.5, 2),
    14: ("Type T", "Type T", 1, 673.0, 2),
    15: ("AuFe 0.03%", "AuFe 0.03%", 1, 500.0, 2),
    16: ("AuFe 0.07%", "AuFe 0.07%", 1, 610.0, 2),
}


@dataclass
class Alarm:
    """ALARM fields of one input; ``high``/``low`` are the latched or live alarm states (ALARMST?)."""

    enabled: int = 0
    high_K: float = 0.0
    low_K: float = 0.0
    deadband_K: float = 0.0
    latch: int = 0
    audible: int = 0
    visible: int = 0
    high: int = 0
    low: int = 0


@dataclass
class Zone:
    """One row of a heater output's zone table (ZONE)."""

    upper_K: float = 0.0
    p: float = 50.0
    i: float = 20.0
    d: float = 0.0
    mout: float = 0.0
    range: int = 0
    input: int = 0
    rate: float = 0.0


class Model336Settings:
    """Everything the 336 stores that the plant does not use; ``handlers()`` maps mnemonics to handlers.

    ``reading_K(letter)`` gives an input's present reading in kelvin (None: no sensor on that input).
    """

    condition: Callable[[], int]

    def __init__(self, reading_K: Callable[[str], float | None],
                 condition: Callable[[], int] = lambda: 1 << 4) -> None:
        """State of the emulated rig: A a Pt100 in the block (curve 6), B a type K thermocouple (curve 12, the
        3060 thermocouple option), C and D at the factory's diode set-up (DT-670, curve 2) with no sensor wired:
        they read zero with RDGST 129 (invalid, sensor units overrange) until INTYPE disables them (RDGST 001).
        ``condition()`` is the operation condition register (OPST?), which depends on the server's loops."""
        self.reading_K = reading_K
        self.condition = condition
        self.reset()

    def reset(self) -> None:
        """Power-up defaults (``*RST`` leaves these settings, as the instrument's *RST resets control parameters)."""
        self.inputs: dict[str, InputSetup] = {
            "A": InputSetup(2, 1, 3, 1, 1, 6, "Furnace Pt100"),
            "B": InputSetup(4, 0, 0, 1, 1, 12, "Sample TC K"),
            "C": InputSetup(1, 0, 0, 0, 1, 2, "Input C"),
            "D": InputSetup(1, 0, 0, 0, 1, 2, "Input D"),
        }
        self.curves: dict[int, Curve] = {
            n: Curve(*hdr) for n, hdr in _STANDARD_CURVES.items()
        }
        self.heater_setup: dict[int, tuple[int, int, float, int]] = {1: (1, 2, 0.0, 1), 2: (1, 2, 0.0, 1)}
        self.warmup: dict[int, tuple[int, float]] = {3: (0, 0.0), 4: (0, 0.0)}
        self.analog: dict[int, tuple[int, int, float, float, int]] = {3: (1, 1, 0.0, 0.0, 0), 4: (1, 1, 0.0, 0.0, 0)}
        self.zones: dict[tuple[int, int], Zone] = {(o, z): Zone() for o in (1, 2, 3, 4) for z in range(1, 11)}
        self.alarms: dict[str, Alarm] = {n: Alarm() for n in INPUT_LETTERS}
        self.relays: dict[int, tuple[int, str, int]] = {1: (0, "A", 0), 2: (0, "A", 0)}
        self.minmax: dict[str, tuple[float, float] | None] = {n: None for n in INPUT_LETTERS}
        self.display: tuple[int, int, int] = (4, 1, 1)  # custom mode, 4 large fields, output 1
        self.dispfld: dict[int, tuple[int, int]] = {i: ((i - 1) % 4 + 1 if i <= 4 else 0, 1) for i in range(1, 9)}
        self.brightness = 32
        self.leds = 1
        self.lock: tuple[int, int] = (0, 123)
        self.ieee_address = 12
        self.interface = 1  # 0 USB, 1 Ethernet, 2 IEEE-488
        self.net: list[str] = ["1", "1", "0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0", "LSCI-336",
                               "localdomain", "hotstage emulator"]
        self.weblog: tuple[str, str] = ("user", "user")
        self.opste = 0
        self.opstr = 0
        self.tuning: tuple[int, int, int, int] = (0, 1, 0, 0)

    # ------------------------------------------------------------------------------------- helpers
    @staticmethod
    def _letter(s: str) -> str:
        """Input letter A-D (the plain 336: no 3062 option inputs D1-D5)."""
        s = s.upper()
        if s not in INPUT_LETTERS:
            raise ExecError(f"bad input {s!r}")
        return s

    def _input_or_zero(self, s: str) -> list[str]:
        """``0`` = all inputs, else one letter."""
        return list(INPUT_LETTERS) if s == "0" else [self._letter(s)]

    def status(self, letter: str) -> int:
        """RDGST? bits of an input: disabled -> invalid reading; enabled with no sensor wired -> invalid and
        sensor units overrange (an open input); otherwise 0."""
        if self.inputs[letter].sensor_type == 0:
            return RDGST_INVALID
        if self.reading_K(letter) is None:
            return RDGST_INVALID | RDGST_SENSOR_OVER
        return 0

    def kelvin(self, letter: str) -> float | None:
        """The input's reading in K, or None when the input is disabled or has no sensor."""
        if self.inputs[letter].sensor_type == 0:
            return None
        return self.reading_K(letter)

    def sample(self) -> None:
        """Update min/max and live (unlatched) alarm states from the present readings."""
        for n in INPUT_LETTERS:
            k = self.kelvin(n)
            if k is None:
                continue
            mm = self.minmax[n]
            self.minmax[n] = (k, k) if mm is None else (min(mm[0], k), max(mm[1], k))
            al = self.alarms[n]
            if not al.enabled:
                continue
            high = k > al.high_K or (al.high and k > al.high_K - al.deadband_K)
            low = k < al.low_K or (al.low and k < al.low_K + al.deadband_K)
            al.high = int(high or (al.latch and al.high))
            al.low = int(low or (al.latch and al.low))

    # ------------------------------------------------------------------------------------- table
    def handlers(self) -> dict[str, Callable[[list[str]], str | None]]:
        """Mnemonic -> handler for every command group of this module."""
        return {
            "INTYPE": self.c_intype, "INTYPE?": self.q_intype,
            "INCRV": self.c_incrv, "INCRV?": self.q_incrv,
            "INNAME": self.c_inname, "INNAME?": self.q_inname,
            "FILTER": self.c_filter, "FILTER?": self.q_filter,
            "DIOCUR": self.c_diocur, "DIOCUR?": self.q_diocur,
            "MDAT?": self.q_mdat, "MNMXRST": self.c_mnmxrst,
            "TEMP?": self.q_temp,
            "CRVHDR": self.c_crvhdr, "CRVHDR?": self.q_crvhdr,
            "CRVPT": self.c_crvpt, "CRVPT?": self.q_crvpt,
            "CRVDEL": self.c_crvdel, "SCAL": self.c_scal,
            "HTRSET": self.c_htrset, "HTRSET?": self.q_htrset,
            "WARMUP": self.c_warmup, "WARMUP?": self.q_warmup,
            "ANALOG": self.c_analog, "ANALOG?": self.q_analog,
            "ZONE": self.c_zone, "ZONE?": self.q_zone,
            "ATUNE": self.c_atune, "TUNEST?": self.q_tunest,
            "ALARM": self.c_alarm, "ALARM?": self.q_alarm,
            "ALARMST?": self.q_alarmst, "ALMRST": self.c_almrst,
            "RELAY": self.c_relay, "RELAY?": self.q_relay, "RELAYST?": self.q_relayst,
            "DISPLAY": self.c_display, "DISPLAY?": self.q_display,
            "DISPFLD": self.c_dispfld, "DISPFLD?": self.q_dispfld,
            "BRIGT": self.c_brigt, "BRIGT?": self.q_brigt,
            "LEDS": self.c_leds, "LEDS?": self.q_leds,
            "LOCK": self.c_lock, "LOCK?": self.q_lock,
            "IEEE": self.c_ieee, "IEEE?": self.q_ieee,
            "INTSEL": self.c_intsel, "INTSEL?": self.q_intsel,
            "NET": self.c_net, "NET?": self.q_net, "NETID?": self.q_netid,
            "WEBLOG": self.c_weblog, "WEBLOG?": self.q_weblog,
            "OPST?": self.q_opst, "OPSTE": self.c_opste, "OPSTE?": self.q_opste, "OPSTR?": self.q_opstr,
        }

    # ------------------------------------------------------------------------------------- inputs
    def c_intype(self, args: list[str]) -> None:
        """INTYPE <input>,<type 0-5>,<autorange 0|1>,<range>,<compensation 0|1>,<units 1-3>."""
        a = fields(args, 6, blanks=True)
        s = self.inputs[self._letter(a[0])]
        t = _keep(a[1], s.sensor_type, lambda v: integer(v, 0, 5))
        auto = _keep(a[2], s.autorange, lambda v: integer(v, 0, 1))
        rng = _keep(a[3], s.range, lambda v: integer(v, 0, 8))
        comp = _keep(a[4], s.compensation, lambda v: integer(v, 0, 1))
        units = _keep(a[5], s.units, lambda v: integer(v, 1, 3))
        s.sensor_type, s.autorange, s.range, s.compensation, s.units = t, auto, rng, comp, units

    def q_intype(self, args: list[str]) -> str:
        """INTYPE? <input> -> ``<type>,<autorange>,<range>,<compensation>,<units>``."""
        (a,) = fields(args, 1)
        s = self.inputs[self._letter(a)]
        return f"{s.sensor_type},{s.autorange},{s.range},{s.compensation},{s.units}"

    def c_incrv(self, args: list[str]) -> None:
        """INCRV <input>,<curve 0-59> (0 = none)."""
        a, c = fields(args, 2)
        self.inputs[self._letter(a)].curve = integer(c, 0, 59)

    def q_incrv(self, args: list[str]) -> str:
        """INCRV? <input> -> ``nn``."""
        (a,) = fields(args, 1)
        return f"{self.inputs[self._letter(a)].curve:02d}"

    def c_inname(self, args: list[str]) -> None:
        """INNAME <input>,"<name, 15 characters>"."""
        a, name = fields(args, 2, blanks=True)
        self.inputs[self._letter(a)].name = _text(name, 15)

    def q_inname(self, args: list[str]) -> str:
        """INNAME? <input> -> the name."""
        (a,) = fields(args, 1)
        return self.inputs[self._letter(a)].name

    def c_filter(self, args: list[str]) -> None:
        """FILTER <input>,<off/on 0|1>,<points 2-64>,<window 1-10 %>."""
        a = fields(args, 4, blanks=True)
        s = self.inputs[self._letter(a[0])]
        old = s.filter
        s.filter = (_keep(a[1], old[0], lambda v: integer(v, 0, 1)), _keep(a[2], old[1], lambda v: integer(v, 2, 64)),
                    _keep(a[3], old[2], lambda v: integer(v, 1, 10)))

    def q_filter(self, args: list[str]) -> str:
        """FILTER? <input> -> ``n,nn,nn``."""
        (a,) = fields(args, 1)
        on, pts, win = self.inputs[self._letter(a)].filter
        return f"{on},{pts:02d},{win:02d}"

    def c_diocur(self, args: list[str]) -> None:
        """DIOCUR <input>,<0 = 10 µA | 1 = 1 mA> (diode inputs)."""
        a, v = fields(args, 2)
        self.inputs[self._letter(a)].diode_current = integer(v, 0, 1)

    def q_diocur(self, args: list[str]) -> str:
        """DIOCUR? <input> -> ``n``."""
        (a,) = fields(args, 1)
        return str(self.inputs[self._letter(a)].diode_current)

    def q_mdat(self, args: list[str]) -> str:
        """MDAT? <input> -> ``<min>,<max>`` (kelvin, since the last MNMXRST)."""
        (a,) = fields(args, 1)
        letter = self._letter(a)
        self.sample()
        mm = self.minmax[letter] or (0.0, 0.0)
        return f"{mm[0]:+09.3f},{mm[1]:+09.3f}"

    def c_mnmxrst(self, args: list[str]) -> None:
        """MNMXRST: restart min/max recording."""
        fields(args, 0)
        self.minmax = {n: None for n in INPUT_LETTERS}

    def q_temp(self, args: list[str]) -> str:
        """TEMP? -> thermocouple reference junction temperature, K (the rack: room temperature)."""
        fields(args, 0)
        return "+295.150"

    # ------------------------------------------------------------------------------------- curves
    def _curve(self, s: str, lo: int = 1) -> tuple[int, Curve]:
        """Curve number lo-59 and its record (empty curves are blank user curves)."""
        n = integer(s, lo, 59)
        return n, self.curves.setdefault(n, Curve())

    def c_crvhdr(self, args: list[str]) -> None:
        """CRVHDR <curve 21-59>,<name 15>,<SN 10>,<format 1-4>,<limit K>,<coefficient 1|2> (user curves only)."""
        a = fields(args, 6, blanks=True)
        _, c = self._curve(a[0], 21)
        c.name = _keep(a[1], c.name, lambda v: _text(v, 15))
        c.serial = _keep(a[2], c.serial, lambda v: _text(v, 10))
        c.fmt = _keep(a[3], c.fmt, lambda v: integer(v, 1, 4))
        c.limit_K = _keep(a[4], c.limit_K, lambda v: num(v, 0.0, 9999.0))
        c.coefficient = _keep(a[5], c.coefficient, lambda v: integer(v, 1, 2))

    def q_crvhdr(self, args: list[str]) -> str:
        """CRVHDR? <curve 1-59> -> ``<name>,<SN>,<format>,<limit>,<coefficient>``."""
        (a,) = fields(args, 1)
        _, c = self._curve(a)
        return f"{c.name:<15},{c.serial:<10},{c.fmt},{c.limit_K:+09.3f},{c.coefficient}"

    def c_crvpt(self, args: list[str]) -> None:
        """CRVPT <curve 21-59>,<index 1-200>,<units value>,<temp K>[,<curvature>] (curvature: 372 only)."""
        a = fields(args, 4, 1)
        _, c = self._curve(a[0], 21)
        i = integer(a[1], 1, 200)
        c.points[i] = (num(a[2], -1e6, 1e6), num(a[3], 0.0, 9999.0))

    def q_crvpt(self, args: list[str]) -> str:
        """CRVPT? <curve 1-59>,<index 1-200> -> ``<units value>,<temp value>``."""
        a, i = fields(args, 2)
        _, c = self._curve(a)
        u, t = c.points.get(integer(i, 1, 200), (0.0, 0.0))
        return f"{u:+.5f},{t:+.3f}"

    def c_crvdel(self, args: list[str]) -> None:
        """CRVDEL <curve 21-59>: erase a user curve."""
        (a,) = fields(args, 1)
        n = integer(a, 21, 59)
        self.curves[n] = Curve()

    def c_scal(self, args: list[str]) -> None:
        """SCAL <std 1|6|7>,<dest 21-59>,<SN>,<T1>,<U1>,<T2>,<U2>,<T3>,<U3>: a SoftCal curve (header only here)."""
        a = fields(args, 9, blanks=True)
        std = integer(a[0], 1, 7)
        if std not in (1, 6, 7):
            raise ExecError("SoftCal needs standard curve 1, 6 or 7")
        _, c = self._curve(a[1], 21)
        base = _STANDARD_CURVES[std]
        c.name, c.serial, c.fmt, c.limit_K, c.coefficient = base[0], _text(a[2], 10), base[2], base[3], base[4]

    # ------------------------------------------------------------------------------------- heater set-up
    def c_htrset(self, args: list[str]) -> None:
        """HTRSET <output 1|2>,<resistance 1=25|2=50 ohm>,<max current 0-4>,<max user current A>,<1 current|2 power>."""
        a = fields(args, 5, blanks=True)
        o = integer(a[0], 1, 2)
        r, m, u, d = self.heater_setup[o]
        self.heater_setup[o] = (_keep(a[1], r, lambda v: integer(v, 1, 2)), _keep(a[2], m, lambda v: integer(v, 0, 4)),
                                _keep(a[3], u, lambda v: num(v, 0.0, 2.0)), _keep(a[4], d, lambda v: integer(v, 1, 2)))

    def q_htrset(self, args: list[str]) -> str:
        """HTRSET? <output 1|2> -> ``<resistance>,<max current>,<max user current>,<current/power>``."""
        (a,) = fields(args, 1)
        r, m, u, d = self.heater_setup[integer(a, 1, 2)]
        return f"{r},{m},{u:+.3f},{d}"

    def c_warmup(self, args: list[str]) -> None:
        """WARMUP <output 3|4>,<control 0 auto off|1 continuous>,<percentage 0-100>."""
        a, c, p = fields(args, 3)
        self.warmup[integer(a, 3, 4)] = (integer(c, 0, 1), num(p, 0.0, 100.0))

    def q_warmup(self, args: list[str]) -> str:
        """WARMUP? <output 3|4> -> ``<control>,<percentage>``."""
        (a,) = fields(args, 1)
        c, p = self.warmup[integer(a, 3, 4)]
        return f"{c},{p:+07.2f}"

    def c_analog(self, args: list[str]) -> None:
        """ANALOG <output 3|4>,<input 0-4>,<units 1-3>,<high>,<low>,<polarity 0 unipolar|1 bipolar> (monitor out)."""
        a = fields(args, 6, blanks=True)
        o = integer(a[0], 3, 4)
        i, u, hi, lo, pol = self.analog[o]
        self.analog[o] = (_keep(a[1], i, lambda v: integer(v, 0, 4)), _keep(a[2], u, lambda v: integer(v, 1, 3)),
                          _keep(a[3], hi, lambda v: num(v, -1e5, 1e5)), _keep(a[4], lo, lambda v: num(v, -1e5, 1e5)),
                          _keep(a[5], pol, lambda v: integer(v, 0, 1)))

    def q_analog(self, args: list[str]) -> str:
        """ANALOG? <output 3|4> -> ``<input>,<units>,<high value>,<low value>,<polarity>``."""
        (a,) = fields(args, 1)
        i, u, hi, lo, pol = self.analog[integer(a, 3, 4)]
        return f"{i},{u},{hi:+.3f},{lo:+.3f},{pol}"

    def c_zone(self, args: list[str]) -> None:
        """ZONE <output 1-4>,<zone 1-10>,<upper K>,<P>,<I>,<D>,<mout %>,<range 0-3>,<input 0-4>,<rate K/min>."""
        a = fields(args, 10)
        z = self.zones[(integer(a[0], 1, 4), integer(a[1], 1, 10))]
        z.upper_K, z.p, z.i, z.d = num(a[2], 0.0, 9999.0), num(a[3], 0.1, 1000.0), num(a[4], 0.1, 1000.0), num(
            a[5], 0.0, 200.0)
        z.mout, z.range, z.input, z.rate = num(a[6], 0.0, 100.0), integer(a[7], 0, 3), integer(a[8], 0, 4), num(
            a[9], 0.0, 100.0)

    def q_zone(self, args: list[str]) -> str:
        """ZONE? <output>,<zone> -> ``<upper>,<P>,<I>,<D>,<mout>,<range>,<input>,<rate>``."""
        a, b = fields(args, 2)
        z = self.zones[(integer(a, 1, 4), integer(b, 1, 10))]
        return (f"{z.upper_K:+09.3f},{z.p:+07.1f},{z.i:+07.1f},{int(round(z.d)):+05d},{z.mout:+07.2f},"
                f"{z.range},{z.input},{z.rate:+07.1f}")

    def c_atune(self, args: list[str]) -> None:
        """ATUNE <output 1|2>,<mode 0 P|1 PI|2 PID>: the emulator completes at once and keeps the stored PID."""
        a, m = fields(args, 2)
        self.tuning = (0, integer(a, 1, 2), 0, 0)
        integer(m, 0, 2)

    def q_tunest(self, args: list[str]) -> str:
        """TUNEST? -> ``<tuning 0|1>,<output>,<error 0|1>,<stage>``."""
        fields(args, 0)
        t, o, e, s = self.tuning
        return f"{t},{o},{e},{s:02d}"

    # ------------------------------------------------------------------------------------- alarms and relays
    def c_alarm(self, args: list[str]) -> None:
        """ALARM <input>,<off/on>,<high K>,<low K>,<deadband K>,<latch>,<audible>,<visible>."""
        a = fields(args, 8, blanks=True)
        al = self.alarms[self._letter(a[0])]
        al.enabled = _keep(a[1], al.enabled, lambda v: integer(v, 0, 1))
        al.high_K = _keep(a[2], al.high_K, lambda v: num(v, -1e5, 1e5))
        al.low_K = _keep(a[3], al.low_K, lambda v: num(v, -1e5, 1e5))
        al.deadband_K = _keep(a[4], al.deadband_K, lambda v: num(v, 0.0, 1e5))
        al.latch = _keep(a[5], al.latch, lambda v: integer(v, 0, 1))
        al.audible = _keep(a[6], al.audible, lambda v: integer(v, 0, 1))
        al.visible = _keep(a[7], al.visible, lambda v: integer(v, 0, 1))
        if not al.enabled:
            al.high = al.low = 0

    def q_alarm(self, args: list[str]) -> str:
        """ALARM? <input> -> ``<off/on>,<high>,<low>,<deadband>,<latch>,<audible>,<visible>``."""
        (a,) = fields(args, 1)
        al = self.alarms[self._letter(a)]
        return (f"{al.enabled},{al.high_K:+09.3f},{al.low_K:+09.3f},{al.deadband_K:+09.3f},"
                f"{al.latch},{al.audible},{al.visible}")

    def q_alarmst(self, args: list[str]) -> str:
        """ALARMST? <input> -> ``<high state>,<low state>``."""
        (a,) = fields(args, 1)
        letter = self._letter(a)
        self.sample()
        al = self.alarms[letter]
        return f"{al.high},{al.low}"

    def c_almrst(self, args: list[str]) -> None:
        """ALMRST: clear latched alarms."""
        fields(args, 0)
        for al in self.alarms.values():
            al.high = al.low = 0
        self.sample()

    def c_relay(self, args: list[str]) -> None:
        """RELAY <relay 1|2>,<mode 0 off|1 on|2 alarm>,<alarm input>,<alarm type 0 low|1 high|2 both>."""
        a = fields(args, 4, blanks=True)
        r = integer(a[0], 1, 2)
        m, inp, t = self.relays[r]
        self.relays[r] = (_keep(a[1], m, lambda v: integer(v, 0, 2)), _keep(a[2], inp, self._letter),
                          _keep(a[3], t, lambda v: integer(v, 0, 2)))

    def q_relay(self, args: list[str]) -> str:
        """RELAY? <relay> -> ``<mode>,<input alarm>,<alarm type>``."""
        (a,) = fields(args, 1)
        m, inp, t = self.relays[integer(a, 1, 2)]
        return f"{m},{inp},{t}"

    def q_relayst(self, args: list[str]) -> str:
        """RELAYST? <relay> -> 1 energised: on, or in alarm mode when its input's alarm of the chosen type is on."""
        (a,) = fields(args, 1)
        m, inp, t = self.relays[integer(a, 1, 2)]
        if m < 2:
            return str(m)
        self.sample()
        al = self.alarms[inp]
        return str(int((t in (0, 2) and bool(al.low)) or (t in (1, 2) and bool(al.high))))

    # ------------------------------------------------------------------------------------- display
    def c_display(self, args: list[str]) -> None:
        """DISPLAY <mode 0-6>,<number of fields 0-2>,<displayed output 1-4> (modes: 0-3 input A-D, 4 custom,
        5 four loop, 6 all inputs; fields: custom 0 = 2 large, 1 = 4 large, 2 = 8 small; all inputs 0 small,
        1 large)."""
        a = fields(args, 1, 2, blanks=True)
        mode, nf, out = self.display
        mode = integer(a[0], 0, 6)
        nf = _keep(a[1], nf, lambda v: integer(v, 0, 2)) if len(a) > 1 else nf
        out = _keep(a[2], out, lambda v: integer(v, 1, 4)) if len(a) > 2 else out
        self.display = (mode, nf, out)

    def q_display(self, args: list[str]) -> str:
        """DISPLAY? -> ``<mode>,<number of fields>,<displayed output>``."""
        fields(args, 0)
        return "{},{},{}".format(*self.display)

    def c_dispfld(self, args: list[str]) -> None:
        """DISPFLD <field 1-8>,<input 0-4>,<units 1-6>."""
        f, i, u = fields(args, 3)
        self.dispfld[integer(f, 1, 8)] = (integer(i, 0, 4), integer(u, 1, 6))

    def q_dispfld(self, args: list[str]) -> str:
        """DISPFLD? <field> -> ``<input>,<units>``."""
        (f,) = fields(args, 1)
        return "{},{}".format(*self.dispfld[integer(f, 1, 8)])

    def c_brigt(self, args: list[str]) -> None:
        """BRIGT <0 25 %|1 50 %|2 75 %|3 100 %> (the official driver also sends contrast levels 1-32)."""
        (v,) = fields(args, 1)
        self.brightness = integer(v, 0, 32)

    def q_brigt(self, args: list[str]) -> str:
        """BRIGT? -> ``n``."""
        fields(args, 0)
        return str(self.brightness)

    def c_leds(self, args: list[str]) -> None:
        """LEDS <0|1>: front-panel LEDs off/on."""
        (v,) = fields(args, 1)
        self.leds = integer(v, 0, 1)

    def q_leds(self, args: list[str]) -> str:
        """LEDS? -> ``n``."""
        fields(args, 0)
        return str(self.leds)

    def c_lock(self, args: list[str]) -> None:
        """LOCK <state 0 unlocked|1 locked>,<code 000-999>."""
        s, c = fields(args, 2)
        self.lock = (integer(s, 0, 1), integer(c, 0, 999))

    def q_lock(self, args: list[str]) -> str:
        """LOCK? -> ``<state>,<code nnn>``."""
        fields(args, 0)
        return f"{self.lock[0]},{self.lock[1]:03d}"

    # ------------------------------------------------------------------------------------- interface
    def c_ieee(self, args: list[str]) -> None:
        """IEEE <address 1-30>."""
        (v,) = fields(args, 1)
        self.ieee_address = integer(v, 1, 30)

    def q_ieee(self, args: list[str]) -> str:
        """IEEE? -> ``nn``."""
        fields(args, 0)
        return f"{self.ieee_address:02d}"

    def c_intsel(self, args: list[str]) -> None:
        """INTSEL <0 USB|1 Ethernet|2 IEEE-488>."""
        (v,) = fields(args, 1)
        self.interface = integer(v, 0, 2)

    def q_intsel(self, args: list[str]) -> str:
        """INTSEL? -> ``n``."""
        fields(args, 0)
        return str(self.interface)

    def c_net(self, args: list[str]) -> None:
        """NET <DHCP>,<AUTO IP>,<IP>,<mask>,<gateway>,<DNS 1>,<DNS 2>,<host 15>,<domain 64>,<description 32>."""
        a = fields(args, 10, blanks=True)
        integer(a[0], 0, 1)
        integer(a[1], 0, 1)
        self.net = [old if new == "" else new for new, old in zip(a, self.net)]

    def q_net(self, args: list[str]) -> str:
        """NET? -> the ten NET fields."""
        fields(args, 0)
        return ",".join(self.net)

    def q_netid(self, args: list[str]) -> str:
        """NETID? -> ``<lan status>,<IP>,<mask>,<gateway>,<DNS 1>,<DNS 2>,<MAC>,<host>,<domain>`` (0 = connected)."""
        fields(args, 0)
        n = self.net
        return f"0,127.0.0.1,255.0.0.0,0.0.0.0,0.0.0.0,0.0.0.0,00:00:00:00:03:36,{n[7]},{n[8]}"

    def c_weblog(self, args: list[str]) -> None:
        """WEBLOG "<user 15>","<password 15>"."""
        u, p = fields(args, 2, blanks=True)
        self.weblog = (_text(u, 15), _text(p, 15))

    def q_weblog(self, args: list[str]) -> str:
        """WEBLOG? -> ``<user>,<password>``."""
        fields(args, 0)
        return ",".join(self.weblog)

    # ------------------------------------------------------------------------------------- operation status
    def q_opst(self, args: list[str]) -> str:
        """OPST? -> the operation condition register ``nnn``."""
        fields(args, 0)
        return f"{self.condition():03d}"

    def c_opste(self, args: list[str]) -> None:
        """OPSTE <0-255>: operation event enable register."""
        (v,) = fields(args, 1)
        self.opste = integer(v, 0, 255)

    def q_opste(self, args: list[str]) -> str:
        """OPSTE? -> ``nnn``."""
        fields(args, 0)
        return f"{self.opste:03d}"

    def q_opstr(self, args: list[str]) -> str:
        """OPSTR? -> the operation event register (events latched since the last read; cleared on read)."""
        fields(args, 0)
        value, self.opstr = self.opstr | self.condition(), 0
        return f"{value:03d}"
