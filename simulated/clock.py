"""Simulated clock shared by every emulator of one simulated rig.

Two modes, one interface:

* **wall** (default): simulated seconds = (monotonic wall seconds − start) × ``time_scale``. What the demo,
  ``hotstage sim serve`` and the end-to-end tests use: the rig replays a program faster than real time and a
  separate process (or another person's driver) can talk to it.
* **stepped** (``stepped=True``): the clock stands still and whoever waits *jumps* it forward instead of
  waiting: the RunEngine's ``sleep`` (see ``hotstage.simulated.rig.install_stepped_sleep``), a detector
  integrating (``wall_until`` moves the clock to the acquisition's end), the furnace waiting to settle
  (``sleep``). Plans and the simulator then advance in lock-step: a 75-minute program runs as fast as the code
  computes, every point is taken at the simulated time the plan asked for, and a loaded machine changes nothing
  (the time between two jumps does not count). Only when nobody has jumped for ``idle_grace_s`` wall seconds
  (a suspended plan waiting for the furnace, a test waiting on the rig) does the clock flow again, at
  ``time_scale``, so nothing can wait forever; the next jump keeps what flowed.

All emulators of a rig (furnace, spectrometers, XRD detector) read the same clock, so that a temperature ramp
and the acquisitions taken during it stay consistent. ``time_scale`` is the same factor the ophyd devices
receive (experiment seconds / time_scale = wall seconds).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["SimClock"]


class SimClock:
    """Monotonic simulated clock: ``time_scale`` times the wall clock, plus jumps when ``stepped``."""

    def __init__(self, time_scale: float = 1.0, *, start_s: float = 0.0, stepped: bool = False,
                 idle_grace_s: float = 2.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        """Start counting now, at ``start_s`` simulated seconds; time_scale must be > 0. ``monotonic`` is the wall
        clock (``time.monotonic``; a test passes its own to step wall time by hand)."""
        time_scale = float(time_scale)
        if not time_scale > 0.0:
            raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
        self._time_scale = time_scale
        self._monotonic = monotonic
        self._wall0 = monotonic()
        self._start_s = float(start_s)
        self._stepped = bool(stepped)
        self._idle_grace_s = float(idle_grace_s)
        self._jumped_s = 0.0
        self._last_jump_wall = self._wall0
        self._lock = threading.Lock()

    @property
    def wall_origin(self) -> float:
        """Wall-clock (``monotonic``) reading at which the clock read ``start_s``."""
        return self._wall0

    @property
    def time_scale(self) -> float:
        """Simulated seconds per wall second."""
        return self._time_scale

    @property
    def stepped(self) -> bool:
        """True when waits jump the clock forward (lock-step mode)."""
        return self._stepped

    def now(self) -> float:
        """Simulated seconds since the clock was created (plus ``start_s``)."""
        mono = self._monotonic()
        if self._stepped:
            return self._start_s + self._jumped_s + self._idle_flow(mono)
        return self._start_s + (mono - self._wall0) * self._time_scale

    def _idle_flow(self, mono: float) -> float:
        """Simulated seconds flowed since the last jump: nothing within the grace, then time_scale × wall."""
        return max(0.0, mono - self._last_jump_wall - self._idle_grace_s) * self._time_scale

    def wall(self) -> float:
        """The wall-clock reading that corresponds to ``now()`` (``time.monotonic()`` when not stepped)."""
        return self._wall0 + (self.now() - self._start_s) / self._time_scale

    def advance(self, sim_seconds: float) -> float:
        """Jump ``sim_seconds`` forward (stepped mode only); returns the new reading."""
        return self._jump(lambda now: max(0.0, float(sim_seconds)))

    def advance_to(self, sim_time_s: float) -> float:
        """Jump to ``sim_time_s`` unless the clock is already past it (stepped mode only)."""
        return self._jump(lambda now: max(0.0, float(sim_time_s) - now))

    def _jump(self, by: Callable[[float], float]) -> float:
        if not self._stepped:
            raise RuntimeError("advance() needs a stepped SimClock; a wall clock only flows")
        with self._lock:
            mono = self._monotonic()
            self._jumped_s += self._idle_flow(mono)  # keep what flowed while nobody jumped
            self._last_jump_wall = mono
            self._jumped_s += by(self._start_s + self._jumped_s)
            return self._start_s + self._jumped_s

    def sleep(self, wall_seconds: float) -> None:
        """Wait ``wall_seconds``: stepped, jump ``wall_seconds × time_scale`` and only yield the CPU."""
        if self._stepped:
            self.advance(float(wall_seconds) * self._time_scale)
            time.sleep(0)
        else:
            time.sleep(max(0.0, float(wall_seconds)))

    def wall_delay(self, sim_seconds: float) -> float:
        """Wall seconds that ``sim_seconds`` of simulated time take (>= 0)."""
        return max(0.0, float(sim_seconds)) / self._time_scale

    def wall_until(self, sim_time_s: float) -> float:
        """Wall seconds from now until the clock reads ``sim_time_s`` (0 if already past).

        Stepped, the clock jumps there and the answer is 0: whoever asks is waiting for that moment."""
        if self._stepped:
            self.advance_to(sim_time_s)
            return 0.0
        return self.wall_delay(sim_time_s - self.now())

    def __repr__(self) -> str:
        """Show scale, mode and current reading."""
        mode = ", stepped" if self._stepped else ""
        return f"SimClock(time_scale={self._time_scale:g}{mode}, now={self.now():.3f} s)"
