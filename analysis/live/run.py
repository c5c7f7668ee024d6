"""One derived run: the raw run's documents in (in order), the derived run's documents out (to a sink).

`DerivedRun(raw_start, params, sink)` opens the derived run at once (its start document goes to the sink), builds
an analyser per analysed raw stream from that stream's descriptor, turns each raw event into one derived event,
and on the raw stop emits the one-event ``summary`` stream and the derived stop. Documents are made with
event-model's ``compose_run`` (validated).

Derived run contract (DESIGN.md, "Contracts a user relies on / Derived run"):

* start: ``derived_from`` = raw run uid, ``analyses`` = [{name, version, parameters}] (version = the hotstage
  version), ``plan_name`` = "live_analysis" or "replay_analysis" (``mode`` = "live"/"replay"), the raw run's
  ``sample`` and ``program`` copied (so a catalog search on the sample finds both runs), ``parameters`` (all).
* streams ``phase_fractions``, ``thz_derivative``, ``pl_fit`` (one event per raw xrd/thz/pl event; keys in
  `hotstage.analysis.live.modalities`), each event also carrying ``temperature`` (the analysis temperature, °C: the
  parameter ``temperature_key``, by default the sample temperature at mid-exposure, falling back to
  ``fallback_temperature_key``, then the control temperature), ``furnace_temperature``,
  ``furnace_setpoint``, ``clock_elapsed`` (experiment s), ``raw_seq_num``, ``raw_time`` and ``error``
  (1 when the analysis of this event raised: its values are NaN);
* stream ``summary`` with one event at the raw stop (keys and definitions in `hotstage.analysis.live.onsets`);
* stop: the raw run's exit_status ("success", "abort" or "fail": an analysis of an aborted or failed run never
  says success); ``reason`` says why (``raw run ended abort: <the raw stop's reason>``). A derived run whose
  analyses failed on any event is "fail" (not "success": its values for those events are NaN), its reason naming
  each failing analysis and its count ("analysis failed: thz_derivative 12 of 12 events; first: …"); an aborted
  raw run keeps "abort". A raw run that never sent a stop document (the acquisition died, or the analysis was
  closed first) gives "fail", reason "raw run has no stop document".

The ``truth`` stream of a simulated raw run is never read (only streams with an analyser are).
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import event_model
import numpy as np

from .modalities import DEFAULT_ANALYSERS, StreamAnalyser
from .onsets import SummaryBuilder
from .parameters import AnalysisParameters

__all__ = ["DerivedRun", "hotstage_version", "Sink", "COMMON_KEYS", "derived_exit_status"]

log = logging.getLogger(__name__)
Sink = Callable[[str, dict], Any]
NAN = float("nan")
LAST_RESORT_TEMPERATURE_KEYS = ("exposure_temperature_mid", "furnace_temperature")
"""Tried after the two configured keys: a furnace without a sample sensor, a run recorded before stamps."""

COMMON_KEYS = ("temperature", "furnace_temperature", "furnace_setpoint", "clock_elapsed", "raw_seq_num",
               "raw_time", "error")


def hotstage_version() -> str:
    """The installed hotstage version (recorded with every analysis)."""
    try:
        return importlib.metadata.version("hotstage")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


def _common_keys() -> dict[str, dict[str, Any]]:
    """Data keys every derived modality event carries."""
    num = {"dtype": "number", "shape": [], "source": "raw event"}
    return {
        "temperature": {**num, "units": "degC"}, "furnace_temperature": {**num, "units": "degC"},
        "furnace_setpoint": {**num, "units": "degC"}, "clock_elapsed": {**num, "units": "s"},
        "raw_seq_num": {"dtype": "integer", "shape": [], "source": "raw event"},
        "raw_time": {**num, "units": "s"},
        "error": {"dtype": "integer", "shape": [], "source": "analysis"},
    }


class _Stream:
    """A raw stream being analysed: its analyser and the derived descriptor's compose_event."""

    def __init__(self, analyser: StreamAnalyser, bundle: Any) -> None:
        self.analyser = analyser
        self.bundle = bundle


