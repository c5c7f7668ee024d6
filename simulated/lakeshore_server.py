"""Lake Shore Model 336 emulator: an asyncio TCP server speaking the controller's command set.

Follows the Model 336 user manual, chapter 6 (computer interface operation):

* Raw TCP socket (the real instrument listens on port 7777; the emulator binds 127.0.0.1 on an ephemeral
  port unless told otherwise). Input lines end in CR LF or LF; every reply ends in CR LF.
* One message may carry several commands/queries separated by ``;`` (a ``:`` after the ``;``, as Lake Shore's
  driver sends, is ignored); the replies of its queries are joined by ``;`` into one reply line. Commands never
  reply. Mnemonics are case-insensitive; the parameter list follows the mnemonic after a space (tolerated
  without it), fields separated by commas (commas inside double quotes belong to a string field), blanks
  around fields ignored.
* Reply formats: ``KRDG?``/``SETP?`` ``+0295.150`` (K), ``CRDG?`` ``+022.000`` (°C), ``RAMP?``
  ``1,+10.0``, ``RANGE?`` ``3``, ``HTR?`` ``+045.2`` (%), ``RAMPST?`` ``0|1``, ``OUTMODE?`` ``1,1,0``,
  ``PID?`` ``+0010.0,+0010.0,+0000``, ``MOUT?`` ``+000.00``, ``TLIMIT?`` ``+0450.000`` (K; the manual's
  format line says ``+nnnn``, clients should parse any decimal), ``*ESR?``/``*STB?``/``RDGST?`` ``nnn``;
  ``KRDG? 0`` / ``CRDG? 0`` return all four inputs comma-separated. The input is required (``KRDG?``
  alone is an execution error, manual 6.6); a disabled input or one with no sensor reads ``+0000.000``.
* IEEE-488.2 status: ``*ESR?`` (cleared on read), ``*ESE``/``*ESE?``, ``*SRE``/``*SRE?``, ``*STB?``,
  ``*CLS``, ``*OPC`` (sets bit 0), ``*OPC?`` -> ``1``, ``*RST`` (power-up settings: heaters off, ramp off,
  setpoints at ambient, stored PID), ``*TST?`` -> ``0``, ``*WAI``. Standard event bits: 7 power on (set
  at start-up), 5 command error (unknown mnemonic, 32), 4 execution error (bad/missing/out-of-range
  parameter, 16), 2 query error (4), 0 operation complete (1). A failed query produces no reply.
* Inputs: A = control sensor in the furnace block, B = sample thermocouple, C/D have no sensor and
  read ``+0000.000``; ``RDGST?`` bits: 000 valid, 001 input disabled (INTYPE type 0), 129 enabled with nothing
  wired (invalid reading + sensor units overrange).
* The rest of chapter 6's command set (inputs INTYPE/INCRV/INNAME/FILTER/DIOCUR/MDAT, curves CRVHDR/CRVPT/
  CRVDEL/SCAL, heater set-up HTRSET/WARMUP/ANALOG/AOUT?, zones, ATUNE/TUNEST?, alarms and relays, display,
  interface IEEE/INTSEL/NET/NETID?/WEBLOG, operation status OPST?/OPSTE/OPSTR?) lives in
  ``hotstage.simulated.lakeshore_commands`` as plain state; this module is the transport, the dispatch and the
  commands that act on the plant.
* Outputs 1/2 are heater outputs (1 drives the furnace), 3/4 analog outputs (HTR?/HTRSET? refuse them).
  ``TLIMIT <input>,<limit K>`` (manual ch. 6, Temperature Limit Command): if any input exceeds its
  limit, all control outputs are turned off (range 0); 0 K turns the limit of that input off. The plant
  enforces it at every integration step (``hotstage.simulated.thermal``), whether or not a client is connected.
  Limits used for validation: TLIMIT 0-9999 K, setpoint 0-1500 K, ramp 0 (infinite) or 0.1-100 K/min, ranges 0-3
  (outputs 1/2) / 0-1 (3/4), PID P 0.1-1000, I 0.1-1000, D 0-200, MOUT 0-100 %.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import struct
from collections.abc import Callable
from typing import Any, ContextManager, Protocol

from .lakeshore_commands import ExecError, Model336Settings, fields, integer, num, split_fields
from .thermal import INPUTS, KELVIN_OFFSET, FurnacePlant

__all__ = ["LineServer", "LakeShore336Server", "FurnaceBackend", "ESR_OPC", "ESR_QYE", "ESR_EXE", "ESR_CME", "ESR_PON"]

log = logging.getLogger(__name__)

ESR_OPC = 1
ESR_QYE = 4
ESR_EXE = 16
ESR_CME = 32
ESR_PON = 128

SETPOINT_MAX_K = 1500.0
TLIMIT_MAX_K = 9999.0
RAMP_MIN, RAMP_MAX = 0.1, 100.0


class FurnaceBackend(Protocol):
    """Anything that lends the plant, advanced to now, under its lock (SimWorld, ClockedFurnace)."""

    def furnace(self) -> ContextManager[FurnacePlant]:
        """Context manager yielding the synced plant."""
        ...


class LineServer:
    """Minimal asyncio TCP server on 127.0.0.1: one handler task per client, clean shutdown."""

    name = "server"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, faults: Any = None, fault_name: str = "") -> None:
        """Remember where to bind; ``port=0`` picks an ephemeral port at start().

        ``faults`` (a ``hotstage.simulated.faults.FaultInjector``) and ``fault_name`` (this instrument's name in it)
        switch on fault injection: link faults before a message is executed, reply faults on its reply.
        """
        self.host = host
        self.port = int(port)
        self.faults = faults
        self.fault_name = fault_name
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def resource(self) -> str:
        """VISA resource string of this server (``TCPIP0::127.0.0.1::<port>::SOCKET``)."""
        return f"TCPIP0::{self.host}::{self.port}::SOCKET"

    async def start(self) -> None:
        """Bind and start listening (call on the event loop that will serve)."""
        self._server = await asyncio.start_server(self._client, self.host, self.port, limit=1 << 20)
        self.port = self._server.sockets[0].getsockname()[1]
        log.debug("%s listening on %s:%d", self.name, self.host, self.port)

    async def stop(self) -> None:
        """Stop listening, close every client connection and wait for their handlers."""
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection until EOF or shutdown."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self.serve_connection(reader, writer)
        except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:  # a bug in a handler must not take the server down
            log.exception("%s: connection handler failed", self.name)
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def read_line(self, reader: asyncio.StreamReader) -> bytes | None:
        """Next LF-terminated line without CR/LF; None at EOF; over-long lines raise ValueError."""
        try:
            raw = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            return None
        except asyncio.LimitOverrunError as exc:
            # discard the over-long message
            await reader.readexactly(exc.consumed)
            raise ValueError("message too long") from exc
        return raw.rstrip(b"\n").rstrip(b"\r")

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Protocol loop of one connection (subclasses)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------ fault hooks
    def _fault(self, line: bytes, kinds: tuple[str, ...]) -> Any:
        """The armed fault of ``kinds`` firing on this message, or None (no injector: always None)."""
        if self.faults is None:
            return None
        return self.faults.take(self.fault_name, line.decode("ascii", "replace"), kinds)

    def link_fault(self, line: bytes, writer: asyncio.StreamWriter) -> bool:
        """Apply a ``drop_connection`` fault to this message: reset (or close) the link; True if dropped."""
        fault = self._fault(line, ("drop_connection",))
        if fault is None:
            return False
        sock = writer.get_extra_info("socket")
        if sock is not None and fault.params.get("mode", "reset") == "reset":
            with contextlib.suppress(OSError):  # SO_LINGER 0: close() sends RST, as a rebooting instrument does
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort() if fault.params.get("mode", "reset") == "reset" else writer.close()
        log.info("%s: fault drop_connection on %r", self.name, line[:40])
        return True

    async def send_reply(self, writer: asyncio.StreamWriter, line: bytes, reply: bytes, terminator: bytes) -> None:
        """Write ``reply`` + terminator, unless a reply fault (timeout/slow/garbage/truncated) says otherwise."""
        fault = self._fault(line, ("timeout", "slow", "garbage", "truncated"))
        if fault is not None:
            log.info("%s: fault %s on %r", self.name, fault.kind, line[:40])
            if fault.kind == "timeout":
                return
            if fault.kind == "slow":
                from .faults import DEFAULT_SLOW_S

                await asyncio.sleep(float(fault.params.get("delay", DEFAULT_SLOW_S)))
            elif fault.kind == "garbage":
                from .faults import garble

                reply = garble(reply)
            elif fault.kind == "truncated":
                reply = reply[: len(reply) // 2]
        writer.write(reply + terminator)
        await writer.drain()


_num, _int, _args = num, integer, fields

_HEADER = re.compile(r"^\s*:?(\*?[A-Za-z]+\??)(.*)$", re.S)


def _fmt_k(v: float | None) -> str:
    """Kelvin reading/setpoint format ``+0295.150``."""
    return "+0000.000" if v is None else f"{v:+09.3f}"


def _fmt_c(v: float | None) -> str:
    """Celsius reading format ``+022.000``."""
    return "+000.000" if v is None else f"{v:+08.3f}"


class LakeShore336Server(LineServer):
    """Model 336 command interpreter in front of a :class:`FurnaceBackend`."""

    name = "LakeShore336"

    def __init__(
        self,
        backend: FurnaceBackend,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        serial: str = "LSSIM01",
        option: str = "#######",
        firmware: str = "2.9",
        faults: Any = None,
        fault_name: str = "furnace",
    ) -> None:
        """Serve ``backend``'s plant; identity fields as in ``*IDN?``; ``faults`` as in LineServer."""
        super().__init__(host=host, port=port, faults=faults, fault_name=fault_name)
        self.backend = backend
        self.identity = f"LSCI,MODEL336,{serial}/{option},{firmware}"
        self.esr = ESR_PON
        self.ese = 0
        self.sre = 0
        self.remote_mode = 0
        self._commands: dict[str, Callable[[list[str]], str | None]] = {
            "*IDN?": lambda a: self._noargs(a, self.identity),
            "*ESR?": self._q_esr,
            "*ESE": lambda a: self._set_reg("ese", a),
            "*ESE?": lambda a: self._noargs(a, f"{self.ese:03d}"),
            "*SRE": lambda a: self._set_reg("sre", a),
            "*SRE?": lambda a: self._noargs(a, f"{self.sre:03d}"),
            "*STB?": lambda a: self._noargs(a, f"{self._stb():03d}"),
            "*CLS": self._c_cls,
            "*OPC": self._c_opc,
            "*OPC?": lambda a: self._noargs(a, "1"),
            "*RST": self._c_rst,
            "*TST?": lambda a: self._noargs(a, "0"),
            "*WAI": lambda a: self._noargs(a, None),
            "KRDG?": lambda a: self._q_reading(a, kelvin=True),
            "CRDG?": lambda a: self._q_reading(a, kelvin=False),
            "SRDG?": self._q_srdg,
            "RDGST?": self._q_rdgst,
            "SETP": self._c_setp,
            "SETP?": self._q_setp,
            "RAMP": self._c_ramp,
            "RAMP?": self._q_ramp,
            "RAMPST?": self._q_rampst,
            "RANGE": self._c_range,
            "RANGE?": self._q_range,
            "HTR?": self._q_htr,
            "HTRST?": self._q_htrst,
            "OUTMODE": self._c_outmode,
            "OUTMODE?": self._q_outmode,
            "PID": self._c_pid,
            "PID?": self._q_pid,
            "MOUT": self._c_mout,
            "MOUT?": self._q_mout,
            "MODE": self._c_mode,
            "TLIMIT": self._c_tlimit,
            "TLIMIT?": self._q_tlimit,
            "MODE?": lambda a: self._noargs(a, str(self.remote_mode)),
            "AOUT?": self._q_aout,
        }
        self.settings = Model336Settings(self._reading_K, self._operation_condition)
        for mnemonic, handler in self.settings.handlers().items():
            self._commands.setdefault(mnemonic, handler)

    # ---------------------------------------------------------------------------------- protocol
    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read messages, execute them, write the joined query replies with CR LF."""
        while True:
            try:
                line = await self.read_line(reader)
            except ValueError:
                self.esr |= ESR_CME
                continue
            if line is None:
                return
            if self.link_fault(line, writer):
                return
            reply = self.execute(line)
            if reply is not None:
                await self.send_reply(writer, line, reply.encode("ascii"), b"\r\n")

    def execute(self, line: bytes | str) -> str | None:
        """Execute one message (``;``-joined units); return the reply line, or None if no query replied."""
        if isinstance(line, bytes):
            try:
                text = line.decode("ascii")
            except UnicodeDecodeError:
                self.esr |= ESR_CME
                return None
        else:
            text = line
        replies: list[str] = []
        for unit in text.split(";"):
            if not unit.strip():
                continue
            m = _HEADER.match(unit)
            handler = self._commands.get(m.group(1).upper()) if m else None
            if handler is None:
                self.esr |= ESR_CME
                continue
            rest = m.group(2).strip()
            args = split_fields(rest) if rest else []
            try:
                out = handler(args)
            except ExecError:
                self.esr |= ESR_EXE
                continue
            if out is not None:
                replies.append(out)
        return ";".join(replies) if replies else None

    # -------------------------------------------------------------------------------- helpers
    def _plant(self) -> ContextManager[FurnacePlant]:
        """The backend's plant synced to now, under its lock."""
        return self.backend.furnace()

    @staticmethod
    def _noargs(args: list[str], reply: str | None) -> str | None:
        """Reply for parameter-less commands."""
        _args(args, 0)
        return reply

    @staticmethod
    def _output(s: str) -> int:
        """Output number 1-4."""
        return _int(s, 1, 4)

    @staticmethod
    def _heater_output(s: str) -> int:
        """Heater output number 1-2."""
        return _int(s, 1, 2)

    _input = staticmethod(Model336Settings._letter)
    """Input letter A-D (execution error otherwise)."""

    def _stb(self) -> int:
        """Status byte: bit 5 ESB (enabled standard events), bit 6 RQS/MSS (enabled summary bits)."""
        stb = 0
        if self.esr & self.ese:
            stb |= 0x20
        if stb & self.sre & ~0x40:
            stb |= 0x40
        return stb

    # ------------------------------------------------------------------------------ commands
    def _q_esr(self, args: list[str]) -> str:
        """*ESR?: read and clear the standard event status register."""
        _args(args, 0)
        value, self.esr = self.esr, 0
        return f"{value:03d}"

    def _set_reg(self, attr: str, args: list[str]) -> None:
        """*ESE / *SRE: set an enable register (0-255)."""
        (v,) = _args(args, 1)
        setattr(self, attr, _int(v, 0, 255))
        return None

    def _c_cls(self, args: list[str]) -> None:
        """*CLS: clear the event register (enable registers unchanged)."""
        _args(args, 0)
        self.esr = 0
        return None

    def _c_opc(self, args: list[str]) -> None:
        """*OPC: every command completes immediately, so set the OPC bit now."""
        _args(args, 0)
        self.esr |= ESR_OPC
        return None

    def _c_rst(self, args: list[str]) -> None:
        """*RST: controller to power-up settings (heaters off, ramp off, setpoints at ambient)."""
        _args(args, 0)
        with self._plant() as plant:
            plant.reset_controller()
        return None

    def _c_mode(self, args: list[str]) -> None:
        """MODE 0 local / 1 remote / 2 remote with local lockout (bookkeeping only)."""
        (v,) = _args(args, 1)
        self.remote_mode = _int(v, 0, 2)
        return None

    def _reading_K(self, letter: str) -> float | None:
        """The plant's reading of an input in K (None: no sensor wired), for the settings' alarms and status."""
        with self._plant() as plant:
            v = plant.reading_C(letter)
        return None if v is None else v + KELVIN_OFFSET

    def _readings(self, which: str) -> list[tuple[str, float | None]]:
        """(letter, °C or None) for ``0`` (all inputs) or one letter; a disabled input reads None (zero)."""
        names = list(INPUTS) if which == "0" else [self._input(which)]
        with self._plant() as plant:
            vals = [plant.reading_C(n) for n in names]
        return [(n, None if self.settings.inputs[n].sensor_type == 0 else v) for n, v in zip(names, vals)]

    def _q_reading(self, args: list[str], *, kelvin: bool) -> str:
        """KRDG?/CRDG? <input|0>: one input or all four (the input is required, manual 6.6)."""
        (which,) = _args(args, 1)
        fmt = _fmt_k if kelvin else _fmt_c
        return ",".join(fmt(None if v is None else (v + KELVIN_OFFSET if kelvin else v))
                        for _, v in self._readings(which.upper()))

    def _q_srdg(self, args: list[str]) -> str:
        """SRDG? <input|0>: sensor units (A: Pt100 ohms, Callendar-Van Dusen IEC 60751; B: type K mV)."""
        (which,) = _args(args, 1)
        out = []
        for n, t in self._readings(which.upper()):
            if t is None:
                out.append("+000.000")
            elif n == "A":
                out.append(f"{100.0 * (1 + 3.9083e-3 * t - 5.775e-7 * t * t):+08.3f}")
            else:  # type K, ~41 µV/K near room temperature to 400 °C (NIST ITS-90 table slope)
                out.append(f"{0.0410 * t:+08.3f}")
        return ",".join(out)

    def _q_rdgst(self, args: list[str]) -> str:
        """RDGST? <input>: status bits (000 valid; 001 disabled input; 129 enabled input with no sensor)."""
        (v,) = _args(args, 1)
        return f"{self.settings.status(self._input(v)):03d}"

    def _q_aout(self, args: list[str]) -> str:
        """AOUT? <output 3|4>: analog output, % of full scale (outputs 3/4 drive nothing here)."""
        (out,) = _args(args, 1)
        o = _int(out, 3, 4)
        with self._plant() as plant:
            return f"{plant.loop(o).output_percent:+07.2f}"

    def _operation_condition(self) -> int:
        """OPST bits (manual, OPST?): 4 new sensor reading (always), 3 loop 1 ramp done, 2 loop 2 ramp done,
        1 sensor overload (an enabled input with no sensor), 0 alarm (any input's high or low alarm on)."""
        cond = 1 << 4
        with self._plant() as plant:
            if not plant.loop(1).ramping:
                cond |= 1 << 3
            if not plant.loop(2).ramping:
                cond |= 1 << 2
        if any(self.settings.status(n) & 128 for n in INPUTS):
            cond |= 1 << 1
        self.settings.sample()
        if any(al.high or al.low for al in self.settings.alarms.values()):
            cond |= 1
        return cond

    def _c_setp(self, args: list[str]) -> None:
        """SETP <out>,<K>."""
        out, val = _args(args, 2)
        o = self._output(out)
        k = _num(val, 0.0, SETPOINT_MAX_K)
        with self._plant() as plant:
            plant.set_setpoint(o, k - KELVIN_OFFSET)
        return None

    def _q_setp(self, args: list[str]) -> str:
        """SETP? <out>: the present control setpoint (moves while ramping), K."""
        (out,) = _args(args, 1)
        o = self._output(out)
        with self._plant() as plant:
            return _fmt_k(plant.loop(o).setpoint_C + KELVIN_OFFSET)

    def _c_ramp(self, args: list[str]) -> None:
        """RAMP <out>,<0|1>,<rate K/min: 0 (infinite) or 0.1-100>."""
        out, on, rate = _args(args, 3)
        o = self._output(out)
        flag = _int(on, 0, 1)
        r = _num(rate, 0.0, RAMP_MAX)
        if 0.0 < r < RAMP_MIN - 1e-9:
            raise ExecError("ramp rate below 0.1 K/min")
        with self._plant() as plant:
            plant.set_ramp(o, bool(flag), r)
        return None

    def _q_ramp(self, args: list[str]) -> str:
        """RAMP? <out> -> ``<0|1>,<rate>``."""
        (out,) = _args(args, 1)
        o = self._output(out)
        with self._plant() as plant:
            lp = plant.loop(o)
            return f"{int(lp.ramp_on)},{lp.ramp_rate_K_per_min:+.1f}"

    def _q_rampst(self, args: list[str]) -> str:
        """RAMPST? <out> -> 1 while the setpoint is ramping."""
        (out,) = _args(args, 1)
        o = self._output(out)
        with self._plant() as plant:
            return "1" if plant.loop(o).ramping else "0"

    def _c_range(self, args: list[str]) -> None:
        """RANGE <out>,<0-3> (outputs 3/4: 0-1)."""
        out, rng = _args(args, 2)
        o = self._output(out)
        r = _int(rng, 0, 3 if o <= 2 else 1)
        with self._plant() as plant:
            plant.set_range(o, r)
        return None

    def _q_range(self, args: list[str]) -> str:
        """RANGE? <out>."""
        (out,) = _args(args, 1)
        o = self._output(out)
        with self._plant() as plant:
            return str(plant.loop(o).heater_range)

    def _q_htr(self, args: list[str]) -> str:
        """HTR? <1|2>: heater output, % of the selected range."""
        (out,) = _args(args, 1)
        o = self._heater_output(out)
        with self._plant() as plant:
            return f"{plant.loop(o).output_percent:+06.1f}"

    def _q_htrst(self, args: list[str]) -> str:
        """HTRST? <1|2>: heater error code, 0 = no error."""
        (out,) = _args(args, 1)
        self._heater_output(out)
        return "0"

    def _c_outmode(self, args: list[str]) -> None:
        """OUTMODE <out>,<mode>,<input 0-4>,<powerup enable 0|1>."""
        out, mode, inp, pwr = _args(args, 4)
        o = self._output(out)
        m = _int(mode, 0, 3 if o <= 2 else 5)
        i = _int(inp, 0, 4)
        p = _int(pwr, 0, 1)
        with self._plant() as plant:
            lp = plant.loop(o)
            lp.mode, lp.control_input, lp.powerup_enable = m, i, p
        return None

    def _q_outmode(self, args: list[str]) -> str:
        """OUTMODE? <out> -> ``<mode>,<input>,<powerup enable>``."""
        (out,) = _args(args, 1)
        o = self._output(out)
        with self._plant() as plant:
            lp = plant.loop(o)
            return f"{lp.mode},{lp.control_input},{lp.powerup_enable}"

    def _c_pid(self, args: list[str]) -> None:
        """PID <out>,<P 0.1-1000>,<I 0.1-1000>,<D 0-200>."""
        out, p, i, d = _args(args, 4)
        o = self._heater_output(out)
        vals = (_num(p, 0.1, 1000.0), _num(i, 0.1, 1000.0), _num(d, 0.0, 200.0))
        with self._plant() as plant:
            plant.loop(o).pid = vals
        return None

    def _q_pid(self, args: list[str]) -> str:
        """PID? <out> -> ``+0010.0,+0010.0,+0000``."""
        (out,) = _args(args, 1)
        o = self._heater_output(out)
        with self._plant() as plant:
            p, i, d = plant.loop(o).pid
        return f"{p:+07.1f},{i:+07.1f},{int(round(d)):+05d}"

    def _c_mout(self, args: list[str]) -> None:
        """MOUT <out>,<% 0-100>: manual output (used in open-loop mode)."""
        out, val = _args(args, 2)
        o = self._output(out)
        v = _num(val, 0.0, 100.0)
        with self._plant() as plant:
            plant.loop(o).manual_output = v
        return None

    def _q_mout(self, args: list[str]) -> str:
        """MOUT? <out>."""
        (out,) = _args(args, 1)
        o = self._output(out)
        with self._plant() as plant:
            return f"{plant.loop(o).manual_output:+07.2f}"

    def _c_tlimit(self, args: list[str]) -> None:
        """TLIMIT <input A-D>,<limit K 0-9999>: all outputs off while that input reads above the limit; 0 = off."""
        inp, val = _args(args, 2)
        name = self._input(inp)
        limit = _num(val, 0.0, TLIMIT_MAX_K)
        with self._plant() as plant:
            plant.set_temperature_limit(name, limit)
        return None

    def _q_tlimit(self, args: list[str]) -> str:
        """TLIMIT? <input A-D> -> the limit in K, ``+0450.000`` (``+0000.000`` = no limit)."""
        (inp,) = _args(args, 1)
        name = self._input(inp)
        with self._plant() as plant:
            return _fmt_k(plant.temperature_limits_K[name])
