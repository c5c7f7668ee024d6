"""Powder-diffraction peak profiles, widths and the Lorentz–polarisation factor (all angles in degrees 2θ).

Where the formulas come from:

- Pseudo-Voigt: η·L + (1 − η)·G with Lorentzian and Gaussian of the same FWHM, each normalised to unit area
  (Wertheim et al., *Rev. Sci. Instrum.* 45, 1369 (1974); Young & Wiles, *J. Appl. Cryst.* 15, 430 (1982)).
- Caglioti: FWHM² = U tan²θ + V tanθ + W (Caglioti, Paoletti & Ricci, *Nucl. Instrum.* 3, 223 (1958)),
  U, V, W in deg². Default "small lab" values (0.01, −0.005, 0.005) give ≈ 0.066° FWHM at 30° 2θ and ≈ 0.12°
  at 90°, a typical Bragg–Brentano diffractometer with a LaB6-like standard (cf. NIST SRM 660 certificates).
- Scherrer: FWHM = K λ / (L cos θ) radians with K = 0.9 (Scherrer 1918; Langford & Wilson,
  *J. Appl. Cryst.* 11, 102 (1978), K = 0.89–0.94 for spheres/cubes with FWHM), treated as Lorentzian.
- Microstrain: FWHM = 4 ε tan θ radians (Stokes & Wilson, *Proc. Phys. Soc.* 56, 174 (1944)), ε the
  apparent (upper-limit) strain, treated as Gaussian.
- Gaussian/Lorentzian combination: Thompson, Cox & Hastings, *J. Appl. Cryst.* 20, 79 (1987) (TCH) total
  FWHM and mixing parameter η.
- Lorentz factor for a powder (Debye–Scherrer or Bragg–Brentano, ring-fraction included): 1/(sin²θ cosθ)
  (International Tables for Crystallography Vol. C, §6.2.5; Pecharsky & Zavalij, *Fundamentals of Powder
  Diffraction*, eq. 8.44). Polarisation factors (ITC Vol. C, §6.2.2), normalised to 1 at 2θ = 0:
  unpolarised tube (1 + cos²2θ)/2; tube with a monochromator at 2θ_M
  (1 + cos²2θ_M cos²2θ)/(1 + cos²2θ_M); synchrotron p + (1 − p) cos²2θ with p the fraction polarised
  perpendicular to the scattering plane. The unpolarised lab form differs from pymatgen's (1+cos²2θ)/(sin²θ cosθ)
  only by the constant 1/2.

`render_peaks` is the hot path of live phase quantification (table renders) and of the simulator: each peak is
evaluated only within ±window·FWHM, by a compiled loop (numba: a few ns per point, no padded temporaries). The
Lorentzian part is
truncated at ±window·FWHM and the missing tail area (1 − (2/π)·atan(2·window)) is added back as a flat pedestal
over the window, so every rendered peak keeps its integrated area while the shape error stays below
1/(1 + 4·window²) of the Lorentzian peak height (0.7 % at the default window of 6).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray

if TYPE_CHECKING:
    from .radiation import Radiation

LN2 = math.log(2.0)
_G_NORM = 2.0 * math.sqrt(LN2 / math.pi)
_GAUSS_CUT2 = 9.0
"""(distance/FWHM)² beyond which the Gaussian part, exp(−4 ln2 · 9) ≈ 1.5e-11 of its height, is not evaluated."""
SCHERRER_K: float = 0.9
"""Scherrer constant for FWHM-based sizes (Langford & Wilson 1978)."""
DEFAULT_CAGLIOTI: tuple[float, float, float] = (0.01, -0.005, 0.005)
"""Default (U, V, W) in deg² for a lab Bragg–Brentano instrument (see module docstring)."""
_EXP_STEP = 256.0
_EXP_TABLE = np.exp(-np.arange(0.0, 4.0 * LN2 * _GAUSS_CUT2 * _EXP_STEP + 2.0) / _EXP_STEP)
"""exp(−v) at v = k/256 over the Gaussian's range (v ≤ 4 ln2 · 9 ≈ 25): linearly interpolated, within 2e-6 of the
peak height (h²/8 = 1.9e-6), 2.5× faster than exp — for the analysis's phase tables (`render_peaks(fast_exp=True)`),
whose own interpolation error is ≥ 6e-4; simulated data and exact renders use exp."""
DEFAULT_WINDOW: float = 6.0
"""Half-width, in FWHM, over which each peak is evaluated by `render_peaks` (Lorentzian tail there: 0.7 % of
its peak height; the truncated tail's area is restored as a flat pedestal so areas stay exact)."""


def pseudo_voigt(x: ArrayLike, centre: float, fwhm: float, eta: float) -> NDArray[np.float64]:
    """Unit-area pseudo-Voigt η·L + (1−η)·G evaluated at `x` (same units as centre and fwhm)."""
    x = np.asarray(x, dtype=float)
    u = ((x - centre) / fwhm) ** 2
    g = _G_NORM / fwhm * np.exp(-4.0 * LN2 * u)
    lor = 2.0 / (math.pi * fwhm) / (1.0 + 4.0 * u)
    return eta * lor + (1.0 - eta) * g


def caglioti_fwhm(two_theta: ArrayLike, u: float, v: float, w: float) -> NDArray[np.float64]:
    """Instrumental FWHM (deg) from Caglioti U, V, W (deg²); negative radicands are clipped to 0."""
    t = np.tan(np.radians(np.asarray(two_theta, dtype=float)) / 2.0)
    return np.sqrt(np.maximum(u * t * t + v * t + w, 0.0))


def scherrer_fwhm(size_nm: float | None, wavelength: float, two_theta: ArrayLike,
                  k: float = SCHERRER_K) -> NDArray[np.float64]:
    """Crystallite-size FWHM (deg) for size `size_nm` (nm) at `wavelength` (Å); zero for None/inf sizes."""
    tt = np.asarray(two_theta, dtype=float)
    if size_nm is None or not np.isfinite(size_nm):
        return np.zeros_like(tt)
    if size_nm <= 0:
        raise ValueError(f"size_nm must be positive, got {size_nm}")
    return np.degrees(k * wavelength / (10.0 * size_nm * np.cos(np.radians(tt) / 2.0)))


def microstrain_fwhm(microstrain: float, two_theta: ArrayLike) -> NDArray[np.float64]:
    """Microstrain FWHM (deg) = 4 ε tanθ for apparent strain ε (dimensionless, e.g. 1e-3)."""
    tt = np.asarray(two_theta, dtype=float)
    return np.degrees(4.0 * abs(microstrain) * np.tan(np.radians(tt) / 2.0))


def tch_combine(fwhm_g: ArrayLike, fwhm_l: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Thompson–Cox–Hastings total FWHM and η from Gaussian and Lorentzian FWHMs."""
    g = np.asarray(fwhm_g, dtype=float)
    lo = np.asarray(fwhm_l, dtype=float)
    g2 = g * g
    l2 = lo * lo
    total = (g2 * g2 * g + 2.69269 * g2 * g2 * lo + 2.42843 * g2 * g * l2 + 4.47163 * g2 * l2 * lo
             + 0.07842 * g * l2 * l2 + l2 * l2 * lo) ** 0.2
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.where(total > 0, lo / total, 0.0)
    eta = 1.36603 * q - 0.47719 * q * q + 0.11116 * q * q * q
    return total, np.clip(eta, 0.0, 1.0)


def polarisation_coefficients(radiation: "Radiation") -> tuple[float, float]:
    """(a, b) with the polarisation factor P = a + b·cos²2θ for the radiation's beam (module docstring): lab
    (1 + cos²2θ)/2, lab with a monochromator at 2θ_M (1 + cos²2θ_M·cos²2θ)/(1 + cos²2θ_M), synchrotron
    p + (1 − p)·cos²2θ."""
    if radiation.polarisation == "synchrotron":
        p = radiation.synchrotron_polarisation
        return p, 1.0 - p
    if radiation.monochromator_two_theta is None:
        return 0.5, 0.5
    km = math.cos(math.radians(radiation.monochromator_two_theta)) ** 2
    return 1.0 / (1.0 + km), km / (1.0 + km)


def polarisation_factor(two_theta: ArrayLike, radiation: "Radiation") -> NDArray[np.float64]:
    """Polarisation factor (1 at 2θ = 0) for the radiation's beam (lab, lab+monochromator, synchrotron)."""
    a, b = polarisation_coefficients(radiation)
    return a + b * np.cos(np.radians(np.asarray(two_theta, dtype=float))) ** 2


def lorentz_polarisation(two_theta: ArrayLike, radiation: "Radiation | float") -> NDArray[np.float64]:
    """Powder Lorentz–polarisation factor P(2θ)/(sin²θ cosθ) for `radiation` (float = unpolarised lab)."""
    from .radiation import Radiation

    rad = Radiation.coerce(radiation)
    th = np.radians(np.asarray(two_theta, dtype=float)) / 2.0
    s = np.sin(th)
    return polarisation_factor(2.0 * np.degrees(th), rad) / (s * s * np.cos(th))


def render_peaks(two_theta: ArrayLike, centres: ArrayLike, areas: ArrayLike, fwhm: ArrayLike,
                 eta: ArrayLike, window: float = DEFAULT_WINDOW, fast_exp: bool = False) -> NDArray[np.float64]:
    """Sum of pseudo-Voigt peaks (given areas, FWHMs, η) on a sorted 2θ grid, each only within ±window·FWHM
    (`fast_exp`: the Gaussian part from `_EXP_TABLE` instead of exp)."""
    x = np.asarray(two_theta, dtype=float)
    c = np.asarray(centres, dtype=float).ravel()
    n = x.size
    out = np.zeros(n)
    if c.size == 0 or n == 0:
        return out
    a = np.broadcast_to(np.asarray(areas, dtype=float), c.shape)
    w = np.broadcast_to(np.asarray(fwhm, dtype=float), c.shape)
    e = np.broadcast_to(np.asarray(eta, dtype=float), c.shape)
    half = window * w
    lo = np.searchsorted(x, c - half, side="left")
    lengths = np.searchsorted(x, c + half, side="right") - lo
    inv_w = 1.0 / w
    cg = a * (1.0 - e) * (_G_NORM * inv_w)
    cl = a * e * (2.0 / math.pi) * inv_w
    # the Lorentzian tail beyond ±window·FWHM (fraction 1 − (2/π)·atan(2·window) of its area) is put back as a
    # flat pedestal over the window: areas stay exact and the shape error is at most L(edge) = 1/(1 + 4·window²)
    tail = 1.0 - (2.0 / math.pi) * math.atan(2.0 * window)
    ped = a * e * tail / (2.0 * half)
    _accumulate_peaks(x, c, lo, lengths, inv_w, cg, cl, ped, out, _EXP_TABLE if fast_exp else _EXP_TABLE[:0])
    return out


@numba.njit(cache=True, nogil=True)
def _accumulate_peaks(x: NDArray[np.float64], c: NDArray[np.float64], lo: NDArray[np.intp],
                      lengths: NDArray[np.intp], inv_w: NDArray[np.float64], cg: NDArray[np.float64],
                      cl: NDArray[np.float64], ped: NDArray[np.float64], out: NDArray[np.float64],
                      exp_table: NDArray[np.float64]) -> None:
    """Add each peak's Lorentzian + pedestal (+ Gaussian) over its window points lo … lo + length − 1 to `out`
    (the Gaussian from `exp_table` when it is not empty)."""
    g4 = -4.0 * LN2
    tabulated = exp_table.size > 0
    v_scale = 4.0 * LN2 * _EXP_STEP
    for k in range(c.size):
        if lengths[k] <= 0 or (cg[k] == 0.0 and cl[k] == 0.0 and ped[k] == 0.0):
            continue
        ck, iw, gk, lk, pk = c[k], inv_w[k], cg[k], cl[k], ped[k]
        for i in range(lo[k], lo[k] + lengths[k]):
            u = (x[i] - ck) * iw
            u *= u
            v = lk / (1.0 + 4.0 * u) + pk
            if gk != 0.0 and u < _GAUSS_CUT2:  # beyond 3 FWHM the Gaussian is below 2e-11 of its height
                if tabulated:
                    t = v_scale * u
                    j = int(t)
                    v += gk * (exp_table[j] + (t - j) * (exp_table[j + 1] - exp_table[j]))
                else:
                    v += gk * math.exp(g4 * u)
            out[i] += v


def warm_up() -> None:
    """Load the compiled peak kernel now (numba cache; compiled on the first use after an install). Its first call
    costs ~0.4 s (seconds when compiling): a real-time simulator or a live analysis must not spend that mid-run."""
    for fast in (False, True):
        render_peaks(np.linspace(10.0, 11.0, 8), [10.5], [1.0], [0.1], [0.5], fast_exp=fast)


def render_peak_derivatives(two_theta: ArrayLike, centres: ArrayLike, areas: ArrayLike, fwhm: ArrayLike,
                            eta: ArrayLike, d_centre: NDArray[np.float64], d_fwhm: NDArray[np.float64],
                            d_eta: NDArray[np.float64], d_log_area: NDArray[np.float64],
                            row: NDArray[np.intp] | None = None,
                            window: float = DEFAULT_WINDOW) -> NDArray[np.float64]:
    """Derivatives of `render_peaks` (same window and pedestal) with respect to m parameters θ_j, given
    per peak ∂centre/∂θ_j, ∂FWHM/∂θ_j, ∂η/∂θ_j and ∂ln(area)/∂θ_j (arrays (n_rows, m); peak k uses row
    `row[k]`, default k): shape (n_points, m). One pass over each peak's window for all m parameters, the profile's
    partial derivatives analytic (the pedestal's dependence on the window edges is neglected: it is constant
    over the window). Used by `hotstage.analysis.refine` for its Jacobian instead of one re-render per parameter."""
    x = np.asarray(two_theta, dtype=float)
    c = np.asarray(centres, dtype=float).ravel()
    m = int(np.shape(d_centre)[1]) if np.ndim(d_centre) == 2 else 0
    out = np.zeros((x.size, m))
    if c.size == 0 or x.size == 0 or m == 0:
        return out
    a = np.broadcast_to(np.asarray(areas, dtype=float), c.shape)
    w = np.broadcast_to(np.asarray(fwhm, dtype=float), c.shape)
    e = np.ascontiguousarray(np.broadcast_to(np.asarray(eta, dtype=float), c.shape))
    half = window * w
    lo = np.searchsorted(x, c - half, side="left")
    lengths = np.searchsorted(x, c + half, side="right") - lo
    inv_w = 1.0 / w
    tail = 1.0 - (2.0 / math.pi) * math.atan(2.0 * window)
    rows = np.arange(c.size) if row is None else np.asarray(row, dtype=np.intp)
    _accumulate_peak_derivatives(x, c, lo, lengths, inv_w, a * _G_NORM * inv_w, a * (2.0 / math.pi) * inv_w,
                                 a * tail / (2.0 * half), e, rows,
                                 *(np.ascontiguousarray(v, dtype=float) for v in (d_centre, d_fwhm, d_eta, d_log_area)),
                                 out, _EXP_TABLE)
    return out


@numba.njit(cache=True, nogil=True, fastmath=True)
def _accumulate_peak_derivatives(x: NDArray[np.float64], c: NDArray[np.float64], lo: NDArray[np.intp],
                                 lengths: NDArray[np.intp], inv_w: NDArray[np.float64], ga: NDArray[np.float64],
                                 la: NDArray[np.float64], pa: NDArray[np.float64], eta: NDArray[np.float64],
                                 row: NDArray[np.intp], dc: NDArray[np.float64], dw: NDArray[np.float64],
                                 de: NDArray[np.float64], da: NDArray[np.float64], out: NDArray[np.float64],
                                 exp_table: NDArray[np.float64]) -> None:
    """out[i, j] += Σ_k ∂P_k(x_i)/∂θ_j for P = (1 − η)·ga·exp(−4ln2·u²) + η·(la/(1 + 4u²) + pa), u = (x − c)/w:
    ∂P/∂c = [(1−η)G·8ln2·u + ηL·8u/(1 + 4u²)]/w, ∂P/∂w = [(1−η)G(8ln2·u² − 1) + ηL(8u²/(1 + 4u²) − 1) − η·pa]/w,
    ∂P/∂η = −G + L + pa, ∂P/∂ln a = P (G, L the un-mixed Gaussian and Lorentzian terms). The Gaussian from
    `exp_table` (2e-6 of its height: a Jacobian needs far less), fastmath (reassociation only changes rounding)."""
    g4 = 4.0 * LN2
    v_scale = g4 * _EXP_STEP
    m = out.shape[1]
    coef = np.empty((m, 4))
    for k in range(c.size):
        if lengths[k] <= 0:
            continue
        r = row[k]
        ck, iw, gk, lk, pk, ek = c[k], inv_w[k], ga[k], la[k], pa[k], eta[k]
        for j in range(m):  # this peak's chain-rule factors, contiguous for the inner loop
            coef[j, 0] = dc[r, j] * iw
            coef[j, 1] = dw[r, j] * iw
            coef[j, 2] = de[r, j]
            coef[j, 3] = da[r, j]
        for i in range(lo[k], lo[k] + lengths[k]):
            u = (x[i] - ck) * iw
            u2 = u * u
            lq = 1.0 / (1.0 + 4.0 * u2)
            g = 0.0
            if u2 < _GAUSS_CUT2:
                t = v_scale * u2
                jt = int(t)
                g = gk * (exp_table[jt] + (t - jt) * (exp_table[jt + 1] - exp_table[jt]))
            lor = lk * lq
            ge = (1.0 - ek) * g
            ll = ek * lor
            val = ge + ll + ek * pk
            dvc = ge * 2.0 * g4 * u + ll * lq * 8.0 * u
            dvw = ge * (2.0 * g4 * u2 - 1.0) + ll * (8.0 * u2 * lq - 1.0) - ek * pk
            dve = lor - g + pk
            o = out[i]
            for j in range(m):
                o[j] += coef[j, 0] * dvc + coef[j, 1] * dvw + coef[j, 2] * dve + coef[j, 3] * val
