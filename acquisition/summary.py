"""Short summaries of stored runs for the CLI (`demo`, `show`, `runs`), read back from the catalog.

Everything here reads the catalog like any user would (plain Tiled client, start/stop metadata, stream
columns), so what the CLI prints is what is stored, not what the session remembers.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

import numpy as np
from tiled.queries import Key, Like

TEMPERATURE_KEY = "furnace_temperature"
TRUTH_PHASES = ("CsPbI3-gamma", "CsPbI3-delta", "CsPbI3-beta", "CsPbI3-alpha", "CsI")


def find_run(catalog: Any, uid: str) -> Any:
    """The run with this uid, or the only run whose uid starts with it."""
    try:
        return catalog[uid]
    except KeyError:
        pass
    matches = list(catalog.search(Like("start.uid", f"{uid}%")).keys()) if uid else []
    if len(matches) == 1:
        return catalog[matches[0]]
    if not matches:
        raise ValueError(f"no run with uid {uid!r} in the catalog")
    raise ValueError(f"uid prefix {uid!r} matches {len(matches)} runs; give more characters")


def list_runs(catalog: Any, sample: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """Newest runs first, one row each (uid, start time, plan, exit status, sample name)."""
    if sample:
        catalog = catalog.search(Key("start.sample.name") == sample)
    n = len(catalog)
    rows = []
    for uid, run in reversed(list(catalog.items()[max(0, n - limit):])):
        start = run.metadata.get("start", {})
        stop = run.metadata.get("stop") or {}
        rows.append(
            {
                "uid": uid,
                "start": _utc(start.get("time")),
                "plan": str(start.get("plan_name", "?")),
                "exit_status": str(stop.get("exit_status", "running")),
                "sample": str((start.get("sample") or {}).get("name", "")),
                "derived_from": start.get("derived_from"),
            }
        )
    return rows


def summarise_run(run: Any) -> dict[str, Any]:
    """Plan, status, sample, program, events per stream, temperature range and the truth at the end."""
    start = run.metadata.get("start", {})
    stop = run.metadata.get("stop") or {}
    streams: dict[str, Any] = {}
    times, temperatures = [], []
    for name in run:
        stream = run[name]
        keys = list(stream)
        t = np.asarray(stream["time"].read(), dtype=float) if "time" in keys else np.empty(0)
        streams[name] = {"events": int(t.size), "keys": keys}
        if TEMPERATURE_KEY in keys and t.size:
            temperatures.append(np.asarray(stream[TEMPERATURE_KEY].read(), dtype=float))
            times.append(t)
    summary: dict[str, Any] = {
        "uid": start.get("uid"),
        "plan": start.get("plan_name", "?"),
        "exit_status": stop.get("exit_status", "running"),
        "reason": stop.get("reason", ""),
        "duration_s": float(stop.get("time", start.get("time", 0.0)) - start.get("time", 0.0)),
        "sample": (start.get("sample") or {}).get("name", ""),
        "program": _program_text(start.get("program")),
        "streams": streams,
    }
    if temperatures:
        allt, allt_time = np.concatenate(temperatures), np.concatenate(times)
        summary["temperature_C"] = {
            "min": float(allt.min()),
            "max": float(allt.max()),
            "final": float(allt[np.argmax(allt_time)]),
        }
    if "truth" in streams and streams["truth"]["events"]:
        summary["truth"] = _truth_text(run["truth"], streams["truth"]["keys"])
    return summary


def _truth_text(stream: Any, keys: list[str]) -> str:
    """The simulator's final phase make-up of the CsPbI3, for the human summary of a simulated run."""
    parts = []
    for phase in TRUTH_PHASES:
        col = _truth_column(keys, f"frac_{phase}_of_cspbi3")
        if col:
            value = float(np.asarray(stream[col].read())[-1])
            if value >= 0.005:
                parts.append(f"{phase} {100 * value:.1f} %")
    return "final CsPbI3 (simulator truth): " + ", ".join(parts) if parts else ""


def _truth_column(keys: list[str], key: str) -> str | None:
    """The stored column of a truth key (devices prefix their signal names)."""
    for k in keys:
        if k == key or k.endswith("_" + key):
            return k
    return None


