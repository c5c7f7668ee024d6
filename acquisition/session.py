"""The acquisition session: rig, RunEngine with standard metadata, storage and live callbacks, wired once.

A `Session` is what a user (or the CLI) opens to run plans::

    with Session(rig=RigConfig(), sample=SampleSpec.default()) as s:
        uid = s.insitu(TemperatureProgram.demo())

It owns the rig (the simulated one by default, or real instruments from a rig TOML), a RunEngine whose
every run carries `sample`, `program`, `rig`, `simulated` and `versions` in its start document, the
non-blocking catalog writer, a progress bar, the live analysis and any other live callbacks. On exit it
leaves the furnace with its heater off (confirmed), then drains the analysis and then the writer so every
document of every run (raw and derived) is stored.

Live analysis (`hotstage.analysis.live.LiveAnalysis`, on by default; `analysis=False` turns it off, an
`AnalysisParameters` or a dict of overrides changes its parameters): every raw run gets a derived run in the
same catalog, written through the same `CatalogWriter` while the raw run goes on. The RunEngine publishes each
document once, to the session's document bus (`hotstage.acquisition.bus.DocumentBus`, `bus`): the writer and the
analysis are its consumers, each a process of its own interpreter (never a re-import of the user's script, so an
unguarded script or `python -` works the same); the analysis's derived documents go back onto the bus and reach
the writer only. The bus hands documents on under one lock (the writer numbers documents as they arrive and must
see them one at a time, from the RunEngine thread and the analysis's receiver thread alike). After each
plan the session waits for the analysis to finish (its derived stop follows the raw stop), then flushes the
writer; `derived_uid(raw_uid)` gives the derived run. Opening the session waits until the analysis worker has
loaded its compiled fitting kernels (`ANALYSIS_READY_TIMEOUT_S`), so that one-off CPU load never competes with a
real-time run (at 240x a 0.4 s stall of the rig's processes costs cadence points).

Opening order: the rig first (instruments opened and identified, so a wrong address or a dead instrument fails
within seconds, before any process is started), then the catalog, the furnace interlocks, the storage (leftover
spool, the catalog writer process), the live analysis process, and the RunEngine: storage is open before any plan
runs. Closing (also when opening failed half-way): a run left paused is aborted (its stop document written), the
heater is switched off and confirmed by read-back (`hotstage.plans.safety.ensure_heater_off`; if that is impossible one
loud CRITICAL line says so: check the furnace by hand), then the analysis and the writer are drained and closed.
After closing, `heater_off` (True/False/None: confirmed/not confirmed/rig never opened) and `stored` (the writer's
close result) say how it ended, `last_run_uid` and `last_stop` what the last run was.

Signals (`hotstage.acquisition.exits.ExitSignals`, given as ``signals=``; the CLI does): opening and closing are shielded
(a signal is raised as `Interrupted` between two steps, never inside one), a signal while a plan runs aborts the
run at once with a readable reason (the RunEngine's pause-on-Ctrl-C is replaced), and `Interrupted` is raised once
the run's documents are drained.
"""

from __future__ import annotations

import gc
import importlib.metadata
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, ExitStack, nullcontext
from pathlib import Path
from typing import Any

from bluesky import RunEngine

from hotstage.acquisition.bus import DocumentBus
from hotstage.acquisition.config import RigConfig
from hotstage.analysis.live import AnalysisParameters, LiveAnalysis
from hotstage.acquisition.progress import ProgressBar
from hotstage.acquisition.datadir import CATALOG_DB
from hotstage.acquisition.storage import CatalogWriter, catalog_location, open_catalog
from hotstage.plans.program import Cadence, RigLimits, TemperatureProgram

log = logging.getLogger(__name__)

ANALYSIS_READY_TIMEOUT_S: float = 300.0
"""How long opening a session waits for the live analysis to load its compiled kernels (about 0.5 s; about 10 s
once after an install, when they are compiled) before its first run; past it the session goes on (documents
queue, nothing is lost)."""
WRITER_READY_TIMEOUT_S: float = 60.0
"""How long opening a session waits for the catalog writer process to have opened the catalog (2-7 s: it imports
tiled); past it the session goes on (documents queue in the spool, nothing is lost)."""

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


