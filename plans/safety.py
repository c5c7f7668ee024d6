"""Safety wrapper: whatever way a plan ends, the furnace is left with its heater off.

How each way out is covered (bluesky 1.15 RunEngine semantics):

- success, an exception inside the plan, `RE.abort()`, `RE.stop()`, a Ctrl-C followed by abort/stop: the RunEngine
  throws the error (or `RequestAbort`/`RequestStop`) into the plan, so `bluesky.preprocessors.finalize_wrapper`
  runs the final plan: optional safe setpoint (ramping off, setpoint = safe value), then `bps.mv(furnace.heater_range, 0)` and `bps.stop(furnace)`
  (the device's `stop()` switches the heater off, RANGE <out>,0 on a Lake Shore 336).
- `RE.halt()` (and a Ctrl-C followed by halt): the plan is closed with GeneratorExit and finalize plans do NOT
  run. The RunEngine then calls `stop()` on every object it ever `set` (RunEngine._stop_movable_objects, in the
  `finally` of its run loop). The plans here therefore always `set` the furnace device itself once (the
  settle at the program's start temperature), so the furnace is among those objects and `furnace.stop()` is
  called on halt too. The session adds a last `furnace.stop()` outside the RunEngine as well.
- pause (RE.request_pause, Ctrl-C, a suspender): the RunEngine calls `stop()` on the same objects, so a
  paused furnace has its heater off; the in-situ loop re-arms the heater and resumes the interrupted segment
  from the present temperature on `RE.resume()`.
- a failing callback (bluesky re-raises a subscriber's exception into the plan at the message that emitted
  the document): the plan fails there, so the finalize plan runs as for any other exception (exit_status
  "fail", stop document emitted). Subscribe the catalog writer *before* any live callback: the RunEngine
  stops delivering a document at the first subscriber that raises, so a writer subscribed later would miss
  the event that broke the callback.
- Ctrl-C in a script of your own: the RunEngine turns SIGINT into a pause and raises RunEngineInterrupted with
  the run still open. `abort_if_paused(RE, reason)` aborts it, so the finalize plan runs and the stop document
  ("abort") is written; call it where RunEngineInterrupted is caught (a `Session` does it when it closes).
  `hotstage run`/`demo` replace that pause by an immediate abort on SIGINT, SIGTERM and SIGHUP alike
  (`hotstage.acquisition.exits`).

The furnace's `end_of_plan` setting (a configuration signal, "hold" by default so that stock bluesky plans leave a
furnace regulating after a successful `bps.mv`) reads "off" while a wrapped plan runs, so every descriptor of the
run records that it ends with the heater off; the wrapper restores the previous value afterwards. The heater-off
here does not depend on that setting.

The heater-off step is *verified*: `make_furnace_safe` reads `RANGE?` back and repeats the command (up to
three times) until the controller reports 0; `ensure_heater_off(furnace)` does the same outside the
RunEngine (session teardown, the over-temperature suspender). A dropped connection between the command and
the read-back is repaired by the transport (`hotstage.devices.visa`: unconfirmed idempotent writes are re-sent after
reconnecting).

When the heater cannot be confirmed off (the controller is gone: cable, power, a dead emulator), that is said
once, loudly: `heater_not_confirmed` logs one CRITICAL line ``hotstage: WARNING: could not confirm the furnace
heater is off (<the instrument's error>): check the furnace by hand and switch it off at the controller now``
(at most once per furnace until a later heater-off is confirmed, which is logged too). The run's stop
`reason` stays readable: every step of the final plan surfaces the device's own error, never a bare
``FailedStatus`` ("Status(obj=VisaSignal(...), success=False)"), and a run that failed *and* could not be made
safe fails with `FurnaceNotSafe`, whose message names both (the run's error stays its ``__cause__``). An abort
(Ctrl-C, SIGTERM, a suspender) stays an abort with its reason; the loud line says the rest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator
from typing import Any

import bluesky.plan_stubs as bps
from bluesky.preprocessors import finalize_wrapper, plan_mutator
from bluesky.utils import FailedStatus, Msg, RequestAbort, RequestStop

MsgGenerator = Generator[Msg, Any, Any]

__all__ = ["make_furnace_safe", "safe_furnace_wrapper", "unwrap_failed_status", "ensure_heater_off", "abort_if_paused",
           "HeaterStillOn", "FurnaceNotSafe", "heater_not_confirmed", "heater_confirmed"]

log = logging.getLogger(__name__)

HEATER_OFF_ATTEMPTS = 3


class HeaterStillOn(RuntimeError):
    """The controller still reports a heater range other than 0 after repeated heater-off commands."""


class FurnaceNotSafe(RuntimeError):
    """A run failed and, afterwards, its furnace heater could not be confirmed off; the message names both."""


_WARNED: dict[int, str] = {}  # id(furnace) -> the loud line given for it (once until confirmed off again)


def heater_not_confirmed(furnace: Any, error: BaseException | str) -> str:
    """Say once, loudly (log CRITICAL, one line), that the heater of `furnace` could not be confirmed off; return it.

    Repeated calls for the same furnace are quiet (logged at INFO) until `heater_confirmed` is called for it."""
    why = " ".join(str(error).split()) or type(error).__name__
    line = (f"hotstage: WARNING: could not confirm the furnace heater is off ({why}): check the furnace by hand "
            f"and switch it off at the controller now")
    if id(furnace) in _WARNED:
        log.info("heater off still not confirmed: %s", why)
        return _WARNED[id(furnace)]
    _WARNED[id(furnace)] = line
    log.critical(line)
    return line


def heater_confirmed(furnace: Any) -> None:
    """The heater of `furnace` reads back off: if it had been reported unconfirmed, say that it is off after all."""
    if _WARNED.pop(id(furnace), None) is not None:
        log.warning("hotstage: the furnace heater is confirmed off after all (%s reads heater range 0)",
                    getattr(furnace, "name", "furnace"))


def make_furnace_safe(furnace: Any, safe_setpoint_C: float | None = None) -> MsgGenerator:
    """Plan: optional safe setpoint, heater range 0, furnace.stop(), read-back; tries every step, re-raises the first
    error as the device's own (never a bare FailedStatus). A read-back that cannot confirm the heater off is said
    loudly (`heater_not_confirmed`); a confirmed one clears an earlier warning (`heater_confirmed`)."""
    errors: list[BaseException] = []
    if safe_setpoint_C is not None:
        try:
            # ramping off first, so the setpoint goes to the safe value at once instead of ramping there
            yield from unwrap_failed_status(bps.mv(furnace.ramp_on, 0))
            yield from unwrap_failed_status(bps.mv(furnace.setpoint, float(safe_setpoint_C)))
        except Exception as err:  # noqa: BLE001 - keep going: the heater must still be switched off
            errors.append(err)
    try:
        yield from unwrap_failed_status(bps.mv(furnace.heater_range, 0))
    except Exception as err:  # noqa: BLE001
        errors.append(err)
    try:
        yield from unwrap_failed_status(bps.stop(furnace))
    except Exception as err:  # noqa: BLE001
        errors.append(err)
    try:
        yield from unwrap_failed_status(_verify_heater_off(furnace))
    except Exception as err:  # noqa: BLE001
        heater_not_confirmed(furnace, err)
        errors.append(err)
    else:
        heater_confirmed(furnace)
    if errors:
        raise errors[0]


def _verify_heater_off(furnace: Any) -> MsgGenerator:
    """Plan: read the heater range back from the controller; repeat the heater-off command until it is 0."""
    for attempt in range(HEATER_OFF_ATTEMPTS):
        value = yield from bps.rd(furnace.heater_range)  # read() -> get(): a fresh RANGE? query, not the cache
        if value is not None and int(value) == 0:
            return
        log.warning("%s: heater range reads %r after heater off; repeating (%d)", furnace.name, value, attempt + 1)
        yield from bps.mv(furnace.heater_range, 0)
    raise HeaterStillOn(f"{furnace.name}: heater still on after {HEATER_OFF_ATTEMPTS} heater-off commands")


def ensure_heater_off(furnace: Any, attempts: int = HEATER_OFF_ATTEMPTS) -> None:
    """Outside the RunEngine: heater off, confirmed by read-back (``heater_off(confirm=True)``), repeated.

    Falls back to ``stop()`` for furnaces without ``heater_off``. Raises the last error (HeaterStillOn or
    the transport's InstrumentError naming instrument, command and resource) if every attempt failed; the
    caller says so loudly (`heater_not_confirmed`). A success clears an earlier warning (`heater_confirmed`).
    """
    last: BaseException | None = None
    for attempt in range(max(1, attempts)):
        try:
            if hasattr(furnace, "heater_off"):
                furnace.heater_off(confirm=True)
            else:
                furnace.stop()
        except Exception as exc:  # noqa: BLE001 - retried, then re-raised
            last = exc
            log.info("%s: heater off failed (attempt %d): %s", getattr(furnace, "name", furnace), attempt + 1, exc)
            if attempt + 1 < attempts:
                time.sleep(0.1 * (attempt + 1))
        else:
            heater_confirmed(furnace)
            return
    assert last is not None
    raise last


def abort_if_paused(RE: Any, reason: str = "interrupted") -> tuple[str, ...]:
    """After RunEngineInterrupted: abort a paused RunEngine so the run is closed ("abort") and cleaned up.

    Returns the aborted runs' uids (empty when the RunEngine was not paused, e.g. already idle).
    """
    if getattr(RE, "state", "idle") != "paused":
        return ()
    result = RE.abort(reason=reason)
    if isinstance(result, tuple):
        return result
    return tuple(getattr(result, "run_start_uids", ()) or ())


def unwrap_failed_status(plan: Any) -> MsgGenerator:
    """Run `plan`; a FailedStatus (str: "DeviceStatus(device=xrd, done=True, success=False)") is re-raised as
    the device's own error (e.g. AcquisitionError naming instrument, command and resource), so that the
    stop document's `reason` says what failed. The FailedStatus stays attached as `__context__`."""
    try:
        return (yield from plan)
    except FailedStatus as err:
        cause = err.__cause__
        if cause is None and err.args and hasattr(err.args[0], "exception"):
            try:
                cause = err.args[0].exception()
            except Exception:  # noqa: BLE001 - keep the original
                cause = None
        if isinstance(cause, Exception) and not isinstance(cause, FailedStatus):
            raise cause  # noqa: B904 - implicit chaining (FailedStatus as __context__); `from` would make a cycle
        raise


def _end_of_plan_off(plan: Any, furnace: Any, changed: list[Any]) -> MsgGenerator:
    """Run `plan`, setting the furnace's `end_of_plan` setting to "off" just before the plan's first message.

    So the run's descriptors record what this wrapper does (heater off at the end), while a plan that fails its
    validation on its first step still sends nothing. The previous value goes into `changed` (restored by the
    final plan). A furnace without the setting (a test double) is left alone."""
    setting = getattr(furnace, "end_of_plan", None)
    if setting is None or not (hasattr(setting, "get") and hasattr(setting, "set")):
        return (yield from plan)

    def first_message(msg: Msg) -> tuple[Any, None]:
        if changed:
            return None, None
        changed.append(setting.get())

        def head() -> MsgGenerator:
            if changed[0] != "off":
                yield from bps.mv(setting, "off")
            return (yield msg)

        return head(), None

    return (yield from plan_mutator(plan, first_message))


def _restore_end_of_plan(furnace: Any, changed: list[Any]) -> MsgGenerator:
    """Plan: put back the `end_of_plan` value `_end_of_plan_off` replaced (nothing if it was "off" already)."""
    if changed and changed[0] != "off":
        yield from bps.mv(furnace.end_of_plan, changed[0])


def safe_furnace_wrapper(plan: Any, furnace: Any, safe_setpoint_C: float | None = None) -> MsgGenerator:
    """Run `plan`; on success, error, abort or stop finish with the furnace heater off (halt: see module doc).

    The furnace's `end_of_plan` setting reads "off" while the plan runs (recorded in every descriptor) and is
    restored afterwards; the heater-off here does not depend on it.

    A failed device status surfaces as the device's own error (`unwrap_failed_status`). If the final plan cannot
    make the furnace safe: a run that otherwise succeeded fails with that error; a run that failed fails with
    `FurnaceNotSafe` naming both errors; an abort or stop keeps its status and reason (the loud line has been
    logged by `make_furnace_safe`)."""
    ended: list[BaseException] = []
    changed: list[Any] = []

    def body() -> MsgGenerator:
        try:
            return (yield from unwrap_failed_status(_end_of_plan_off(plan, furnace, changed)))
        except BaseException as exc:
            ended.append(exc)
            raise

    def final() -> MsgGenerator:
        try:
            yield from make_furnace_safe(furnace, safe_setpoint_C)
        except Exception as err:  # noqa: BLE001 - decided below which error the run ends with
            yield from _restore_end_of_plan(furnace, changed)
            first = ended[0] if ended else None
            if first is None:
                raise
            if isinstance(first, (RequestAbort, RequestStop)) or not isinstance(first, Exception):
                log.error("%s: furnace not made safe after the run was interrupted: %s",
                          getattr(furnace, "name", "furnace"), err)
                return  # the RunEngine goes on ending the run as asked (abort/stop, with its reason)
            raise FurnaceNotSafe(f"{_describe(first)}; afterwards the furnace heater could not be confirmed off: "
                                 f"{_describe(err)}") from first
        yield from _restore_end_of_plan(furnace, changed)

    return (yield from finalize_wrapper(body(), final()))


def _describe(exc: BaseException) -> str:
    """One readable line for an error: its message, or its type when it has none."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
