"""A simulated powder diffractometer: reflections (d-spacings, |F|²·m) in, counts per detector bin out.

The simulator's own instrument. It reads an :class:`hotstage.analysis.instrument.Instrument` as *data* (its fields
only) and shares no profile code with the analysis (none of ``Instrument``'s width/asymmetry/render methods, nor
``hotstage.analysis.profiles.render_peaks``/``pseudo_voigt``/``tch_combine``), so a simulated test can catch an
error in the analysis's profile model: the analysis fits Thompson–Cox–Hastings pseudo-Voigts with a discretised
FCJ kernel; the patterns drawn here are exact Voigts convolved with the axial-divergence geometry, integrated over
each detector bin.

Physics, and where each formula comes from:

- Line positions: Bragg's law 2d sinθ = λ for every line of the instrument's radiation (Cu Kα1/Kα2: Hölzer et al.,
  *Phys. Rev. A* 56, 4554 (1997), via :mod:`hotstage.analysis.radiation`), d = d₀(1 + ε) for a lattice strain ε.
  Observed at 2θ + zero − 2 s cosθ / R (rad): sample displacement s on a goniometer of radius R (Bragg–Brentano;
  Klug & Alexander, *X-ray Diffraction Procedures*, 2nd ed. (1974), §5-2; the same term as GSAS ``shft``).
- Integrated intensity: scale · w_line · |F|²m · LP(2θ) with LP = P(2θ)/(sin²θ cosθ) (powder Lorentz factor,
  International Tables for Crystallography Vol. C, §6.2.5) and P the beam's polarisation factor (ITC Vol. C
  §6.2.2: unpolarised tube (1 + cos²2θ)/2, tube with a monochromator at 2θ_M (1 + cos²2θ_M cos²2θ)/(1 + cos²2θ_M),
  synchrotron p + (1 − p) cos²2θ).
- Instrumental widths (GSAS/GSAS-II convention, Larson & Von Dreele, LAUR 86-748): Gaussian variance
  σ² = U tan²θ + V tanθ + W + Z/cos²θ (centideg²), Lorentzian FWHM X/cosθ + Y tanθ (centideg).
- Sample broadening: crystallite size as a Lorentzian of FWHM Kλ/(L cosθ) rad with K = 0.9 (Scherrer 1918;
  Langford & Wilson, *J. Appl. Cryst.* 11, 102 (1978)); microstrain as a Gaussian of FWHM 4ε tanθ rad
  (Stokes & Wilson, *Proc. Phys. Soc.* 56, 174 (1944)). Convolution adds Gaussian variances and Lorentzian
  widths, so each peak is one Voigt: ``scipy.special.voigt_profile(x, σ, γ)`` with γ the Lorentzian *half* width;
  its derivative from the Faddeeva identity w′(z) = −2z w(z) + 2i/√π (Abramowitz & Stegun 7.1.20).
- Axial divergence (Finger, Cox & Jephcoat, *J. Appl. Cryst.* 27, 892 (1994), after van Laar & Yelon,
  *J. Appl. Cryst.* 17, 47 (1984)), integrated here directly over the geometry rather than through FCJ's closed
  form: a sample point at height s ∈ [−S, S] (axial) scatters a Debye cone of half-angle 2θ, uniform in its
  azimuth ψ; the ray that reaches the receiving slit (radius L, height z ∈ [−H, H]) with q = (z − s)/L is seen at
  2φ with cos 2φ = cos 2θ · √(1 + q²) (below 90° always at 2φ ≤ 2θ), and sinψ = q / (sin2θ √(1 + q²)), so the
  intensity per unit q is ∝ dψ/dq = 1/(sin2θ (1 + q²)^{3/2} cosψ). Uniform s and z make q's density the
  trapezoid W(q) = (S + H)/L − |q| for |q| ≥ |H − S|/L and 2 min(S, H)/L inside (FCJ's W). The kernel is this
  density integrated in q (smooth: the 1/√ singularity of FCJ's form in 2φ does not appear) by 3-point
  Gauss–Legendre panels uniform in q² (the offset 2φ − 2θ ≈ −q² cot2θ/2 is nearly linear in q²), each panel moving
  the offset by less than the profile table's spacing. Its mean, −(S² + H²)/(6L²)·cot2θ to leading order, is
  checked in tests/test_diffractometer.py.
- Detector bins: the counts in a bin are the profile's integral between the bin's edges (midpoints between grid
  points, the end bins as wide as their neighbours), i.e. differences of each peak's cumulative distribution.

Numerics (what is exact and how close): each peak's cumulative distribution (CDF) is tabulated once per prepared
reflection list (`Diffractometer.prepare`) on a grid of `points_per_fwhm` points per Voigt FWHM over
±(`window` Gaussian FWHMs of √(σ² + kernel variance) + 3γ + twice the kernel's span): the Voigt and its derivative
on that grid, the kernel applied by summing its nodes with cubic Hermite interpolation of the Voigt, the CDF by
Euler–Maclaurin (trapezoid + h² and h⁴ end corrections, the latter from differences of the density's slope), and
between table points a quintic Hermite (CDF, density, slope). Beyond the table the tail is the moment series
CDF(v) = ½ + atan(v/γ)/π + (μ₂/2) L′(v) − (μ₃/6) L″(v) + (μ₄/24) L‴(v) of the Lorentzian L (half width γ) smeared
by the Gaussian and the kernel (v from the kernel's mean, μₙ central moments of Gaussian + kernel; the next term is
O(μ₆/|v − iγ|⁶), < 1e-7 of the area at the table's edge). That far part is carried by a smooth "carrier" per peak
(the series minus the unit step outside the table, an even degree-10 polynomial density inside, joined with five
continuous derivatives and the right mass); the carriers are summed on every few bin edges (stride ≤ table half
width / `CARRIER_STRIDE`, from a few fixed strides) and interpolated (quintic Hermite) in between, so a pattern costs
O(peaks × table) + O(peaks × edges / stride) instead of O(peaks × edges). Areas are conserved: the sum over an
infinitely wide grid is the area. Measured against bin integrals of scipy's Voigt (41-point Simpson per bin, 5000
bins over 5–60°): ≤ 5e-7 of the peak bin for Gaussian-dominated peaks, ≤ 2e-5 for a 15 nm (Lorentzian-dominated)
peak; tests/test_diffractometer.py checks 5e-5 against an independent numerical convolution G ⊗ L.
Between shape rebuilds, a lattice strain moves each peak exactly (Bragg's law) and re-evaluates its LP factor;
the shape is the one of the prepared strain (`XRDSynthesizer` prepares tables on a ladder of sizes and strains,
see there). Cost (CPU time on a 2-core machine shared with other jobs, so absolute numbers are inflated): a
5000-point Cu Kα pattern of the five CsPbI3/CsI phases (792 line-peaks, 15–30 nm, Poisson draw included)
≈ 7 ms, about twice the pseudo-Voigt path measured alongside (3–5 ms); most of it is the far-tail carriers. Rebuilding all
five phases' tables ≈ 0.05 s; a 10 K/min ramp drawn every 5 s costs ≈ 9 ms per exposure including rebuilds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import voigt_profile, wofz

from hotstage.analysis.instrument import Instrument
from hotstage.analysis.radiation import Radiation

__all__ = ["Diffractometer", "PreparedReflections", "SIMULATED_LAB_INSTRUMENT", "SCHERRER_K", "voigt_fwhm",
           "lorentz_polarisation", "DiffractometerError"]

FloatArray = NDArray[np.float64]
SCHERRER_K: float = 0.9
"""Scherrer constant for FWHM sizes (Langford & Wilson 1978: 0.89–0.94 for spheres/cubes)."""
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_INV_PI = 1.0 / math.pi
_STRIDES = np.array([1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128], dtype=np.int64)
CARRIER_STRIDE: float = 4.0
"""The far-tail carriers are summed on every k-th bin edge with k·(bin width) ≤ (smallest table half width)/this,
and interpolated (quintic Hermite) in between."""

SIMULATED_LAB_INSTRUMENT: Instrument = Instrument(
    Radiation.cu_ka(), zero=0.01, u=22.0, v=-10.0, w=11.0, x=1.5, y=0.8, s_l=0.02, h_l=0.02,
    displacement_um=0.0, goniometer_radius_mm=240.0, geometry="bragg-brentano",
    name="simulated lab rig: Cu Kα1+Kα2 Bragg–Brentano, R = 240 mm, S/L = H/L = 0.02, zero 0.01°")
"""The simulated rig's own lab diffractometer (hotstage.simulated.diffractometer), deliberately *not* the
quantifier's default: Gaussian U, V, W = 22, −10, 11 centideg² plus a Lorentzian X = 1.5, Y = 0.8 centideg give
a Voigt FWHM 24 % wider than ``profiles.DEFAULT_CAGLIOTI`` at 10°, 27 % at 30°, 30 % at 60° and 29 % at 90° 2θ
(the quantifier's default has no Lorentzian part at all; tests/test_diffractometer.py checks the 20–40 %);
FCJ axial divergence S/L = H/L = 0.02 (on a 240 mm goniometer: half-heights of 4.8 mm, i.e. ~10 mm of sample along
the axis and a ~10 mm tall receiving slit: a typical, clearly visible low-angle asymmetry);
zero 0.01°; no displacement. The values are assumptions of a plausible instrument, not a measured one."""


class DiffractometerError(ValueError):
    """A request the simulated diffractometer cannot draw (no width, bad grid)."""


def voigt_fwhm(sigma: ArrayLike, gamma: ArrayLike) -> FloatArray:
    """Voigt FWHM from Gaussian σ and Lorentzian half width γ, Olivero & Longbothum, *J. Quant. Spectrosc. Radiat.
    Transfer* 17, 233 (1977): f_V ≈ 0.5346 f_L + √(0.2166 f_L² + f_G²), accurate to 0.02 %."""
    f_g = _FWHM_PER_SIGMA * np.asarray(sigma, dtype=float)
    f_l = 2.0 * np.asarray(gamma, dtype=float)
    return 0.5346 * f_l + np.sqrt(0.2166 * f_l * f_l + f_g * f_g)


def lorentz_polarisation(two_theta: ArrayLike, radiation: Radiation) -> FloatArray:
    """Powder Lorentz–polarisation factor P(2θ)/(sin²θ cosθ) of `radiation` (module docstring)."""
    tt = np.radians(np.asarray(two_theta, dtype=float))
    c2 = np.cos(tt) ** 2
    if radiation.polarisation == "synchrotron":
        p = radiation.synchrotron_polarisation
        pol = p + (1.0 - p) * c2
    elif radiation.monochromator_two_theta is None:
        pol = 0.5 * (1.0 + c2)
    else:
        km = math.cos(math.radians(radiation.monochromator_two_theta)) ** 2
        pol = (1.0 + km * c2) / (1.0 + km)
    th = tt / 2.0
    s = np.sin(th)
    return pol / (s * s * np.cos(th))


@dataclass
class PreparedReflections:
    """One reflection list with its per-peak profile tables (built by `Diffractometer.prepare`).

    Per peak (a reflection seen through one line): d-spacing at zero strain `d`, line wavelength and weight·|F|²m
    (`weight`); the strain and crystallite size the shapes were built for; the table (cumulative distribution `cdf`
    and density `pdf` from `start` for `count` points, spacing `step`, first point at offset `u0` from the peak's
    observed Bragg position) and the far-tail carrier (Lorentzian γ, moments, half width `half`, polynomial)."""

    d: FloatArray
    wavelength: FloatArray
    weight: FloatArray
    strain: float
    size_nm: float | None
    microstrain: float
    sigma: FloatArray
    gamma: FloatArray
    fwhm: FloatArray
    start: NDArray[np.int64]
    count: NDArray[np.int64]
    u0: FloatArray
    step: FloatArray
    cdf: FloatArray
    pdf: FloatArray
    dpdf: FloatArray
    dbar: FloatArray
    half: FloatArray
    carrier: FloatArray  # (n, 11): γ, a2, a3, a4, bridge coefficients b0…b5 (of v⁰…v¹⁰), G(−half)
    kernel_offsets: list[FloatArray]
    kernel_weights: list[FloatArray]

    @property
    def n_peaks(self) -> int:
        """Number of line-peaks."""
        return int(self.d.size)


class Diffractometer:
    """Counts per detector bin on a sorted 2θ grid for reflections seen through an `Instrument` (module docstring).

    `window`: half width of each peak's exact table in Gaussian FWHMs (+ 3γ + kernel span; beyond it the moment
    series of the tail); `points_per_fwhm`: table resolution per Voigt FWHM."""

    def __init__(self, instrument: Instrument, two_theta: ArrayLike, *, window: float = 6.0,
                 points_per_fwhm: float = 12.0) -> None:
        """Keep the instrument's numbers and the bin edges of the grid."""
        self.instrument = instrument
        x = np.asarray(two_theta, dtype=np.float64)
        if x.ndim != 1 or x.size < 2 or not np.all(np.diff(x) > 0) or not np.all(np.isfinite(x)):
            raise DiffractometerError("diffractometer grid: need a strictly increasing finite 2θ array of ≥ 2 points")
        self.axis = x
        mid = 0.5 * (x[1:] + x[:-1])
        self.edges = np.concatenate(([x[0] - (mid[0] - x[0])], mid, [x[-1] + (x[-1] - mid[-1])]))
        self.window = float(window)
        self.points_per_fwhm = float(points_per_fwhm)
        self.radiation = instrument.radiation
        self._coarse: dict[int, NDArray[np.int64]] = {}
        _warm_up()

    # ---------------------------------------------------------------- instrument physics (own code)
    def bragg_two_theta(self, d: ArrayLike, wavelength: ArrayLike) -> FloatArray:
        """Bragg 2θ (deg) of spacing d (Å) at `wavelength` (Å); NaN where λ > 2d."""
        arg = np.asarray(wavelength, dtype=float) / (2.0 * np.asarray(d, dtype=float))
        with np.errstate(invalid="ignore"):
            return np.where(arg < 1.0, np.degrees(2.0 * np.arcsin(np.minimum(arg, 1.0))), np.nan)

    def observed(self, two_theta_bragg: ArrayLike) -> FloatArray:
        """Observed position (deg): Bragg 2θ + zero − 2 s cosθ / R (displacement, radians → degrees)."""
        tt = np.asarray(two_theta_bragg, dtype=float)
        ins = self.instrument
        disp = -2.0 * (ins.displacement_um * 1e-3) * np.cos(np.radians(tt) / 2.0) / ins.goniometer_radius_mm
        return tt + ins.zero + np.degrees(disp)

    def voigt_parameters(self, two_theta_bragg: ArrayLike, wavelength: ArrayLike | float | None = None,
                         size_nm: float | None = None, microstrain: float = 0.0) -> tuple[FloatArray, FloatArray]:
        """Gaussian σ and Lorentzian half width γ (deg) of the symmetric part: instrument ⊗ sample."""
        tt = np.asarray(two_theta_bragg, dtype=float)
        th = np.radians(tt) / 2.0
        t, c = np.tan(th), np.cos(th)
        ins = self.instrument
        z = float(getattr(ins, "z", 0.0))
        var = np.maximum(ins.u * t * t + ins.v * t + ins.w + z / (c * c), 0.0) * 1e-4  # centideg² → deg²
        if microstrain:
            var = var + (np.degrees(4.0 * abs(microstrain) * t) / _FWHM_PER_SIGMA) ** 2
        lor = np.maximum(ins.x / c + ins.y * t, 0.0) / 100.0  # FWHM, deg
        if size_nm is not None and math.isfinite(size_nm):
            if size_nm <= 0:
                raise DiffractometerError(f"crystallite size must be positive, got {size_nm} nm")
            lam = self.radiation.wavelength if wavelength is None else np.asarray(wavelength, dtype=float)
            lor = lor + np.degrees(SCHERRER_K * lam / (10.0 * size_nm * c))
        return np.sqrt(var), 0.5 * lor

    def axial_kernel(self, two_theta_bragg: float, resolution: float) -> tuple[FloatArray, FloatArray]:
        """Axial-divergence kernel at one Bragg angle: offsets (deg) and weights (sum 1), panels in q² with less
        than `resolution` (deg) of offset each (module docstring). No divergence: ([0], [1])."""
        off, w, _, *_ = _axial_kernels(np.array([float(two_theta_bragg)]), self.instrument.s_l, self.instrument.h_l,
                                       np.array([float(resolution)]))
        return off, w

    # ---------------------------------------------------------------- preparation and rendering
    def prepare(self, d: ArrayLike, intensity: ArrayLike, *, size_nm: float | None = None,
                microstrain: float = 0.0, strain: float = 0.0,
                two_theta_range: tuple[float, float] | None = None) -> PreparedReflections:
        """Tables for reflections of spacing `d` (Å, zero strain) and |F|²·m `intensity`, through every line of the
        instrument's radiation, with the shapes of lattice strain `strain`; lines outside `two_theta_range`
        (default: the grid ± 5°) are dropped."""
        d = np.asarray(d, dtype=float).ravel()
        inten = np.broadcast_to(np.asarray(intensity, dtype=float), d.shape)
        lo, hi = two_theta_range if two_theta_range is not None else (self.axis[0] - 5.0, self.axis[-1] + 5.0)
        ds, lams, ws = [], [], []
        for lam, wline in self.radiation.lines:
            tt = self.bragg_two_theta(d * (1.0 + strain), lam)
            keep = np.isfinite(tt) & (tt >= lo) & (tt <= hi) & (tt < 179.0)
            ds.append(d[keep])
            lams.append(np.full(int(keep.sum()), lam))
            ws.append(wline * inten[keep])
        d_all, lam_all, w_all = np.concatenate(ds), np.concatenate(lams), np.concatenate(ws)
        return self._build(d_all, lam_all, w_all, strain, size_nm, microstrain)

    def _build(self, d: FloatArray, lam: FloatArray, weight: FloatArray, strain: float, size_nm: float | None,
               microstrain: float) -> PreparedReflections:
        """Profile tables (Voigt ⊗ axial kernel, cumulative) and far-tail carriers of every peak."""
        n = d.size
        tt = self.bragg_two_theta(d * (1.0 + strain), lam)
        sigma, gamma = self.voigt_parameters(tt, lam, size_nm, microstrain)
        if np.any((sigma <= 0.0) & (gamma <= 0.0)):
            raise DiffractometerError("the instrument and sample give a peak of zero width: set U, V, W or X, Y")
        fwhm = voigt_fwhm(sigma, gamma)
        step = fwhm / self.points_per_fwhm
        k_off, k_w, k_cnt, dbar, mu2k, mu3k, mu4k, span = _axial_kernels(tt, self.instrument.s_l,
                                                                         self.instrument.h_l, step)
        # exact table over ±(window Gaussian FWHMs + 3 γ + kernel span): beyond it the moment series of the tail
        # (in powers of √μ₂/|v − iγ| and span/|v − iγ|) is exact to < 1e-7 of the area, whatever γ
        half = self.window * _FWHM_PER_SIGMA * np.sqrt(sigma ** 2 + mu2k) + 3.0 * gamma + 2.0 * span
        half = np.maximum(half, 2.0 * fwhm)
        count = (np.ceil(2.0 * half / step)).astype(np.int64) + 1
        step = 2.0 * half / (count - 1)
        u0 = dbar - half
        start = (np.cumsum(count) - count).astype(np.int64)
        # symmetric Voigt on a grid covering u − δ for every kernel node (δ within [min, max] of the kernel)
        k_start = (np.cumsum(k_cnt) - k_cnt).astype(np.int64)
        if n:
            kmin = np.minimum.reduceat(k_off, k_start)
            kmax = np.maximum.reduceat(k_off, k_start)
        else:
            kmin = kmax = np.zeros(0)
        s_lo = u0 - np.maximum(kmax, 0.0) - 2.0 * step
        s_cnt = (np.ceil((u0 + 2.0 * half - np.minimum(kmin, 0.0) + 2.0 * step - s_lo) / step)).astype(np.int64) + 1
        s_start = (np.cumsum(s_cnt) - s_cnt).astype(np.int64)
        rep = np.repeat(np.arange(n), s_cnt)
        s_u = s_lo[rep] + step[rep] * (np.arange(s_cnt.sum()) - s_start[rep])
        v_sym, dv_sym = _voigt_and_derivative(s_u, sigma[rep], gamma[rep])
        cdf = np.empty(int(count.sum()))
        pdf = np.empty_like(cdf)
        dpdf = np.empty_like(cdf)
        # far-tail carrier: G(v) = CDF_far(v) − H(v) outside ±half, a smooth polynomial-density bridge inside
        a2 = 0.5 * (sigma ** 2 + mu2k)
        a3 = -mu3k / 6.0
        a4 = (3.0 * sigma ** 4 + 6.0 * sigma ** 2 * mu2k + mu4k) / 24.0
        carrier = np.zeros((n, 11))
        carrier[:, 0], carrier[:, 1], carrier[:, 2], carrier[:, 3] = gamma, a2, a3, a4
        lor = gamma > 0.0
        if np.any(lor):
            carrier[lor, 4:11] = _bridges(carrier[lor, :4], half[lor])
        _tables(k_off, k_w, k_start, k_cnt, v_sym, dv_sym, s_start, s_cnt, s_lo, step, u0, start, count, dbar, half,
                carrier, cdf, pdf, dpdf)
        return PreparedReflections(d, lam, weight, float(strain), size_nm, float(microstrain), sigma, gamma, fwhm,
                                   start, count, u0, step, cdf, pdf, dpdf, dbar, half, carrier,
                                   np.split(k_off, k_start[1:]), np.split(k_w, k_start[1:]))

    def peak_positions(self, prepared: PreparedReflections, strain: float | None = None) -> tuple[FloatArray,
                                                                                               FloatArray]:
        """Observed positions (deg) and LP factors of every prepared peak at lattice strain `strain` (default: the
        prepared one); NaN positions for lines that left the sphere (λ > 2d)."""
        eps = prepared.strain if strain is None else float(strain)
        tt = self.bragg_two_theta(prepared.d * (1.0 + eps), prepared.wavelength)
        with np.errstate(invalid="ignore"):
            return self.observed(tt), lorentz_polarisation(tt, self.radiation)

    def counts(self, items: Sequence[tuple[PreparedReflections, float, float | None]]) -> FloatArray:
        """Counts per bin of Σ over (prepared, scale, strain) items: area of a peak = scale·w·|F|²m·LP."""
        cs, amps, preps = [], [], []
        for prep, scale, strain in items:
            c, lp = self.peak_positions(prep, strain)
            ok = np.isfinite(c)
            a = np.where(ok, scale * prep.weight * np.where(ok, lp, 0.0), 0.0)
            cs.append(np.where(ok, c, 0.0))
            amps.append(a)
            preps.append(prep)
        out = np.zeros(self.axis.size)
        wmax = float(np.diff(self.edges).max())
        for prep, centres, amp in zip(preps, cs, amps):
            if prep.n_peaks == 0:
                continue
            # peaks grouped by carrier stride (the largest of _STRIDES ≤ half/(CARRIER_STRIDE·bin)): broad peaks'
            # tails are sampled more coarsely, each group on its own coarse edges
            ratio = prep.half / (CARRIER_STRIDE * wmax)
            strides = _STRIDES[np.maximum(np.searchsorted(_STRIDES, ratio, side="right") - 1, 0)]
            for stride in np.unique(strides):
                sel = np.nonzero(strides == stride)[0]
                coarse = self._coarse_edges(int(stride))
                _render(self.edges, coarse, centres[sel], amp[sel], prep.start[sel], prep.count[sel], prep.u0[sel],
                        prep.step[sel], prep.cdf, prep.pdf, prep.dpdf, prep.dbar[sel], prep.half[sel],
                        prep.carrier[sel], out)
        return out

    def _coarse_edges(self, stride: int) -> NDArray[np.int64]:
        """Indices of every `stride`-th bin edge, the last edge included (cached)."""
        hit = self._coarse.get(stride)
        if hit is None:
            hit = np.arange(0, self.edges.size, stride, dtype=np.int64)
            if hit[-1] != self.edges.size - 1:
                hit = np.append(hit, np.int64(self.edges.size - 1))
            self._coarse[stride] = hit
        return hit

    def render(self, d: ArrayLike, intensity: ArrayLike, *, scale: float = 1.0, size_nm: float | None = None,
               microstrain: float = 0.0, strain: float = 0.0) -> FloatArray:
        """Counts per bin for one reflection list (prepare + counts; prepare once and call `counts` when
        drawing many patterns)."""
        prep = self.prepare(d, intensity, size_nm=size_nm, microstrain=microstrain, strain=strain)
        return self.counts([(prep, scale, strain)])


