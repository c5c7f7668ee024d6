"""bluesky's stock plans on the simulated rig: bps.mv, bps.locate, bp.count, bp.scan and bp.list_scan.

The devices are the real drivers over TCP against the emulators, on a lock-step rig (the RunEngine's sleeps and
the furnace's settle waits jump the simulated clock), so the assertions are outcomes: events recorded, readbacks
within the furnace's tolerance of the setpoint, the heater still regulating after a clean ``mv`` + ``count``
(``end_of_plan`` "hold", recorded in the descriptor) and off after a failure or a pause — never latencies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.plans as bp
import event_model
import pytest
from bluesky import RunEngine
from bluesky.utils import FailedStatus, RunEngineInterrupted
from conftest import located

pytestmark = pytest.mark.e2e  # TCP emulators

RAMP_C_PER_MIN = 30.0


@pytest.fixture
def engine(lockstep_rig: Callable[..., Any]) -> Iterator[tuple[RunEngine, Any, list[tuple[str, dict]]]]:
    """A RunEngine, a lock-step rig (fast ramp, short settle) and the documents the RunEngine emitted."""
    RE = RunEngine({}, call_returns_result=True)
    docs: list[tuple[str, dict]] = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    with lockstep_rig(RE, seed=5, furnace_kwargs={"settle_time": 10.0}) as rig:
        rig.furnace.configure_ramp(RAMP_C_PER_MIN)
        yield RE, rig, docs
        rig.furnace.heater_off()


def _heater(rig: Any) -> int:
    """The controller's heater range, asked on the wire (not the driver's cache)."""
    return int(rig.furnace.visa.query("RANGE? 1"))


def _events(docs: list[tuple[str, dict]]) -> list[dict]:
    return [doc for name, doc in docs if name == "event"]


def _validate(docs: list[tuple[str, dict]]) -> None:
    for name, doc in docs:
        event_model.schema_validators[event_model.DocumentNames[name]].validate(doc)


def _within_tolerance(rig: Any, value: float, target: float) -> bool:
    return abs(value - target) <= float(rig.furnace.tolerance.get())


def test_mv_then_count_measures_a_sample_held_at_the_setpoint(engine: Any) -> None:
    RE, rig, docs = engine
    RE(bps.mv(rig.furnace, 60.0))
    assert _within_tolerance(rig, rig.furnace.temperature.get(), 60.0)
    assert _heater(rig) == 3  # a clean stock plan leaves the furnace regulating ("hold")
    result = RE(bp.count([rig.xrd, rig.furnace, rig.clock], num=3, delay=5.0))
    assert result.exit_status == "success"
    _validate(docs)
    events = _events(docs)
    assert len(events) == 3
    for event in events:
        assert _within_tolerance(rig, event["data"]["furnace_temperature"], 60.0)
        assert len(event["data"]["xrd_counts"]) == 5000
    times = [event["data"]["clock_elapsed"] for event in events]
    assert times[1] - times[0] >= 5.0 * rig.time_scale * 0.99  # the delay passed on the rig's clock
    assert abs(rig.truth()["sample_C"] - 60.0) < 3.0  # the sample itself is hot, not cooling
    assert _heater(rig) == 3
    descriptor = next(doc for name, doc in docs if name == "descriptor")
    config = descriptor["configuration"]["furnace"]["data"]
    assert config["furnace_end_of_plan"] == "hold" and config["furnace_settle_time"] == 10.0


def test_locate_after_mv(engine: Any) -> None:
    RE, rig, _ = engine
    RE(bps.mv(rig.furnace, 45.0))
    location = located(RE(bps.locate(rig.furnace)).plan_result, rig.furnace)
    assert location["setpoint"] == 45.0
    assert _within_tolerance(rig, location["readback"], 45.0)


def test_scan_with_the_furnace_as_motor(engine: Any) -> None:
    RE, rig, docs = engine
    result = RE(bp.scan([rig.pl, rig.clock], rig.furnace, 35.0, 55.0, 3))
    assert result.exit_status == "success"
    _validate(docs)
    start = docs[0][1]
    assert list(start["motors"]) == ["furnace"] and start["num_points"] == 3
    temperatures = [event["data"]["furnace_temperature"] for event in _events(docs)]
    assert len(temperatures) == 3
    for value, target in zip(temperatures, (35.0, 45.0, 55.0)):
        assert _within_tolerance(rig, value, target)
    assert _heater(rig) == 3


def test_list_scan_with_the_furnace_as_motor(engine: Any) -> None:
    RE, rig, docs = engine
    result = RE(bp.list_scan([rig.thz], rig.furnace, [40.0, 50.0]))
    assert result.exit_status == "success"
    events = _events(docs)
    assert len(events) == 2 and all(len(event["data"]["thz_absorbance"]) == 651 for event in events)
    for event, target in zip(events, (40.0, 50.0)):
        assert _within_tolerance(rig, event["data"]["furnace_temperature"], target)


def test_a_failing_stock_plan_ends_with_the_heater_off(engine: Any) -> None:
    RE, rig, docs = engine
    RE(bps.mv(rig.furnace, 50.0))
    assert _heater(rig) == 3
    rig.faults.inject("xrd", "wrong_length", count=None)  # every FETC:DATA? short: the acquisition fails

    def move_then_count() -> Any:
        yield from bps.mv(rig.furnace, 52.0)
        yield from bp.count([rig.xrd, rig.furnace])

    with pytest.raises(FailedStatus) as info:
        RE(move_then_count())
    assert "FETC:DATA?" in str(info.value.__cause__)  # the XRD detector's own error
    rig.faults.clear()
    assert docs[-1][0] == "stop" and docs[-1][1]["exit_status"] == "fail"
    assert _heater(rig) == 0  # bluesky said stop(success=True); the failed run decides: off


def test_a_failing_plan_that_only_reads_the_furnace_leaves_it_as_the_last_plan_did(engine: Any) -> None:
    """The documented limit of "hold": stop() reaches only what the failing plan moved (pause() reaches all)."""
    RE, rig, docs = engine
    RE(bps.mv(rig.furnace, 50.0))
    rig.faults.inject("xrd", "wrong_length", count=None)
    with pytest.raises(FailedStatus):
        RE(bp.count([rig.xrd, rig.furnace]))
    rig.faults.clear()
    assert docs[-1][1]["exit_status"] == "fail"
    assert _heater(rig) == 3


def test_a_paused_then_aborted_stock_plan_ends_with_the_heater_off(engine: Any) -> None:
    RE, rig, docs = engine

    def paused() -> Any:
        yield from bps.open_run()
        yield from bps.mv(rig.furnace, 45.0)
        yield from bps.checkpoint()
        yield from bps.pause()
        yield from bps.close_run()

    with pytest.raises(RunEngineInterrupted):
        RE(paused())
    assert RE.state == "paused" and _heater(rig) == 0
    RE.abort("test")
    assert _heater(rig) == 0 and docs[-1][1]["exit_status"] == "abort"