class DerivedRun:
    """Analyses one raw run's documents and writes the derived run through `sink` (module docstring)."""

    def __init__(self, raw_start: Mapping[str, Any], params: AnalysisParameters, sink: Sink, *,
                 mode: str = "live", analysers: Mapping[str, type[StreamAnalyser]] | None = None) -> None:
        """Open the derived run (emits its start document)."""
        self.raw_uid = str(raw_start["uid"])
        rig_instrument = (raw_start.get("rig") or {}).get("xrd_instrument")
        if params.xrd_instrument is None and rig_instrument:
            # the diffractometer the rig declared for this run (its calibration), unless the parameters name one:
            # a replay then analyses with what the live analysis used
            params = params.replace(xrd_instrument=rig_instrument)
        self.params = params
        self.sink = sink
        self.mode = mode
        self.analysers = dict(DEFAULT_ANALYSERS if analysers is None else analysers)
        self.summary = SummaryBuilder(params)
        self.errors: list[str] = []  # the first 100 messages
        self.error_count = 0
        self.failed: dict[str, int] = {}  # derived stream (or "summary") → events whose analysis raised
        self.analysed: dict[str, int] = {}  # derived stream → events analysed
        self._streams: dict[str, _Stream | None] = {}  # raw descriptor uid → stream (None: not analysed)
        self._bundles: dict[str, Any] = {}
        self.closed = False
        version = hotstage_version()
        pdict = params.to_dict()
        analyses = [
            {"name": cls.stream, "method": cls.analysis, "raw_stream": cls.raw_stream, "version": version,
             "parameters": pdict}
            for cls in self.analysers.values()
        ]
        analyses.append({"name": "summary", "method": "hotstage.analysis.live.onsets.SummaryBuilder",
                         "version": version, "parameters": pdict})
        md: dict[str, Any] = {
            "derived_from": self.raw_uid,
            "analyses": analyses,
            "parameters": pdict,
            "plan_name": f"{mode}_analysis",
            "mode": mode,
            "versions": {"hotstage": version},
        }
        for key in ("sample", "program", "simulated", "scan_id"):
            if key in raw_start:
                md[f"raw_{key}" if key == "scan_id" else key] = raw_start[key]
        self.bundle = event_model.compose_run(metadata=md)
        self.uid = self.bundle.start_doc["uid"]
        self.sink("start", self.bundle.start_doc)

    # ------------------------------------------------------------------ documents of the raw run
    def __call__(self, name: str, doc: Mapping[str, Any]) -> None:
        """Feed one raw document (start excluded: it made this object)."""
        if name == "descriptor":
            self.descriptor(doc)
        elif name == "event":
            self.event(doc)
        elif name == "event_page":
            for ev in event_model.unpack_event_page(doc):  # type: ignore[arg-type]
                self.event(ev)
        elif name == "stop":
            self.stop(doc)

    def descriptor(self, doc: Mapping[str, Any]) -> None:
        """Build the analyser of an analysed raw stream (derived descriptor emitted with its first event)."""
        cls = self.analysers.get(doc.get("name", ""))
        if cls is None:
            self._streams[doc["uid"]] = None
            return
        try:
            analyser = cls(self.params, doc)
        except Exception as exc:  # noqa: BLE001 - a bad descriptor must not stop the other analyses
            self._error(f"{cls.stream}: cannot analyse raw stream {doc.get('name')!r}: {exc!r}", cls.stream)
            self._streams[doc["uid"]] = None
            return
        self._streams[doc["uid"]] = _Stream(analyser, None)

    def _descriptor_bundle(self, analyser: StreamAnalyser) -> Any:
        """The derived stream's descriptor (emitted once per derived stream)."""
        if analyser.stream not in self._bundles:
            keys = {**analyser.data_keys(), **_common_keys()}
            bundle = self.bundle.compose_descriptor(
                name=analyser.stream, data_keys=keys, configuration=analyser.configuration() or None,
                object_keys={analyser.stream: sorted(keys)},
            )
            self.sink("descriptor", bundle.descriptor_doc)
            self._bundles[analyser.stream] = bundle
        return self._bundles[analyser.stream]

    def event(self, doc: Mapping[str, Any]) -> None:
        """Analyse one raw event of an analysed stream; failures give NaN values and error = 1."""
        stream = self._streams.get(doc["descriptor"])
        if stream is None:
            return
        analyser = stream.analyser
        data = doc["data"]
        error = False
        try:
            derived = analyser.process(data)
        except Exception as exc:  # noqa: BLE001 - logged and recorded; the other analyses carry on
            error = True
            self._error(f"{analyser.stream}: raw event seq_num {doc.get('seq_num')}: {exc!r}", analyser.stream)
            derived = analyser.failed()
            try:
                analyser.recover()
            except Exception:  # noqa: BLE001
                log.exception("%s: recover() failed", analyser.stream)
        for key in (self.params.temperature_key, self.params.fallback_temperature_key, *LAST_RESORT_TEMPERATURE_KEYS):
            temperature = _value(data, key)
            if math.isfinite(temperature):
                break
        derived.update(
            temperature=temperature,
            furnace_temperature=_value(data, "furnace_temperature"),
            furnace_setpoint=_value(data, "furnace_setpoint"),
            clock_elapsed=_value(data, self.params.time_key),
            raw_seq_num=int(doc.get("seq_num", 0)),
            raw_time=float(doc.get("time", NAN)),
            error=int(error),
        )
        self.analysed[analyser.stream] = self.analysed.get(analyser.stream, 0) + 1
        bundle = self._descriptor_bundle(analyser)
        now = time.time()
        event = bundle.compose_event(data=derived, timestamps={k: now for k in derived}, time=now)
        self.sink("event", event)
        self.summary.add(analyser.stream, temperature, derived, error)

    def stop(self, raw_stop: Mapping[str, Any] | None, reason: str = "") -> None:
        """Emit the summary event and the derived stop (once)."""
        if self.closed:
            return
        self.closed = True
        try:
            data = self.summary.compute()
        except Exception as exc:  # noqa: BLE001
            self._error(f"summary: {exc!r}", "summary")
            data = {k: (0 if v["dtype"] == "integer" else NAN) for k, v in self.summary.data_keys().items()}
        data["errors"] = self.error_count
        bundle = self.bundle.compose_descriptor(name="summary", data_keys=self.summary.data_keys(),
                                                object_keys={"summary": sorted(data)})
        self.sink("descriptor", bundle.descriptor_doc)
        now = time.time()
        self.sink("event", bundle.compose_event(data=data, timestamps={k: now for k in data}, time=now))
        status, why = derived_exit_status(raw_stop)
        parts = [p for p in (reason, why) if p]
        if self.error_count:
            if status == "success":
                status = "fail"  # NaN values where the analysis raised: the derived run did not succeed
            parts.append(f"analysis failed: {self.failure_counts()} ({self.error_count} analysis errors); "
                         f"first: {self.errors[0]}")
        self.sink("stop", self.bundle.compose_stop(exit_status=status, reason="; ".join(parts)))

    def failure_counts(self) -> str:
        """`thz_derivative 12 of 12 events, summary failed`: which analyses failed, on how many events (an analysis
        that could not even start on its raw stream, or the summary, just "failed")."""
        return ", ".join(f"{name} {n} of {self.analysed[name]} events" if name in self.analysed else f"{name} failed"
                         for name, n in self.failed.items())

    def _error(self, message: str, stream: str) -> None:
        """Log an analysis failure and count it per stream (the first 100 messages are kept)."""
        log.error("live analysis of run %s: %s", self.raw_uid, message, exc_info=True)
        self.error_count += 1
        self.failed[stream] = self.failed.get(stream, 0) + 1
        if len(self.errors) < 100:
            self.errors.append(message)


def derived_exit_status(raw_stop: Mapping[str, Any] | None) -> tuple[str, str]:
    """The derived run's exit_status and the part of its reason that comes from the raw run's stop document.

    It follows the raw run: success → success; abort/fail → the same, with "raw run ended <status>: <reason>";
    no raw stop → fail (the raw run did not end properly); an unknown status → fail."""
    if raw_stop is None:
        return "fail", ""
    raw_status = str(raw_stop.get("exit_status") or "fail")
    if raw_status == "success":
        return "success", ""
    raw_reason = " ".join(str(raw_stop.get("reason") or "").split())
    status = raw_status if raw_status in ("abort", "fail") else "fail"
    return status, f"raw run ended {raw_status}" + (f": {raw_reason}" if raw_reason else "")


def _value(data: Mapping[str, Any], key: str) -> float:
    """A scalar raw value as float (NaN when absent or not a number)."""
    v = data.get(key)
    try:
        return float(np.asarray(v, dtype=np.float64)) if v is not None else NAN
    except (TypeError, ValueError):
        return NAN