def _voigt_and_derivative(u: FloatArray, sigma: FloatArray, gamma: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Voigt density (scipy.special.voigt_profile) and its derivative d/du (Faddeeva identity; Lorentzian or
    Gaussian limits where σ or γ is zero)."""
    v = voigt_profile(u, sigma, gamma)
    dv = np.empty_like(u)
    g = sigma > 0.0
    if np.any(g):
        s = sigma[g]
        z = (u[g] + 1j * gamma[g]) / (s * math.sqrt(2.0))
        dv[g] = -2.0 * np.real(z * wofz(z)) / (2.0 * s * s * math.sqrt(math.pi))
    lo = ~g
    if np.any(lo):
        gl, ul = gamma[lo], u[lo]
        dv[lo] = -2.0 * gl * ul / (math.pi * (ul * ul + gl * gl) ** 2)
    return v, dv


@numba.njit(cache=True, nogil=True)
def _carrier(v: float, c: NDArray[np.float64], half: float) -> tuple[float, float, float]:
    """Far-tail carrier G, G′ and G″ at offset v from the kernel mean (module docstring): beyond ±half the
    asymptotic CDF minus the unit step, Lc − H + a2 L′ + a3 L″ + a4 L‴ (L the unit Lorentzian of half width γ,
    Lc its CDF, a_n = (−1)ⁿ μₙ/n!; L⁽ⁿ⁾(v) = (−1)ⁿ n! Im[(v − iγ)^−(n+1)]/π), inside the polynomial bridge."""
    gamma = c[0]
    if gamma <= 0.0:
        return 0.0, 0.0, 0.0
    if v > -half and v < half:
        b0, b1, b2, b3, b4, b5 = c[4], c[5], c[6], c[7], c[8], c[9]
        v2 = v * v
        x02 = half * half
        prim = v * (b0 + v2 * (b1 / 3.0 + v2 * (b2 / 5.0 + v2 * (b3 / 7.0 + v2 * (b4 / 9.0 + v2 * b5 / 11.0)))))
        prim0 = -half * (b0 + x02 * (b1 / 3.0 + x02 * (b2 / 5.0 + x02 * (b3 / 7.0 + x02 * (b4 / 9.0
                                                                                         + x02 * b5 / 11.0)))))
        return (c[10] + prim - prim0, b0 + v2 * (b1 + v2 * (b2 + v2 * (b3 + v2 * (b4 + v2 * b5)))),
                v * (2.0 * b1 + v2 * (4.0 * b2 + v2 * (6.0 * b3 + v2 * (8.0 * b4 + v2 * 10.0 * b5)))))
    a2, a3, a4 = c[1], c[2], c[3]
    # L⁽ⁿ⁾ = (−1)ⁿ n! Im[(v + iγ)ⁿ⁺¹]/(π rⁿ⁺¹), r = v² + γ², written out (independent terms, no serial chain)
    v2 = v * v
    g2 = gamma * gamma
    ir = 1.0 / (v2 + g2)
    gp = gamma * ir * _INV_PI
    ir2 = ir * ir
    l0 = gp
    l1 = -2.0 * gp * v * ir
    l2 = 2.0 * gp * (3.0 * v2 - g2) * ir2
    l3 = 24.0 * gp * v * (g2 - v2) * ir2 * ir
    l4 = 24.0 * gp * (5.0 * v2 * v2 - 10.0 * v2 * g2 + g2 * g2) * ir2 * ir2
    l5 = -240.0 * gp * v * (3.0 * v2 * v2 - 10.0 * v2 * g2 + 3.0 * g2 * g2) * ir2 * ir2 * ir
    x = gamma / v
    if abs(x) < 0.08:
        x2 = x * x
        at = x * (1.0 - x2 * (1.0 / 3.0 - x2 * (0.2 - x2 * (1.0 / 7.0 - x2 * (1.0 / 9.0 - x2 * (1.0 / 11.0))))))
    else:
        at = math.atan(x)
    return (-at * _INV_PI + a2 * l1 + a3 * l2 + a4 * l3, l0 + a2 * l2 + a3 * l3 + a4 * l4,
            l1 + a2 * l3 + a3 * l4 + a4 * l5)


def _lorentz_derivative(n: int, v: FloatArray, gamma: FloatArray) -> FloatArray:
    """n-th derivative of the unit Lorentzian of half width γ: (−1)ⁿ n! Im[(v − iγ)^−(n+1)]/π."""
    return (-1.0) ** n * math.factorial(n) * ((v - 1j * gamma) ** -(n + 1)).imag / math.pi


def _bridges(c: FloatArray, half: FloatArray) -> FloatArray:
    """Per peak (rows of c = γ, a2, a3, a4): even polynomial density Σ b_k v^(2k), k = 0…5, on (−half, half)
    joining the far carrier's density and its first four derivatives at ±half (their even parts: the carrier is
    then C⁵ but for a tiny odd part, so its coarse quintic interpolation stays accurate) and carrying exactly
    G(half) − G(−half); rows of (b0…b5, G(−half))."""
    gamma, a2, a3, a4 = c[:, 0], c[:, 1], c[:, 2], c[:, 3]

    def rho_derivative(k: int, v: FloatArray) -> FloatArray:
        return (_lorentz_derivative(k, v, gamma) + a2 * _lorentz_derivative(k + 2, v, gamma)
                + a3 * _lorentz_derivative(k + 3, v, gamma) + a4 * _lorentz_derivative(k + 4, v, gamma))

    def far_g(v: FloatArray) -> FloatArray:  # the far carrier: CDF − step (module docstring)
        return (-np.arctan(gamma / v) / math.pi + a2 * _lorentz_derivative(1, v, gamma)
                + a3 * _lorentz_derivative(2, v, gamma) + a4 * _lorentz_derivative(3, v, gamma))

    r = half
    m = r.size
    rhs = np.empty((m, 6))
    for k in range(5):
        rhs[:, k] = 0.5 * (rho_derivative(k, r) + (-1.0) ** k * rho_derivative(k, -r))
    g_l = far_g(-r)
    rhs[:, 5] = far_g(r) - g_l
    mat = np.zeros((m, 6, 6))
    for j in range(6):  # column j: the term v^(2j)
        p = 2 * j
        for k in range(min(5, p + 1)):  # k-th derivative of v^p at r
            mat[:, k, j] = math.factorial(p) / math.factorial(p - k) * r ** (p - k)
        mat[:, 5, j] = 2.0 * r ** (p + 1) / (p + 1)
    out = np.empty((m, 7))
    out[:, :6] = np.linalg.solve(mat, rhs[:, :, None])[:, :, 0]
    out[:, 6] = g_l
    return out


@numba.njit(cache=True, nogil=True)
def _axial_kernels(tt_deg: FloatArray, a: float, b: float,
                   resolution: FloatArray) -> tuple[FloatArray, FloatArray, NDArray[np.int64], FloatArray,
                                                    FloatArray, FloatArray, FloatArray, FloatArray]:
    """Axial-divergence kernels of all peaks (module docstring): flat offsets (deg) and weights (each peak's sum
    1), node counts per peak, and each kernel's mean, 2nd/3rd/4th central moments and largest |offset − mean|."""
    n = tt_deg.size
    q_max = a + b
    q_b = abs(a - b)
    lo_q = (0.0, q_b)
    hi_q = (q_b, q_max)
    panels = np.zeros((n, 2), dtype=np.int64)
    cnt = np.ones(n, dtype=np.int64)
    symmetric = a <= 0.0 and b <= 0.0
    if not symmetric:
        for k in range(n):
            t = math.radians(tt_deg[k])
            c2 = math.cos(t)
            total = 0
            for seg in range(2):
                q0, q1 = lo_q[seg], hi_q[seg]
                if q1 <= q0:
                    continue
                o0 = math.acos(min(max(c2 * math.sqrt(1.0 + q0 * q0), -1.0), 1.0)) - t
                o1 = math.acos(min(max(c2 * math.sqrt(1.0 + q1 * q1), -1.0), 1.0)) - t
                m = int(math.ceil(abs(math.degrees(o1 - o0)) / max(resolution[k], 1e-12))) + 1
                panels[k, seg] = m
                total += 3 * m
            cnt[k] = max(total, 1)
    start = np.cumsum(cnt) - cnt
    off = np.zeros(cnt.sum())
    w = np.zeros(cnt.sum())
    mean = np.zeros(n)
    mu2 = np.zeros(n)
    mu3 = np.zeros(n)
    mu4 = np.zeros(n)
    span = np.zeros(n)
    gx = (-math.sqrt(0.6), 0.0, math.sqrt(0.6))
    gw = (5.0 / 9.0, 8.0 / 9.0, 5.0 / 9.0)
    for k in range(n):
        s0 = start[k]
        if symmetric:
            w[s0] = 1.0
            continue
        t = math.radians(tt_deg[k])
        c2, s2 = math.cos(t), math.sin(t)
        i = s0
        for seg in range(2):
            q0, q1 = lo_q[seg], hi_q[seg]
            m = panels[k, seg]
            for p in range(m):
                lo = math.sqrt(q0 * q0 + (q1 * q1 - q0 * q0) * p / m)
                hi = math.sqrt(q0 * q0 + (q1 * q1 - q0 * q0) * (p + 1) / m)
                for g in range(3):
                    q = 0.5 * (lo + hi) + 0.5 * (hi - lo) * gx[g]
                    pair = 2.0 * min(a, b) if q <= q_b else q_max - q
                    root = math.sqrt(1.0 + q * q)
                    arg = c2 * root
                    sin_psi = q / (s2 * root) if s2 > 0.0 else 1.0
                    if abs(sin_psi) < 1.0 and abs(arg) <= 1.0:
                        jac = 1.0 / (root * root * root * math.sqrt(1.0 - sin_psi * sin_psi))
                        w[i] = 0.5 * (hi - lo) * gw[g] * pair * jac
                        off[i] = math.degrees(math.acos(arg) - t)
                    i += 1
        tot = 0.0
        for j in range(s0, s0 + cnt[k]):
            tot += w[j]
        if not tot > 0.0:
            for j in range(s0, s0 + cnt[k]):
                w[j] = 0.0
                off[j] = 0.0
            w[s0] = 1.0
            tot = 1.0
        mk = 0.0
        for j in range(s0, s0 + cnt[k]):
            w[j] /= tot
            mk += w[j] * off[j]
        mean[k] = mk
        for j in range(s0, s0 + cnt[k]):
            dv = off[j] - mk
            mu2[k] += w[j] * dv * dv
            mu3[k] += w[j] * dv * dv * dv
            mu4[k] += w[j] * dv * dv * dv * dv
            span[k] = max(span[k], abs(dv))
    return off, w, cnt, mean, mu2, mu3, mu4, span


