"""Blind: the live analysis on samples it was not tuned on — other loadings AND other physics parameters.

Each case is a sample TOML (a `[model]` section overriding kinetics, Tg and PL parameters of the simulator) run
through the whole pipeline (Session → SimulatedRig → insitu_ramp → live analysis → derived run in the catalog).
The analysis parameters are the defaults; nothing in the analysis knows the overrides. Tolerances and truth
definitions are those of tests/test_live.py (phases ≥ 5 wt % of the crystalline part within ±3 wt %, with 95 %
of the comparisons inside ±3 and all inside ±3.5 wt %; detected onsets ±10 °C; PL centre ±2 nm).

Extrapolated Zn–I onsets (issue 14 item 4: four blind samples with identical Zn–I kinetics had detected onsets
from 137 to 160 °C, following the loading): within 3 s.u. of the same definition on the true Zn–I density at the
same events (the definition is scale-free, so no calibration is needed); and, on samples with IDENTICAL kinetics and
loadings x = 0.15, 0.3, 0.5, 0.8 (Zn–I signal ∝ 4x(1 − x) = 0.51…1), pairwise within 2 combined s.u. and each
within 3 s.u. of the truth. Those four are made cheaply (the simulator's sample, THz synthesizer and the live THz
analysis and summary, no session: ~1 s instead of ~40 s a run); measured there: extrapolated 156.9–159.6 °C (s.u.
1.4–2.6 °C, truth 159.1 °C; spread 2.7 °C) while the detected onsets span 136.4–148.1 °C (11.7 °C). Over 12 other
seed sets (48 runs): every one within 3 s.u. of the truth, rms error/s.u. 0.86; one set had a pair just beyond 2
combined s.u. (151.3 ± 3.4 vs 161.4 ± 1.9 °C), the rate a 2σ criterion over 6 pairs implies. Through the whole
pipeline (sessions as `blind_run`, same kinetics and loadings, seeds 5–8): extrapolated 157.1 ± 2.5, 158.2 ± 1.6,
159.7 ± 1.5, 158.5 ± 2.1 °C (spread 2.6 °C), detected 151.0, 129.8, 135.3, 141.0 °C (spread 21 °C).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import LOCKSTEP_SCALE
from hotstage.acquisition.config import RigConfig
from hotstage.acquisition.session import Session
from hotstage.plans.program import Hold, Ramp, TemperatureProgram
from hotstage.analysis.live.modalities import THzAnalyser
from hotstage.analysis.live.onsets import SummaryBuilder
from hotstage.analysis.live.parameters import AnalysisParameters
from hotstage.analysis.onsets import extrapolated_onset
from hotstage.simulated.parameters import load_sample
from hotstage.simulated.rig import DEFAULT_EXPOSURES
from hotstage.simulated.sample import CompositeSample, ramp
from hotstage.simulated.synthesis import THzSynthesizer

DATA = Path(__file__).resolve().parent / "data"
_spec = importlib.util.spec_from_file_location("hotstage_truth_tools_blind", DATA / "truth_tools.py")
tt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tt)  # type: ignore[union-attr]

CADENCE = {"xrd": {"every_C": 5.0}, "thz": {"every_C": 5.0}, "pl": {"every_C": 5.0}}

SAMPLES = {
    # lower loading, faster black-phase formation and Zn–I growth, bluer and narrower emission
    "x0.25-fast": """seed = 11
[sample]
name = "(CsPbI3)0.25(agZIF-62)0.75 blind"
cspbi3_wt_frac = 0.25
[model]
forward_prefactor_per_s = 1.4e8
zni_prefactor_per_s = 6.0e4
pl_centre_nm = 700.0
pl_fwhm_nm = 32.0
""",
    # higher loading, slower kinetics, lower Tg, redder and wider emission
    "x0.6-slow": """seed = 23
