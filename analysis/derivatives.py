"""Derivatives of spectra (along the spectral axis) and of ramp observables (along temperature).

DESIGN.md, "Analysis methods / Derivatives": Savitzky–Golay along the spectral axis with the window given in
physical units (cm⁻¹ for THz/far-IR, nm for PL) for THz second derivatives; along temperature, where the sampling
is non-uniform, a local polynomial least-squares fit; band amplitude = −d²I/dν² at the band.

Where the numbers come from:
- Savitzky & Golay, Anal. Chem. 36, 1627 (1964): a least-squares polynomial of degree `polyorder` over an odd
  number of equally spaced points; the d-th derivative is d!·(coefficient of degree d)/stepᵈ
  (`scipy.signal.savgol_filter(deriv=d, delta=step)` applies the 1/stepᵈ scaling).  The default polyorder 3 is the
  usual choice for second derivatives of bands (quadratic and cubic give the same smoothing coefficients at the
  centre for even derivatives; cubic keeps the first derivative unbiased too).
- Window conversion: n = the odd number of points nearest to window/step (ties upwards), i.e. n·step ≈ window
  with each point standing for one step-wide bin (15 cm⁻¹ at 1 cm⁻¹ → 15 points, 5 nm at 0.2 nm → 25), raised
  to the smallest odd n ≥ polyorder + 2 so the fit keeps ≥ 1 degree of freedom.
- Uniformity: an axis is "uniform" if every step is within 1e-4 (relative) of the mean step — np.linspace/arange
  axes are uniform to ~1e-12; calibrated spectrometer axes (polynomial pixel→wavelength maps) are not.  A
  non-uniform axis is resampled onto a uniform grid with the same end points and number of points (cubic spline,
  `scipy.interpolate.CubicSpline`), differentiated there, and the result is interpolated back onto the original
  axis (same shape as the input).  The interpolation adds a small smoothing of its own; noise on
  a resampled axis is no longer white, so `noise_gain` is then only approximate.
- Noise: for white noise σ_y the SG derivative has σ = σ_y·‖c‖/stepᵈ (‖c‖ = 2-norm of the SG coefficients,
  `scipy.signal.savgol_coeffs`); `noise_sigma` estimates it robustly from band-free regions as 1.4826·MAD
  (the MAD→σ factor of a normal distribution, 1/Φ⁻¹(3/4)).
- Thermal derivative: local polynomial regression (Cleveland & Loader, "Smoothing by local regression", 1996,
  uniform kernel): at each sample the points with |T_j − T_i| ≤ window_C/2 are fitted by a polynomial of degree
  `polyorder` in (T − T_i); dq/dT = c₁, d²q/dT² = 2·c₂.  Windows holding fewer than polyorder + 2 points are
  widened to the nearest polyorder + 2 samples (by index) so every point gets an estimate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.interpolate import CubicSpline
from scipy.signal import savgol_coeffs, savgol_filter

__all__ = ["is_uniform", "window_points", "spectral_derivative", "noise_gain", "thermal_derivative",
           "monotone_segments", "band_amplitude", "noise_sigma", "MAD_TO_SIGMA", "UNIFORM_RTOL"]

FloatArray = NDArray[np.float64]
MAD_TO_SIGMA = 1.482602218505602  # 1/Φ⁻¹(3/4): MAD → σ for normally distributed noise
UNIFORM_RTOL = 1e-4  # relative step tolerance for an axis to count as uniform (see module docstring)


def is_uniform(x: ArrayLike, rtol: float = UNIFORM_RTOL) -> bool:
    """True if the axis is equally spaced within `rtol` of its mean step (SG needs equal spacing)."""
    xa = np.asarray(x, dtype=np.float64)
    if xa.ndim != 1 or xa.size < 2:
        raise ValueError("axis must be 1-D with at least 2 points")
    d = np.diff(xa)
    step = (xa[-1] - xa[0]) / (xa.size - 1)
    if step == 0.0 or not np.all(np.sign(d) == np.sign(step)):
        return False
    return bool(np.max(np.abs(d - step)) <= rtol * abs(step))


def window_points(window: float, step: float, polyorder: int = 3) -> int:
    """Odd number of points nearest to window/step (n·step ≈ window), at least polyorder + 2 (≥ 1 dof)."""
    if not (window > 0.0 and math.isfinite(window)):
        raise ValueError(f"window must be positive and finite, got {window!r}")
    if step == 0.0 or not math.isfinite(step):
        raise ValueError(f"step must be non-zero and finite, got {step!r}")
    n = 2 * int(math.floor((window / abs(step) - 1.0) / 2.0 + 0.5)) + 1
    n_min = polyorder + 2
    n_min += 1 - n_min % 2  # next odd
    return max(n, n_min)


def _check_order(order: int, polyorder: int) -> None:
    """Validate derivative and polynomial orders."""
    if order not in (0, 1, 2, 3):
        raise ValueError(f"order must be 0, 1, 2 or 3, got {order!r}")
    if polyorder < max(order, 1):
        raise ValueError(f"polyorder ({polyorder}) must be >= derivative order ({order}) and >= 1")


def spectral_derivative(x: ArrayLike, y: ArrayLike, order: int = 2, window: float = 15.0,
                        polyorder: int = 3) -> FloatArray:
    """Savitzky–Golay derivative dᵒʳᵈᵉʳy/dxᵒʳᵈᵉʳ along the last axis of `y` (1-D or spectra × points),
    window in the units of `x` (e.g. 15 cm⁻¹, 5 nm); non-uniform axes are resampled (module docstring)."""
    _check_order(order, polyorder)
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    if xa.ndim != 1 or ya.shape[-1] != xa.size:
        raise ValueError(f"x must be 1-D with len == y.shape[-1]; got x{xa.shape}, y{ya.shape}")
    uniform = is_uniform(xa)
    if uniform:
        xu, yu = xa, ya
    else:
        if not (np.all(np.diff(xa) > 0) or np.all(np.diff(xa) < 0)):
            raise ValueError("x must be strictly monotone")
        xu = np.linspace(xa[0], xa[-1], xa.size)
        order_idx = np.argsort(xa)
        yu = CubicSpline(xa[order_idx], ya[..., order_idx], axis=-1)(xu)
    step = (xu[-1] - xu[0]) / (xu.size - 1)
    n = window_points(window, step, polyorder)
    if n > xu.size:
        raise ValueError(f"window {window} spans {n} points but the axis has only {xu.size}")
    d = savgol_filter(yu, n, polyorder, deriv=order, delta=step, axis=-1, mode="interp")
    if uniform:
        return d
    order_idx = np.argsort(xu)
    return CubicSpline(xu[order_idx], d[..., order_idx], axis=-1)(xa)


def noise_gain(x: ArrayLike, order: int = 2, window: float = 15.0, polyorder: int = 3) -> float:
    """σ of the SG derivative per unit σ of white noise in y (‖c‖/stepᵒʳᵈᵉʳ) at this axis and window."""
    _check_order(order, polyorder)
    xa = np.asarray(x, dtype=np.float64)
    step = abs((xa[-1] - xa[0]) / (xa.size - 1))
    n = window_points(window, step, polyorder)
    c = savgol_coeffs(n, polyorder, deriv=order, delta=step, use="dot")
    return float(np.sqrt(np.sum(c * c)))


def _ranges_mask(x: FloatArray, ranges: Sequence[tuple[float, float]] | None) -> NDArray[np.bool_]:
    """Boolean mask of the axis points lying inside any of the (lo, hi) ranges."""
    m = np.zeros(x.shape, dtype=bool)
    for lo, hi in ranges or ():
        lo, hi = min(lo, hi), max(lo, hi)
        m |= (x >= lo) & (x <= hi)
    return m


def band_amplitude(x: ArrayLike, d2: ArrayLike, centre: float, half_width: float = 2.0) -> FloatArray | float:
    """Band amplitude −d²I/dx² at a band (DESIGN): the max within ±half_width of the centre, or the value at the
    nearest point when the window holds none (half_width = 0: unbiased by noise, which a max is not — the live
    analysis' choice, see analysis.live.parameters); per spectrum for 2-D `d2`."""
    xa = np.asarray(x, dtype=np.float64)
    d = np.asarray(d2, dtype=np.float64)
    sel = np.abs(xa - centre) <= half_width
    if not np.any(sel):  # window narrower than the step: nearest point
        sel = np.zeros(xa.shape, dtype=bool)
        sel[int(np.argmin(np.abs(xa - centre)))] = True
    out = np.max(-d[..., sel], axis=-1)
    return float(out) if np.ndim(out) == 0 else out


def noise_sigma(d2: ArrayLike, x: ArrayLike, exclude: Sequence[tuple[float, float]] | None = None,
                include: Sequence[tuple[float, float]] | None = None, pool: bool = False) -> FloatArray | float:
    """Robust σ (1.4826·MAD about the median) of a derivative spectrum over band-free points; per spectrum for
    2-D input, or one σ from all spectra with `pool`.  `include` (if given) selects the regions to use,
    `exclude` removes band regions from them.  SG-derivative noise is correlated over the window, so a region
    of N points holds only ~N/window independent values: pool spectra (or regions) for a precise σ."""
    xa = np.asarray(x, dtype=np.float64)
    d = np.asarray(d2, dtype=np.float64)
    use = _ranges_mask(xa, include) if include else np.ones(xa.shape, dtype=bool)
    use &= ~_ranges_mask(xa, exclude)
    if np.count_nonzero(use) < 5:
        raise ValueError("fewer than 5 band-free points left for the noise estimate")
    v = d[..., use]
    if pool:
        v = v.ravel()
    med = np.median(v, axis=-1, keepdims=True)
    s = MAD_TO_SIGMA * np.median(np.abs(v - med), axis=-1)
    return float(s) if np.ndim(s) == 0 else s


# ---------------------------------------------------------------------------------------------- temperature
def monotone_segments(temperatures: ArrayLike, tolerance_C: float = 0.0) -> list[slice]:
    """Split a temperature series into maximal heating / cooling runs (as slices); back-steps up to
    `tolerance_C` (sensor jitter) do not break a run.  Holds stay with the run they occur in."""
    t = np.asarray(temperatures, dtype=np.float64)
    if t.size == 0:
        return []
    segs: list[slice] = []
    start, direction = 0, 0
    ext = t[0]  # running extreme of the current run (max when heating, min when cooling)
    for i in range(1, t.size):
        if direction == 0:
            if abs(t[i] - t[start]) > tolerance_C:
                direction = 1 if t[i] > t[start] else -1
            ext = t[i]
            continue
        if direction * (t[i] - ext) >= 0.0:
            ext = t[i]
        elif direction * (ext - t[i]) > tolerance_C:  # reversed beyond the jitter tolerance: new run
            # the turning point (the extreme) belongs to both runs
            turn = start + int(np.argmax(direction * t[start:i]))
            segs.append(slice(start, turn + 1))
            start, direction, ext = turn, -direction, t[i]
    segs.append(slice(start, t.size))
    return segs


def _check_monotone(t: FloatArray, tolerance_C: float) -> None:
    """Raise unless `t` is one heating or one cooling run (within the jitter tolerance)."""
    if len(monotone_segments(t, tolerance_C)) > 1:
        raise ValueError("temperatures are not monotone (heating and cooling mixed): split the series with "
                         "monotone_segments() and differentiate each run separately")


def thermal_derivative(temperatures: ArrayLike, q: ArrayLike, order: int = 1, window_C: float = 10.0,
                       polyorder: int = 2, tolerance_C: float = 0.0) -> FloatArray:
    """dᵒʳᵈᵉʳq/dTᵒʳᵈᵉʳ of a quantity sampled on a (non-uniform) heating OR cooling run, by a local
    polynomial least-squares fit over |T − Tᵢ| ≤ window_C/2 around each point (module docstring)."""
    if order not in (0, 1, 2):
        raise ValueError(f"order must be 0, 1 or 2, got {order!r}")
    if polyorder < max(order, 1):
        raise ValueError(f"polyorder ({polyorder}) must be >= order ({order}) and >= 1")
    t = np.asarray(temperatures, dtype=np.float64)
    qa = np.asarray(q, dtype=np.float64)
    if t.ndim != 1 or qa.shape[-1] != t.size:
        raise ValueError(f"temperatures must be 1-D with len == q.shape[-1]; got {t.shape}, {qa.shape}")
    n_min = polyorder + 2
    if t.size < n_min:
        raise ValueError(f"need at least {n_min} points for polyorder {polyorder}")
    _check_monotone(t, tolerance_C)
    # work on an ascending copy; a cooling run is the same function of T
    idx = np.argsort(t, kind="stable")
    ts, qs = t[idx], qa[..., idx]
    n = ts.size
    half = 0.5 * float(window_C)
    lo = np.searchsorted(ts, ts - half, side="left")
    hi = np.searchsorted(ts, ts + half, side="right")
    # widen too-small windows to n_min points around i (by index)
    short = (hi - lo) < n_min
    if np.any(short):
        i = np.nonzero(short)[0]
        a = np.clip(i - n_min // 2, 0, n - n_min)
        lo[i], hi[i] = a, a + n_min
    width = int(np.max(hi - lo))
    j = lo[:, None] + np.arange(width)[None, :]  # (n, width) indices, masked beyond hi
    valid = j < hi[:, None]
    j = np.minimum(j, n - 1)
    scale = np.maximum(np.max(np.abs(ts[j] - ts[:, None]) * valid, axis=1), 1e-12)  # conditioning
    u = np.where(valid, (ts[j] - ts[:, None]) / scale[:, None], 0.0)  # (n, width) in [-1, 1]
    w = valid.astype(np.float64)
    powers = u[..., None] ** np.arange(polyorder + 1)  # (n, width, p+1)
    a_mat = powers * w[..., None]
    ata = np.einsum("nwk,nwl->nkl", a_mat, powers)
    if np.any(np.linalg.matrix_rank(ata) < polyorder + 1):
        raise ValueError("a temperature window holds too few distinct temperatures for the polynomial order; "
                         "widen window_C or lower polyorder")
    aty = np.einsum("nwk,...nw->...nk", a_mat, qs[..., j])
    coef = np.linalg.solve(ata, aty[..., None])[..., 0]
    deriv = coef[..., order] * math.factorial(order) / scale ** order
    out = np.empty_like(deriv)
    out[..., idx] = deriv
    return out
