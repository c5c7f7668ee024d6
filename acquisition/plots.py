"""Optional live plots while a run goes on: furnace and sample temperature against experiment time.

They use bluesky's own `LivePlot`, fed only the events of one stream (every modality's stream carries
the temperatures, so without the filter each point would be drawn three times). Plots are opt-in
(`Session(plots=True)`, `hotstage run --plot`): they need a display, and drawing costs time a
headless run should not pay.
"""

from __future__ import annotations

from typing import Any

from bluesky.callbacks.mpl_plotting import LivePlot

PLOT_STREAM = "xrd"
TIME_KEY = "clock_elapsed"
TEMPERATURE_KEYS = ("furnace_temperature", "furnace_sample_temperature")


class StreamFilter:
    """Pass a run's start/stop and the descriptors and events of one stream (by name) to a callback."""

    def __init__(self, callback: Any, stream: str) -> None:
        self.callback = callback
        self.stream = stream
        self._descriptors: set[str] = set()

    def __call__(self, name: str, doc: dict) -> None:
        if name == "descriptor":
            if doc.get("name") != self.stream:
                return
            self._descriptors.add(doc["uid"])
        elif name == "event" and doc.get("descriptor") not in self._descriptors:
            return
        elif name in ("event_page", "datum", "datum_page", "resource"):
            return
        self.callback(name, doc)


def live_plots(stream: str = PLOT_STREAM) -> list[StreamFilter]:
    """Temperature traces (furnace control sensor and sample) against experiment seconds, on one axes."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(num="hotstage: temperature", clear=True)
    ax.set_xlabel("experiment time (s)")
    ax.set_ylabel("temperature (°C)")
    return [StreamFilter(LivePlot(key, x=TIME_KEY, ax=ax, marker=".", label=key), stream) for key in TEMPERATURE_KEYS]