[sample]
name = "(CsPbI3)0.6(agZIF-62)0.4 blind"
cspbi3_wt_frac = 0.6
[model]
forward_prefactor_per_s = 4.0e7
zni_prefactor_per_s = 3.0e4
tg_glass_C = 280.0
pl_centre_nm = 708.0
pl_fwhm_nm = 40.0
""",
}


@pytest.fixture(scope="module", params=sorted(SAMPLES))
def blind_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Heat the blind sample 100 → 230 °C at 10 °C/min, hold 2 min; analyse live."""
    root = tmp_path_factory.mktemp(request.param)
    (root / "sample.toml").write_text(SAMPLES[request.param])
    sample = load_sample(root / "sample.toml")
    program = TemperatureProgram(100.0, (Ramp(230.0, 10.0), Hold(2.0)), name=f"blind-{request.param}")
    with Session(RigConfig(time_scale=LOCKSTEP_SCALE), sample, root / "data", progress=False,
                 stepped=True) as s:  # as test_live
        pattern_truth = tt.record_pattern_truth(s)
        raw_uid = s.insitu(program, cadence=CADENCE)
        derived_uid = s.derived_uid(raw_uid)
        raw_docs = list(s.catalog[raw_uid].documents())
        derived_docs = list(s.catalog[derived_uid].documents())
    return {"raw": tt.split(raw_docs), "derived": tt.split(derived_docs), "pattern_truth": pattern_truth,
            "name": request.param}


def test_blind_phase_fractions(blind_run: dict[str, Any]) -> None:
    tt.assert_phase_fractions(blind_run, f"{blind_run['name']}: ")


def test_blind_pl_centre(blind_run: dict[str, Any]) -> None:
    tt.assert_pl_centres(blind_run)


def test_blind_active_onset(blind_run: dict[str, Any]) -> None:
    tt.assert_active_onset(blind_run, f"{blind_run['name']}: ")
    (summary,) = blind_run["derived"][1]["summary"]
    assert summary["errors"] == 0


def test_blind_zni_onset(blind_run: dict[str, Any]) -> None:
    """Zn–I onset within ±10 °C of the truth (issue 5: was 138 vs 147 °C for x0.6-slow while the band amplitude
    was the noise-biased maximum over ±2 cm⁻¹; now the value at the band centre, see analysis.live.parameters)."""
    tt.assert_zni_onset(blind_run, f"{blind_run['name']}: ")


def test_blind_zni_extrapolated_onset(blind_run: dict[str, Any]) -> None:
    """The extrapolated Zn–I onset within 3 s.u. of the same definition on the true Zn–I density."""
    (summary,) = blind_run["derived"][1]["summary"]
    thz = blind_run["derived"][1]["thz_derivative"]
    truth = tt.truth_for([d["raw_time"] for d in thz], blind_run["raw"][1]["truth"])
    true_onset = extrapolated_onset([d["temperature"] for d in thz], [t["truth_zni_density"] for t in truth])
    value, su = summary["zni_onset_extrapolated_C"], summary["zni_onset_extrapolated_su_C"]
    print(f"{blind_run['name']}: Zn–I extrapolated onset {value:.1f} ± {su:.1f} °C "
          f"(truth {true_onset.temperature:.1f}), detected {summary['zni_onset_detected_C']:.1f} °C")
    assert 0 < su < 5.0 and abs(value - true_onset.temperature) <= 3 * su


def test_blind_active_extrapolated_onset(blind_run: dict[str, Any]) -> None:
    """The extrapolated active-phase onset within 3 s.u. of the same definition on the true fractions (measured:
    within 0.02 °C, s.u. 0.2–0.3 °C)."""
    (summary,) = blind_run["derived"][1]["summary"]
    pf = blind_run["derived"][1]["phase_fractions"]
    truth = tt.truth_for([d["raw_time"] for d in pf], blind_run["raw"][1]["truth"])
    active = [sum(tt.true_fractions(t)[p] for p in tt.ACTIVE) for t in truth]
    true_onset = extrapolated_onset([d["temperature"] for d in pf], active)
    value, su = summary["active_onset_extrapolated_C"], summary["active_onset_extrapolated_su_C"]
    print(f"{blind_run['name']}: active extrapolated onset {value:.2f} ± {su:.2f} °C "
          f"(truth {true_onset.temperature:.2f}), detected {summary['active_onset_detected_C']:.1f} °C")
    assert 0 < su < 5.0 and abs(value - true_onset.temperature) <= 3 * su


