"""Sintering array: the ex-situ map of Li et al., Nat. Commun. 14, 7612 (2023) — composition × sintering temperature.

For each condition (composition x, sintering temperature T): a fresh pellet of composition x is loaded (the
`change_sample(x)` hook: on the simulated rig it swaps the world's sample; on a real rig use
`pause_for_sample_change`, which pauses the RunEngine — heater off — until the operator resumes), then one run:
heat at `rate` to T, hold `hold_minutes`, cool at `rate` to room temperature, wait until the furnace and sample
readbacks are below `measure_below_C`, and measure XRD, THz and PL at room temperature. Every run carries
`array_id`, `condition_index`, `n_conditions`, `sintering_temperature_C`, `cspbi3_wt_frac` and `sample`, so
one catalog query on `array_id` returns the whole map. The paper sinters at 10 °C/min and compares
sintering temperatures 200–350 °C; those are the caller's choice, validated against the rig limits.
"""

from __future__ import annotations

import inspect
import math
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import bluesky.plan_stubs as bps
from bluesky.preprocessors import stage_wrapper

from .insitu import (
    FURNACE_STREAM,
    MODALITIES,
    Acquirer,
    Movable,
    MsgGenerator,
    ProgramRunner,
    Readable,
    _time_scale,
    as_truth_readable,
    callable_name,
    check_detectors,
    check_furnace,
    device_name,
    heater_range_of,
    limits_dict,
    limits_from,
    poll_interval_s,
    resolve_annotations,
    stream_hints,
)
from .program import Cadence, Cool, Hold, ProgramError, Ramp, RigLimits, TemperatureProgram
from .safety import safe_furnace_wrapper

__all__ = ["composition_fraction", "pause_for_sample_change", "sintering_array", "sintering_program"]

SampleHook = Callable[[Any], Any]


def composition_fraction(composition: Any) -> float:
    """CsPbI3 weight fraction of a composition given as a number or an object with `cspbi3_wt_frac`."""
    x = getattr(composition, "cspbi3_wt_frac", composition)
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not (0.0 <= float(x) <= 1.0):
        raise ProgramError(f"composition {composition!r}: CsPbI3 weight fraction must be in [0, 1], got {x!r}")
    return float(x)


def composition_name(composition: Any) -> str:
    """The sample's own name, or the (CsPbI3)x(agZIF-62)1-x label for a bare fraction."""
    name = getattr(composition, "name", None)
    if isinstance(name, str) and name:
        return name
    x = composition_fraction(composition)
    return f"(CsPbI3){x:g}(agZIF-62){round(1.0 - x, 6):g}"


def sintering_program(room_C: float, sintering_C: float, hold_minutes: float, rate_C_per_min: float) -> TemperatureProgram:
    """Heat room → sintering temperature, hold, cool back to room temperature (one condition)."""
    return TemperatureProgram(
        room_C, (Ramp(sintering_C, rate_C_per_min), Hold(hold_minutes), Cool(room_C, rate_C_per_min)), name="sintering"
    )


def pause_for_sample_change(composition: Any) -> MsgGenerator:
    """Real-rig hook: checkpoint and pause so the operator can load a fresh pellet; RE.resume() continues."""
    yield from bps.checkpoint()
    print(f"Load a fresh pellet of {composition_name(composition)} then resume (RE.resume()).", flush=True)
    yield from bps.pause()


def _call_hook(hook: SampleHook | None, composition: Any) -> MsgGenerator:
    """Call the sample-change hook; a hook that returns a plan (generator) is run as part of this plan."""
    if hook is None:
        return (yield from bps.null())
    result = hook(composition)
    if inspect.isgenerator(result):
        return (yield from result)
    return result


