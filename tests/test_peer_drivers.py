"""Peer drivers against the Lake Shore 336 emulator over TCP (issue 14, item 3): Lake Shore's official Python
driver (``lakeshore.Model336``) and QCoDeS's ``LakeshoreModel336`` (pyvisa-py backend), both unchanged.

* The official driver connects to any TCP port: ``Model336(ip_address=..., tcp_port=...)`` (its default port is
  7777, the instrument's). Its ``query()`` appends ``;*ESR?`` and raises on any error bit, so every method below
  that returns is also a method the emulator accepted without a command/execution/query error.
* QCoDeS talks ``TCPIP::127.0.0.1::PORT::SOCKET`` through pyvisa-py (``visalib="@py"``).

The emulator runs in-process on 127.0.0.1 in an event-loop thread; the plant sits on a ``SimClock`` running
``TIME_SCALE`` times the wall clock, so ``blocking_t`` (which waits on ``time.perf_counter``) sees the furnace settle
in about a wall second.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

lakeshore = pytest.importorskip("lakeshore")
qcodes = pytest.importorskip("qcodes")

from hotstage.simulated.clock import SimClock  # noqa: E402
from hotstage.simulated.lakeshore_server import LakeShore336Server  # noqa: E402
from hotstage.simulated.thermal import KELVIN_OFFSET, ClockedFurnace, ThermalParameters  # noqa: E402

TIME_SCALE = 200.0
"""Simulated seconds per wall second for the QCoDeS blocking_t test (the plant's time constant is 180 s)."""


class LoopThread:
    """An asyncio loop in a daemon thread, serving the emulator under test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5.0)
        self.loop.close()


@pytest.fixture
def emulator() -> Iterator[tuple[LakeShore336Server, ClockedFurnace]]:
    loop = LoopThread()
    backend = ClockedFurnace(SimClock(TIME_SCALE), ThermalParameters())
    srv = LakeShore336Server(backend)
    loop.run(srv.start())
    yield srv, backend
    loop.run(srv.stop())
    loop.close()


# ------------------------------------------------------------------------------------------- Lake Shore's driver
def _official_calls(m: Any) -> dict[str, Callable[[], Any]]:
    """One call per public method of ``lakeshore.Model336``, with arguments the manual allows."""
    from lakeshore.model_336 import Model336ControlLoopZoneSettings, Model336InputSensorSettings
    from lakeshore.temperature_controllers import (
        AlarmSettings,
        CurveHeader,
        OperationEvent,
        StandardEventRegister,
    )

    M = type(m)
    zone = Model336ControlLoopZoneSettings(350.0, 50.0, 20.0, 0.0, 0.0, M.HeaterRange.LOW, M.InputChannel.CHANNEL_A,
                                           5.0)
    sensor = Model336InputSensorSettings(M.InputSensorType.THERMOCOUPLE, False, True, M.InputSensorUnits.KELVIN,
                                         M.ThermocoupleRange.FIFTY_MILLIVOLT)
    return {
        # status registers and identity
        "reset_instrument": lambda: m.reset_instrument(),
        "clear_interface_command": lambda: m.clear_interface_command(),
        "set_standard_event_enable_mask": lambda: m.set_standard_event_enable_mask(
            StandardEventRegister(True, True, True, True, False)),
        "get_standard_event_enable_mask": lambda: m.get_standard_event_enable_mask(),
        "set_service_request": lambda: m.set_service_request(
            M.service_request_enable(False, True, False)),
        "get_service_request": lambda: m.get_service_request(),
        "get_status_byte": lambda: m.get_status_byte(),
        "get_self_test": lambda: m.get_self_test(),
        "set_operation_event_enable": lambda: m.set_operation_event_enable(
            OperationEvent(True, True, False, True, False, False, False, False)),
        "get_operation_event_enable": lambda: m.get_operation_event_enable(),
        "get_operation_condition": lambda: m.get_operation_condition(),
        "get_operation_event": lambda: m.get_operation_event(),
        "command": lambda: m.command("MODE 1"),
        "query": lambda: m.query("MODE?"),
        "write": lambda: m.write("MODE 0"),
        "set_remote_interface_mode": lambda: m.set_remote_interface_mode(M.InterfaceMode.REMOTE),
        "get_remote_interface_mode": lambda: m.get_remote_interface_mode(),
        # readings and inputs
        "get_kelvin_reading": lambda: m.get_kelvin_reading("A"),
        "get_celsius_reading": lambda: m.get_celsius_reading("B"),
        "get_sensor_reading": lambda: m.get_sensor_reading("A"),
        "get_all_kelvin_reading": lambda: m.get_all_kelvin_reading(),
        "get_all_sensor_reading": lambda: m.get_all_sensor_reading(),
        "get_input_reading_status": lambda: m.get_input_reading_status("C"),
        "set_input_sensor": lambda: m.set_input_sensor("B", sensor),
        "get_input_sensor": lambda: m.get_input_sensor("B"),
        "set_input_curve": lambda: m.set_input_curve("B", 12),
        "get_input_curve": lambda: m.get_input_curve("B"),
        "set_sensor_name": lambda: m.set_sensor_name("B", "Sample TC"),
        "get_sensor_name": lambda: m.get_sensor_name("B"),
        "set_filter": lambda: m.set_filter("A", True, 8, 5),
        "get_filter": lambda: m.get_filter("A"),
        "set_diode_excitation_current": lambda: m.set_diode_excitation_current("C", M.DiodeCurrent.ONE_MILLIAMP),
        "get_diode_excitation_current": lambda: m.get_diode_excitation_current("C"),
        "get_min_max_data": lambda: m.get_min_max_data("A"),
        "reset_min_max_data": lambda: m.reset_min_max_data(),
        "get_thermocouple_junction_temp": lambda: m.get_thermocouple_junction_temp(),
        "set_temperature_limit": lambda: m.set_temperature_limit("A", 700.0),
        "get_temperature_limit": lambda: m.get_temperature_limit("A"),
        # curves
        "set_curve_header": lambda: m.set_curve_header(
            21, CurveHeader("Sample", "SN123", M.CurveFormat.OHMS_PER_KELVIN, 800.0,
                            M.CurveTemperatureCoefficient.POSITIVE)),
        "get_curve_header": lambda: m.get_curve_header(21),
        "set_curve_data_point": lambda: m.set_curve_data_point(21, 1, 18.52, 73.15),
        "get_curve_data_point": lambda: m.get_curve_data_point(21, 1),
        # the driver's set_curve iterates (index, point) pairs
        "set_curve": lambda: m.set_curve(22, list(enumerate([(18.52, 73.15), (100.0, 273.15), (175.86, 473.15)]))),
        "get_curve": lambda: m.get_curve(22),
        "delete_curve": lambda: m.delete_curve(23),
        "set_soft_cal_curve_dt_470": lambda: m.set_soft_cal_curve_dt_470(24, "DT1"),
        "set_soft_cal_curve_pt_100": lambda: m.set_soft_cal_curve_pt_100(25, "PT1"),
        "set_soft_cal_curve_pt_1000": lambda: m.set_soft_cal_curve_pt_1000(26, "PT2"),
        # outputs and control
        "set_control_setpoint": lambda: m.set_control_setpoint(1, 300.0),
        "get_control_setpoint": lambda: m.get_control_setpoint(1),
        "set_setpoint_ramp_parameter": lambda: m.set_setpoint_ramp_parameter(1, True, 10.0),
        "get_setpoint_ramp_parameter": lambda: m.get_setpoint_ramp_parameter(1),
        "get_setpoint_ramp_status": lambda: m.get_setpoint_ramp_status(1),
        "set_heater_pid": lambda: m.set_heater_pid(1, 20.0, 15.0, 0.0),
        "get_heater_pid": lambda: m.get_heater_pid(1),
        "set_heater_output_mode": lambda: m.set_heater_output_mode(
            1, M.HeaterOutputMode.CLOSED_LOOP, M.InputChannel.CHANNEL_A),
        "get_heater_output_mode": lambda: m.get_heater_output_mode(1),
        "set_heater_range": lambda: m.set_heater_range(1, M.HeaterRange.LOW),
        "get_heater_range": lambda: m.get_heater_range(1),
        "all_heaters_off": lambda: m.all_heaters_off(),
        "get_heater_output": lambda: m.get_heater_output(1),
        "get_heater_status": lambda: m.get_heater_status(1),
        "set_heater_setup": lambda: m.set_heater_setup(
            1, M.HeaterResistance.HEATER_25_OHM, 1.2, M.HeaterOutputUnits.POWER),
        "get_heater_setup": lambda: m.get_heater_setup(1),
        "set_manual_output": lambda: m.set_manual_output(3, 12.5),
        "get_manual_output": lambda: m.get_manual_output(3),
        "get_analog_output_percentage": lambda: m.get_analog_output_percentage(3),
        "set_monitor_output_heater": lambda: m.set_monitor_output_heater(
            3, M.InputChannel.CHANNEL_B, M.InputSensorUnits.KELVIN, 700.0, 300.0, M.Polarity.UNIPOLAR),
        "get_monitor_output_heater": lambda: m.get_monitor_output_heater(3),
        "set_warmup_supply_parameter": lambda: m.set_warmup_supply_parameter(4, M.ControlTypes.CONTINUOUS, 50.5),
        "get_warmup_supply_parameter": lambda: m.get_warmup_supply_parameter(4),
        "set_control_loop_zone_table": lambda: m.set_control_loop_zone_table(1, 2, zone),
        "get_control_loop_zone_table": lambda: m.get_control_loop_zone_table(1, 2),
        "set_autotune": lambda: m.set_autotune(1, M.AutotuneMode.P_I_D),
        "get_tuning_control_status": lambda: m.get_tuning_control_status(),
        # alarms and relays
        "set_alarm_parameters": lambda: m.set_alarm_parameters(
            "A", True, AlarmSettings(310.0, 250.0, 1.0, True, False, True)),
        "get_alarm_parameters": lambda: m.get_alarm_parameters("A"),
        "get_alarm_status": lambda: m.get_alarm_status("A"),
        "reset_alarm_status": lambda: m.reset_alarm_status(),
        "set_relay_alarms": lambda: m.set_relay_alarms(1, "A", M.RelayControlAlarm.HIGH_ALARM),
        "get_relay_alarm_control_parameters": lambda: m.get_relay_alarm_control_parameters(1),
        "turn_relay_on": lambda: m.turn_relay_on(2),
        "turn_relay_off": lambda: m.turn_relay_off(2),
        "get_relay_control_mode": lambda: m.get_relay_control_mode(1),
        "get_relay_status": lambda: m.get_relay_status(1),
        # display
        "set_display_setup": lambda: m.set_display_setup(M.DisplaySetupMode.CUSTOM, M.DisplayFields.SMALL_8, 2),
        "get_display_setup": lambda: m.get_display_setup(),
        "set_display_field_settings": lambda: m.set_display_field_settings(
            3, M.InputChannel.CHANNEL_B, M.DisplayFieldUnits.CELSIUS),
        "get_display_field_settings": lambda: m.get_display_field_settings(3),
        "set_contrast_level": lambda: m.set_contrast_level(2),
        "get_contrast_level": lambda: m.get_contrast_level(),
        "set_led_state": lambda: m.set_led_state(False),
        "get_led_state": lambda: m.get_led_state(),
        "set_keypad_lock": lambda: m.set_keypad_lock(True, 456),
        "get_keypad_lock": lambda: m.get_keypad_lock(),
        # interface
        "set_ieee_488": lambda: m.set_ieee_488(7),
        "get_ieee_488": lambda: m.get_ieee_488(),
        "set_interface": lambda: m.set_interface(M.Interface.ETHERNET),
        "get_interface": lambda: m.get_interface(),
        "set_network_settings": lambda: m.set_network_settings(
            False, False, "192.168.0.12", "255.255.255.0", "192.168.0.1", "192.168.0.2", "0.0.0.0", "furnace",
            "lab", "hot stage"),
        "get_network_settings": lambda: m.get_network_settings(),
        "get_network_configuration": lambda: m.get_network_configuration(),
        "set_website_login": lambda: m.set_website_login("operator", "secret"),
        "get_website_login": lambda: m.get_website_login(),
    }


OFFICIAL_SKIPPED = {
    "connect_tcp": "the constructor connects (Model336(ip_address=..., tcp_port=...)); again = a second socket",
    "disconnect_tcp": "called once at the end of the test",
    "connect_usb": "USB serial transport: no serial port here",
    "disconnect_usb": "USB serial transport: no serial port here",
}


def test_official_driver_every_method(emulator) -> None:
    from lakeshore import Model336

    srv, _ = emulator
    m = Model336(ip_address="127.0.0.1", tcp_port=srv.port, timeout=2.0)
    try:
        assert (m.model_number, m.serial_number) == ("MODEL336", "LSSIM01")
        calls = _official_calls(m)
        public = {n for n, v in inspect.getmembers(type(m)) if not n.startswith("_") and callable(v)
                  and not inspect.isclass(v)}
        assert public == set(calls) | set(OFFICIAL_SKIPPED), public ^ (set(calls) | set(OFFICIAL_SKIPPED))
        results = {}
        for name, call in calls.items():  # in order: each setter before its getter
            results[name] = call()  # raises InstrumentException on any *ESR error bit or timeout
        M = type(m)
        # sane values: what was written reads back, readings are physical
        assert results["get_kelvin_reading"] == pytest.approx(22.0 + KELVIN_OFFSET, abs=1.0)
        assert results["get_celsius_reading"] == pytest.approx(22.0, abs=1.0)
        k = results["get_all_kelvin_reading"]
        assert len(k) == 4 and k[0] > 290.0 and k[2] == 0.0 and k[3] == 0.0  # C, D: no sensor
        assert results["get_input_reading_status"].invalid_reading  # C is disabled
        assert not m.get_input_reading_status("A").invalid_reading
        s = results["get_input_sensor"]
        assert (s.sensor_type, s.compensation, s.units) == (
            M.InputSensorType.THERMOCOUPLE, True, M.InputSensorUnits.KELVIN)
        assert results["get_input_curve"] == 12 and results["get_sensor_name"] == "Sample TC"
        assert results["get_filter"] == {"filter_enable": True, "data_points": 8, "reset_threshold": 5}
        assert results["get_temperature_limit"] == 700.0
        hdr = results["get_curve_header"]
        assert (hdr.curve_name.strip(), hdr.serial_number.strip(), hdr.temperature_limit) == ("Sample", "SN123", 800.0)
        assert results["get_curve_data_point"] == (18.52, 73.15)
        # the driver's get_curve reads all 200 points and slices up to the last non-empty one, exclusive
        assert results["get_curve"] == [(18.52, 73.15), (100.0, 273.15)]
        assert m.get_curve_data_point(22, 3) == (175.86, 473.15)
        assert m.get_curve_header(25).curve_name.strip() == "PT-100"  # SoftCal from standard curve 6
        assert results["get_control_setpoint"] == pytest.approx(300.0)
        assert results["get_setpoint_ramp_parameter"] == {"ramp_enable": True, "rate_value": 10.0}
        assert results["get_heater_pid"] == {"gain": 20.0, "integral": 15.0, "derivative": 0.0}
        assert results["get_heater_range"] == M.HeaterRange.LOW
        assert m.get_heater_range(1) == M.HeaterRange.OFF  # all_heaters_off came after
        assert results["get_heater_setup"] == {"heater_resistance": M.HeaterResistance.HEATER_25_OHM,
                                               "max_current": 1.2, "output_display_mode": M.HeaterOutputUnits.POWER}
        assert results["get_manual_output"] == 12.5
        assert results["get_monitor_output_heater"]["high_value"] == 700.0
        assert results["get_warmup_supply_parameter"]["percentage"] == 50.5
        z = results["get_control_loop_zone_table"]
        assert (z.upper_bound, z.proportional, z.heater_range, z.rate) == (350.0, 50.0, M.HeaterRange.LOW, 5.0)
        assert results["get_tuning_control_status"]["tuning_error"] is False
        al = results["get_alarm_parameters"]
        assert (al.high_value, al.low_value, al.latch_enable, al.alarm_enable) == (310.0, 250.0, True, True)
        assert results["get_alarm_status"] == {"high_state_enabled": False, "low_state_enabled": False}  # 295 K
        relay = results["get_relay_alarm_control_parameters"]
        assert relay["alarm_relay_trigger_type"] == M.RelayControlAlarm.HIGH_ALARM
        assert results["get_relay_status"] is False
        assert results["get_display_setup"]["mode"] == M.DisplaySetupMode.CUSTOM
        assert results["get_display_field_settings"]["display_units"] == M.DisplayFieldUnits.CELSIUS
        assert results["get_keypad_lock"] == {"state": True, "code": 456}
        assert results["get_led_state"] is False and results["get_ieee_488"] == 7
        assert results["get_network_settings"]["pref_host"] == "furnace"
        assert results["get_website_login"] == {"username": "operator", "password": "secret"}
        assert results["get_operation_condition"].new_sensor_reading
        # a bad argument is an execution error, raised by the driver
        with pytest.raises(lakeshore.InstrumentException, match="Execution"):
            m.get_kelvin_reading("E")
        with pytest.raises(lakeshore.InstrumentException, match="Command"):
            m.query("NOSUCH?")
    finally:
        m.disconnect_tcp()


# ------------------------------------------------------------------------------------------- QCoDeS
# What QCoDeS 0.58's 336 driver cannot read from a 336 set up as this rig is, each for a stated reason; nothing
# else may be None:
# * HTRSET? is parsed in the Model 335's format (an output-type field first, five fields; the 336 manual's reply has
#   four: the last fields of outputs 1/2 are missing, the first ones misread), and HTRSET?/HTR? are asked of the
#   analog outputs 3 and 4, which the 336 refuses (no reply: a timeout per parameter of the group).
#   Upstream: microsoft/Qcodes pull request #8520 ("Fix lakeshore336 snapshot bug").
# * Input B is the sample thermocouple (INTYPE type 4, the 3060 option); QCoDeS maps types 0-3 only.
QCODES_KNOWN_NONE = (
    {f"output_{o}_{p}" for o in (1, 2, 3, 4)
     for p in ("output_type", "output_heater_resistance", "output_max_current", "output_max_user_current",
               "output_display")}
    | {"output_3_output", "output_4_output"}
    | {f"B_{p}" for p in ("sensor_type", "auto_range_enabled", "range", "compensation_enabled", "units")}
)


def _leaves(snap: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every parameter's value in a QCoDeS snapshot, by its full name."""
    out = {f"{prefix}{name}": p.get("value") for name, p in snap.get("parameters", {}).items()}
    for name, sub in snap.get("submodules", {}).items():
        out.update(_leaves(sub, f"{prefix}{name}_"))
    return out


@pytest.fixture
def qcodes_336(emulator) -> Iterator[Any]:
    from qcodes.instrument_drivers.Lakeshore import LakeshoreModel336

    srv, _ = emulator
    # timeout 0.3 s: the 12 queries the manual refuses (HTRSET? 3|4 once per group parameter, HTR? 3|4) time out
    inst = LakeshoreModel336("ls336_peer", f"TCPIP::127.0.0.1::{srv.port}::SOCKET", visalib="@py", timeout=0.3,
                             print_connect_message=False)
    yield inst
    inst.close()


def test_qcodes_snapshot_update(qcodes_336) -> None:
    inst = qcodes_336
    for o in (1, 2, 3, 4):  # a plain (instrument-less) parameter the user sets, as blocking_t needs
        getattr(inst, f"output_{o}").range_limits([250.0, 280.0, 400.0])
    snap = inst.snapshot(update=True)  # measured 3.7 s on the shared 2-core box, 12 x 0.3 s of it refused queries
    values = _leaves(snap)
    assert len(values) == 144, len(values)  # 4 inputs x 16, 2 heaters x 21, 2 analog outputs x 18, IDN
    nones = {k for k, v in values.items() if v is None}
    assert nones <= QCODES_KNOWN_NONE, nones - QCODES_KNOWN_NONE
    assert values["A_temperature"] == pytest.approx(22.0 + KELVIN_OFFSET, abs=1.0)
    assert (values["A_sensor_type"], values["A_units"], values["A_curve_name"].strip()) == (
        "platinum_rtd", "kelvin", "PT-100")
    assert (values["B_curve_name"].strip(), values["B_curve_number"]) == ("Type K", 12)
    assert (values["C_sensor_type"], values["C_curve_number"], values["C_temperature"]) == ("diode", 2, 0.0)
    assert values["C_sensor_status"] == "Sensor Units Overrange, Invalid Reading"  # diode input, nothing wired
    assert values["A_sensor_status"] == "OK"
    assert (values["output_1_mode"], values["output_1_input_channel"], values["output_1_output_range"]) == (
        "closed_loop", "A", "off")
    assert values["IDN"]["model"] == "336"
    inst.D.sensor_type("disabled")  # INTYPE D,0,...: RDGST? D -> 001
    assert inst.D.sensor_status() == "Invalid Reading"


def test_qcodes_blocking_t(qcodes_336) -> None:
    out = qcodes_336.output_1
    out.range_limits([250.0, 280.0, 400.0])  # 0-250 K low, to 280 K medium, above: high
    out.wait_tolerance(0.002)  # |T - SP| / T: 0.6 K at 320 K
    out.wait_equilibration_time(0.5)  # wall seconds (100 s of furnace time here)
    out.wait_cycle_time(0.05)
    out.P(10.0)  # PID 1,10.0,<I>,<D>: QCoDeS writes the group from its cached values
    out.blocking_t(320.0)  # returns once A has stayed within tolerance for 0.5 s
    assert out.output_range() == "high"
    assert qcodes_336.A.temperature() == pytest.approx(320.0, abs=0.7)
    assert out.setpoint() == pytest.approx(320.0)