@numba.njit(cache=True, nogil=True)
def _hermite(y0: float, y1: float, d0: float, d1: float, h: float, t: float) -> float:
    """Cubic Hermite interpolant at fraction t of an interval of width h."""
    t2 = t * t
    t3 = t2 * t
    return ((2.0 * t3 - 3.0 * t2 + 1.0) * y0 + (t3 - 2.0 * t2 + t) * h * d0 + (-2.0 * t3 + 3.0 * t2) * y1
            + (t3 - t2) * h * d1)


@numba.njit(cache=True, nogil=True)
def _quintic(y0: float, y1: float, d0: float, d1: float, c0: float, c1: float, h: float, t: float) -> float:
    """Quintic Hermite interpolant (values, first and second derivatives at both ends) at fraction t."""
    t2 = t * t
    t3 = t2 * t
    t4 = t3 * t
    t5 = t4 * t
    return ((1.0 - 10.0 * t3 + 15.0 * t4 - 6.0 * t5) * y0 + (10.0 * t3 - 15.0 * t4 + 6.0 * t5) * y1
            + h * ((t - 6.0 * t3 + 8.0 * t4 - 3.0 * t5) * d0 + (-4.0 * t3 + 7.0 * t4 - 3.0 * t5) * d1)
            + 0.5 * h * h * ((t2 - 3.0 * t3 + 3.0 * t4 - t5) * c0 + (t3 - 2.0 * t4 + t5) * c1))


