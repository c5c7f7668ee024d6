"""Tests of devices/: Lake Shore 336 furnace, SCPI array instruments and the experiment clock.

Most tests run against pyvisa-sim (simulated/visa/hotstage.yaml, copied per test so that every test starts
from the file's default state). The binary-block and wire-sequence tests run a tiny threaded TCP server
inside this file, so that they exercise the real pyvisa-py socket transport (termination handling, blocks
containing LF and non-ASCII bytes, long *OPC? waits).
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import bluesky.plan_stubs as bps
import bluesky.protocols
import event_model
import numpy as np
import pytest
import pyvisa
from bluesky import RunEngine
from bluesky.plans import count
from bluesky.utils import RunEngineInterrupted

from conftest import located
from hotstage.devices import (
    AcquisitionError,
    ExperimentClock,
    FTIRSpectrometer,
    FurnaceSetCancelled,
    FurnaceSettleTimeout,
    InstrumentConnectionError,
    InstrumentIdentityError,
    LakeShore336Furnace,
    NotConnectedError,
    PLSpectrometer,
    XRDDetector,
    celsius_to_kelvin,
    kelvin_to_celsius,
)
from hotstage.devices.visa import InstrumentTimeoutError

YAML = Path(__file__).resolve().parents[1] / "simulated" / "visa" / "hotstage.yaml"
FURNACE = "TCPIP0::127.0.0.1::7777::SOCKET"
FURNACE_335 = "TCPIP0::127.0.0.2::7777::SOCKET"
FURNACE_SERIAL = "ASRL1::INSTR"
XRD = "TCPIP0::127.0.0.1::5025::SOCKET"
FTIR = "TCPIP0::127.0.0.1::5026::SOCKET"
PL = "TCPIP0::127.0.0.1::5027::SOCKET"
XRD_BROKEN = "TCPIP0::127.0.0.2::5025::SOCKET"


@pytest.fixture
def sim(tmp_path: Path) -> str:
    """A pyvisa-sim backend string on a fresh copy of the YAML (fresh instrument state per test)."""
    path = tmp_path / "hotstage.yaml"
    shutil.copy(YAML, path)
    return f"{path}@sim"


@pytest.fixture
def furnace(sim: str) -> Iterator[LakeShore336Furnace]:
    """A furnace on pyvisa-sim, fast time base (100 experiment s per wall s)."""
    dev = LakeShore336Furnace(FURNACE, name="furnace", resource_manager=sim, time_scale=100.0, settle_time=20.0)
    dev.connect()
    yield dev
    dev.destroy()


# --------------------------------------------------------------------------------------------------
# furnace
# --------------------------------------------------------------------------------------------------
def test_conversion_kelvin_celsius() -> None:
    assert kelvin_to_celsius(298.15) == pytest.approx(25.0)
    assert celsius_to_kelvin(-273.15) == pytest.approx(0.0)
    assert kelvin_to_celsius(celsius_to_kelvin(321.5)) == pytest.approx(321.5)


def test_furnace_identity_and_readings(furnace: LakeShore336Furnace) -> None:
    assert furnace.identify().startswith("LSCI,MODEL336,")
    # wire: KRDG? A -> +0298.150 K, KRDG? B -> +0297.650 K
    assert furnace.temperature.get() == pytest.approx(25.0)
    assert furnace.sample_temperature.get() == pytest.approx(24.5)
    assert furnace.heater_output.get() == pytest.approx(12.5)
    assert furnace.ramping.get() == 0


def test_furnace_setpoint_written_in_kelvin(furnace: LakeShore336Furnace) -> None:
    furnace.setpoint.put(300.0)
    assert furnace.visa.query("SETP? 1") == "+0573.150"
    assert furnace.setpoint.get() == pytest.approx(300.0)


def test_furnace_read_describe_kinds(furnace: LakeShore336Furnace) -> None:
    reading = furnace.read()
    desc = furnace.describe()
    assert set(reading) == set(desc) == {
        "furnace_temperature",
        "furnace_sample_temperature",
        "furnace_setpoint",
        "furnace_ramping",
        "furnace_heater_output",
    }
    assert furnace.hints == {"fields": ["furnace_temperature"]}
    assert desc["furnace_temperature"]["units"] == "degC"
    assert desc["furnace_temperature"]["dtype"] == "number"
    assert desc["furnace_temperature"]["source"] == f"visa://{FURNACE}/KRDG? A"
    assert desc["furnace_heater_output"]["units"] == "%"
    config = furnace.read_configuration()
    assert set(config) == set(furnace.describe_configuration()) == {
        "furnace_ramp_rate",
        "furnace_ramp_on",
        "furnace_heater_range",
        "furnace_tolerance",
        "furnace_settle_time",
        "furnace_timeout_margin",
        "furnace_timeout_fraction",
        "furnace_fallback_rate",
        "furnace_heater_range_on",
        "furnace_end_of_plan",
    }
    assert config["furnace_ramp_rate"]["value"] == pytest.approx(10.0)
    assert config["furnace_ramp_on"]["value"] == 0
    assert config["furnace_heater_range"]["value"] == 0
    assert config["furnace_settle_time"]["value"] == 20.0
    assert config["furnace_end_of_plan"]["value"] == "hold"


def test_furnace_without_sample_input(sim: str) -> None:
    dev = LakeShore336Furnace(FURNACE, name="f2", resource_manager=sim, sample_input=None).connect()
    try:
        assert "f2_sample_temperature" not in dev.read()
        assert np.isnan(dev.sample_temperature.get())
    finally:
        dev.destroy()


def test_furnace_configuration_signals(furnace: LakeShore336Furnace) -> None:
    furnace.ramp_rate.put(5.0)
    assert furnace.visa.query("RAMP? 1") == "0,5.0"
    furnace.ramp_on.put(1)
    assert furnace.visa.query("RAMP? 1") == "1,5.0"
    furnace.configure_ramp(12.5)
    assert furnace.visa.query("RAMP? 1") == "1,12.5"
    assert furnace.ramp_rate.get() == pytest.approx(12.5)
    assert furnace.ramp_on.get() == 1
    furnace.heater_range.put(2)
    assert furnace.visa.query("RANGE? 1") == "2"
    with pytest.raises(ValueError, match="heater range"):
        furnace.heater_range.put(5)
    with pytest.raises(ValueError, match="ramp rate"):
        furnace.configure_ramp(250.0)


def test_furnace_stop_switches_heater_off(furnace: LakeShore336Furnace) -> None:
    furnace.heater_range.put(3)
    assert furnace.visa.query("RANGE? 1") == "3"
    furnace.stop()
    assert furnace.visa.query("RANGE? 1") == "0"
    assert furnace.heater_range.get() == 0


def test_furnace_stop_cancels_pending_set(furnace: LakeShore336Furnace) -> None:
    furnace.configure_ramp(10.0)
    status = furnace.set(200.0)  # the fixed readback never gets there
    assert not status.done
    furnace.stop()
    with pytest.raises(FurnaceSetCancelled):
        status.wait(2)
    assert furnace.visa.query("RANGE? 1") == "0"


def test_furnace_end_of_plan_setting_outside_a_runengine(sim: str) -> None:
    dev = LakeShore336Furnace(FURNACE, name="f3", resource_manager=sim).connect()
    try:
        assert dev.end_of_plan.get() == "hold"  # the default
        dev.heater_range.put(2)
        dev.stop(success=True)  # a caller that says the plan succeeded
        assert dev.visa.query("RANGE? 1") == "2"
        dev.stop(success=False)  # pause / abort
        assert dev.visa.query("RANGE? 1") == "0"
        dev.heater_range.put(2)
        dev.stop()  # the session's last stop(): off
        assert dev.visa.query("RANGE? 1") == "0"
        dev.end_of_plan.put("off")
        dev.heater_range.put(2)
        dev.stop(success=True)
        assert dev.visa.query("RANGE? 1") == "0"
        with pytest.raises(ValueError, match="f3_end_of_plan: 'maybe' rejected: must be one of hold, off"):
            dev.end_of_plan.put("maybe")
        assert dev.end_of_plan.get() == "off"
    finally:
        dev.destroy()


def test_furnace_set_to_readback_settles_after_settle_time(furnace: LakeShore336Furnace) -> None:
    furnace.configure_ramp(10.0)
    t0 = time.monotonic()
    status = furnace.set(25.3)  # within tolerance (1 °C) of the fixed 25.000 °C readback
    status.wait(5)
    wall = time.monotonic() - t0
    assert status.success
    # settle_time 20 experiment s at time_scale 100 = 0.2 wall s
    assert wall >= 0.2  # not before the settle time (a lower bound only: a busy machine may take longer)
    assert furnace.visa.query("SETP? 1") == "+0298.450"
    assert furnace.visa.query("RANGE? 1") == "3"  # heater was off: switched on at heater_range_on
    assert furnace.visa.query("RAMP? 1") == "1,10.0"
    assert furnace.visa.query("*ESR?") == "0"  # every command of the sequence was understood
    assert furnace.position == pytest.approx(25.0)


def test_furnace_settle_timeout_from_distance_and_rate(sim: str) -> None:
    dev = LakeShore336Furnace(
        FURNACE, name="hot", resource_manager=sim, time_scale=1000.0, settle_time=10.0, timeout_margin=120.0
    ).connect()
    try:
        dev.configure_ramp(10.0)
        # 100 °C at 10 °C/min = 600 s, ×1.25 + 10 + 120 = 880 experiment s = 0.88 wall s
        assert dev.settle_timeout(25.0, 125.0, 10.0) == pytest.approx(880.0)
        t0 = time.monotonic()
        status = dev.set(125.0)
        with pytest.raises(FurnaceSettleTimeout) as info:
            status.wait(10)
        wall = time.monotonic() - t0
        assert wall >= 0.8  # not before the timeout (the upper bound is the status.wait(10) above)
        msg = str(info.value)
        assert "125.000 °C" in msg
        assert "last readback 25.000 °C" in msg
        assert FURNACE in msg
        assert "880.0 experiment s" in msg
        assert status.timeout_exp_s == pytest.approx(880.0)
    finally:
        dev.destroy()


def test_furnace_serial_resource(sim: str) -> None:
    dev = LakeShore336Furnace(FURNACE_SERIAL, name="fser", resource_manager=sim).connect()
    try:
        assert dev.visa.resource.baud_rate == 57600
        assert dev.visa.resource.data_bits == 7
        assert dev.temperature.get() == pytest.approx(25.0)
    finally:
        dev.destroy()


def test_wrong_identity_is_a_clear_error(sim: str) -> None:
    with pytest.raises(InstrumentIdentityError) as info:
        LakeShore336Furnace(FURNACE_335, name="f335", resource_manager=sim).connect()
    assert "MODEL335" in str(info.value)
    assert FURNACE_335 in str(info.value)
    with pytest.raises(InstrumentIdentityError, match="PL"):
        XRDDetector(PL, name="notxrd", resource_manager=sim, expected_idn="XRD").connect()


def test_missing_resource_is_a_clear_error(sim: str) -> None:
    missing = "TCPIP0::10.9.9.9::7777::SOCKET"
    with pytest.raises(InstrumentConnectionError) as info:
        LakeShore336Furnace(missing, name="nowhere", resource_manager=sim).connect()
    assert missing in str(info.value)
    assert "nowhere" in str(info.value)
    # a real socket that nobody listens on (pyvisa-py): connection refused, not a hang
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    refused = f"TCPIP0::127.0.0.1::{port}::SOCKET"
    with pytest.raises(InstrumentConnectionError, match=refused.replace(".", r"\.")):
        XRDDetector(refused, name="gone", resource_manager="@py", io_timeout=1.0).connect()


# --------------------------------------------------------------------------------------------------
# spectrometers / XRD on pyvisa-sim
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cls", "resource", "data_key", "axis_key", "axis_units", "n", "first_axis", "first_value"),
    [
        (XRDDetector, XRD, "xrd_counts", "xrd_two_theta", "deg", 16, 10.0, 100.0),
        (FTIRSpectrometer, FTIR, "xrd_absorbance", "xrd_wavenumber", "cm^-1", 14, 64.0, 2.0),
        (PLSpectrometer, PL, "xrd_counts", "xrd_wavelength", "nm", 16, 256.0, 16.0),
    ],
)
def test_array_detector_trigger_read_describe(
    sim: str, cls: type, resource: str, data_key: str, axis_key: str, axis_units: str, n: int,
    first_axis: float, first_value: float,
) -> None:
    det = cls(resource, name="xrd", resource_manager=sim, exposure=2.5, time_scale=10.0).connect()
    try:
        det.stage()
        assert det.visa.query("CONF:INT?") == "2.5"  # written at stage
        status = det.trigger()
        status.wait(5)
        assert status.success
        assert det.instrument_error() == '0,"No error"'  # every command of the sequence was understood
        reading = det.read()
        assert list(reading) == [data_key]
        value = reading[data_key]["value"]
        assert value.dtype == np.float64 and value.shape == (n,)
        assert value[0] == first_value
        desc = det.describe()[data_key]
        assert desc["dtype"] == "array" and desc["dtype_numpy"] == "<f8" and desc["shape"] == [n]
        config = det.read_configuration()
        cdesc = det.describe_configuration()
        assert config[axis_key]["value"].shape == (n,)
        assert config[axis_key]["value"][0] == first_axis
        assert cdesc[axis_key]["units"] == axis_units and cdesc[axis_key]["shape"] == [n]
        assert config["xrd_exposure"]["value"] == 2.5 and cdesc["xrd_exposure"]["units"] == "s"
        assert config["xrd_opc_margin"]["value"] == 10.0 and cdesc["xrd_opc_margin"]["units"] == "s"
        if cls is XRDDetector:
            assert config["xrd_wavelength"]["value"] == pytest.approx(1.5406)
            assert cdesc["xrd_wavelength"]["units"] == "angstrom"
    finally:
        det.unstage()
        det.destroy()


def test_block_length_mismatch_fails_clearly(sim: str) -> None:
    det = XRDDetector(XRD_BROKEN, name="bad", resource_manager=sim).connect()
    try:
        det.stage()
        with pytest.raises(AcquisitionError) as info:
            det.trigger().wait(5)
        msg = str(info.value)
        assert "15 values" in msg and "has 16" in msg and XRD_BROKEN in msg
        assert 'SYST:ERR? -> 0,"No error"' in msg
    finally:
        det.destroy()


def test_runengine_count_documents_validate(sim: str) -> None:
    xrd = XRDDetector(XRD, name="xrd", resource_manager=sim).connect()
    pl = PLSpectrometer(PL, name="pl", resource_manager=sim).connect()
    thz = FTIRSpectrometer(FTIR, name="thz", resource_manager=sim).connect()
    furnace = LakeShore336Furnace(FURNACE, name="furnace", resource_manager=sim).connect()
    clock = ExperimentClock(time_scale=60.0)
    docs: list[tuple[str, dict]] = []
    RE = RunEngine({}, call_returns_result=False)
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    try:
        RE(count([xrd, pl, thz, furnace, clock], num=2))
    finally:
        for d in (xrd, pl, thz, furnace):
            d.destroy()
    names = [n for n, _ in docs]
    assert names == ["start", "descriptor", "event", "event", "stop"]
    for name, doc in docs:
        event_model.schema_validators[event_model.DocumentNames[name]].validate(doc)
    descriptor = docs[1][1]
    keys = descriptor["data_keys"]
    assert keys["xrd_counts"]["shape"] == [16] and keys["xrd_counts"]["units"] == "counts"
    assert keys["thz_absorbance"]["shape"] == [14]
    assert keys["pl_counts"]["dims"] == ["wavelength"]
    assert keys["furnace_temperature"]["units"] == "degC"
    assert keys["clock_elapsed"]["units"] == "s"
    conf = descriptor["configuration"]
    assert conf["xrd"]["data"]["xrd_two_theta"][-1] == 40.0
    assert conf["xrd"]["data_keys"]["xrd_two_theta"]["units"] == "deg"
    assert conf["thz"]["data_keys"]["thz_wavenumber"]["units"] == "cm^-1"
    assert conf["furnace"]["data"]["furnace_ramp_rate"] == pytest.approx(10.0)
    assert conf["furnace"]["data"]["furnace_end_of_plan"] == "hold"  # the run's metadata says what the heater does
    assert conf["furnace"]["data_keys"]["furnace_end_of_plan"]["choices"] == ["hold", "off"]
    assert conf["furnace"]["data"]["furnace_tolerance"] == 1.0
    assert conf["furnace"]["data_keys"]["furnace_settle_time"]["units"] == "s"
    assert conf["xrd"]["data"]["xrd_opc_margin"] == 10.0
    event = docs[2][1]
    assert len(event["data"]["xrd_counts"]) == 16
    assert event["data"]["furnace_temperature"] == pytest.approx(25.0)
    assert docs[3][1]["data"]["clock_elapsed"] > event["data"]["clock_elapsed"]
    assert docs[-1][1]["exit_status"] == "success"


# --------------------------------------------------------------------------------------------------
# the experiment clock
# --------------------------------------------------------------------------------------------------
def test_clock_elapsed_in_experiment_seconds() -> None:
    wall = [100.0]
    clock = ExperimentClock(name="clock", time_scale=60.0, wall_clock=lambda: wall[0], reset_on_stage=True)
    wall[0] = 102.5
    assert clock.elapsed.get() == pytest.approx(150.0)
    assert clock.read()["clock_elapsed"]["value"] == pytest.approx(150.0)
    assert clock.hints == {"fields": ["clock_elapsed"]}
    clock.reset()
    wall[0] = 103.0
    assert clock.elapsed.get() == pytest.approx(30.0)
    clock.stage()
    assert clock.elapsed.get() == pytest.approx(0.0)
    clock.unstage()
    assert clock.to_wall(60.0) == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------------
# real pyvisa-py transport against a throwaway TCP server
# --------------------------------------------------------------------------------------------------
class LineServer:
    """Threaded TCP server on 127.0.0.1: splits input at ``term``, answers via ``handler``, logs lines."""

    def __init__(self, handler: Callable[[str], bytes | None], term: bytes) -> None:
        self.handler = handler
        self.term = term
        self.received: list[str] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            conn.settimeout(0.2)
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while self.term in buf:
                    line, buf = buf.split(self.term, 1)
                    text = line.decode()
                    self.received.append(text)
                    reply = self.handler(text)
                    if reply is not None:
                        conn.sendall(reply + self.term)

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


def _block(values: np.ndarray) -> bytes:
    payload = np.asarray(values, "<f8").tobytes()
    n = str(len(payload)).encode()
    return b"#" + str(len(n)).encode() + n + payload


def test_binary_blocks_over_pyvisa_py_socket() -> None:
    axis = np.linspace(600.0, 820.0, 2201)  # PL grid: bytes >= 0x80 and LF (0x0A) inside the block
    rng = np.random.default_rng(7)
    data = rng.normal(1000.0, 300.0, axis.size)
    payload = np.asarray(axis, "<f8").tobytes() + np.asarray(data, "<f8").tobytes()
    assert b"\n" in payload and max(payload) >= 0x80
    state = {"exposure": None}

    def handler(line: str) -> bytes | None:
        if line == "*IDN?":
            return b"HOTSTAGE-SIM,PL,SIM0002,0.1"
        if line.startswith("CONF:INT "):
            state["exposure"] = float(line.split()[1])
            return None
        if line == "INIT":
            return None
        if line == "STAT:OPER:COND?":  # asked right after INIT (dates the exposure's start)
            return b"1"
        if line == "*OPC?":
            time.sleep(state["exposure"] / 100.0)  # the emulator's time base: time_scale 100
            return b"1"
        if line == "FETC:AXIS:UNIT?":
            return b"nm"
        if line == "FETC:AXIS?":
            return _block(axis)
        if line == "FETC:DATA?":
            return _block(data)
        return None

    server = LineServer(handler, b"\n")
    pl = None
    try:
        # io_timeout 0.2 s < the 0.4 s integration: *OPC? must get its own, longer timeout
        pl = PLSpectrometer(
            f"TCPIP0::127.0.0.1::{server.port}::SOCKET", name="pl", resource_manager="@py",
            time_scale=100.0, exposure=40.0, io_timeout=0.2, opc_margin=1.0,
        ).connect()
        pl.stage()
        t0 = time.monotonic()
        pl.trigger().wait(5)
        assert time.monotonic() - t0 >= 0.4
        np.testing.assert_array_equal(pl.counts.get(), data)
        np.testing.assert_array_equal(pl.wavelength.get(), axis)
        assert state["exposure"] == 40.0
        assert server.received == [
            "*IDN?", "CONF:INT 40", "FETC:AXIS:UNIT?", "FETC:AXIS?", "INIT", "STAT:OPER:COND?", "*OPC?", "FETC:DATA?",
        ]
    finally:
        if pl is not None:
            pl.destroy()
        server.close()


def test_furnace_wire_sequence_over_socket_crlf() -> None:
    state = {"SETP": 293.15, "RAMP": "1,+5.0", "RANGE": "0"}

    def handler(line: str) -> bytes | None:
        head, _, args = line.partition(" ")
        if head == "*IDN?":
            return b"LSCI,MODEL336,LSA9999/0000000,2.9"
        if head == "KRDG?":
            return b"+0473.150" if args == "A" else b"+0470.000"
        if head == "RANGE?":
            return state["RANGE"].encode()
        if head == "RANGE":
            state["RANGE"] = args.split(",")[1]
            return None
        if head == "RAMP?":
            return state["RAMP"].encode()
        if head == "RAMP":
            state["RAMP"] = args.split(",", 1)[1]
            return None
        if head == "SETP":
            state["SETP"] = float(args.split(",")[1])
            return None
        return None

    server = LineServer(handler, b"\r\n")
    dev = None
    try:
        dev = LakeShore336Furnace(
            f"TCPIP0::127.0.0.1::{server.port}::SOCKET", name="furnace", resource_manager="@py",
            time_scale=1000.0, settle_time=5.0,
        ).connect()
        assert dev.temperature.get() == pytest.approx(200.0)
        server.received.clear()
        status = dev.set(200.0)
        status.wait(5)
        assert status.success
        # heater was off: start the ramp from the readback, then target, then heater on
        assert server.received[:8] == [
            "KRDG? A", "RANGE? 1", "RAMP? 1",
            "RAMP 1,0,5.0", "SETP 1,473.150", "RAMP 1,1,5.0",
            "SETP 1,473.150", "RANGE 1,3",
        ]
        assert set(server.received[8:]) == {"KRDG? A"}  # the watcher polls the control input only
        server.received.clear()
        dev.stop()
        deadline = time.monotonic() + 2.0  # a write has no reply: wait for the server thread to log it
        while not server.received and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.received == ["RANGE 1,0"]
    finally:
        if dev is not None:
            dev.destroy()
        server.close()


def test_device_opens_after_someone_closed_the_shared_resource_manager(sim: str) -> None:
    """pyvisa shares one manager per backend in a process; a user closing it must not break our next device."""
    pyvisa.ResourceManager(sim).close()
    furnace = LakeShore336Furnace(FURNACE, name="furnace", resource_manager=sim).connect()
    try:
        assert furnace.temperature.get() == pytest.approx(22.0, abs=50.0)
    finally:
        furnace.destroy()


# --------------------------------------------------------------------------------------------------
# offline construction, connect(), mock instruments, configuration signals, Locatable, end of plan
# --------------------------------------------------------------------------------------------------
NOWHERE = "TCPIP0::127.0.0.1::9::SOCKET"  # nobody is asked: constructing opens nothing


def _mock_furnace(**kwargs: object) -> LakeShore336Furnace:
    """A furnace on the in-memory Model 336, settling in 10 ms of wall time."""
    return LakeShore336Furnace(NOWHERE, name="furnace", mock=True, time_scale=100.0, settle_time=1.0,
                               **kwargs).connect()


def test_constructing_opens_nothing_and_use_before_connect_says_so() -> None:
    furnace = LakeShore336Furnace(NOWHERE, name="furnace", resource_manager="@py")
    xrd = XRDDetector(NOWHERE, name="xrd", resource_manager="@py")
    pl = PLSpectrometer(NOWHERE, name="pl", resource_manager="@py")  # no instrument-backed signal at all
    assert not furnace.connected and not xrd.connected and not pl.connected
    for action in (furnace.temperature.get, furnace.read, lambda: furnace.set(100.0), furnace.locate,
                   furnace.heater_off, xrd.trigger, xrd.stage, xrd.describe):
        with pytest.raises(NotConnectedError) as info:
            action()
        assert "call connect()" in str(info.value) and NOWHERE in str(info.value)
    with pytest.raises(NotConnectedError, match=r"^xrd \(TCPIP0"):
        xrd.trigger()
    # settings are there (and checked) before anything is connected
    assert furnace.tolerance.get() == 1.0 and xrd.opc_margin.get() == 10.0
    furnace.destroy()
    xrd.destroy()
    pl.destroy()


def test_connect_opens_the_session_and_checks_identity_once() -> None:
    server = LineServer(lambda line: b"HOTSTAGE-SIM,PL,SIM0002,0.1" if line == "*IDN?" else None, b"\n")
    try:
        pl = PLSpectrometer(f"TCPIP0::127.0.0.1::{server.port}::SOCKET", name="pl", resource_manager="@py")
        time.sleep(0.1)
        assert server.received == []  # constructing sent nothing
        assert pl.connect(timeout=2.0) is pl and pl.connected
        assert pl.connect() is pl  # connected already: nothing more is sent
        assert server.received == ["*IDN?"]
        pl.destroy()
        assert not pl.connected
    finally:
        server.close()


def test_connect_that_gets_no_identity_is_one_error_naming_device_and_resource() -> None:
    server = LineServer(lambda line: None, b"\n")  # accepts, never answers
    resource = f"TCPIP0::127.0.0.1::{server.port}::SOCKET"
    try:
        pl = PLSpectrometer(resource, name="pl", resource_manager="@py")
        with pytest.raises(InstrumentTimeoutError) as info:
            pl.connect(timeout=0.2)
        msg = str(info.value)
        assert "PL spectrometer 'pl'" in msg and "*IDN?" in msg and resource in msg
        assert not pl.connected  # the failed session was closed again
        with pytest.raises(NotConnectedError):
            pl.trigger()
    finally:
        server.close()


def test_mock_devices_are_described_read_moved_and_triggered_offline() -> None:
    furnace = _mock_furnace()
    assert furnace.connected and furnace.identify().startswith("LSCI,MODEL336,")
    assert furnace.temperature.get() == pytest.approx(25.0)
    assert set(furnace.read()) == set(furnace.describe())
    assert furnace.locate() == {"setpoint": pytest.approx(25.0), "readback": pytest.approx(25.0)}
    status = furnace.set(150.0)
    status.wait(5)
    assert status.success
    assert furnace.locate() == {"setpoint": 150.0, "readback": pytest.approx(150.0)}
    assert furnace.heater_range.get() == 3
    furnace.stop()
    assert furnace.visa.query("RANGE? 1") == "0"
    for cls, n, unit in ((XRDDetector, 351, "deg"), (FTIRSpectrometer, 191, "cm^-1"), (PLSpectrometer, 221, "nm")):
        det = cls(NOWHERE, name="det", exposure=2.0).connect(mock=True)
        det.stage()
        det.trigger().wait(5)
        (key,) = det.read()
        value = det.read()[key]["value"]
        assert value.shape == (n,) and np.all(np.isfinite(value)) and value.max() > 100.0
        assert det.describe()[key]["shape"] == [n]
        assert any(v.get("units") == unit for v in det.describe_configuration().values())
        assert det.visa.handler.integration_s == 2.0  # CONF:INT was written
        det.unstage()
        det.destroy()
    furnace.destroy()


def test_settings_are_checked_configuration_signals() -> None:
    with pytest.raises(ValueError, match="tolerance"):
        LakeShore336Furnace(NOWHERE, name="f", tolerance=0.0)
    with pytest.raises(ValueError, match="heater_range_on"):
        LakeShore336Furnace(NOWHERE, name="f", heater_range_on=0)
    with pytest.raises(ValueError, match="exposure"):
        XRDDetector(NOWHERE, name="x", exposure=-1.0)
    furnace = LakeShore336Furnace(NOWHERE, name="f", settle_time=12.0, tolerance=0.5, end_of_plan="off")
    cfg = furnace.describe_configuration()
    assert cfg["f_tolerance"]["units"] == "degC" and cfg["f_settle_time"]["units"] == "s"
    assert cfg["f_end_of_plan"]["dtype"] == "string" and cfg["f_end_of_plan"]["source"] == "setting://f_end_of_plan"
    # the settle logic reads the signals: a new settle_time changes the allowed time of the next move
    assert furnace.settle_timeout(25.0, 125.0, 10.0) == pytest.approx(600.0 * 1.25 + 12.0 + 120.0)
    furnace.settle_time.put(42.0)
    assert furnace.settle_timeout(25.0, 125.0, 10.0) == pytest.approx(600.0 * 1.25 + 42.0 + 120.0)
    with pytest.raises(ValueError, match="f_settle_time"):
        furnace.settle_time.put(float("nan"))


def test_furnace_is_locatable(furnace: LakeShore336Furnace) -> None:
    assert isinstance(furnace, bluesky.protocols.Locatable)
    RE = RunEngine({}, call_returns_result=True)
    location = located(RE(bps.locate(furnace)).plan_result, furnace)
    assert location == {"setpoint": pytest.approx(25.0), "readback": pytest.approx(25.0)}  # SETP? before any set


def _heater(furnace: LakeShore336Furnace) -> int:
    return int(furnace.visa.query("RANGE? 1"))


def test_end_of_plan_hold_keeps_the_heater_on_only_after_a_clean_plan() -> None:
    furnace = _mock_furnace()
    RE = RunEngine({}, call_returns_result=False)
    docs: list[tuple[str, dict]] = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    # success: bluesky calls stop(success=True); "hold" keeps the controller regulating
    RE(bps.mv(furnace, 120.0))
    assert _heater(furnace) == 3 and furnace.temperature.get() == pytest.approx(120.0)
    RE(count([furnace], num=1))
    assert _heater(furnace) == 3
    descriptor = next(doc for name, doc in docs if name == "descriptor")
    assert descriptor["configuration"]["furnace"]["data"]["furnace_end_of_plan"] == "hold"

    # failure after the move: bluesky still passes success=True, the heater must go off
    def failing() -> object:
        yield from bps.mv(furnace, 130.0)
        raise RuntimeError("detector on fire")

    with pytest.raises(RuntimeError, match="on fire"):
        RE(failing())
    assert _heater(furnace) == 0

    # pause (Ctrl-C, a suspender) then abort: off at the pause already
    def pausing() -> object:
        yield from bps.open_run()
        yield from bps.mv(furnace, 140.0)
        yield from bps.checkpoint()
        yield from bps.pause()
        yield from bps.close_run()

    with pytest.raises(RunEngineInterrupted):
        RE(pausing())
    assert RE.state == "paused" and _heater(furnace) == 0
    RE.abort("test")
    assert _heater(furnace) == 0 and docs[-1][1]["exit_status"] == "abort"

    # "off": heater off after every plan that moved the furnace, success included
    furnace.end_of_plan.put("off")
    RE(bps.mv(furnace, 120.0))
    assert _heater(furnace) == 0
    furnace.destroy()


def test_safe_furnace_wrapper_records_end_of_plan_off_and_restores_it() -> None:
    from hotstage.plans.safety import safe_furnace_wrapper

    furnace = _mock_furnace()
    RE = RunEngine({}, call_returns_result=False)
    docs: list[tuple[str, dict]] = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))

    def plan() -> object:
        yield from bps.mv(furnace, 100.0)
        return (yield from count([furnace], num=1))

    RE(safe_furnace_wrapper(plan(), furnace))
    descriptor = next(doc for name, doc in docs if name == "descriptor")
    assert descriptor["configuration"]["furnace"]["data"]["furnace_end_of_plan"] == "off"
    assert _heater(furnace) == 0  # hotstage's own plans always end with the heater off
    assert furnace.end_of_plan.get() == "hold"  # restored for the next (stock) plan
    furnace.destroy()
