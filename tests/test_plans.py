"""Plans on the real SimulatedRig: in-situ ramp cadence and documents, pause/resume, abort/halt/failure safety,
validation before anything moves, step-and-hold and the sintering array."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import event_model
import pytest
from bluesky import RunEngine
from bluesky.preprocessors import plan_mutator
from bluesky.utils import Msg, RunEngineInterrupted

from hotstage.plans import (
    Cadence,
    Cool,
    Hold,
    ProgramError,
    ProgressInfo,
    Ramp,
    RigLimits,
    TemperatureProgram,
    insitu_ramp,
    sintering_array,
    step_and_hold,
)
from hotstage.plans.suspenders import install_furnace_suspenders
from hotstage.simulated.parameters import SampleSpec
from hotstage.simulated.rig import SimulatedRig

LIMITS = RigLimits(max_C=400.0, min_rate=0.1, max_rate=50.0, min_C=0.0)
SHORT_EXPOSURES = {"xrd": 2.0, "thz": 2.0, "pl": 1.0}
MODALITY_KEYS = {"xrd": "xrd_counts", "thz": "thz_absorbance", "pl": "pl_counts"}
CADENCE = {"xrd": Cadence.every_degrees(5), "thz": Cadence.every_degrees(10), "pl": Cadence.every_seconds(30)}


class Recorder:
    """Collects every document of a RunEngine and answers questions about the runs."""

    def __init__(self, RE: RunEngine) -> None:
        self.docs: list[tuple[str, dict[str, Any]]] = []
        RE.subscribe(lambda name, doc: self.docs.append((name, doc)))

    def of(self, name: str) -> list[dict[str, Any]]:
        return [d for n, d in self.docs if n == name]

    def stream_names(self) -> dict[str, str]:
        return {d["uid"]: d["name"] for d in self.of("descriptor")}

    def events(self, stream: str | None = None, run: str | None = None) -> list[dict[str, Any]]:
        names = self.stream_names()
        descs = {d["uid"]: d["run_start"] for d in self.of("descriptor")}
        return [
            e
            for e in self.of("event")
            if (stream is None or names[e["descriptor"]] == stream) and (run is None or descs[e["descriptor"]] == run)
        ]

    def counts(self, run: str | None = None) -> Counter:
        names = self.stream_names()
        return Counter(names[e["descriptor"]] for e in self.events(run=run))

    def validate(self) -> None:
        """Every document validates against its event-model schema; run structure is consistent."""
        for name, doc in self.docs:
            event_model.schema_validators[event_model.DocumentNames[name]].validate(doc)
        starts = {d["uid"] for d in self.of("start")}
        assert {d["run_start"] for d in self.of("stop")} == starts
        for stop in self.of("stop"):
            run_events = Counter(
                self.stream_names()[e["descriptor"]] for e in self.events(run=stop["run_start"])
            )
            assert stop["num_events"] == dict(run_events)


@pytest.fixture
def RE() -> RunEngine:
    return RunEngine({}, call_returns_result=False)


def fire_once(condition: Callable[[ProgressInfo], bool], action: Callable[[], Any], in_thread: bool = True):
    """Progress hook that runs `action` (from another thread) the first time `condition` holds."""
    fired = threading.Event()

    def hook(p: ProgressInfo) -> None:
        if not fired.is_set() and condition(p):
            fired.set()
            if in_thread:
                threading.Thread(target=action, daemon=True).start()
            else:
                action()

    hook.fired = fired  # type: ignore[attr-defined]
    return hook


def detectors(rig: SimulatedRig, names: tuple[str, ...] = ("xrd", "thz", "pl")) -> dict[str, Any]:
    return {n: getattr(rig, n) for n in names}


def temperature_path(events: list[dict[str, Any]]) -> float:
    """Up from the first reading to the maximum, then down to the last (°C travelled)."""
    temps = [e["data"]["furnace_temperature"] for e in sorted(events, key=lambda e: e["data"]["clock_elapsed"])]
    peak = max(temps)
    return (peak - temps[0]) + (peak - temps[-1])


# -- the in-situ ramp ------------------------------------------------------------------------------
def test_insitu_ramp_streams_cadence_and_documents(RE: RunEngine, lockstep_rig: Any) -> None:
    program = TemperatureProgram(25.0, (Ramp(80.0, 20.0), Hold(1.0), Cool(25.0, 20.0)))
    rec = Recorder(RE)
    progress: list[ProgressInfo] = []
    with lockstep_rig(RE, exposures=SHORT_EXPOSURES) as rig:
        plan = insitu_ramp(
            rig.furnace, detectors(rig), program, CADENCE, clock=rig.clock, truth=rig.truth_reader, limits=LIMITS,
            md={"operator": "pytest", "sample": {"name": "x0.4", "cspbi3_wt_frac": 0.4}}, progress=progress.append,
        )
        (uid,) = RE(plan)
        heater_after = rig.furnace.heater_range.get()
    rec.validate()
    (start,) = rec.of("start")
    (stop,) = rec.of("stop")
    assert start["uid"] == uid and stop["exit_status"] == "success"
    assert start["program"] == program.to_dict()
    assert start["cadence"] == {"xrd": {"every_C": 5.0}, "thz": {"every_C": 10.0}, "pl": {"every_s": 30.0}}
    assert start["operator"] == "pytest" and start["sample"]["cspbi3_wt_frac"] == 0.4
    assert heater_after == 0, "heater must be off when the plan has finished"

    counts = rec.counts()
    assert set(counts) == {"xrd", "thz", "pl", "truth", "segments"}
    assert counts["segments"] == len(program.segments)  # one summary event per segment, in order
    assert [e["data"]["segment_index"] for e in rec.events("segments")] == [0, 1, 2]
    assert counts["truth"] == counts["xrd"] + counts["thz"] + counts["pl"]
    modality_events = [e for m in ("xrd", "thz", "pl") for e in rec.events(m)]
    for m in ("xrd", "thz", "pl"):
        for e in rec.events(m):
            data = e["data"]
            for key in ("furnace_temperature", "furnace_sample_temperature", "clock_elapsed", MODALITY_KEYS[m]):
                assert key in data, (m, key)
            assert len(data[MODALITY_KEYS[m]]) > 100
            assert 20.0 < data["furnace_temperature"] < 90.0 and 15.0 < data["furnace_sample_temperature"] < 90.0
    for e in rec.events("truth"):
        assert {"truth_wf_CsPbI3-delta", "truth_cspbi3_wt_frac", "furnace_temperature", "clock_elapsed"} <= set(e["data"])

    # cadence: every 5 °C (xrd) / 10 °C (thz) of travel, every 30 experiment s (pl)
    path = temperature_path(modality_events)
    assert path > 80.0  # 25 → 80 °C and back down as far as the furnace cools in the cool segment
    # One event at the start plus one per full step of travel; each of the two ends of a leg (the turn at the
    # top, the end of cooling) can leave a partial step unsampled, so the count lies in [path/step - 1, path/step + 1]
    # (+/- 0.5 for readback lag at the moment of a poll).
    for modality, step in (("xrd", 5.0), ("thz", 10.0)):
        assert path / step - 1.5 <= counts[modality] <= path / step + 1.5, (modality, counts, path)
    xrd_t = [e["data"]["furnace_temperature"] for e in rec.events("xrd")]
    steps = [abs(b - a) for a, b in zip(xrd_t, xrd_t[1:])]
    assert min(steps) > 2.5, steps  # never oversampled (readback noise/lag allowance)
    times = sorted(e["data"]["clock_elapsed"] for e in rec.events("pl"))
    span = times[-1] - times[0]
    assert abs(counts["pl"] - (span / 30.0 + 1)) <= 2, (counts["pl"], span)
    # experiment time increases within each stream; the hold at 80 °C was reached
    for m in ("xrd", "thz", "pl", "truth"):
        ts = [e["data"]["clock_elapsed"] for e in rec.events(m)]
        assert ts == sorted(ts)
    assert max(xrd_t) > 77.0
    # progress reports cover the program and every segment
    assert {p.segment_kind for p in progress} == {"ramp", "hold", "cool"}
    assert progress[-1].elapsed_s >= 0.9 * program.duration_s


def test_pause_and_resume_gives_one_complete_run(RE: RunEngine, lockstep_rig: Any) -> None:
    program = TemperatureProgram(25.0, (Ramp(60.0, 20.0), Hold(0.5), Cool(45.0, 20.0)))
    rec = Recorder(RE)
    with lockstep_rig(RE, exposures=SHORT_EXPOSURES) as rig:
        hook = fire_once(lambda p: p.temperature_C > 38.0, lambda: RE.request_pause(defer=True))
        plan = insitu_ramp(
            rig.furnace, detectors(rig, ("xrd", "pl")), program,
            {"xrd": Cadence.every_degrees(5), "pl": Cadence.every_seconds(30)},
            clock=rig.clock, truth=rig.truth_reader, limits=LIMITS, progress=hook,
        )
        with pytest.raises(RunEngineInterrupted):
            RE(plan)
        assert RE.state == "paused"
        assert rig.furnace.heater_range.get() == 0, "the RunEngine stops (heater off) the furnace while paused"
        paused_events = len(rec.events("xrd"))
        rig.world.clock.advance(36.0)  # 36 experiment s with the heater off
        RE.resume()
        assert RE.state == "idle"
        heater_after = rig.furnace.heater_range.get()
    rec.validate()
    assert len(rec.of("start")) == 1
    (stop,) = rec.of("stop")
    assert stop["exit_status"] == "success"
    assert len(rec.events("xrd")) > paused_events
    temps = [e["data"]["furnace_temperature"] for e in rec.events("xrd")]
    assert max(temps) > 57.0, temps  # the ramp was re-armed after the pause and reached its target
    assert rec.counts()["truth"] == rec.counts()["xrd"] + rec.counts()["pl"]
    assert heater_after == 0


def pause_at(plan: Any, armed: Callable[[Msg], bool], where: Callable[[Msg], bool]) -> Any:
    """`plan` with an immediate pause (as Ctrl-C) before the first message matching `where` after one matching `armed`."""
    state = {"armed": False, "done": False}

    def mutate(msg: Msg) -> tuple[Any, Any]:
        if state["done"]:
            return None, None
        if not state["armed"]:
            state["armed"] = armed(msg)
            return None, None
        if not where(msg):
            return None, None
        state["done"] = True

        def head() -> Any:
            yield Msg("pause", None, defer=False)
            return (yield msg)

        return head(), None

    return plan_mutator(plan, mutate)


def test_pause_right_after_the_ramp_is_commanded(RE: RunEngine, lockstep_rig: Any) -> None:
    """Paused while the ramp is being commanded (Ctrl-C lands anywhere), band suspender installed. The resume
    replays the commands since the last checkpoint and the heater comes back on at a setpoint that ramped on
    while paused; the plan must notice the stop (furnace.stops), re-arm the ramp from the readback, and the band
    suspender must not judge a heater that has just come back on (it did: out-of-band trip, then abort)."""
    program = TemperatureProgram(25.0, (Ramp(120.0, 20.0),))
    rec = Recorder(RE)
    with lockstep_rig(RE, exposures=SHORT_EXPOSURES) as rig:
        safety = install_furnace_suspenders(RE, rig.furnace, max_C=LIMITS.max_C, band_C=15.0)
        plan = insitu_ramp(rig.furnace, detectors(rig, ("pl",)), program, {"pl": Cadence.every_degrees(20)},
                           clock=rig.clock, limits=LIMITS)
        setpoint = rig.furnace.setpoint
        plan = pause_at(plan, lambda m: m.command == "set" and m.obj is setpoint and m.args[0] == 120.0,
                        lambda m: m.command == "wait")
        with pytest.raises(RunEngineInterrupted):
            RE(plan)
        assert rig.furnace.heater_range.get() == 0
        rig.world.clock.advance(120.0)  # 120 s paused: the controller's setpoint ramps on by 40 °C, heater off
        assert rig.furnace.setpoint.get() - rig.furnace.temperature.get() > 20.0
        RE.resume()
        safety.remove()
    assert safety.abort_reason is None
    assert [s["exit_status"] for s in rec.of("stop")] == ["success"]
    assert max(e["data"]["furnace_temperature"] for e in rec.events("pl")) > 100.0


def test_band_is_not_judged_on_a_sample_whose_reads_were_slow() -> None:
    """A watch sample whose setpoint query was answered late (0.8 s wall = 8 experiment s at 10x) mixes a readback
    and a setpoint from different moments of a ramp: it is not judged against the band; a prompt one is. (At 10x a
    prompt poll stays well under the 5 experiment-s limit even when a loaded machine takes 0.3 s for it.)"""
    from hotstage.plans.suspenders import FurnaceWatch, OutsideBand

    with SimulatedRig(time_scale=10.0, exposures=SHORT_EXPOSURES) as rig:
        watch = FurnaceWatch(rig.furnace)
        band = OutsideBand(watch, 15.0, low_grace_s=0.0)
        rig.furnace.heater_range.put(3)
        rig.furnace.setpoint.put(200.0)  # ramp off: the setpoint jumps, the readback is ~175 °C below it
        prompt = watch.poll_once()
        assert prompt.span_s < 5.0 and band._excursion() == "low"
        rig.faults.inject("furnace", "slow", 1, match="SETP?", delay=0.8)
        slow = watch.poll_once()
        assert slow.span_s > 5.0 and band._excursion() is None
        rig.furnace.heater_range.put(0)


def test_step_and_hold_resettles_after_a_pause_between_acquisitions(RE: RunEngine, lockstep_rig: Any) -> None:
    """A pause just before an acquisition of a hold (heater off meanwhile): that event is kept (taken off
    temperature, and says so), then the furnace settles again and the acquisition is repeated."""
    rec = Recorder(RE)
    with lockstep_rig(RE, exposures=SHORT_EXPOSURES) as rig:
        plan = step_and_hold(rig.furnace, detectors(rig, ("pl",)), [80.0], repeats=3, clock=rig.clock, limits=LIMITS)
        plan = pause_at(plan, lambda m: m.command == "save", lambda m: m.command == "trigger")
        with pytest.raises(RunEngineInterrupted):
            RE(plan)
        # the pause wrote RANGE 1,0 (no reply); this RANGE? query is answered once the emulator has executed it.
        # Jumping the clock before that would run the 120 s with the heater still on (seen once on a loaded machine)
        assert rig.furnace.heater_range.get() == 0
        rig.world.clock.advance(120.0)  # 120 s with the heater off: the stage cools well below 80 °C
        assert rig.furnace.temperature.get() < 75.0
        RE.resume()
    temps = [e["data"]["furnace_temperature"] for e in rec.events("pl")]
    assert [s["exit_status"] for s in rec.of("stop")] == ["success"]
    assert [abs(t - 80.0) <= 1.5 for t in temps] == [True, False, True, True], temps


def test_abort_while_paused_runs_cleanup(RE: RunEngine, lockstep_rig: Any) -> None:
    program = TemperatureProgram(25.0, (Ramp(70.0, 20.0), Hold(1.0)))
    rec = Recorder(RE)
    with lockstep_rig(RE, exposures=SHORT_EXPOSURES) as rig:
        hook = fire_once(lambda p: p.temperature_C > 35.0, lambda: RE.request_pause(defer=True))
        plan = insitu_ramp(
            rig.furnace, detectors(rig, ("pl",)), program, {"pl": Cadence.every_degrees(5)},
            clock=rig.clock, limits=LIMITS, progress=hook, safe_setpoint_C=30.0,
        )
        with pytest.raises(RunEngineInterrupted):
            RE(plan)
        assert RE.state == "paused"
        RE.abort("operator abort")
        assert rig.furnace.heater_range.get() == 0
        assert rig.furnace.setpoint.get() == pytest.approx(30.0)  # the finalize plan ran
    rec.validate()
    (stop,) = rec.of("stop")
    assert stop["exit_status"] == "abort" and stop["reason"] == "operator abort"


def test_abort_while_running_leaves_heater_off(RE: RunEngine, lockstep_rig: Any) -> None:
    program = TemperatureProgram(25.0, (Ramp(70.0, 20.0), Hold(1.0)))
    rec = Recorder(RE)
    with lockstep_rig(RE, exposures=SHORT_EXPOSURES) as rig:
        hook = fire_once(lambda p: p.temperature_C > 35.0, lambda: RE.abort("stop now"))
        plan = insitu_ramp(
            rig.furnace, detectors(rig, ("pl",)), program, {"pl": Cadence.every_degrees(5)},
            clock=rig.clock, limits=LIMITS, progress=hook, safe_setpoint_C=30.0,
        )
        with pytest.raises(RunEngineInterrupted):
            RE(plan)
        assert hook.fired.is_set()
        assert rig.furnace.heater_range.get() == 0
        assert rig.furnace.setpoint.get() == pytest.approx(30.0)
    (stop,) = rec.of("stop")
    assert stop["exit_status"] == "abort"


def test_halt_skips_cleanup_but_the_run_engine_stops_the_furnace(RE: RunEngine, lockstep_rig: Any) -> None:
    program = TemperatureProgram(25.0, (Ramp(70.0, 20.0), Hold(1.0)))
    rec = Recorder(RE)
    with lockstep_rig(RE, exposures=SHORT_EXPOSURES) as rig:
        hook = fire_once(lambda p: p.temperature_C > 40.0, RE.halt)
        plan = insitu_ramp(
            rig.furnace, detectors(rig, ("pl",)), program, {"pl": Cadence.every_degrees(5)},
            clock=rig.clock, limits=LIMITS, progress=hook, safe_setpoint_C=30.0,
        )
        with pytest.raises(RunEngineInterrupted):
            RE(plan)
        assert rig.furnace.heater_range.get() == 0  # RunEngine called furnace.stop() on the set() furnace
        assert rig.furnace.setpoint.get() > 35.0  # ... and the finalize plan (safe setpoint 30 °C) did not run
    (stop,) = rec.of("stop")
    assert stop["exit_status"] == "abort"


def test_exception_inside_the_plan_leaves_heater_off(RE: RunEngine, lockstep_rig: Any) -> None:
    program = TemperatureProgram(25.0, (Ramp(70.0, 20.0), Hold(1.0)))
    rec = Recorder(RE)

    def boom() -> None:
        raise RuntimeError("detector on fire")

    with lockstep_rig(RE, exposures=SHORT_EXPOSURES) as rig:
        hook = fire_once(lambda p: p.temperature_C > 35.0, boom, in_thread=False)
        plan = insitu_ramp(
            rig.furnace, detectors(rig, ("pl",)), program, {"pl": Cadence.every_degrees(5)},
            clock=rig.clock, limits=LIMITS, progress=hook,
        )
        with pytest.raises(RuntimeError, match="detector on fire"):
            RE(plan)
        assert rig.furnace.heater_range.get() == 0
    rec.validate()
    (stop,) = rec.of("stop")
    assert stop["exit_status"] == "fail" and "detector on fire" in stop["reason"]


def test_validation_errors_raise_before_anything_moves(RE: RunEngine, lockstep_rig: Any) -> None:
    """The plans are generator functions: they validate at their first step, before yielding any message."""
    rec = Recorder(RE)
    with SimulatedRig(time_scale=300.0) as rig:
        before = (rig.furnace.setpoint.get(), rig.furnace.heater_range.get(), rig.furnace.ramp_rate.get())
        too_hot = TemperatureProgram(25.0, (Ramp(450.0, 10.0),))
        with pytest.raises(ProgramError, match=r"segment 0 \(ramp\).*450"):
            next(insitu_ramp(rig.furnace, detectors(rig), too_hot, CADENCE, clock=rig.clock, limits=LIMITS))
        too_fast = TemperatureProgram(25.0, (Ramp(100.0, 10.0), Cool(30.0, 80.0)))
        with pytest.raises(ProgramError, match=r"segment 1 \(cool\).*80"):
            next(insitu_ramp(rig.furnace, detectors(rig), too_fast, CADENCE, clock=rig.clock, limits=LIMITS))
        with pytest.raises(ProgramError, match="no cadence for detector"):
            next(insitu_ramp(rig.furnace, detectors(rig), TemperatureProgram.demo(), {"xrd": CADENCE["xrd"]}, limits=LIMITS))
        with pytest.raises(ProgramError, match="not a modality"):
            next(insitu_ramp(rig.furnace, {"saxs": rig.xrd}, TemperatureProgram.demo(), {"saxs": CADENCE["xrd"]}))
        with pytest.raises(ProgramError, match="temperature 1: 500.0"):
            next(step_and_hold(rig.furnace, detectors(rig), [50.0, 500.0], limits=LIMITS))
        with pytest.raises(ProgramError, match="sintering temperature 450.0"):
            next(sintering_array(rig.furnace, detectors(rig), [0.4], [300.0, 450.0], 10.0, 10.0, limits=LIMITS))
        after = (rig.furnace.setpoint.get(), rig.furnace.heater_range.get(), rig.furnace.ramp_rate.get())
    assert after == before
    assert rec.docs == []


# -- step and hold ---------------------------------------------------------------------------------
def test_step_and_hold_event_counts(RE: RunEngine, lockstep_rig: Any) -> None:
    rec = Recorder(RE)
    with lockstep_rig(RE, exposures=SHORT_EXPOSURES) as rig:
        plan = step_and_hold(
            rig.furnace, detectors(rig), [40.0, 60.0], repeats=2, settle_s=10.0, md={"purpose": "test"},
            clock=rig.clock, truth=rig.truth_reader, limits=LIMITS, rate_C_per_min=30.0,
        )
        (uid,) = RE(plan)
        assert rig.furnace.heater_range.get() == 0
    rec.validate()
    (start,) = rec.of("start")
    assert start["uid"] == uid and start["purpose"] == "test" and start["temperatures_C"] == [40.0, 60.0]
    assert rec.counts() == {"xrd": 4, "thz": 4, "pl": 4, "truth": 12}
    for m in ("xrd", "thz", "pl"):
        temps = [e["data"]["furnace_temperature"] for e in rec.events(m)]
        assert temps[0] == pytest.approx(40.0, abs=1.5) and temps[1] == pytest.approx(40.0, abs=1.5)
        assert temps[2] == pytest.approx(60.0, abs=1.5) and temps[3] == pytest.approx(60.0, abs=1.5)


def test_pause_while_settling_then_resume(RE: RunEngine, lockstep_rig: Any) -> None:
    """A pause cancels the furnace's pending settle; after resume the set is issued again and the run completes."""
    rec = Recorder(RE)
    with lockstep_rig(RE, exposures=SHORT_EXPOSURES) as rig:
        plan = step_and_hold(rig.furnace, detectors(rig, ("pl",)), [40.0, 50.0], clock=rig.clock, limits=LIMITS)
        setpoint = rig.furnace.setpoint
        plan = pause_at(plan, lambda m: m.command == "set" and m.obj is rig.furnace and m.args[0] == 40.0,
                        lambda m: m.command == "wait")  # paused while the furnace settles at 40 °C
        with pytest.raises(RunEngineInterrupted):
            RE(plan)
        assert RE.state == "paused"
        assert rig.furnace.heater_range.get() == 0
        assert setpoint.get() == pytest.approx(40.0)
        RE.resume()
    rec.validate()
    assert [s["exit_status"] for s in rec.of("stop")] == ["success"]
    temps = [e["data"]["furnace_temperature"] for e in rec.events("pl")]
    assert temps == [pytest.approx(40.0, abs=1.5), pytest.approx(50.0, abs=1.5)]