def _program_text(program: Any) -> str:
    """'25 → 350 °C at 10 °C/min, hold 10 min, …' from the program metadata."""
    if not isinstance(program, dict):
        return ""
    parts = [f"start {program.get('start_C', '?')} °C"]
    for seg in program.get("segments", []):
        if seg.get("kind") == "hold":
            parts.append(f"hold {seg.get('minutes')} min")
        else:
            parts.append(f"{seg.get('kind')} to {seg.get('to_C')} °C at {seg.get('rate_C_per_min')} °C/min")
    return ", ".join(parts)


def _utc(t: float | None) -> str:
    if not t:
        return "?"
    return _dt.datetime.fromtimestamp(float(t), tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


# -- derived runs (live analysis) -------------------------------------------------------------------
ONSET_KEYS = ("active_onset_detected_C", "active_onset_extrapolated_C", "active_onset_extrapolated_su_C",
              "zni_onset_detected_C", "zni_onset_extrapolated_C", "zni_onset_extrapolated_su_C", "pl_max_C",
              "pl_max_heating_C", "pl_max_intensity", "max_active_fraction", "n_heating_segments", "errors")


def find_derived(catalog: Any, raw_uid: str) -> str | None:
    """The newest derived run of a raw run (its start's `derived_from`), or None."""
    uids = list(catalog.search(Key("start.derived_from") == raw_uid).keys())
    if not uids:
        return None
    return max(uids, key=lambda u: catalog[u].metadata["start"].get("time", 0.0))


def summarise_derived(run: Any) -> dict[str, Any]:
    """The derived run's uid, origin, status, events per stream, summary onsets and final weight fractions."""
    start = run.metadata.get("start", {})
    stop = run.metadata.get("stop") or {}
    out: dict[str, Any] = {
        "uid": start.get("uid"),
        "derived_from": start.get("derived_from"),
        "mode": start.get("mode"),
        "exit_status": stop.get("exit_status", "running"),
        "reason": stop.get("reason", ""),
        "streams": dict(stop.get("num_events") or {}),
        "analyses": [a.get("name") for a in start.get("analyses", [])],
    }
    if "summary" in run:
        ds = run["summary"].read()
        values = {k: _plain(ds[k].values[0]) for k in ds.data_vars}
        out["summary"] = {k: values.get(k) for k in ONSET_KEYS if k in values}
        out["final_weight_fractions"] = {k[len("final_wf_"):]: v for k, v in values.items()
                                         if k.startswith("final_wf_")}
    return out


def _plain(v: Any) -> Any:
    """numpy scalar → float/int, NaN → None (JSON-friendly)."""
    v = v.item() if hasattr(v, "item") else v
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def derived_text(d: dict[str, Any]) -> list[str]:
    """The human lines about a derived run (CLI `demo`, `run`, `replay`)."""
    s = d.get("summary") or {}

    def temp(key: str) -> str:
        v = s.get(key)
        return "not reached" if v is None else f"{v:.1f} °C"

    def onset(name: str) -> str:
        """'detected 135.3 °C, extrapolated 159.7 ± 1.5 °C' (hotstage.analysis.live.onsets)."""
        ext, su = s.get(f"{name}_onset_extrapolated_C"), s.get(f"{name}_onset_extrapolated_su_C")
        text = f"detected {temp(f'{name}_onset_detected_C')}"
        if ext is None:
            return text
        return text + (f", extrapolated {ext:.1f} ± {su:.1f} °C" if su is not None else f", extrapolated {ext:.1f} °C")

    lines = [
        f"derived  {d['uid']}  ({d.get('mode')} analysis of {d.get('derived_from')}, {d['exit_status']}"
        + (f"; {d['reason']}" if d.get("reason") else "") + ")",
        f"onsets   active phase (γ+β+α): {onset('active')};  Zn–I bands: {onset('zni')};  "
        f"PL maximum: {temp('pl_max_C')}",
    ]
    wf = {k: v for k, v in (d.get("final_weight_fractions") or {}).items() if v is not None and v >= 0.005}
    if wf:
        lines.append("phases   final (fit, crystalline part): " + ", ".join(
            f"{k} {100 * v:.1f} %" for k, v in sorted(wf.items(), key=lambda kv: -kv[1])))
    return lines
