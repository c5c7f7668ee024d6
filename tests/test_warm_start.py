"""A furnace still warm from the last run at the start of a program: wait with a countdown, or refuse in one line.

On the SimulatedRig started warm (`ThermalParameters(initial_C=...)`): the program waits for the furnace to cool
(with countdown lines) and then runs normally, where before the settle to start_C timed out with a traceback;
a furnace that cannot cool in the wait limit is refused with a `ProgramError` and no run is recorded; the
cooling estimate itself on Newtonian curves.
"""

from __future__ import annotations

import logging
import math
import re

import pytest
from bluesky import RunEngine

from conftest import LOCKSTEP_SCALE
from hotstage.plans import Cadence, ProgramError, Ramp, RigLimits, TemperatureProgram, insitu_ramp
from hotstage.plans.insitu import cooling_estimate_s
from hotstage.simulated.rig import SimulatedRig
from hotstage.simulated.thermal import ThermalParameters

LIMITS = RigLimits(max_C=400.0, min_rate=0.1, max_rate=50.0, min_C=0.0)
CADENCE = {"xrd": Cadence.every_degrees(10)}
PROGRAM = TemperatureProgram(25.0, (Ramp(60.0, 50.0),))
SLOW_STAGE = 90.0
"""Heat capacity (J/K) of a slower stage (time constant 540 s instead of 180 s): the world clock runs from the rig's
start, so the furnace must still be warm after the seconds the rig takes to connect on a loaded machine."""


def run_warm(initial_C: float, program: TemperatureProgram = PROGRAM, **kwargs):
    """Run `program` on a simulated rig that starts at `initial_C`; returns (documents, heater range at the end)."""
    RE = RunEngine({}, call_returns_result=False)
    docs: list[tuple[str, dict]] = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    thermal = ThermalParameters(initial_C=initial_C, heat_capacity_J_per_K=SLOW_STAGE,
                                loss_conductance_W_per_K=SLOW_STAGE / 540.0)
    with SimulatedRig(time_scale=LOCKSTEP_SCALE, stepped=True, exposures={"xrd": 2.0}, thermal=thermal) as rig:
        rig.install_stepped_sleep(RE)  # lock-step: the hour-long cooling waits take no wall time
        plan = insitu_ramp(rig.furnace, {"xrd": rig.xrd}, program, CADENCE, clock=rig.clock, limits=LIMITS, **kwargs)
        error = None
        try:
            RE(plan)
        except ProgramError as exc:
            error = exc
        heater = rig.world.truth()["heater_range"]
    return docs, heater, error


def test_warm_furnace_waits_with_a_countdown_then_runs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="hotstage.plans.insitu")
    docs, heater, error = run_warm(390.0)  # the settle from there to 25 °C at 50 °C/min used to time out
    assert error is None
    names = [n for n, _ in docs]
    assert names.count("start") == 1 and names.count("stop") == 1
    stop = next(d for n, d in docs if n == "stop")
    assert stop["exit_status"] == "success"
    events = [d for n, d in docs if n == "event" and "clock_elapsed" in d["data"]]  # acquisitions, not segments
    first = min(events, key=lambda e: e["data"]["clock_elapsed"])
    assert first["data"]["furnace_temperature"] == pytest.approx(25.0, abs=1.5)  # acquired at the start, cooled
    lines = [r.getMessage() for r in caplog.records if r.name == "hotstage.plans.insitu"]
    warm = re.search(r"^furnace at (\d+\.\d) °C, above the program's start temperature 25 °C: waiting up to 60 min "
                     r"for it to cool to 26\.0 °C", lines[0])
    assert warm and float(warm.group(1)) > 60.0, lines[:1]
    countdown = [line for line in lines if "waiting to cool to 26.0 °C before the program starts; " in line]
    assert len(countdown) >= 5, lines  # one a minute of experiment time
    assert all(" min left (gives up in " in line for line in countdown), countdown
    assert "at least" in countdown[0]  # a straight line until the cooling curve can be fitted
    minutes_left = [int(re.search(r"(?:about|at least) (\d+) min left", line).group(1)) for line in countdown]
    temperatures = [float(re.search(r"furnace at (\d+\.\d) °C", line).group(1)) for line in countdown]
    assert temperatures == sorted(temperatures, reverse=True)
    assert minutes_left[-1] <= 3
    waited = re.search(r"after (\d+\.\d) min of cooling: the program starts", lines[-1])
    assert waited and float(waited.group(1)) >= len(countdown)
    # the fitted estimate was within 25 % (+2 min) of the time the furnace then took; a straight line before it
    fitted = 0
    for at, (line, left) in enumerate(zip(countdown, minutes_left), start=1):  # `at` minutes into the wait
        actual = float(waited.group(1)) - at
        if "about" in line:
            fitted += 1
            assert abs(left - actual) <= 0.25 * left + 2.0, (line, waited.group(0))
        else:
            assert left <= actual + 1.0, (line, waited.group(0))
    assert fitted >= len(countdown) - 5
    assert heater == 0.0


