"""Instrument calibration from a powder pattern of a standard whose cell is certified (LaB6, Si, CeO2, Al2O3).

What it does: a whole-pattern (Rietveld-style) refinement by the project's refinement engine
(:mod:`hotstage.analysis.refine`) of the *instrument* — zero shift, Caglioti Gaussian U, V, W, Lorentzian X, Y,
Finger–Cox–Jephcoat axial-divergence asymmetry S/L, H/L, and the sample displacement of a Bragg–Brentano
goniometer — with the standard's cell held at its certified value and no sample broadening (the SRMs are made
free of it), so that every position error and every width is attributed to the instrument. This is the usual
instrument-profile calibration with a line-profile SRM (NIST SRM 660c certificate, "Intended use"; GSAS-II
"Calibrating an instrument with a standard" practice: refine only instrument parameters with the cell fixed).

Strategy (how a diffractionist calibrates; no tuning to one data set):

1. Check and place: a quick peak search confirms the pattern is the standard and puts the start's zero and
   widths where the data are (below).
2. Single lines: every isolated strong line of the standard is fitted on its own (:func:`fit_lines`: shift,
   Gaussian and Lorentzian FWHM, FCJ S/L + H/L, local straight background; every wavelength of the radiation).
3. Seed: linear least squares of those widths against angle give U, V, W (Gaussian variance in tan²θ, tanθ, 1)
   and X, Y (Lorentzian in 1/cosθ, tanθ); the shifts give zero and displacement (1, cosθ); S/L and H/L share
   the mean S/L + H/L 0.8 : 0.2 (:func:`seed_instrument`; FCJ is symmetric in the two, so a fit started at
   S/L = H/L, where the χ² gradient along S/L − H/L vanishes, never finds unequal ones). This start lies in
   the right valley of the U–V–W / X–Y / S/L–H/L surfaces, which a whole-pattern fit from lab-default widths
   does not always reach: on the simulated rig's LaB6 scan the engine before f8cbc3e stopped at U = 43,
   V = −27 (truth 22, −10), χ² 6211–6244 against 6160–6170 from the seed, FWHM +3.4 % at 22° instead of
   +1.6 % (tests/test_sim_calibration.py); an older engine stopped 4–6 % wide at the ends of a 19–90° scan.
4. Whole pattern, two starts: from the seed (warm) and from the rescaled user start (positions and symmetric
   widths first, then the asymmetry); each re-fitted while Rwp falls; the lower χ² is kept
   (`Calibration.start_chi2` reports both). Fewer than ``SEED_MIN_LINES`` single lines: the user start only.

Detector bins: the counts of a continuous scan or a binned detector are integrals over each step Δ, while the
engine samples the profile at the bin centre. To second order in Δ that integral is the profile convolved with a
Gaussian of variance Δ²/12 (:func:`bin_variance`), a constant W term: the model carries it while fitting and the
written instrument does not (``bin_integrated=False`` for counts sampled at one angle each). Without it a
0.02° step made 0.065° peaks come out several % wide.

Start values: a quick peak search (``scipy.signal.find_peaks`` / ``peak_widths``) measures the observed widths of
the strongest isolated peaks. When the start instrument's FWHM differs from them by more than a factor
``WIDTH_RESCALE_FACTOR`` (a bare wavelength gives the lab default widths, ten times too wide for a synchrotron),
its Gaussian variance terms are scaled by the squared width ratio and its Lorentzian terms by the ratio. The same
search matches the observed peaks against the standard's reflections (after the best common offset within
±``MAX_ZERO_SEARCH`` degrees, which starts the zero): a pattern whose strongest peaks do not match is refused
(:class:`NotTheStandardError`) rather than fitted.

Sample broadening: the engine refines a crystallite size and a microstrain for every phase. For a standard these
are, as functions of θ, exactly the instrument's X/cosθ (Lorentzian) and U tan²θ (Gaussian variance) terms, so
refining both would be singular: the instrument's U and X start at 0 and are carried by the sample terms, which
are folded back into U and X afterwards (:func:`fold_sample_broadening`).

Per-reflection residuals (the calibration's report card) are measured on the fitted curve, per isolated
reflection: Δ2θ = centroid(observed − background) − centroid(calculated − background) over ±``WINDOW_FWHM``
FWHM (the same window, so the doublet and the asymmetry cancel); the observed FWHM is the instrument's model FWHM
times the ratio of the half-maximum widths measured on the observed and the calculated profile; the intensity
residual is (Σ observed − Σ calculated)/Σ calculated over the window (net of background).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .crystal import Crystal

if TYPE_CHECKING:  # the instrument module is imported at call time (built alongside this one)
    from .instrument import Instrument

__all__ = ["calibrate", "Calibration", "ReflectionResidual", "CalibrationError", "NotTheStandardError",
           "DEFAULT_REFINE", "find_peaks_quick", "match_standard", "LineFit", "fit_lines", "seed_instrument",
           "bin_variance", "fold_sample_broadening"]

DEFAULT_REFINE: tuple[str, ...] = ("zero", "u", "v", "w", "x", "y", "s_l", "h_l")
"""Instrument parameters refined by default (plus "displacement_um" for a Bragg–Brentano instrument)."""
WIDTH_RESCALE_FACTOR: float = 1.6
"""Start widths are rescaled to the observed ones when they differ by more than this factor."""
MAX_ZERO_SEARCH: float = 1.0
"""Largest zero offset (deg) the match search tries."""
MAX_MATCH_TOLERANCE: float = 0.3
"""Largest position tolerance (deg) of the match (broad noise "peaks" must not match anything)."""
MATCH_FRACTION: float = 0.6
"""Fraction of the strongest observed peaks that must sit on a reflection of the standard, and fraction of the
standard's strong lines in the range that must have an observed peak."""
STRONG_LINE: float = 20.0
"""A "strong line" of the standard: relative intensity ≥ 20 % of its strongest (primary wavelength)."""
WINDOW_FWHM: float = 2.0
"""Half-width, in model FWHM, of the window each reflection's residuals are measured over."""
MIN_PEAK_SIGMAS: float = 20.0
"""A reflection enters the residual table when its calculated net height is this many σ of the background…"""
MIN_PEAK_FRACTION: float = 0.02
"""…and at least this fraction of the strongest peak (weak lines give noisy centroids and widths)."""
MAX_REFITS: int = 3
"""At most this many warm re-fits after the first refinement…"""
REFIT_GAIN: float = 1e-3
"""…each kept going only while it lowers Rwp by more than this fraction."""
LINE_WINDOW_FWHM: float = 4.0
"""Half-width, in start FWHM, of the window each single line is fitted over (step 1)."""
MAX_LINE_ASYMMETRY: float = 0.1
"""Largest S/L + H/L a single-line fit may take (and the FCJ span its window allows for below the line)."""
LINE_NEIGHBOUR: float = 0.005
"""A line counts as a neighbour (spoiling isolation) when at least this fraction of the fitted line's intensity."""
ASYMMETRY_SPLIT: float = 0.8
"""The seed's S/L is this fraction of the lines' S/L + H/L, H/L the rest (off the S/L = H/L ridge)."""
SEED_MIN_LINES: int = 4
"""Fewest single-line fits a seed is made from (U, V, W need three angles; one more to spare)."""
_N_STRONG = 10