def sintering_array(
    furnace: Movable,
    detectors: Mapping[str, Readable],
    compositions: Sequence[float],
    sintering_temperatures_C: Sequence[float],
    hold_minutes: float,
    rate_C_per_min: float,
    md: dict[str, Any] | None = None,
    *,
    change_sample: SampleHook | None = None,
    load_sample: SampleHook | None = None,
    clock: Readable | None = None,
    truth: Readable | None = None,
    limits: RigLimits | Mapping[str, float] | None = None,
    room_temperature_C: float = 25.0,
    measure_below_C: float | None = None,
    cool_timeout_s: float = 4 * 3600.0,
    repeats: int = 1,
    history_every_s: float | None = None,
    array_id: str | None = None,
    safe_setpoint_C: float | None = None,
) -> MsgGenerator:
    """One run per composition × sintering temperature: heat, hold, cool, measure at room temperature.

    A generator function (bluesky plan). `compositions` are CsPbI3 weight fractions (or objects with
    `cspbi3_wt_frac`, e.g. a SampleSpec); `limits` may be RigLimits or a dict. `change_sample` (alias
    `load_sample`) is called with the composition before every condition (each condition is a fresh pellet); it
    may return a plan, which is then run. `measure_below_C` (default room + 5 °C) is the readback below which the
    pellet counts as at room temperature; waiting longer than `cool_timeout_s` experiment seconds fails the run.
    `history_every_s` adds a `furnace` stream with the thermal history. Everything is validated at the first
    step, before any message; wrapped by `safe_furnace_wrapper`; the plan returns the number of runs.
    """
    plan = _sintering_array(
        furnace, detectors, compositions, sintering_temperatures_C, hold_minutes, rate_C_per_min, md,
        change_sample=change_sample, load_sample=load_sample, clock=clock, truth=truth, limits=limits,
        room_temperature_C=room_temperature_C, measure_below_C=measure_below_C, cool_timeout_s=cool_timeout_s,
        repeats=repeats, history_every_s=history_every_s, array_id=array_id, safe_setpoint_C=safe_setpoint_C,
    )
    return (yield from plan)


resolve_annotations(sintering_array)


