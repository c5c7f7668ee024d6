"""Calibration against certified standards: patterns drawn by the simulator's own diffractometer
(`hotstage.simulated.diffractometer`, exact Voigts and the FCJ geometry, no profile code shared with the analysis)
from a known instrument; the calibration must give that instrument back.

Tolerances (the issue's DONE-WHEN): the peak shift (zero + displacement) within 0.002° and the total FWHM
(`Instrument.fwhm`) within 5 % at angles across the whole covered range, its ends included (22° and 88° for the
lab scans). The per-reflection table (single-reflection centroids and half-widths, each with its own counting
noise) must agree: |Δ2θ| < 0.004° and FWHM_obs/FWHM_model within 6 % (measured ≤ 0.0027° and ≤ 4.5 %).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hotstage.analysis.calibration import (Calibration, CalibrationError, NotTheStandardError, bin_variance,
                                           calibrate, fit_lines, fold_sample_broadening, seed_instrument)
from hotstage.analysis.instrument import Instrument, read_instrument, render_instrument_peaks
from hotstage.analysis.radiation import Radiation
from hotstage.analysis.standards import STANDARDS, UnknownStandardError, lookup, standard
from hotstage.simulated.diffractometer import Diffractometer

PRM = Path(__file__).parent / "data" / "instruments" / "synchrotron-0.4139A-LaB6.prm"
ZERO_TOL = 0.002
FWHM_TOL = 0.05
TABLE_ZERO_TOL = 0.004
TABLE_FWHM_TOL = 0.06


def draw(instrument: Instrument, name: str, two_theta: np.ndarray, *, peak: float = 2e4, background: float = 500.0,
         seed: int = 7) -> np.ndarray:
    """Poisson counts of a standard's pattern seen through `instrument` by the simulator's diffractometer."""
    crystal = standard(name)
    lam = max(w for w, _ in instrument.radiation.lines)
    table = crystal.unique_reflections(lam / (2.0 * np.sin(np.radians(min(two_theta[-1] + 3.0, 179.0)) / 2.0)))
    y = Diffractometer(instrument, two_theta).render(table["d"], table["f2"] * table["m"])
    y = y * (peak / y.max()) + background
    return np.random.default_rng(seed).poisson(y).astype(float)


def assert_recovers(cal: Calibration, truth: Instrument, angles: np.ndarray,
                    table_zero_tol: float = TABLE_ZERO_TOL) -> None:
    """The DONE-WHEN tolerances at `angles` (the covered range, ends included), and the residual table's."""
    got, want = cal.instrument, truth
    dshift = np.abs(got.shift(angles) - want.shift(angles))
    assert dshift.max() < ZERO_TOL, f"shift off by {dshift.max():.4f}° (zero {got.zero:.4f} vs {want.zero:.4f})"
    ratio = got.fwhm(angles) / want.fwhm(angles)
    assert np.all(np.abs(ratio - 1.0) < FWHM_TOL), f"FWHM ratios {np.round(ratio, 3)} at {angles}"
    assert len(cal.reflections) >= 5
    for r in cal.reflections:
        assert abs(r.delta_two_theta) < table_zero_tol, r
        assert abs(r.fwhm_obs / r.fwhm_model - 1.0) < TABLE_FWHM_TOL, r


# ---------------------------------------------------------------------------------------------- standards
def test_standards_carry_their_certified_cells() -> None:
    for name, s in STANDARDS.items():
        c = standard(name.upper())
        assert c.cell == pytest.approx(s.cell, abs=1e-9)
        assert lookup(s.srm) is s  # "NIST SRM 660c" finds LaB6
    assert standard("lab6").cell[0] == 4.156826
    assert standard("Al2O3").cell[2] == 12.991779
    with pytest.raises(UnknownStandardError, match="LaB6, Si, CeO2, Al2O3"):
        standard("quartz")


