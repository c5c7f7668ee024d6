"""In-situ temperature-ramp plan: run a temperature program continuously and acquire each modality on its cadence.

How the ramp loop works (all through bluesky plan stubs and the devices' ophyd signals):

1. `insitu_ramp` is a generator function (a bluesky plan the queue server lists, `inspect.isgeneratorfunction`);
   its arguments may be JSON forms (program as a `{"start_C": .., "segments": [..]}` dict, cadences as
   `{"every_C": 5}` dicts, limits as a dict). Everything is validated at the plan's first step (program against
   `RigLimits`, detector and cadence keys, required furnace signals), so a bad request raises `ProgramError`
   before any message exists: nothing moves. The start document records `plan_name` and `plan_args` (the
   arguments in JSON form, devices by name).
2. Before the run opens the furnace is configured (ramp rate of the first segment, ramping on) and `set` to the
   program's start temperature with `wait=True` (the device's status finishes once the readback has settled).
   This `set` also registers the furnace with the RunEngine as a moved object, so the RunEngine calls
   `furnace.stop()` (heater off) on pause, halt and at the end of the plan (see `hotstage.plans.safety`). A pause during
   this settle cancels the device's status; after resume `settle()` simply issues the set again.
   Every modality is acquired once at the settled start temperature before the first segment is commanded.
   A furnace still warm from the last run (above start + tolerance) cannot be cooled by the controller, so the
   settle would time out: `wait_until_cool` first switches the heater off and waits for it to cool, logging a
   countdown every minute of experiment time, for at most `COOL_WAIT_LIMIT_S` (1 h; `cool_wait_s`), and refuses
   with one `ProgramError` line (temperature, start temperature, what to do) when it will not make it in time.
   No run is opened in that case.
3. Each Ramp/Cool segment is commanded once — `ramp_rate`, `ramp_on`, `setpoint` by `bps.mv` on the signals
   (writes return at once; nothing waits for settling) — and the Lake Shore's setpoint ramp does the rest.
   A Hold keeps the setpoint and counts experiment seconds.
4. The loop then polls, every `poll_interval` wall seconds (`bps.sleep`), the furnace readback, the rig
   clock's experiment time and the heater range. Whenever a modality is due by its `Cadence` (°C moved, or
   experiment seconds passed, since its last grid anchor — see `Cadence.advance`), it is acquired with
   `bps.trigger_and_read([detector, furnace, clock], name=<modality>)`: one event in that modality's own
   stream, carrying the array, the furnace and sample temperatures and the experiment time. On a simulated
   rig a `truth` event (the simulator's ground truth; for tests, never for analysis) follows each acquisition.
   A ramp/cool segment ends on target — not before its nominal end, the control readback (`temperature`, the
   sensor the controller regulates and its `tolerance` refers to; the sample sensor lags it by design) within the
   furnace's `tolerance` of `to_C` and the controller's setpoint ramp finished (`ramping` == 0) — or on the
   overrun, `overrun_s` (the segment's `overrun_min`, default max(10 min, 50 % of nominal)) after the nominal
   end, with one warning line (target, achieved temperature and rate). Until then the loop keeps polling and
   acquiring whatever is due, however slowly the furnace moves (natural cooling is slower than 10 °C/min below
   ~55 °C on the simulated stage). Arriving on target, a °C cadence whose next mark is the target (within the
   tolerance) is acquired at once: the readback stops just short of it. A hold ends after its experiment minutes.
   Each finished segment adds one event to the `segments` stream (`SegmentRecord.summary`: nominal and achieved
   start/end °C, start time and duration in experiment s, programmed rate and achieved rate — the least-squares
   slope of the control readback against experiment time over the segment, °C/min, negative when cooling — and
   `segment_on_target` 1/0). A stream rather than stop-document metadata because a plan cannot add keys to the
   stop document, and an event stream is what every bluesky consumer (tiled, databroker, the summary) reads.
5. `bps.checkpoint()` runs at the top of every poll, outside any event bundle, so a pause (deferred or
   immediate) can happen at any poll. The RunEngine switches the heater off while paused (`furnace.stop()`,
   which also counts the stop in the furnace's `stops` signal); when the loop next finds the heater range 0 or
   the stop count changed since the ramp was commanded, it re-arms the furnace from its present readback (ramp
   restarted from where the furnace is, same rate and target) and the interrupted segment continues. The count
   matters because a resume replays the messages since the last checkpoint, which can switch the heater back
   on first; the commands of a re-arm end with a checkpoint of their own so that a replay never repeats them.
   Paused time does not count towards a hold.

Polling interval: experiment seconds = min over cadences of (every_C / fastest rate in °C/s / 4, every_s / 4),
clamped to [0.5, 5] experiment s, divided by the furnace's `time_scale` and clamped to [5 ms, 1 s] wall. So the
temperature moves at most a quarter of the finest °C step between polls (the Model 336 updates each input
10 times per second, so polling faster gains nothing), and a fast simulated rig is not polled faster than 200 Hz.
Each poll costs three queries (KRDG?, the clock, RANGE?) and a read of the soft `stops` signal.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
import uuid
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

import bluesky.plan_stubs as bps
from bluesky.protocols import Movable, Readable
from bluesky.preprocessors import stage_wrapper
from bluesky.utils import FailedStatus, Msg

from hotstage.devices.lakeshore import FurnaceSetCancelled  # type only: recognise a set cancelled by a pause
from hotstage.devices.stamp import Bracket, ExposureStamp

from . import stubs
from .program import Cadence, Cool, Hold, ProgramError, Ramp, RigLimits, TemperatureProgram
from .safety import safe_furnace_wrapper

MsgGenerator = Generator[Msg, Any, Any]

__all__ = [
    "MODALITIES",
    "Movable",
    "ProgressInfo",
    "Readable",
    "as_truth_readable",
    "cadences_from",
    "insitu_ramp",
    "limits_from",
    "poll_interval_s",
    "program_from",
]

MODALITIES = ("xrd", "thz", "pl")
"""Stream names of the three modalities (DESIGN.md, "Raw run")."""
FURNACE_STREAM = "furnace"
"""Optional stream of furnace-only events (temperature history), enabled by a `furnace` cadence."""
TRUTH_STREAM = "truth"
"""Simulator ground truth, one event beside each acquisition on a simulated rig."""
SEGMENTS_STREAM = "segments"
"""One event per program segment when it ends: nominal and achieved temperatures, duration, achieved rate."""
SEGMENT_KIND_CODES = {"ramp": 0, "hold": 1, "cool": 2}
"""`segment_kind_code` in the `segments` stream (numbers only, so every store keeps the column; the kind itself is
also in the start document's `program`)."""
SEGMENT_UNITS = {"segment_nominal_start_C": "degC", "segment_nominal_end_C": "degC", "segment_start_C": "degC",
                 "segment_end_C": "degC", "segment_start_s": "s", "segment_duration_s": "s",
                 "segment_programmed_rate_C_per_min": "degC/min", "segment_achieved_rate_C_per_min": "degC/min"}
FURNACE_SIGNALS = ("temperature", "setpoint", "ramp_rate", "ramp_on", "ramping", "heater_range")
DEFAULT_HEATER_RANGE = 3
"""Lake Shore 336 'high' heater range (manual ch. 6, RANGE) when the device does not say otherwise."""
MIN_POLL_EXP_S, MAX_POLL_EXP_S = 0.5, 5.0
MIN_POLL_WALL_S, MAX_POLL_WALL_S = 0.005, 1.0
COOL_WAIT_LIMIT_S = 3600.0
"""How long (experiment s) a program waits for a furnace still warm from the last run to cool to its start
temperature before refusing to start (see `wait_until_cool`)."""
COOL_REPORT_EVERY_S = 60.0
"""Experiment seconds between the countdown lines while waiting for the furnace to cool."""
MIN_FIT_INTERVALS = 4
"""Report intervals the Newton's-law fit of the cooling needs before its estimate is shown (before: a lower bound)."""
COOL_SAMPLES_PER_REPORT = 20
"""Readings kept per report interval for the fit (of the many polls)."""
STALLED_REPORTS = 3
"""Report intervals the waiting judges the cooling on: not cooled at all over the last ones, or too slow to make it
in the time left by a straight-line extrapolation of their mean rate, refuses (never before this many)."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProgressInfo:
    """One progress report from a running program (passed to the `progress` callable at every poll)."""

    elapsed_s: float
    duration_s: float
    temperature_C: float
    segment_index: int
    segment_kind: str
    acquisitions: dict[str, int]

    @property
    def fraction(self) -> float:
        """Elapsed fraction of the nominal duration (0–1)."""
        return min(1.0, self.elapsed_s / self.duration_s) if self.duration_s > 0 else 1.0


ProgressHook = Callable[[ProgressInfo], None]


def poll_interval_s(program: TemperatureProgram, cadence: Mapping[str, Cadence], time_scale: float) -> float:
    """Wall seconds between polls of the furnace (see the module docstring for the rule)."""
    rates = [s.rate_C_per_min / 60.0 for s in program.segments if isinstance(s, (Ramp, Cool))]
    fastest = max(rates) if rates else 0.0
    exp_s = MAX_POLL_EXP_S
    for c in cadence.values():
        if c.every_C is not None and fastest > 0:
            exp_s = min(exp_s, c.every_C / fastest / 4.0)
        if c.every_s is not None:
            exp_s = min(exp_s, c.every_s / 4.0)
    exp_s = min(max(exp_s, MIN_POLL_EXP_S), MAX_POLL_EXP_S)
    return min(max(exp_s / max(time_scale, 1e-9), MIN_POLL_WALL_S), MAX_POLL_WALL_S)


def _time_scale(furnace: Any) -> float:
    """Experiment seconds per wall second of the rig (1 on a real rig)."""
    ts = getattr(furnace, "time_scale", 1.0)
    return float(ts) if isinstance(ts, (int, float)) and ts > 0 else 1.0


def check_furnace(furnace: Any) -> None:
    """ProgramError unless the furnace offers the signals the plans drive."""
    missing = [s for s in FURNACE_SIGNALS if not hasattr(furnace, s)]
    if missing or not hasattr(furnace, "set"):
        raise ProgramError(f"furnace {getattr(furnace, 'name', furnace)!r} lacks {', '.join(missing) or 'set()'}")


def check_detectors(detectors: Mapping[str, Any]) -> None:
    """ProgramError unless detectors is a modality → triggerable Readable map."""
    if not detectors:
        raise ProgramError("no detectors given")
    for key, det in detectors.items():
        if key not in MODALITIES:
            raise ProgramError(f"detector key {key!r} is not a modality ({', '.join(MODALITIES)})")
        for attr in ("read", "describe", "trigger"):
            if not callable(getattr(det, attr, None)):
                raise ProgramError(f"detector {key!r} ({det!r}) has no {attr}()")


def check_cadence(detectors: Mapping[str, Any], cadence: Mapping[str, Cadence]) -> None:
    """ProgramError unless every detector has a cadence and every cadence a detector (or is `furnace`)."""
    for key, c in cadence.items():
        if not isinstance(c, Cadence):
            raise ProgramError(f"cadence {key!r} must be a Cadence, got {c!r}")
        if key != FURNACE_STREAM and key not in detectors:
            raise ProgramError(f"cadence for {key!r} but no such detector (have {', '.join(detectors)})")
    missing = [k for k in detectors if k not in cadence]
    if missing:
        raise ProgramError(f"no cadence for detector(s) {', '.join(missing)}")


def as_truth_readable(truth: Any) -> Any:
    """None or a bluesky Readable of the ground truth (e.g. `SimulatedRig.truth_reader`); else ProgramError."""
    if truth is None:
        return None
    if callable(getattr(truth, "read", None)) and callable(getattr(truth, "describe", None)):
        return truth
    raise ProgramError(f"truth must be a bluesky Readable (e.g. SimulatedRig.truth_reader), got {truth!r}")


def check_truth(truth: Any) -> None:
    """ProgramError unless truth is None or a Readable (see as_truth_readable)."""
    as_truth_readable(truth)


# -- JSON forms of the plans' arguments (what bluesky-queueserver sends) -------------------------------------
LIMIT_KEYS = ("max_C", "min_rate", "max_rate", "min_C")
CADENCE_KEYS = ("every_C", "every_s")


def program_from(program: TemperatureProgram | Mapping[str, Any]) -> TemperatureProgram:
    """A TemperatureProgram as given, or built from its dict (TOML/JSON) form by `TemperatureProgram.from_dict`."""
    if isinstance(program, TemperatureProgram):
        return program
    if isinstance(program, Mapping):
        try:
            return TemperatureProgram.from_dict(dict(program))
        except ProgramError:
            raise
        except (TypeError, ValueError) as err:  # a model's own validation error: still one ProgramError line
            raise ProgramError(f"program: {err}") from None
    raise ProgramError(f"program must be a TemperatureProgram or its dict form "
                       f"{{'start_C': .., 'segments': [{{'kind': 'ramp', ..}}, ..]}}, got {program!r}")


def cadences_from(cadence: Mapping[str, Cadence | Mapping[str, float]]) -> dict[str, Cadence]:
    """Stream name → Cadence; a value may be a Cadence or its dict form (`{"every_C": 5}`, `{"every_s": 60}`)."""
    if not isinstance(cadence, Mapping):
        raise ProgramError(f"cadence must be a dict of stream name → {{'every_C': ..}} or {{'every_s': ..}}, "
                           f"got {cadence!r}")
    out: dict[str, Cadence] = {}
    for key, c in cadence.items():
        if isinstance(c, Cadence):
            out[key] = c
            continue
        if not isinstance(c, Mapping):
            raise ProgramError(f"cadence {key!r} must be a Cadence or a dict like {{'every_C': 5}}, got {c!r}")
        unknown = sorted(set(c) - set(CADENCE_KEYS))
        if unknown:
            raise ProgramError(f"cadence {key!r}: unknown key {', '.join(map(repr, unknown))} "
                               f"(allowed: {', '.join(CADENCE_KEYS)})")
        try:
            out[key] = Cadence(every_C=c.get("every_C"), every_s=c.get("every_s"))
        except ProgramError as err:
            raise ProgramError(f"cadence {key!r}: {err}") from None
        except (TypeError, ValueError) as err:
            raise ProgramError(f"cadence {key!r}: {err}") from None
    return out


def limits_from(limits: RigLimits | Mapping[str, float] | None) -> RigLimits | None:
    """None, the RigLimits as given, or RigLimits built from a dict with keys among max_C, min_rate, max_rate, min_C."""
    if limits is None or isinstance(limits, RigLimits):
        return limits
    if not isinstance(limits, Mapping):
        raise ProgramError(f"limits must be RigLimits or a dict ({', '.join(LIMIT_KEYS)}), got {limits!r}")
    unknown = sorted(set(limits) - set(LIMIT_KEYS))
    if unknown:
        raise ProgramError(f"limits: unknown key {', '.join(map(repr, unknown))} (allowed: {', '.join(LIMIT_KEYS)})")
    try:
        return RigLimits(**dict(limits))
    except ProgramError:
        raise
    except (TypeError, ValueError) as err:
        raise ProgramError(f"limits: {err}") from None


def limits_dict(limits: RigLimits) -> dict[str, float]:
    """JSON form of RigLimits (start metadata `limits`, `plan_args`)."""
    return {k: float(getattr(limits, k)) for k in LIMIT_KEYS}


def device_name(device: Any) -> str | None:
    """How the start document (and the queue server) names a device: its `name`; None for None."""
    if device is None:
        return None
    name = getattr(device, "name", None)
    return name if isinstance(name, str) else repr(device)


def callable_name(func: Any) -> str | None:
    """A JSON-able reference to a callable argument (hooks, progress): its qualified name; None for None."""
    if func is None:
        return None
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


def resolve_annotations(plan: Callable[..., Any]) -> Callable[..., Any]:
    """Give a plan defined under `from __future__ import annotations` a signature with real type objects.

    bluesky-queueserver describes a plan's parameters from `inspect.signature(plan)`; string annotations would
    reach it as strings it cannot rebuild (so `plans_allowed` would show no types and no device-name conversion).
    """
    plan.__signature__ = inspect.signature(plan, eval_str=True)  # type: ignore[attr-defined]
    return plan


def _cancelled(err: BaseException) -> bool:
    """True when a failed furnace status was cancelled by stop() (a pause) rather than a real failure."""
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, FurnaceSetCancelled):
            return True
        e = e.__cause__ or e.__context__
    return False


def settle(furnace: Any, target_C: float, *, timeout_s: float | None = None, retries: int = 3) -> MsgGenerator:
    """`set` the furnace and wait until its readback has settled (device semantics).

    A pause stops the furnace, which cancels the pending status; after `RE.resume()` the RunEngine hands that
    failure to the plan, and the set is simply issued again (up to `retries` times). Any other failure
    (e.g. FurnaceSettleTimeout) propagates. `timeout_s` (experiment s) overrides the device's own allowance.
    """
    kwargs = {} if timeout_s is None else {"timeout": float(timeout_s)}
    for attempt in range(retries + 1):
        try:
            yield from bps.abs_set(furnace, float(target_C), wait=True, **kwargs)
            return
        except FailedStatus as err:
            if attempt >= retries or not _cancelled(err):
                raise
            yield from stubs.checkpoint()


# -- a furnace still warm at the start ----------------------------------------------------------------------
def newton_fit(samples: list[tuple[float, float]]) -> tuple[float, float] | None:
    """(T_room °C, k 1/s) of Newton's law of cooling, T(t) = T_room + A exp(-k t), fitted by least squares to
    (experiment s, °C) samples; None when they do not show a cooling that slows down (A <= 0, or k at the edge
    of 1/10 h .. 1/10 s). For each k the curve is linear in T_room and A; k is found by golden-section search."""
    import numpy as np

    t = np.array([s[0] for s in samples]) - samples[0][0]
    T = np.array([s[1] for s in samples])
    if len(t) < 4 or t[-1] <= 0:
        return None

    def solve(log_k: float) -> tuple[float, float, float]:
        design = np.column_stack([np.ones_like(t), np.exp(-math.exp(log_k) * t)])
        coef, *_ = np.linalg.lstsq(design, T, rcond=None)
        return float(np.sum((design @ coef - T) ** 2)), float(coef[0]), float(coef[1])

    lo, hi = math.log(1.0 / 36000.0), math.log(0.1)
    g = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = solve(a)[0], solve(b)[0]
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = solve(a)[0]
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = solve(b)[0]
    log_k = 0.5 * (lo + hi)
    _, room, amplitude = solve(log_k)
    edge = 0.05
    if amplitude <= 0.0 or log_k < math.log(1.0 / 36000.0) + edge or log_k > math.log(0.1) - edge:
        return None
    return room, math.exp(log_k)


def cooling_estimate_s(
    history: list[tuple[float, float]],
    goal_C: float,
    *,
    window_s: float = STALLED_REPORTS * COOL_REPORT_EVERY_S,
    skip_s: float = COOL_REPORT_EVERY_S,
) -> tuple[float, float, float | None]:
    """(estimate, lower bound, asymptote) of the experiment seconds a cooling furnace needs to reach `goal_C`.

    `history` holds (experiment s, °C) readings, oldest first. The lower bound extrapolates in a straight line the
    mean rate over the last `window_s` (cooling only slows down as the furnace approaches the room, so it never
    takes less; a mean over a long stretch is robust to noise and only lowers the bound); it is inf when the
    furnace did not cool over that stretch. The estimate fits Newton's law of cooling (`newton_fit`) to the
    readings after the first `skip_s` (the block's stored heat may hold those up), once they span
    `MIN_FIT_INTERVALS` × `skip_s` (the curvature of a short stretch says little); without a fit it is the lower
    bound and the asymptote None. The asymptote is the fitted T_room: a furnace levelling off above `goal_C`
    never gets there (estimate inf).
    """
    if len(history) < 2:
        return math.inf, math.inf, None
    t_end, T_end = history[-1]
    t_a, T_a = next((s for s in history if s[0] >= t_end - window_s), history[0])
    rate = (T_a - T_end) / (t_end - t_a) if t_end > t_a else 0.0
    if rate <= 0.0:
        return math.inf, math.inf, None
    lower = max(0.0, (T_end - goal_C) / rate)
    fitted = [s for s in history if s[0] >= history[0][0] + skip_s]
    if not fitted or fitted[-1][0] - fitted[0][0] < MIN_FIT_INTERVALS * skip_s:
        return lower, lower, None
    fit = newton_fit(fitted)
    if fit is None:
        return lower, lower, None
    room, k = fit
    if goal_C <= room or T_end <= room:
        return math.inf, lower, room
    return max(lower, math.log((T_end - room) / (goal_C - room)) / k), lower, room


def wait_until_cool(
    furnace: Any,
    start_C: float,
    now: Callable[[], MsgGenerator],
    *,
    poll_s: float,
    limit_s: float = COOL_WAIT_LIMIT_S,
    report_every_s: float = COOL_REPORT_EVERY_S,
) -> MsgGenerator:
    """Before a program starts: if the furnace reads above `start_C` + its tolerance, wait for it to cool.

    The Lake Shore can only heat, so a furnace still warm from the last run cools by itself: the heater is
    switched off and the readback polled (every `poll_s` wall s, with checkpoints, so a pause or Ctrl-C works), a
    countdown line logged every `report_every_s` experiment s ("furnace at 96.3 °C, waiting to cool to 26.0 °C ...;
    about 7 min left"). Gives up with a `ProgramError` (one line: the temperature, the start temperature and what
    to do) once `limit_s` experiment s have passed, or, from the `STALLED_REPORTS`-th report on (at first the
    block's stored heat may hold the sensor up), as soon as the furnace has not cooled over the last intervals or
    even the straight-line extrapolation of its cooling (a lower bound, `cooling_estimate_s`) needs longer than
    the time left: a start below the room temperature is refused that way. Nothing is recorded: this runs
    before the run opens. `limit_s` = 0 refuses a warm furnace at once. `now()` is a plan giving the
    experiment time in s. Returns the experiment seconds waited (0 when the furnace was not warm).
    """
    tolerance = getattr(furnace, "tolerance", 1.0)
    tolerance = tolerance.get() if hasattr(tolerance, "get") else tolerance  # a configuration signal
    tolerance = float(tolerance) if isinstance(tolerance, (int, float)) else 1.0
    goal = float(start_C) + tolerance
    temperature = float((yield from stubs.rd(furnace.temperature)))
    if temperature <= goal:
        return 0.0
    t0 = yield from now()

    def refuse(why: str) -> ProgramError:
        return ProgramError(
            f"the furnace is at {temperature:.1f} °C, above the program's start temperature {start_C:g} °C, "
            f"and {why}; "
            f"let it cool below {goal:.1f} °C and start again, or start the program at or above "
            f"{math.ceil(temperature):.0f} °C"
        )

    if limit_s <= 0:
        raise refuse("waiting for it to cool is switched off")
    heater = yield from stubs.rd(furnace.heater_range)
    if int(heater) != 0:  # it cannot cool actively; a heater left on could only slow the cooling down
        yield from bps.mv(furnace.heater_range, 0)
    log.warning("furnace at %.1f °C, above the program's start temperature %g °C: waiting up to %.0f min for it to "
                "cool to %.1f °C (start + tolerance %g °C) before the program starts", temperature, start_C,
                limit_s / 60.0, goal, tolerance)
    history = [(t0, temperature)]
    reported = t0
    while True:
        yield from stubs.sleep(poll_s)
        yield from stubs.checkpoint()
        temperature = float((yield from stubs.rd(furnace.temperature)))
        t = yield from now()
        if temperature <= goal:
            log.warning("furnace at %.1f °C after %.1f min of cooling: the program starts", temperature,
                        (t - t0) / 60.0)
            return t - t0
        if t - history[-1][0] >= report_every_s / COOL_SAMPLES_PER_REPORT:
            history.append((t, temperature))
        if t - reported < report_every_s:
            continue
        reported = t
        left = limit_s - (t - t0)
        estimate, lower, room = cooling_estimate_s(history, goal, window_s=STALLED_REPORTS * report_every_s,
                                                   skip_s=report_every_s)
        if left <= 0:
            raise refuse(f"did not cool to {goal:.1f} °C within the {limit_s / 60.0:.0f}-min wait limit")
        if t - t0 >= STALLED_REPORTS * report_every_s:  # judged on minutes: at first the block's heat holds it up
            if math.isinf(lower):
                raise refuse(f"has not cooled in the last {STALLED_REPORTS * report_every_s / 60.0:.0f} min")
            if lower > left:
                raise refuse(f"needs at least {lower / 60.0:.0f} more min to cool to {goal:.1f} °C, beyond the "
                             f"{limit_s / 60.0:.0f}-min wait limit")
        if math.isfinite(estimate):  # without a fit yet, the straight line says how long at least
            about = f"{'at least' if room is None else 'about'} {estimate / 60.0:.0f} min left"
        elif room is not None:
            about = f"it seems to level off near {room:.1f} °C (time left unknown)"
        else:
            about = "time left unknown"
        log.warning("furnace at %.1f °C, waiting to cool to %.1f °C before the program starts; %s (gives up in %.0f "
                    "min)", temperature, goal, about, left / 60.0)


def stops_of(furnace: Any) -> MsgGenerator:
    """The furnace's count of stop() calls (`stops` signal; None for a furnace without one).

    The RunEngine stops the furnace on every pause and suspension, then on resume replays the messages since
    the last checkpoint — which may switch the heater back on before the plan reads the heater range — so a
    changed count, not the heater range alone, tells a plan it was interrupted.
    """
    signal = getattr(furnace, "stops", None)
    if signal is None:
        return None
    return int((yield from stubs.rd(signal)))


def _exposure_s(detector: Any) -> float | None:
    """A detector's configured exposure in experiment s (its `exposure` setting), None if it has none."""
    signal = getattr(detector, "exposure", None)
    try:
        return None if signal is None else float(signal.get())
    except (TypeError, ValueError):
        return None


def _has_sample_input(furnace: Any) -> bool:
    """True unless the furnace says it has no sample sensor (`sample_input` None)."""
    return not (hasattr(furnace, "sample_input") and furnace.sample_input is None)


@dataclass
class Acquirer:
    """Acquisition state shared by the plans: which devices go into each event, counts per stream.

    With a furnace that has a `temperature` signal, every acquisition is stamped (`hotstage.devices.stamp`): the
    furnace is read, between two clock reads, right before the detectors are triggered and right after they are
    done, and each event carries its exposure window and the temperatures at mid-exposure (`exposure_*` keys).
    """

    furnace: Any
    detectors: Mapping[str, Any]
    clock: Any = None
    truth: Any = None
    counts: dict[str, int] = field(default_factory=dict)
    stamp: Any = None

    def __post_init__(self) -> None:
        """Create the exposure stamp when the furnace can be read for one."""
        if self.stamp is None and hasattr(self.furnace, "temperature"):
            self.stamp = ExposureStamp(name="exposure")

    def acquire(self, *modalities: str) -> MsgGenerator:
        """One event per modality in its own stream (detector + furnace + clock + stamp), a truth event beside each.

        The detectors that are due are triggered together and their exposures overlap, as on a rig where
        they all look at the sample at once; one after another they would smear over more temperature.
        """
        exposing = sorted((m for m in modalities if m != FURNACE_STREAM),
                          key=lambda m: _exposure_s(self.detectors[m]) or 0.0)
        stamping = bool(exposing) and self.stamp is not None
        brackets = [(yield from self._bracket())] if stamping else []
        groups = {m: f"acquire-{m}-{uuid.uuid4()}" for m in exposing}
        for modality in exposing:
            yield from stubs.trigger(self.detectors[modality], group=groups[modality])
        done: dict[str, int] = {}
        for modality in exposing:  # shortest exposure first: a read at the end of each (see devices.stamp)
            yield from stubs.wait(group=groups[modality])
            if stamping:
                brackets.append((yield from self._bracket()))
            done[modality] = len(brackets)
        common = [self.furnace] + ([self.clock] if self.clock is not None else [])
        for modality in modalities:
            if modality == FURNACE_STREAM:
                yield from self._event(modality, common)
                continue
            detector = self.detectors[modality]
            devices = [detector, *common]
            if stamping:
                started, dating = self._exposed_at(detector)
                self.stamp.record(brackets[:done[modality]], _exposure_s(detector), started, start_dating=dating)
                devices.append(self.stamp)
            yield from self._event(modality, devices)
            if self.truth is not None:
                if callable(getattr(self.truth, "prepare", None)):
                    yield from stubs.prepare(self.truth, modality, wait=True)
                yield from self._event(TRUTH_STREAM, [self.truth, *common])

    def _exposed_at(self, detector: Any) -> tuple[float | None, float]:
        """(experiment s at which `detector`'s last exposure started, how uncertain that is in experiment s), when
        it dates its exposures on the clock's wall clock (`last_exposure_wall`, `ExperimentClock.at_wall`);
        (None, 0) otherwise."""
        window = getattr(detector, "last_exposure_wall", None)
        at_wall = getattr(self.clock, "at_wall", None)
        if window is None or at_wall is None:
            return None, 0.0
        started = float(at_wall(window[0]))
        half_width = float(getattr(detector, "last_start_dating_wall", 0.0))
        return started, float(at_wall(window[0] + half_width)) - started

    def _bracket(self) -> MsgGenerator:
        """The furnace's control and sample readbacks, each dated by the clock reads on either side (a `Bracket`)."""

        def now() -> MsgGenerator:
            """Experiment seconds (NaN without a clock)."""
            return float((yield from stubs.rd(self.clock.elapsed))) if self.clock is not None else math.nan

        t0 = yield from now()
        temperature = float((yield from stubs.rd(self.furnace.temperature)))
        t1 = yield from now()
        sample = getattr(self.furnace, "sample_temperature", None)
        if sample is None or not _has_sample_input(self.furnace):
            return Bracket(t=0.5 * (t0 + t1), t_end=t1, temperature=temperature, sample_temperature=math.nan,
                           dating=0.5 * (t1 - t0))
        sample_c = float((yield from stubs.rd(sample)))
        t2 = yield from now()
        return Bracket(t=0.5 * (t0 + t1), t_end=t2, temperature=temperature, sample_temperature=sample_c,
                       t_sample=0.5 * (t1 + t2), dating=0.5 * max(t1 - t0, t2 - t1))

    def _event(self, stream: str, devices: list[Any]) -> MsgGenerator:
        """Read already-triggered devices into one event of `stream`, then checkpoint.

        The checkpoint right after `save` keeps every emitted event out of the messages a resume replays: on a
        pause or suspension the RunEngine rewinds to the last checkpoint, replays the messages since and restores
        its sequence counters to that checkpoint (`RunEngine._rewind`, `RunBundler.rewind`), so a `save` replayed
        would emit the event again with the same `seq_num`. (The catalog writer also stores a repeated `seq_num`
        once, for a suspension landing between the `save` and this checkpoint.)
        """
        yield from stubs.create(name=stream)
        for device in devices:
            yield from stubs.read(device)
        yield from stubs.save()
        self.counts[stream] = self.counts.get(stream, 0) + 1
        yield from stubs.checkpoint()

    def acquire_all(self, repeats: int = 1, hold_C: float | None = None) -> MsgGenerator:
        """Each modality `repeats` times (xrd, thz, pl order), with a checkpoint between acquisitions.

        With `hold_C`, a pause or suspension (the RunEngine switched the heater off) is followed by settling at
        `hold_C` again: before an acquisition when it came between two, and when it came during one, that
        acquisition's event is kept (nothing acquired is dropped; its temperatures say where it was taken) and
        the acquisition is taken again once settled.
        """
        stops = (yield from stops_of(self.furnace)) if hold_C is not None else None
        for _ in range(repeats):
            for modality in MODALITIES:
                if modality not in self.detectors:
                    continue
                yield from stubs.checkpoint()
                while True:
                    if hold_C is not None and (yield from stops_of(self.furnace)) != stops:
                        yield from settle(self.furnace, hold_C)
                        stops = yield from stops_of(self.furnace)
                    yield from self.acquire(modality)
                    if hold_C is None or (yield from stops_of(self.furnace)) == stops:
                        break


@dataclass
class ProgramRunner:
    """Runs a validated TemperatureProgram on a furnace inside an open run, acquiring on cadence."""

    acq: Acquirer
    program: TemperatureProgram
    cadence: Mapping[str, Cadence]
    poll_s: float
    time_scale: float
    heater_range: int = DEFAULT_HEATER_RANGE
    progress: ProgressHook | None = None
    start_timeout_s: float | None = None
    cool_wait_s: float = COOL_WAIT_LIMIT_S
    """How long a furnace still warm from the last run may take to cool to the start temperature (`wait_until_cool`)."""
    last: dict[str, tuple[float, float]] = field(default_factory=dict)
    t0: float | None = None
    resumes: int = 0
    armed_stops: int | None = None
    """The furnace's stop() count when the ramp was last commanded (see `stops_of`)."""
    segments: list[dict[str, float]] = field(default_factory=list)
    """The summary of every finished segment (also one event each in the `segments` stream)."""
    segment_reader: SegmentReader = field(default_factory=lambda: SegmentReader({}))

    @property
    def furnace(self) -> Any:
        """The furnace being driven."""
        return self.acq.furnace

    # -- reading ---------------------------------------------------------------------------------
    def now(self) -> MsgGenerator:
        """Experiment seconds: the rig clock's `elapsed` (or wall time × time_scale without a clock)."""
        if self.acq.clock is not None:
            value = yield from stubs.rd(self.acq.clock.elapsed)
            return float(value)
        return time.monotonic() * self.time_scale

    def poll(self) -> MsgGenerator:
        """Read (temperature °C, experiment s, interrupted?) once.

        Interrupted: the heater is off, or the furnace was stopped (pause, suspension) since the ramp was last
        commanded — the caller then re-arms the ramp from the present readback.
        """
        temperature = yield from stubs.rd(self.furnace.temperature)
        t = yield from self.now()
        heater = yield from stubs.rd(self.furnace.heater_range)
        stops = yield from stops_of(self.furnace)
        return float(temperature), t, int(heater) == 0 or stops != self.armed_stops

    # -- commanding ------------------------------------------------------------------------------
    def prepare(self) -> MsgGenerator:
        """Before the run: wait for a warm furnace to cool (`wait_until_cool`), ramp rate of the first segment,
        ramping on, settle at the start temperature."""
        yield from stubs.checkpoint()
        yield from wait_until_cool(self.furnace, self.program.start_C, self.now, poll_s=self.poll_s,
                                   limit_s=self.cool_wait_s)
        first_rate = next((s.rate_C_per_min for s in self.program.segments if not isinstance(s, Hold)), None)
        if first_rate is not None:
            yield from bps.mv(self.furnace.ramp_rate, first_rate)
        yield from bps.mv(self.furnace.ramp_on, 1)
        yield from settle(self.furnace, self.program.start_C, timeout_s=self.start_timeout_s)
        self.armed_stops = yield from stops_of(self.furnace)

    def arm(self, target_C: float, rate_C_per_min: float | None, from_C: float | None = None) -> MsgGenerator:
        """Command a setpoint ramp to `target_C` (from `from_C` when re-arming after the heater was off).

        Only settings that differ from the controller's are written (reads are cheap, each command is not).
        Ends with a checkpoint (see the comment there).
        """
        stops = yield from stops_of(self.furnace)  # before the commands: a pause among them must count
        if from_C is not None:
            # The 336 ramps from its present setpoint: restart the ramp from where the furnace actually is.
            yield from bps.mv(self.furnace.ramp_on, 0)
            yield from bps.mv(self.furnace.setpoint, from_C)
        if rate_C_per_min is not None:
            rate = yield from stubs.rd(self.furnace.ramp_rate)
            if abs(float(rate) - rate_C_per_min) > 1e-6:
                yield from bps.mv(self.furnace.ramp_rate, rate_C_per_min)
            on = yield from stubs.rd(self.furnace.ramp_on)
            if not int(on):
                yield from bps.mv(self.furnace.ramp_on, 1)
        yield from bps.mv(self.furnace.setpoint, target_C)
        heater = yield from stubs.rd(self.furnace.heater_range)
        if int(heater) != self.heater_range:
            yield from bps.mv(self.furnace.heater_range, self.heater_range)
        self.armed_stops = stops
        # a checkpoint here keeps these commands out of the messages a resume replays: replayed, they would
        # switch the heater on at a setpoint that kept ramping while paused (far from the readback)
        yield from stubs.checkpoint()

    # -- the loop --------------------------------------------------------------------------------
    def run(self) -> MsgGenerator:
        """All segments of the program, polling and acquiring; returns the acquisition counts."""
        temps = self.program.segment_start_temperatures()
        rate: float | None = None
        # acquisitions at the settled start temperature, before anything moves
        yield from self._tick(0, self.program.segments[0].kind)
        for index, seg in enumerate(self.program.segments):
            yield from stubs.checkpoint()
            if isinstance(seg, Hold):
                yield from self._hold(index, seg, temps[index], rate)
            else:
                rate = seg.rate_C_per_min
                yield from self._ramp(index, seg)
        return dict(self.acq.counts)

    def _tick(self, index: int, kind: str) -> MsgGenerator:
        """One poll: checkpoint, read, acquire what is due, report progress; returns (T, t, interrupted)."""
        yield from stubs.checkpoint()
        temperature, t, interrupted = yield from self.poll()
        if self.t0 is None:
            self.t0 = t
        due = []
        for modality, cad in self.cadence.items():
            last_C, last_s = self.last.get(modality, (None, None))
            if cad.due(temperature, t, last_C, last_s):
                due.append(modality)
                self.last[modality] = cad.advance(temperature, t, last_C, last_s)
        if due:
            yield from self.acq.acquire(*due)
        if self.progress is not None:
            self.progress(
                ProgressInfo(t - self.t0, self.program.duration_s, temperature, index, kind, dict(self.acq.counts))
            )
        return temperature, t, interrupted

    def _ramp(self, index: int, seg: Ramp | Cool) -> MsgGenerator:
        """Command one ramp/cool and poll (acquiring on cadence) until the furnace is on target or the overrun ends.

        On target: the control readback within the furnace's tolerance of `to_C` and the controller's setpoint
        ramp done, not before the nominal end. Otherwise the segment ends `seg.overrun_s` after the nominal end
        with one warning line (achieved temperature and rate). Either way one `segments` event records it.
        """
        temperature, t, interrupted = yield from self.poll()
        record = SegmentRecord(index, seg.kind, self._nominal_from(index), float(seg.to_C), seg.rate_C_per_min)
        record.add(t, temperature)
        if interrupted:  # e.g. paused between segments: start the ramp from the readback
            sp = temperature
            yield from self.arm(seg.to_C, seg.rate_C_per_min, from_C=temperature)
        else:
            sp = float((yield from stubs.rd(self.furnace.setpoint)))
            yield from self.arm(seg.to_C, seg.rate_C_per_min)
        tolerance = _tolerance(self.furnace)
        t_end = t + abs(seg.to_C - sp) / seg.rate_C_per_min * 60.0
        overrun = seg.overrun_s(sp)
        ended_on_target = False
        while True:
            yield from stubs.sleep(self.poll_s)
            temperature, t, interrupted = yield from self._tick(index, seg.kind)
            record.add(t, temperature)
            if interrupted:  # paused (RunEngine stopped the furnace) or switched off: resume from here
                self.resumes += 1
                yield from self.arm(seg.to_C, seg.rate_C_per_min, from_C=temperature)
                t_end = t + abs(seg.to_C - temperature) / seg.rate_C_per_min * 60.0
                continue
            if t >= t_end - 0.5 * self.poll_s * self.time_scale:
                if abs(temperature - seg.to_C) <= tolerance:
                    ramping = yield from stubs.rd(self.furnace.ramping)
                    if not int(ramping):
                        ended_on_target = True
                        break
                if t >= t_end + overrun:
                    break
        if ended_on_target:
            yield from self._acquire_marks_at(seg.to_C, temperature, t, tolerance)
        summary = record.summary(ended_on_target)
        if not ended_on_target:
            log.warning(
                "segment %d (%s): the furnace did not reach %.1f °C within %.1f min past the nominal end: at %.1f °C, "
                "achieved %.2f °C/min (programmed %.2f)", index, seg.kind, seg.to_C, overrun / 60.0, temperature,
                summary["segment_achieved_rate_C_per_min"], seg.rate_C_per_min)
        yield from self._record(summary)

    def _hold(self, index: int, seg: Hold, hold_C: float, rate: float | None) -> MsgGenerator:
        """Keep the setpoint at `hold_C` for `seg.minutes` of experiment time (paused time excluded)."""
        temperature, t_prev, interrupted = yield from self.poll()
        record = SegmentRecord(index, seg.kind, hold_C, hold_C, 0.0)
        record.add(t_prev, temperature)
        if interrupted:
            yield from self.arm(hold_C, rate, from_C=temperature)
        held = 0.0
        while held < seg.minutes * 60.0:
            yield from stubs.sleep(self.poll_s)
            temperature, t, interrupted = yield from self._tick(index, seg.kind)
            record.add(t, temperature)
            if interrupted:
                self.resumes += 1
                yield from self.arm(hold_C, rate, from_C=temperature)
            else:
                held += max(0.0, t - t_prev)
            t_prev = t
        yield from self._record(record.summary(True))

    def _acquire_marks_at(self, target_C: float, temperature: float, t: float, tolerance: float) -> MsgGenerator:
        """On arrival within `tolerance` of `target_C`: acquire each °C cadence whose next mark is the target.

        The segment ends when the readback is within the tolerance, usually just short of the target, so the
        target's own mark (e.g. 30 °C of a cool to 30 °C at every 5 °C) would otherwise never become due."""
        due = []
        for modality, cad in self.cadence.items():
            last_C, last_s = self.last.get(modality, (None, None))
            if cad.every_C is None or last_C is None or last_s is None:
                continue
            steps = abs(target_C - last_C) / cad.every_C
            if abs(target_C - last_C) > tolerance and abs(steps - round(steps)) * cad.every_C <= tolerance \
                    and abs(temperature - last_C) >= cad.every_C * round(steps) - tolerance:
                due.append(modality)
                self.last[modality] = (target_C, t if cad.every_s is None else last_s)
        if due:
            yield from self.acq.acquire(*due)

    def _nominal_from(self, index: int) -> float:
        """Nominal temperature at the start of segment `index`."""
        return self.program.segment_start_temperatures()[index]

    def _record(self, summary: dict[str, float]) -> MsgGenerator:
        """One event in the `segments` stream (outside any acquisition's bundle)."""
        self.segments.append(summary)
        self.segment_reader.set(summary)  # one object for the whole run: bluesky keys a stream's devices by identity
        yield from bps.create(name=SEGMENTS_STREAM)
        yield from bps.read(self.segment_reader)
        yield from bps.save()


@dataclass
class SegmentRecord:
    """The control readback over one segment, summarised when it ends (see `summary`)."""

    index: int
    kind: str
    nominal_start_C: float
    nominal_end_C: float
    rate_C_per_min: float
    samples: list[tuple[float, float]] = field(default_factory=list)

    def add(self, t: float, temperature: float) -> None:
        """One poll: experiment s, control readback °C."""
        self.samples.append((float(t), float(temperature)))

    def summary(self, on_target: bool) -> dict[str, float]:
        """Nominal/achieved start and end °C, duration (experiment s), achieved rate (°C/min: least-squares
        slope of readback vs time over the segment, signed), whether it ended on target (1) or on the overrun (0)."""
        ts = [t for t, _ in self.samples]
        ys = [y for _, y in self.samples]
        n = len(ts)
        slope = 0.0
        if n >= 2:
            mt, my = sum(ts) / n, sum(ys) / n
            sxx = sum((t - mt) ** 2 for t in ts)
            if sxx > 0:
                slope = sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / sxx
        programmed = 0.0 if self.kind == "hold" else math.copysign(self.rate_C_per_min,
                                                                    self.nominal_end_C - self.nominal_start_C)
        return {
            "segment_index": self.index,
            "segment_kind_code": SEGMENT_KIND_CODES[self.kind],
            "segment_nominal_start_C": self.nominal_start_C,
            "segment_nominal_end_C": self.nominal_end_C,
            "segment_programmed_rate_C_per_min": programmed,
            "segment_start_C": ys[0] if ys else math.nan,
            "segment_end_C": ys[-1] if ys else math.nan,
            "segment_start_s": ts[0] if ts else math.nan,
            "segment_duration_s": ts[-1] - ts[0] if ts else 0.0,
            "segment_achieved_rate_C_per_min": slope * 60.0,
            "segment_on_target": int(on_target),
        }


class SegmentReader:
    """A bluesky Readable of one segment summary (the `segments` stream's only device)."""

    name = "segment"
    parent = None

    def __init__(self, summary: dict[str, float]) -> None:
        self.set(summary)

    def set(self, summary: dict[str, float]) -> None:
        """The summary the next read returns."""
        self._summary = dict(summary)
        self._ts = time.time()

    def read(self) -> dict[str, dict[str, Any]]:
        """The summary as readings."""
        return {k: {"value": v, "timestamp": self._ts} for k, v in self._summary.items()}

    def describe(self) -> dict[str, dict[str, Any]]:
        """Every key a number (integer for the index, kind code and on-target flag)."""
        return {k: {"source": "hotstage.plans.insitu.ProgramRunner", "dtype": "integer" if isinstance(v, int)
                    else "number", "shape": [], **({"units": SEGMENT_UNITS[k]} if k in SEGMENT_UNITS else {})}
                for k, v in self._summary.items()}


def _tolerance(furnace: Any) -> float:
    """The furnace's settling tolerance (°C, its `tolerance` signal), else 1 °C."""
    value = getattr(furnace, "tolerance", None)
    value = value.get() if hasattr(value, "get") else value
    return float(value) if isinstance(value, (int, float)) and value > 0 else 1.0


def heater_range_of(furnace: Any) -> int:
    """The heater range to use when heating (the device's `heater_range_on`, else 'high')."""
    value = getattr(furnace, "heater_range_on", DEFAULT_HEATER_RANGE)
    value = value.get() if hasattr(value, "get") else value  # a configuration signal
    return int(value) if isinstance(value, int) and 1 <= value <= 3 else DEFAULT_HEATER_RANGE


def stream_hints(furnace: Any, streams: list[str]) -> dict[str, Any]:
    """Start-document hints: each stream's dimension is the furnace temperature."""
    key = getattr(getattr(furnace, "temperature", None), "name", "furnace_temperature")
    return {"dimensions": [[[key], s] for s in streams]}


def insitu_ramp(
    furnace: Movable,
    detectors: Mapping[str, Readable],
    program: TemperatureProgram | Mapping[str, Any],
    cadence: Mapping[str, Cadence | Mapping[str, float]],
    clock: Readable | None = None,
    truth: Readable | None = None,
    limits: RigLimits | Mapping[str, float] | None = None,
    md: dict[str, Any] | None = None,
    *,
    progress: ProgressHook | None = None,
    safe_setpoint_C: float | None = None,
    cool_wait_s: float = COOL_WAIT_LIMIT_S,
) -> MsgGenerator:
    """One run: the program executed continuously, each modality acquired on its cadence in its own stream.

    A generator function (bluesky plan). `program` is a TemperatureProgram or its dict form, `cadence` maps each
    detector key (and optionally `furnace`) to a Cadence or its dict form, `limits` is RigLimits or a dict.
    Validation happens at the first step, before any message is produced (nothing moves on bad input). The plan
    is wrapped by `safe_furnace_wrapper` (heater off whatever the outcome) and returns the per-stream event
    counts. A furnace still warm from the last run is waited for, up to `cool_wait_s` experiment s, before the
    run opens (`wait_until_cool`; 0 refuses at once with a `ProgramError`).
    """
    plan = _insitu_ramp(furnace, detectors, program, cadence, clock, truth, limits, md, progress=progress,
                        safe_setpoint_C=safe_setpoint_C, cool_wait_s=cool_wait_s)
    return (yield from plan)


resolve_annotations(insitu_ramp)


def _insitu_ramp(
    furnace: Any,
    detectors: Mapping[str, Any],
    program: TemperatureProgram | Mapping[str, Any],
    cadence: Mapping[str, Cadence | Mapping[str, float]],
    clock: Any,
    truth: Any,
    limits: RigLimits | Mapping[str, float] | None,
    md: dict[str, Any] | None,
    *,
    progress: ProgressHook | None,
    safe_setpoint_C: float | None,
    cool_wait_s: float,
) -> MsgGenerator:
    """Validate the arguments of `insitu_ramp` and build its plan (raises ProgramError before any message)."""
    program = program_from(program)
    limits = limits_from(limits)
    cadence = cadences_from(cadence)
    program.validate(limits)
    if not (isinstance(cool_wait_s, (int, float)) and 0.0 <= cool_wait_s < math.inf):
        raise ProgramError(f"cool_wait_s must be a number of experiment seconds >= 0, got {cool_wait_s!r}")
    check_furnace(furnace)
    check_detectors(detectors)
    check_cadence(detectors, cadence)
    truth = as_truth_readable(truth)
    if clock is not None and not hasattr(clock, "elapsed"):
        raise ProgramError(f"clock {clock!r} has no `elapsed` signal")
    time_scale = _time_scale(furnace)
    poll_s = poll_interval_s(program, cadence, time_scale)
    acq = Acquirer(furnace, dict(detectors), clock, truth)
    runner = ProgramRunner(acq, program, cadence, poll_s, time_scale, heater_range_of(furnace), progress,
                           cool_wait_s=float(cool_wait_s))
    streams = [m for m in MODALITIES if m in detectors] + ([FURNACE_STREAM] if FURNACE_STREAM in cadence else [])
    program_dict = program.to_dict()
    cadence_dict = {k: c.to_dict() for k, c in cadence.items()}
    _md: dict[str, Any] = {
        "plan_name": "insitu_ramp",
        "plan_type": "generator",
        "plan_args": {
            "furnace": device_name(furnace),
            "detectors": {k: device_name(d) for k, d in detectors.items()},
            "program": program_dict,
            "cadence": cadence_dict,
            "clock": device_name(clock),
            "truth": device_name(truth),
            "limits": limits_dict(limits) if limits is not None else None,
            "progress": callable_name(progress),
            "safe_setpoint_C": safe_setpoint_C,
            "cool_wait_s": float(cool_wait_s),
        },
        "program": program_dict,
        "cadence": cadence_dict,
        "modalities": [m for m in MODALITIES if m in detectors],
        "detectors": [getattr(d, "name", str(d)) for d in detectors.values()],
        "poll_interval_s": poll_s,
        "time_scale": time_scale,
        "hints": stream_hints(furnace, streams),
    }
    if limits is not None:
        _md["limits"] = limits_dict(limits)
    _md.update(md or {})

    def inner() -> MsgGenerator:
        yield from runner.prepare()
        yield from bps.open_run(md=_md)
        counts = yield from runner.run()
        yield from bps.close_run()
        return counts

    staged = list(detectors.values()) + ([clock] if clock is not None else [])
    return safe_furnace_wrapper(stage_wrapper(inner(), staged), furnace, safe_setpoint_C)
