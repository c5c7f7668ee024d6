"""Experiment clock: an ophyd Device whose ``elapsed`` signal is experiment seconds since reset().

elapsed = (wall now − wall at reset) × time_scale. On a real rig ``time_scale`` is 1 (experiment seconds
are wall seconds); the simulated rig passes its speed-up factor so that every event of a simulated run
carries the time in the rig's (simulated) time base, comparable with the sample model's ``time_s``.
The wall clock defaults to ``time.monotonic`` (immune to NTP steps); a rig may pass its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ophyd import Component as Cpt
from ophyd import Device, Kind, Signal, SignalRO

__all__ = ["ExperimentClock"]


class _ElapsedSignal(SignalRO):
    """Read-only signal computing experiment seconds since the parent's reset()."""

    def get(self, **kwargs: Any) -> float:
        """Experiment seconds now (also cached as the readback)."""
        value = self.parent.now()
        Signal.put(self, value, force=True)
        return value

    def describe(self) -> dict[str, dict[str, Any]]:
        """Scalar number in seconds."""
        desc = super().describe()
        desc[self.name].update(dtype="number", units="s", precision=3)
        return desc


class ExperimentClock(Device):
    """Experiment time (rig time base) as a readable device for every event of a run."""

    elapsed = Cpt(_ElapsedSignal, kind=Kind.hinted)

    def __init__(
        self,
        *,
        name: str = "clock",
        time_scale: float = 1.0,
        reset_on_stage: bool = False,
        wall_clock: Callable[[], float] = time.monotonic,
        **kwargs: Any,
    ) -> None:
        """``time_scale`` experiment s per wall s; ``reset_on_stage`` restarts at 0 when a run stages it."""
        if time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
        self.time_scale = float(time_scale)
        self.reset_on_stage = bool(reset_on_stage)
        self._wall = wall_clock
        self._origin = wall_clock()
        super().__init__("", name=name, **kwargs)

    def reset(self) -> None:
        """Restart experiment time at 0 now."""
        self._origin = self._wall()

    def now(self) -> float:
        """Experiment seconds since the last reset()."""
        return (self._wall() - self._origin) * self.time_scale

    def at_wall(self, wall: float) -> float:
        """Experiment seconds at a reading ``wall`` of this clock's wall clock (e.g. a detector's exposure start)."""
        return (float(wall) - self._origin) * self.time_scale

    def to_wall(self, experiment_seconds: float) -> float:
        """Convert an experiment-time duration to wall seconds."""
        return float(experiment_seconds) / self.time_scale

    def stage(self) -> list[Any]:
        """Reset at stage when ``reset_on_stage`` is set."""
        staged = super().stage()
        if self.reset_on_stage:
            self.reset()
        return staged