class CalibrationError(ValueError):
    """Bad input for a calibration (the message is one line)."""


class NotTheStandardError(CalibrationError):
    """The pattern does not look like the named standard (no match of peak positions)."""


@dataclass(frozen=True)
class ReflectionResidual:
    """Residuals of one isolated reflection after the calibration (angles in degrees 2θ)."""

    hkl: tuple[int, int, int]
    two_theta_calc: float
    delta_two_theta: float
    fwhm_obs: float
    fwhm_model: float
    intensity_residual: float

    def to_dict(self) -> dict:
        """JSON-able row."""
        return {"hkl": list(self.hkl), "two_theta_calc": self.two_theta_calc,
                "delta_two_theta": self.delta_two_theta, "fwhm_obs": self.fwhm_obs,
                "fwhm_model": self.fwhm_model, "intensity_residual": self.intensity_residual}


@dataclass
class Calibration:
    """A refined instrument with the fit's quality and per-reflection residuals."""

    instrument: "Instrument"
    start: "Instrument"
    standard: str
    rwp: float
    gof: float
    two_theta: NDArray[np.float64]
    counts: NDArray[np.float64]
    curve: NDArray[np.float64]
    background: NDArray[np.float64]
    reflections: list[ReflectionResidual]
    refined: tuple[str, ...]
    warnings: list[str] = field(default_factory=list)
    result: Any = None
    """The refinement engine's own result (RefineResult), for what this summary does not carry."""
    start_chi2: dict[str, float] = field(default_factory=dict)
    """χ² of the whole-pattern fit from each start ("lines": the single-line seed, "start": the user's)."""

    @property
    def tick_positions(self) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """(2θ, hkl) of the standard's reflections as the engine reports them (for plots)."""
        refl = getattr(self.result, "reflections", None) or {}
        if self.standard in refl:
            tt, hkl = refl[self.standard]
            return np.asarray(tt, dtype=float), np.asarray(hkl)
        return np.array([r.two_theta_calc for r in self.reflections]), np.array([r.hkl for r in self.reflections])

    def to_dict(self) -> dict:
        """JSON-able summary: instrument (start and refined), Rwp, GoF, residual table, warnings."""
        d = np.array([r.delta_two_theta for r in self.reflections])
        ratio = np.array([r.fwhm_obs / r.fwhm_model for r in self.reflections if r.fwhm_model > 0])
        return {
            "standard": self.standard,
            "instrument": self.instrument.to_dict(),
            "start": self.start.to_dict(),
            "refined": list(self.refined),
            "rwp": self.rwp,
            "gof": self.gof,
            "n_points": int(self.two_theta.size),
            "reflections": [r.to_dict() for r in self.reflections],
            "rms_delta_two_theta": float(np.sqrt(np.mean(d * d))) if d.size else None,
            "max_fwhm_mismatch": float(np.max(np.abs(ratio - 1.0))) if ratio.size else None,
            "start_chi2": dict(self.start_chi2),
            "warnings": list(self.warnings),
        }


