"""Synthesis of XRD/THz/PL data from the simulated sample: noise statistics, placement, ground truth."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import curve_fit
from scipy.signal import savgol_filter

from hotstage.simulated.parameters import SampleSpec
from hotstage.simulated.sample import CompositeSample, hold, ramp
from hotstage.simulated.synthesis import PLSynthesizer, THzSynthesizer, XRDSynthesizer

CU_KA1 = 1.5406


@pytest.fixture(scope="module")
def xrd() -> XRDSynthesizer:
    return XRDSynthesizer()


def sintered(x: float = 0.4, ts: float = 350.0) -> CompositeSample:
    s = CompositeSample(SampleSpec.composite(x))
    ramp(s, ts, 10.0, 5.0)
    hold(s, 600.0, 5.0)
    ramp(s, 25.0, 10.0, 5.0)
    return s


def two_theta_of_q(q: float, wavelength: float = CU_KA1) -> float:
    return math.degrees(2.0 * math.asin(q * wavelength / (4.0 * math.pi)))


def test_xrd_default_grid_and_dtype(xrd: XRDSynthesizer) -> None:
    y = xrd(CompositeSample().state, 1.0, np.random.default_rng(0))
    assert xrd.axis.shape == (5000,) and xrd.axis[0] == 5.0 and xrd.axis[-1] == 60.0
    assert y.dtype == np.float64 and y.shape == (5000,) and np.all(y >= 0)


def test_xrd_counts_are_poisson(xrd: XRDSynthesizer) -> None:
    """Per-point variance over repeats equals the expected counts (Poisson), whatever the local slope."""
    state = CompositeSample().state
    rng = np.random.default_rng(1)
    mean = xrd.expected(state, 10.0)
    region = (xrd.axis > 50.0) & (xrd.axis < 60.0)
    y = np.array([xrd(state, 10.0, rng)[region] for _ in range(200)])
    ratio = (y.var(axis=0, ddof=1) / mean[region]).mean()
    assert ratio == pytest.approx(1.0, abs=0.05)  # variance ≈ mean
    assert y.mean(axis=0) == pytest.approx(mean[region], rel=0.05)


def _strongest(xrd: XRDSynthesizer, phase: str, n: int = 3) -> np.ndarray:
    """2θ of the n strongest Kα1 peaks of a phase (unstrained)."""
    pk = xrd._peaks[phase]
    sel = pk.wavelength == pk.wavelength.min()
    order = np.argsort(pk.intensity[sel])[::-1][:n]
    return np.degrees(2.0 * np.arcsin(pk.sin_theta[sel][order]))


def _height_at(xrd: XRDSynthesizer, y: np.ndarray, tt: float, half: float = 0.15) -> float:
    sel = np.abs(xrd.axis - tt) < half
    return float(y[sel].max())


def test_xrd_phases_appear_where_the_state_says(xrd: XRDSynthesizer) -> None:
    milled = CompositeSample().state  # mostly δ, no γ
    gamma = sintered(0.4).state  # ≥ 90 % of the CsPbI3 as γ
    assert gamma.fraction_of_cspbi3("CsPbI3-gamma") > 0.9
    y_m = xrd.expected(milled, 10.0)
    y_g = xrd.expected(gamma, 10.0)
    for tt in _strongest(xrd, "CsPbI3-delta", 2):
        assert _height_at(xrd, y_m, tt) > 1.5 * _height_at(xrd, y_g, tt)
    for tt in _strongest(xrd, "CsPbI3-gamma", 2):
        assert _height_at(xrd, y_g, tt) > 1.5 * _height_at(xrd, y_m, tt)
    truth = xrd.last_truth
    assert truth["wf_CsPbI3-gamma"] == pytest.approx(gamma.weight_fractions["CsPbI3-gamma"])
    # Hill–Howard: scale ∝ W/ZMV
    assert truth["scale_CsPbI3-gamma"] * xrd._peaks["CsPbI3-gamma"].zmv == pytest.approx(truth["wf_CsPbI3-gamma"])


def test_xrd_strain_shifts_peaks_to_lower_angle(xrd: XRDSynthesizer) -> None:
    cold = xrd._phase_rate("CsPbI3-gamma", 1e-6, 0.0, 50.0)
    hot = xrd._phase_rate("CsPbI3-gamma", 1e-6, 0.01, 50.0)
    tt = _strongest(xrd, "CsPbI3-gamma", 1)[0]
    win = np.abs(xrd.axis - tt) < 1.0
    shift = xrd.axis[win][hot[win].argmax()] - xrd.axis[win][cold[win].argmax()]
    expected = math.degrees(2 * math.asin(math.sin(math.radians(tt / 2)) / 1.01)) - tt
    assert shift == pytest.approx(expected, abs=0.03)


def test_glass_halos_at_q_positions() -> None:
    glass = CompositeSample(SampleSpec.composite(0.0)).state
    for wl in (CU_KA1, 0.7):
        syn = XRDSynthesizer(np.linspace(3.0, 60.0, 3000), wl, background=(0.0, 0.0, 0.0))
        y = syn.expected(glass, 1.0)
        for q in (1.09, 2.40):
            tt = two_theta_of_q(q, wl)
            win = np.abs(syn.axis - tt) < 4.0
            assert abs(syn.axis[win][y[win].argmax()] - tt) < 0.5
        if wl == CU_KA1:
            assert 14.5 < two_theta_of_q(1.09) < 16.0 and 33.0 < two_theta_of_q(2.40) < 36.0
    syn = XRDSynthesizer()
    syn.expected(CompositeSample(SampleSpec.composite(1.0)).state)
    assert syn.last_truth["halo_counts_per_s"] == 0.0  # no glass → no halo
    syn.expected(glass)
    assert syn.last_truth["halo_counts_per_s"] == syn.halo_counts_per_s  # halo ∝ glass fraction


def test_thz_zni_bands_visible_in_second_derivative_only() -> None:
    thz = THzSynthesizer()
    fresh = CompositeSample().state
    reacted = sintered(0.4).state
    assert reacted.zni_density > 0.5
    rng = np.random.default_rng(3)
    nu = thz.axis
    step = nu[1] - nu[0]
    window = int(round(15.0 / step)) | 1  # 15 cm⁻¹ Savitzky–Golay window
    d2 = {k: -savgol_filter(thz(st, 10.0, rng), window, 3, deriv=2, delta=step) for k, st in
          (("fresh", fresh), ("reacted", reacted))}
    noise = np.std(d2["reacted"][(nu > 480) & (nu < 560)])
    truth = thz.last_truth
    for band in (135.0, 275.0):
        i = int(np.argmin(np.abs(nu - band)))
        assert d2["reacted"][i] - d2["fresh"][i] > 5.0 * noise  # visible in −d²A/dν²
        assert truth[f"zni_{band:g}_amplitude"] < 0.05 * truth["zif_300_amplitude"]  # weak in the raw spectrum
    assert truth["zni_density"] == reacted.zni_density


def test_thz_noise_level_and_bands() -> None:
    thz = THzSynthesizer()
    st = CompositeSample().state
    y = thz(st, 4.0, np.random.default_rng(0))
    mean = thz.expected(st, 4.0)
    assert np.std(y - mean) == pytest.approx(thz.last_truth["noise_sigma"], rel=0.15)
    for band in (300.0, 670.0):
        win = np.abs(thz.axis - band) < 20
        assert abs(thz.axis[win][mean[win].argmax()] - band) < 3
    assert thz.axis[0] == 50.0 and thz.axis[-1] == 700.0


def test_pl_centre_matches_state_after_gaussian_fit() -> None:
    pl = PLSynthesizer()
    st = sintered(0.4, 250.0).state
    y = pl(st, 1.0, np.random.default_rng(5))
    lam = pl.axis
    i0 = int(y.argmax())
    sel = np.abs(lam - lam[i0]) < st.pl.fwhm_nm

    def gauss(x: np.ndarray, a: float, c: float, w: float, b: float) -> np.ndarray:
        return a * np.exp(-4 * math.log(2) * ((x - c) / w) ** 2) + b

    popt, _ = curve_fit(gauss, lam[sel], y[sel], p0=(y.max(), lam[i0], 30.0, 0.0))
    assert popt[1] == pytest.approx(st.pl.centre_nm, abs=1.0)
    assert pl.last_truth["centre_nm"] == st.pl.centre_nm


def test_pl_urbach_tail_on_low_energy_side() -> None:
    pl = PLSynthesizer()
    st = sintered(0.4, 250.0).state
    y = pl.expected(st, 1.0) - pl.dark_counts_per_s
    c, w = st.pl.centre_nm, st.pl.fwhm_nm
    red = y[np.argmin(np.abs(pl.axis - (c + 1.6 * w)))]
    blue = y[np.argmin(np.abs(pl.axis - (c - 1.6 * w)))]
    assert red > 3.0 * blue  # exponential tail beats the Gaussian wing
    # slope of ln I vs E on the far tail gives back the Urbach energy
    lam = pl.axis[(pl.axis > c + 1.8 * w) & (pl.axis < 815)]
    yy = y[(pl.axis > c + 1.8 * w) & (pl.axis < 815)]
    e = 1239.84198 / lam
    slope = np.polyfit(e, np.log(yy), 1)[0]
    assert 1e3 / slope == pytest.approx(st.pl.urbach_meV, rel=0.02)


def test_pl_counts_poisson_and_scale_with_intensity() -> None:
    pl = PLSynthesizer()
    st = sintered(0.4, 250.0).state
    rng = np.random.default_rng(2)
    y = np.array([pl(st, 0.5, rng) for _ in range(100)])
    mean = pl.expected(st, 0.5)
    i = int(mean.argmax())
    assert y[:, i].var() / y[:, i].mean() == pytest.approx(1.0, abs=0.3)
    assert pl.last_truth["peak_counts_per_s"] == pytest.approx(pl.counts_per_s * st.pl.intensity)


def test_same_seed_same_data(xrd: XRDSynthesizer) -> None:
    st = sintered(0.4, 250.0).state
    for syn in (xrd, THzSynthesizer(), PLSynthesizer()):
        a = syn(st, 1.0, np.random.default_rng(42))
        b = syn(st, 1.0, np.random.default_rng(42))
        c = syn(st, 1.0, np.random.default_rng(43))
        assert a.dtype == np.float64 and np.array_equal(a, b) and not np.array_equal(a, c)


def test_xrd_synthesis_reuses_its_peak_tables(xrd: XRDSynthesizer, monkeypatch: pytest.MonkeyPatch) -> None:
    """What makes a pattern cost a few ms: the crystallography (reflections, structure factors) is done once, when
    the synthesizer is built; every pattern only shifts, broadens and renders the cached peaks. The speed itself
    is measured in benchmarks/synthesis.py (patterns/s as a ratio against numpy's Poisson sampling)."""
    from hotstage.analysis.crystal import Crystal

    def no_crystallography(*args: object, **kwargs: object) -> None:
        raise AssertionError("crystallography recomputed for a pattern")

    for method in ("reflections", "peaks", "pattern"):
        monkeypatch.setattr(Crystal, method, no_crystallography)
    st = sintered(0.85, 250.0).state  # several phases present
    rng = np.random.default_rng(0)
    patterns = [xrd(st, 1.0, rng) for _ in range(20)]
    assert all(p.shape == xrd.axis.shape and np.all(np.isfinite(p)) and p.sum() > 0 for p in patterns)
