"""Instrument calibration from a powder pattern of a standard whose cell is certified (LaB6, Si, CeO2, Al2O3).

What it does: a whole-pattern (Rietveld-style) refinement by the project's refinement engine
(:mod:`hotstage.analysis.refine`) of the *instrument* — zero shift, Caglioti Gaussian U, V, W, Lorentzian X, Y,
Finger–Cox–Jephcoat axial-divergence asymmetry S/L, H/L, and the sample displacement of a Bragg–Brentano
goniometer — with the standard's cell held at its certified value and no sample broadening (the SRMs are made
free of it), so that every position error and every width is attributed to the instrument. This is the usual
instrument-profile calibration with a line-profile SRM (NIST SRM 660c certificate, "Intended use"; GSAS-II
"Calibrating an instrument with a standard" practice: refine only instrument parameters with the cell fixed).

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
           "DEFAULT_REFINE", "find_peaks_quick", "match_standard"]

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


def _refine(x: NDArray[np.float64], y: NDArray[np.float64], crystal: Crystal, start: "Instrument",
            sigma: NDArray[np.float64] | None, refine: Sequence[str], background_order: int,
            excluded: Sequence[tuple[float, float]]) -> Any:
    """The refinement engine with the standard's cell fixed, the instrument refined and the phase always kept:
    first without the asymmetry (S/L, H/L), then everything from there, then re-run from its own result (warm
    start) while Rwp still falls by more than REFIT_GAIN (the engine stops after a fixed number of evaluations,
    which a cold start from lab-default widths can use up)."""
    from .refine import quantify

    kw = dict(sigma=sigma, background_order=background_order, humps=0, excluded=excluded, fix_cell=True,
              alpha=1.0 - 1e-12)
    staged = tuple(p for p in refine if p not in ("s_l", "h_l"))
    if staged != tuple(refine):
        # positions and symmetric widths first: from lab-default widths the asymmetry otherwise takes up width
        res = quantify(x, y, [crystal], start, refine_instrument=staged, **kw)
        start = res.instrument
        res = quantify(x, y, [crystal], start, start=res, refine_instrument=tuple(refine), **kw)
    else:
        res = quantify(x, y, [crystal], start, refine_instrument=tuple(refine), **kw)
    kw["refine_instrument"] = tuple(refine)
    for _ in range(MAX_REFITS):
        again = quantify(x, y, [crystal], res.instrument, start=res, **kw)
        better = again.rwp < res.rwp * (1.0 - REFIT_GAIN)
        if again.rwp <= res.rwp:
            res = again
        if not better:
            break
    return res


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
              excluded: Sequence[tuple[float, float]] = ()) -> Calibration:
    """Refine `start` against a pattern of `standard` (a Crystal at its certified cell, or a built-in name).

    `refine` defaults to :data:`DEFAULT_REFINE`, plus "displacement_um" for a Bragg–Brentano instrument.
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
    res = _refine(x, y, crystal, inst0.replace(**{p: 0.0 for p in carried}), s, engine_refine, background_order,
                  excluded)
    phase = res.phases.get(crystal.name)
    if phase is None:
        raise NotTheStandardError(f"the refinement dropped {crystal.name}: "
                                  f"{res.rejected.get(crystal.name, 'no reason given')}")
    inst = fold_sample_broadening(res.instrument, phase.size_nm, phase.microstrain, carried)
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
                       refine, warnings, res)
