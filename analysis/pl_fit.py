"""Photoluminescence band fits: Gaussian / two-Gaussian (centre, FWHM, area with s.u.), integrated intensity and
the Urbach energy of the low-energy tail.

DESIGN.md, "Analysis methods / PL": Gaussian and two-Gaussian fits (centre, width, area), Urbach energy from ln I
vs E on the low-energy tail.

Decisions and where the numbers come from:
- Domain.  Fits run in WAVELENGTH by default (``domain="wavelength"``): the spectrometer bins are in nm, the
  counts are counts per wavelength bin, and the reported centre/FWHM are the band's in nm.  ``domain="energy"``
  fits a Gaussian in photon energy E = hc/λ instead, after the Jacobian conversion of the spectral density,
  I_E = I_λ·|dλ/dE| = I_λ·λ²/(hc), so that ∫I_E dE = ∫I_λ dλ: the AREA is the same quantity in both domains
  (counts·nm, i.e. ∫counts dλ; divide by the wavelength step for total counts).  A Gaussian in λ is not one in
  E (the λ² Jacobian alone moves the peak of a 36 nm band at 710 nm by 2σ_λ²/λ ≈ 0.7 nm): on simulated spectra
  the two fits' centres differ by ≲ 0.4 nm, so compare centres within one domain.  The simulator draws its
  Gaussian in λ, hence the default.  Both nm and eV/meV values are reported (E[eV] = hc/λ[nm],
  hc = 1239.841984 eV·nm, CODATA 2018).
- Urbach energy is always a slope in energy: ln I = const + E/E_U on the low-energy side (Urbach, Phys. Rev. 92,
  1324 (1953)).  I is the counts per wavelength bin with ``domain="wavelength"`` and the Jacobian-converted
  density with ``domain="energy"`` (the λ² factor changes E_U by ≈2 % over a 70 nm tail at 750–820 nm).
- Tail window (automatic): from the noise floor (smoothed net signal ≥ max(`floor_snr`·σ_background,
  `min_fraction`·peak), contiguous from the peak) up to the highest level, starting at 50 % of the peak, at which
  ln I is still linear in E: while a weighted quadratic fit of ln I vs E has a curvature significant at
  `curvature_sigma` (3σ), the upper level is lowered by the factor `shrink` (0.6).  The Gaussian core has
  constant curvature −1/σ_E² and the exponential tail none, so the window ends up beyond the core/tail junction
  whatever E_U is — no assumption such as "tail starts below x %" is built in.
- Background: constant, the smaller of the medians of the first and last 10 % of the points (the spectrum
  edges, away from the band), with σ from 1.4826·MAD there (normal-consistent MAD).  It is a fit parameter of the
  Gaussian fits (started there).
- Weights: counting statistics, var ≈ max(smoothed counts, floor) with floor = max(background, 10⁻³·peak, tiny)
  (smoothed data so that the weights do not correlate with the noise of each point).  Standard uncertainties are
  from (JᵀWJ)⁻¹ scaled by the reduced χ² (as scipy's curve_fit with absolute_sigma=False), so they stay honest
  for scaled (non-count) data or a slightly imperfect line shape.
- Fit range of `fit_gaussian`: by default ``core=0.3``, the contiguous top of the band above 30 % of its peak
  (background held at the edge estimate).  A real PL band is not a Gaussian all the way down: its low-energy
  Urbach tail joins the Gaussian at a few tens of % of the peak or below (in the simulated samples at ~6 % for
  E_U = 16 meV and ~30 % for 25 meV, FWHM 36 nm).  Fitting the whole spectrum (``core=None``) lets the tail pull
  the centre ~0.1–0.4 nm red and widen the FWHM by up to ~3 % (E_U 16→23 meV), measured on simulated spectra;
  the core fit stays within ~0.1 nm and ~0.3 %.  An explicit ``window`` (nm) can restrict the range further.
  `fit_two_gaussians` always uses the whole range (or `window`).
- Acceptance (issue 14, item 5: fits of pure noise and of bands too weak to locate were accepted).  `fit_pl`
  accepts a band only if (a) it is significant, (b) its FWHM is within physical bounds, (c) its centre is
  located, (d) its centre lies inside the spectrum.  (a): the matched-filter statistic of a Gaussian of the
  fitted centre and width with a free constant background over the whole spectrum,
  z = (g − ḡ)·(y − ȳ) / (σ‖g − ḡ‖), with σ the per-point noise from first differences,
  σ² = mean((yᵢ₊₁ − yᵢ)²)/2 (a smooth band hardly contributes; white noise gives σ exactly).  For one fixed
  template z ~ N(0, 1) on a spectrum without a band; the fit picks the centre and width that look best, so the
  threshold k must include the look-elsewhere effect.  z is a Gaussian random field over (centre c, t = ln s)
  with metric λ_c = 1/(2s²) (correlation exp(−Δ²/(4s²)) of Gaussian templates) and λ_t = 1/2 (correlation
  (cosh t)^(−1/2) between widths); the Gaussian kinematic formula (Adler & Taylor, "Random Fields and
  Geometry" (2007), thm 12.4.2; for the look-elsewhere effect Gross & Vitells, Eur. Phys. J. C 70, 525 (2010))
  gives P(max z ≥ k) ≈ Q(k) + L₁·e^(−k²/2)/(2π) + L₂·k·e^(−k²/2)/(2π)^(3/2), with L₂ = ∫∫√(λ_c λ_t) =
  W/2·(1/s_min − 1/s_max) and L₁ = half the perimeter of the (c, t) rectangle in that metric
  (`detection_threshold`): W = 220 nm, FWHM 8–120 nm, α = 10⁻³ → k = 4.35 (α = 10⁻² → 3.75).  Low-count
  Poisson noise is skewed, which fattens the upper tail (at 1 count per bin the Gaussian k let through 3–4× α):
  k is raised by the Cornish–Fisher term γ_z/6·(k² − 1), γ_z the skewness of the narrowest template's sum from
  the per-point skewness measured on second differences (`skew_corrected_threshold`, `noise_skewness`).
  Measured on simulated dark spectra at 0.5–100 counts per bin (tests/test_pl_ghosts.py): the scan's rate is
  within binomial error of α at α = 5 % and 1 %.  The same statistic, scanned over centres and a geometric grid of widths (FFT correlations, ~0.5 ms), is
  the cheap pre-screen: no position/width with z ≥ k → no fit at all.  (b): FWHM between `fwhm_min_nm` = 8 nm (≈ 20 meV at 700 nm: below
  any room-temperature lead-halide perovskite emission, whose LO-phonon part alone is ≈ 70 meV, Wright et al.,
  Nat. Commun. 7, 11755 (2016); ≥ 40 bins of the 0.2 nm axis, far above any grating resolution used here) and
  `fwhm_max_nm` = 120 nm (≈ 300 meV; broader than the 220 nm window can tell from a curved background).  (c): the
  centre's s.u. ≤ `max_centre_su_nm` (0.5 nm, analysis.live.parameters `pl_max_centre_su_nm`).  Measured
  (tests/test_pl_ghosts.py): 0 of 1000 pure-noise spectra accepted; a band of FWHM 36 nm and peak 10 counts on
  2 dark counts (matched-filter z ≈ 50) accepted in 200 of 200 draws, centres within 4 s.u. and 2 nm.
- Start of the Gaussian fit when `fit_pl` runs it: the pre-screen's best centre and width (not the highest point of
  the smoothed spectrum, which on a weak band is a noise spike: the core around it was a few nm of noise and
  the fit 6–12 nm off with a small s.u.).  A band weaker than `CORE_MIN_Z` (matched-filter z < 150) is fitted
  over the whole range with the background free (the core of a weak band holds too few counts to pin it and the
  edge median of a few-count background is biased by the Poisson discreteness); stronger bands keep the core fit.
- Speed: scipy.optimize.least_squares (Levenberg–Marquardt, analytic Jacobian, starts from the data: half-
  maximum crossings of the smoothed spectrum).  For 1101 points: fit_gaussian ≈ 0.7 ms, urbach_energy ≈ 1 ms,
  fit_two_gaussians 2–4 ms (tests/test_pl_fit.py asserts < 2 ms for the first two).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.fft import next_fast_len
from scipy.optimize import brentq, least_squares
from scipy.signal import fftconvolve, find_peaks, savgol_filter
from scipy.special import ndtr

__all__ = ["HC_EV_NM", "Acceptance", "BandScan", "GaussianComponent", "PLFit", "UrbachFit", "band_significance",
           "detection_threshold", "estimate_background", "fit_gaussian", "fit_two_gaussians", "integrated_intensity",
           "noise_sigma", "noise_skewness", "scan_band", "skew_corrected_threshold", "urbach_energy", "fit_pl", "nm_to_ev"]

HC_EV_NM = 1239.841984  # h·c in eV·nm (CODATA 2018: h and c exact, e exact → 1239.84198433…)
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
SQRT_2PI = math.sqrt(2.0 * math.pi)
MAD_TO_SIGMA = 1.482602218505602  # 1/Φ⁻¹(3/4)
Domain = Literal["wavelength", "energy"]
FloatArray = NDArray[np.float64]
_NAN = float("nan")


def nm_to_ev(wavelength_nm: ArrayLike) -> FloatArray:
    """Photon energy (eV) of a wavelength (nm): E = hc/λ."""
    return HC_EV_NM / np.asarray(wavelength_nm, dtype=np.float64)


# ---------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class GaussianComponent:
    """One Gaussian band: centre, FWHM (nm and eV/meV), area (counts·nm = ∫counts dλ), each with its s.u."""

    centre_nm: float
    centre_nm_su: float
    fwhm_nm: float
    fwhm_nm_su: float
    area: float
    area_su: float
    height: float  # peak height in the fit domain (counts per bin, or Jacobian-converted per eV)
    centre_eV: float
    centre_eV_su: float
    fwhm_meV: float
    fwhm_meV_su: float


@dataclass(frozen=True)
class UrbachFit:
    """Urbach energy (meV) with its s.u., the tail window used (nm) and the number of points in it."""

    energy_meV: float
    energy_meV_su: float
    lo_nm: float
    hi_nm: float
    n_points: int
    upper_fraction: float  # level (fraction of the peak) where the window starts on the band side
    success: bool = True
    message: str = ""


@dataclass(frozen=True)
class PLFit:
    """Result of a PL fit; `centre_nm`, `fwhm_nm`, `area` … refer to the main (largest-area) component."""

    components: tuple[GaussianComponent, ...]
    background: float
    background_su: float
    domain: str
    chi2_red: float
    n_points: int
    success: bool
    message: str = ""
    integrated_intensity: float = _NAN  # ∫(counts − background) dλ, counts·nm (fit_pl fills it)
    urbach_meV: float = _NAN  # fit_pl fills these two
    urbach_meV_su: float = _NAN
    extra: dict[str, float] = field(default_factory=dict)
    significance: float = _NAN  # matched-filter z of the main component (fit_pl fills it; module docstring)
    threshold: float = _NAN  # the k it was tested against
    accepted: bool = False  # fit_pl: significant, width in bounds, centre located and inside the spectrum

    def _main(self) -> GaussianComponent | None:
        """Largest-area component (None if the fit failed)."""
        return max(self.components, key=lambda c: c.area) if self.components else None

    def _get(self, name: str) -> float:
        """Attribute of the main component, NaN if none."""
        c = self._main()
        return getattr(c, name) if c is not None else _NAN

    centre_nm = property(lambda self: self._get("centre_nm"), doc="Main component centre (nm).")
    centre_nm_su = property(lambda self: self._get("centre_nm_su"), doc="Its s.u. (nm).")
    fwhm_nm = property(lambda self: self._get("fwhm_nm"), doc="Main component FWHM (nm).")
    fwhm_nm_su = property(lambda self: self._get("fwhm_nm_su"), doc="Its s.u. (nm).")
    area = property(lambda self: self._get("area"), doc="Main component area (counts·nm).")
    area_su = property(lambda self: self._get("area_su"), doc="Its s.u. (counts·nm).")
    centre_eV = property(lambda self: self._get("centre_eV"), doc="Main component centre (eV).")
    fwhm_meV = property(lambda self: self._get("fwhm_meV"), doc="Main component FWHM (meV).")

    def as_dict(self) -> dict[str, float]:
        """Flat dict of floats (for a derived-data stream): main component, then each component c0, c1, …."""
        out: dict[str, float] = {k: float(getattr(self, k)) for k in (
            "centre_nm", "centre_nm_su", "fwhm_nm", "fwhm_nm_su", "area", "area_su", "centre_eV", "fwhm_meV")}
        out.update(background=self.background, background_su=self.background_su, chi2_red=self.chi2_red,
                   n_points=float(self.n_points), success=float(self.success),
                   integrated_intensity=self.integrated_intensity, urbach_meV=self.urbach_meV,
                   urbach_meV_su=self.urbach_meV_su, significance=self.significance, threshold=self.threshold,
                   accepted=float(self.accepted))
        for i, c in enumerate(self.components):
            for k, v in asdict(c).items():
                out[f"c{i}_{k}"] = float(v)
        out.update(self.extra)
        return out


def _failed(domain: str, n: int, message: str, background: float = _NAN) -> PLFit:
    """A PLFit for 'no fit possible' (no band above the noise, too few points…)."""
    return PLFit((), background, _NAN, domain, _NAN, n, False, message)


# ---------------------------------------------------------------------------------------------- helpers
def _prepare(wavelength_nm: ArrayLike, counts: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Float arrays sorted by ascending wavelength (finite points only)."""
    lam = np.asarray(wavelength_nm, dtype=np.float64)
    y = np.asarray(counts, dtype=np.float64)
    if lam.ndim != 1 or lam.shape != y.shape:
        raise ValueError(f"wavelength and counts must be 1-D of equal length; got {lam.shape}, {y.shape}")
    ok = np.isfinite(lam) & np.isfinite(y)
    lam, y = lam[ok], y[ok]
    if lam.size and lam[0] > lam[-1]:
        lam, y = lam[::-1], y[::-1]
    if lam.size > 1 and np.any(np.diff(lam) <= 0.0):
        idx = np.argsort(lam, kind="stable")
        lam, y = lam[idx], y[idx]
    return lam, y


