"""Behaviour of the simulated composite pinned to Li et al., Nat. Commun. 14, 7612 (2023).

Programs: 10 °C/min ramps (the paper's in-situ rate), sintering = heat to Ts, hold 10 min, cool to 25 °C.
Tolerances are stated in each test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hotstage.simulated.parameters import ModelParameters, SampleConfigError, SampleSpec, load_sample
from hotstage.simulated.sample import PHASES, CompositeSample, hold, ramp

RATE = 10.0  # °C/min


def sample(x: float, **kw: float) -> CompositeSample:
    """A fresh as-milled composite of CsPbI3 weight fraction x."""
    return CompositeSample(SampleSpec.composite(x, **kw))


def sinter(x: float, ts: float, dt: float = 2.0) -> CompositeSample:
    """Heat at 10 °C/min to ts, hold 10 min, cool at 10 °C/min to 25 °C."""
    s = sample(x)
    ramp(s, ts, RATE, dt)
    hold(s, 600.0, dt)
    ramp(s, 25.0, RATE, dt)
    return s


def test_as_milled_mostly_delta_and_fractions_sum_to_one() -> None:
    st = CompositeSample().state
    assert st.cspbi3_wt_frac == 0.4
    assert set(st.weight_fractions) == set(PHASES)
    assert sum(st.weight_fractions.values()) == pytest.approx(1.0, abs=1e-12)
    assert st.fraction_of_cspbi3("CsPbI3-delta") > 0.8
    assert st.weight_fractions["CsI"] > 0 and st.weight_fractions["poorly_crystalline"] > 0
    assert st.active_fraction_of_cspbi3 == 0.0
    assert st.zni_density == 0.0 and st.alloy_thickness_nm == 0.0
    with pytest.raises(TypeError):
        st.weight_fractions["glass"] = 0.0  # type: ignore[index]


def test_pure_cspbi3_alpha_at_350_and_delta_after_cooling() -> None:
    s = sample(1.0)
    ramp(s, 350.0, RATE)
    assert s.state.fraction_of_cspbi3("CsPbI3-alpha") >= 0.8  # "mostly α"
    ramp(s, 25.0, RATE)
    hold(s, 600.0, 5.0)  # some minutes at room temperature, as the paper's samples
    assert s.state.fraction_of_cspbi3("CsPbI3-delta") >= 0.90


def test_40_60_active_phase_onset_near_150C_and_gamma_retained() -> None:
    s = sample(0.4)
    onset = None
    for t in np.arange(26.0, 351.0, 1.0):
        ramp(s, float(t), RATE)
        a = s.state.active_fraction_of_cspbi3
        if t < 130.0:
            assert a < 0.05
        if onset is None and a > 0.05:
            onset = float(t)
        if t >= 165.0:
            assert a > 0.05
    assert onset is not None and abs(onset - 150.0) <= 15.0  # onset 150 ± 15 °C
    ramp(s, 25.0, RATE)
    hold(s, 600.0, 5.0)
    assert s.state.fraction_of_cspbi3("CsPbI3-gamma") >= 0.90


def test_x085_ends_as_gamma_delta_mixture() -> None:
    s = sinter(0.85, 350.0)
    hold(s, 600.0, 5.0)
    st = s.state
    assert st.fraction_of_cspbi3("CsPbI3-gamma") >= 0.15
    assert st.fraction_of_cspbi3("CsPbI3-delta") >= 0.15


def test_black_polymorph_sequence_follows_temperature() -> None:
    s = sample(0.4)
    ramp(s, 170.0, RATE)
    assert s.state.fraction_of_cspbi3("CsPbI3-gamma") > s.state.fraction_of_cspbi3("CsPbI3-beta")
    ramp(s, 240.0, RATE)
    assert s.state.fraction_of_cspbi3("CsPbI3-beta") > 0.5
    ramp(s, 330.0, RATE)
    assert s.state.fraction_of_cspbi3("CsPbI3-alpha") > 0.8


def test_zni_forms_from_110C_and_persists_on_cooling() -> None:
    s = sample(0.4)
    ramp(s, 100.0, RATE)
    assert s.state.zni_progress < 0.01  # ~0 below ~110 °C
    ramp(s, 150.0, RATE)
    z150 = s.state.zni_density
    assert z150 > 0.03
    ramp(s, 350.0, RATE)
    z350 = s.state.zni_density
    assert z350 > 0.5 and z350 >= z150
    previous = z350
    for t in np.arange(340.0, 24.0, -10.0):
        ramp(s, float(t), RATE)
        assert s.state.zni_density >= previous  # never decreases
        previous = s.state.zni_density


def test_alloy_layer_reaches_about_10nm_at_350C() -> None:
    s = sample(0.4)
    ramp(s, 350.0, RATE)
    hold(s, 600.0)
    assert 6.0 <= s.state.alloy_thickness_nm <= 15.0


@pytest.mark.parametrize(("x", "expected_peak"), [(0.85, 225.0), (0.25, 275.0), (0.01, 300.0)])
def test_pl_versus_sintering_temperature_peaks_like_the_paper(x: float, expected_peak: float) -> None:
    grid = np.arange(150.0, 350.1, 12.5)
    intensity = [sinter(x, float(ts), dt=5.0).state.pl.intensity for ts in grid]
    assert abs(grid[int(np.argmax(intensity))] - expected_peak) <= 15.0  # ± 15 °C


def test_highest_pl_at_low_loading() -> None:
    best = {x: max(sinter(x, ts, dt=5.0).state.pl.intensity for ts in (262.5, 275.0, 287.5, 300.0))
            for x in (0.01, 0.05, 0.25, 0.85)}
    assert max(best, key=best.__getitem__) == 0.05


def test_pl_parameters_in_stated_ranges() -> None:
    st = sinter(0.4, 250.0).state
    assert 700.0 <= st.pl.centre_nm <= 720.0
    assert 15.0 <= st.pl.urbach_meV <= 25.0
    assert st.pl.intensity > 0.0
    assert sample(0.85).state.pl.centre_nm > sample(0.05).state.pl.centre_nm  # shifts with loading


def test_tg_falls_with_loading() -> None:
    xs = np.linspace(0.0, 1.0, 11)
    tg = [sample(float(x)).state.tg_C for x in xs]
    assert tg[0] == pytest.approx(290.0, abs=1.0)
    assert all(b < a for a, b in zip(tg, tg[1:]))


def test_thermal_expansion_strain() -> None:
    s = sample(0.4)
    ramp(s, 125.0, RATE)
    st = s.state
    assert st.strain["CsPbI3-gamma"] == pytest.approx(4e-5 * 100.0, rel=1e-9)
    assert st.strain["CsPbI3-alpha"] < 0.0  # below the 634 K reference
    assert st.strain["CsI"] == pytest.approx(4.8e-5 * 100.0, rel=1e-9)


def test_results_independent_of_step_size() -> None:
    out = []
    for dt in (1.0, 10.0):
        s = sample(0.4)
        ramp(s, 160.0, RATE, dt)
        mid = s.truth()
        ramp(s, 350.0, RATE, dt)
        hold(s, 600.0, dt)
        ramp(s, 25.0, RATE, dt)
        out.append((mid, s.truth()))
    for a, b in zip(out[0], out[1]):
        for key in a:
            if key.startswith(("wf_", "frac_", "active", "zni", "quench")):
                assert a[key] == pytest.approx(b[key], abs=0.01), key
            else:
                assert a[key] == pytest.approx(b[key], rel=0.02, abs=1e-9), key


def test_advance_replays_a_long_ramp_in_small_steps() -> None:
    """A 4500 s ramp at 1 s steps (what a live run does) keeps the state physical at every step. How fast it
    replays is measured in benchmarks/synthesis.py (steps/s as a ratio against numpy's Poisson sampling)."""
    s = CompositeSample()
    for i in range(4500):
        s.advance(1.0, 25.0 + 0.07 * i)
        if i % 500 == 0 or i == 4499:
            wf = s.state.weight_fractions
            assert all(0.0 <= w <= 1.0 for w in wf.values()) and sum(wf.values()) == pytest.approx(1.0, abs=1e-9)
    assert s.temperature_C == pytest.approx(25.0 + 0.07 * 4499)


def test_truth_is_flat_json() -> None:
    import json

    tr = sinter(0.4, 200.0).truth()
    json.dumps(tr)
    for key in ("wf_CsPbI3-gamma", "active_fraction_of_cspbi3", "tg_C", "alloy_nm", "zni_density",
                "pl_centre_nm", "temperature_C", "time_s"):
        assert isinstance(tr[key], float)


def test_default_spec() -> None:
    spec = SampleSpec.default()
    assert spec.name == "(CsPbI3)0.4(agZIF-62)0.6" and spec.cspbi3_wt_frac == 0.4 and spec.seed == 0
    assert isinstance(spec.model, ModelParameters)


def test_toml_overrides(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text('seed = 7\n[sample]\nname = "mine"\ncspbi3_wt_frac = 0.25\n[model]\ntg_glass_C = 280\n'
                 "interface_shift_C = 150.5\n")
    spec = load_sample(f)
    assert (spec.name, spec.cspbi3_wt_frac, spec.seed) == ("mine", 0.25, 7)
    assert spec.model.tg_glass_C == 280.0 and spec.model.interface_shift_C == 150.5
    assert spec.model.forward_avrami_n == ModelParameters().forward_avrami_n
    assert SampleSpec.from_toml(f) == spec


@pytest.mark.parametrize(("text", "key"), [
    ("[model]\nno_such_parameter = 1\n", "no_such_parameter"),
    ("[sample]\ncolour = 'black'\n", "colour"),
    ("[extra]\na = 1\n", "extra"),
    ("[sample]\ncspbi3_wt_frac = 1.5\n", "cspbi3_wt_frac"),
    ("[sample]\ncspbi3_wt_frac = -0.1\n", "cspbi3_wt_frac"),
    ("[model]\nforward_prefactor_per_s = -3.0\n", "forward_prefactor_per_s"),
    ("[model]\ntg_glass_C = 'hot'\n", "tg_glass_C"),
    ("seed = 'x'\n", "seed"),
    ("[sample]\nname = 3\n", "name"),
])
def test_bad_toml_names_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(SampleConfigError) as info:
        load_sample(f)
    assert str(f) in str(info.value) and key in str(info.value)
    assert isinstance(info.value, ValueError)
