"""Furnace interlocks a session arms right after opening its rig: the controller's TLIMIT and the guardian process.

Three layers keep the furnace safe, each one covering what the one before cannot:

1. the plans and the session switch the heater off on every way a run ends (`hotstage.plans.safety`, `Session._make_safe`),
   and the over-temperature suspender does so at the rig's ``limits.max_C`` + 10 °C
   (`hotstage.plans.suspenders.DEFAULT_OVER_TEMPERATURE_MARGIN_C`);
2. the guardian (`hotstage.acquisition.guardian`, rigs of real instruments only) switches the heater off when the
   acquiring process dies without doing so (SIGKILL, out of memory);
3. the Lake Shore 336's own temperature limit (``TLIMIT``, set here on the control and sample inputs at
   ``limits.max_C`` + `TLIMIT_MARGIN_C` = 15 °C, a little above the software threshold so that the software acts
   first) turns every output off inside the controller when the computer hangs or the link is gone.

`arm_furnace_interlocks` sets the limit (read back) and starts the guardian, and registers on the session's
exit stack the release of the guardian: when the session closes, the heater is confirmed off (``RANGE?``) and the
guardian told ``safe``; if it cannot be confirmed the guardian is not told, and tries itself once the session has
let go of the controller. Call it right after the rig is opened and *before* registering the session's own
heater-off callback, so that (exit stacks unwind in reverse) the heater is switched off first, then the
guardian released, then the rig closed.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from hotstage.acquisition.guardian import Guardian

__all__ = ["TLIMIT_MARGIN_C", "arm_furnace_interlocks", "arm_temperature_limit", "start_guardian", "guardian_log_path"]

log = logging.getLogger(__name__)

TLIMIT_MARGIN_C = 15.0
"""The controller's own limit sits this far above the rig's ``limits.max_C`` (the software acts at +10 °C)."""
GUARDIAN_LOG = "guardian.log"


def arm_temperature_limit(furnace: Any, max_C: float) -> dict[str, float | None]:
    """``TLIMIT`` at ``max_C`` + `TLIMIT_MARGIN_C` on the furnace's control and sample inputs (read back)."""
    limit_C = float(max_C) + TLIMIT_MARGIN_C
    limits = furnace.set_temperature_limit(limit_C)
    log.info("furnace controller temperature limit (TLIMIT) %.1f °C on input(s) %s", limit_C, ", ".join(limits))
    return limits


def guardian_log_path(catalog: Any) -> Path:
    """``<data directory>/guardian.log`` (the default data directory when the catalog is a server)."""
    from hotstage.acquisition.storage import catalog_location, default_data_dir

    try:
        data_dir = catalog_location(catalog).data_dir
    except (TypeError, ValueError):
        data_dir = None
    return Path(data_dir or default_data_dir()) / GUARDIAN_LOG


def start_guardian(config: Any, catalog: Any) -> Guardian | None:
    """Start the guardian for a rig of real instruments; None for the simulated rig (its in-process emulators die
    with the session) and for pyvisa-sim rigs (another process would see another simulated instrument)."""
    if config.simulated or str(config.visa_library).endswith("@sim"):
        return None
    furnace = config.instruments["furnace"]
    guardian = Guardian(furnace.resource, config.visa_library, log_path=guardian_log_path(catalog)).start()
    log.info("furnace guardian started (pid %s, log %s)", guardian.pid, guardian.log_path)
    return guardian


def _release(guardian: Guardian, furnace: Any) -> None:
    """Confirm the heater off (``RANGE?``) and tell the guardian ``safe``; else leave the heater to the guardian."""
    try:
        furnace.heater_off(confirm=True)
    except Exception:  # noqa: BLE001 - the guardian takes over; the session's own callback already said why
        log.error("heater off not confirmed at close; the furnace guardian (pid %s) will switch it off", guardian.pid)
        guardian.release(safe=False)
        return
    guardian.release(safe=True)


def arm_furnace_interlocks(stack: ExitStack, config: Any, rig: Any, catalog: Any) -> Guardian | None:
    """Set the controller's temperature limit and start the guardian; its release goes on `stack` (module doc)."""
    arm_temperature_limit(rig.furnace, config.limits.max_C)
    guardian = start_guardian(config, catalog)
    if guardian is not None:
        stack.callback(_release, guardian, rig.furnace)
    return guardian
