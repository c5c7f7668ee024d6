"""SCPI array-instrument emulator: PL spectrometer, FTIR (THz/far-IR) spectrometer, powder XRD detector.

One server class, parameterised per instrument (``INSTRUMENTS``), speaking the protocol documented in
``devices/spectrometers.py`` and INTERFACES.md ("Wire protocols"):

* raw TCP on 127.0.0.1 (ephemeral port), LF-terminated input (a CR before the LF is ignored) and output;
  ``;`` joins several commands in one message (SCPI-99 §6.2.1), replies joined by ``;``; headers are
  case-insensitive and accept SCPI short or long forms (``CONF``/``CONFigure``, ``FETC``/``FETCh``,
  ``SYST:ERR[:NEXT]?`` ...); a leading ``:`` starts at the root, a header without one after ``;`` is relative
  to the previous header's path (SCPI-99 §6.2.4: ``CONF:INT 1;INT?``), see ``ScpiArrayServer._resolve``.
* ``*IDN?`` -> ``HOTSTAGE-SIM,<MODEL>,<serial>,<fw>``; ``*RST`` (integration 1 s, abort, forget data,
  ASCII->REAL format), ``*CLS`` (error queue and ESR), ``*ESR?`` (clears), ``*ESE``/``*ESE?``, ``*SRE``/``*SRE?``
  (0-255, bit 6 ignored; neither *RST nor *CLS clears it), ``*STB?`` (bit 6 MSS),
  ``*OPC`` (sets ESR bit 0 when the pending acquisition completes), ``*OPC?`` and ``*WAI`` (wait for it),
  ``SYST:ERR?`` -> ``<code>,"<message>"`` (``0,"No error"``; queue of 10, -350 on overflow).
* ``CONF:INT <s>`` (0 < s <= 3600, instrument = simulated seconds), ``CONF:INT?``; ``INIT`` starts one
  acquisition at the present simulated time and returns at once (``-213,"Init ignored"`` while one is in
  progress); ``ABOR`` aborts; ``STAT:OPER:COND?`` -> 1 while acquiring, 0 idle.
* ``FETC:DATA?`` / ``FETC:AXIS?`` -> IEEE-488.2 definite-length block ``#<n><len><bytes>`` of little-endian
  float64 followed by LF (IEEE 488.2-1992 §8.7.9), or comma-separated ASCII after ``FORM:DATA ASC``
  (``FORM:DATA REAL,64`` restores blocks; ``FORM?``). ``FETC:DATA?`` during an acquisition waits for it
  (as ``*OPC?`` would); before any ``INIT`` (or after ``ABOR``/``*RST``): ``-230,"Data corrupt or stale"``.
  ``FETC:AXIS:UNIT?`` -> ``deg`` | ``cm-1`` | ``nm``. XRD only: ``SOUR:WAV?`` -> wavelength in Å.
* Errors go to the queue and set the ESR: -1xx command error (bit 5, 32), -2xx execution error (bit 4, 16),
  -3xx device error (bit 3, 8), -4xx query error (bit 2, 4). Nothing a client sends crashes the server.

Timing: an acquisition started at simulated time t0 with integration T completes when the shared clock
reads t0 + T; the data (``SimWorld.acquire``: sample state at t0 + T/2) are then computed in a worker
thread (``loop.run_in_executor``) so a slow synthesis never stalls the furnace on the same event loop.
``*OPC?`` replies once the data are ready.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import numpy as np

from .lakeshore_server import LineServer

if TYPE_CHECKING:
    from .world import SimWorld

__all__ = ["ScpiInstrument", "INSTRUMENTS", "ScpiArrayServer", "encode_block", "decode_block"]

log = logging.getLogger(__name__)

MAX_INTEGRATION_S = 3600.0
ERROR_QUEUE_LEN = 10


@dataclass(frozen=True)
class ScpiInstrument:
    """Identity and axis of one emulated SCPI array instrument."""

    modality: str
    """World modality feeding it: "xrd", "thz" or "pl"."""
    model: str
    unit: str
    """FETC:AXIS:UNIT? reply."""
    serial: str
    firmware: str = "1.0"
    has_source: bool = False
    """XRD detector: answers SOUR:WAV?."""
    full_scale: float = float("inf")
    """Largest value the instrument can report (ADC/counter full scale); a saturation fault clips here."""


INSTRUMENTS: dict[str, ScpiInstrument] = {
    # full scales as the device classes assume (devices/spectrometers.py): 16-bit CCD, 20-bit photon counter,
    # photometric limit of an FTIR absorbance spectrum
    "pl": ScpiInstrument("pl", "PL-SPECTROMETER", "nm", "PL0001", full_scale=65535.0),
    "thz": ScpiInstrument("thz", "FTIR-FIR", "cm-1", "FT0001", full_scale=4.0),
    "xrd": ScpiInstrument("xrd", "XRD-DETECTOR", "deg", "XR0001", has_source=True, full_scale=1048575.0),
}


def encode_block(values: np.ndarray) -> bytes:
    """IEEE-488.2 definite-length block of little-endian float64: ``#<n><len><bytes>``."""
    payload = np.ascontiguousarray(values, dtype="<f8").tobytes()
    length = str(len(payload)).encode("ascii")
    return b"#" + str(len(length)).encode("ascii") + length + payload