def test_si_positions_match_the_srm_640f_certificate_table() -> None:
    # SRM 640f certificate, Table 1: 2θ of Si for Cu Kα1 = 1.5405929 Å (rounded to 0.001°)
    table = (28.441, 47.301, 56.120, 69.127, 76.373, 88.026, 94.947, 106.702, 114.085, 127.535, 136.882)
    refl = standard("Si").reflections(Radiation(((1.5405929, 1.0),)), 140.0)
    # 333 and 511 coincide (two Laue orbits, one line); 222, 622, ... are allowed by Fd-3m but zero on 8a only
    lines = np.unique(np.round(refl.two_theta[refl.intensity > 1e-6], 3))
    assert lines.tolist() == pytest.approx(list(table), abs=1.5e-3)


def test_corundum_strongest_line_is_113_as_certified() -> None:
    # SRM 676a certified relative intensities: 113 is the strongest line (d = 2.0855 Å), 104 and 116 next
    refl = standard("Al2O3").reflections(Radiation.cu_ka1(), 70.0)
    order = np.argsort(refl.intensity)[::-1]
    assert refl.d[order[0]] == pytest.approx(2.0855, abs=1e-3)
    assert sorted(np.round(refl.d[order[1:3]], 3).tolist()) == pytest.approx([1.601, 2.551], abs=2e-3)


# ---------------------------------------------------------------------------------------------- calibrations
# A lab diffractometer with a primary monochromator (Cu Kα1), Bragg–Brentano: displaced sample, FCJ asymmetry.
LAB_TRUTH = Instrument.lab_default().replace(radiation=Radiation.cu_ka1(), zero=-0.027, u=6.0, v=-2.5, w=5.0, x=1.5,
                                             y=2.5, s_l=0.012, h_l=0.012, displacement_um=40.0)
LAB_X = np.arange(19.0, 90.0, 0.01)


@pytest.fixture(scope="module")
def lab_calibration() -> Calibration:
    y = draw(LAB_TRUTH, "LaB6", LAB_X)
    # start: the lab default widths (about twice too wide), no Lorentzian, no asymmetry, no displacement
    return calibrate(LAB_X, y, "LaB6", Instrument.lab_default().replace(radiation=Radiation.cu_ka1()))


# The covered range of the lab scans (19–90°, LaB6 lines from 21.4° to 87.9°), ends included.
LAB_ANGLES = np.array([22.0, 30.0, 40.0, 60.0, 75.0, 88.0])


def test_lab_lab6_calibration_recovers_the_simulated_instrument(lab_calibration: Calibration) -> None:
    # Measured (engine of d8f795c): FWHM +0.65, +0.6, +0.6, +0.7, +0.8, +0.9 % at LAB_ANGLES, shift within 1e-4°;
    # χ² 7430.4 from the single-line seed, 7430.7 from the lab default (one minimum). Without the bin term
    # (bin_integrated=False) +1.2 … +1.4 %; an older engine from the lab default alone: +4 … +6 % at the ends.
    assert_recovers(lab_calibration, LAB_TRUTH, LAB_ANGLES)
    assert "displacement_um" in lab_calibration.refined
    assert lab_calibration.gof < 1.5
    chi2 = lab_calibration.start_chi2
    assert set(chi2) == {"lines", "start"} and lab_calibration.result.chi2 == pytest.approx(min(chi2.values()))
    d = lab_calibration.to_dict()
    assert d["standard"] == "LaB6" and d["instrument"]["geometry"] == "bragg-brentano"
    assert d["start_chi2"] == chi2
    assert Instrument.from_dict(d["instrument"]) == lab_calibration.instrument


