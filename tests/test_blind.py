"""Blind: the live analysis on samples it was not tuned on — other loadings AND other physics parameters.

Each case is a sample TOML (a `[model]` section overriding kinetics, Tg and PL parameters of the simulator) run
through the whole pipeline (Session → SimulatedRig → insitu_ramp → live analysis → derived run in the catalog).
The analysis parameters are the defaults; nothing in the analysis knows the overrides. Tolerances and truth
definitions are those of tests/test_live.py (phases ≥ 5 wt % of the crystalline part within ±3 wt %, with 95 %
of the comparisons inside ±3 and all inside ±3.5 wt %; onsets ±10 °C; PL centre ±2 nm).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from conftest import LOCKSTEP_SCALE
from hotstage.acquisition.config import RigConfig
from hotstage.acquisition.session import Session
from hotstage.plans.program import Hold, Ramp, TemperatureProgram
from hotstage.simulated.parameters import load_sample

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