@numba.njit(cache=True, nogil=True)
def _hermite_d(y0: float, y1: float, d0: float, d1: float, h: float, t: float) -> float:
    """Derivative of the cubic Hermite interpolant."""
    t2 = t * t
    return ((6.0 * t2 - 6.0 * t) * y0 / h + (3.0 * t2 - 4.0 * t + 1.0) * d0 + (-6.0 * t2 + 6.0 * t) * y1 / h
            + (3.0 * t2 - 2.0 * t) * d1)


@numba.njit(cache=True, nogil=True)
def _tables(k_off: NDArray[np.float64], k_w: NDArray[np.float64], k_start: NDArray[np.int64],
            k_cnt: NDArray[np.int64], v_sym: NDArray[np.float64], dv_sym: NDArray[np.float64],
            s_start: NDArray[np.int64], s_cnt: NDArray[np.int64], s_lo: NDArray[np.float64],
            step: NDArray[np.float64], u0: NDArray[np.float64], start: NDArray[np.int64], count: NDArray[np.int64],
            dbar: NDArray[np.float64], half: NDArray[np.float64], carrier: NDArray[np.float64],
            cdf: NDArray[np.float64], pdf: NDArray[np.float64], dpdf: NDArray[np.float64]) -> None:
    """Per peak: density p(u) = Σ_j w_j V(u − δ_j) (cubic Hermite of the tabulated Voigt) and its derivative on
    the table grid, then the cumulative integral of p's cubic Hermite interpolant, started at the far-tail CDF."""
    for k in range(start.size):
        h = step[k]
        n = count[k]
        dens = np.zeros(n)
        ddens = np.zeros(n)
        for j in range(k_start[k], k_start[k] + k_cnt[k]):
            wj, oj = k_w[j], k_off[j]
            for m in range(n):
                pos = (u0[k] + m * h - oj - s_lo[k]) / h
                i = int(math.floor(pos))
                if i < 0:
                    i = 0
                if i > s_cnt[k] - 2:
                    i = s_cnt[k] - 2
                t = pos - i
                a = s_start[k] + i
                dens[m] += wj * _hermite(v_sym[a], v_sym[a + 1], dv_sym[a], dv_sym[a + 1], h, t)
                ddens[m] += wj * _hermite_d(v_sym[a], v_sym[a + 1], dv_sym[a], dv_sym[a + 1], h, t)
        # CDF at the left end: far tail (carrier + step, step = 0 on the left)
        acc = carrier[k, 10] if carrier[k, 0] > 0.0 else 0.0  # G(−half): the far tail's mass left of the table
        s0 = start[k]
        # third derivative of the density by differences of its slope (for the h⁴ Euler–Maclaurin term)
        d3 = np.zeros(n)
        for m in range(1, n - 1):
            d3[m] = (ddens[m + 1] - 2.0 * ddens[m] + ddens[m - 1]) / (h * h)
        if n > 2:
            d3[0] = d3[1]
            d3[n - 1] = d3[n - 2]
        h4 = h * h * h * h / 720.0
        for m in range(n):
            if m > 0:
                acc += (0.5 * h * (dens[m - 1] + dens[m]) + h * h * (ddens[m - 1] - ddens[m]) / 12.0
                        + h4 * (d3[m] - d3[m - 1]))
            cdf[s0 + m] = acc
            pdf[s0 + m] = dens[m]
            dpdf[s0 + m] = ddens[m]