def test_single_line_fits_seed_the_instrument(lab_calibration: Calibration) -> None:
    # Steps 2 and 3 alone (no whole-pattern fit), windows from the lab default's widths (twice too wide): 11
    # isolated lines; seed FWHM within 5 % of the truth (measured −3.3 … +0.4 %). A single line's shift and its
    # FCJ asymmetry are correlated (S/L + H/L comes out 0.023 at 21°, 0.04–0.06 above 50°, truth 0.024), so the
    # seed's shift is only a start: measured within 0.012° (the whole-pattern fit takes it to 1e-4°).
    start = Instrument.lab_default().replace(radiation=Radiation.cu_ka1())
    fits = fit_lines(lab_calibration.two_theta, lab_calibration.counts, standard("LaB6"), start)
    assert len(fits) >= 8
    seed = seed_instrument(fits, start, ("zero", "u", "v", "w", "x", "y", "s_l", "h_l", "displacement_um"))
    assert seed is not None
    assert np.all(np.abs(seed.fwhm(LAB_ANGLES) / LAB_TRUTH.fwhm(LAB_ANGLES) - 1.0) < FWHM_TOL)
    assert np.all(np.abs(seed.shift(LAB_ANGLES) - LAB_TRUTH.shift(LAB_ANGLES)) < 0.02)
    assert seed.s_l + seed.h_l == pytest.approx(LAB_TRUTH.s_l + LAB_TRUTH.h_l, abs=0.01)
    assert seed_instrument(fits[:3], start, ("u",)) is None  # too few lines: no seed


def test_lab_kalpha_doublet_calibration_at_a_coarse_step() -> None:
    # Cu Kα1 + Kα2 (no monochromator), another noise seed, a 0.02° step (a third of the 0.065° FWHM at 22°): the
    # simulator integrates counts over each bin, the calibration's model carries the bin as W + Δ²/12.
    # Measured: +2.2, +1.5, +0.9, +0.3, +0.6, +1.2 % at LAB_ANGLES (without the bin term, bin_integrated=False:
    # +4.6 … +2.0 %). The seed's start only (multistart=False: the default's second start reached the same χ²).
    # With half the points per peak a single reflection's centroid is noisier: measured up to 0.0049° (320).
    truth = LAB_TRUTH.replace(radiation=Instrument.lab_default().radiation)
    x = np.arange(19.0, 90.0, 0.02)
    cal = calibrate(x, draw(truth, "LaB6", x, seed=9), "LaB6", Instrument.lab_default(), multistart=False)
    assert set(cal.start_chi2) == {"lines"}
    assert_recovers(cal, truth, LAB_ANGLES, table_zero_tol=2 * TABLE_ZERO_TOL)


def test_another_instrument_with_unequal_asymmetry_is_recovered() -> None:
    # Not the instrument the other tests use: other U, V, W, X, Y, S/L ≠ H/L, positive zero, negative displacement,
    # Kα doublet, 0.015° step, other counts and noise seed. FCJ is symmetric in S/L and H/L (only the pair is
    # measurable). Measured: FWHM +2.7, +1.8, +1.0, +0.3, +0.7, +1.4 % at LAB_ANGLES, shift within 3e-4°,
    # S/L, H/L = 0.0203, 0.0059 (truth 0.008, 0.020); χ² 4988.5 from the seed (off S/L = H/L), 4994.7 from the
    # lab default (which stays on S/L = H/L).
    truth = Instrument.lab_default().replace(zero=0.035, u=15.0, v=-6.0, w=8.0, x=0.8, y=4.0, s_l=0.008, h_l=0.02,
                                             displacement_um=-60.0)
    x = np.arange(19.0, 90.0, 0.015)
    cal = calibrate(x, draw(truth, "LaB6", x, seed=21, peak=3e4, background=300.0), "LaB6",
                    Instrument.lab_default())
    assert_recovers(cal, truth, LAB_ANGLES)
    got = sorted((cal.instrument.s_l, cal.instrument.h_l))
    assert got == pytest.approx(sorted((truth.s_l, truth.h_l)), abs=0.004)


