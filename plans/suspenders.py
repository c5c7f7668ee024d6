"""Furnace suspenders: over-temperature (make safe, abort) and readback outside a band (suspend, resume, abort).

Why a poll thread. bluesky suspenders (``bluesky.suspenders.SuspenderBase``) are callbacks on an ophyd
signal's value subscription: they act when the signal *changes*. Our furnace signals are VISA signals
(``hotstage.devices.visa.VisaSignalRO``): they have no monitor, a value exists only when someone asks ``KRDG?``.
The in-situ loop does read the furnace at every poll, but not while the plan is blocked in a long wait (an
acquisition's exposure, a settle, a hold in ``step_and_hold``, a suspension), which is exactly when an
over-temperature must still be caught. So :class:`FurnaceWatch` runs a small daemon thread, started with
each run (``start`` document) and stopped with it (``stop`` document), that every ``period_s`` wall
seconds (default 2 experiment s, i.e. 2 s / time_scale, clamped to 10 ms–0.5 s) reads the readback,
the controller setpoint (the 336's ramping setpoint is the programmed temperature at that instant),
the heater output and range — through the device, so under the resource lock, with the transport's
retries — and puts the readback into a soft ``ophyd.Signal`` the suspenders subscribe to. Checks inside
the ramp loop as plan logic were the alternative; they would be blind during waits and would need a copy
in every plan.

The suspenders (installed with ``RE.install_suspender`` by :func:`install_furnace_suspenders`):

* :class:`OverTemperature` — readback above ``max_C``: from the watch thread, at once, the heater is
  switched off and confirmed by read-back (``hotstage.plans.safety.ensure_heater_off``; it does not wait for the
  RunEngine), then the run is aborted (``RE.abort``: the plan's finalize runs, exit_status "abort", reason
  naming the temperature). Not resumable: an over-temperature is a hardware problem to look at.
* :class:`OutsideBand` — readback more than ``band_C`` above the setpoint while the heater is on and either
  driving (output > 0) or the readback still rising (overshoot, runaway; a stage that merely cools more
  slowly than a cooling ramp has its heater at 0 and a falling readback, which is not a fault), or more than
  ``band_C`` below it with the heater on (range > 0: it cannot keep up, e.g. heater failure) for at least
  ``low_grace_s`` experiment seconds since it was last off or stopped (``DEFAULT_LOW_GRACE_S``). A sample whose
  reads spanned more than ``MAX_SAMPLE_SPAN_EXP_S`` (a retried query) is not judged. The run is suspended
  (bluesky: the RunEngine stops the furnace — heater
  off — and rewinds to the last checkpoint); it resumes once the readback is back within ``band_C / 2`` on
  the side that tripped (the in-situ loop then re-arms the heater from the present readback); if it has not
  come back within ``timeout_s`` experiment seconds, or trips ``max_trips`` times in one run, the run is
  aborted.

Aborting from a suspender: bluesky suspenders can only suspend, so the abort is ``RE.abort(reason)`` called
from a separate short-lived thread (``RunEngine.abort`` is thread-safe: it schedules the abort on the
RunEngine's loop and waits for it).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from bluesky.suspenders import SuspenderBase
from ophyd import Signal

from .safety import ensure_heater_off

__all__ = ["FurnaceWatch", "WatchSample", "OverTemperature", "OutsideBand", "FurnaceSafety", "install_furnace_suspenders"]

log = logging.getLogger(__name__)

DEFAULT_PERIOD_EXP_S = 2.0
MIN_PERIOD_WALL_S, MAX_PERIOD_WALL_S = 0.01, 0.5
DEFAULT_BAND_C = 15.0
DEFAULT_BAND_TIMEOUT_S = 300.0
DEFAULT_MAX_TRIPS = 3
MAX_SAMPLE_SPAN_EXP_S = 5.0
"""A watch sample whose reads spanned more than this many experiment seconds (a query retried after a timeout) is
not judged against the band: its readback and setpoint are from different moments (at 600x a 0.3 s timeout is
3 experiment minutes of ramp, enough to put a correct readback 20 °C "below" a later setpoint)."""
DEFAULT_LOW_GRACE_S = 60.0
"""Experiment seconds the heater must have been on (no stop() in between) before "below the band" counts: after a
pause or suspension the controller's setpoint ramp has run on while the heater was off, and the plan needs a poll
to re-arm the ramp from the readback; a failing heater shows as a lag that keeps growing, not in the first minute."""
DEFAULT_OVER_TEMPERATURE_MARGIN_C = 10.0
"""Over-temperature threshold above the rig's max_C: the programs are validated against max_C, a few °C of
overshoot at the end of a fast ramp are normal (simulated/thermal.py: ~0.5 °C at 10 °C/min)."""


@dataclass(frozen=True)
class WatchSample:
    """One poll of the furnace: readback, controller setpoint (°C), heater output (%), heater range, wall time."""

    readback_C: float
    setpoint_C: float
    heater_output: float
    heater_range: int
    t_wall: float
    rising: bool = False
    """The readback rose since the previous poll (by more than 0.01 °C)."""
    heater_on_s: float = 0.0
    """Experiment seconds the heater has been on without a stop() in between (0 when off)."""
    span_s: float = 0.0
    """Experiment seconds between the first and the last of the sample's reads (a retried query stretches it)."""

    @property
    def deviation_C(self) -> float:
        """Readback minus setpoint."""
        return self.readback_C - self.setpoint_C


