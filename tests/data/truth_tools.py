"""Helpers shared by tests/test_live.py and tests/test_replay.py (loaded by path): pair derived events with the simulator's truth.

Truth pairing: on a simulated rig each modality event is followed by one `truth` event (plans/insitu.py), so the
truth-stream entry of a derived event is the first truth event whose time is ≥ the raw event's time (`raw_time`).
That entry is read after the acquisition; a pattern shows the sample at mid-exposure. For phase fractions the
tests therefore use the *pattern truth* — the XRD synthesizer's `last_truth` recorded for each xrd event
(`record_pattern_truth`) — and the truth stream for onsets and PL (slowly varying or robust to a ~1 °C lag).

Normalisation of the true phase fractions: the simulator's weight fractions renormalised over the crystalline
phases offered to the fit (δ, γ, β, α-CsPbI3 and CsI) — the glass and the "poorly crystalline" material have no
Bragg peaks, so Hill–Howard fractions over the offered phases are what a whole-pattern fit recovers (as in
tests/test_phase_quant.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from hotstage.analysis.live.parameters import AnalysisParameters
from hotstage.analysis.onsets import onset

PHASES = ("CsPbI3-delta", "CsPbI3-gamma", "CsPbI3-beta", "CsPbI3-alpha", "CsI")
ACTIVE = ("CsPbI3-gamma", "CsPbI3-beta", "CsPbI3-alpha")



def split(docs: Iterable[tuple[str, dict]]) -> tuple[dict, dict[str, list[dict]], dict]:
    """(start, {stream: [event data + time]}, stop) of one run's documents."""
    start, stop, names, streams = {}, {}, {}, {}
    for name, doc in docs:
        if name == "start":
            start = doc
        elif name == "stop":
            stop = doc
        elif name == "descriptor":
            names[doc["uid"]] = doc["name"]
            streams.setdefault(doc["name"], [])
        elif name == "event":
            streams[names[doc["descriptor"]]].append({**doc["data"], "time": doc["time"], "seq_num": doc["seq_num"]})
    return start, streams, stop


