"""The simulated rig end to end: ophyd devices over real TCP (pyvisa-py) against the emulators, RunEngine.

Covers: resources/read/describe of every device, furnace set() settling and an impossible set timing out
with the device's FurnaceSettleTimeout, bluesky ``count`` and ``scan`` whose documents validate against the
event-model schemas (experiment time in every event), the ``hotstage sim serve`` subprocess answering
``*IDN?`` through pyvisa-py and exiting 0 on SIGTERM, and a clean shutdown (no threads, no listeners).
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import event_model
import numpy as np
import pytest
from bluesky import RunEngine
from bluesky.plans import count, scan

from hotstage.devices.lakeshore import FurnaceSettleTimeout
from hotstage.simulated.rig import SimulatedRig

REPO = Path(__file__).resolve().parents[1]
TIME_SCALE = 600.0
RESOURCE_RE = re.compile(r"^TCPIP0::127\.0\.0\.1::\d+::SOCKET$")


@pytest.fixture
def rig():
    with SimulatedRig(time_scale=TIME_SCALE, seed=3) as r:
        yield r


def _collect(RE: RunEngine) -> list[tuple[str, dict]]:
    docs: list[tuple[str, dict]] = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    return docs


def _validate(docs: list[tuple[str, dict]]) -> None:
    """Every document passes its event-model JSON schema."""
    assert docs
    for name, doc in docs:
        event_model.schema_validators[event_model.DocumentNames[name]].validate(doc)


def test_resources_read_describe(rig):
    assert set(rig.resources) == {"furnace", "xrd", "thz", "pl"}
    assert all(RESOURCE_RE.match(r) for r in rig.resources.values())
    reading = rig.furnace.read()
    assert {"furnace_temperature", "furnace_sample_temperature", "furnace_setpoint", "furnace_heater_output"} <= set(
        reading
    )
    assert abs(reading["furnace_temperature"]["value"] - 22.0) < 0.5
    desc = rig.furnace.describe()
    assert desc["furnace_temperature"]["units"] == "degC" and desc["furnace_temperature"]["dtype"] == "number"
    assert rig.furnace.ramp_rate.get() == pytest.approx(10.0)
    assert rig.furnace.heater_range.get() == 0
    for det, n, unit in ((rig.xrd, 5000, "deg"), (rig.thz, 651, "cm^-1"), (rig.pl, 1101, "nm")):
        d = det.describe()
        (key,) = [k for k in d if k != det.name + "_saturated"]  # the array, beside the saturation flag
        assert d[key]["shape"] == [n] and d[key]["dtype_numpy"] == "<f8"
        assert d[det.name + "_saturated"]["shape"] == []
        cfg = det.describe_configuration()
        assert any(v.get("units") == unit for v in cfg.values())
    assert rig.xrd.wavelength.get() == pytest.approx(1.5406, abs=1e-4)
    truth = rig.truth()
    assert {"sim_time_s", "furnace_C", "sample_C", "wf_CsPbI3-delta"} <= set(truth)
    assert abs(rig.clock.elapsed.get() - rig.truth()["sim_time_s"]) < 0.05 * TIME_SCALE  # same time base
    tr = rig.truth_reader.read()
    assert set(tr) == set(rig.truth_reader.describe())


def test_furnace_set_settles(rig):
    rig.furnace.configure_ramp(20.0)
    t0 = time.monotonic()
    status = rig.furnace.set(60.0)
    status.wait(timeout=30.0)
    assert status.success
    assert abs(rig.furnace.temperature.get() - 60.0) <= rig.furnace.tolerance.get()
    assert rig.furnace.heater_range.get() == 3
    truth = rig.truth()
    assert abs(truth["furnace_C"] - 60.0) < 1.0 and abs(truth["sample_C"] - 60.0) < 2.0
    # 38 K at 20 K/min + 30 s settle: at least ~140 experiment seconds must have passed
    assert (time.monotonic() - t0) * TIME_SCALE > 130.0


def test_ramp_rate_zero_means_step(rig):
    """Model 336 manual: RAMP rate 0 means no ramp (a step); set() must not crawl at the 0.1 K/min minimum."""
    rig.furnace.configure_ramp(0.0)
    assert rig.furnace.ramp_rate.get() == 0.0
    status = rig.furnace.set(60.0)
    status.wait(timeout=30.0)
    assert status.success
    assert abs(rig.furnace.temperature.get() - 60.0) <= rig.furnace.tolerance.get()


def test_impossible_set_times_out(rig):
    """Heater range capped at 'low' (ceiling ~29 °C): a 60 °C target fails with FurnaceSettleTimeout."""
    rig.furnace.heater_range.put(1)
    status = rig.furnace.set(60.0, timeout=600.0)
    with pytest.raises(FurnaceSettleTimeout):
        status.wait(timeout=30.0)
    assert status.last_readback < 35.0
    rig.furnace.stop()
    assert rig.furnace.heater_range.get() == 0


def test_count_documents_validate(rig):
    RE = RunEngine({})
    docs = _collect(RE)
    RE(count([rig.xrd, rig.pl, rig.thz, rig.clock], num=2))
    _validate(docs)
    names = [n for n, _ in docs]
    assert names[0] == "start" and names[-1] == "stop" and docs[-1][1]["exit_status"] == "success"
    events = [d for n, d in docs if n == "event"]
    assert len(events) == 2
    for ev in events:
        assert "clock_elapsed" in ev["data"]
        assert np.asarray(ev["data"]["xrd_counts"]).shape == (5000,)
        assert np.asarray(ev["data"]["pl_counts"]).shape == (1101,)
        assert np.asarray(ev["data"]["thz_absorbance"]).shape == (651,)
    assert events[1]["data"]["clock_elapsed"] > events[0]["data"]["clock_elapsed"]
    (descriptor,) = [d for n, d in docs if n == "descriptor"]
    assert descriptor["data_keys"]["xrd_counts"]["shape"] == [5000]
    assert "xrd_two_theta" in descriptor["configuration"]["xrd"]["data"]


def test_scan_over_furnace_documents_validate(rig):
    rig.furnace.configure_ramp(30.0)
    RE = RunEngine({})
    docs = _collect(RE)
    RE(scan([rig.xrd, rig.clock], rig.furnace, 30, 60, 3))
    _validate(docs)
    assert docs[-1][1]["exit_status"] == "success"
    events = [d for n, d in docs if n == "event"]
    assert len(events) == 3
    temps = [ev["data"]["furnace_temperature"] for ev in events]
    assert np.allclose(temps, [30.0, 45.0, 60.0], atol=1.0)
    times = [ev["data"]["clock_elapsed"] for ev in events]
    assert all(b > a for a, b in zip(times, times[1:]))
    # end_of_plan "hold" (the default): a stock plan that ended cleanly leaves the furnace regulating at 60 °C
    assert rig.furnace.heater_range.get() == 3 and rig.furnace.end_of_plan.get() == "hold"


def test_exit_is_clean_and_idempotent():
    before = {t.ident for t in threading.enumerate()}
    rig = SimulatedRig(time_scale=TIME_SCALE)
    with rig:
        ports = [int(r.split("::")[2]) for r in rig.resources.values()]
        assert rig.pl.trigger().wait(timeout=10.0) is None
    rig.close()  # second exit: harmless
    rig.__exit__(None, None, None)
    time.sleep(0.2)
    leftover = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert not [t for t in leftover if t.name.startswith("hotstage-sim")], leftover
    for port in ports:
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()


def test_sim_serve_subprocess():
    import pyvisa

    proc = subprocess.Popen(
        [sys.executable, "-m", "hotstage.simulated.serve", "--time-scale", "100"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        info = json.loads(line)
        assert info["time_scale"] == 100.0
        assert set(info) == {"furnace", "xrd", "thz", "pl", "time_scale"}
        rm = pyvisa.ResourceManager("@py")
        for name in ("furnace", "xrd", "thz", "pl"):
            assert RESOURCE_RE.match(info[name])
            term = "\r\n" if name == "furnace" else "\n"
            res = rm.open_resource(info[name], read_termination=term, write_termination=term, timeout=5000)
            try:
                idn = res.query("*IDN?")
            finally:
                res.close()
            assert idn.startswith("LSCI,MODEL336," if name == "furnace" else "HOTSTAGE-SIM,")
        rm.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_socket_resources_send_without_nagle_delay(rig):
    """Each command leaves at once (TCP_NODELAY), else every exchange after a write waits ~40 ms for a delayed ACK."""
    import socket

    for device in (rig.furnace, rig.xrd):
        res = device.visa._res
        sock = res.visalib.sessions[res.session].interface
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