class FurnaceWatch:
    """A poll thread publishing the furnace readback into a soft Signal for bluesky suspenders (module doc)."""

    def __init__(self, furnace: Any, *, period_s: float | None = None) -> None:
        """Watch ``furnace`` every ``period_s`` wall s (default 2 experiment s / the furnace's time_scale)."""
        self.furnace = furnace
        ts = getattr(furnace, "time_scale", 1.0)
        self.time_scale = float(ts) if isinstance(ts, (int, float)) and ts > 0 else 1.0
        """Experiment seconds per wall second of the rig (1 on a real rig)."""
        if period_s is None:
            period_s = min(max(DEFAULT_PERIOD_EXP_S / self.time_scale, MIN_PERIOD_WALL_S), MAX_PERIOD_WALL_S)
        self.period_s = float(period_s)
        self._on_since: float | None = None
        self._stops: int | None = None
        self.readback = Signal(name=f"{getattr(furnace, 'name', 'furnace')}_watch_readback", value=math.nan)
        self.sample: WatchSample | None = None
        self.errors = 0
        self.polls = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listeners: list[Any] = []
        """Objects with ``reset()`` called at every start (the suspenders' per-run state)."""
        self.aborting: str | None = None
        """Set by the first suspender that aborts the run: no suspension may be requested after it (a suspend
        request landing on an aborting RunEngine would leave it waiting for a resume that never comes)."""

    def poll_once(self) -> WatchSample:
        """Read the furnace once, publish the readback, return the sample."""
        f = self.furnace
        t_first = time.monotonic()
        readback = float(f.temperature.get())
        setpoint = float(f.setpoint.get())
        heater_output = float(f.heater_output.get())
        heater_range = int(f.heater_range.get())
        now = time.monotonic()
        stops = getattr(f, "stops", None)
        stops = int(stops.get()) if stops is not None else None
        if heater_range == 0 or stops != self._stops or self._on_since is None:
            self._on_since = now  # off, or stopped (paused/suspended) and on again since the previous poll
        self._stops = stops
        prev = self.sample
        sample = WatchSample(
            readback_C=readback,
            setpoint_C=setpoint,
            heater_output=heater_output,
            heater_range=heater_range,
            t_wall=now,
            rising=prev is not None and readback > prev.readback_C + 0.01,
            heater_on_s=0.0 if heater_range == 0 else (now - self._on_since) * self.time_scale,
            span_s=(now - t_first) * self.time_scale,
        )
        self.sample = sample
        self.polls += 1
        # (rising is relative to the previous poll of this run; the first poll of a run is never "rising")
        self.readback.put(sample.readback_C, force=True)  # runs the suspenders' subscriptions
        return sample

    def _run(self) -> None:
        """Poll until stopped; transport errors are logged and counted (the plan's own reads fail the run)."""
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception as exc:  # noqa: BLE001 - keep watching
                self.errors += 1
                log.warning("furnace watch: poll failed: %s", exc)
            self._stop.wait(self.period_s)

    def start(self) -> None:
        """Start the poll thread (no-op if running); resets the listeners' per-run state."""
        if self._thread is not None and self._thread.is_alive():
            return
        for listener in self.listeners:
            listener.reset()
        self.sample = None
        self.aborting = None
        self._on_since = None
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="hotstage-furnace-watch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the poll thread and wait for it."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def running(self) -> bool:
        """True while the poll thread runs."""
        return self._thread is not None and self._thread.is_alive()


def _abort_in_thread(RE: Any, reason: str) -> None:
    """Abort the RunEngine's run from a fresh thread (RunEngine.abort waits for the RunEngine's loop)."""

    def run() -> None:
        for _ in range(50):  # the RunEngine may be between states (suspending): try for ~5 s
            state = str(getattr(RE, "state", "idle"))
            if state in ("idle", "aborting", "halting", "stopping", "panicked"):
                return
            try:
                RE.abort(reason=reason)
                return
            except Exception as exc:  # noqa: BLE001 - TransitionError while suspending/pausing: retry
                log.debug("abort not possible yet (%s): %s", state, exc)
                time.sleep(0.1)
        log.error("could not abort the run: %s", reason)

    threading.Thread(target=run, name="hotstage-furnace-abort", daemon=True).start()


