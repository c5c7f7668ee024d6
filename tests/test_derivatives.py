"""Spectral (Savitzky–Golay) and thermal derivatives, band amplitudes, noise and onsets (analysis.derivatives,
analysis.onsets), checked against analytic functions and against the simulator's ground truth (Zn–I density)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hotstage.analysis.derivatives import (band_amplitude, is_uniform, monotone_segments, noise_gain, noise_sigma,
                                  spectral_derivative, thermal_derivative, window_points)
from hotstage.analysis.onsets import Onset, OnsetDetector, onset
from hotstage.simulated.parameters import SampleSpec
from hotstage.simulated.sample import CompositeSample, ramp
from hotstage.simulated.synthesis import THzSynthesizer

SIG_PER_FWHM = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def gaussian(x: np.ndarray, c: float, fwhm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit-height Gaussian with its analytic first and second derivatives."""
    s = fwhm * SIG_PER_FWHM
    z = (x - c) / s
    g = np.exp(-0.5 * z * z)
    return g, -z / s * g, (z * z - 1.0) / (s * s) * g


# ---------------------------------------------------------------------------------------------- windows
def test_window_conversion_is_odd_and_long_enough() -> None:
    for step in (0.2, 0.5, 1.0, 2.0, -1.0):
        for window in (0.1, 1.0, 3.0, 5.0, 7.5, 15.0, 40.0):
            for po in (2, 3, 4):
                n = window_points(window, step, po)
                assert n % 2 == 1 and n >= po + 2
                if window / abs(step) >= po + 2:  # not clamped: n·step within one step of the window
                    assert abs(n * abs(step) - window) <= abs(step) + 1e-9
    assert window_points(15.0, 1.0) == 15  # 15 cm⁻¹ at 1 cm⁻¹
    assert window_points(5.0, 0.2) == 25  # 5 nm at 0.2 nm
    assert window_points(1.0, 1.0, 3) == 5  # clamped to polyorder + 2 = 5
    assert window_points(1.0, 1.0, 4) == 7  # 6 → next odd


# ---------------------------------------------------------------------------------------------- spectral
@pytest.mark.parametrize("step", [0.5, 1.0, 2.0])
def test_sg_second_derivative_of_gaussian_matches_analytic(step: float) -> None:
    """Zn–N-like band (FWHM 45 cm⁻¹): SG d² with windows in cm⁻¹ vs the analytic d²."""
    x = np.arange(50.0, 700.0 + step / 2, step)
    g, _, d2 = gaussian(x, 300.0, 45.0)
    scale = np.max(np.abs(d2))
    s = 45.0 * SIG_PER_FWHM
    errs = []
    for window in (5.0, 9.0, 15.0):
        d = spectral_derivative(x, g, order=2, window=window)
        errs.append(np.max(np.abs(d - d2)) / scale)
        # Leading SG bias (local cubic = local quadratic for d² at the centre point): fitting x⁴ by 1, x² over
        # ±h gives 6h²/7·x², so d² is off by f⁗·h²/14 = f⁗·W²/56; for a Gaussian |f⁗(0)|/|f''(0)| = 3/σ², so
        # the relative error ≈ 3W²/(56σ²) (3.3 % for W = 15 on FWHM 45).  W = n·step (actual points); 20 %
        # margin for higher orders.
        w_eff = window_points(window, step) * step
        assert errs[-1] < 1.2 * 3.0 * w_eff ** 2 / (56.0 * s * s), (window, errs[-1])
    assert errs[0] <= errs[1] <= errs[2]  # equal when the window is clamped to polyorder + 2 points


def test_first_derivative_scaling_and_descending_axis() -> None:
    x = np.arange(600.0, 820.0 + 0.1, 0.2)  # PL axis, nm
    g, d1, _ = gaussian(x, 710.0, 36.0)
    d = spectral_derivative(x, g, order=1, window=5.0)
    assert np.max(np.abs(d - d1)) < 1e-3 * np.max(np.abs(d1))  # 5 nm window on a 36 nm band: < 0.1 %
    d_desc = spectral_derivative(x[::-1], g[::-1], order=1, window=5.0)  # dy/dx does not depend on direction
    assert np.allclose(d_desc[::-1], d, rtol=0, atol=1e-12)


