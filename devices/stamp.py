"""When an acquisition was exposed, and the furnace's temperature at the middle of that exposure.

A detector integrates over its exposure while the furnace moves: at 20 °C/min a 2 s exposure spans 0.7 °C, and a
furnace read *after* the exposure (plus the instrument's latency) is late by half the exposure and more. So the
plans bracket every group of exposures with furnace reads, each dated in turn by two experiment-clock reads:

    t0, T, t1, Ts, t2  |  trigger all due detectors  |  wait for the shortest exposure, read t0, T, t1, Ts, t2  |
    wait for the next, read again  | …

so that a group's exposures are covered by reads at their start, at the end of each and in between (a furnace
monitor while the detectors integrate, as dense as the group has detectors).

The exposure starts when the detector says it did (a detector that dates its exposures on the rig clock's wall
clock: ``ScpiArrayDetector.last_exposure_wall``, INIT and a query answered after it; otherwise right after the first bracket,
``start`` = t_b1) and ends ``exposure`` seconds later (the detector's configured exposure in experiment s;
without one, at the second bracket), so ``mid`` = start + exposure / 2. Dating by the detector matters: three
detectors are triggered one after another, and at x240 the few ms between the bracket and each ``INIT`` are
seconds of experiment time. The
temperatures at mid-exposure are interpolated linearly between the bracketing reads, each dated at the middle
of its own clock bracket: on a ramp this is the temperature of the moment the data describe, with an error of the
ramp's curvature over one exposure (the curvature of a PID-tracked ramp is tiny) plus the asymmetry of the read
latencies. ``ExposureStamp`` is the soft device that carries the result into each event (keys
``exposure_start``, ``exposure_end``, ``exposure_temperature_before/_after/_mid``,
``exposure_sample_temperature_before/_after/_mid``; NaN for a furnace without a sample input; and
``exposure_dating`` (s), the largest half-width of the clock brackets of the reads used plus that of the
detector's dated start: each read was taken within that much of its date and mid-exposure is known to the
start's, so a mid-exposure temperature is uncertain by up to the ramp rate times their sum. On a
quiet machine it is a few ms of wall time; under load the reads can wait for the CPU, and at x240 every ms of
wall time is 0.24 experiment s: 0.08 °C at 20 °C/min).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ophyd import Component as Cpt
from ophyd import Device, Kind, Signal

__all__ = ["Bracket", "ExposureStamp", "interpolate"]


class _Number(Signal):
    """A soft scalar with units in its description."""

    def __init__(self, *args: Any, units: str = "", **kwargs: Any) -> None:
        """``units`` goes into describe()."""
        self._units = units
        super().__init__(*args, value=math.nan, **kwargs)

    def describe(self) -> dict[str, dict[str, Any]]:
        """Scalar number with units."""
        desc = super().describe()
        desc[self.name].update(dtype="number", units=self._units, precision=3)
        return desc


@dataclass(frozen=True)
class Bracket:
    """One furnace read dated by the experiment clock: control °C read between two clock reads (``t`` their
    middle), then sample °C between the second and a third (``t_sample`` their middle; NaN: dated ``t``);
    ``t_end`` the last clock read; ``dating`` the larger half-width of the two clock brackets (s): how far from
    its date each read may have been taken."""

    t: float
    t_end: float
    temperature: float
    sample_temperature: float
    t_sample: float = math.nan
    dating: float = 0.0

    def time_of(self, field: str) -> float:
        """When ``field`` (``temperature`` or ``sample_temperature``) was read."""
        return self.t_sample if field == "sample_temperature" and math.isfinite(self.t_sample) else self.t


def interpolate(brackets: Sequence[Bracket], t: float, field: str) -> float:
    """``field`` of the brackets (in time order), piecewise linear in time at ``t``, clamped to the first and last;
    the mean of the first and last when the brackets are undated."""
    values = [getattr(b, field) for b in brackets]
    times = [b.time_of(field) for b in brackets]
    if not (math.isfinite(t) and all(math.isfinite(x) for x in times)) or times[-1] <= times[0]:
        return 0.5 * (values[0] + values[-1])
    return float(np.interp(t, times, values))


class ExposureStamp(Device):
    """Soft device: exposure window (experiment s) and the furnace temperatures bracketing it and at its middle."""

    start = Cpt(_Number, units="s", kind=Kind.normal)
    end = Cpt(_Number, units="s", kind=Kind.normal)
    temperature_before = Cpt(_Number, units="degC", kind=Kind.normal)
    temperature_after = Cpt(_Number, units="degC", kind=Kind.normal)
    temperature_mid = Cpt(_Number, units="degC", kind=Kind.hinted)
    sample_temperature_before = Cpt(_Number, units="degC", kind=Kind.normal)
    sample_temperature_after = Cpt(_Number, units="degC", kind=Kind.normal)
    sample_temperature_mid = Cpt(_Number, units="degC", kind=Kind.hinted)
    dating = Cpt(_Number, units="s", kind=Kind.normal)

    def __init__(self, *, name: str = "exposure", **kwargs: Any) -> None:
        """Offline soft signals: nothing to connect."""
        super().__init__("", name=name, **kwargs)

    def record(self, brackets: Sequence[Bracket], exposure_s: float | None, started: float | None = None,
               start_dating: float = 0.0) -> None:
        """Put one exposure's window and temperatures from the reads around it (time order: the first before
        the trigger, the last after this detector was done, any others in between). ``started``: when the detector
        says it started (experiment s; ``start_dating`` how uncertain that is), else right after the first read;
        exposure None: it ended at the last."""
        before, after = brackets[0], brackets[-1]
        start = before.t_end if started is None or not math.isfinite(started) else started
        end = after.t if exposure_s is None or not math.isfinite(exposure_s) else min(start + exposure_s, after.t)
        mid = 0.5 * (start + end)
        values = {
            self.start: start, self.end: end,
            self.temperature_before: before.temperature, self.temperature_after: after.temperature,
            self.temperature_mid: interpolate(brackets, mid, "temperature"),
            self.sample_temperature_before: before.sample_temperature,
            self.sample_temperature_after: after.sample_temperature,
            self.sample_temperature_mid: interpolate(brackets, mid, "sample_temperature"),
            self.dating: max(b.dating for b in brackets) + (start_dating if started is not None else 0.0),
        }
        for signal, value in values.items():
            signal.put(float(value))
