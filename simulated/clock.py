"""Simulated clock shared by every emulator of one simulated rig.

Simulated seconds = (monotonic wall seconds - start) x ``time_scale``. All emulators of a rig (furnace,
spectrometers, XRD detector) read the same clock, so that a temperature ramp and the acquisitions taken
during it stay consistent when the rig runs faster than real time. ``time_scale`` is the same factor the
ophyd devices receive (INTERFACES.md, "devices": experiment seconds / time_scale = wall seconds).
"""

from __future__ import annotations

import time

__all__ = ["SimClock"]


class SimClock:
    """Monotonic clock running ``time_scale`` times faster than the wall clock."""

    def __init__(self, time_scale: float = 1.0, *, start_s: float = 0.0) -> None:
        """Start counting now, at ``start_s`` simulated seconds; time_scale must be > 0."""
        time_scale = float(time_scale)
        if not time_scale > 0.0:
            raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
        self._time_scale = time_scale
        self._wall0 = time.monotonic()
        self._start_s = float(start_s)

    @property
    def wall_origin(self) -> float:
        """``time.monotonic()`` reading at which the clock read ``start_s``."""
        return self._wall0

    @property
    def time_scale(self) -> float:
        """Simulated seconds per wall second."""
        return self._time_scale

    def now(self) -> float:
        """Simulated seconds since the clock was created (plus ``start_s``)."""
        return self._start_s + (time.monotonic() - self._wall0) * self._time_scale

    def wall_delay(self, sim_seconds: float) -> float:
        """Wall seconds that ``sim_seconds`` of simulated time take (>= 0)."""
        return max(0.0, float(sim_seconds)) / self._time_scale

    def wall_until(self, sim_time_s: float) -> float:
        """Wall seconds from now until the clock reads ``sim_time_s`` (0 if already past)."""
        return self.wall_delay(sim_time_s - self.now())

    def __repr__(self) -> str:
        """Show scale and current reading."""
        return f"SimClock(time_scale={self._time_scale:g}, now={self.now():.3f} s)"