def test_two_dimensional_input_matches_rows() -> None:
    x = np.arange(50.0, 700.5, 1.0)
    rng = np.random.default_rng(0)
    y = np.vstack([gaussian(x, c, 20.0)[0] + rng.normal(0, 1e-3, x.size) for c in (135.0, 275.0, 300.0)])
    d = spectral_derivative(x, y, 2, 15.0)
    for i in range(3):
        assert np.allclose(d[i], spectral_derivative(x, y[i], 2, 15.0), rtol=0, atol=1e-15)


def test_non_uniform_axis_is_resampled() -> None:
    """A calibrated-looking (slightly curved) axis: resampled, differentiated, mapped back."""
    u = np.linspace(0.0, 1.0, 651)
    x = 50.0 + 650.0 * (u + 0.05 * u * (1.0 - u))  # steps vary by ±5 %
    assert not is_uniform(x) and is_uniform(np.arange(50.0, 700.5, 1.0))
    g, _, d2 = gaussian(x, 300.0, 45.0)
    d = spectral_derivative(x, g, 2, 9.0)
    assert d.shape == x.shape
    # same SG bias as the uniform case (9 points at the mean step 1 cm⁻¹: 3W²/(56σ²) = 1.2 %), + 20 %
    s = 45.0 * SIG_PER_FWHM
    assert np.max(np.abs(d - d2)) / np.max(np.abs(d2)) < 1.2 * 3.0 * 9.0 ** 2 / (56.0 * s * s)


def test_noise_sigma_matches_propagated_white_noise() -> None:
    x = np.arange(50.0, 700.5, 1.0)
    sigma_y = 1.8e-4  # THz noise at 5 s (4e-4/√5, simulated.synthesis)
    rng = np.random.default_rng(1)
    y = rng.normal(0.0, sigma_y, (40, x.size))
    d = spectral_derivative(x, y, 2, 17.0)
    expected = sigma_y * noise_gain(x, 2, 17.0)
    assert noise_sigma(d, x, pool=True) == pytest.approx(expected, rel=0.05)  # 26 000 points, ~1500 independent
    per = noise_sigma(d, x, exclude=[(100.0, 200.0)])
    assert per.shape == (40,) and np.median(per) == pytest.approx(expected, rel=0.1)


def test_band_amplitude_of_gaussian() -> None:
    x = np.arange(50.0, 700.5, 1.0)
    g, _, _ = gaussian(x, 135.0, 10.0)
    d = spectral_derivative(x, 0.01 * g, 2, 5.0)
    s = 10.0 * SIG_PER_FWHM
    # −d²I/dν² at the centre = A/σ²; a 5-point cubic SG on FWHM 10 loses < 7 % (measured 5.9 %)
    assert band_amplitude(x, d, 135.0, 2.0) == pytest.approx(0.01 / s ** 2, rel=0.07)
    assert band_amplitude(x, d, 135.0, 2.0) >= band_amplitude(x, d, 135.0, 0.0)  # max over the window


