"""`bluesky.plan_stubs` for the hot loop of the in-situ plans, without bluesky's per-call stack capture.

bluesky (1.14+) wraps every plan stub in `bluesky.utils.Plan`, whose constructor calls
`traceback.format_stack()` so that it can warn about a stub that was never iterated. Inside the in-situ ramp
loop (several stubs per poll, a dozen per acquisition, from deep inside the RunEngine's wrappers) that cost
~1 ms per call and was 18 % of the RunEngine thread's time in the demo (py-spy). The loop always
`yield from`s what it calls, so the warning can never fire there: these are the same generator functions,
unwrapped (`functools.wraps` keeps the original as `__wrapped__`). Everywhere else, use `bluesky.plan_stubs`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import bluesky.plan_stubs as bps

__all__ = ["checkpoint", "create", "prepare", "read", "rd", "save", "sleep", "trigger", "wait"]


def _bare(stub: Callable[..., Any]) -> Callable[..., Any]:
    """The generator function behind a `@plan`-decorated stub (the stub itself if it is not decorated)."""
    return getattr(stub, "__wrapped__", stub)


checkpoint = _bare(bps.checkpoint)
create = _bare(bps.create)
prepare = _bare(bps.prepare)
read = _bare(bps.read)
rd = _bare(bps.rd)
save = _bare(bps.save)
sleep = _bare(bps.sleep)
trigger = _bare(bps.trigger)
wait = _bare(bps.wait)
