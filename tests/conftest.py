"""Session-wide pytest hooks: print the attack table (`tests/attack_harness.py`) after the test summary.

With pytest-xdist the attack rows are recorded in a worker process: each worker appends its table to a file the
controller named (``HOTSTAGE_ATTACK_TABLE``, set before the workers start), and the controller prints it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

TABLE_ENV = "HOTSTAGE_ATTACK_TABLE"


WARM_UP = ("from hotstage.simulated.diffractometer import _warm_up; _warm_up()",
           "from hotstage.analysis.phase_quant import warm_up; warm_up()")
"""The compiled (numba) kernels of the simulator and of the live analysis, cached on disk once compiled."""


def pytest_configure(config) -> None:  # noqa: ANN001 - pytest hook
    """The controller (or a run without workers) names the table file; workers inherit it. With workers, the
    controller first fills the kernel cache (`warm_kernels`)."""
    if not hasattr(config, "workerinput"):
        fd, path = tempfile.mkstemp(prefix="hotstage-attack-table-", suffix=".txt")
        os.close(fd)
        os.environ[TABLE_ENV] = path
        if getattr(config.option, "numprocesses", None):
            warm_kernels()


def warm_kernels() -> None:
    """Compile or load the simulator's and the analysis's kernels, both at once, before the workers start.

    After a fresh clone nothing is cached: each worker's first session would compile both sets itself (13 s +
    33 s of CPU on the 2-core machine, twice, in parallel); this compiles each once. Cached, it costs ~2 s."""
    import subprocess

    procs = [subprocess.Popen([sys.executable, "-c", code]) for code in WARM_UP]
    for proc in procs:
        proc.wait()


def pytest_sessionfinish(session, exitstatus) -> None:  # noqa: ANN001 - pytest hook
    """Append the attack rows this process ran to the table file."""
    harness = sys.modules.get("attack_harness")
    path = os.environ.get(TABLE_ENV)
    if harness is not None and harness.ROWS and path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(harness.format_table(harness.ROWS) + "\n")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001 - pytest hook
    """The outcome of every attack row that ran in this session, as one table."""
    if hasattr(config, "workerinput") or not os.environ.get(TABLE_ENV):
        return
    path = Path(os.environ[TABLE_ENV])
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    path.unlink(missing_ok=True)
    if text.strip():
        terminalreporter.write_sep("=", "attack table (issue 11: attacks from outside the process)")
        terminalreporter.write_line(text.rstrip())


# -- shared fixtures -------------------------------------------------------------------------------------------
import contextlib  # noqa: E402 - the fixtures below; the hooks above need nothing
from collections.abc import Callable, Iterator  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

#: Simulated seconds per wall second of a lock-step rig. It matters only where nobody jumps the clock for the idle
#: grace (a suspended plan): then the clock flows at this rate (`hotstage.simulated.clock`).
LOCKSTEP_SCALE = 5.0


@pytest.fixture
def lockstep_rig() -> Callable[..., contextlib.AbstractContextManager[Any]]:
    """`with lockstep_rig(RE, **SimulatedRig kwargs) as rig:` a stepped SimulatedRig whose clock the RunEngine's
    sleeps jump: plans and the simulator advance in lock-step, as fast as the code computes."""
    from hotstage.simulated.rig import SimulatedRig

    @contextlib.contextmanager
    def make(RE: Any, *, time_scale: float = LOCKSTEP_SCALE, **kwargs: Any) -> Iterator[SimulatedRig]:
        with SimulatedRig(time_scale=time_scale, stepped=True, **kwargs) as rig:
            rig.install_stepped_sleep(RE)
            yield rig

    return make


def located(plan_result: Any, device: Any) -> Any:
    """The Location of `device` from `bps.locate(device)`'s plan result: bluesky < 1.16 returns the Location itself,
    1.16 and later a mapping from each device's name to its Location."""
    if isinstance(plan_result, dict) and set(plan_result) == {device.name}:
        return plan_result[device.name]
    return plan_result
