"""Emulators on the wire (raw sockets, no pyvisa) and the furnace thermal plant.

Lake Shore 336: identity, ``;`` compound messages, LF vs CR LF input, reply formats of the manual (ch. 6),
*ESR bits for unknown (32) and malformed/out-of-range (16) commands with no reply and a surviving server,
RAMP/SETP/RANGE/OUTMODE round trips, live ramp over TCP. Thermal plant: ramp following, overshoot,
cooling, exponential approach to ambient, sample lag, heater ranges. SCPI array instruments: block format,
axis/unit, *OPC? timing on the simulated clock, error queue.
"""

from __future__ import annotations

import asyncio
import math
import re
import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from hotstage.simulated.clock import SimClock
from hotstage.simulated.faults import PlantFault
from hotstage.simulated.lakeshore_server import LakeShore336Server
from hotstage.simulated.scpi_server import ScpiArrayServer, decode_block
from hotstage.simulated.thermal import ClockedFurnace, FurnacePlant, ThermalParameters
from hotstage.simulated.world import SimWorld


# ----------------------------------------------------------------------------------------- helpers
class LoopThread:
    """An asyncio loop in a daemon thread, for running servers under test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 10.0):
        """Run a coroutine on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.run(self.loop.shutdown_default_executor(), 30.0)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5.0)
        self.loop.close()