def test_furnace_that_cannot_cool_in_time_is_refused_and_nothing_recorded() -> None:
    docs, heater, error = run_warm(390.0, cool_wait_s=300.0)
    assert error is not None
    msg = str(error)
    assert "\n" not in msg
    assert re.search(r"^the furnace is at \d+\.\d °C, above the program's start temperature 25 °C, and needs at "
                     r"least \d+ more min to cool to 26\.0 °C, beyond the 5-min wait limit", msg), msg
    assert "let it cool below 26.0 °C and start again, or start the program at or above" in msg
    assert not [n for n, _ in docs if n == "start"]  # no run
    assert heater == 0.0


def test_waiting_switched_off_refuses_at_once() -> None:
    docs, heater, error = run_warm(390.0, cool_wait_s=0)
    assert error is not None and "waiting for it to cool is switched off" in str(error)
    at = re.search(r"^the furnace is at (\d+\.\d) °C, .*, or start the program at or above (\d+) °C$", str(error))
    assert at and 0.0 <= int(at.group(2)) - float(at.group(1)) < 1.0
    assert not docs and heater == 0.0


def test_a_start_below_the_room_is_refused_once_the_cooling_slows_too_much() -> None:
    program = TemperatureProgram(15.0, (Ramp(60.0, 20.0),))  # below the room (22 °C): the stage cannot get there
    docs, heater, error = run_warm(60.0, program)
    assert error is not None and re.search(r"and needs at least \d+ more min to cool to 16\.0 °C, beyond the 60-min "
                                           r"wait limit", str(error)), str(error)
    assert not [n for n, _ in docs if n == "start"]


def test_cold_furnace_does_not_wait(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="hotstage.plans.insitu")
    docs, _, error = run_warm(22.0)
    assert error is None and [n for n, _ in docs].count("start") == 1
    assert not [r for r in caplog.records if "cool" in r.getMessage()]


def test_bad_wait_limit_is_a_program_error() -> None:
    with pytest.raises(ProgramError, match="cool_wait_s"):
            next(insitu_ramp(object(), {}, PROGRAM, CADENCE, cool_wait_s=-1))  # a plan: validates at its first step


def test_cooling_estimate_on_newtonian_curves() -> None:
    room, tau = 22.0, 180.0

    def T(t: float) -> float:
        return room + 74.0 * math.exp(-t / tau)

    hist = [(t, T(t)) for t in (0.0, 60.0, 120.0, 181.0, 240.0, 300.0, 362.0)]  # the first interval is not fitted
    assert cooling_estimate_s(hist[:4], 26.0)[2] is None  # two minutes are not enough for a fit
    estimate, lower, fitted_room = cooling_estimate_s(hist, 26.0)
    exact = tau * math.log(T(362.0) - room) - tau * math.log(26.0 - room)
    assert fitted_room == pytest.approx(room, abs=0.5)
    assert estimate == pytest.approx(exact, rel=0.05)
    assert lower < exact  # the straight line is a lower bound
    _, _, r = cooling_estimate_s(hist, 21.0)
    assert cooling_estimate_s(hist, 21.0)[0] == math.inf and r == pytest.approx(room, abs=0.5)
    assert cooling_estimate_s([(0.0, 50.0), (60.0, 50.0)], 26.0) == (math.inf, math.inf, None)
    assert cooling_estimate_s([(0.0, 50.0)], 26.0)[0] == math.inf
