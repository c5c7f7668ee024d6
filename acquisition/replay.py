"""Replay: run the live analysis again on a stored raw run and write a new derived run (DESIGN.md, "Data flow").

    catalog raw run ─► run.documents() ─► the same LiveAnalysis ─► a new derived run (mode "replay")

`replay(catalog, uid, params)` reads the raw run's documents from the catalog (``BlueskyRun.documents()``, the
json-seq export `hotstage.acquisition.storage` registers) in their stored order and feeds them, in that order, to a
`LiveAnalysis` in its own analysis process — the same code, the same single-threaded BLAS and the same event order
as live, so the sequential, warm-started phase fits take the same path and the same parameters give the same
numbers as the live derived run (tests/test_replay.py checks it within float tolerance).

Recorded runs outside a catalog (tests/data/*.jsonl, one ``[name, doc]`` JSON array per line, arrays as lists) go
through `load_jsonl` and `replay_documents` with any sink (a list's ``append``, a CatalogWriter, …);
`save_jsonl` writes such a file from any documents.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


from hotstage.acquisition.jsonl import Document, load_jsonl, save_jsonl
from hotstage.analysis.live import AnalysisParameters, LiveAnalysis

__all__ = ["load_jsonl", "save_jsonl", "replay_documents", "replay", "parameters_of"]


def parameters_of(params: AnalysisParameters | Mapping[str, Any] | None) -> AnalysisParameters:
    """AnalysisParameters from None (defaults), a dict of overrides, or AnalysisParameters."""
    if params is None:
        return AnalysisParameters()
    if isinstance(params, AnalysisParameters):
        return params
    return AnalysisParameters().replace(**dict(params))


def replay_documents(docs: Iterable[Document], sink: Any,
                     params: AnalysisParameters | Mapping[str, Any] | None = None, *, process: bool = True,
                     timeout: float | None = None) -> list[str]:
    """Analyse raw documents (in the order given) as the live analysis would; derived uids, one per raw run.

    ``process=True`` (default) analyses in a separate process exactly as live; ``process=False`` in a thread.
    """
    live = LiveAnalysis(sink, parameters_of(params), mode="replay", process=process,
                        name="hotstage-replay-analysis", warn_backlog=10**9)
    raw_uids: list[str] = []
    try:
        for name, doc in docs:
            if name == "start":
                raw_uids.append(doc["uid"])
            live(name, doc)
    finally:
        live.close(timeout)
    return [u for u in (live.derived_uid(r) for r in raw_uids) if u is not None]


def replay(catalog: Any, uid: str, params: AnalysisParameters | Mapping[str, Any] | None = None, *,
           writer: Any = None, timeout: float | None = None) -> str:
    """Re-analyse the stored raw run `uid` (or a unique prefix) into a new derived run; returns its uid.

    The derived run goes through `writer` (a CatalogWriter) if given, else through a CatalogWriter opened on
    `catalog` and closed (everything stored) before returning.
    """
    from hotstage.acquisition.storage import CatalogWriter
    from hotstage.acquisition.summary import find_run

    run = find_run(catalog, uid)
    start = run.metadata["start"]
    if "derived_from" in start:
        raise ValueError(f"run {start['uid']} is a derived run (of {start['derived_from']}); replay its raw run")
    own = writer is None
    if own:
        writer = CatalogWriter(catalog)
    try:
        uids = replay_documents(run.documents(), writer, params, timeout=timeout)
    finally:
        if own:
            writer.close()
        else:
            writer.flush()
    if not uids:
        raise RuntimeError(f"replay of {start['uid']} produced no derived run (see the log)")
    return uids[0]