# ------------------------------------------------------------------ identical kinetics, different loadings
IDENTICAL_KINETICS = {0.15: 5, 0.3: 6, 0.5: 7, 0.8: 8}  # loading → seed; Zn–I 1 % progress at ~116 °C
ZNI_PREFACTOR = 6.0e4


def zni_summary(root: Path, loading: float, seed: int) -> tuple[dict[str, Any], float]:
    """(summary, true extrapolated onset) of a 100 → 230 °C ramp at 10 °C/min, THz every 5 °C (the rig's 5 s
    exposure), through the live THz analysis and summary; the sample TOML as `blind_run`'s."""
    path = root / f"x{loading}.toml"
    path.write_text(f"seed = {seed}\n[sample]\nname = \"x{loading} identical kinetics\"\ncspbi3_wt_frac = {loading}\n"
                    f"[model]\nzni_prefactor_per_s = {ZNI_PREFACTOR}\n")
    spec = load_sample(path)
    sample, synth = CompositeSample(spec), THzSynthesizer()
    rng = np.random.default_rng(seed)
    descriptor = {"name": "thz", "data_keys": {"thz_absorbance": {"dims": ["wavenumber"]}},
                  "configuration": {"thz": {"data": {"thz_wavenumber": synth.axis.tolist()},
                                            "data_keys": {"thz_wavenumber": {"dims": ["wavenumber"]}}}}}
    params = AnalysisParameters()
    analyser, summary = THzAnalyser(params, descriptor), SummaryBuilder(params)
    ramp(sample, 100.0, 10.0)
    temps, progress = [], []
    for target in np.arange(100.0, 231.0, 5.0):
        ramp(sample, float(target), 10.0)
        spectrum = synth(sample.state, DEFAULT_EXPOSURES["thz"], rng)
        summary.add("thz_derivative", float(target), analyser.process({"thz_absorbance": spectrum}), False)
        temps.append(float(target))
        progress.append(sample.state.zni_progress)
    return summary.compute(), extrapolated_onset(temps, progress).temperature


def test_identical_kinetics_agree_whatever_the_loading(tmp_path: Path) -> None:
    """Issue 14: the same Zn–I kinetics at four loadings give one extrapolated onset within the uncertainties,
    where the detection (first 3σ crossing) follows the loading."""
    runs = {x: zni_summary(tmp_path, x, seed) for x, seed in IDENTICAL_KINETICS.items()}
    ext = np.array([s["zni_onset_extrapolated_C"] for s, _ in runs.values()])
    su = np.array([s["zni_onset_extrapolated_su_C"] for s, _ in runs.values()])
    detected = np.array([s["zni_onset_detected_C"] for s, _ in runs.values()])
    (truth,) = {round(t, 6) for _, t in runs.values()}  # the kinetics are the same: one true onset
    for x, e, u, d in zip(runs, ext, su, detected):
        print(f"x = {x}: extrapolated {e:.1f} ± {u:.1f} °C, detected {d:.1f} °C (truth {truth:.1f} °C)")
    print(f"spread: extrapolated {np.ptp(ext):.1f} °C, detected {np.ptp(detected):.1f} °C")
    assert np.all((su > 0) & (su < 5.0))
    assert np.all(np.abs(ext - truth) <= 3 * su)
    for i in range(ext.size):
        for j in range(i + 1, ext.size):
            assert abs(ext[i] - ext[j]) <= 2 * math.hypot(su[i], su[j]), (ext, su)
    assert np.ptp(detected) > np.ptp(ext)