class OverTemperature(SuspenderBase):
    """Readback above ``max_C``: heater off at once (confirmed), then abort the run (module doc)."""

    def __init__(self, watch: FurnaceWatch, max_C: float) -> None:
        """Trip on ``watch.readback`` > ``max_C`` (°C)."""
        super().__init__(watch.readback, tripped_message=f"furnace readback above {max_C:g} °C")
        self.watch = watch
        self.max_C = float(max_C)
        self.fired: str | None = None
        """The abort reason once tripped in this run (None otherwise)."""
        watch.listeners.append(self)

    def reset(self) -> None:
        """Re-arm for a new run."""
        self.fired = None

    def _should_suspend(self, value: float) -> bool:
        return bool(value > self.max_C)

    def _should_resume(self, value: float) -> bool:
        return False

    def _get_justification(self) -> str:
        return f"over-temperature: furnace readback above {self.max_C:g} °C"

    def __call__(self, value: Any, **kwargs: Any) -> None:
        """Subscription callback: on the first reading above max_C make the furnace safe and abort."""
        RE = self.RE
        if RE is None or self.fired is not None or value is None or not (float(value) > self.max_C):
            return
        reason = (
            f"over-temperature: {getattr(self.watch.furnace, 'name', 'furnace')} readback {float(value):.1f} °C "
            f"> limit {self.max_C:g} °C; heater switched off, run aborted"
        )
        self.fired = reason
        self.watch.aborting = reason
        log.error(reason)
        try:
            ensure_heater_off(self.watch.furnace)
        except Exception as exc:  # noqa: BLE001 - abort anyway; the finalize plan and the RunEngine try again
            log.critical("over-temperature: heater off FAILED (%s); switch the heater off at the controller", exc)
        _abort_in_thread(RE, reason)


class OutsideBand(SuspenderBase):
    """Readback outside ±``band_C`` of the setpoint (heater-aware): suspend; resume when back; abort after a timeout."""

    def __init__(self, watch: FurnaceWatch, band_C: float = DEFAULT_BAND_C, *,
                 timeout_s: float = DEFAULT_BAND_TIMEOUT_S, max_trips: int = DEFAULT_MAX_TRIPS,
                 resume_fraction: float = 0.5, sleep: float = 0.0, low_grace_s: float = DEFAULT_LOW_GRACE_S) -> None:
        """``timeout_s``, ``low_grace_s`` in experiment seconds (converted with the furnace's time_scale); ``sleep``
        wall s before resuming."""
        super().__init__(watch.readback, sleep=sleep, tripped_message=f"furnace readback outside ±{band_C:g} °C of setpoint")
        self.watch = watch
        self.band_C = float(band_C)
        self.timeout_s = float(timeout_s)
        self.max_trips = int(max_trips)
        self.resume_fraction = float(resume_fraction)
        self.low_grace_s = float(low_grace_s)
        self.side: str | None = None
        self.trips = 0
        self.fired: str | None = None
        self._timer: threading.Timer | None = None
        self._reason = ""
        watch.listeners.append(self)

    def reset(self) -> None:
        """Re-arm for a new run."""
        self._cancel_timer()
        self.release()
        self.side = None
        self.trips = 0
        self.fired = None

    def release(self) -> None:
        """Clear a trip left over by a run that ended while suspended (else the next run would wait for it).

        bluesky's RunEngine waits, before starting a plan, for every installed suspender that is still
        tripped; a run aborted during a suspension leaves this one tripped. Uses SuspenderBase's own
        (name-mangled) event setter, which is what a return to nominal conditions calls.
        """
        self._cancel_timer()
        with self._lock:
            if self.RE is not None and self._ev is not None:
                self._SuspenderBase__set_event(self.RE._loop)  # type: ignore[attr-defined]
            self._ev = None
            self._tripped = False
        self.side = None

    def _excursion(self) -> str | None:
        """'high', 'low' or None from the latest watch sample (module doc for the heater-aware rule)."""
        s = self.watch.sample
        if s is None or s.span_s > MAX_SAMPLE_SPAN_EXP_S:
            return None
        if s.deviation_C > self.band_C and s.heater_range > 0 and (s.heater_output > 0.0 or s.rising):
            return "high"
        if s.deviation_C < -self.band_C and s.heater_range > 0 and s.heater_on_s >= self.low_grace_s:
            return "low"
        return None

    def _should_suspend(self, value: float) -> bool:
        if self.side is not None or self.fired is not None or self.watch.aborting is not None:
            return False
        side = self._excursion()
        if side is None:
            return False
        s = self.watch.sample
        assert s is not None
        self.side = side
        self.trips += 1
        self._reason = (
            f"furnace readback {s.readback_C:.1f} °C is {abs(s.deviation_C):.1f} °C "
            f"{'above' if side == 'high' else 'below'} the setpoint {s.setpoint_C:.1f} °C "
            f"(band ±{self.band_C:g} °C, heater output {s.heater_output:.0f} %)"
        )
        log.warning("suspending: %s", self._reason)
        return True

    def _should_resume(self, value: float) -> bool:
        s = self.watch.sample
        if self.side is None or s is None:
            return False
        limit = self.band_C * self.resume_fraction
        back = s.deviation_C <= limit if self.side == "high" else s.deviation_C >= -limit
        if back:
            log.warning("furnace back within the band (%.1f °C from setpoint): resuming", s.deviation_C)
            self.side = None
        return back

    def _get_justification(self) -> str:
        return self._reason or self._tripped_message

    def __call__(self, value: Any, **kwargs: Any) -> None:
        """bluesky's suspend/resume logic, plus the trip counter and the abort timer."""
        if self.RE is None or self.fired is not None:
            return
        was = self.side
        super().__call__(value, **kwargs)
        if self.side is not None and was is None:
            if self.trips >= self.max_trips:
                self._abort(f"{self._reason}; tripped {self.trips} times in this run")
            else:
                self._start_timer()
        elif self.side is None and was is not None:
            self._cancel_timer()

    def _start_timer(self) -> None:
        """Abort unless back in the band within timeout_s experiment seconds."""
        self._cancel_timer()
        reason = self._reason
        self._timer = threading.Timer(
            self.timeout_s / self.watch.time_scale, lambda: self._abort(f"{reason}; not back within {self.timeout_s:g} s")
        )
        self._timer.daemon = True
        self._timer.start()

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _abort(self, reason: str) -> None:
        """Give up: heater off (confirmed) and abort the run."""
        if self.fired is not None or self.RE is None or self.watch.aborting is not None:
            return
        self.fired = f"furnace out of band: {reason}; run aborted"
        self.watch.aborting = self.fired
        log.error(self.fired)
        try:
            ensure_heater_off(self.watch.furnace)
        except Exception as exc:  # noqa: BLE001
            log.critical("heater off FAILED (%s); switch the heater off at the controller", exc)
        _abort_in_thread(self.RE, self.fired)