def analysis_parameters(analysis: bool | AnalysisParameters | Mapping[str, Any] | None,
                        xrd_instrument: Any = None) -> AnalysisParameters | None:
    """None (analysis off) or the parameters: True → defaults, a dict → defaults with these overrides; the rig's
    `xrd_instrument` (`RigConfig.xrd_instrument`) fills `xrd_instrument` unless the parameters give one."""
    params = _analysis_parameters(analysis)
    if params is not None and xrd_instrument is not None and params.xrd_instrument is None:
        params = params.replace(xrd_instrument=xrd_instrument.to_dict())
    return params


def _analysis_parameters(analysis: bool | AnalysisParameters | Mapping[str, Any] | None) -> AnalysisParameters | None:
    """None (analysis off), defaults (True), the given parameters, or defaults with a dict of overrides."""
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
        analysers: Mapping[str, Any] | None = None,
        signals: Any = None,
        stepped: bool = False,
    ) -> None:
        self.config = rig or RigConfig()
        self.stepped = bool(stepped) and self.config.simulated
        """Simulated rig in lock-step: waits jump its clock (`hotstage.simulated.clock`); what unit tests use."""
        self.signals = signals
        """`hotstage.acquisition.exits.ExitSignals` or None (library use: Python's and bluesky's own signal handling)."""
        self.analysis_parameters = analysis_parameters(analysis, self.config.xrd_instrument)
        self.analysis_timeout = analysis_timeout
        self.analysers = analysers
        """Stream name → analyser class for the live analysis (default `DEFAULT_ANALYSERS`; module-level classes:
        they are pickled by name into the analysis process)."""
        self.analysis: LiveAnalysis | None = None
        self.bus: DocumentBus | None = None
        """The document bus the RunEngine publishes to; the writer and the analysis are its consumers."""
        self.sink: DocumentCallback | None = None
        """The same bus (the name older code used for the serialized writer sink)."""
        self.sample = sample
        self.data_dir = data_dir
        self.progress = progress
        self.live_callbacks = list(live_callbacks)
        self.catalog = catalog
        self._catalog_file: tuple[int, int] | None = None
        self.rig: Any = None
        self.RE: RunEngine | None = None
        self.writer: CatalogWriter | None = None
        self.safety: Any = None
        """The furnace suspenders of every run (`hotstage.plans.suspenders.FurnaceSafety`)."""
        self.heater_off: bool | None = None
        """After closing: True = heater confirmed off by read-back, False = could not be confirmed, None = no rig."""
        self.stored: bool | None = None
        """After closing: the catalog writer's close result (True: every document stored; None: no writer)."""
        self.last_run_uid: str | None = None
        self.last_stop: dict[str, Any] | None = None
        """The stop document of the last run (None while it runs, or if it never got one)."""
        self._made_safe = False
        self._stack = ExitStack()

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> Session:
        try:
            with self._shielded():
                self._open()
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    def _shielded(self) -> AbstractContextManager[Any]:
        """Signals wait for the next checkpoint within (opening, draining, closing); see the module docstring."""
        return self.signals.shielded() if self.signals is not None else nullcontext()

    def _checkpoint(self) -> None:
        """Raise `hotstage.acquisition.exits.Interrupted` here if a signal arrived (between two steps of opening)."""
        if self.signals is not None:
            self.signals.checkpoint()

    def _close(self) -> None:
        """Abort a paused run, make the furnace safe (confirmed), then drain and close everything (module doc)."""
        with self._shielded():
            if self.RE is not None and self.RE.state == "paused":
                from hotstage.plans.safety import abort_if_paused

                try:
                    abort_if_paused(self.RE, reason=self._interrupt_reason("the session was closed while the run "
                                                                          "was paused"))
                except Exception:  # noqa: BLE001 - the furnace must still be made safe below
                    log.exception("could not abort the paused run")
            self._make_safe()
            self._stack.close()

    def _interrupt_reason(self, default: str) -> str:
        first = self.signals.first if self.signals is not None else None
        return first.reason if first is not None else default

    def _open(self) -> None:
        """Open the rig first (a dead instrument fails fast), then the catalog, interlocks and storage, the analysis,
        the RunEngine; then freeze the objects alive so far out of the cyclic garbage collector until the session
        closes (`_freeze_startup`). Storage is open before any plan runs; `_checkpoint` between the steps."""
        self._stack.callback(gc.unfreeze)  # registered first: runs last, once everything else is closed
        self.rig = self._stack.enter_context(self._make_rig())
        self._checkpoint()
        if self.catalog is None:
            self.catalog = open_catalog(self.data_dir)
        self._catalog_file = _catalog_file_id(self.catalog)
        from hotstage.acquisition.interlocks import arm_furnace_interlocks  # TLIMIT + guardian; before _make_safe (its doc)

        arm_furnace_interlocks(self._stack, self.config, self.rig, self.catalog)
        self._stack.callback(self._make_safe)  # at close it has run already (`_close`); here for the doc's order
        self._checkpoint()
        self._flush_leftover_spool()
        # the writer process starts now and the analysis process beside it (each imports for seconds); the
        # writer's readiness is awaited once both are under way
        self.writer = CatalogWriter(self.catalog, ready_timeout=0)
        self._stack.callback(self._close_writer)
        self.bus = DocumentBus()
        self.bus.attach(self.writer)
        self.sink = self.bus
        self._checkpoint()
        if self.analysis_parameters is not None:
            self.analysis = LiveAnalysis(self.bus.derived_sink, self.analysis_parameters, analysers=self.analysers)
            self.bus.attach(self.analysis, derived=False)  # raw documents only: never its own output
            self._stack.callback(self.analysis.close)  # runs before writer.close (LIFO)
            if not self._wait_ready(self.analysis, ANALYSIS_READY_TIMEOUT_S):
                log.warning("live analysis not ready after %.0f s; runs go on and their documents are queued",
                            ANALYSIS_READY_TIMEOUT_S)
        if not self._wait_ready(self.writer, WRITER_READY_TIMEOUT_S):
            log.warning("catalog writer not ready after %.0f s; documents queue meanwhile", WRITER_READY_TIMEOUT_S)
        self.RE = RunEngine({}, call_returns_result=False)
        if self.stepped:
            self.rig.install_stepped_sleep(self.RE)  # plan sleeps jump the simulated clock (lock-step)
        if self.signals is not None:
            # a signal aborts the run at once (bluesky's SigintHandler would pause it and leave the run open)
            self.RE.context_managers = [self.signals.run_engine_guard]
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
        self.RE.subscribe(self.bus)  # storage and analysis: one subscription, every document published once
        self.RE.subscribe(self._track)
        for callback in self.live_callbacks:
            self.RE.subscribe(callback)
        if self.progress:
            self.RE.subscribe(_never_raises(ProgressBar()))
        self._checkpoint()
        self._freeze_startup()

    def _wait_ready(self, consumer: Any, timeout: float) -> bool:
        """``consumer.wait_ready`` (the live analysis or the catalog writer) in short slices, with a checkpoint
        after each (a signal is not kept waiting); False past ``timeout`` or once the consumer has died."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if consumer.wait_ready(max(0.0, min(0.2, remaining))):
                return True
            self._checkpoint()
            if remaining <= 0 or not consumer.alive:
                return False

    def reading_catalog(self) -> Any:
        """The catalog to read back what this session stored.

        If ``catalog.db`` was deleted or replaced during the session, the writer re-created the runs in a new file,
        but this process's client still reads the old, unlinked one: then a new client is opened (and closed with
        the session)."""
        now = _catalog_file_id(self.catalog)
        if now is not None and now != self._catalog_file:
            fresh = catalog_location(self.catalog).open()
            self._stack.callback(fresh.context.close)
            self.catalog, self._catalog_file = fresh, now
        return self.catalog

    def _track(self, name: str, doc: dict) -> None:
        """RunEngine subscriber: remember the last run's uid and stop document (for what the CLI reports)."""
        if name == "start":
            self.last_run_uid, self.last_stop = doc["uid"], None
        elif name == "stop" and doc.get("run_start") == self.last_run_uid:
            self.last_stop = doc

    def _close_writer(self) -> None:
        """Drain and close the catalog writer; `stored` keeps whether every document reached the catalog."""
        assert self.writer is not None
        self.stored = bool(self.writer.close())

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
        from hotstage.plans.suspenders import DEFAULT_OVER_TEMPERATURE_MARGIN_C, install_furnace_suspenders

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
        from hotstage.acquisition.storage.spool import default_spool_dir, flush_spool, pending_runs

        directory = default_spool_dir(catalog_location(self.catalog))
        if pending_runs(directory):
            for r in flush_spool(self.catalog, directory):
                log.warning("spool: run %s from an earlier session: %s (%d documents)", r.run_uid, r.status,
                            r.documents)

    def _make_rig(self) -> Any:
        """The simulated rig by default; real instruments when the rig TOML says `kind = "visa"`."""
        if self.config.simulated:
            from hotstage.simulated.rig import SimulatedRig

            return SimulatedRig(sample=self.sample, time_scale=self.config.time_scale, stepped=self.stepped)
        from hotstage.acquisition.hardware import HardwareRig

        return HardwareRig(self.config)

    def _make_safe(self) -> None:
        """Heater off, confirmed by read-back, whatever happened (once per close); if it cannot be confirmed, one
        loud CRITICAL line (`hotstage.plans.safety.heater_not_confirmed`: check the furnace by hand). Never raises."""
        if self._made_safe or self.rig is None or getattr(self.rig, "furnace", None) is None:
            return
        self._made_safe = True
        from hotstage.plans.safety import ensure_heater_off, heater_not_confirmed

        try:
            ensure_heater_off(self.rig.furnace)
        except Exception as exc:  # noqa: BLE001 - must not mask the original error, but must be seen
            self.heater_off = False
            heater_not_confirmed(self.rig.furnace, exc)
        else:
            self.heater_off = True

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
        from hotstage.plans.insitu import insitu_ramp

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
        """Run a plan; the analysis is drained and storage flushed afterwards whether it succeeded or not.

        With `signals`: a signal during the plan aborts it (stop document "abort", reason naming the signal); once
        the documents are drained `Interrupted` is raised (it replaces the RunEngine's RunEngineInterrupted)."""
        assert self.RE is not None and self.writer is not None
        self._made_safe = False  # the heater may be switched on by this plan
        self._checkpoint()
        try:
            uids = self.RE(plan)
        finally:
            with self._shielded():
                if self.signals is not None and self.signals.received and self.RE.state == "paused":
                    from hotstage.plans.safety import abort_if_paused

                    abort_if_paused(self.RE, reason=self._interrupt_reason("interrupted"))
                self.wait_for_analysis()
                self.writer.flush()
            self._checkpoint()
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


def _catalog_file_id(catalog: Any) -> tuple[int, int] | None:
    """(device, inode) of an embedded catalog's ``catalog.db``; None for a server or when the file is missing."""
    location = catalog_location(catalog)
    if location.data_dir is None:
        return None
    try:
        st = os.stat(Path(location.data_dir) / CATALOG_DB)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _never_raises(callback: DocumentCallback) -> DocumentCallback:
    """A display callback whose failure (a terminal gone after SIGHUP: OSError) must not fail the run."""

    def call(name: str, doc: dict) -> None:
        try:
            callback(name, doc)
        except Exception as exc:  # noqa: BLE001 - the progress display is not worth a failed run
            log.debug("progress display: %s", exc)

    return call


def sample_metadata(sample: Any) -> dict[str, Any]:
    """The `sample` entry of start metadata: name, composition and CsPbI3 weight fraction."""
    x = float(sample.cspbi3_wt_frac)
    return {
        "name": sample.name,
        "cspbi3_wt_frac": x,
        "composition": {"CsPbI3": x, "agZIF-62": round(1.0 - x, 12)},
        "seed": getattr(sample, "seed", None),
    }