def _smooth(y: FloatArray) -> FloatArray:
    """Light SG smoothing (window ≈ 1 % of the points, ≥ 5, quadratic) for guesses, levels and weights."""
    n = max(5, (y.size // 100) | 1)
    if y.size <= n:
        return y.copy()
    return savgol_filter(y, n, 2, mode="interp")


def estimate_background(wavelength_nm: ArrayLike, counts: ArrayLike, edge_fraction: float = 0.1
                        ) -> tuple[float, float]:
    """Constant background and its per-point noise σ from the spectrum edges (smaller of the two edge medians)."""
    lam, y = _prepare(wavelength_nm, counts)
    k = max(3, int(edge_fraction * y.size))
    best: tuple[float, float] | None = None
    for part in (y[:k], y[-k:]):
        med = float(np.median(part))
        sig = MAD_TO_SIGMA * float(np.median(np.abs(part - med)))
        if best is None or med < best[0]:
            best = (med, sig)
    assert best is not None
    b, s = best
    if s == 0.0:  # integer counts with MAD 0 (e.g. very low dark counts): Poisson floor
        s = math.sqrt(max(b, 1.0))
    return b, s


def _half_max(u: FloatArray, ys: FloatArray, i: int) -> tuple[float, float]:
    """Half-maximum crossings left/right of index i on a net (background-free) smoothed curve."""
    h = ys[i] / 2.0
    left = right = _NAN
    j = i
    while j > 0 and ys[j] > h:
        j -= 1
    if ys[j] <= h and j < i:
        left = u[j] + (h - ys[j]) * (u[j + 1] - u[j]) / (ys[j + 1] - ys[j])
    j = i
    while j < ys.size - 1 and ys[j] > h:
        j += 1
    if ys[j] <= h and j > i:
        right = u[j - 1] + (ys[j - 1] - h) * (u[j] - u[j - 1]) / (ys[j - 1] - ys[j])
    if math.isnan(left) and math.isnan(right):
        return u[i], abs(u[-1] - u[0]) / 4.0
    if math.isnan(left):
        left = 2.0 * u[i] - right
    if math.isnan(right):
        right = 2.0 * u[i] - left
    return 0.5 * (left + right), right - left


def _model(p: FloatArray, u: FloatArray, bvec: FloatArray | None = None) -> tuple[FloatArray, FloatArray]:
    """Σ Gaussians (height, centre, σ per component) + background p[-1]·bvec (bvec = 1, or dλ/dE in the energy
    domain so that p[-1] is always counts per wavelength bin): value and analytic Jacobian (n × len(p))."""
    ng = (p.size - 1) // 3
    jac = np.empty((u.size, p.size))
    bv = np.ones_like(u) if bvec is None else bvec
    f = p[-1] * bv
    for g in range(ng):
        a, c, s = p[3 * g: 3 * g + 3]
        z = (u - c) / s
        e = np.exp(-0.5 * z * z)
        ae = a * e
        f += ae
        jac[:, 3 * g] = e
        jac[:, 3 * g + 1] = ae * z / s
        jac[:, 3 * g + 2] = ae * z * z / s
    jac[:, -1] = bv
    return f, jac


def _domain_data(lam: FloatArray, y: FloatArray, domain: str) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Fit variable u, data in that domain and the Jacobian factor dλ/du (1 for wavelength)."""
    if domain == "wavelength":
        return lam, y, np.ones_like(lam)
    if domain == "energy":
        e = HC_EV_NM / lam
        jf = lam * lam / HC_EV_NM  # |dλ/dE|
        return e[::-1], (y * jf)[::-1], jf[::-1]  # ascending energy
    raise ValueError(f"domain must be 'wavelength' or 'energy', got {domain!r}")


def _components(p: FloatArray, cov: FloatArray, domain: str) -> tuple[GaussianComponent, ...]:
    """GaussianComponents (sorted by wavelength) from parameters and covariance in the fit domain."""
    out = []
    for g in range((p.size - 1) // 3):
        a, c, s = p[3 * g: 3 * g + 3]
        s = abs(s)
        cv = cov[3 * g: 3 * g + 3, 3 * g: 3 * g + 3]
        sc = math.sqrt(max(cv[1, 1], 0.0))
        ss = math.sqrt(max(cv[2, 2], 0.0))
        area = a * s * SQRT_2PI
        grad = np.array([s * SQRT_2PI, 0.0, a * SQRT_2PI])
        area_su = math.sqrt(max(float(grad @ cv @ grad), 0.0))
        fw, fw_su = FWHM_PER_SIGMA * s, FWHM_PER_SIGMA * ss
        if domain == "wavelength":
            c_nm, c_nm_su, fw_nm, fw_nm_su = c, sc, fw, fw_su
            c_ev = HC_EV_NM / c
            c_ev_su = HC_EV_NM / c ** 2 * sc
            lo, hi = max(c - fw / 2.0, 1e-9), c + fw / 2.0
            fw_mev = 1e3 * (HC_EV_NM / lo - HC_EV_NM / hi)
            fw_mev_su = 1e3 * HC_EV_NM / c ** 2 * fw_su
        else:
            c_ev, c_ev_su, fw_mev, fw_mev_su = c, sc, 1e3 * fw, 1e3 * fw_su
            c_nm = HC_EV_NM / c
            c_nm_su = HC_EV_NM / c ** 2 * sc
            lo, hi = max(c - fw / 2.0, 1e-9), c + fw / 2.0
            fw_nm = HC_EV_NM / lo - HC_EV_NM / hi
            fw_nm_su = HC_EV_NM / c ** 2 * fw_su
        out.append(GaussianComponent(float(c_nm), float(c_nm_su), float(fw_nm), float(fw_nm_su), float(area),
                                     float(area_su), float(a), float(c_ev), float(c_ev_su), float(fw_mev),
                                     float(fw_mev_su)))
    return tuple(sorted(out, key=lambda comp: comp.centre_nm))


def _select(lam: FloatArray, ys_net: FloatArray, window: tuple[float, float] | None,
            core: float | None, start: tuple[float, float] | None = None) -> NDArray[np.bool_]:
    """Points used by the fit: inside `window` (nm) and, with `core`, contiguous around the peak above core·peak."""
    use = np.ones(lam.size, dtype=bool)
    if window is not None:
        lo, hi = min(window), max(window)
        use &= (lam >= lo) & (lam <= hi)
    if core and start is not None:  # the core of the pre-screen's template: where it is above core·peak
        c, fw = start
        use &= np.abs(lam - c) <= fw * math.sqrt(math.log(1.0 / core) / (4.0 * math.log(2.0)))
    elif core:
        i = int(np.argmax(np.where(use, ys_net, -np.inf)))
        level = core * ys_net[i]
        j0 = i
        while j0 > 0 and ys_net[j0 - 1] >= level:
            j0 -= 1
        j1 = i
        while j1 < lam.size - 1 and ys_net[j1 + 1] >= level:
            j1 += 1
        m = np.zeros(lam.size, dtype=bool)
        m[j0: j1 + 1] = True
        use &= m
    return use


def _run_fit(u: FloatArray, yd: FloatArray, var: FloatArray, p0: FloatArray, fix_background: float | None,
             bvec: FloatArray) -> tuple[FloatArray, FloatArray, float, bool, str]:
    """Weighted Levenberg–Marquardt; returns params, covariance (χ²_red-scaled), χ²_red, success, message."""
    w = 1.0 / np.sqrt(var)
    if fix_background is not None:
        def fun(q: FloatArray) -> FloatArray:
            return (_model(np.append(q, fix_background), u, bvec)[0] - yd) * w

        def jac(q: FloatArray) -> FloatArray:
            return _model(np.append(q, fix_background), u, bvec)[1][:, :-1] * w[:, None]
        x0 = p0[:-1]
    else:
        def fun(q: FloatArray) -> FloatArray:
            return (_model(q, u, bvec)[0] - yd) * w

        def jac(q: FloatArray) -> FloatArray:
            return _model(q, u, bvec)[1] * w[:, None]
        x0 = p0
    res = least_squares(fun, x0, jac=jac, method="lm", x_scale="jac")
    q = res.x
    dof = max(u.size - q.size, 1)
    chi2_red = float(2.0 * res.cost / dof)
    jw = res.jac
    try:
        cov_q = np.linalg.inv(jw.T @ jw) * chi2_red
    except np.linalg.LinAlgError:
        cov_q = np.full((q.size, q.size), np.nan)
    if fix_background is not None:
        p = np.append(q, fix_background)
        cov = np.zeros((p.size, p.size))
        cov[:-1, :-1] = cov_q
    else:
        p, cov = q, cov_q
    ok = bool(res.success) and bool(np.all(np.isfinite(p)))
    return p, cov, chi2_red, ok, str(res.message)


def _common(wavelength_nm: ArrayLike, counts: ArrayLike, domain: str, background: float | None,
            window: tuple[float, float] | None, core: float | None, min_snr: float,
            start: tuple[float, float] | None = None
            ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, float, float, str]:
    """Shared preparation: domain data, selection, smoothed net signal, variances; or a failure message."""
    lam, y = _prepare(wavelength_nm, counts)
    if lam.size < 8:
        raise ValueError("need at least 8 finite points")
    b, sb = estimate_background(lam, y) if background is None else (float(background),
                                                                    estimate_background(lam, y)[1])
    u, yd, jf = _domain_data(lam, y, domain)
    bd = b * jf  # background in the fit domain (constant per λ bin; ×dλ/dE in energy)
    ysm = _smooth(yd)
    net = ysm - bd
    peak = float(np.max(net))
    msg = ""
    if not peak > min_snr * sb * float(np.max(jf)):
        msg = f"no band above {min_snr:g}σ of the background noise"
    floor = max(b, 1e-3 * peak / float(np.max(jf)), 1e-12) * jf
    var = np.maximum(ysm * jf, floor * jf)  # counts var × (dλ/du)² for converted densities
    lam_d = lam if domain == "wavelength" else lam[::-1]
    st = None
    if start is not None:  # (centre nm, FWHM nm) → the fit domain
        st = start if domain == "wavelength" else (HC_EV_NM / start[0],
                                                   HC_EV_NM * start[1] / start[0] ** 2)
    if msg:
        use = np.ones(lam.size, dtype=bool)
    elif st is None:
        use = _select(lam_d, net, window, core)
    else:  # window in nm on the λ axis, core around the start on the fit axis
        use = _select(lam_d, net, window, None) & _select(u, net, None, core, st)
    return u[use], yd[use], var[use], net[use], jf[use], b, sb, msg


def fit_gaussian(wavelength_nm: ArrayLike, counts: ArrayLike, *, domain: Domain = "wavelength",
                 background: float | None = None, window: tuple[float, float] | None = None,
                 core: float | None = 0.3, min_snr: float = 5.0,
                 start: tuple[float, float] | None = None) -> PLFit:
    """One Gaussian + constant background (module docstring: domain, weights, range); guesses from the data.
    Default `core` = 0.3: only the band above 30 % of its peak (background held at the edge estimate).
    `start` = (centre nm, FWHM nm), e.g. from `scan_band`: the fit starts there and the core is taken around it
    (the ``min_snr`` pre-screen is then skipped: the caller has tested significance)."""
    u, yd, var, net, jf, b, _sb, msg = _common(wavelength_nm, counts, domain, background, window, core,
                                               0.0 if start is not None else min_snr, start)
    if msg:
        return _failed(domain, u.size, msg, b)
    if start is not None:
        c0 = start[0] if domain == "wavelength" else HC_EV_NM / start[0]
        fw0 = start[1] if domain == "wavelength" else HC_EV_NM * start[1] / start[0] ** 2
        i = int(np.argmin(np.abs(u - c0)))
        h0 = max(float(net[i]), 1e-6 * float(np.max(np.abs(net))) + 1e-12)
    else:
        i = int(np.argmax(net))
        c0, fw0 = _half_max(u, net, i)
        h0 = float(net[i])
    p0 = np.array([h0, c0, fw0 / FWHM_PER_SIGMA, b])
    fix = b if (core or background is not None) else None  # the core alone cannot pin a background
    p, cov, chi2, ok, m = _run_fit(u, yd, var, p0, fix, jf)
    return PLFit(_components(p, cov, domain), float(p[-1]), math.sqrt(max(cov[-1, -1], 0.0)), domain, chi2,
                 u.size, ok, m)


def _two_guesses(u: FloatArray, net: FloatArray, bd: float, one: FloatArray) -> list[FloatArray]:
    """Starting points for two Gaussians: two resolved maxima if present, else split of the single fit plus
    the largest residual shoulder."""
    starts: list[FloatArray] = []
    step = abs(u[1] - u[0])
    pk, props = find_peaks(net, prominence=0.05 * float(np.max(net)), distance=3)
    if pk.size >= 2:
        top = pk[np.argsort(props["prominences"])[-2:]]
        top.sort()
        p = []
        for i in top:
            _, fw = _half_max(u, net, int(i))
            p += [net[i], u[i], max(fw / FWHM_PER_SIGMA / 1.5, 2 * step)]
        starts.append(np.array(p + [bd]))
    a, c, s = one[:3]
    resid = net - (_model(np.append(one[:3], 0.0), u)[0])
    j = int(np.argmax(resid))
    starts.append(np.array([a, c, s * 0.9, max(resid[j], 0.1 * a), u[j], s / 2.0, bd]))
    starts.append(np.array([a * 0.6, c - 0.5 * s, 0.7 * s, a * 0.6, c + 0.5 * s, 0.7 * s, bd]))
    return starts


def fit_two_gaussians(wavelength_nm: ArrayLike, counts: ArrayLike, *, domain: Domain = "wavelength",
                      background: float | None = None, window: tuple[float, float] | None = None,
                      guess: ArrayLike | None = None, min_snr: float = 5.0) -> PLFit:
    """Two Gaussians + constant background; components sorted by wavelength; `guess` = (h1, c1, σ1, h2, c2, σ2)
    in the fit domain overrides the automatic starts (resolved maxima, residual shoulder, symmetric split; tried
    in order of their starting χ², the first fit with two positive components is kept)."""
    u, yd, var, net, jf, b, _sb, msg = _common(wavelength_nm, counts, domain, background, window, None,
                                               min_snr)
    if msg:
        return _failed(domain, u.size, msg, b)
    fix = b if background is not None else None
    if guess is not None:
        starts = [np.append(np.asarray(guess, dtype=np.float64), b)]
    else:
        i = int(np.argmax(net))
        c0, fw0 = _half_max(u, net, i)
        one, *_ = _run_fit(u, yd, var, np.array([net[i], c0, fw0 / FWHM_PER_SIGMA, b]), fix, jf)
        starts = _two_guesses(u, net, b, one)
    # cheapest first: order the starts by their initial χ², keep the first fit with two positive components
    w = 1.0 / np.sqrt(var)
    starts.sort(key=lambda q: float(np.sum(((_model(q, u, jf)[0] - yd) * w) ** 2)))
    best: tuple[FloatArray, FloatArray, float, bool, str] | None = None
    for p0 in starts:
        r = _run_fit(u, yd, var, p0, fix, jf)
        if r[3] and r[0][0] > 0 and r[0][3] > 0:
            best = r
            break
    if best is None:
        return _failed(domain, u.size, "two-Gaussian fit did not converge to two positive components", b)
    p, cov, chi2, ok, m = best
    return PLFit(_components(p, cov, domain), float(p[-1]), math.sqrt(max(cov[-1, -1], 0.0)), domain, chi2,
                 u.size, ok, m)


# ---------------------------------------------------------------------------------------------- integrals, tail
def integrated_intensity(wavelength_nm: ArrayLike, counts: ArrayLike, *, background: float | None = None,
                         window: tuple[float, float] | None = None) -> float:
    """∫(counts − background) dλ over the spectrum or `window` (nm), trapezoidal, in counts·nm."""
    lam, y = _prepare(wavelength_nm, counts)
    b = estimate_background(lam, y)[0] if background is None else float(background)
    if window is not None:
        m = (lam >= min(window)) & (lam <= max(window))
        lam, y = lam[m], y[m]
    return float(np.trapezoid(y - b, lam))


def _wls(e: FloatArray, v: FloatArray, w: FloatArray, deg: int) -> tuple[FloatArray, FloatArray, float]:
    """Weighted polynomial least squares in (e − mean e): coefficients (low→high), covariance (χ²_red-scaled)."""
    x = e - float(np.mean(e))
    a = x[:, None] ** np.arange(deg + 1)
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(a * sw[:, None], v * sw, rcond=None)
    r = (a @ coef - v) * sw
    dof = max(e.size - deg - 1, 1)
    chi2 = float(r @ r) / dof
    cov = np.linalg.inv((a * w[:, None]).T @ a) * chi2
    return coef, cov, chi2


def urbach_energy(wavelength_nm: ArrayLike, counts: ArrayLike, *, domain: Domain = "wavelength",
                  background: float | None = None, start: float = 0.5, floor_snr: float = 10.0,
                  min_fraction: float = 1e-4, curvature_sigma: float = 3.0, shrink: float = 0.6,
                  min_points: int = 8) -> UrbachFit:
    """Urbach energy (meV, with s.u.) from the slope of ln I vs E on the low-energy tail; tail window chosen
    automatically (module docstring)."""
    lam, y = _prepare(wavelength_nm, counts)
    b, sb = estimate_background(lam, y) if background is None else (float(background),
                                                                    estimate_background(lam, y)[1])
    jf = lam * lam / HC_EV_NM if domain == "energy" else np.ones_like(lam)
    if domain not in ("wavelength", "energy"):
        raise ValueError(f"domain must be 'wavelength' or 'energy', got {domain!r}")
    net_s = (_smooth(y) - b) * jf
    ip = int(np.argmax(net_s))
    h = float(net_s[ip])
    fail = UrbachFit(_NAN, _NAN, _NAN, _NAN, 0, _NAN, False, "")
    if not h > floor_snr * sb * float(np.max(jf)):
        return UrbachFit(**{**asdict(fail), "message": "no band above the noise"})
    floor = np.maximum(floor_snr * sb * jf, min_fraction * h)
    # contiguous tail from the peak towards long λ (low E) down to the floor
    ie = ip
    while ie + 1 < lam.size and net_s[ie + 1] >= floor[ie + 1]:
        ie += 1
    e = HC_EV_NM / lam
    net = (y - b) * jf
    level = start
    chosen_sel = np.arange(0)
    chosen: tuple[int, FloatArray, FloatArray, float] | None = None
    while True:
        i0 = ip
        while i0 < ie and net_s[i0] > level * h:
            i0 += 1
        sel = np.arange(i0, ie + 1)
        sel = sel[net[sel] > 0.0]
        if sel.size < min_points:
            break
        v = np.log(net[sel])
        w = net_s[sel] ** 2 / np.maximum(_smooth(y)[sel] * jf[sel] ** 2, 1e-12)  # 1/var(ln I), Poisson
        lin, cov, _ = _wls(e[sel], v, w, 1)
        chosen = (sel.size, lin, cov, level)
        chosen_sel = sel
        quad, qcov, _ = _wls(e[sel], v, w, 2)
        if abs(quad[2]) <= curvature_sigma * math.sqrt(max(qcov[2, 2], 0.0)):
            break
        if level * h * shrink < float(np.min(floor[i0: ie + 1])):
            break
        level *= shrink
    if chosen is None:
        return UrbachFit(**{**asdict(fail), "message": f"fewer than {min_points} tail points above the floor"})
    n, lin, cov, level = chosen
    slope, s_su = float(lin[1]), math.sqrt(max(cov[1, 1], 0.0))
    if not slope > 0.0:
        return UrbachFit(**{**asdict(fail), "message": "tail does not decay towards low energy"})
    eu = 1e3 / slope
    return UrbachFit(eu, 1e3 * s_su / slope ** 2, float(lam[chosen_sel[0]]), float(lam[chosen_sel[-1]]), n,
                     level, True, "")


# ---------------------------------------------------------------------------------------------- acceptance
CORE_MIN_Z = 150.0  # matched-filter z below which fit_pl fits the whole range (module docstring)
WIDTH_STEP = math.sqrt(2.0)  # ratio of neighbouring widths of the scan grid (correlation 0.94 between them)


@dataclass(frozen=True)
class Acceptance:
    """What `fit_pl` requires of a band (module docstring, "Acceptance"): the design false-positive rate per
    spectrum `alpha` (sets the significance threshold k), FWHM bounds (nm) and the largest centre s.u. (nm)."""

    alpha: float = 1e-3
    fwhm_min_nm: float = 8.0
    fwhm_max_nm: float = 120.0
    max_centre_su_nm: float = 0.5

    def __post_init__(self) -> None:
        """Reject settings that cannot work (one line each)."""
        if not 0.0 < self.alpha < 0.5:
            raise ValueError(f"Acceptance.alpha must be in (0, 0.5), got {self.alpha!r}")
        if not 0.0 < self.fwhm_min_nm < self.fwhm_max_nm:
            raise ValueError(f"Acceptance needs 0 < fwhm_min_nm < fwhm_max_nm, got {self.fwhm_min_nm!r}, "
                             f"{self.fwhm_max_nm!r}")
        if not self.max_centre_su_nm > 0.0:
            raise ValueError(f"Acceptance.max_centre_su_nm must be > 0, got {self.max_centre_su_nm!r}")


@lru_cache(maxsize=64)
def detection_threshold(span_nm: float, fwhm_min_nm: float, alpha: float, fwhm_max_nm: float = 120.0) -> float:
    """k such that a spectrum of `span_nm` without a band (Gaussian noise) shows z ≥ k for some centre and width
    with probability `alpha`: the Gaussian kinematic formula over (centre, ln width), module docstring."""
    s_min, s_max = fwhm_min_nm / FWHM_PER_SIGMA, fwhm_max_nm / FWHM_PER_SIGMA
    area = 0.5 * span_nm * (1.0 / s_min - 1.0 / s_max)  # L2: ∫∫ √(λ_c λ_t) dc dt
    half_perimeter = 0.5 * (span_nm / (math.sqrt(2.0) * s_min) + span_nm / (math.sqrt(2.0) * s_max)
                            + 2.0 * math.log(s_max / s_min) / math.sqrt(2.0))  # L1

    def excess(k: float) -> float:
        e = math.exp(-0.5 * k * k)
        return (float(ndtr(-k)) + half_perimeter * e / (2.0 * math.pi) + area * k * e / (2.0 * math.pi) ** 1.5
                - alpha)
    return float(brentq(excess, 0.0, 40.0))


def skew_corrected_threshold(k: float, skew: float, fwhm_min_nm: float, step_nm: float) -> float:
    """k raised for skewed (e.g. low-count Poisson) noise by the Cornish–Fisher term γ_z/6·(k² − 1), with γ_z
    the skewness of the narrowest template's sum: γ₁·Σg³/(Σg²)^{3/2} = γ₁·√(2π/3)/(π^{3/4}·√(s/Δ))."""
    if not (math.isfinite(skew) and skew > 0.0):
        return k
    bins = fwhm_min_nm / FWHM_PER_SIGMA / step_nm
    gz = skew * math.sqrt(2.0 * math.pi / 3.0) / (math.pi ** 0.75 * math.sqrt(bins))
    return k + gz / 6.0 * (k * k - 1.0)


def noise_skewness(counts: ArrayLike) -> float:
    """Per-point skewness γ₁ of the noise from second differences r = yᵢ − (yᵢ₋₁ + yᵢ₊₁)/2 (a smooth band
    hardly contributes): skew(r) = 0.75/1.5^{3/2}·γ₁ = 0.408·γ₁ for independent points."""
    y = np.asarray(counts, dtype=np.float64)
    y = y[np.isfinite(y)]
    if y.size < 5:
        return _NAN
    r = y[1:-1] - 0.5 * (y[:-2] + y[2:])
    r = r - float(np.mean(r))
    m2 = float(np.mean(r * r))
    if not m2 > 0.0:
        return _NAN
    return float(np.mean(r ** 3)) / m2 ** 1.5 / (0.75 / 1.5 ** 1.5)


def noise_sigma(counts: ArrayLike) -> float:
    """Per-point noise σ from first differences: σ² = mean(Δy²)/2 (a smooth band hardly contributes)."""
    y = np.asarray(counts, dtype=np.float64)
    y = y[np.isfinite(y)]
    if y.size < 3:
        return _NAN
    return float(math.sqrt(float(np.mean(np.diff(y) ** 2)) / 2.0))


def _uniform(lam: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The spectrum on a uniform axis (interpolated only if the bins are not already uniform to 0.1 %)."""
    d = np.diff(lam)
    if d.size and float(np.ptp(d)) <= 1e-3 * float(np.mean(d)):
        return lam, y
    grid = np.linspace(float(lam[0]), float(lam[-1]), lam.size)
    return grid, np.interp(grid, lam, y)


def band_significance(wavelength_nm: ArrayLike, counts: ArrayLike, centre_nm: float, fwhm_nm: float,
                      sigma: float | None = None) -> float:
    """Matched-filter z of one Gaussian (centre, FWHM) with a free constant over the whole spectrum:
    z = (g − ḡ)·(y − ȳ)/(σ‖g − ḡ‖), σ from `noise_sigma` unless given."""
    lam, y = _prepare(wavelength_nm, counts)
    if not (np.isfinite(centre_nm) and np.isfinite(fwhm_nm) and fwhm_nm > 0.0):
        return _NAN
    sig = noise_sigma(y) if sigma is None else float(sigma)
    g = np.exp(-0.5 * ((lam - centre_nm) / (fwhm_nm / FWHM_PER_SIGMA)) ** 2)
    gc = g - float(np.mean(g))
    norm = float(np.sqrt(gc @ gc))
    if not (sig > 0.0 and norm > 0.0):
        return _NAN
    return float(gc @ (y - float(np.mean(y)))) / (sig * norm)


@lru_cache(maxsize=8)
def _templates(n: int, step: float, fwhm_min_nm: float, fwhm_max_nm: float
               ) -> tuple[int, tuple[tuple[float, int, FloatArray, FloatArray], ...]]:
    """FFT length and, per scan width: (FWHM, half-length, rFFT of the template, ‖g − ḡ‖ per centre) —
    independent of the data, so cached."""
    nw = max(1, int(math.floor(math.log(fwhm_max_nm / fwhm_min_nm) / math.log(WIDTH_STEP) + 1e-9)) + 1)
    ones = np.ones(n)
    halves = [min(n - 1, int(math.ceil(5.0 * fwhm_min_nm * WIDTH_STEP ** j / FWHM_PER_SIGMA / step)))
              for j in range(nw)]
    size = next_fast_len(n + 2 * max(halves))
    out = []
    for j in range(nw):
        fw = fwhm_min_nm * WIDTH_STEP ** j
        sd = fw / FWHM_PER_SIGMA
        half = halves[j]
        t = np.exp(-0.5 * (np.arange(-half, half + 1) * step / sd) ** 2)
        s1 = fftconvolve(ones, t, mode="same")  # Σ g over the spectrum, per centre
        s2 = fftconvolve(ones, t * t, mode="same")  # Σ g²
        out.append((fw, half, np.fft.rfft(t, size), np.sqrt(np.maximum(s2 - s1 * s1 / n, 1e-300))))
    return size, tuple(out)


@dataclass(frozen=True)
class BandScan:
    """Best matched-filter z over centres (inside the spectrum) and widths, where it is, and the noise σ."""

    z: float
    centre_nm: float
    fwhm_nm: float
    height: float  # least-squares height of that template (counts per bin)
    sigma: float
    skew: float = _NAN  # noise skewness γ₁ (noise_skewness)
    step_nm: float = _NAN


def scan_band(wavelength_nm: ArrayLike, counts: ArrayLike, fwhm_min_nm: float = 8.0,
              fwhm_max_nm: float = 120.0) -> BandScan:
    """The cheap pre-screen: `band_significance` at every bin centre and on a geometric grid of FWHM
    (ratio √2 from `fwhm_min_nm` to `fwhm_max_nm`), by FFT correlations; the template is truncated at the
    spectrum's ends exactly as `band_significance` truncates it."""
    lam, y = _prepare(wavelength_nm, counts)
    if lam.size < 8:
        raise ValueError("need at least 8 finite points")
    lam, y = _uniform(lam, y)
    n = y.size
    step = float(lam[1] - lam[0])
    sig = noise_sigma(y)
    ybar = float(np.mean(y))
    yc = y - ybar
    best = BandScan(-math.inf, _NAN, _NAN, _NAN, sig)
    if not sig > 0.0:
        return BandScan(_NAN, _NAN, _NAN, _NAN, sig)
    size, templates = _templates(n, round(step, 12), float(fwhm_min_nm), float(fwhm_max_nm))
    fy = np.fft.rfft(yc, size)
    for fw, half, ft, den in templates:
        sy = np.fft.irfft(fy * ft, size)[half: half + n]  # Σ g (y − ȳ) per centre (g truncated at the ends)
        r = sy / den
        i = int(np.argmax(r))
        z = float(r[i]) / sig
        if z > best.z:
            best = BandScan(z, float(lam[i]), fw, float(sy[i] / den[i] ** 2), sig)
    return replace(best, skew=noise_skewness(y), step_nm=step)


def fit_pl(wavelength_nm: ArrayLike, counts: ArrayLike, *, domain: Domain = "wavelength", two: bool = False,
           core: float | None = 0.3, acceptance: Acceptance | None = None) -> PLFit:
    """The per-spectrum PL analysis: significance pre-screen (`scan_band`), (two-)Gaussian fit started there,
    integrated intensity, Urbach energy and the acceptance test (module docstring) in one PLFit: ``success``
    says the fit converged, ``accepted`` that the band is significant, within the width bounds, inside the
    spectrum and located to ``acceptance.max_centre_su_nm``; ``message`` says why not."""
    acc = Acceptance() if acceptance is None else acceptance
    lam, y = _prepare(wavelength_nm, counts)
    if lam.size < 8:
        raise ValueError("need at least 8 finite points")
    scan = scan_band(lam, y, acc.fwhm_min_nm, acc.fwhm_max_nm)
    k = skew_corrected_threshold(detection_threshold(float(lam[-1] - lam[0]), acc.fwhm_min_nm, acc.alpha,
                                                     acc.fwhm_max_nm), scan.skew, acc.fwhm_min_nm, scan.step_nm)
    if not scan.z >= k:
        return replace(_failed(domain, lam.size, f"no significant band: best z = {scan.z:.2f} < k = {k:.2f}",
                               estimate_background(lam, y)[0]), significance=scan.z, threshold=k)
    start = (scan.centre_nm, scan.fwhm_nm)
    if two:
        fit = fit_two_gaussians(lam, y, domain=domain, min_snr=0.0)
    else:
        fit = fit_gaussian(lam, y, domain=domain, core=core if scan.z >= CORE_MIN_Z else None, start=start)
    if not fit.success:
        return replace(fit, significance=scan.z, threshold=k)
    z = band_significance(lam, y, fit.centre_nm, fit.fwhm_nm, scan.sigma)
    why = []
    if not z >= k:
        why.append(f"z = {z:.2f} < k = {k:.2f} at the fitted band")
    if not acc.fwhm_min_nm <= fit.fwhm_nm <= acc.fwhm_max_nm:
        why.append(f"FWHM {fit.fwhm_nm:.3g} nm outside [{acc.fwhm_min_nm:g}, {acc.fwhm_max_nm:g}] nm")
    if not float(lam[0]) <= fit.centre_nm <= float(lam[-1]):
        why.append(f"centre {fit.centre_nm:.4g} nm outside the spectrum")
    if not fit.centre_nm_su <= acc.max_centre_su_nm:
        why.append(f"centre s.u. {fit.centre_nm_su:.3g} nm > {acc.max_centre_su_nm:g} nm")
    ii = integrated_intensity(lam, y)
    ub = urbach_energy(lam, y, domain=domain)
    return replace(fit, integrated_intensity=ii, urbach_meV=ub.energy_meV, urbach_meV_su=ub.energy_meV_su,
                   significance=z, threshold=k, accepted=not why, message="; ".join(why) or fit.message)