@numba.njit(cache=True, nogil=True)
def _render(edges: NDArray[np.float64], coarse: NDArray[np.int64], centres: NDArray[np.float64],
            amp: NDArray[np.float64], start: NDArray[np.int64], count: NDArray[np.int64], u0: NDArray[np.float64],
            step: NDArray[np.float64], cdf: NDArray[np.float64], pdf: NDArray[np.float64],
            dpdf: NDArray[np.float64], dbar: NDArray[np.float64], half: NDArray[np.float64],
            carrier: NDArray[np.float64], out: NDArray[np.float64]) -> None:
    """Add every peak's bin integrals to `out`: J = table CDF − carrier over the peak's window (0 left of it,
    1 right of it), and the carriers of all peaks summed on the coarse edges and Hermite-interpolated between."""
    ne = edges.size
    for k in range(centres.size):
        a = amp[k]
        if a == 0.0:
            continue
        c = centres[k]
        lo_u = u0[k]
        h = step[k]
        nk = count[k]
        hi_u = lo_u + (nk - 1) * h
        i0 = np.searchsorted(edges, c + lo_u)
        i1 = np.searchsorted(edges, c + hi_u)
        if i0 > 0:
            i0 -= 1
        if i1 > ne - 1:
            i1 = ne - 1
        if i1 <= i0:
            continue
        s0 = start[k]
        has_carrier = carrier[k, 0] > 0.0
        q0, q1, q2, q3, q4, q5 = (carrier[k, 4], carrier[k, 5] / 3.0, carrier[k, 6] / 5.0, carrier[k, 7] / 7.0,
                                  carrier[k, 8] / 9.0, carrier[k, 9] / 11.0)
        gl = carrier[k, 10]
        x0 = -half[k]
        x02 = x0 * x0
        prim0 = x0 * (q0 + x02 * (q1 + x02 * (q2 + x02 * (q3 + x02 * (q4 + x02 * q5)))))
        shift = c + dbar[k]
        inv_h = 1.0 / h
        prev = 0.0
        for i in range(i0, i1 + 1):
            e = edges[i]
            u = e - c
            if u <= lo_u:
                jv = 0.0
            elif u >= hi_u:
                jv = 1.0
            else:
                pos = (u - lo_u) * inv_h
                m = int(pos)
                if m > nk - 2:
                    m = nk - 2
                t = pos - m
                t2 = t * t
                t3 = t2 * t
                t4 = t3 * t
                t5 = t4 * t
                j = s0 + m
                # quintic Hermite of the CDF from its value, density and density slope at both nodes
                jv = ((1.0 - 10.0 * t3 + 15.0 * t4 - 6.0 * t5) * cdf[j]
                      + (10.0 * t3 - 15.0 * t4 + 6.0 * t5) * cdf[j + 1]
                      + h * ((t - 6.0 * t3 + 8.0 * t4 - 3.0 * t5) * pdf[j]
                             + (-4.0 * t3 + 7.0 * t4 - 3.0 * t5) * pdf[j + 1])
                      + 0.5 * h * h * ((t2 - 3.0 * t3 + 3.0 * t4 - t5) * dpdf[j] + (t3 - 2.0 * t4 + t5) * dpdf[j + 1]))
                if has_carrier:
                    v = e - shift
                    v2 = v * v
                    jv -= gl + v * (q0 + v2 * (q1 + v2 * (q2 + v2 * (q3 + v2 * (q4 + v2 * q5))))) - prim0
            if i > i0:
                out[i - 1] += a * (jv - prev)
            prev = jv
    # carriers: sum on coarse edges, interpolate
    nc = coarse.size
    sg = np.zeros(nc)
    sd = np.zeros(nc)
    sdd = np.zeros(nc)
    any_carrier = False
    for k in range(centres.size):
        a = amp[k]
        if a == 0.0 or carrier[k, 0] <= 0.0:
            continue
        any_carrier = True
        ck = centres[k] + dbar[k]
        ck_row = carrier[k]
        hk = half[k]
        for j in range(nc):
            g, dg, ddg = _carrier(edges[coarse[j]] - ck, ck_row, hk)
            sg[j] += a * g
            sd[j] += a * dg
            sdd[j] += a * ddg
    if not any_carrier:
        return
    prev = sg[0]
    for j in range(nc - 1):
        e0 = edges[coarse[j]]
        e1 = edges[coarse[j + 1]]
        hh = e1 - e0
        for i in range(coarse[j] + 1, coarse[j + 1] + 1):
            val = _quintic(sg[j], sg[j + 1], sd[j], sd[j + 1], sdd[j], sdd[j + 1], hh, (edges[i] - e0) / hh)
            out[i - 1] += val - prev
            prev = val


def _warm_up() -> None:
    """Compile/load the numba kernels once (cached on disk)."""
    if _WARM[0]:
        return
    _WARM[0] = True  # before the call: the Diffractometer below does not recurse
    ins = Instrument(Radiation.cu_ka1(), w=10.0, x=1.0, s_l=0.01, h_l=0.01)
    Diffractometer(ins, np.linspace(20.0, 22.0, 50)).render([4.2], [1.0])


_WARM = [False]