class FurnaceSafety:
    """The watch and its suspenders on one RunEngine, started/stopped with every run; ``remove()`` undoes it."""

    def __init__(self, RE: Any, watch: FurnaceWatch, suspenders: list[SuspenderBase]) -> None:
        """Install the suspenders and subscribe the start/stop hook."""
        self.RE = RE
        self.watch = watch
        self.suspenders = suspenders
        for s in suspenders:
            RE.install_suspender(s)
        self._token = RE.subscribe(self._on_document, "all")

    def _on_document(self, name: str, doc: dict) -> None:
        """Start the watch at a run's start document, stop it at its stop document (never raises)."""
        try:
            if name == "start":
                self.watch.start()
            elif name == "stop":
                self.watch.stop()
                for s in self.suspenders:
                    release = getattr(s, "release", None)
                    if release is not None:
                        release()
        except Exception:  # noqa: BLE001 - a callback must not fail the run
            log.exception("furnace watch: start/stop failed")

    @property
    def abort_reason(self) -> str | None:
        """Why a suspender aborted the last run (None if none did)."""
        for s in self.suspenders:
            fired = getattr(s, "fired", None)
            if fired:
                return fired
        return None

    def remove(self) -> None:
        """Stop the watch, remove the suspenders and the subscription."""
        self.watch.stop()
        for s in self.suspenders:
            try:
                self.RE.remove_suspender(s)
            except Exception:  # noqa: BLE001
                pass
            cancel = getattr(s, "_cancel_timer", None)
            if cancel is not None:
                cancel()
        self.RE.unsubscribe(self._token)


def install_furnace_suspenders(
    RE: Any,
    furnace: Any,
    *,
    max_C: float,
    band_C: float | None = DEFAULT_BAND_C,
    band_timeout_s: float = DEFAULT_BAND_TIMEOUT_S,
    max_trips: int = DEFAULT_MAX_TRIPS,
    period_s: float | None = None,
) -> FurnaceSafety:
    """Watch ``furnace`` during every run of ``RE``: over-temperature above ``max_C`` (°C) aborts; readback
    outside ±``band_C`` suspends (None: no band suspender), aborting after ``band_timeout_s`` experiment s."""
    watch = FurnaceWatch(furnace, period_s=period_s)
    suspenders: list[SuspenderBase] = [OverTemperature(watch, max_C)]
    if band_C is not None:
        suspenders.append(OutsideBand(watch, band_C, timeout_s=band_timeout_s, max_trips=max_trips))
    return FurnaceSafety(RE, watch, suspenders)
