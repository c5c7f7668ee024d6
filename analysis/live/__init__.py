"""Live analysis: bluesky callbacks that turn a raw in-situ run into a derived run (DESIGN.md, "Data flow").

    from hotstage.analysis.live import LiveAnalysis, AnalysisParameters
    live = LiveAnalysis(sink=catalog_writer, params=AnalysisParameters(active_threshold=0.2))
    RE.subscribe(live)            # __call__ only enqueues; a worker thread analyses and writes the derived run

`DerivedRun` is the synchronous core (one raw run's documents in order → derived documents to a sink), used by
`LiveAnalysis` and by replay; the derived-run schema is documented in `hotstage.analysis.live.run`, the per-stream keys in
`hotstage.analysis.live.modalities`, the summary's onset definitions in `hotstage.analysis.live.onsets`.
"""

from .callback import LiveAnalysis
from .modalities import DEFAULT_ANALYSERS, PLAnalyser, StreamAnalyser, THzAnalyser, XRDAnalyser
from .onsets import SUMMARY_KEYS, SummaryBuilder
from .parameters import AnalysisParameters, ParameterError, parse_overrides
from .run import COMMON_KEYS, DerivedRun, hotstage_version

__all__ = [
    "AnalysisParameters", "COMMON_KEYS", "DEFAULT_ANALYSERS", "DerivedRun", "LiveAnalysis", "PLAnalyser",
    "ParameterError", "SUMMARY_KEYS", "StreamAnalyser", "SummaryBuilder", "THzAnalyser", "XRDAnalyser",
    "hotstage_version", "parse_overrides",
]