def test_bin_variance_is_the_detector_bin_to_second_order() -> None:
    # A Voigt-like TCH peak with FCJ asymmetry averaged over bins a third of its FWHM wide (41 sub-samples) vs the
    # same peak sampled at the bin centres with W + Δ²/12: within 0.25 % of the peak height (measured 0.14–0.17 %);
    # sampled without it: ≥ 1.5 % off (measured 2.1–2.2 %).
    inst = LAB_TRUTH.replace(displacement_um=0.0)
    for tt in (22.0, 80.0):
        fw = float(inst.fwhm(tt))
        step = 0.3 * fw
        x = np.arange(tt - 1.0, tt + 1.0, step)
        sub = (np.arange(41) + 0.5) / 41 - 0.5
        fine = (x[:, None] + step * sub[None, :]).ravel()

        def peak(i: Instrument, xs: np.ndarray) -> np.ndarray:
            return render_instrument_peaks(xs, [tt], [1.0], i.fwhm_gauss([tt]), i.fwhm_lorentz([tt]), i, window=15.0)

        box = peak(inst, fine).reshape(x.size, -1).mean(axis=1)
        assert bin_variance(x) == pytest.approx((100 * step) ** 2 / 12, rel=1e-6)
        corrected = peak(inst.replace(w=inst.w + bin_variance(x)), x)
        assert np.abs(corrected - box).max() < 0.0025 * box.max()
        assert np.abs(peak(inst, x) - box).max() > 0.015 * box.max()


@pytest.fixture(scope="module")
def synchrotron() -> tuple[Instrument, np.ndarray, np.ndarray]:
    truth = read_instrument(PRM).replace(zero=0.0123)
    x = np.arange(4.0, 24.0, 0.002)
    return truth, x, draw(truth, "LaB6", x, seed=11)


def test_synchrotron_calibration_from_a_bare_wavelength_recovers_the_prm(synchrotron) -> None:
    truth, x, y = synchrotron
    # a bare wavelength: lab default widths (≈ 8× too wide here), rescaled by the peak search before the single
    # lines are fitted (the seed's start only). Measured: FWHM +0.7, +0.3, +0.15, +0.15, +0.3 %, zero within 1e-5°.
    cal = calibrate(x, y, "LaB6", Instrument.from_wavelength(truth.radiation.wavelength), multistart=False)
    assert any("scaled" in w for w in cal.warnings)
    assert_recovers(cal, truth, np.array([6.0, 10.0, 14.0, 18.0, 22.0]))
    assert abs(cal.instrument.zero - truth.zero) < ZERO_TOL


def test_not_the_standard_is_refused() -> None:
    inst = Instrument.lab_default()
    x = np.arange(19.0, 90.0, 0.02)
    si = draw(inst, "Si", x)
    with pytest.raises(NotTheStandardError, match="does not look like LaB6"):
        calibrate(x, si, "LaB6", inst)
    noise = np.random.default_rng(3).poisson(200.0, x.size).astype(float)
    with pytest.raises(NotTheStandardError):
        calibrate(x, noise, "LaB6", inst)


def test_bad_input_is_one_line() -> None:
    inst = Instrument.lab_default()
    x = np.arange(20.0, 30.0, 0.02)
    with pytest.raises(CalibrationError, match="differ in length"):
        calibrate(x, x[:-1], "LaB6", inst)
    with pytest.raises(CalibrationError, match="increase"):
        calibrate(x[::-1], x, "LaB6", inst)
    with pytest.raises(CalibrationError, match="Bragg–Brentano"):
        calibrate(x, x, "LaB6", read_instrument(PRM), refine=("zero", "displacement_um"))
    with pytest.raises(CalibrationError, match="cannot refine"):
        calibrate(x, x, "LaB6", inst, refine=("zero", "lattice"))


def test_sample_broadening_folds_into_x_and_u() -> None:
    inst = Instrument.lab_default()
    folded = fold_sample_broadening(inst, 500.0, 2e-4, ("x", "u"))
    tt = np.array([30.0, 90.0])
    th = np.radians(tt / 2)
    lam = inst.radiation.wavelength
    size_fwhm = np.degrees(0.9 * lam / (5000.0 * np.cos(th)))
    strain_fwhm = np.degrees(4 * 2e-4 * np.tan(th))
    assert folded.fwhm_lorentz(tt) == pytest.approx(inst.fwhm_lorentz(tt) + size_fwhm, rel=1e-9)
    assert folded.fwhm_gauss(tt) == pytest.approx(np.hypot(inst.fwhm_gauss(tt), strain_fwhm), rel=1e-9)
    assert fold_sample_broadening(inst, 500.0, 2e-4, ("zero",)) == inst