def truth_for(raw_times: Iterable[float], truth: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The truth event following each raw event time."""
    t = np.array([e["time"] for e in truth])
    out = []
    for rt in raw_times:
        i = int(np.searchsorted(t, rt, side="left"))
        out.append(truth[min(i, len(truth) - 1)])
    return out


def record_pattern_truth(session: Any) -> dict[str, dict[str, float]]:
    """Subscribe a callback keeping the XRD synthesizer's truth of every xrd event (str(seq_num) → truth)."""
    synth = session.rig.world.synthesizers["xrd"]
    names: dict[str, str] = {}
    out: dict[str, dict[str, float]] = {}

    def callback(name: str, doc: dict) -> None:
        if name == "descriptor":
            names[doc["uid"]] = doc["name"]
        elif name == "event" and names.get(doc["descriptor"]) == "xrd":
            out[str(doc["seq_num"])] = {k: float(v) for k, v in synth.last_truth.items()}

    session.RE.subscribe(callback)
    return out


def pattern_errors(derived: list[Mapping[str, Any]], pattern_truth: Mapping[str, Mapping[str, float]],
                   present: float = 0.05) -> list[tuple[float, str, float]]:
    """(temperature, phase, fitted − true) against the pattern truth, phases ≥ `present` of the crystalline part."""
    out = []
    for d in derived:
        t = pattern_truth[str(int(d["raw_seq_num"]))]
        for p, w in true_fractions(t, prefix="wf_").items():
            if w >= present:
                out.append((float(d["temperature"]), p, float(d[f"wf_{p}"]) - w))
    return out


def true_fractions(truth: Mapping[str, Any], prefix: str = "truth_wf_") -> dict[str, float]:
    """True weight fractions over the crystalline phases offered (module docstring)."""
    w = {p: float(truth[f"{prefix}{p}"]) for p in PHASES}
    total = sum(w.values())
    return {p: v / total for p, v in w.items()}


def phase_errors(derived: list[Mapping[str, Any]], truth: list[Mapping[str, Any]],
                 present: float = 0.05) -> list[tuple[float, str, float]]:
    """(temperature, phase, fitted − true) for every phase present at ≥ `present` of the crystalline part."""
    out = []
    for d, tr in zip(derived, truth_for([d["raw_time"] for d in derived], truth)):
        for p, w in true_fractions(tr).items():
            if w >= present:
                out.append((float(d["temperature"]), p, float(d[f"wf_{p}"]) - w))
    return out


def true_active_onset(derived: list[Mapping[str, Any]], truth: list[Mapping[str, Any]], threshold: float = 0.10,
                      m: int = 3) -> float | None:
    """The active-phase onset by the analysis' definition, on the true fractions at the same events/temperatures."""
    tr = truth_for([d["raw_time"] for d in derived], truth)
    act = np.array([sum(true_fractions(t)[p] for p in ACTIVE) for t in tr])
    temps = np.array([d["temperature"] for d in derived])
    return onset(temps, act, 1.0, k=threshold, m=m, refine=True).temperature


def true_zni_onset(derived: list[Mapping[str, Any]], truth: list[Mapping[str, Any]],
                   params: AnalysisParameters | None = None) -> tuple[float | None, float]:
    """The Zn–I onset by the analysis' definition on the noise-free true signal; also the calibration slope.

    True signal = slope · (z − z_ref): z the simulator's Zn–I density at each THz event, z_ref its mean over the
    reference spectra, slope the least-squares proportionality (through 0) between the measured Zn–I signal and
    z − z_ref — i.e. the band amplitude the analysis would measure without noise (−d²A/dν² at the band centre is
    linear in z). Same σ (the measured one), same temperatures, and the number of reference spectra, k and m of
    the analysis parameters the run was analysed with (`params`, default the analysis defaults), so the two
    definitions cannot drift apart.
    """
    p = AnalysisParameters() if params is None else params
    n_ref, k, m = p.zni_reference_spectra, p.zni_k, p.zni_m
    tr = truth_for([d["raw_time"] for d in derived], truth)
    z = np.array([float(t["truth_zni_density"]) for t in tr])
    dz = z - z[:n_ref].mean()
    sig = np.array([d["zni_signal"] for d in derived], dtype=float)
    sigma = np.array([d["zni_sigma"] for d in derived], dtype=float)
    ok = np.isfinite(sig)
    slope = float(np.sum(sig[ok] * dz[ok]) / np.sum(dz[ok] ** 2))
    temps = np.array([d["temperature"] for d in derived])
    true_signal = np.where(np.arange(z.size) < n_ref, np.nan, slope * dz)
    return onset(temps, true_signal, np.where(ok, sigma, np.inf), k=k, m=m, refine=True).temperature, slope


def assert_phase_fractions(run: Mapping[str, Any], label: str = "") -> None:
    """Phases ≥ 5 wt % within ±3 wt % of their pattern's truth: 95 % of comparisons inside ±3, all inside ±3.5."""
    _, streams, _ = run["derived"]
    errors = pattern_errors(streams["phase_fractions"], run["pattern_truth"])
    assert len(errors) >= 20
    worst = max(errors, key=lambda e: abs(e[2]))
    print(f"{label}worst phase-fraction error {100 * worst[2]:+.2f} wt % ({worst[1]} at {worst[0]:.1f} °C)")
    within = sum(abs(e[2]) <= 0.03 for e in errors) / len(errors)
    assert within >= 0.95, (within, worst)
    assert abs(worst[2]) <= 0.035, worst


def assert_active_onset(run: Mapping[str, Any], label: str = "") -> float:
    """Active-phase onset within ±10 °C of the truth onset (same definition); returns the truth onset."""
    _, streams, _ = run["derived"]
    _, raw, _ = run["raw"]
    (summary,) = streams["summary"]
    truth = true_active_onset(streams["phase_fractions"], raw["truth"])
    print(f"{label}active onset {summary['active_onset_detected_C']:.1f} °C (truth {truth})")
    assert truth is not None and abs(summary["active_onset_detected_C"] - truth) <= 10.0, (summary["active_onset_detected_C"], truth)
    return truth


def assert_zni_onset(run: Mapping[str, Any], label: str = "") -> float:
    """Zn–I onset within ±10 °C of the truth onset (same definition, positive calibration); returns the truth."""
    start, streams, _ = run["derived"]
    _, raw, _ = run["raw"]
    (summary,) = streams["summary"]
    params = AnalysisParameters.from_dict(start["parameters"])  # what the run was analysed with
    truth, slope = true_zni_onset(streams["thz_derivative"], raw["truth"], params)
    print(f"{label}Zn–I onset {summary['zni_onset_detected_C']:.1f} °C (truth {truth})")
    assert slope > 0 and truth is not None and np.isfinite(summary["zni_onset_detected_C"])
    assert abs(summary["zni_onset_detected_C"] - truth) <= 10.0, (summary["zni_onset_detected_C"], truth)
    return truth


def assert_pl_centres(run: Mapping[str, Any]) -> None:
    """PL centre within ±2 nm of the truth stream's wherever the band was fitted (at least 8 fits)."""
    _, streams, _ = run["derived"]
    _, raw, _ = run["raw"]
    fitted = [d for d in streams["pl_fit"] if d["fit_success"]]
    assert len(fitted) >= 8
    truth = truth_for([d["raw_time"] for d in fitted], raw["truth"])
    dev = [abs(d["centre_nm"] - t["truth_pl_centre_nm"]) for d, t in zip(fitted, truth)]
    print(f"PL centre: worst deviation {max(dev):.2f} nm over {len(dev)} fits")
    assert max(dev) <= 2.0, dev
