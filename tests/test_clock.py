"""The stepped simulated clock: waits jump it forward, so plans and the simulator advance in lock-step."""

from __future__ import annotations

from typing import Any

import bluesky.plan_stubs as bps
import pytest
from bluesky import RunEngine

from hotstage.simulated.clock import SimClock


def test_wall_clock_only_flows() -> None:
    clock = SimClock(100.0)
    with pytest.raises(RuntimeError, match="stepped"):
        clock.advance(1.0)
    assert clock.wall_until(clock.now() + 100.0) == pytest.approx(1.0, abs=0.05)


def test_stepped_waits_jump_instead_of_waiting() -> None:
    clock = SimClock(2.0, stepped=True)
    t0 = clock.now()
    clock.sleep(30.0)  # 30 wall s = 60 simulated s, at once
    assert clock.now() - t0 == pytest.approx(60.0, abs=0.5)
    assert clock.wall_until(t0 + 500.0) == 0.0  # a detector waiting for its integration's end: jump there
    assert clock.now() == pytest.approx(t0 + 500.0, abs=0.5)
    clock.advance_to(t0 + 10.0)  # never backwards
    assert clock.now() >= t0 + 500.0
    # wall() is the wall reading that corresponds to now(); the two readings are taken microseconds apart
    assert clock.wall() - clock.wall_origin == pytest.approx(clock.now() / 2.0, abs=0.01)


def test_stepped_clock_stands_still_between_jumps_and_flows_only_when_idle() -> None:
    """A stall between two jumps (a loaded machine) does not count; a long idle wait (a suspended plan) flows.
    Wall time is stepped by hand (a busy machine cannot stretch the stall past the grace)."""
    wall = [100.0]
    clock = SimClock(10.0, stepped=True, idle_grace_s=0.3, monotonic=lambda: wall[0])
    clock.advance(5.0)
    wall[0] += 0.1  # a stall shorter than the grace
    assert clock.now() == pytest.approx(5.0, abs=1e-12)
    wall[0] += 0.5  # idle beyond the grace: flows at time_scale from the end of the grace
    assert clock.now() == pytest.approx(5.0 + 10.0 * 0.3, abs=1e-9)
    assert clock.advance(1.0) == pytest.approx(5.0 + 3.0 + 1.0, abs=1e-9)  # the jump keeps what flowed
    wall[0] += 0.2  # within the grace of that jump again
    assert clock.now() == pytest.approx(9.0, abs=1e-9)


def test_run_engine_sleep_jumps_a_stepped_rig(lockstep_rig: Any) -> None:
    """An hour of `bps.sleep` and a furnace move settle in simulated time, not in wall time."""
    RE = RunEngine({}, call_returns_result=False)
    with lockstep_rig(RE) as rig:
        t0 = rig.world.now()
        RE(bps.sleep(3600.0 / rig.time_scale))
        assert rig.world.now() - t0 == pytest.approx(3600.0, abs=30.0)
        RE(bps.mv(rig.furnace, 60.0))  # the settle loop waits on the stepped clock
        assert rig.furnace.temperature.get() == pytest.approx(60.0, abs=rig.furnace.tolerance.get())
        assert rig.clock.elapsed.get() == pytest.approx(rig.world.now(), abs=30.0)
        rig.furnace.heater_range.put(0)


def test_lockstep_runs_are_repeatable(lockstep_rig: Any) -> None:
    """Two identical lock-step ramps take the same points: the cadence follows simulated time, not the machine."""
    from hotstage.plans import Cadence, Ramp, RigLimits, TemperatureProgram, insitu_ramp

    program = TemperatureProgram(25.0, (Ramp(60.0, 20.0),))
    outcomes = []
    for _ in range(2):
        RE = RunEngine({}, call_returns_result=False)
        temps: list[float] = []
        RE.subscribe(lambda name, doc: temps.append(doc["data"]["furnace_temperature"])
                     if name == "event" and "pl_counts" in doc["data"] else None)
        with lockstep_rig(RE, exposures={"pl": 1.0}) as rig:
            RE(insitu_ramp(rig.furnace, {"pl": rig.pl}, program, {"pl": Cadence.every_degrees(5)}, clock=rig.clock,
                           limits=RigLimits(max_C=400.0, min_rate=0.1, max_rate=50.0, min_C=0.0)))
        outcomes.append(temps)
    assert len(outcomes[0]) == len(outcomes[1]) >= 7
    # readback noise and the flow of a few ms per step: points agree within 1 °C (the cadence step is 5 °C)
    assert outcomes[0] == pytest.approx(outcomes[1], abs=1.0)
