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
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import bluesky.plan_stubs as bps
from bluesky.preprocessors import finalize_wrapper
from bluesky.utils import Msg

MsgGenerator = Generator[Msg, Any, Any]

__all__ = ["make_furnace_safe", "safe_furnace_wrapper"]


def make_furnace_safe(furnace: Any, safe_setpoint_C: float | None = None) -> MsgGenerator:
    """Plan: optional safe setpoint, heater range 0, then furnace.stop(); tries every step, re-raises the first error."""
    errors: list[BaseException] = []
    if safe_setpoint_C is not None:
        try:
            # ramping off first, so the setpoint goes to the safe value at once instead of ramping there
            yield from bps.mv(furnace.ramp_on, 0)
            yield from bps.mv(furnace.setpoint, float(safe_setpoint_C))
        except Exception as err:  # noqa: BLE001 - keep going: the heater must still be switched off
            errors.append(err)
    try:
        yield from bps.mv(furnace.heater_range, 0)
    except Exception as err:  # noqa: BLE001
        errors.append(err)
    try:
        yield from bps.stop(furnace)
    except Exception as err:  # noqa: BLE001
        errors.append(err)
    if errors:
        raise errors[0]


def safe_furnace_wrapper(plan: Any, furnace: Any, safe_setpoint_C: float | None = None) -> MsgGenerator:
    """Run `plan`; on success, error, abort or stop finish with the furnace heater off (halt: see module doc)."""
    return (yield from finalize_wrapper(plan, make_furnace_safe(furnace, safe_setpoint_C)))