# ---------------------------------------------------------------------------------------------- thermal
def test_thermal_derivative_on_random_spacing() -> None:
    rng = np.random.default_rng(2)
    t = np.sort(rng.uniform(25.0, 350.0, 400))  # irregular ramp sampling, mean spacing 0.8 °C
    q = np.tanh((t - 200.0) / 30.0)
    d1_true = (1.0 - q ** 2) / 30.0
    d2_true = -2.0 * q * (1.0 - q ** 2) / 900.0
    d1 = thermal_derivative(t, q, order=1, window_C=10.0, polyorder=2)
    d2 = thermal_derivative(t, q, order=2, window_C=20.0, polyorder=3)
    # local quadratic over ±5 °C on a 30 °C feature: bias ~ (5/30)²/6·|d³q| → < 1 % of max |dq/dT|
    assert np.max(np.abs(d1 - d1_true)) < 1e-2 * np.max(d1_true)
    # local cubic over ±10 °C for d²: < 5 % of max |d²q/dT²|
    assert np.max(np.abs(d2 - d2_true)) < 5e-2 * np.max(np.abs(d2_true))
    # a cooling run (decreasing T) gives the same function of T
    dc = thermal_derivative(t[::-1], q[::-1], order=1, window_C=10.0)
    assert np.allclose(dc[::-1], d1, rtol=0, atol=1e-12)
    # noisy q (σ_q = 1e-3): away from the ends (one-sided windows) the error is the propagated noise,
    # σ ≈ σ_q/(√N·W/√12) ≈ 1e-4 per °C for N ≈ 12 points in W = 10 °C (random spacing: ~1.7e-4 measured);
    # rms < 3e-4 (bias < 3e-4 at most), worst point (sparse window) < 10 % of max dq/dT
    qn = q + rng.normal(0.0, 1e-3, q.size)
    inner = (t > t[0] + 5.0) & (t < t[-1] - 5.0)
    err = (thermal_derivative(t, qn, 1, 10.0) - d1_true)[inner]
    assert np.sqrt(np.mean(err ** 2)) < 3e-4 and np.max(np.abs(err)) < 0.1 * np.max(d1_true)


def test_thermal_derivative_requires_one_direction() -> None:
    t = np.concatenate([np.linspace(25.0, 350.0, 60), np.linspace(345.0, 25.0, 50)])
    q = t * 2.0
    with pytest.raises(ValueError, match="monotone"):
        thermal_derivative(t, q, 1, 10.0)
    segs = monotone_segments(t)
    assert [(s.start, s.stop) for s in segs] == [(0, 60), (59, 110)]
    for s in segs:
        assert np.allclose(thermal_derivative(t[s], q[s], 1, 10.0), 2.0)
    # sensor jitter below the tolerance does not split a run; repeated temperatures (a hold) are fine
    rng = np.random.default_rng(3)
    tj = np.concatenate([np.linspace(25.0, 200.0, 100) + rng.normal(0, 0.05, 100), np.full(10, 200.0)])
    assert len(monotone_segments(tj, tolerance_C=0.3)) == 1
    assert np.allclose(thermal_derivative(tj, 3.0 * tj, 1, 10.0, tolerance_C=0.3), 3.0)


# ---------------------------------------------------------------------------------------------- onsets
def test_onset_logic_batch_and_streaming() -> None:
    t = np.arange(10.0)
    s = np.array([0, 4, 0, 4, 4, np.nan, 4, 4, 4, 4], dtype=float)
    assert onset(t, s, 1.0, k=3.0, m=3) == Onset(6.0, 6)  # NaN breaks the run 3-4
    assert onset(t, s, 1.0, k=3.0, m=1) == Onset(1.0, 1)
    assert onset(t, s, 1.0, k=3.0, m=5) == Onset(None, None)
    assert onset(t, s, 2.0, k=3.0, m=2) == Onset(None, None)  # 4 < 6
    det = OnsetDetector(1.0, k=3.0, m=3)
    reports = [det.update(ti, si) for ti, si in zip(t, s)]
    assert [r for r in reports if r is not None] == [Onset(6.0, 6)]  # reported once, at the completing point
    assert reports[8] == Onset(6.0, 6) and det.onset() == Onset(6.0, 6)


