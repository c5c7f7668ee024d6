"""A tqdm progress bar for long temperature programs, driven by the run's own documents.

It reads the program's duration from the start document and advances with the experiment time that every
event carries (the rig clock's `elapsed` reading), showing the furnace temperature as it goes. It never
touches the devices, so it cannot slow or break acquisition.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

CLOCK_KEY = "clock_elapsed"
TEMPERATURE_KEY = "furnace_temperature"


class ProgressBar:
    """RunEngine subscriber: one bar per run, in experiment seconds."""

    def __init__(self, file: Any = None) -> None:
        self.file = file or sys.stderr
        self.bar: tqdm | None = None
        self.done = 0.0

    def __call__(self, name: str, doc: dict) -> None:
        if name == "start":
            self._start(doc)
        elif name == "event" and self.bar is not None:
            self._event(doc)
        elif name == "stop" and self.bar is not None:
            self.bar.set_postfix_str(doc.get("exit_status", ""))
            self.bar.close()
            self.bar = None

    def _start(self, doc: dict) -> None:
        program = doc.get("program")
        if not isinstance(program, dict) or not program.get("duration_s"):
            return
        self.done = 0.0
        self.bar = tqdm(
            total=round(float(program["duration_s"])),
            unit="s",
            desc=f"{doc.get('plan_name', 'run')} {doc.get('uid', '')[:8]}",
            file=self.file,
            leave=False,
            dynamic_ncols=True,
            mininterval=0.5,
            disable=None,  # tqdm's "auto": no bar when the output is not a terminal (logs, CI)
        )

    def _event(self, doc: dict) -> None:
        data = doc.get("data", {})
        elapsed = data.get(CLOCK_KEY)
        if elapsed is None or self.bar is None:
            return
        step = max(0.0, min(float(elapsed), self.bar.total) - self.done)
        if step:
            self.bar.update(round(self.done + step) - round(self.done))
            self.done += step
        if TEMPERATURE_KEY in data:
            self.bar.set_postfix_str(f"{float(data[TEMPERATURE_KEY]):6.1f} °C")