# -- sintering array -------------------------------------------------------------------------------
def test_sintering_array_one_run_per_condition(RE: RunEngine, lockstep_rig: Any) -> None:
    rec = Recorder(RE)
    loaded: list[float] = []
    with lockstep_rig(RE, exposures=SHORT_EXPOSURES) as rig:

        def change_sample(x: float) -> None:
            """A fresh pellet of composition x in the simulated world."""
            rig.world.load_sample(SampleSpec.composite(x))
            loaded.append(x)

        plan = sintering_array(
            rig.furnace, detectors(rig), [0.05, 0.4], [60.0, 80.0], hold_minutes=0.5, rate_C_per_min=30.0,
            md={"campaign": "map"}, change_sample=change_sample, clock=rig.clock, truth=rig.truth_reader,
            limits=LIMITS, measure_below_C=35.0, array_id="array-1", history_every_s=20.0,
        )
        uids = RE(plan)
        assert rig.furnace.heater_range.get() == 0
    rec.validate()
    assert len(uids) == 4 and loaded == [0.05, 0.05, 0.4, 0.4]
    starts = rec.of("start")
    conditions = [(s["cspbi3_wt_frac"], s["sintering_temperature_C"]) for s in starts]
    assert conditions == [(0.05, 60.0), (0.05, 80.0), (0.4, 60.0), (0.4, 80.0)]
    for i, s in enumerate(starts):
        assert s["array_id"] == "array-1" and s["condition_index"] == i and s["n_conditions"] == 4
        assert s["campaign"] == "map" and s["sample"]["cspbi3_wt_frac"] == s["cspbi3_wt_frac"]
        assert s["program"]["max_C"] == s["sintering_temperature_C"]
        counts = rec.counts(run=s["uid"])
        assert {k: counts[k] for k in ("xrd", "thz", "pl", "truth")} == {"xrd": 1, "thz": 1, "pl": 1, "truth": 3}
        history = [e["data"]["furnace_temperature"] for e in rec.events("furnace", run=s["uid"])]
        assert counts["furnace"] == len(history) >= 10
        # the pellet went through its sintering temperature before being measured at room temperature
        assert max(history) == pytest.approx(s["sintering_temperature_C"], abs=3.0)
        for m in ("xrd", "thz", "pl"):
            (event,) = rec.events(m, run=s["uid"])
            assert event["data"]["furnace_temperature"] <= 35.0  # measured at room temperature
        for e in rec.events("truth", run=s["uid"]):
            assert e["data"]["truth_cspbi3_wt_frac"] == pytest.approx(s["cspbi3_wt_frac"])
    assert all(stop["exit_status"] == "success" for stop in rec.of("stop"))