def test_refined_onset_is_the_threshold_crossing() -> None:
    """A line crossing 3σ between samples: the refined onset is the crossing, the first point is the next sample."""
    t = np.arange(0.0, 60.0, 5.0)  # a 5 °C cadence
    s = (t - 17.0) * 0.5  # crosses 3 at 23 °C
    assert onset(t, s, 1.0, k=3.0, m=3) == Onset(25.0, 5)
    r = onset(t, s, 1.0, k=3.0, m=3, refine=True)
    assert r.index == 5 and r.temperature == pytest.approx(23.0, abs=1e-9)
    # cooling series (temperature falling, signal rising): crossing found the same way
    tc = t[::-1]
    rc = onset(tc, (60.0 - tc - 17.0) * 0.5, 1.0, k=3.0, m=3, refine=True)
    assert rc.temperature == pytest.approx(60.0 - 23.0, abs=1e-9)
    # a signal that does not rise through the window (a lone spike train) falls back to the first point
    spikes = np.array([0, 0, 0, 0, 0, 9, 4, 4, 0, 0, 0, 0], dtype=float)
    assert onset(t, spikes, 1.0, k=3.0, m=3, refine=True).temperature == pytest.approx(25.0)


def test_refined_onset_scatters_less_than_the_first_point() -> None:
    """Noisy slowly rising signal (σ = 1, 0.2σ per °C, 5 °C cadence), 300 seeds: the refined onset's rms error
    against the noise-free crossing is well below the first-point onset's (which is ~σ/slope and quantised)."""
    t = np.arange(0.0, 150.0, 5.0)
    clean = np.clip((t - 40.0) * 0.2, 0.0, None)  # crosses 3σ at 55 °C
    rng = np.random.default_rng(5)
    first, refined = [], []
    for _ in range(300):
        s = clean + rng.normal(0.0, 1.0, t.size)
        a, b = onset(t, s, 1.0, 3.0, 3), onset(t, s, 1.0, 3.0, 3, refine=True)
        if a.temperature is not None:
            first.append(a.temperature - 55.0)
            refined.append(b.temperature - 55.0)
    rms_first, rms_refined = (float(np.sqrt(np.mean(np.square(e)))) for e in (first, refined))
    assert len(first) > 250
    assert rms_refined < 0.7 * rms_first, (rms_refined, rms_first)


# ---------------------------------------------------------------------------------------------- simulated THz
THZ_EXPOSURE_S = 5.0  # simulated.rig DEFAULT_EXPOSURES["thz"]
WINDOW = 17.0  # cm⁻¹: ~1.7 × the Zn–I FWHM (10 cm⁻¹); near the SNR optimum of a d² band detector
BAND_FREE = [(55.0, 100.0), (500.0, 550.0)]  # |d² of all simulated bands| < 1e-6 (¼ σ) there, by inspection
K, M = 3.0, 3


@pytest.fixture(scope="module")
def thz_ramp() -> dict[str, np.ndarray]:
    """CompositeSample (40/60) heated 25 → 350 °C at 10 °C/min then cooled at 10 °C/min; a THz spectrum every
    10 s (1.67 °C); noisy spectra and the noiseless ones the simulator implies."""
    syn = THzSynthesizer()
    sample = CompositeSample(SampleSpec.default())
    rng = np.random.default_rng(11)
    step = 10.0 / 6.0
    temps = [25.0] + list(np.arange(25.0 + step, 350.0 + 1e-9, step))
    n_heat = len(temps)
    temps += list(np.arange(350.0 - step, 25.0 - 1e-9, -step))
    y, e, z, t = [], [], [], []
    for target in temps:
        if target != sample.temperature_C:
            ramp(sample, float(target), 10.0, 5.0)
        st = sample.state
        y.append(syn(st, THZ_EXPOSURE_S, rng))
        e.append(syn.expected(st, THZ_EXPOSURE_S))
        z.append(st.zni_density)
        t.append(st.temperature_C)
    return {"x": syn.axis, "y": np.array(y), "expected": np.array(e), "zni": np.array(z), "T": np.array(t),
            "n_heat": np.array(n_heat), "sigma_y": np.array(syn.last_truth["noise_sigma"])}


