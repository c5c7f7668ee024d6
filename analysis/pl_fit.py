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
- Speed: scipy.optimize.least_squares (Levenberg–Marquardt, analytic Jacobian, starts from the data: half-
  maximum crossings of the smoothed spectrum).  For 1101 points: fit_gaussian ≈ 0.7 ms, urbach_energy ≈ 1 ms,
  fit_two_gaussians 2–4 ms (tests/test_pl_fit.py asserts < 2 ms for the first two).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import least_squares
from scipy.signal import find_peaks, savgol_filter

__all__ = ["HC_EV_NM", "GaussianComponent", "PLFit", "UrbachFit", "estimate_background", "fit_gaussian",
           "fit_two_gaussians", "integrated_intensity", "urbach_energy", "fit_pl", "nm_to_ev"]

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
                   urbach_meV_su=self.urbach_meV_su)
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
            core: float | None) -> NDArray[np.bool_]:
    """Points used by the fit: inside `window` (nm) and, with `core`, contiguous around the peak above core·peak."""
    use = np.ones(lam.size, dtype=bool)
    if window is not None:
        lo, hi = min(window), max(window)
        use &= (lam >= lo) & (lam <= hi)
    if core:
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
            window: tuple[float, float] | None, core: float | None, min_snr: float
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
    use = _select(lam_d, net, window, core) if not msg else np.ones(lam.size, dtype=bool)
    return u[use], yd[use], var[use], net[use], jf[use], b, sb, msg


def fit_gaussian(wavelength_nm: ArrayLike, counts: ArrayLike, *, domain: Domain = "wavelength",
                 background: float | None = None, window: tuple[float, float] | None = None,
                 core: float | None = 0.3, min_snr: float = 5.0) -> PLFit:
    """One Gaussian + constant background (module docstring: domain, weights, range); guesses from the data.
    Default `core` = 0.3: only the band above 30 % of its peak (background held at the edge estimate)."""
    u, yd, var, net, jf, b, _sb, msg = _common(wavelength_nm, counts, domain, background, window, core,
                                               min_snr)
    if msg:
        return _failed(domain, u.size, msg, b)
    i = int(np.argmax(net))
    c0, fw0 = _half_max(u, net, i)
    p0 = np.array([net[i], c0, fw0 / FWHM_PER_SIGMA, b])
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


def fit_pl(wavelength_nm: ArrayLike, counts: ArrayLike, *, domain: Domain = "wavelength", two: bool = False,
           core: float | None = 0.3) -> PLFit:
    """The per-spectrum PL analysis: (two-)Gaussian fit + integrated intensity + Urbach energy, one PLFit."""
    fit = (fit_two_gaussians(wavelength_nm, counts, domain=domain) if two
           else fit_gaussian(wavelength_nm, counts, domain=domain, core=core))
    if not fit.success:
        return fit
    ii = integrated_intensity(wavelength_nm, counts)
    ub = urbach_energy(wavelength_nm, counts, domain=domain)
    return replace(fit, integrated_intensity=ii, urbach_meV=ub.energy_meV, urbach_meV_su=ub.energy_meV_su)