# -- plans the queue server can run: generator functions, JSON arguments, plan_args -------------------------------
def test_user_plans_are_generator_functions_with_real_annotations() -> None:
    """bluesky-queueserver lists a plan when `inspect.isgeneratorfunction` is true and reads its parameter types
    from `inspect.signature`: they must be type objects (bluesky.protocols for devices), not strings."""
    import inspect

    from bluesky.protocols import Movable, Readable

    for plan in (insitu_ramp, step_and_hold, sintering_array):
        assert inspect.isgeneratorfunction(plan), plan.__name__
        params = inspect.signature(plan).parameters
        assert params["furnace"].annotation is Movable
        assert not any(isinstance(p.annotation, str) for p in params.values()), plan.__name__
        assert Readable in getattr(params["detectors"].annotation, "__args__", ())


def test_json_forms_are_validated_at_the_first_step() -> None:
    """The dict (JSON) forms of program, cadence and limits go through the same validation as the objects."""
    furnace, dets = object(), {"xrd": object()}
    program = {"start_C": 25, "segments": [{"kind": "ramp", "to_C": 450, "rate_C_per_min": 10}]}
    plan = insitu_ramp(furnace, dets, program, {"xrd": {"every_C": 5}}, limits={"max_C": 400})  # nothing runs yet
    with pytest.raises(ProgramError, match=r"segment 0 \(ramp\).*450"):
        next(plan)
    with pytest.raises(ProgramError, match="unknown key 'every_K'"):
        next(insitu_ramp(furnace, dets, TemperatureProgram.demo(), {"xrd": {"every_K": 5}}))
    with pytest.raises(ProgramError, match="limits: unknown key 'hottest'"):
        next(step_and_hold(furnace, dets, [50.0], limits={"hottest": 400}))
    with pytest.raises(ProgramError, match="program must be a TemperatureProgram or its dict form"):
        next(insitu_ramp(furnace, dets, "demo", {"xrd": {"every_C": 5}}))