def decode_block(raw: bytes) -> np.ndarray:
    """Parse one definite-length block (trailing bytes after it ignored)."""
    if not raw.startswith(b"#"):
        raise ValueError("not a definite-length block")
    n = int(raw[1:2])
    if n == 0:
        raise ValueError("indefinite-length blocks are not used")
    length = int(raw[2 : 2 + n])
    payload = raw[2 + n : 2 + n + length]
    if len(payload) != length:
        raise ValueError(f"block announces {length} bytes, has {len(payload)}")
    return np.frombuffer(payload, dtype="<f8").copy()


class _ScpiError(Exception):
    """An SCPI error: code and message for the queue."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code},{message}")
        self.code = code
        self.message = message


# header patterns: canonical name -> regex of the whole header (nodes joined by ':', optional nodes in [])
_SPEC = {
    "*IDN?": r"\*IDN\?",
    "*RST": r"\*RST",
    "*CLS": r"\*CLS",
    "*OPC": r"\*OPC",
    "*OPC?": r"\*OPC\?",
    "*WAI": r"\*WAI",
    "*ESR?": r"\*ESR\?",
    "*ESE": r"\*ESE",
    "*ESE?": r"\*ESE\?",
    "*SRE": r"\*SRE",
    "*SRE?": r"\*SRE\?",
    "*STB?": r"\*STB\?",
    "*TST?": r"\*TST\?",
    "SYST:ERR?": r"SYST(?:EM)?:ERR(?:OR)?(?::NEXT)?\?",
    "SYST:ERR:COUN?": r"SYST(?:EM)?:ERR(?:OR)?:COUN(?:T)?\?",
    "CONF:INT": r"CONF(?:IGURE)?:INT(?:EGRATION)?(?::TIME)?",
    "CONF:INT?": r"CONF(?:IGURE)?:INT(?:EGRATION)?(?::TIME)?\?",
    "INIT": r"INIT(?:IATE)?(?::IMM(?:EDIATE)?)?",
    "ABOR": r"ABOR(?:T)?",
    "STAT:OPER:COND?": r"STAT(?:US)?:OPER(?:ATION)?:COND(?:ITION)?\?",
    "FETC:DATA?": r"FETC(?:H)?(?::DATA)?\?",
    "FETC:AXIS?": r"FETC(?:H)?:AXIS\?",
    "FETC:AXIS:UNIT?": r"FETC(?:H)?:AXIS:UNIT\?",
    "SOUR:WAV?": r"SOUR(?:CE)?:WAV(?:ELENGTH)?\?",
    "FORM": r"FORM(?:AT)?(?::DATA)?",
    "FORM?": r"FORM(?:AT)?(?::DATA)?\?",
}
_HEADERS = [(name, re.compile(rf"^:?{pat}$", re.I)) for name, pat in _SPEC.items()]


class ScpiArrayServer(LineServer):
    """Emulator of one SCPI array instrument fed by a :class:`~simulated.world.SimWorld` modality."""

    def __init__(
        self,
        world: "SimWorld",
        instrument: ScpiInstrument | str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        default_integration_s: float = 1.0,
        faults: Any = None,
        fault_name: str | None = None,
    ) -> None:
        """Serve ``instrument`` (an INSTRUMENTS key or a ScpiInstrument) from ``world``; ``faults`` as in LineServer."""
        inst = INSTRUMENTS[instrument] if isinstance(instrument, str) else instrument
        super().__init__(host=host, port=port, faults=faults, fault_name=fault_name or inst.modality)
        self.world = world
        self.instrument = inst
        self.name = self.instrument.model
        self.identity = f"HOTSTAGE-SIM,{self.instrument.model},{self.instrument.serial},{self.instrument.firmware}"
        self.default_integration_s = float(default_integration_s)
        self.integration_s = self.default_integration_s
        self.ascii = False
        self.esr = 0
        self.ese = 0
        self.sre = 0
        self.errors: deque[tuple[int, str]] = deque()
        self._acq: asyncio.Task[np.ndarray] | None = None
        self._acq_window: tuple[float, float] | None = None
        self._data: np.ndarray | None = None
        self._opc_armed = False
        self._axis = np.ascontiguousarray(world.axis(self.instrument.modality), dtype="<f8")
        self._handlers: dict[str, Callable[[str], Awaitable[bytes | None]]] = {
            "*IDN?": self._idn,
            "*RST": self._rst,
            "*CLS": self._cls,
            "*OPC": self._opc,
            "*OPC?": self._opc_q,
            "*WAI": self._wai,
            "*ESR?": self._esr_q,
            "*ESE": self._ese,
            "*ESE?": self._ese_q,
            "*SRE": self._sre,
            "*SRE?": self._sre_q,
            "*STB?": self._stb_q,
            "*TST?": self._tst_q,
            "SYST:ERR?": self._err_q,
            "SYST:ERR:COUN?": self._err_count_q,
            "CONF:INT": self._conf_int,
            "CONF:INT?": self._conf_int_q,
            "INIT": self._init,
            "ABOR": self._abor,
            "STAT:OPER:COND?": self._cond_q,
            "FETC:DATA?": self._fetch_data,
            "FETC:AXIS?": self._fetch_axis,
            "FETC:AXIS:UNIT?": self._unit_q,
            "SOUR:WAV?": self._wav_q,
            "FORM": self._form,
            "FORM?": self._form_q,
        }

    # -------------------------------------------------------------------------------- errors
    def push_error(self, code: int, message: str) -> None:
        """Queue an SCPI error and set the matching ESR bit."""
        if len(self.errors) >= ERROR_QUEUE_LEN:
            self.errors[-1] = (-350, "Queue overflow")
        else:
            self.errors.append((code, message))
        if -199 <= code <= -100:
            self.esr |= 32
        elif -299 <= code <= -200:
            self.esr |= 16
        elif -399 <= code <= -300:
            self.esr |= 8
        elif -499 <= code <= -400:
            self.esr |= 4

    # ------------------------------------------------------------------------------ protocol
    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read LF-terminated messages; execute; write the joined replies + LF."""
        while True:
            try:
                line = await self.read_line(reader)
            except ValueError:
                self.push_error(-223, "Too much data")
                continue
            if line is None:
                return
            if self.link_fault(line, writer):
                return
            reply = await self.execute(line)
            if reply is not None:
                await self.send_reply(writer, line, reply, b"\n")

    async def execute(self, line: bytes) -> bytes | None:
        """Execute one message; return the reply bytes (without terminator) or None."""
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            self.push_error(-101, "Invalid character")
            return None
        replies: list[bytes] = []
        path = ""  # SCPI-99 §6.2.4: each message starts at the root
        for unit in text.split(";"):
            unit = unit.strip()
            if not unit:
                continue
            header, _, arg = unit.partition(" ")
            name, path = self._resolve(header, path)
            if name is None:
                self.push_error(-113, "Undefined header")
                continue
            try:
                out = await self._handlers[name](arg.strip())
            except _ScpiError as exc:
                self.push_error(exc.code, exc.message)
                continue
            except Exception as exc:  # never let a bug take the instrument down
                log.exception("%s: %s failed", self.name, unit)
                self.push_error(-300, f"Device-specific error; {type(exc).__name__}")
                continue
            if out is not None:
                replies.append(out)
        return b";".join(replies) if replies else None

    @staticmethod
    def _resolve(header: str, path: str) -> tuple[str | None, str]:
        """Canonical name of ``header`` and the header path that follows it (SCPI-99 §6.2.4, IEEE 488.2 §7.6.1).

        A header with a leading ``:`` starts at the root; one without is first taken relative to ``path``, the
        nodes before the leaf of the last program header in this message (after ``CONF:INT 1;`` the path is
        ``CONF:``, so ``INT?`` is ``CONF:INT?``). Tolerance beyond SCPI, stated: a relative header that names
        nothing under the path is tried from the root, so ``CONF:INT 20;CONF:INT?`` (what hotstage's driver and
        older clients send) still works. Common commands (``*...``) neither use nor change the path.
        """
        if header.startswith("*"):
            return next((n for n, rx in _HEADERS if rx.match(header)), None), path
        candidates = [header] if header.startswith(":") or not path else [path + header, header]
        for text in candidates:
            name = next((n for n, rx in _HEADERS if rx.match(text)), None)
            if name is not None:
                full = text.lstrip(":")
                return name, full[: full.rfind(":") + 1]
        return None, path

    @staticmethod
    def _no_arg(arg: str) -> None:
        """Reject parameters on a parameter-less header."""
        if arg:
            raise _ScpiError(-108, "Parameter not allowed")

    # ----------------------------------------------------------------------------- acquisition
    @property
    def acquiring(self) -> bool:
        """True while an acquisition (integration + synthesis) is in progress."""
        return self._acq is not None and not self._acq.done()

    async def _run_acquisition(self, t0: float, integration: float) -> np.ndarray:
        """Wait out the integration on the simulated clock, then synthesize in a worker thread."""
        clock = self.world.clock
        end = t0 + integration
        while True:
            wait = clock.wall_until(end)
            if wait <= 0.0:
                break
            await asyncio.sleep(wait)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.world.acquire, self.instrument.modality, t0, integration)

    def _finished(self, task: asyncio.Task[np.ndarray]) -> None:
        """Store the data of a finished acquisition (or queue its error)."""
        if task is not self._acq:
            return
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("%s: acquisition failed: %r", self.name, exc)
            self.push_error(-240, f"Hardware error; {type(exc).__name__}: {exc}"[:200])
            self._data = None
        else:
            self._data = task.result()
        if self._opc_armed:
            self.esr |= 1
            self._opc_armed = False

    async def _wait_acquisition(self) -> None:
        """Wait for the pending acquisition (if any) to finish."""
        task = self._acq
        if task is not None and not task.done():
            await asyncio.wait({task})  # does not raise for the task's own failure or cancellation

    def _abort(self) -> None:
        """Cancel a pending acquisition and forget its data."""
        if self._acq is not None and not self._acq.done():
            self._acq.cancel()
        self._acq = None
        self._data = None
        self._opc_armed = False

    # ------------------------------------------------------------------------------- handlers
    async def _idn(self, arg: str) -> bytes:
        """*IDN? -> HOTSTAGE-SIM,<MODEL>,<serial>,<fw>."""
        self._no_arg(arg)
        return self.identity.encode("ascii")

    async def _rst(self, arg: str) -> None:
        """*RST: abort, default integration time, binary format."""
        self._no_arg(arg)
        self._abort()
        self.integration_s = self.default_integration_s
        self.ascii = False
        return None

    async def _cls(self, arg: str) -> None:
        """*CLS: clear the error queue and the event register."""
        self._no_arg(arg)
        self.errors.clear()
        self.esr = 0
        return None

    async def _opc(self, arg: str) -> None:
        """*OPC: set ESR bit 0 now, or when the pending acquisition completes."""
        self._no_arg(arg)
        if self.acquiring:
            self._opc_armed = True
        else:
            self.esr |= 1
        return None

    async def _opc_q(self, arg: str) -> bytes:
        """*OPC?: reply 1 once the pending acquisition (integration + synthesis) is complete."""
        self._no_arg(arg)
        await self._wait_acquisition()
        return b"1"

    async def _wai(self, arg: str) -> None:
        """*WAI: hold further commands of this connection until the acquisition completes."""
        self._no_arg(arg)
        await self._wait_acquisition()
        return None

    async def _esr_q(self, arg: str) -> bytes:
        """*ESR?: read and clear the standard event status register."""
        self._no_arg(arg)
        value, self.esr = self.esr, 0
        return str(value).encode("ascii")

    async def _ese(self, arg: str) -> None:
        """*ESE <0-255>: event status enable mask."""
        self.ese = int(self._number(arg, 0, 255))
        return None

    async def _ese_q(self, arg: str) -> bytes:
        """*ESE?: the enable mask."""
        self._no_arg(arg)
        return str(self.ese).encode("ascii")

    async def _sre(self, arg: str) -> None:
        """*SRE <0-255>: service request enable mask; bit 6 is ignored (IEEE 488.2 §11.3.2.3: it is MSS itself)."""
        self.sre = int(self._number(arg, 0, 255)) & ~0x40
        return None

    async def _sre_q(self, arg: str) -> bytes:
        """*SRE?: the enable mask (0-255, bit 6 always 0)."""
        self._no_arg(arg)
        return str(self.sre).encode("ascii")

    async def _stb_q(self, arg: str) -> bytes:
        """*STB?: bit 2 error queue, bit 5 ESB, bit 7 operation (acquiring), bit 6 MSS (any of those enabled in
        *SRE; IEEE 488.2 §11.2.2.2)."""
        self._no_arg(arg)
        stb = 0
        if self.errors:
            stb |= 4  # error/event queue not empty (SCPI-99 §9)
        if self.esr & self.ese:
            stb |= 32
        if self.acquiring:
            stb |= 128  # operation status summary
        if stb & self.sre:
            stb |= 64  # master summary status
        return str(stb).encode("ascii")

    async def _tst_q(self, arg: str) -> bytes:
        """*TST?: self-test passes (0)."""
        self._no_arg(arg)
        return b"0"

    async def _err_q(self, arg: str) -> bytes:
        """SYST:ERR?: oldest queued error, or 0,\"No error\"."""
        self._no_arg(arg)
        if not self.errors:
            return b'0,"No error"'
        code, msg = self.errors.popleft()
        return f'{code},"{msg}"'.encode("ascii", "replace")

    async def _err_count_q(self, arg: str) -> bytes:
        """SYST:ERR:COUN?: number of queued errors."""
        self._no_arg(arg)
        return str(len(self.errors)).encode("ascii")

    @staticmethod
    def _number(arg: str, lo: float, hi: float) -> float:
        """Parse one numeric parameter within [lo, hi] (-109 missing, -104 wrong type, -222 out of range)."""
        if not arg:
            raise _ScpiError(-109, "Missing parameter")
        try:
            v = float(arg)
        except ValueError:
            raise _ScpiError(-104, "Data type error") from None
        if not (lo <= v <= hi):
            raise _ScpiError(-222, "Data out of range")
        return v

    async def _conf_int(self, arg: str) -> None:
        """CONF:INT <s>: integration time in instrument (simulated) seconds."""
        v = self._number(arg, 0.0, MAX_INTEGRATION_S)
        if v <= 0.0:
            raise _ScpiError(-222, "Data out of range")
        if self.acquiring:
            raise _ScpiError(-221, "Settings conflict")
        self.integration_s = v
        return None

    async def _conf_int_q(self, arg: str) -> bytes:
        """CONF:INT?: the integration time."""
        self._no_arg(arg)
        return f"{self.integration_s:.6g}".encode("ascii")

    async def _init(self, arg: str) -> None:
        """INIT: start one acquisition now on the simulated clock (returns at once)."""
        self._no_arg(arg)
        if self.acquiring:
            raise _ScpiError(-213, "Init ignored")
        t0 = self.world.clock.now()
        self._data = None
        self._acq_window = (t0, self.integration_s)
        task = asyncio.get_running_loop().create_task(self._run_acquisition(t0, self.integration_s))
        self._acq = task
        task.add_done_callback(self._finished)
        self._count("INIT")
        return None

    async def _abor(self, arg: str) -> None:
        """ABOR: abort the acquisition and forget its data."""
        self._no_arg(arg)
        self._abort()
        return None

    async def _cond_q(self, arg: str) -> bytes:
        """STAT:OPER:COND?: 1 while acquiring, 0 idle."""
        self._no_arg(arg)
        return b"1" if self.acquiring else b"0"

    def _encode(self, values: np.ndarray) -> bytes:
        """Block (REAL,64) or comma-separated ASCII, per FORM."""
        if self.ascii:
            return ",".join(f"{v:.10g}" for v in values).encode("ascii")
        return encode_block(values)

    async def _fetch_data(self, arg: str) -> bytes:
        """FETC:DATA?: the last acquisition (waits for a pending one); -230 if there is none."""
        self._no_arg(arg)
        await self._wait_acquisition()
        if self._data is None:
            raise _ScpiError(-230, "Data corrupt or stale")
        reply = self._encode(self._faulty(self._data))
        self._count("FETC:DATA?")
        return reply

    def _count(self, command: str) -> None:
        """Count an executed acquisition command in the fault injector (the control socket's ``counts``)."""
        if self.faults is not None:
            self.faults.count_exchange(self.fault_name, command)

    def _faulty(self, data: np.ndarray) -> np.ndarray:
        """Apply a data fault (saturation: scaled and clipped at full scale; wrong_length: values dropped)."""
        fault = self._fault(b"FETC:DATA?", ("saturation", "wrong_length"))
        if fault is None:
            return data
        if fault.kind == "wrong_length":
            from .faults import DEFAULT_WRONG_LENGTH_DROP

            drop = int(fault.params.get("drop", DEFAULT_WRONG_LENGTH_DROP))
            return data[: max(0, len(data) - drop)]
        full = self.instrument.full_scale
        peak = float(np.max(data)) if data.size else 0.0
        gain = fault.params.get("gain") or (2.0 * full / peak if peak > 0 and np.isfinite(full) else 1.0)
        return np.minimum(data * float(gain), full)

    async def _fetch_axis(self, arg: str) -> bytes:
        """FETC:AXIS?: the spectral axis."""
        self._no_arg(arg)
        return self._encode(self._axis)

    async def _unit_q(self, arg: str) -> bytes:
        """FETC:AXIS:UNIT?: deg | cm-1 | nm."""
        self._no_arg(arg)
        return self.instrument.unit.encode("ascii")

    async def _wav_q(self, arg: str) -> bytes:
        """SOUR:WAV? (XRD only): primary X-ray wavelength in Å."""
        self._no_arg(arg)
        if not self.instrument.has_source:
            raise _ScpiError(-113, "Undefined header")
        return f"{self.world.xrd_wavelength():.6f}".encode("ascii")

    async def _form(self, arg: str) -> None:
        """FORM[:DATA] ASC | REAL[,64]: reply format of FETC blocks."""
        fields = [f.strip().upper() for f in arg.split(",")] if arg else []
        if not fields:
            raise _ScpiError(-109, "Missing parameter")
        kind = fields[0]
        if kind in ("ASC", "ASCII") and len(fields) <= 2:
            self.ascii = True
        elif kind == "REAL" and (len(fields) == 1 or fields[1:] == ["64"]):
            self.ascii = False
        else:
            raise _ScpiError(-224, "Illegal parameter value")
        return None

    async def _form_q(self, arg: str) -> bytes:
        """FORM?: ASC or REAL,64."""
        self._no_arg(arg)
        return b"ASC" if self.ascii else b"REAL,64"

    async def stop(self) -> None:
        """Abort any acquisition, then close connections and the listener."""
        self._abort()
        await super().stop()