class RawClient:
    """Raw TCP client: send bytes, read terminated lines or binary blocks."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def readline(self) -> bytes:
        """One line including its terminator."""
        while b"\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"

    def read_exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_block(self) -> np.ndarray:
        """One IEEE-488.2 definite-length block followed by LF."""
        head = self.read_exactly(2)
        assert head[:1] == b"#", head
        ndig = int(head[1:2])
        length = int(self.read_exactly(ndig))
        payload = self.read_exactly(length)
        assert self.read_exactly(1) == b"\n"
        return decode_block(b"#" + str(ndig).encode() + str(length).encode() + payload)

    def nothing_pending(self, wait: float = 0.15) -> bool:
        """True if no bytes arrive within ``wait`` seconds."""
        if self.buf:
            return False
        self.sock.settimeout(wait)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return True
        finally:
            self.sock.settimeout(5.0)
        self.buf += chunk
        return False

    def close(self) -> None:
        self.sock.close()


class LS:
    """Lake Shore client: CR LF out, replies decoded without CR LF."""

    def __init__(self, client: RawClient) -> None:
        self.c = client

    def write(self, msg: str, term: bytes = b"\r\n") -> None:
        self.c.send(msg.encode("ascii") + term)

    def query(self, msg: str, term: bytes = b"\r\n") -> str:
        self.write(msg, term)
        line = self.c.readline()
        assert line.endswith(b"\r\n"), line
        return line[:-2].decode("ascii")


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture
def lakeshore(loop_thread: LoopThread) -> Iterator[tuple[LS, ClockedFurnace]]:
    """A Lake Shore 336 emulator on a furnace alone and a connected raw client. Its clock is stepped (it stands
    still between `backend.clock.advance(...)` calls): what a test reads cannot depend on how loaded the machine is."""
    backend = ClockedFurnace(SimClock(1000.0, stepped=True, idle_grace_s=3600.0))
    server = LakeShore336Server(backend)
    loop_thread.run(server.start())
    client = RawClient(server.port)
    yield LS(client), backend
    client.close()
    loop_thread.run(server.stop())


# --------------------------------------------------------------------------------- Lake Shore 336
IDN_RE = re.compile(r"^LSCI,MODEL336,[^,/]+/[^,]*,[0-9.]+$")
K_RE = re.compile(r"^[+-]\d{4}\.\d{3}$")  # +0295.150
C_RE = re.compile(r"^[+-]\d{3}\.\d{3}$")  # +022.000
HTR_RE = re.compile(r"^[+-]\d{3}\.\d$")  # +045.2
RAMP_RE = re.compile(r"^[01],[+-]\d+\.\d$")  # 1,+10.0


def test_identity_and_terminators(lakeshore):
    ls, _ = lakeshore
    assert IDN_RE.match(ls.query("*IDN?"))
    assert IDN_RE.match(ls.query("*IDN?", term=b"\n"))  # LF alone accepted, reply still CR LF
    assert ls.query("*idn?").startswith("LSCI,MODEL336,")  # case-insensitive


def test_reply_formats(lakeshore):
    ls, _ = lakeshore
    assert K_RE.match(ls.query("KRDG? A"))
    assert K_RE.match(ls.query("KRDG? B"))
    assert ls.query("KRDG? C") == "+0000.000"  # no sensor on C
    assert C_RE.match(ls.query("CRDG? A"))
    assert abs(float(ls.query("CRDG? A")) - 22.0) < 0.01  # starts at ambient
    assert abs(float(ls.query("KRDG? A")) - 295.15) < 0.01
    assert K_RE.match(ls.query("SETP? 1"))
    assert RAMP_RE.match(ls.query("RAMP? 1"))
    assert ls.query("RANGE? 1") == "0"
    assert HTR_RE.match(ls.query("HTR? 1"))
    assert ls.query("RAMPST? 1") == "0"
    assert re.match(r"^[0-3],[0-4],[01]$", ls.query("OUTMODE? 1"))
    assert ls.query("OUTMODE? 1") == "1,1,0"
    assert re.match(r"^[+-]\d{4}\.\d,[+-]\d{4}\.\d,[+-]\d{4}$", ls.query("PID? 1"))
    all_k = ls.query("KRDG? 0").split(",")
    assert len(all_k) == 4 and all(K_RE.match(v) for v in all_k)


def test_compound_messages(lakeshore):
    ls, _ = lakeshore
    reply = ls.query("*IDN?;KRDG? A;CRDG? B;SETP? 1")
    parts = reply.split(";")
    assert len(parts) == 4
    assert IDN_RE.match(parts[0]) and K_RE.match(parts[1]) and C_RE.match(parts[2]) and K_RE.match(parts[3])
    # commands and queries mixed: commands execute in order, only queries reply
    assert ls.query("RAMP 1,0,5.0;RAMP? 1;SETP 1,300.5;SETP? 1 ; RANGE? 1") == "0,+5.0;+0300.500;0"
    assert ls.c.nothing_pending()


def test_esr_bits_and_survival(lakeshore):
    ls, _ = lakeshore
    assert int(ls.query("*ESR?")) == 128  # power-on bit at start-up
    assert int(ls.query("*ESR?")) == 0  # cleared by reading
    ls.write("FOO 1")  # unknown command
    ls.write("BOGUS?")  # unknown query: no reply
    assert ls.c.nothing_pending()
    assert int(ls.query("*ESR?")) == 32
    ls.write("SETP 1,abc")  # malformed number
    assert int(ls.query("*ESR?")) == 16
    ls.write("RANGE 1,7")  # out of range
    assert int(ls.query("*ESR?")) == 16
    assert ls.query("RANGE? 1") == "0"  # unchanged
    ls.write("RAMP 1,1,500")  # rate beyond 100 K/min
    ls.write("SETP 1")  # missing field
    assert int(ls.query("*ESR?")) == 16
    # a failed query produces no reply, the rest of the message still answers
    assert ls.query("KRDG? Z;*IDN?").startswith("LSCI,MODEL336,")
    assert int(ls.query("*ESR?")) == 16
    assert ls.query("FOO?;KRDG? A;HTR? 9").startswith("+")
    assert int(ls.query("*ESR?")) == 48
    # garbage bytes and an empty message: still alive
    ls.c.send(b"\xff\xfe\x00\r\n\r\n")
    assert IDN_RE.match(ls.query("*IDN?"))
    assert int(ls.query("*ESR?")) == 32


def test_status_commands(lakeshore):
    ls, _ = lakeshore
    ls.write("*CLS")
    assert ls.query("*ESR?") == "000"
    assert ls.query("*OPC?") == "1"
    ls.write("*OPC")
    assert int(ls.query("*ESR?")) == 1
    ls.write("*ESE 32")
    assert int(ls.query("*ESE?")) == 32
    assert int(ls.query("*STB?")) & 0x20 == 0
    ls.write("NOPE")
    assert int(ls.query("*STB?")) & 0x20  # ESB summarises the enabled command error
    ls.write("*CLS")
    assert int(ls.query("*STB?")) & 0x20 == 0
    assert ls.query("*TST?") == "0"


def test_round_trips_and_reset(lakeshore):
    ls, _ = lakeshore
    ls.write("RAMP 1,1,10")
    assert ls.query("RAMP? 1") == "1,+10.0"
    ls.write("RAMP 1,0,2.5")
    assert ls.query("RAMP? 1") == "0,+2.5"
    ls.write("SETP 1,623.15")  # ramp off: the setpoint steps
    assert ls.query("SETP? 1") == "+0623.150"
    ls.write("setp 2, 300")
    assert ls.query("SETP? 2") == "+0300.000"
    for r in ("3", "2", "1", "0"):
        ls.write(f"RANGE 1,{r}")
        assert ls.query("RANGE? 1") == r
    ls.write("OUTMODE 1,3,2,1")
    assert ls.query("OUTMODE? 1") == "3,2,1"
    ls.write("PID 1,25,5.5,0")
    assert ls.query("PID? 1") == "+0025.0,+0005.5,+0000"
    ls.write("MOUT 1,12.5")
    assert ls.query("MOUT? 1") == "+012.50"
    ls.write("RANGE 1,3;RAMP 1,1,10")
    ls.write("*RST")
    assert ls.query("RANGE? 1;OUTMODE? 1;RAMP? 1;RAMPST? 1") == "0;1,1,0;0,+10.0;0"
    assert abs(float(ls.query("SETP? 1")) - 295.15) < 1e-6
    assert int(ls.query("*ESR?")) & 0x30 == 0  # nothing above was an error


def test_live_ramp_over_tcp(lakeshore):
    """Ramp 22 -> 40 °C at 100 K/min: RAMPST? 1 while ramping, then 0, readback near target."""
    ls, backend = lakeshore
    ls.write("RAMP 1,1,100;SETP 1,313.15;RANGE 1,3")
    assert ls.query("RAMPST? 1") == "1"
    backend.clock.advance(3.0)
    assert float(ls.query("SETP? 1")) < 313.15  # SETP? reports the moving setpoint
    ramp_s = 3.0
    while ls.query("RAMPST? 1") == "1":
        backend.clock.advance(1.0)
        ramp_s += 1.0
        assert ramp_s < 60.0
    assert 8.0 <= ramp_s <= 12.0  # from the setpoint or readback (22–25 °C) to 40 °C at 100 K/min: 9–11 s
    backend.clock.advance(300.0)  # settled
    assert abs(float(ls.query("CRDG? A")) - 40.0) < 0.5
    assert float(ls.query("HTR? 1")) > 0.0
    ls.write("RANGE 1,0")
    assert float(ls.query("HTR? 1")) == 0.0


def test_multiple_connections_share_the_instrument(lakeshore):
    ls, _ = lakeshore
    other = LS(RawClient(ls.c.sock.getpeername()[1]))
    try:
        ls.write("SETP 1,350")
        assert other.query("SETP? 1") == "+0350.000"
    finally:
        other.c.close()


# ------------------------------------------------------------------------------------ thermal plant
def _run(plant: FurnacePlant, until_s: float, every_s: float = 1.0) -> np.ndarray:
    """Advance and record (t, setpoint, A, B, output %, ramping) every ``every_s``."""
    rows = []
    t = plant.time_s
    while t < until_s - 1e-9:
        t += every_s
        plant.advance_to(t)
        lp = plant.loop(1)
        rows.append((plant.time_s, lp.setpoint_C, plant.sensor_C, plant.sample_C, lp.output_percent, lp.ramping))
    return np.array(rows, dtype=float)


def test_ramp_follow_overshoot_and_sample_lag():
    """RANGE 3, RAMP 10 K/min, SETP 350 °C: readback follows the ramp, small overshoot, sample lags."""
    plant = FurnacePlant()
    plant.set_ramp(1, True, 10.0)
    plant.set_setpoint(1, 350.0)
    plant.set_range(1, 3)
    ramp_end = (350.0 - 22.0) / 10.0 * 60.0  # 1968 s
    rec = _run(plant, ramp_end + 900.0)
    t, sp, a, b, out, ramping = rec.T
    during = (t > 60.0) & (t < ramp_end)
    assert np.all(ramping[t < ramp_end - 1.0] == 1.0) and ramping[-1] == 0.0
    assert np.max(np.abs(a[during] - sp[during])) < 3.0  # follows the ramp within a few °C
    assert np.allclose(sp[during], 22.0 + t[during] / 6.0, atol=0.05)  # setpoint ramps at 10 K/min
    overshoot = a[t > ramp_end].max() - 350.0
    assert 0.1 < overshoot < 2.0, overshoot
    assert abs(a[-1] - 350.0) < 0.1  # settles
    lag = (a - b)[during]
    assert 2.0 < lag.mean() < 5.0  # tau_B x rate = 20 s x 1/6 K/s ≈ 3.3 °C
    assert np.all(lag[5:] > 0.0)  # sample below sensor while heating
    assert 0.0 < out[-1] < 100.0  # holding needs part of the high range


def test_plant_fault_above_a_temperature_starts_when_the_sensor_reaches_it():
    """``overshoot@above=50,duration=9``: the plant runs as without the fault until its sensor reads 50 °C, then
    its output is 100 % for exactly 9 simulated s, then the fault is over."""
    def plant_on_a_ramp(fault: PlantFault | None) -> tuple[FurnacePlant, np.ndarray]:
        plant = FurnacePlant()
        plant.set_ramp(1, True, 30.0)
        plant.set_setpoint(1, 90.0)
        plant.set_range(1, 3)
        plant.fault = fault
        return plant, _run(plant, 200.0, every_s=0.5)

    _, free = plant_on_a_ramp(None)
    plant, rec = plant_on_a_ramp(PlantFault("overshoot", 0.0, None, above_C=50.0, duration_s=9.0))
    t, a, out = rec[:, 0], rec[:, 2], rec[:, 4]
    start, end = plant.fault.start_s, plant.fault.end_s
    assert end == start + 9.0
    assert a[t < start].max() < 50.0 <= free[np.searchsorted(free[:, 0], start), 2] + 0.1  # started on reaching it
    np.testing.assert_array_equal(rec[t < start], free[t < start])  # untouched before
    assert np.all(out[(t > start) & (t < end)] == 100.0) and free[(t > start) & (t < end), 4].max() < 100.0
    assert not plant.fault.active(plant.time_s, a[-1])


def test_cooling_ramp_followed_then_exponential():
    """From 350 °C, a 10 K/min cooling ramp is followed to ~60 °C; near ambient the decay is exponential."""
    prm = ThermalParameters(initial_C=350.0)
    plant = FurnacePlant(prm)
    plant.set_setpoint(1, 350.0)
    plant.set_range(1, 3)
    _run(plant, 600.0)  # hold at 350
    t_start = plant.time_s
    plant.set_ramp(1, True, 10.0)
    plant.set_setpoint(1, 22.0)
    rec = _run(plant, t_start + 4000.0)
    t, sp, a, b, out, _ = rec.T
    follow = sp > 60.0
    assert np.max(np.abs(a[follow] - sp[follow])) < 3.0
    assert a[follow].max() < 351.0
    assert np.all(b[follow] >= a[follow] - 0.05)  # sample warmer than sensor while cooling
    # heater off for the late part: exponential approach with the plant time constant
    late = (a - 22.0 < 15.0) & (a - 22.0 > 1.0) & (out == 0.0)
    slope = np.polyfit(t[late], np.log(a[late] - 22.0), 1)[0]
    assert -1.0 / 150.0 < slope < -1.0 / 260.0, 1.0 / slope  # tau ≈ 180 s (+ sensor lag)
    assert a[-1] - 22.0 < 2.0


def test_heater_off_cools_and_ranges_limit_power():
    prm = ThermalParameters(initial_C=200.0)
    plant = FurnacePlant(prm)
    rec = _run(plant, 1200.0)  # RANGE 0 from power-up: off
    a = rec[:, 2]
    assert np.all(np.diff(a) < 1e-9) and a[-1] < 50.0 and a[-1] > 22.0
    assert np.all(rec[:, 4] == 0.0)
    ceilings = {}
    for rng in (1, 2, 3):
        p = FurnacePlant()
        p.set_setpoint(1, 700.0)
        p.set_range(1, rng)
        ceilings[rng] = _run(p, 3000.0, 10.0)[-1, 2]
    assert ceilings[1] < 30.0  # low: 1 % of 120 W
    assert 80.0 < ceilings[2] < 95.0  # medium: 10 %
    assert ceilings[3] > 600.0  # high: full power
    assert math.isclose(prm.time_constant_s, 180.0) and prm.ceiling_C > 700.0


def test_lazy_fixed_step_advance_is_slice_independent():
    """Advancing in many small calls or one big one gives the same trajectory (fixed internal step)."""
    p1, p2 = FurnacePlant(), FurnacePlant()
    for p in (p1, p2):
        p.set_ramp(1, True, 20.0)
        p.set_setpoint(1, 150.0)
        p.set_range(1, 3)
    p1.advance_to(500.0)
    for k in range(1, 5001):
        p2.advance_to(k * 0.1)
    assert abs(p1.sensor_C - p2.sensor_C) < 1e-9 and abs(p1.sample_C - p2.sample_C) < 1e-9


# ---------------------------------------------------------------------------------- SCPI instruments
@pytest.fixture(scope="module")
def world() -> SimWorld:
    return SimWorld(time_scale=200.0, seed=1)


@pytest.fixture
def scpi(loop_thread: LoopThread, world: SimWorld):
    """XRD and PL emulators on the shared world, with raw clients."""
    servers = {name: ScpiArrayServer(world, name) for name in ("xrd", "pl")}
    for s in servers.values():
        loop_thread.run(s.start())
    clients = {name: RawClient(s.port) for name, s in servers.items()}
    yield clients, servers
    for c in clients.values():
        c.close()
    for s in servers.values():
        loop_thread.run(s.stop())


def _q(c: RawClient, msg: str) -> str:
    c.send(msg.encode() + b"\n")
    line = c.readline()
    assert line.endswith(b"\n") and not line.endswith(b"\r\n")
    return line[:-1].decode()


def test_scpi_identity_axis_and_block_format(scpi, world):
    clients, _ = scpi
    x = clients["xrd"]
    assert re.match(r"^HOTSTAGE-SIM,XRD-DETECTOR,[^,]+,[^,]+$", _q(x, "*IDN?"))
    assert _q(x, "FETC:AXIS:UNIT?") == "deg"
    x.send(b"FETC:AXIS?\n")
    axis = x.read_block()
    assert axis.shape == world.axis("xrd").shape and axis[0] == pytest.approx(5.0) and axis[-1] == pytest.approx(60.0)
    assert np.all(np.diff(axis) > 0)
    assert float(_q(x, "SOUR:WAV?")) == pytest.approx(1.5406, abs=1e-4)
    assert _q(clients["pl"], "FETC:AXIS:UNIT?") == "nm"
    # long forms and ASCII format
    assert _q(x, ":SYSTem:ERRor:NEXT?") == '0,"No error"'
    assert _q(x, "FORM:DATA ASC;FORM?") == "ASC"
    ascii_axis = np.array([float(v) for v in _q(x, "FETC:AXIS?").split(",")])
    assert np.allclose(ascii_axis, axis)
    assert _q(x, "FORM:DATA REAL,64;FORM?") == "REAL,64"


def test_scpi_acquisition_waits_for_sim_clock(scpi, world):
    clients, _ = scpi
    p = clients["pl"]
    assert _q(p, "CONF:INT 20;CONF:INT?") == "20"
    t0 = time.monotonic()
    p.send(b"INIT\n")
    assert _q(p, "STAT:OPER:COND?") == "1"
    assert _q(p, "*OPC?") == "1"
    waited = time.monotonic() - t0
    assert waited >= 20.0 / world.time_scale * 0.95  # not before the integration time has passed
    assert _q(p, "STAT:OPER:COND?") == "0"
    p.send(b"FETC:DATA?\n")
    data = p.read_block()
    assert data.shape == world.axis("pl").shape and np.all(data >= 0.0) and data.sum() > 0.0
    assert _q(p, "SYST:ERR?") == '0,"No error"'


def test_scpi_errors(scpi):
    clients, servers = scpi
    x = clients["xrd"]
    _q(x, "*RST;*CLS;*OPC?")
    x.send(b"FETC:DATA?\n")  # nothing acquired yet: no reply, error queued
    assert x.nothing_pending()
    assert _q(x, "SYST:ERR?") == '-230,"Data corrupt or stale"'
    assert int(_q(x, "*ESR?")) == 16
    x.send(b"FOO:BAR 3\n")
    assert _q(x, "SYST:ERR?") == '-113,"Undefined header"'
    assert int(_q(x, "*ESR?")) == 32
    x.send(b"CONF:INT -1\nCONF:INT abc\n")
    assert _q(x, "SYST:ERR?").startswith("-222,")
    assert _q(x, "SYST:ERR?").startswith("-104,")
    assert _q(x, "SYST:ERR?") == '0,"No error"'
    assert _q(clients["pl"], "SOUR:WAV?;*IDN?").startswith("HOTSTAGE-SIM,PL-SPECTROMETER")  # PL has no source
    assert _q(clients["pl"], "SYST:ERR?").startswith("-113,")
    x.send(b"\xff\xfe\n")
    assert _q(x, "*IDN?").startswith("HOTSTAGE-SIM,")
    # INIT while acquiring is ignored with -213; ABOR forgets the data
    _q(x, "CONF:INT 1000;*CLS;*OPC?")
    x.send(b"INIT\nINIT\n")
    assert _q(x, "SYST:ERR?") == '-213,"Init ignored"'
    x.send(b"ABOR\n")
    assert _q(x, "STAT:OPER:COND?") == "0"
    x.send(b"FETC:DATA?\n")
    assert _q(x, "SYST:ERR?").startswith("-230,")


# ------------------------------------------------------------------- issue 14 item 3: the rest of the 336, SCPI
def test_lakeshore_input_required_and_reading_status(lakeshore):
    ls, _ = lakeshore
    ls.query("*ESR?")
    for bare in ("KRDG?", "CRDG?", "SRDG?", "RDGST?"):  # the manual requires an input
        ls.write(bare)
        assert ls.c.nothing_pending(), bare
        assert ls.query("*ESR?") == "016", bare
    ls.write("KRDG? E")
    assert ls.query("*ESR?") == "016"
    assert ls.query("RDGST? A;RDGST? B") == "000;000"
    # C: the factory diode set-up with nothing wired: invalid reading + sensor units overrange, reads zero
    assert ls.query("INTYPE? C;RDGST? C;KRDG? C") == "1,0,0,0,1;129;+0000.000"
    ls.write("INTYPE C,0,0,0,0,1")  # disabled: invalid reading only
    assert ls.query("INTYPE? C;RDGST? C;KRDG? C") == "0,0,0,0,1;001;+0000.000"
    ls.write("INTYPE A,0,0,0,0,1")  # a disabled input reads zero even with a sensor on it
    assert ls.query("KRDG? A;RDGST? A") == "+0000.000;001"
    ls.write("INTYPE A,2,1,3,1,1")
    assert abs(float(ls.query("KRDG? A")) - 295.15) < 0.01
    assert ls.query("*ESR?") == "000"


def test_lakeshore_settings_formats_and_round_trips(lakeshore):
    ls, _ = lakeshore
    ls.query("*ESR?")
    assert ls.query("INTYPE? A;INCRV? A;INCRV? B") == "2,1,3,1,1;06;12"
    assert ls.query("CRVHDR? 6") == "PT-100         ,DIN 43760 ,3,+0800.000,2"
    ls.write('CRVHDR 21,"Sample Pt","SN 7",3,+0700.0,2;CRVPT 21,1,18.52,73.15')
    assert ls.query("CRVHDR? 21;CRVPT? 21,1;CRVPT? 21,2") == (
        "Sample Pt      ,SN 7      ,3,+0700.000,2;+18.52000,+73.150;+0.00000,+0.000")
    ls.write("CRVHDR 6,\"x\",\"y\",3,800,2")  # standard curves are read-only
    assert ls.query("*ESR?") == "016"
    ls.write('INNAME B,"Sample, K type"')
    assert ls.query("INNAME? B") == "Sample, K type"
    ls.write("INNAME B,\"a name longer than fifteen\"")
    assert ls.query("*ESR?") == "016"
    ls.write("HTRSET 1,1,0,1.2,2")
    assert ls.query("HTRSET? 1") == "1,0,+1.200,2"
    ls.write("HTRSET 3,1,0,1.2,2")  # heater set-up: outputs 1 and 2 only
    assert ls.query("*ESR?") == "016"
    ls.write("ZONE 1,3,+0400.0,50,20,0,0,2,1,10")
    assert ls.query("ZONE? 1,3") == "+0400.000,+0050.0,+0020.0,+0000,+000.00,2,1,+0010.0"
    ls.write("FILTER A,1,8,5;DISPLAY 4,2,1;DISPFLD 2,2,2;LOCK 1,042;IEEE 7;LEDS 0;BRIGT 3")
    assert ls.query("FILTER? A;DISPLAY?;DISPFLD? 2;LOCK?;IEEE?;LEDS?;BRIGT?") == "1,08,05;4,2,1;2,2;1,042;07;0;3"
    ls.write("OPSTE 9;ATUNE 1,2")
    assert ls.query("OPSTE?;TUNEST?") == "009;0,1,0,00"
    assert ls.query("AOUT? 3") == "+000.00"
    ls.write("AOUT? 1")  # analog outputs 3 and 4 only
    assert ls.query("*ESR?") == "016"
    assert ls.query("*ESR?") == "000"
    ls.write("*RST")  # control settings only: the input set-up, curves and names survive
    assert ls.query("INNAME? B;INCRV? B;HTRSET? 1") == "Sample, K type;12;1,0,+1.200,2"


def test_lakeshore_alarm_relay_and_operation_status(lakeshore):
    ls, backend = lakeshore
    ls.query("*ESR?")  # clear power-on
    ls.write("ALARM A,1,310.0,250.0,2.0,1,0,1;RELAY 1,2,A,1;RELAY 2,1,,")
    assert ls.query("ALARM? A") == "1,+0310.000,+0250.000,+0002.000,1,0,1"
    assert ls.query("ALARMST? A;RELAYST? 1;RELAYST? 2;RELAY? 1") == "0,0;0;1;2,A,1"
    assert int(ls.query("OPST?")) & 0b1 == 0
    assert ls.query(f"SETP 1,{350.0:.3f};RANGE 1,3;RANGE? 1") == "3"  # the reply: executed before the clock jumps
    backend.clock.advance(300.0)  # far above 310 K on the high range
    assert float(ls.query("KRDG? A")) > 312.0
    assert ls.query("ALARMST? A;RELAYST? 1") == "1,0;1"  # high alarm, the relay follows it
    assert int(ls.query("OPST?")) & 0b1 == 1  # bit 0: alarm
    assert ls.query("RANGE 1,0;RANGE? 1") == "0"
    backend.clock.advance(3000.0)  # cooled back below the limit: the latched alarm stays on until ALMRST
    assert float(ls.query("KRDG? A")) < 305.0
    assert ls.query("ALARMST? A") == "1,0"
    ls.write("ALMRST")
    assert ls.query("ALARMST? A;RELAYST? 1") == "0,0;0"
    # a disabled alarm (the official driver's "ALARM A,0,,,,,,": blank fields keep the thresholds)
    ls.write("ALARM A,0,,,,,,")
    assert ls.query("ALARM? A;*ESR?") == "0,+0310.000,+0250.000,+0002.000,1,0,1;000"


def test_lakeshore_colon_after_semicolon(lakeshore):
    """Lake Shore's own driver joins commands with ``;:`` (``SETP 1,300;:*ESR?``)."""
    ls, _ = lakeshore
    ls.query("*ESR?")  # clear power-on
    assert ls.query("SETP 1,300;:SETP? 1;:*ESR?") == "+0300.000;000"


