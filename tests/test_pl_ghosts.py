"""PL fits that do not see ghosts (issue 14, item 5): `fit_pl`'s acceptance test on spectra drawn like the
simulator's (PLSynthesizer: Poisson counts, 2 dark counts/s, 0.2 nm bins over 600–820 nm).

- Pure noise: 1000 spectra (different seeds, exposures 0.5–5 s) → at most 4 accepted. 4 of 1000 is the largest
  count whose one-sided 95 % Clopper–Pearson upper bound on the rate is below 1 % (0.91 %; 5 of 1000 gives
  1.05 %), so passing shows the false-positive rate ≤ 1 % at 95 % confidence. The design rate is 10⁻³.
- The look-elsewhere calculation behind k (Gaussian kinematic formula + Cornish–Fisher skewness term, see
  analysis.pl_fit) is right: at k for α = 5 % the scan's best z exceeds k in 5 % ± 3 binomial σ of the same
  1000 spectra, at α = 1 % in at most 1 % + 3σ.
- Weak real bands: peak 10 counts on 2 dark counts (peak S/N ≈ 7 per bin, matched-filter z ≈ 70), FWHM 36 nm:
  accepted in ≥ 90 % of 200 draws, every accepted centre within 4 s.u. and 2 nm of the truth, FWHM within 15 %.
- The issue's case: a 5-count band (located to ≈ 1 nm at best) is never accepted with a centre more than 4 s.u.
  or 2 nm off (it was accepted 12.6 nm off before).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy.stats import beta

from hotstage.analysis.pl_fit import (Acceptance, detection_threshold, fit_pl, noise_skewness, scan_band,
                                     skew_corrected_threshold)
from hotstage.simulated.sample import CompositeSample, PLParameters
from hotstage.simulated.synthesis import PLSynthesizer

N_NOISE = 1000
MAX_FALSE = 4  # Clopper–Pearson 95 % upper bound of 4/1000 < 1 % (module docstring)
EXPOSURES_S = (0.5, 1.0, 2.0, 5.0)


def _state(centre_nm: float, fwhm_nm: float, peak_counts: float, syn: PLSynthesizer):  # type: ignore[no-untyped-def]
    """A sample state whose PL band is exactly this (the rest of the state does not matter to the synthesizer)."""
    st = CompositeSample().state
    return dataclasses.replace(st, pl=PLParameters(centre_nm=centre_nm, fwhm_nm=fwhm_nm, urbach_meV=19.0,
                                                   intensity=peak_counts / syn.counts_per_s))


def test_threshold_calculation() -> None:
    """k from the Gaussian kinematic formula: the numbers quoted in analysis.pl_fit; the skewness term."""
    assert detection_threshold(220.0, 8.0, 1e-3) == pytest.approx(4.35, abs=0.01)
    assert detection_threshold(220.0, 8.0, 1e-2) == pytest.approx(3.75, abs=0.01)
    assert skew_corrected_threshold(4.35, 0.0, 8.0, 0.2) == 4.35
    assert skew_corrected_threshold(4.35, 1.0, 8.0, 0.2) == pytest.approx(4.35 + 0.149 / 6 * (4.35**2 - 1), abs=0.01)
    y = np.random.default_rng(0).poisson(2.0, 20000).astype(float)
    assert noise_skewness(y) == pytest.approx(1 / math.sqrt(2.0), abs=0.07)  # Poisson: 1/√μ
    assert abs(noise_skewness(np.random.default_rng(0).normal(5.0, 1.0, 20000))) < 0.07
    # more room to look elsewhere (wider span, narrower bands allowed) → a higher bar
    assert detection_threshold(440.0, 8.0, 1e-3) > detection_threshold(220.0, 8.0, 1e-3)
    assert detection_threshold(220.0, 4.0, 1e-3) > detection_threshold(220.0, 8.0, 1e-3)
    with pytest.raises(ValueError, match="alpha"):
        Acceptance(alpha=0.0)
    assert beta.ppf(0.95, MAX_FALSE + 1, N_NOISE - MAX_FALSE) < 0.01 <= beta.ppf(0.95, MAX_FALSE + 2,
                                                                                  N_NOISE - MAX_FALSE - 1)


@pytest.fixture(scope="module")
def noise_spectra() -> list[np.ndarray]:
    """1000 spectra of a sample that does not emit (δ-CsPbI3 at 25 °C: intensity 0), seeds 0…999."""
    syn = PLSynthesizer()
    st = CompositeSample().state
    assert st.pl.intensity == 0.0
    return [syn(st, EXPOSURES_S[i % len(EXPOSURES_S)], np.random.default_rng(1000 + i)) for i in range(N_NOISE)]


def test_false_positive_rate_on_pure_noise(noise_spectra: list[np.ndarray]) -> None:
    lam = PLSynthesizer().axis
    fits = [fit_pl(lam, y) for y in noise_spectra]
    accepted = [f for f in fits if f.accepted]
    print(f"pure noise: {len(accepted)} of {N_NOISE} accepted; largest z {max(f.significance for f in fits):.2f}")
    assert len(accepted) <= MAX_FALSE, [(f.centre_nm, f.significance) for f in accepted]
    assert all(not f.accepted and math.isnan(f.centre_nm) for f in fits if not f.success)


def test_look_elsewhere_calculation(noise_spectra: list[np.ndarray]) -> None:
    lam = PLSynthesizer().axis
    scans = [scan_band(lam, y) for y in noise_spectra]
    for alpha, two_sided in ((0.05, True), (0.01, False)):
        k = detection_threshold(float(lam[-1] - lam[0]), 8.0, alpha)
        exceed = sum(r.z >= skew_corrected_threshold(k, r.skew, 8.0, r.step_nm) for r in scans)
        margin = 3.0 * math.sqrt(alpha * (1 - alpha) * N_NOISE)
        print(f"scan z ≥ k(α = {alpha}) = {k:.2f} (+ skewness term): {exceed} of {N_NOISE}")
        assert exceed <= alpha * N_NOISE + margin
        if two_sided:
            assert exceed >= alpha * N_NOISE - margin


def test_weak_real_bands_are_accepted() -> None:
    syn = PLSynthesizer()
    st = _state(708.8, 36.0, 10.0, syn)
    fits = [fit_pl(syn.axis, syn(st, 1.0, np.random.default_rng(seed))) for seed in range(200)]
    ok = [f for f in fits if f.accepted]
    print(f"10-count band: {len(ok)} of 200 accepted; median z {np.median([f.significance for f in fits]):.1f}")
    assert len(ok) >= 180
    for f in ok:
        dev = abs(f.centre_nm - 708.8)
        assert dev <= 4.0 * f.centre_nm_su and dev <= 2.0, (f.centre_nm, f.centre_nm_su)
        assert abs(f.fwhm_nm / 36.0 - 1.0) <= 0.15, f.fwhm_nm


def test_five_count_band_is_not_a_ghost() -> None:
    """The issue's case: whatever is accepted of a 5-count band is where the band is."""
    syn = PLSynthesizer()
    st = _state(708.8, 36.0, 5.0, syn)
    for seed in range(200):
        f = fit_pl(syn.axis, syn(st, 1.0, np.random.default_rng(seed)))
        assert f.significance > f.threshold or not f.accepted
        if f.accepted:
            dev = abs(f.centre_nm - 708.8)
            assert dev <= 4.0 * f.centre_nm_su and dev <= 2.0, (seed, f.centre_nm, f.centre_nm_su)


def test_width_and_centre_bounds() -> None:
    """A narrow spike (FWHM 2 nm, far below any perovskite emission) and a band centred outside the window are
    fitted but not accepted."""
    lam = np.linspace(600.0, 820.0, 1101)
    rng = np.random.default_rng(3)
    spike = 2.0 + 400.0 * np.exp(-0.5 * ((lam - 700.0) / (2.0 / 2.3548)) ** 2)
    f = fit_pl(lam, rng.poisson(spike).astype(float))
    assert not f.accepted and "FWHM" in f.message, f.message
    edge = 2.0 + 400.0 * np.exp(-0.5 * ((lam - 835.0) / (36.0 / 2.3548)) ** 2)
    g = fit_pl(lam, rng.poisson(edge).astype(float))
    assert not g.accepted, (g.centre_nm, g.message)
