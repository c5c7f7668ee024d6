"""The acquisition session: rig, RunEngine with standard metadata, storage and live callbacks, wired once.

A `Session` is what a user (or the CLI) opens to run plans::

    with Session(rig=RigConfig(), sample=SampleSpec.default()) as s:
        uid = s.insitu(TemperatureProgram.demo())

It owns the rig (the simulated one by default, or real instruments from a rig TOML), a RunEngine whose
every run carries `sample`, `program`, `rig`, `simulated` and `versions` in its start document, the
non-blocking catalog writer, a progress bar, the live analysis and any other live callbacks. On exit it
drains the analysis and then the writer so every document of every run (raw and derived) is stored, and
leaves the furnace with its heater off.

Live analysis (`analysis.live.LiveAnalysis`, on by default; `analysis=False` turns it off, an
`AnalysisParameters` or a dict of overrides changes its parameters): every raw run gets a derived run in the
same catalog, written through the same `CatalogWriter` while the raw run goes on. The RunEngine thread and
the analysis worker both hand documents to the writer, so the writer is called through one lock
(`SerializedSink`: the writer numbers documents as they arrive and must see them one at a time). After each
plan the session waits for the analysis to finish (its derived stop follows the raw stop), then flushes the
writer; `derived_uid(raw_uid)` gives the derived run. Opening the session waits until the analysis worker has
loaded its compiled fitting kernels (`ANALYSIS_READY_TIMEOUT_S`), so that one-off CPU load never competes with a
real-time run (at 240x a 0.4 s stall of the rig's processes costs cadence points).
"""

from __future__ import annotations

import gc
import importlib.metadata
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bluesky import RunEngine

from acquisition.config import RigConfig
from analysis.live import AnalysisParameters, LiveAnalysis
from acquisition.progress import ProgressBar
from acquisition.storage import CatalogWriter, catalog_location, open_catalog
from plans.program import Cadence, RigLimits, TemperatureProgram

log = logging.getLogger(__name__)

ANALYSIS_READY_TIMEOUT_S: float = 300.0
"""How long opening a session waits for the live analysis to load its compiled kernels (about 0.5 s; about 10 s
once after an install, when they are compiled) before its first run; past it the session goes on (documents
queue, nothing is lost)."""

DocumentCallback = Callable[[str, dict], Any]