# ---------------------------------------------------------------------------------------------- peak search
def find_peaks_quick(two_theta: NDArray[np.float64], counts: NDArray[np.float64],
                     n: int = 20) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """The `n` most prominent peaks: (centre 2θ, FWHM in degrees, prominence), strongest first.

    A light smoothing (3-point) keeps counting noise from splitting peaks; prominence must exceed 5 σ of the
    Poisson noise of the local level, so a flat or pure-noise pattern returns nothing.
    """
    from scipy.signal import find_peaks, peak_widths

    y = np.convolve(counts, np.ones(3) / 3.0, mode="same")
    step = float(np.median(np.diff(two_theta)))
    noise = np.sqrt(np.maximum(np.median(y), 1.0))
    idx, props = find_peaks(y, prominence=max(5.0 * noise, 1e-12 + 0.002 * float(np.ptp(y))))
    if idx.size == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    order = np.argsort(props["prominences"])[::-1][:n]
    idx = idx[order]
    widths = peak_widths(y, idx, rel_height=0.5)[0] * step
    # sub-step centre: parabola through the three highest points
    centre = two_theta[idx].astype(float)
    inner = (idx > 0) & (idx < y.size - 1)
    i = idx[inner]
    den = y[i - 1] - 2 * y[i] + y[i + 1]
    off = np.where(den < 0, 0.5 * (y[i - 1] - y[i + 1]) / np.where(den < 0, den, -1.0), 0.0)
    centre[inner] += np.clip(off, -1, 1) * step
    return centre, widths, props["prominences"][order]


def match_standard(peaks: NDArray[np.float64], widths: NDArray[np.float64], calc: NDArray[np.float64],
                   step: float) -> tuple[float, int, float]:
    """Best common offset (deg) of observed `peaks` against calculated reflection positions `calc`.

    Returns (offset, number of the observed peaks matched, tolerance used). A peak matches when a reflection
    lies within max(0.6 × the median FWHM, 2 steps, 0.02°), at most MAX_MATCH_TOLERANCE, after the offset;
    offsets are tried on a grid finer than the tolerance over ±MAX_ZERO_SEARCH.
    """
    if peaks.size == 0 or calc.size == 0:
        return 0.0, 0, 0.0
    tol = float(min(max(0.6 * np.median(widths), 2.0 * step, 0.02), MAX_MATCH_TOLERANCE))
    grid = np.arange(-MAX_ZERO_SEARCH, MAX_ZERO_SEARCH + 1e-12, tol / 4.0)
    calc = np.sort(calc)
    best_score: tuple[int, float] = (0, -np.inf)
    best_z = 0.0
    for z in grid:
        pos = np.searchsorted(calc, peaks - z)
        lo = np.abs(peaks - z - calc[np.clip(pos - 1, 0, calc.size - 1)])
        hi = np.abs(peaks - z - calc[np.clip(pos, 0, calc.size - 1)])
        dist = np.minimum(lo, hi)
        score = (int(np.sum(dist <= tol)), -float(np.sum(np.minimum(dist, tol))))
        if score > best_score:
            best_score, best_z = score, float(z)
    return best_z, best_score[0], tol


