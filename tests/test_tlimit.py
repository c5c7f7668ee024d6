"""The Lake Shore 336 temperature limit (TLIMIT, manual ch. 6) on the emulator, the plant and the device, and the
session arming it at the rig's max_C + 15 °C.

The plant is driven by hand here (a backend that never advances on its own), so every trip is asserted at a
known simulated time, not after some wall-clock wait.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from hotstage.acquisition.interlocks import TLIMIT_MARGIN_C, arm_temperature_limit
from hotstage.devices.lakeshore import LakeShore336Furnace
from hotstage.devices.visa import InstrumentReplyError
from hotstage.simulated.lakeshore_server import LakeShore336Server
from hotstage.simulated.thermal import KELVIN_OFFSET, FurnacePlant, ThermalParameters

K_RE = re.compile(r"^[+-]\d{4}\.\d{3}$")


class LoopThread:
    """An asyncio loop in a daemon thread, serving the emulator under test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5.0)
        self.loop.close()


class LS:
    """Raw-socket Lake Shore client: CR LF out, one CR LF line back per query."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5.0)
        self.file = self.sock.makefile("rb")

    def write(self, msg: str) -> None:
        self.sock.sendall(msg.encode("ascii") + b"\r\n")

    def query(self, msg: str) -> str:
        self.write(msg)
        line = self.file.readline()
        assert line.endswith(b"\r\n"), line
        return line[:-2].decode("ascii")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class HandDriven:
    """Backend whose plant moves only when the test advances it."""

    def __init__(self, plant: FurnacePlant) -> None:
        self.plant = plant
        self.lock = threading.RLock()

    @contextmanager
    def furnace(self) -> Iterator[FurnacePlant]:
        with self.lock:
            yield self.plant

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.plant.advance_to(self.plant.time_s + seconds)


@pytest.fixture
def server() -> Iterator[tuple[LakeShore336Server, HandDriven]]:
    loop = LoopThread()
    backend = HandDriven(FurnacePlant(ThermalParameters()))
    srv = LakeShore336Server(backend)
    loop.run(srv.start())
    yield srv, backend
    loop.run(srv.stop())
    loop.close()


@pytest.fixture
def ls(server) -> Iterator[LS]:
    client = LS(server[0].port)
    yield client
    client.close()


def test_tlimit_round_trip_reply_format_and_errors(ls: LS) -> None:
    assert ls.query("TLIMIT? A") == "+0000.000"  # no limit at power-up
    ls.write("TLIMIT A,450")
    ls.write("tlimit b, 673.15")
    assert ls.query("TLIMIT? A") == "+0450.000"
    assert K_RE.match(ls.query("TLIMIT? B")) and float(ls.query("TLIMIT? B")) == pytest.approx(673.15)
    assert ls.query("TLIMIT? A;TLIMIT? C") == "+0450.000;+0000.000"
    ls.query("*ESR?")
    for bad in ("TLIMIT E,450", "TLIMIT A,-1", "TLIMIT A", "TLIMIT A,hot"):
        ls.write(bad)
        assert ls.query("*ESR?") == "016", bad  # execution error, no reply
    assert ls.query("TLIMIT? A") == "+0450.000"  # bad commands changed nothing
    ls.write("*RST")
    assert ls.query("TLIMIT? A") == "+0450.000"  # a stored setting: *RST keeps it
    ls.write("TLIMIT A,0")
    assert ls.query("TLIMIT? A") == "+0000.000"


def test_exceeding_a_limit_turns_every_output_off(server, ls: LS) -> None:
    _, backend = server
    ls.write("TLIMIT A,{:.2f}".format(60.0 + KELVIN_OFFSET))
    ls.write(f"SETP 1,{150.0 + KELVIN_OFFSET:.3f}")
    ls.write(f"SETP 2,{150.0 + KELVIN_OFFSET:.3f}")
    ls.write("RANGE 1,3;RANGE 2,2")
    assert ls.query("RANGE? 1;RANGE? 2") == "3;2"
    backend.advance(10.0)  # heating, still below 60 °C
    assert 22.0 < float(ls.query("CRDG? A")) < 60.0
    assert ls.query("RANGE? 1;RANGE? 2") == "3;2"
    for _ in range(120):  # the high range reaches 60 °C well within 2 min
        backend.advance(1.0)
        if ls.query("RANGE? 1") == "0":
            break
    assert 60.0 <= float(ls.query("CRDG? A")) < 64.0  # off within the second it crossed (~3 °C/s here)
    assert ls.query("RANGE? 1;RANGE? 2") == "0;0"
    assert float(ls.query("HTR? 1")) == 0.0
    assert backend.plant.limit_trips == 1
    # switched back on while still above the limit: off again at once, as on the instrument
    ls.write("RANGE 1,3")
    assert ls.query("RANGE? 1") == "0"
    # with the limit off the output stays on
    ls.write("TLIMIT A,0;RANGE 1,3")
    backend.advance(5.0)
    assert ls.query("RANGE? 1") == "3"


def test_the_sample_input_trips_too_and_an_unwired_input_never(server, ls: LS) -> None:
    _, backend = server
    ls.write(f"TLIMIT C,{1.0:.1f}")  # input C has no sensor (reads 0): never trips
    ls.write(f"TLIMIT B,{40.0 + KELVIN_OFFSET:.2f}")
    ls.write(f"SETP 1,{200.0 + KELVIN_OFFSET:.3f};RANGE 1,3")
    backend.advance(20.0)
    assert ls.query("RANGE? 1") == "3"
    for _ in range(60):
        backend.advance(5.0)
        if backend.plant.sample_C > 40.0 + 0.5:
            break
    assert ls.query("RANGE? 1") == "0"
    assert backend.plant.sensor_C > backend.plant.sample_C  # the lagging sample input is the one that tripped


def test_plant_limit_is_checked_every_step_without_any_client() -> None:
    plant = FurnacePlant(ThermalParameters())
    plant.set_temperature_limit("A", 50.0 + KELVIN_OFFSET)
    plant.set_setpoint(1, 300.0)
    plant.set_range(1, 3)
    crossed_at = None
    while plant.time_s < 600.0:
        plant.advance_to(plant.time_s + plant.params.step_s)
        if crossed_at is None and plant.sensor_C > 50.0:
            crossed_at = plant.time_s
            assert plant.loop(1).heater_range == 0  # in the same step
    assert crossed_at is not None and plant.limit_trips == 1
    assert plant.sensor_C < 50.0  # cooled again afterwards: nobody switched it back on


# --------------------------------------------------------------------------------------- the device
def test_device_sets_and_confirms_the_limit_on_both_inputs(server) -> None:
    srv, backend = server
    dev = LakeShore336Furnace(srv.resource, name="furnace", resource_manager="@py").connect()
    try:
        limits = dev.set_temperature_limit(415.0)
        assert limits == {"A": pytest.approx(415.0, abs=0.06), "B": pytest.approx(415.0, abs=0.06)}
        assert backend.plant.temperature_limits_K["A"] == pytest.approx(415.0 + KELVIN_OFFSET, abs=0.06)
        assert backend.plant.temperature_limits_K["B"] == pytest.approx(415.0 + KELVIN_OFFSET, abs=0.06)
        assert dev.set_temperature_limit(None) == {"A": None, "B": None}
        assert backend.plant.temperature_limits_K["A"] == 0.0
        with pytest.raises(ValueError, match="finite"):
            dev.set_temperature_limit(float("nan"))
        # the session's arming: max_C + 15 °C
        arm_temperature_limit(dev, 400.0)
        expected_K = 400.0 + TLIMIT_MARGIN_C + KELVIN_OFFSET
        assert backend.plant.temperature_limits_K["A"] == pytest.approx(expected_K, abs=0.06)
    finally:
        dev.destroy()


def test_device_refuses_a_limit_the_controller_does_not_keep(server) -> None:
    srv, backend = server
    original = backend.plant.set_temperature_limit
    backend.plant.set_temperature_limit = lambda name, k: original(name, min(k, 500.0))  # type: ignore[method-assign]
    dev = LakeShore336Furnace(srv.resource, name="furnace", resource_manager="@py").connect()
    try:
        with pytest.raises(InstrumentReplyError, match=r"input A reads 500 K after 'TLIMIT A,688\.1'"):
            dev.set_temperature_limit(415.0)
    finally:
        dev.destroy()


@pytest.mark.e2e  # a whole session with its writer process; the limit itself is tested on the device above
def test_session_arms_the_limit_on_the_simulated_rig(tmp_path) -> None:
    from hotstage.acquisition.config import LimitsConfig, RigConfig
    from hotstage.acquisition.session import Session

    config = RigConfig(limits=LimitsConfig(max_C=300.0))
    with Session(rig=config, data_dir=tmp_path, progress=False, analysis=False) as session:
        limits = session.rig.world.plant.temperature_limits_K
        assert limits["A"] == pytest.approx(300.0 + TLIMIT_MARGIN_C + KELVIN_OFFSET, abs=0.06)
        assert limits["B"] == limits["A"]
        assert session.rig.furnace.visa.query("TLIMIT? A", parse=float) == pytest.approx(588.1, abs=0.06)
    assert not (tmp_path / "guardian.log").exists()  # no guardian for the in-process emulators


def test_device_limit_on_the_pyvisa_sim_definition() -> None:
    from pathlib import Path

    yaml = Path(__file__).resolve().parents[1] / "simulated" / "visa" / "hotstage.yaml"
    dev = LakeShore336Furnace(
        "TCPIP0::127.0.0.1::7777::SOCKET", name="furnace", resource_manager=f"{yaml}@sim"
    ).connect()
    try:
        limit = pytest.approx(415.0, abs=0.06)
        assert dev.set_temperature_limit(415.0) == {"A": limit, "B": limit}
        assert dev.visa.query("TLIMIT? A", parse=str) == "+0688.100"
    finally:
        dev.destroy()
