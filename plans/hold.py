"""Step-and-hold plan: go to each temperature, wait until the furnace has settled, acquire every modality N times.

Unlike `insitu_ramp` this waits at each point: `bps.abs_set(furnace, T, wait=True)` returns when the furnace
readback has stayed within the device's tolerance for its settle time (LakeShore336Furnace.set), then an
extra `settle_s` experiment seconds let the sample (which lags the control sensor by ~20 s on the simulated
stage, simulated/thermal.py) catch up. One run; one event per acquisition in the modality's stream.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import bluesky.plan_stubs as bps
from bluesky.preprocessors import stage_wrapper

from .insitu import (
    MODALITIES,
    Acquirer,
    Movable,
    MsgGenerator,
    Readable,
    _time_scale,
    as_truth_readable,
    check_detectors,
    check_furnace,
    device_name,
    limits_dict,
    limits_from,
    resolve_annotations,
    settle,
    stream_hints,
)
from .program import ProgramError, RigLimits
from .safety import safe_furnace_wrapper

__all__ = ["step_and_hold"]


def step_and_hold(
    furnace: Movable,
    detectors: Mapping[str, Readable],
    temperatures: Sequence[float],
    repeats: int = 1,
    settle_s: float = 0.0,
    md: dict[str, Any] | None = None,
    *,
    clock: Readable | None = None,
    truth: Readable | None = None,
    limits: RigLimits | Mapping[str, float] | None = None,
    rate_C_per_min: float | None = None,
    safe_setpoint_C: float | None = None,
) -> MsgGenerator:
    """One run: for each temperature, set and settle, wait `settle_s` experiment s, acquire each modality `repeats` times.

    A generator function (bluesky plan); `limits` may be RigLimits or a dict. `rate_C_per_min` (validated against
    `limits`) turns the controller's setpoint ramp on for the moves; without it the furnace steps. Validated at the
    first step, before any message; wrapped by `safe_furnace_wrapper`.
    """
    plan = _step_and_hold(furnace, detectors, temperatures, repeats, settle_s, md, clock=clock, truth=truth,
                          limits=limits, rate_C_per_min=rate_C_per_min, safe_setpoint_C=safe_setpoint_C)
    return (yield from plan)


resolve_annotations(step_and_hold)


def _step_and_hold(
    furnace: Any,
    detectors: Mapping[str, Any],
    temperatures: Sequence[float],
    repeats: int,
    settle_s: float,
    md: dict[str, Any] | None,
    *,
    clock: Any,
    truth: Any,
    limits: RigLimits | Mapping[str, float] | None,
    rate_C_per_min: float | None,
    safe_setpoint_C: float | None,
) -> MsgGenerator:
    """Validate the arguments of `step_and_hold` and build its plan (raises ProgramError before any message)."""
    limits = limits_from(limits)
    if isinstance(temperatures, (str, bytes, Mapping)) or not hasattr(temperatures, "__iter__"):
        raise ProgramError(f"temperatures must be a list of °C values, got {temperatures!r}")
    temps = []
    for i, t in enumerate(temperatures):
        if isinstance(t, bool) or not isinstance(t, numbers.Real):
            raise ProgramError(f"temperature {i}: {t!r} is not a number")
        temps.append(float(t))
    if not temps:
        raise ProgramError("step_and_hold needs at least one temperature")
    for i, t in enumerate(temps):
        if not math.isfinite(t):
            raise ProgramError(f"temperature {i}: {t!r} is not a finite number")
        if limits is not None and not (limits.min_C <= t <= limits.max_C):
            raise ProgramError(f"temperature {i}: {t} °C is outside the rig limits [{limits.min_C}, {limits.max_C}] °C")
    if not isinstance(repeats, int) or repeats < 1:
        raise ProgramError(f"repeats must be an integer >= 1, got {repeats!r}")
    if isinstance(settle_s, bool) or not isinstance(settle_s, numbers.Real) or not (math.isfinite(settle_s)
                                                                                   and settle_s >= 0):
        raise ProgramError(f"settle_s must be >= 0, got {settle_s!r}")
    if rate_C_per_min is not None:
        if not (math.isfinite(rate_C_per_min) and rate_C_per_min > 0):
            raise ProgramError(f"rate_C_per_min must be > 0, got {rate_C_per_min!r}")
        if limits is not None and not (limits.min_rate <= rate_C_per_min <= limits.max_rate):
            raise ProgramError(
                f"rate_C_per_min = {rate_C_per_min} is outside the rig limits [{limits.min_rate}, {limits.max_rate}] °C/min"
            )
    check_furnace(furnace)
    check_detectors(detectors)
    truth = as_truth_readable(truth)
    time_scale = _time_scale(furnace)
    acq = Acquirer(furnace, dict(detectors), clock, truth)
    modalities = [m for m in MODALITIES if m in detectors]
    _md: dict[str, Any] = {
        "plan_name": "step_and_hold",
        "plan_type": "generator",
        "plan_args": {
            "furnace": device_name(furnace),
            "detectors": {k: device_name(d) for k, d in detectors.items()},
            "temperatures": temps,
            "repeats": repeats,
            "settle_s": float(settle_s),
            "clock": device_name(clock),
            "truth": device_name(truth),
            "limits": limits_dict(limits) if limits is not None else None,
            "rate_C_per_min": rate_C_per_min,
            "safe_setpoint_C": safe_setpoint_C,
        },
        "temperatures_C": temps,
        "repeats": repeats,
        "settle_s": float(settle_s),
        "rate_C_per_min": rate_C_per_min,
        "modalities": modalities,
        "detectors": [getattr(d, "name", str(d)) for d in detectors.values()],
        "num_points": len(temps) * repeats * len(modalities),
        "time_scale": time_scale,
        "hints": stream_hints(furnace, modalities),
    }
    if limits is not None:
        _md["limits"] = limits_dict(limits)
    _md.update(md or {})

    def inner() -> MsgGenerator:
        if rate_C_per_min is not None:
            yield from bps.mv(furnace.ramp_rate, rate_C_per_min)
            yield from bps.mv(furnace.ramp_on, 1)
        else:
            yield from bps.mv(furnace.ramp_on, 0)
        yield from bps.open_run(md=_md)
        for index, t in enumerate(temps):
            yield from bps.checkpoint()
            # settles (readback within tolerance for the device's settle time); heater on if it was off
            yield from settle(furnace, t)
            if settle_s > 0:
                yield from bps.sleep(settle_s / time_scale)
            yield from acq.acquire_all(repeats, hold_C=t)
        yield from bps.close_run()
        return dict(acq.counts)

    staged = [d for d in detectors.values()] + ([clock] if clock is not None else [])
    return safe_furnace_wrapper(stage_wrapper(inner(), staged), furnace, safe_setpoint_C)