def test_plan_args_in_the_start_document_are_json(RE: RunEngine, lockstep_rig: Any) -> None:
    """A run started with JSON arguments records plan_name and plan_args (devices by name) that survive
    json.dumps and rebuild the same program."""
    import json

    program = {"start_C": 25, "segments": [{"kind": "ramp", "to_C": 40, "rate_C_per_min": 30},
                                           {"kind": "cool", "to_C": 30, "rate_C_per_min": 30}]}
    rec = Recorder(RE)
    with lockstep_rig(RE, exposures=SHORT_EXPOSURES) as rig:
        plan = insitu_ramp(rig.furnace, {"pl": rig.pl}, program, {"pl": {"every_C": 5}}, clock=rig.clock,
                           limits={"max_C": 400, "max_rate": 50}, progress=lambda p: None)
        (uid,) = RE(plan)
        assert rig.furnace.heater_range.get() == 0
    rec.validate()
    (start,) = rec.of("start")
    (stop,) = rec.of("stop")
    assert stop["exit_status"] == "success" and rec.counts()["pl"] >= 3
    assert start["plan_name"] == "insitu_ramp"
    args = json.loads(json.dumps(start["plan_args"]))
    assert args == start["plan_args"]
    assert args["furnace"] == "furnace" and args["detectors"] == {"pl": "pl"} and args["clock"] == "clock"
    assert args["cadence"] == {"pl": {"every_C": 5.0}}
    assert args["limits"]["max_C"] == 400.0 and args["limits"]["max_rate"] == 50.0
    assert TemperatureProgram.from_dict(args["program"]) == TemperatureProgram.from_dict(program)