def versions() -> dict[str, str]:
    """Versions of hotstage and the stack it runs on, for every run's start metadata."""
    out = {}
    for dist in ("hotstage", "bluesky", "ophyd", "event-model", "tiled", "bluesky-tiled-plugins", "pyvisa", "numpy",
                 "scipy", "numba"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


class SerializedSink:
    """Calls a document sink (the CatalogWriter) from several threads one at a time, in call order."""

    def __init__(self, sink: DocumentCallback) -> None:
        self.sink = sink
        self._lock = threading.Lock()

    def __call__(self, name: str, doc: dict) -> Any:
        """Forward one document under the lock (the writer only enqueues: microseconds)."""
        with self._lock:
            return self.sink(name, doc)


def analysis_parameters(analysis: bool | AnalysisParameters | Mapping[str, Any] | None) -> AnalysisParameters | None:
    """None (analysis off) or the parameters: True → defaults, a dict → defaults with these overrides."""
    if analysis is None or analysis is False:
        return None
    if analysis is True:
        return AnalysisParameters()
    if isinstance(analysis, AnalysisParameters):
        return analysis
    if isinstance(analysis, Mapping):
        return AnalysisParameters().replace(**dict(analysis))
    raise TypeError(f"analysis must be a bool, AnalysisParameters or a dict of overrides, got {analysis!r}")


class Session:
    """A rig, a RunEngine and a catalog, opened together and closed safely together."""

    def __init__(
        self,
        rig: RigConfig | None = None,
        sample: Any = None,
        data_dir: str | Path | None = None,
        *,
        progress: bool = True,
        live_callbacks: Iterable[DocumentCallback] = (),
        catalog: Any = None,
        analysis: bool | AnalysisParameters | Mapping[str, Any] = True,
        analysis_timeout: float | None = None,
    ) -> None:
        self.config = rig or RigConfig()
        self.analysis_parameters = analysis_parameters(analysis)
        self.analysis_timeout = analysis_timeout
        self.analysis: LiveAnalysis | None = None
        self.sink: DocumentCallback | None = None
        self.sample = sample
        self.data_dir = data_dir
        self.progress = progress
        self.live_callbacks = list(live_callbacks)
        self.catalog = catalog
        self.rig: Any = None
        self.RE: RunEngine | None = None
        self.writer: CatalogWriter | None = None
        self.safety: Any = None
        """The furnace suspenders of every run (`plans.suspenders.FurnaceSafety`)."""
        self._stack = ExitStack()

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> Session:
        try:
            self._open()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _open(self) -> None:
        """Open storage first (so nothing acquired can be lost), then the rig, then the RunEngine; then freeze the
        objects alive so far out of the cyclic garbage collector until the session closes (`_freeze_startup`)."""
        self._stack.callback(gc.unfreeze)  # registered first: runs last, once everything else is closed
        if self.catalog is None:
            self.catalog = open_catalog(self.data_dir)
        self._flush_leftover_spool()
        self.writer = CatalogWriter(self.catalog)
        self._stack.callback(self.writer.close)
        self.sink = SerializedSink(self.writer)
        if self.analysis_parameters is not None:
            self.analysis = LiveAnalysis(self.sink, self.analysis_parameters)
            self._stack.callback(self.analysis.close)  # runs before writer.close (LIFO)
            if not self.analysis.wait_ready(ANALYSIS_READY_TIMEOUT_S):
                log.warning("live analysis not ready after %.0f s; runs go on and their documents are queued",
                            ANALYSIS_READY_TIMEOUT_S)
        self.rig = self._stack.enter_context(self._make_rig())
        from acquisition.interlocks import arm_furnace_interlocks  # TLIMIT + guardian; before _make_safe (its doc)

        arm_furnace_interlocks(self._stack, self.config, self.rig, self.catalog)
        self._stack.callback(self._make_safe)
        self.RE = RunEngine({}, call_returns_result=False)
        self.RE.md.update(
            {
                "rig": self.config.to_metadata(),
                "simulated": self.config.simulated,
                "versions": versions(),
            }
        )
        if self.sample is not None:
            self.RE.md["sample"] = sample_metadata(self.sample)
        self.safety = self._install_suspenders()
        self.RE.subscribe(self.sink)
        if self.analysis is not None:
            self.RE.subscribe(self.analysis)
        for callback in self.live_callbacks:
            self.RE.subscribe(callback)
        if self.progress:
            self.RE.subscribe(ProgressBar())
        self._freeze_startup()

    @staticmethod
    def _freeze_startup() -> None:
        """Move every object alive now (imports, compiled kernels, catalog, rig) out of the collector's generations.

        A full (generation-2) collection walks every tracked object and stops every thread of the process while it
        does: 0.14 s for the ~4·10⁵ objects of a fresh hotstage process on the 2-core machine, 0.65–0.74 s late in
        the test suite (1.9·10⁶ objects). At time_scale 240 that is 34–180 experiment-s with the RunEngine and the
        instrument emulators stopped — cadence points lost, a furnace settle timed out. Frozen, those objects are
        not walked again; collections during a run see only what the run creates. `gc.unfreeze` at close returns
        them (garbage among them is then collected as usual)."""
        gc.freeze()

    def _install_suspenders(self) -> Any:
        """Over-temperature (rig max_C + 10 °C: heater off, abort) and out-of-band (suspend) for every run."""
        from plans.suspenders import DEFAULT_OVER_TEMPERATURE_MARGIN_C, install_furnace_suspenders

        assert self.RE is not None
        # Every 2 experiment s, but not more often than every 50 ms of wall time: at the simulated rig's 240x the
        # watch's default floor of 10 ms polled the furnace 100 times a second and took GIL time from acquisition.
        period = min(max(2.0 / self.config.time_scale, 0.05), 0.5) if self.config.simulated else None
        safety = install_furnace_suspenders(
            self.RE, self.rig.furnace, max_C=self.config.limits.max_C + DEFAULT_OVER_TEMPERATURE_MARGIN_C,
            period_s=period,
        )
        self._stack.callback(safety.remove)
        return safety

    def _flush_leftover_spool(self) -> None:
        """Write runs an earlier process left in the spool (it died, or the catalog was down) before new ones."""
        from acquisition.spool import default_spool_dir, flush_spool, pending_runs

        directory = default_spool_dir(catalog_location(self.catalog))
        if pending_runs(directory):
            for r in flush_spool(self.catalog, directory):
                log.warning("spool: run %s from an earlier session: %s (%d documents)", r.run_uid, r.status,
                            r.documents)

    def _make_rig(self) -> Any:
        """The simulated rig by default; real instruments when the rig TOML says `kind = "visa"`."""
        if self.config.simulated:
            from simulated.rig import SimulatedRig

            return SimulatedRig(sample=self.sample, time_scale=self.config.time_scale)
        from acquisition.hardware import HardwareRig

        return HardwareRig(self.config)

    def _make_safe(self) -> None:
        """Heater off whatever happened; a failure here is logged loudly, never hidden."""
        try:
            self.rig.furnace.stop()
        except Exception:  # noqa: BLE001 - must not mask the original error, but must be seen
            log.exception("could not switch the furnace heater off; check the furnace by hand")

    # -- running plans ---------------------------------------------------------------------------
    @property
    def limits(self) -> RigLimits:
        """The rig's limits as the plans understand them."""
        lim = self.config.limits
        return RigLimits(
            max_C=lim.max_C, min_C=lim.min_C, min_rate=lim.min_rate_C_per_min, max_rate=lim.max_rate_C_per_min
        )

    @property
    def detectors(self) -> dict[str, Any]:
        """The modality name → detector map the plans take."""
        return {"xrd": self.rig.xrd, "thz": self.rig.thz, "pl": self.rig.pl}

    def cadences(self, overrides: dict[str, dict[str, float]] | None = None) -> dict[str, Cadence]:
        """Per-modality cadence from the rig configuration (or overrides)."""
        spec = {**self.config.cadence, **(overrides or {})}
        out = {}
        for name, entry in spec.items():
            ((key, value),) = entry.items()
            out[name] = Cadence.every_degrees(value) if key == "every_C" else Cadence.every_seconds(value)
        return out

    def insitu(self, program: TemperatureProgram, cadence: dict[str, dict[str, float]] | None = None,
               md: dict[str, Any] | None = None) -> str:
        """Run an in-situ ramp of `program` and return the run's uid (validated before anything moves)."""
        from plans.insitu import insitu_ramp

        truth = getattr(self.rig, "truth_reader", None)
        plan = insitu_ramp(
            self.rig.furnace,
            self.detectors,
            program,
            self.cadences(cadence),
            clock=self.rig.clock,
            truth=truth,
            limits=self.limits,
            md=md or {},
        )
        return self._run(plan)[0]

    def _run(self, plan: Any) -> tuple[str, ...]:
        """Run a plan; the analysis is drained and storage flushed afterwards whether it succeeded or not."""
        assert self.RE is not None and self.writer is not None
        try:
            uids = self.RE(plan)
        finally:
            self.wait_for_analysis()
            self.writer.flush()
        return tuple(uids)

    def wait_for_analysis(self) -> float:
        """Wait (up to `analysis_timeout`) until the live analysis has caught up; returns the seconds waited."""
        t0 = time.monotonic()
        if self.analysis is not None and not self.analysis.wait(self.analysis_timeout):
            log.warning("live analysis still %d documents behind after %s s; it goes on in the background",
                        self.analysis.backlog, self.analysis_timeout)
        return time.monotonic() - t0

    def derived_uid(self, raw_uid: str) -> str | None:
        """The uid of the live derived run of a raw run of this session (None with the analysis off)."""
        return self.analysis.derived_uid(raw_uid) if self.analysis is not None else None


def sample_metadata(sample: Any) -> dict[str, Any]:
    """The `sample` entry of start metadata: name, composition and CsPbI3 weight fraction."""
    x = float(sample.cspbi3_wt_frac)
    return {
        "name": sample.name,
        "cspbi3_wt_frac": x,
        "composition": {"CsPbI3": x, "agZIF-62": round(1.0 - x, 12)},
        "seed": getattr(sample, "seed", None),
    }