def _sintering_array(
    furnace: Any,
    detectors: Mapping[str, Any],
    compositions: Sequence[Any],
    sintering_temperatures_C: Iterable[float],
    hold_minutes: float,
    rate_C_per_min: float,
    md: dict[str, Any] | None,
    *,
    change_sample: SampleHook | None,
    load_sample: SampleHook | None,
    clock: Any,
    truth: Any,
    limits: RigLimits | Mapping[str, float] | None,
    room_temperature_C: float,
    measure_below_C: float | None,
    cool_timeout_s: float,
    repeats: int,
    history_every_s: float | None,
    array_id: str | None,
    safe_setpoint_C: float | None,
) -> MsgGenerator:
    """Validate the arguments of `sintering_array` and build its plan (raises ProgramError before any message)."""
    limits = limits_from(limits)
    if change_sample is not None and load_sample is not None:
        raise ProgramError("give change_sample or load_sample, not both")
    hook = change_sample if change_sample is not None else load_sample
    comps = list(compositions)
    temps = [float(t) for t in sintering_temperatures_C]
    if not comps or not temps:
        raise ProgramError("sintering_array needs at least one composition and one sintering temperature")
    fractions = [composition_fraction(c) for c in comps]
    below = room_temperature_C + 5.0 if measure_below_C is None else float(measure_below_C)
    if not below > room_temperature_C:
        raise ProgramError(f"measure_below_C = {below} must be above room_temperature_C = {room_temperature_C}")
    if not isinstance(repeats, int) or repeats < 1:
        raise ProgramError(f"repeats must be an integer >= 1, got {repeats!r}")
    if not (math.isfinite(cool_timeout_s) and cool_timeout_s > 0):
        raise ProgramError(f"cool_timeout_s must be > 0, got {cool_timeout_s!r}")
    programs = []
    for t in temps:
        try:
            programs.append(sintering_program(room_temperature_C, t, hold_minutes, rate_C_per_min).validate(limits))
        except ProgramError as err:
            raise ProgramError(f"sintering temperature {t} °C: {err}") from err
    check_furnace(furnace)
    check_detectors(detectors)
    truth = as_truth_readable(truth)
    cadence = {FURNACE_STREAM: Cadence.every_seconds(history_every_s)} if history_every_s else {}
    time_scale = _time_scale(furnace)
    acq = Acquirer(furnace, dict(detectors), clock, truth)
    aid = array_id or str(uuid.uuid4())
    modalities = [m for m in MODALITIES if m in detectors]
    conditions = [(c, x, t, p) for c, x in zip(comps, fractions) for t, p in zip(temps, programs)]
    base_md: dict[str, Any] = {
        "plan_name": "sintering_array",
        "plan_type": "generator",
        "plan_args": {
            "furnace": device_name(furnace),
            "detectors": {k: device_name(d) for k, d in detectors.items()},
            "compositions": fractions,
            "sintering_temperatures_C": temps,
            "hold_minutes": float(hold_minutes),
            "rate_C_per_min": float(rate_C_per_min),
            "change_sample": callable_name(hook),
            "clock": device_name(clock),
            "truth": device_name(truth),
            "limits": limits_dict(limits) if limits is not None else None,
            "room_temperature_C": float(room_temperature_C),
            "measure_below_C": measure_below_C,
            "cool_timeout_s": float(cool_timeout_s),
            "repeats": repeats,
            "history_every_s": history_every_s,
            "array_id": aid,
            "safe_setpoint_C": safe_setpoint_C,
        },
        "hold_minutes": float(hold_minutes),
        "rate_C_per_min": float(rate_C_per_min),
        "room_temperature_C": float(room_temperature_C),
        "measure_below_C": below,
        "repeats": repeats,
        "modalities": modalities,
        "detectors": [getattr(d, "name", str(d)) for d in detectors.values()],
        "sintering_temperatures_C": temps,
        "compositions": fractions,
        "time_scale": time_scale,
        "hints": stream_hints(furnace, modalities + ([FURNACE_STREAM] if cadence else [])),
    }
    if limits is not None:
        base_md["limits"] = limits_dict(limits)

    def wait_until_cool(runner: ProgramRunner) -> MsgGenerator:
        """Poll until furnace and sample readbacks are below `below` (experiment-time timeout)."""
        t0 = yield from runner.now()
        while True:
            yield from bps.checkpoint()
            temperature = float((yield from bps.rd(furnace.temperature)))
            sample = float((yield from bps.rd(furnace.sample_temperature)))
            hottest = temperature if math.isnan(sample) else max(temperature, sample)
            if hottest <= below:
                return hottest
            t = yield from runner.now()
            if cadence:
                last_C, last_s = runner.last.get(FURNACE_STREAM, (None, None))
                if cadence[FURNACE_STREAM].due(temperature, t, last_C, last_s):
                    yield from acq.acquire(FURNACE_STREAM)
                    runner.last[FURNACE_STREAM] = cadence[FURNACE_STREAM].advance(temperature, t, last_C, last_s)
            if t - t0 > cool_timeout_s:
                raise TimeoutError(
                    f"furnace still at {hottest:.1f} °C after {cool_timeout_s:.0f} experiment s; "
                    f"cannot measure at room temperature (< {below} °C)"
                )
            yield from bps.sleep(runner.poll_s)

    def condition(index: int, composition: Any, x: float, t: float, program: TemperatureProgram) -> MsgGenerator:
        cond_cadence = dict(cadence)
        runner = ProgramRunner(
            acq, program, cond_cadence, poll_interval_s(program, cond_cadence, time_scale), time_scale,
            heater_range_of(furnace), start_timeout_s=cool_timeout_s,
        )
        yield from runner.prepare()  # at room temperature, settled (natural cooling may be slow: long timeout)
        yield from _call_hook(hook, composition)
        run_md = {
            **base_md,
            "program": program.to_dict(),
            **(md or {}),
            "array_id": aid,
            "condition_index": index,
            "n_conditions": len(conditions),
            "sintering_temperature_C": t,
            "cspbi3_wt_frac": x,
            "sample": {
                "name": composition_name(composition),
                "cspbi3_wt_frac": x,
                "composition": {"CsPbI3": x, "agZIF-62": round(1.0 - x, 12)},
            },
        }
        yield from bps.open_run(md=run_md)
        acq.counts.clear()
        yield from runner.run()
        rt = yield from wait_until_cool(runner)
        yield from acq.acquire_all(repeats)
        uid = yield from bps.close_run()
        return uid, rt

    def inner() -> MsgGenerator:
        for index, (composition, x, t, program) in enumerate(conditions):
            yield from bps.checkpoint()
            yield from condition(index, composition, x, t, program)
        return len(conditions)

    staged = list(detectors.values()) + ([clock] if clock is not None else [])
    return safe_furnace_wrapper(stage_wrapper(inner(), staged), furnace, safe_setpoint_C)