# ---------------------------------------------------------------------------------------------- the calibration
def _validate(two_theta: ArrayLike, counts: ArrayLike, sigma: ArrayLike | None
              ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64] | None]:
    """Arrays as float, same length, finite, 2θ increasing; one-line CalibrationError otherwise."""
    x = np.asarray(two_theta, dtype=float).ravel()
    y = np.asarray(counts, dtype=float).ravel()
    if x.size != y.size:
        raise CalibrationError(f"2θ and counts differ in length ({x.size} and {y.size})")
    if x.size < 50:
        raise CalibrationError(f"a calibration needs a pattern of at least 50 points, got {x.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise CalibrationError("2θ or counts contain NaN or infinite values")
    if np.any(np.diff(x) <= 0):
        raise CalibrationError("2θ must increase strictly")
    s = None
    if sigma is not None:
        s = np.asarray(sigma, dtype=float).ravel()
        if s.size != x.size or not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise CalibrationError("sigma must be positive and finite, one per point")
    return x, y, s


def _start_instrument(start: "Instrument", x: NDArray[np.float64], y: NDArray[np.float64], crystal: Crystal,
                      warnings: list[str]) -> "Instrument":
    """Check that the pattern is the standard and put the start's zero and widths where the data are."""
    step = float(np.median(np.diff(x)))
    centres, widths, prom = find_peaks_quick(x, y, n=_N_STRONG)
    name = crystal.name
    if centres.size < 3:
        raise NotTheStandardError(f"the pattern has {centres.size} clear peak(s): it does not look like {name}")
    lam = start.radiation.wavelength
    refl = crystal.reflections(start.radiation, float(x[-1]) + 1.0, max(float(x[0]) - 1.0, 0.0))
    strong = refl.intensity >= 1.0
    calc = refl.two_theta[strong] + np.asarray(start.shift(refl.two_theta[strong]), dtype=float)
    # other lines of a lab tube (Kα2) sit at their own angles: add them as acceptable positions
    for wl, weight in start.radiation.lines[1:]:
        if weight > 0:
            arg = wl / (2.0 * refl.d[strong])
            ok = arg < 1
            calc = np.concatenate([calc, np.degrees(2 * np.arcsin(arg[ok]))])
    offset, hits, tol = match_standard(centres, widths, calc, step)
    need = max(3, int(math.ceil(MATCH_FRACTION * centres.size)))
    if hits < need:
        raise NotTheStandardError(
            f"the pattern does not look like {name} at λ = {lam:.5f} Å: only {hits} of its {centres.size} "
            f"strongest peaks lie within {tol:.3f}° of a {name} reflection (any zero offset within "
            f"±{MAX_ZERO_SEARCH:g}°)")
    # the other way round: the standard's strong lines (primary wavelength) must be there
    main_lines = refl.two_theta[refl.intensity >= STRONG_LINE] + np.asarray(
        start.shift(refl.two_theta[refl.intensity >= STRONG_LINE]), dtype=float) + offset
    main_lines = main_lines[(main_lines > x[0]) & (main_lines < x[-1])]
    many, _, _ = find_peaks_quick(x, y, n=max(60, 4 * main_lines.size))
    found = sum(bool(np.any(np.abs(many - t) <= tol)) for t in main_lines)
    if main_lines.size and found < MATCH_FRACTION * main_lines.size:
        raise NotTheStandardError(
            f"the pattern does not look like {name} at λ = {lam:.5f} Å: only {found} of its {main_lines.size} "
            f"strong lines in {x[0]:g}–{x[-1]:g}° have a peak within {tol:.3f}°")
    inst = start.replace(zero=start.zero + offset) if abs(offset) > 0.25 * tol else start
    # widths: compare the start's FWHM with the observed FWHM of the matched strong peaks
    model = np.asarray(inst.fwhm(centres), dtype=float)
    good = widths > 2.0 * step
    if np.any(good):
        ratio = float(np.median(widths[good] / np.maximum(model[good], 1e-6)))
        zero_width = not any((inst.u, inst.v, inst.w, inst.x, inst.y, getattr(inst, "z", 0.0)))
        if zero_width:
            fw = float(np.median(widths[good]))
            inst = inst.replace(w=(fw * 100.0) ** 2 / (8.0 * math.log(2.0)) * 0.7, y=0.0, x=fw * 100.0 * 0.3 * 0.5)
            warnings.append(f"the start instrument had no widths: started from the observed FWHM ≈ {fw:.4f}°")
        elif ratio > WIDTH_RESCALE_FACTOR or ratio < 1.0 / WIDTH_RESCALE_FACTOR:
            inst = inst.replace(u=inst.u * ratio ** 2, v=inst.v * ratio ** 2, w=inst.w * ratio ** 2,
                                x=inst.x * ratio, y=inst.y * ratio)
            warnings.append(f"start widths scaled by {ratio:.3g} to the observed peaks (the start instrument's "
                            f"FWHM was {1 / ratio:.3g} × the observed)")
    return inst


@dataclass(frozen=True)
class LineFit:
    """One isolated line of the standard fitted on its own (angles and widths in degrees 2θ).

    `shift` is observed − Bragg position of the primary line; the widths are the Gaussian and Lorentzian FWHM of
    the TCH pseudo-Voigt (detector bin included, as measured); `asymmetry` is S/L + H/L (FCJ, S/L = H/L)."""

    two_theta: float
    shift: float
    shift_su: float
    fwhm_gauss: float
    fwhm_gauss_su: float
    fwhm_lorentz: float
    fwhm_lorentz_su: float
    asymmetry: float
    asymmetry_su: float


def _lines(crystal: Crystal, inst: "Instrument", lo: float, hi: float) -> tuple[NDArray[np.float64], ...]:
    """The standard's lines (coincident reflections merged): Bragg 2θ of the primary line, d, relative intensity."""
    refl = crystal.reflections(inst.radiation, hi, max(lo, 0.0))
    if len(refl) == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    order = np.argsort(refl.two_theta)
    tt, d, inten = refl.two_theta[order], refl.d[order], refl.intensity[order]
    group = np.concatenate(([0], np.cumsum(np.diff(tt) > 1e-6)))
    n = int(group[-1]) + 1
    out_tt = np.array([tt[group == g][0] for g in range(n)])
    out_d = np.array([d[group == g][0] for g in range(n)])
    out_i = np.array([inten[group == g].sum() for g in range(n)])
    return out_tt, out_d, out_i


def fit_lines(two_theta: ArrayLike, counts: ArrayLike, standard: Crystal, inst: "Instrument",
              sigma: ArrayLike | None = None) -> list[LineFit]:
    """Fit every isolated, strong line of `standard` on its own (step 2 of the calibration, module docstring).

    Around each line (±``LINE_WINDOW_FWHM`` of `inst`'s FWHM, widened by its FCJ span below and its other
    wavelength lines above) a local straight background plus the line seen through every wavelength of the
    radiation (areas in the lines' ratios, one common shift) as a TCH pseudo-Voigt convolved with the FCJ kernel
    (S/L = H/L); nonlinear: shift, Gaussian and Lorentzian FWHM, S/L + H/L (≤ ``MAX_LINE_ASYMMETRY``); linear:
    area and background.
    Isolated: no other line of the standard (any wavelength, ≥ ``LINE_NEIGHBOUR`` of its intensity) inside the
    window. Strong: net height ≥ ``MIN_PEAK_SIGMAS`` σ of the background. s.u. from the Jacobian scaled by
    χ²/(N − P)."""
    from scipy.optimize import least_squares

    from .instrument import render_instrument_peaks
    from .profiles import lorentz_polarisation

    x = np.asarray(two_theta, dtype=float)
    y = np.asarray(counts, dtype=float)
    s = np.sqrt(np.maximum(y, 1.0)) if sigma is None else np.asarray(sigma, dtype=float)
    rad = inst.radiation
    tt_b, d, inten = _lines(standard, inst, float(x[0]), float(x[-1]))
    lams = np.array([w for w, r in rad.lines if r > 0])
    wts = np.array([r for _, r in rad.lines if r > 0])
    # every line's position at every wavelength (for the isolation test)
    pos = np.degrees(2 * np.arcsin(np.clip(lams[:, None] / (2 * d[None, :]), 0, 1)))
    ok_pos = lams[:, None] / (2 * d[None, :]) < 1
    step = float(np.median(np.diff(x)))
    out: list[LineFit] = []
    for i in range(tt_b.size):
        fw = float(inst.fwhm(tt_b[i]))
        c = pos[:, i][ok_pos[:, i]]
        if c.size == 0:
            continue
        shift0 = float(inst.shift(tt_b[i]))
        fcj_span = float(tt_b[i]) - math.degrees(math.acos(min(math.cos(math.radians(float(tt_b[i])))
                                                            * math.sqrt(1 + MAX_LINE_ASYMMETRY ** 2), 1.0)))
        lo = float(c.min()) + shift0 - LINE_WINDOW_FWHM * fw - (fcj_span if tt_b[i] < 90 else 0.0)
        hi = float(c.max()) + shift0 + LINE_WINDOW_FWHM * fw + (fcj_span if tt_b[i] > 90 else 0.0)
        if lo < x[0] or hi > x[-1]:
            continue
        others = np.ones(tt_b.size, dtype=bool)
        others[i] = False
        others &= inten >= LINE_NEIGHBOUR * inten[i]
        near = pos[:, others][ok_pos[:, others]] + shift0
        if np.any((near > lo - fw) & (near < hi + fw)):
            continue
        sel = (x >= lo) & (x <= hi)
        xs, ys, ws = x[sel], y[sel], 1.0 / s[sel]
        if xs.size < 12 or fw < 2 * step:
            continue
        base = float(np.median(np.r_[ys[:3], ys[-3:]]))
        if ys.max() - base < MIN_PEAK_SIGMAS * math.sqrt(max(base, 1.0)):
            continue
        lp = lorentz_polarisation(c, rad)
        a_line = wts[ok_pos[:, i]] * lp / lp[0]
        t = (xs - xs.mean()) / max(float(np.ptp(xs)), 1e-9)

        def design(p: NDArray[np.float64], xs: NDArray[np.float64] = xs, c: NDArray[np.float64] = c,
                   a_line: NDArray[np.float64] = a_line, t: NDArray[np.float64] = t) -> NDArray[np.float64]:
            local = inst.replace(s_l=p[3] / 2.0, h_l=p[3] / 2.0)
            peak = render_instrument_peaks(xs, c + p[0], a_line, np.full(c.size, p[1]), np.full(c.size, p[2]),
                                           local, window=15.0)
            return np.column_stack((peak, np.ones_like(xs), t))

        def resid(p: NDArray[np.float64], ys: NDArray[np.float64] = ys, ws: NDArray[np.float64] = ws
                  ) -> NDArray[np.float64]:
            a = design(p) * ws[:, None]
            coef = np.linalg.lstsq(a, ys * ws, rcond=None)[0]
            return a @ coef - ys * ws

        p0 = np.array([shift0, 0.8 * fw, 0.3 * fw, 0.01])
        lower = np.array([shift0 - fw, 0.05 * fw, 0.0, 0.0])
        upper = np.array([shift0 + fw, 3.0 * fw, 3.0 * fw, MAX_LINE_ASYMMETRY])
        try:  # tolerances: widths to ~1e-5 relative, far below their counting s.u.
            fit = least_squares(resid, p0, bounds=(lower, upper), ftol=1e-6, xtol=1e-6, max_nfev=200,
                                x_scale=np.array([0.1 * fw, 0.1 * fw, 0.1 * fw, 0.005]))
        except (ValueError, np.linalg.LinAlgError):
            continue
        dof = max(xs.size - 7, 1)
        s2 = 2.0 * fit.cost / dof
        try:
            cov = np.linalg.pinv(fit.jac.T @ fit.jac) * s2
            su = np.sqrt(np.maximum(np.diag(cov), 0.0))
        except np.linalg.LinAlgError:
            continue
        if not np.all(np.isfinite(su)):
            continue
        p = fit.x
        # s.u. floors (a parameter on its bound can get a vanishing one): 0.2 % of the line's FWHM
        su[:3] = np.maximum(su[:3], 0.002 * max(float(p[1]), float(p[2])))
        out.append(LineFit(float(tt_b[i]), float(p[0]), float(su[0]), float(p[1]), float(su[1]), float(p[2]),
                           float(su[2]), float(p[3]), float(su[3])))
    return out


def seed_instrument(fits: Sequence[LineFit], inst: "Instrument", refine: Sequence[str]) -> "Instrument | None":
    """Instrument from the single-line fits by linear least squares against angle (None: too few lines).

    Gaussian variance σ² = (100·FWHM_G)²/(8 ln2) = U tan²θ + V tanθ + W (U, W ≥ 0); Lorentzian 100·FWHM_L =
    X/cosθ + Y tanθ (X, Y ≥ 0); shift = zero − 2 s cosθ/R (Bragg–Brentano) or zero; S/L = H/L = half the
    inverse-variance mean of the lines' S/L + H/L split ``ASYMMETRY_SPLIT`` : rest. Weights: the lines' s.u.
    Only parameters in `refine` change.
    """
    from scipy.optimize import lsq_linear

    if len(fits) < SEED_MIN_LINES:
        return None
    tt = np.array([f.two_theta for f in fits])
    th = np.radians(tt) / 2.0
    tan, cos = np.tan(th), np.cos(th)
    k = 1e4 / (8.0 * math.log(2.0))
    fg = np.array([f.fwhm_gauss for f in fits])
    sg = np.maximum(np.array([2.0 * k * f.fwhm_gauss * f.fwhm_gauss_su for f in fits]), 1e-6)
    fl = np.array([f.fwhm_lorentz for f in fits])
    sl = np.maximum(np.array([100.0 * f.fwhm_lorentz_su for f in fits]), 1e-6)
    g = lsq_linear(np.column_stack((tan ** 2, tan, np.ones_like(tan))) / sg[:, None], k * fg ** 2 / sg,
                   bounds=([0.0, -np.inf, 0.0], [np.inf, np.inf, np.inf]))
    lor = lsq_linear(np.column_stack((1.0 / cos, tan)) / sl[:, None], 100.0 * fl / sl, bounds=(0.0, np.inf))
    changes: dict[str, float] = {}
    for name, val in zip(("u", "v", "w"), g.x):
        changes[name] = float(val)
    for name, val in zip(("x", "y"), lor.x):
        changes[name] = float(val)
    asym = np.array([f.asymmetry for f in fits])
    sa = np.array([f.asymmetry_su for f in fits])
    good = sa > 0
    if np.any(good):
        a = float(np.sum(asym[good] / sa[good] ** 2) / np.sum(1.0 / sa[good] ** 2))
        # FCJ is symmetric in S/L and H/L, so on S/L = H/L the χ² gradient along S/L − H/L is zero and a fit
        # started there never leaves it: start off that ridge (the other start stays on it)
        changes["s_l"], changes["h_l"] = ASYMMETRY_SPLIT * a, (1.0 - ASYMMETRY_SPLIT) * a
    shift = np.array([f.shift for f in fits])
    ss = np.maximum(np.array([f.shift_su for f in fits]), 1e-6)
    if "displacement_um" in refine:
        coef = np.linalg.lstsq(np.column_stack((np.ones_like(cos), cos)) / ss[:, None], shift / ss, rcond=None)[0]
        changes["zero"] = float(coef[0])
        # shift = zero − deg(2 s cosθ / R), s in µm and R in mm: slope = −deg(2e-3 s / R)
        changes["displacement_um"] = float(-math.radians(coef[1]) * inst.goniometer_radius_mm / 2e-3)
    else:  # the start's displacement (if any) stays: zero takes the rest
        rest = shift - (np.asarray(inst.shift(tt), dtype=float) - inst.zero)
        changes["zero"] = float(np.sum(rest / ss ** 2) / np.sum(1.0 / ss ** 2))
    return inst.replace(**{n: v for n, v in changes.items() if n in refine})


@dataclass
class _WarmStart:
    """The part of a `RefineResult` that `quantify(start=...)` reads: phase parameters, humps, instrument."""

    parameters: dict[str, dict[str, float]]
    instrument: "Instrument"
    humps: list[tuple[float, float, float]] = field(default_factory=list)

    @property
    def phases(self) -> dict[str, None]:
        return {name: None for name in self.parameters}


def _sample_start(crystal: Crystal, inst: "Instrument", carried: Sequence[str]) -> dict[str, dict[str, float]]:
    """Engine phase parameters carrying `inst`'s U and X (those `carried`) as microstrain and size (inverse of
    `fold_sample_broadening`; 0 when not carried), the cell at the certified values."""
    from .profiles import SCHERRER_K

    lam = inst.radiation.wavelength
    u = max(inst.u, 0.0) if "u" in carried else 0.0
    x = max(inst.x, 0.0) if "x" in carried else 0.0
    strain = math.radians(math.sqrt(8.0 * math.log(2.0) * u) / 100.0) / 4.0
    inv_size = math.radians(x / 100.0) * 10.0 / (SCHERRER_K * lam)
    p = dict(zip(("a", "b", "c", "alpha", "beta", "gamma"), crystal.cell))
    p.update(inv_size=inv_size, strain=strain)
    return {crystal.name: p}


def _refine(x: NDArray[np.float64], y: NDArray[np.float64], crystal: Crystal, start: "Instrument",
            sigma: NDArray[np.float64] | None, refine: Sequence[str], background_order: int,
            excluded: Sequence[tuple[float, float]], seed: "Instrument | None" = None,
            carried: Sequence[str] = (), multistart: bool = True) -> tuple[Any, dict[str, float]]:
    """The refinement engine with the standard's cell fixed, the instrument refined and the phase always kept.

    From `seed` (the single-line fits; its `carried` U and X enter as the standard's strain and size): a warm
    start refining everything. From `start` (the rescaled user start): first without the asymmetry (S/L, H/L),
    then everything from there. Each is re-run from its own result while Rwp still falls by more than REFIT_GAIN
    (the engine stops after a fixed number of evaluations); the lowest χ² is kept (`multistart` False: the
    user start only when there is no seed). Returns the kept result and the χ² from each start."""
    from .refine import quantify

    kw: dict[str, Any] = dict(sigma=sigma, background_order=background_order, humps=0, excluded=excluded,
                              fix_cell=True, alpha=1.0 - 1e-12)
    candidates: dict[str, Any] = {}
    if seed is not None:
        engine_seed = seed.replace(**{p: 0.0 for p in carried})
        warm = _WarmStart(_sample_start(crystal, seed, carried), engine_seed)
        candidates["lines"] = quantify(x, y, [crystal], engine_seed, start=warm, refine_instrument=tuple(refine),
                                       **kw)
    if seed is None or multistart:
        staged = tuple(p for p in refine if p not in ("s_l", "h_l"))
        if staged != tuple(refine):
            # positions and symmetric widths first: from lab-default widths the asymmetry otherwise takes up width
            res = quantify(x, y, [crystal], start, refine_instrument=staged, **kw)
            res = quantify(x, y, [crystal], res.instrument, start=res, refine_instrument=tuple(refine), **kw)
        else:
            res = quantify(x, y, [crystal], start, refine_instrument=tuple(refine), **kw)
        candidates["start"] = res
    kw["refine_instrument"] = tuple(refine)
    done: dict[str, Any] = {}
    for key, res in candidates.items():
        for _ in range(MAX_REFITS):
            again = quantify(x, y, [crystal], res.instrument, start=res, **kw)
            better = again.rwp < res.rwp * (1.0 - REFIT_GAIN)
            if again.rwp <= res.rwp:
                res = again
            if not better:
                break
        done[key] = res
    best = min(done, key=lambda k: done[k].chi2)
    return done[best], {k: float(r.chi2) for k, r in done.items()}


def bin_variance(two_theta: ArrayLike) -> float:
    """Gaussian variance (centideg², GSAS W units) equivalent to integrating the counts over each step Δ.

    Averaging a smooth profile f over a bin of width Δ gives f + (Δ²/24) f″ + O(Δ⁴ f⁗); adding a Gaussian
    variance s² to a Voigt gives f + (s²/2) f″ + O(s⁴ f⁗): the same to second order for s² = Δ²/12 (Sheppard's
    correction for grouping; W. F. Sheppard, Proc. London Math. Soc. 29, 353 (1898)). A constant in 2θ for
    a uniform step, so exactly a W term. Δ = the median step."""
    x = np.asarray(two_theta, dtype=float)
    step = float(np.median(np.diff(x))) if x.size > 1 else 0.0
    return (100.0 * step) ** 2 / 12.0


def fold_sample_broadening(inst: "Instrument", size_nm: float, microstrain: float,
                           refine: Sequence[str]) -> "Instrument":
    """Move the standard's refined sample broadening into the instrument (it is the instrument's, by definition).

    The engine refines a crystallite size (Lorentzian FWHM Kλ/(L cosθ) rad) and a microstrain (Gaussian FWHM
    4ε tanθ rad, in quadrature) for every phase; with a standard these are exactly the instrument's X term
    (X/cosθ centideg) and U term (σ² += U tan²θ centideg², FWHM² = 8 ln2 σ²): X += 100·deg(Kλ/L) and
    U += (100·deg(4ε))²/(8 ln2). Only folded into terms that were refined (else the start's value is kept and
    the sample terms are reported in a warning by the caller).
    """
    from .profiles import SCHERRER_K

    changes: dict[str, float] = {}
    if "x" in refine and size_nm and math.isfinite(size_nm) and size_nm > 0:
        lam = inst.radiation.wavelength
        changes["x"] = inst.x + 100.0 * math.degrees(SCHERRER_K * lam / (10.0 * size_nm))
    if "u" in refine and microstrain and microstrain > 0:
        changes["u"] = inst.u + (100.0 * math.degrees(4.0 * microstrain)) ** 2 / (8.0 * math.log(2.0))
    return inst.replace(**changes) if changes else inst


def _residuals(x: NDArray[np.float64], y: NDArray[np.float64], curve: NDArray[np.float64],
               background: NDArray[np.float64], inst: "Instrument", crystal: Crystal) -> list[ReflectionResidual]:
    """Per-reflection residuals on isolated reflections (see the module docstring for the measures)."""
    refl = crystal.reflections(inst.radiation, float(x[-1]), max(float(x[0]), 0.0))
    if len(refl) == 0:
        return []
    tt_b = refl.two_theta
    tt = tt_b + np.asarray(inst.shift(tt_b), dtype=float)
    fw = np.asarray(inst.fwhm(tt_b), dtype=float)
    net_o = y - background
    net_c = curve - background
    out: list[ReflectionResidual] = []
    strongest = float(net_c.max())
    doublet = max((wl for wl, r in inst.radiation.lines if r > 0), default=inst.radiation.wavelength)
    for i in range(len(refl)):
        half = WINDOW_FWHM * fw[i]
        # the Kα2 partner (if any) sits above: widen the window towards it
        tt2 = math.degrees(2 * math.asin(min(doublet / (2 * refl.d[i]), 1.0))) + (tt[i] - tt_b[i])
        lo, hi = tt[i] - half, max(tt[i], tt2) + half
        neighbours = np.abs(tt - tt[i]) < (hi - lo) + 2 * half
        neighbours[i] = False
        if np.any(neighbours) or lo < x[0] or hi > x[-1]:
            continue
        sel = (x >= lo) & (x <= hi)
        if np.count_nonzero(sel) < 7:
            continue
        xo, yo, yc = x[sel], net_o[sel], net_c[sel]
        so, sc = float(np.sum(yo)), float(np.sum(yc))
        if sc <= 0 or yc.max() < max(MIN_PEAK_SIGMAS * np.sqrt(max(float(np.median(background[sel])), 1.0)),
                                     MIN_PEAK_FRACTION * strongest):
            continue  # too weak to measure a centroid and a width to the precision the table is read at
        d = float(np.sum(xo * yo) / so - np.sum(xo * yc) / sc) if so > 0 else float("nan")
        w_o, w_c = _half_width(xo, yo), _half_width(xo, yc)
        ratio = w_o / w_c if (w_c > 0 and w_o > 0) else float("nan")
        out.append(ReflectionResidual((int(refl.h[i]), int(refl.k[i]), int(refl.l[i])), float(tt[i]), d,
                                      float(fw[i] * ratio), float(fw[i]), (so - sc) / sc))
    return out


def _half_width(x: NDArray[np.float64], y: NDArray[np.float64]) -> float:
    """Full width at half maximum of the highest peak in (x, y), by linear interpolation of the crossings."""
    k = int(np.argmax(y))
    h = y[k] / 2.0
    if h <= 0:
        return float("nan")
    left = k
    while left > 0 and y[left] > h:
        left -= 1
    right = k
    while right < y.size - 1 and y[right] > h:
        right += 1
    if y[left] > h or y[right] > h:
        return float("nan")
    xl = x[left] + (h - y[left]) * (x[left + 1] - x[left]) / (y[left + 1] - y[left])
    xr = x[right - 1] + (y[right - 1] - h) * (x[right] - x[right - 1]) / (y[right - 1] - y[right])
    return float(xr - xl)


def calibrate(two_theta: ArrayLike, counts: ArrayLike, standard: Crystal | str, start: "Instrument", *,
              sigma: ArrayLike | None = None, refine: Sequence[str] | None = None, background_order: int = 8,
              excluded: Sequence[tuple[float, float]] = (), bin_integrated: bool = True,
              multistart: bool = True) -> Calibration:
    """Refine `start` against a pattern of `standard` (a Crystal at its certified cell, or a built-in name).

    `refine` defaults to :data:`DEFAULT_REFINE`, plus "displacement_um" for a Bragg–Brentano instrument.
    `bin_integrated`: the counts are integrals over each step (continuous scans, binned strip or area
    detectors): the model then includes the bin (:func:`bin_variance`) and the written instrument does not;
    False for counts sampled at each angle (a step scan through a receiving slit). `multistart`: also refine
    from `start` when the single-line seed exists and keep the lower χ² (False: the seed only; faster).
    Raises :class:`NotTheStandardError` when the pattern's strongest peaks do not match the standard,
    :class:`CalibrationError` for other bad input (one-line messages).
    """
    from .standards import standard as builtin_standard

    crystal = builtin_standard(standard) if isinstance(standard, str) else standard
    x, y, s = _validate(two_theta, counts, sigma)
    if refine is None:
        refine = DEFAULT_REFINE + (("displacement_um",) if start.geometry == "bragg-brentano" else ())
    refine = tuple(refine)
    known = {"zero", "u", "v", "w", "x", "y", "s_l", "h_l", "displacement_um"}
    unknown = [p for p in refine if p not in known]
    if unknown:
        raise CalibrationError(f"cannot refine {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
    if "displacement_um" in refine and start.geometry != "bragg-brentano":
        raise CalibrationError("displacement_um applies to a Bragg–Brentano instrument only")
    warnings: list[str] = []
    inst0 = _start_instrument(start, x, y, crystal, warnings)
    # The engine refines a size and a strain for every phase; for a standard they are exactly the instrument's
    # X/cosθ and U tan²θ terms (fold_sample_broadening). Refining both would make the problem singular, so those
    # two instrument terms start at 0 and are carried by the sample terms, folded back afterwards.
    carried = tuple(p for p in ("u", "x") if p in refine)
    engine_refine = tuple(p for p in refine if p not in carried)
    # the detector bin as a Gaussian variance in W while fitting (bin_variance): the single-line widths already
    # hold it (they are measured), the user's start does not
    b = bin_variance(x) if bin_integrated else 0.0
    seed = seed_instrument(fit_lines(x, y, crystal, inst0, s), inst0, refine)
    if seed is not None and "w" not in refine:
        seed = seed.replace(w=seed.w + b)  # W fixed at the start's: the model adds the bin to it
    if seed is None:
        warnings.append(f"fewer than {SEED_MIN_LINES} isolated lines fitted on their own: refined from the start "
                        "instrument only")
    res, start_chi2 = _refine(x, y, crystal, inst0.replace(w=inst0.w + b, **{p: 0.0 for p in carried}), s,
                              engine_refine, background_order, excluded, seed=seed, carried=carried,
                              multistart=multistart)
    phase = res.phases.get(crystal.name)
    if phase is None:
        raise NotTheStandardError(f"the refinement dropped {crystal.name}: "
                                  f"{res.rejected.get(crystal.name, 'no reason given')}")
    inst = fold_sample_broadening(res.instrument, phase.size_nm, phase.microstrain, carried)
    if b > 0:
        if inst.w < b:
            warnings.append(f"the refined W ({inst.w:.4g} centideg²) is below the detector bin's variance "
                            f"({b:.4g}): W set to 0")
        inst = inst.replace(w=max(inst.w - b, 0.0))
    missing = tuple(p for p in ("u", "x") if p not in carried)
    if missing:
        mid = np.array([0.5 * (x[0] + x[-1])])
        full = fold_sample_broadening(inst, phase.size_nm, phase.microstrain, missing)
        excess = float(full.fwhm(mid)[0] / max(float(inst.fwhm(mid)[0]), 1e-12) - 1.0)
        if excess > 0.01:
            warnings.append(f"the standard's refined size/strain widen its peaks by {100 * excess:.1f} % at "
                            f"{mid[0]:.0f}°, which {' and '.join(m.upper() for m in missing)} (not refined) "
                            "could not take: the written instrument is narrower than the fitted curve")
    name = start.name or "start"
    inst = inst.replace(name=f"calibrated on {crystal.name} from {name}")
    curve = np.asarray(res.curve, dtype=float)
    background = np.asarray(getattr(res, "background", np.zeros_like(curve)), dtype=float)
    table = _residuals(x, y, curve, background, inst, crystal)
    warnings.extend(getattr(res, "warnings", []) or [])
    return Calibration(inst, start, crystal.name, float(res.rwp), float(res.gof), x, y, curve, background, table,
                       refine, warnings, res, start_chi2)