def test_zni_band_onset_matches_truth(thz_ramp: dict[str, np.ndarray]) -> None:
    """Zn–I 135 cm⁻¹ band: onset of −d²A/dν² (k = 3, m = 3) within ±10 °C of the truth onset.

    Truth onset (definition): the first heating temperature at which the NOISELESS band amplitude implied by the
    simulator's zni_density — −d²/dν² (same SG window) of `THzSynthesizer.expected`, minus its value at the start
    (zni_density = 0) — exceeds k·σ, σ = the true noise of the SG second derivative (σ_y·‖c‖).  The noiseless
    amplitude is monotone on heating, so "m consecutive points" changes nothing there.
    Measured onset: the analysis only sees the noisy spectra: σ from band-free regions (MAD, pooled), reference
    = median amplitude below 60 °C.
    """
    x, t, n = thz_ramp["x"], thz_ramp["T"], int(thz_ramp["n_heat"])
    d2 = spectral_derivative(x, thz_ramp["y"], 2, WINDOW)
    amp = band_amplitude(x, d2, 135.0, 0.5)
    sigma = noise_sigma(d2[:n], x, include=BAND_FREE, pool=True)
    true_sigma = float(thz_ramp["sigma_y"]) * noise_gain(x, 2, WINDOW)
    assert sigma == pytest.approx(true_sigma, rel=0.15)  # MAD over ~35 000 correlated points
    signal = amp - np.median(amp[:n][t[:n] < 60.0])
    measured = onset(t[:n], signal[:n], sigma, K, M)

    amp_true = band_amplitude(x, spectral_derivative(x, thz_ramp["expected"], 2, WINDOW), 135.0, 0.5)
    truth = onset(t[:n], amp_true[:n] - amp_true[0], true_sigma, K, M)
    assert truth.temperature is not None and measured.temperature is not None
    assert 110.0 <= truth.temperature <= 200.0  # DESIGN: Zn–I bands appear from ~110 °C
    assert abs(measured.temperature - truth.temperature) <= 10.0, (measured, truth)
    # the zni_density at the truth onset is the detectable level: a few % of its final value
    assert thz_ramp["zni"][truth.index] < 0.1 * thz_ramp["zni"][n - 1]

    # streaming detector gives the identical onset, reported once
    det = OnsetDetector(sigma, K, M)
    reports = [r for r in (det.update(ti, si) for ti, si in zip(t[:n], signal[:n])) if r is not None]
    assert reports == [measured]


def test_zni_band_grows_on_heating_and_persists_on_cooling(thz_ramp: dict[str, np.ndarray]) -> None:
    x, t, n = thz_ramp["x"], thz_ramp["T"], int(thz_ramp["n_heat"])
    d2 = spectral_derivative(x, thz_ramp["y"], 2, WINDOW)
    sigma = noise_sigma(d2, x, include=BAND_FREE, pool=True)
    for centre in (135.0, 275.0):
        amp = band_amplitude(x, d2, centre, 0.5)
        a = amp - np.median(amp[:n][t[:n] < 60.0])
        heat, cool = a[:n], a[n:]

        def mean_in(arr: np.ndarray, temps: np.ndarray, lo: float, hi: float) -> float:
            return float(np.mean(arr[(temps >= lo) & (temps <= hi)]))
        # grows with temperature: successive 40 °C bins are non-decreasing within 2σ/√(points)
        means = [mean_in(heat, t[:n], lo, lo + 40.0) for lo in (25.0, 105.0, 145.0, 185.0, 225.0, 310.0)]
        assert all(b > a_ - 2.0 * sigma for a_, b in zip(means, means[1:])), means
        assert means[-1] > 30.0 * sigma and means[0] < 2.0 * sigma  # ~0 at start, strong at the top
        # persists on cooling: below 60 °C after cooling ≥ 90 % of the amplitude at 310–350 °C
        assert mean_in(cool, t[n:], 25.0, 60.0) > 0.9 * means[-1]
        # and tracks the truth: amplitude ∝ zni_density on the whole run (noiseless slope), within 5σ
        amp_true = band_amplitude(x, spectral_derivative(x, thz_ramp["expected"], 2, WINDOW), centre, 0.5)
        assert np.max(np.abs(a - (amp_true - amp_true[0]))) < 5.0 * sigma