def test_scpi_service_request_enable(scpi):
    clients, _ = scpi
    x = clients["xrd"]
    _q(x, "*RST;*CLS;*OPC?")
    assert _q(x, "*SRE?") == "0"
    x.send(b"*SRE 255\n")
    assert _q(x, "*SRE?") == "191"  # bit 6 (MSS itself) ignored, IEEE 488.2
    x.send(b"*SRE 256\n")
    assert _q(x, "SYST:ERR?").startswith("-222,")
    assert _q(x, "*SRE?") == "191"
    x.send(b"*SRE 32;*ESE 32\n")
    _q(x, "*ESR?")
    assert int(_q(x, "*STB?")) & 0x60 == 0
    x.send(b"FOO:BAR\n")  # command error: ESB, and MSS because ESB is enabled in *SRE
    assert int(_q(x, "*STB?")) & 0x60 == 0x60
    x.send(b"*SRE 0\n")
    assert int(_q(x, "*STB?")) & 0x60 == 0x20
    x.send(b"*SRE 32\n*RST\n*CLS\n")  # neither *RST nor *CLS clears the enable register
    assert _q(x, "*SRE?") == "32"
    x.send(b"*SRE 0;*ESE 0;*CLS\n")
    assert _q(x, "SYST:ERR?") == '0,"No error"'


def test_scpi_relative_headers(scpi):
    clients, _ = scpi
    p = clients["pl"]
    _q(p, "*RST;*CLS;*OPC?")
    assert _q(p, "CONF:INT 3;INT?") == "3"  # INT? is CONF:INT? (SCPI-99 §6.2.4)
    assert _q(p, "CONFigure:INTegration 4;*IDN?;INT?").endswith(";4")  # a common command keeps the path
    assert _q(p, ":CONF:INT 5;:CONF:INT?") == "5"  # a leading colon starts at the root
    assert _q(p, "SYST:ERR?;ERR:COUN?") == '0,"No error";0'  # SYST: + ERR:COUN?
    assert _q(p, "FETC:AXIS:UNIT?;UNIT?") == "nm;nm"  # path FETC:AXIS:
    assert _q(p, "CONF:INT 6;CONF:INT?") == "6"  # tolerated: not under CONF:, so from the root
    p.send(b"CONF:INT 7;BOGUS?\n")  # names nothing, relative or from the root
    assert _q(p, "SYST:ERR?") == '-113,"Undefined header"'
    assert _q(p, "CONF:INT?") == "7"
