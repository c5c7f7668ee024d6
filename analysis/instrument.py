"""Instrument description of a constant-wavelength X-ray powder diffractometer: radiation, zero, peak widths,
axial-divergence asymmetry, sample displacement; readers/writers of GSAS-II ``.instprm`` and GSAS ``.prm`` files.

Units and conventions (GSAS and GSAS-II share them; all conversions in this module follow from these lines):

- Angles in the public API are degrees 2θ. GSAS/GSAS-II profile coefficients are in *centidegrees*:
  1 centideg = 0.01°.
- Gaussian variance σ² = U tan²θ + V tanθ + W + Z / cos²θ  (centideg²). Gaussian FWHM (deg) =
  √(8 ln2 · σ²) / 100. Z is GSAS-II's Gaussian size term (= GSAS profile-3 ``GP``). The Caglioti form of
  :mod:`hotstage.analysis.profiles` (FWHM² = U' tan²θ + V' tanθ + W' in deg²) is the same polynomial with
  U' = 8 ln2 · U / 10⁴ (likewise V', W'): `caglioti_deg2` converts.
- Lorentzian FWHM γ (centideg) = X / cosθ + Y tanθ; FWHM (deg) = γ / 100 (GSAS LX, LY).
- Zero: a reflection at Bragg angle 2θ_B is observed at 2θ_B + zero (GSAS-II ``Zero``, deg;
  GSAS ``ICONS`` ZERO is in centideg: zero = ZERO / 100).
- Sample displacement s (Bragg–Brentano, also used as the cosθ term of any geometry): Δ2θ = −2 s cosθ / R rad
  (R goniometer radius). GSAS writes this term as ``shft``·cosθ in centideg, so
  shft = −(36000/π)·s/R and s = −π R · shft / 36000 (s and R in the same length unit; here s in µm, R in mm:
  s_µm = −π R_mm · shft / 36 ). GSAS-II keeps displacement with the sample, not in the ``.instprm``.
- Polarisation: GSAS-II ``Polariz.`` P (with ``Azimuth`` A) gives the factor
  [(1−P)cos²A + P sin²A] cos²2θ + (1−P) sin²A + P cos²A, i.e. p + (1−p) cos²2θ with
  p = (1−P) sin²A + P cos²A: P = p at A = 0, the fraction polarised perpendicular to the scattering plane, which
  is :class:`~hotstage.analysis.radiation.Radiation`'s ``synchrotron_polarisation`` (P = 0.5 is an unpolarised
  tube; a lab tube with a monochromator at 2θ_M has p = 1/(1 + cos²2θ_M)). GSAS ``ICONS`` POLA with IPOLA = 0
  is the same fraction (11-BM: 0.99, as GSAS-II's own 11-BM default ``Polariz.:0.99``); other IPOLA are refused.
- Asymmetry: Finger, Cox & Jephcoat, *J. Appl. Cryst.* 27, 892 (1994) (FCJ) with S/L and H/L (sample and
  detector half-heights over the diffractometer radius). GSAS profile 3/4 has both; GSAS-II's ``SH/L`` is
  their sum with S/L = H/L = SH/L/2 (GSAS-II ``psvfcj.for``: "A = SHL/2 ! A = S/L in FCJ"). Reading ``SH/L``
  therefore gives s_l = h_l = SH/L/2; writing gives SH/L = s_l + h_l and, so that unequal values survive,
  hotstage's own fields on a ``#hotstage`` comment line that GSAS-II skips.
- The FCJ profile of a reflection at 2θ < 90° spreads intensity over 2φ ∈ [2φ_min, 2θ], with
  h(2φ)/L = √(cos²2φ / cos²2θ − 1), cos 2φ_min = cos2θ √(1 + (S/L + H/L)²),
  cos 2φ_infl = cos2θ √(1 + (H/L − S/L)²), weight density ∝ W(2φ)/(h cos 2φ) with W/L = S/L + H/L − h/L
  below 2φ_infl and 2 min(S/L, H/L) above (FCJ eqs. 7–9); mirrored (offsets ≥ 0) above 90°. `asymmetry`
  integrates that density over bins of 2φ (Gauss–Legendre in u = √(2θ − 2φ), so the 1/√ singularity at 2θ is
  integrated exactly) and returns each bin's weight at its centroid; the bins are fine near 2θ (≤ 0.2 FWHM where
  most weight lies) and ≤ FWHM/2 in the far tail. A sum of symmetric peaks at those offsets reproduces the
  FCJ-convolved profile within ≈ 1 % of the peak height for S/L, H/L ≤ 0.03 (measured in the tests against a
  direct numerical convolution).

GSAS ``.prm`` profile types read: 3 (TCH pseudo-Voigt + FCJ; terms GU GV GW GP LX LY S/L H/L trns shft stec ptec
sfec L11 L22 L33 L12 L13 L23) and 4 (GU GV GW GP LX ptec trns shft sfec S/L H/L eta S400…, Stephens): instrument
terms are taken, sample terms (stec, ptec, sfec, Lij, Shkl) must be zero (they describe a sample, not an
instrument) and the transparency ``trns`` too (not modelled). Type 2 (Howard asymmetry) and others are refused.
GSAS manual: Larson & Von Dreele, LAUR 86-748 (2004), "Instrument parameter file" and CW profile functions.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hotstage.analysis.profiles import DEFAULT_CAGLIOTI, DEFAULT_WINDOW, LN2, render_peaks, tch_combine
from hotstage.analysis.radiation import CU_KA1_ANGSTROM, CU_KA2_ANGSTROM, CU_KA2_KA1_RATIO, Radiation

FloatArray = NDArray[np.float64]

SIGMA2_TO_FWHM2_DEG2: float = 8.0 * LN2 / 1e4
"""σ² in centideg² → Gaussian FWHM² in deg²."""
MAX_KERNEL_POINTS: int = 1024
"""Cap on the automatic number of FCJ kernel points per peak."""
_KERNEL_SPACING: float = 0.5
"""Far-tail kernel bins are at most this fraction of the (instrument) FWHM wide."""
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(8)


class InstrumentFileError(ValueError):
    """An instrument parameter file that cannot be read; the message names the file and the line."""


def _radiation_to_dict(r: Radiation) -> dict[str, Any]:
    return {"lines": [list(x) for x in r.lines], "polarisation": r.polarisation,
            "monochromator_two_theta": r.monochromator_two_theta,
            "synchrotron_polarisation": r.synchrotron_polarisation}


def _radiation_from_dict(d: dict[str, Any]) -> Radiation:
    return Radiation(tuple((float(w), float(k)) for w, k in d["lines"]), d.get("polarisation", "lab"),
                     d.get("monochromator_two_theta"), float(d.get("synchrotron_polarisation", 0.95)))


def polarisation_fraction(r: Radiation) -> float:
    """GSAS-II ``Polariz.`` (at Azimuth 0) of a radiation: p in p + (1 − p)·cos²2θ."""
    from hotstage.analysis.profiles import polarisation_coefficients

    return float(polarisation_coefficients(r)[0])


@dataclass(frozen=True)
class Instrument:
    """A constant-wavelength powder diffractometer (module docstring for every unit and sign)."""

    radiation: Radiation
    zero: float = 0.0
    u: float = 0.0
    v: float = 0.0
    w: float = 0.0
    x: float = 0.0
    y: float = 0.0
    s_l: float = 0.0
    h_l: float = 0.0
    displacement_um: float = 0.0
    goniometer_radius_mm: float = 240.0
    geometry: Literal["debye-scherrer", "bragg-brentano"] = "debye-scherrer"
    name: str = ""
    z: float = 0.0  # Gaussian size term: σ² += Z / cos²θ (centideg²; GSAS-II Z, GSAS GP)

    def __post_init__(self) -> None:
        """Reject values that would only fail later, deep inside a fit."""
        if not isinstance(self.radiation, Radiation):
            raise ValueError(f"radiation must be a Radiation, got {type(self.radiation).__name__}")
        for f in ("zero", "u", "v", "w", "x", "y", "s_l", "h_l", "displacement_um", "goniometer_radius_mm", "z"):
            val = float(getattr(self, f))
            if not math.isfinite(val):
                raise ValueError(f"instrument {f} must be finite, got {val}")
            object.__setattr__(self, f, val)
        if self.s_l < 0 or self.h_l < 0:
            raise ValueError(f"S/L and H/L must be ≥ 0, got {self.s_l}, {self.h_l}")
        if not self.goniometer_radius_mm > 0:
            raise ValueError(f"goniometer radius must be positive, got {self.goniometer_radius_mm}")
        if self.geometry not in ("debye-scherrer", "bragg-brentano"):
            raise ValueError(f"geometry must be 'debye-scherrer' or 'bragg-brentano', got {self.geometry!r}")

    # widths and positions ------------------------------------------------------------------------------------
    def sigma2(self, two_theta: ArrayLike) -> FloatArray:
        """Gaussian variance (centideg²) U tan²θ + V tanθ + W + Z/cos²θ, clipped at 0."""
        th = np.radians(np.asarray(two_theta, dtype=float)) / 2.0
        t = np.tan(th)
        c = np.cos(th)
        return np.maximum(self.u * t * t + self.v * t + self.w + self.z / (c * c), 0.0)

    def fwhm_gauss(self, two_theta: ArrayLike) -> FloatArray:
        """Instrumental Gaussian FWHM (deg) = √(8 ln2 σ²)/100."""
        return np.sqrt(8.0 * LN2 * self.sigma2(two_theta)) / 100.0

    def fwhm_lorentz(self, two_theta: ArrayLike) -> FloatArray:
        """Instrumental Lorentzian FWHM (deg) = (X/cosθ + Y tanθ)/100, clipped at 0."""
        th = np.radians(np.asarray(two_theta, dtype=float)) / 2.0
        return np.maximum(self.x / np.cos(th) + self.y * np.tan(th), 0.0) / 100.0

    def fwhm(self, two_theta: ArrayLike) -> FloatArray:
        """Total instrumental FWHM (deg), Thompson–Cox–Hastings combination of the two."""
        return tch_combine(self.fwhm_gauss(two_theta), self.fwhm_lorentz(two_theta))[0]

    def caglioti_deg2(self) -> tuple[float, float, float]:
        """(U', V', W') in deg² with Gaussian FWHM² = U' tan²θ + V' tanθ + W' (the quantifier's form; Z ignored)."""
        return (self.u * SIGMA2_TO_FWHM2_DEG2, self.v * SIGMA2_TO_FWHM2_DEG2, self.w * SIGMA2_TO_FWHM2_DEG2)

    def shift(self, two_theta: ArrayLike) -> FloatArray:
        """Observed − Bragg position (deg): zero − 2 s cosθ / R (displacement term)."""
        th = np.radians(np.asarray(two_theta, dtype=float)) / 2.0
        disp = -2.0 * (self.displacement_um * 1e-3) * np.cos(th) / self.goniometer_radius_mm
        return self.zero + np.degrees(disp)

    @property
    def symmetric(self) -> bool:
        """True when there is no axial-divergence asymmetry."""
        return self.s_l == 0.0 and self.h_l == 0.0

    def asymmetry(self, two_theta_centres: ArrayLike, n: int | None = None) -> tuple[FloatArray, FloatArray]:
        """FCJ kernel: offsets (deg, (n_peaks, n)) and weights ((n_peaks, n), rows sum to 1), module docstring.

        `n` None: enough points for the instrument's FWHM at each angle (`fcj_kernel`; at most
        `MAX_KERNEL_POINTS`, the largest need over the peaks; unused points carry weight 0). A symmetric
        instrument gives n = 1 (offset 0, weight 1) unless `n` is given."""
        c = np.atleast_1d(np.asarray(two_theta_centres, dtype=float))
        return fcj_kernel(c, self.s_l, self.h_l, self.fwhm(c), n)

    # (de)serialisation ---------------------------------------------------------------------------------------
    def replace(self, **changes: Any) -> "Instrument":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (`from_dict` inverts it)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["radiation"] = _radiation_to_dict(self.radiation)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Instrument":
        """Inverse of `to_dict` (unknown keys are an error: a typo must not silently become a default)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown instrument fields {sorted(unknown)}")
        if "radiation" not in d:
            raise ValueError("instrument needs a radiation")
        kw = dict(d)
        kw["radiation"] = _radiation_from_dict(d["radiation"])
        return cls(**kw)

    @classmethod
    def lab_default(cls) -> "Instrument":
        """Cu Kα1+Kα2 Bragg–Brentano with Gaussian widths = `profiles.DEFAULT_CAGLIOTI` (the quantifier's old
        default), no Lorentzian, no asymmetry."""
        u, v, w = (c / SIGMA2_TO_FWHM2_DEG2 for c in DEFAULT_CAGLIOTI)
        return cls(Radiation(((CU_KA1_ANGSTROM, 1.0), (CU_KA2_ANGSTROM, CU_KA2_KA1_RATIO)), "lab"),
                   u=u, v=v, w=w, geometry="bragg-brentano", name="lab default (Cu Kα, DEFAULT_CAGLIOTI widths)")

    @classmethod
    def from_wavelength(cls, wavelength: float) -> "Instrument":
        """A bare wavelength: synchrotron polarisation, the lab default widths (no instrument file given)."""
        lab = cls.lab_default()
        return cls(Radiation.synchrotron(float(wavelength)), u=lab.u, v=lab.v, w=lab.w,
                   name=f"bare wavelength {float(wavelength):g} Å (lab default widths)")


# FCJ kernel ------------------------------------------------------------------------------------------------
def _fcj_density(d: FloatArray, c2t: FloatArray, a: FloatArray, b: FloatArray) -> FloatArray:
    """FCJ weight density × 2u at distance d = u² (deg) below a Bragg angle whose cos2θ is `c2t` (> 0):
    W/(h cos2φ)·2u, un-normalised (module docstring). Zero outside [2φ_min, 2θ]."""
    two_theta = np.radians(np.degrees(np.arccos(c2t)))
    dr = np.radians(d)
    cp = np.cos(two_theta - dr)
    # cos²2φ − cos²2θ = sin(2θ − 2φ)·sin(2θ + 2φ): no cancellation near 2φ = 2θ
    ratio = np.sin(dr) * np.sin(2.0 * two_theta - dr) / (c2t * c2t)
    h = np.sqrt(np.maximum(ratio, 0.0))  # h/L
    wgt = np.where(h <= np.abs(b - a), 2.0 * np.minimum(a, b), a + b - h)
    wgt = np.maximum(wgt, 0.0)
    u = np.sqrt(np.maximum(d, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        dens = np.where(h > 0, wgt * 2.0 * u / (h * cp), 0.0)
    return dens


def _kernel_edges(span: float, fwhm: float, n: int | None) -> FloatArray:
    """Bin edges in d ∈ [0, span] (deg below the Bragg angle). Automatic (`n` None): the union of edges uniform in
    u = √d (fine where the 1/√d singularity holds most of the weight: bins ≤ 0.2 FWHM within one FWHM of it, hence
    10·√(span/FWHM) of them) and edges uniform in d no further apart than FWHM/2 (the far tail); at most
    `MAX_KERNEL_POINTS` bins. Given `n`: n bins uniform in u."""
    if n is not None:
        return span * np.linspace(0.0, 1.0, int(n) + 1) ** 2
    n_u = int(min(max(math.ceil(10.0 * math.sqrt(span / fwhm)), 4), MAX_KERNEL_POINTS // 2))
    n_d = int(min(math.ceil(span / (_KERNEL_SPACING * fwhm)), MAX_KERNEL_POINTS // 2))
    e = np.union1d(span * np.linspace(0.0, 1.0, n_u + 1) ** 2, span * np.linspace(0.0, 1.0, n_d + 1))
    return e


def fcj_kernel(two_theta: ArrayLike, s_l: float, h_l: float, resolution: ArrayLike,
               n: int | None = None) -> tuple[FloatArray, FloatArray]:
    """FCJ asymmetry kernel at each 2θ (deg): offsets (deg) and weights, shape (n_peaks, n); bin widths follow
    `resolution` (deg, the narrowest FWHM the kernel is convolved with) when `n` is None (`_kernel_edges`)."""
    tt = np.atleast_1d(np.asarray(two_theta, dtype=float))
    npk = tt.size
    res = np.broadcast_to(np.asarray(resolution, dtype=float), tt.shape)
    a, b = float(s_l), float(h_l)
    if a < 0 or b < 0:
        raise ValueError("S/L and H/L must be ≥ 0")
    # fold above 90°: the profile is the mirror image (offsets ≥ 0)
    sign = np.where(tt > 90.0, 1.0, -1.0)
    t_low = np.where(tt > 90.0, 180.0 - tt, tt)
    c2t = np.cos(np.radians(t_low))
    active = (a + b > 0) & (c2t > 1e-9) & (t_low > 0)
    cmin = np.minimum(c2t * math.sqrt(1.0 + (a + b) ** 2), 1.0)
    span = np.where(active, t_low - np.degrees(np.arccos(cmin)), 0.0)  # 2θ − 2φ_min (deg)
    idx = np.flatnonzero(span > 0)
    edge_sets = [_kernel_edges(float(span[i]), float(max(res[i], 1e-6)), n) for i in idx]
    if n is None:
        n = max([e.size - 1 for e in edge_sets], default=1)
    n = int(n)
    if n < 1:
        raise ValueError(f"asymmetry kernel needs n ≥ 1, got {n}")
    offsets = np.zeros((npk, n))
    weights = np.zeros((npk, n))
    weights[:, 0] = 1.0
    if idx.size == 0:
        return offsets, weights
    # bins in d = 2θ − 2φ ∈ [0, span] (rows padded with empty bins); inside each bin integrate in u = √d
    # (Gauss–Legendre), where the FCJ density times du/dd is smooth
    edges = np.array([np.concatenate((e, np.full(n + 1 - e.size, e[-1]))) for e in edge_sets])
    u_lo = np.sqrt(edges[:, :-1])[:, :, None]
    u_hi = np.sqrt(edges[:, 1:])[:, :, None]
    um = 0.5 * (u_lo + u_hi)
    ur = 0.5 * (u_hi - u_lo)
    uq = um + ur * _GL_NODES[None, None, :]
    dq = uq * uq
    dens = _fcj_density(dq, c2t[idx][:, None, None], np.float64(a), np.float64(b))
    wq = dens * ur * _GL_WEIGHTS[None, None, :]
    wbin = wq.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        cent = np.where(wbin > 0, (wq * dq).sum(axis=2) / wbin, 0.0)
    tot = wbin.sum(axis=1, keepdims=True)
    wbin = wbin / np.where(tot > 0, tot, 1.0)
    offsets[idx] = sign[idx][:, None] * cent
    weights[idx] = wbin
    return offsets, weights


def render_instrument_peaks(x: ArrayLike, centres: ArrayLike, areas: ArrayLike, fwhm_gauss: ArrayLike,
                            fwhm_lorentz: ArrayLike, instrument: Instrument, *, window: float = DEFAULT_WINDOW,
                            n: int | None = None, fast_exp: bool = False) -> FloatArray:
    """Sum of TCH pseudo-Voigt peaks (Gaussian/Lorentzian FWHMs in deg, sample broadening already folded in),
    each convolved with the instrument's FCJ kernel, on a sorted grid `x`; areas preserved
    (`profiles.render_peaks` underneath; kernel bins sized to each peak's own FWHM unless `n` is given; `fast_exp`:
    its tabulated Gaussian)."""
    xa = np.asarray(x, dtype=float)
    c = np.atleast_1d(np.asarray(centres, dtype=float)).ravel()
    a = np.broadcast_to(np.asarray(areas, dtype=float), c.shape)
    fw, eta = tch_combine(np.broadcast_to(np.asarray(fwhm_gauss, dtype=float), c.shape),
                          np.broadcast_to(np.asarray(fwhm_lorentz, dtype=float), c.shape))
    fw = np.maximum(fw, 1e-6)
    if instrument.symmetric or c.size == 0:
        return render_peaks(xa, c, a, fw, eta, window=window, fast_exp=fast_exp)
    off, wts = fcj_kernel(c, instrument.s_l, instrument.h_l, fw, n)
    keep = wts > 0
    rows = np.nonzero(keep)[0]
    return render_peaks(xa, (c[:, None] + off)[keep], (a[:, None] * wts)[keep], fw[rows], eta[rows],
                        window=window, fast_exp=fast_exp)


# file formats ----------------------------------------------------------------------------------------------
def _num(path: Path, lineno: int, key: str, text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise InstrumentFileError(f"{path}:{lineno}: {key}: not a number: {text.strip()!r}") from None
    if not math.isfinite(v):
        raise InstrumentFileError(f"{path}:{lineno}: {key}: not a finite number: {text.strip()!r}")
    return v


_INSTPRM_KEYS = {"Type", "Bank", "Lam", "Lam1", "Lam2", "I(L2)/I(L1)", "Zero", "Polariz.", "Azimuth", "U", "V", "W",
                 "X", "Y", "Z", "SH/L"}
_INSTPRM_IGNORED = {"Source"}
"""Keys GSAS-II may write that do not change the profile (the tube's name): read past."""
_HOTSTAGE_TAG = "#hotstage "


def _read_instprm(path: Path, text: str) -> Instrument:
    lines = text.splitlines()
    if not lines or not lines[0].startswith("#GSAS-II"):
        raise InstrumentFileError(f"{path}:1: not a GSAS-II instrument parameter file (first line must start "
                                  f"'#GSAS-II')")
    vals: dict[str, tuple[float | str, int]] = {}
    raw: dict[str, tuple[str, int]] = {}
    extra: dict[str, Any] | None = None
    extra_line = 0
    for k, line in enumerate(lines, start=1):
        s = line.strip()
        if s.startswith(_HOTSTAGE_TAG):
            try:
                extra = json.loads(s[len(_HOTSTAGE_TAG):])
            except json.JSONDecodeError as exc:
                raise InstrumentFileError(f"{path}:{k}: garbled #hotstage line: {exc.msg}") from None
            extra_line = k
            continue
        if s.startswith("#Bank") and raw:
            raise InstrumentFileError(f"{path}:{k}: several banks in one file; give a single-bank file")
        if not s or s.startswith("#"):
            continue
        for item in s.split(";"):
            if not item.strip():
                continue
            if ":" not in item:
                raise InstrumentFileError(f"{path}:{k}: expected Key:value, got {item.strip()!r}")
            key, val = (p.strip() for p in item.split(":", 1))
            if key in raw:
                raise InstrumentFileError(f"{path}:{k}: {key} given twice")
            raw[key] = (val, k)
    typ = raw.get("Type", ("PXC", 0))
    if not typ[0].startswith("PXC"):
        raise InstrumentFileError(f"{path}:{typ[1]}: Type {typ[0]!r}: only constant-wavelength X-ray (PXC) "
                                  f"instruments are supported")
    for key, (val, k) in raw.items():
        if key in _INSTPRM_IGNORED:
            continue
        if key not in _INSTPRM_KEYS:
            raise InstrumentFileError(f"{path}:{k}: unknown key {key!r} (known: {', '.join(sorted(_INSTPRM_KEYS))})")
        vals[key] = (val if key == "Type" else _num(path, k, key, val), k)

    def get(key: str, default: float | None = None) -> float:
        if key in vals:
            return float(vals[key][0])
        if default is None:
            raise InstrumentFileError(f"{path}: missing {key}")
        return default

    pol = get("Polariz.", 0.5)
    azm = get("Azimuth", 0.0)
    ca, sa = math.cos(math.radians(azm)) ** 2, math.sin(math.radians(azm)) ** 2
    p = (1.0 - pol) * sa + pol * ca
    if not 0.0 <= p <= 1.0:
        raise InstrumentFileError(f"{path}:{vals['Polariz.'][1]}: Polariz. {pol} outside [0, 1]")
    if "Lam" in vals:
        lam = get("Lam")
        if lam <= 0:
            raise InstrumentFileError(f"{path}:{vals['Lam'][1]}: Lam must be positive, got {lam}")
        rad = Radiation.synchrotron(lam, p)
    elif "Lam1" in vals:
        l1, l2, ratio = get("Lam1"), get("Lam2", 0.0), get("I(L2)/I(L1)", 0.0)
        if l1 <= 0:
            raise InstrumentFileError(f"{path}:{vals['Lam1'][1]}: Lam1 must be positive, got {l1}")
        lines_ = ((l1, 1.0),) + (((l2, ratio),) if l2 > 0 and ratio > 0 else ())
        rad = _lab_radiation(lines_, p, path, vals["Polariz."][1] if "Polariz." in vals else 0)
    else:
        raise InstrumentFileError(f"{path}: missing wavelength (Lam, or Lam1/Lam2/I(L2)/I(L1))")
    shl = get("SH/L", 0.0)
    if shl < 0:
        raise InstrumentFileError(f"{path}:{vals['SH/L'][1]}: SH/L must be ≥ 0, got {shl}")
    kw: dict[str, Any] = dict(radiation=rad, zero=get("Zero", 0.0), u=get("U", 0.0), v=get("V", 0.0),
                              w=get("W", 0.0), x=get("X", 0.0), y=get("Y", 0.0), z=get("Z", 0.0),
                              s_l=shl / 2.0, h_l=shl / 2.0, name=str(path))
    if extra is not None:
        try:
            if "radiation" in extra:
                kw["radiation"] = _radiation_from_dict(extra.pop("radiation"))
            sl, hl = float(extra.pop("s_l", kw["s_l"])), float(extra.pop("h_l", kw["h_l"]))
            if not math.isclose(sl + hl, shl, rel_tol=1e-6, abs_tol=1e-12):
                raise InstrumentFileError(f"{path}:{extra_line}: #hotstage S/L + H/L = {sl + hl:g} disagrees with "
                                          f"SH/L = {shl:g}")
            kw.update(s_l=sl, h_l=hl)
            for key in ("displacement_um", "goniometer_radius_mm", "geometry", "name"):
                if key in extra:
                    kw[key] = extra.pop(key)
            if extra:
                raise InstrumentFileError(f"{path}:{extra_line}: unknown #hotstage fields {sorted(extra)}")
            return Instrument(**kw)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, InstrumentFileError):
                raise
            raise InstrumentFileError(f"{path}:{extra_line}: bad #hotstage line: {exc}") from None
    return Instrument(**kw)


def _lab_radiation(lines: tuple[tuple[float, float], ...], p: float, path: Path, lineno: int) -> Radiation:
    """Lab radiation whose polarisation fraction is p: unpolarised at 0.5, a monochromator at 2θ_M with
    cos²2θ_M = 1/p − 1 above (module docstring)."""
    if math.isclose(p, 0.5, abs_tol=1e-9):
        return Radiation(lines, "lab")
    if p < 0.5:
        raise InstrumentFileError(f"{path}:{lineno}: Polariz. {p:g} < 0.5 cannot be a lab tube with a monochromator")
    km = 1.0 / p - 1.0
    return Radiation(lines, "lab", math.degrees(math.acos(math.sqrt(km))))


def _fmt(v: float) -> str:
    return repr(float(v))


def write_instprm(instrument: Instrument, path: str | Path) -> None:
    """Write a GSAS-II ``.instprm`` (read back by `read_instrument` and by GSAS-II); fields GSAS-II lacks
    (separate S/L and H/L, displacement, radius, geometry, name, the radiation's exact form) go on a
    ``#hotstage`` comment line."""
    ins = instrument
    rad = ins.radiation
    p = polarisation_fraction(rad)
    out = ["#GSAS-II instrument parameter file; written by hotstage", "Type:PXC", "Bank:1.0"]
    if len(rad.lines) == 1 and rad.polarisation == "synchrotron":
        out.append(f"Lam:{_fmt(rad.wavelength)}")
    elif len(rad.lines) <= 2:
        (l1, w1), *rest = rad.lines
        l2, r = (rest[0][0], rest[0][1] / w1) if rest else (0.0, 0.0)
        out.append(f"Lam1:{_fmt(l1)}")
        out.append(f"Lam2:{_fmt(l2)}")
        out.append(f"I(L2)/I(L1):{_fmt(r)}")
    else:
        raise ValueError(f"{path}: GSAS-II instrument files hold at most two wavelength lines, "
                         f"got {len(rad.lines)}")
    out += [f"Zero:{_fmt(ins.zero)}", f"Polariz.:{_fmt(p)}", "Azimuth:0.0", f"U:{_fmt(ins.u)}", f"V:{_fmt(ins.v)}",
            f"W:{_fmt(ins.w)}", f"X:{_fmt(ins.x)}", f"Y:{_fmt(ins.y)}", f"Z:{_fmt(ins.z)}",
            f"SH/L:{_fmt(ins.s_l + ins.h_l)}"]
    extra = {"radiation": _radiation_to_dict(rad), "s_l": ins.s_l, "h_l": ins.h_l,
             "displacement_um": ins.displacement_um, "goniometer_radius_mm": ins.goniometer_radius_mm,
             "geometry": ins.geometry, "name": ins.name}
    out.append(_HOTSTAGE_TAG + json.dumps(extra, ensure_ascii=False))
    Path(path).write_text("\n".join(out) + "\n", encoding="utf-8")


_PRM_TYPES = {
    3: ("GU", "GV", "GW", "GP", "LX", "LY", "S/L", "H/L", "trns", "shft", "stec", "ptec", "sfec",
        "L11", "L22", "L33", "L12", "L13", "L23"),
    4: ("GU", "GV", "GW", "GP", "LX", "ptec", "trns", "shft", "sfec", "S/L", "H/L", "eta"),
}
_PRM_MUST_BE_ZERO = {"trns", "stec", "ptec", "sfec", "L11", "L22", "L33", "L12", "L13", "L23"}


def _read_prm(path: Path, text: str, *, goniometer_radius_mm: float = 240.0) -> Instrument:
    icons: tuple[list[str], int] | None = None
    irad = 0
    htype: tuple[str, int] | None = None
    prcf: tuple[int, int, int] | None = None  # type, nterms, line
    coeffs: dict[int, tuple[list[str], int]] = {}
    head = ""
    for k, raw in enumerate(text.splitlines(), start=1):
        if not raw.startswith("INS"):
            continue
        body = raw[3:].rstrip()
        m = re.match(r"\s*(\d*)\s*(.*)$", body)
        bank = m.group(1) if m else ""
        rest = m.group(2) if m else body
        if not bank:
            if rest.startswith("BANK"):
                fields = rest.split()
                if len(fields) > 1 and fields[1] != "1":
                    raise InstrumentFileError(f"{path}:{k}: {fields[1]} banks; only single-bank files are read")
            elif rest.startswith("HTYPE"):
                fields = rest.split()
                htype = (fields[1] if len(fields) > 1 else "", k)
            continue
        if bank != "1":
            continue
        if rest.startswith("ICONS"):
            icons = (rest[5:].split(), k)
        elif rest.startswith("IRAD"):
            irad = int(_num(path, k, "IRAD", rest[4:].split()[0] if rest[4:].split() else "0"))
        elif rest.startswith("I HEAD"):
            head = rest[6:].strip()
        elif rest.startswith("PRCF"):
            tag = rest[4:].split(None, 1)
            # "PRCF1     3   19   0.00100" (header of set 1) or "PRCF11  …" (its coefficient lines)
            mm = re.match(r"(\d)(\d?)\s+(.*)$", rest[4:])
            if not mm or not tag:
                raise InstrumentFileError(f"{path}:{k}: garbled PRCF line")
            setno, lineno_, vals = mm.group(1), mm.group(2), mm.group(3).split()
            if setno != "1":
                continue
            if lineno_ == "":
                if len(vals) < 2:
                    raise InstrumentFileError(f"{path}:{k}: PRCF1 needs profile type and number of terms")
                ptype = int(_num(path, k, "profile type", vals[0]))
                nterm = int(_num(path, k, "number of terms", vals[1]))
                if ptype not in _PRM_TYPES:
                    raise InstrumentFileError(f"{path}:{k}: profile type {ptype} is not supported (types 3 and 4 "
                                              f"are: TCH pseudo-Voigt with FCJ asymmetry)")
                prcf = (ptype, nterm, k)
            else:
                coeffs[int(lineno_)] = (vals, k)
    if htype is not None and not htype[0].startswith("PXC"):
        raise InstrumentFileError(f"{path}:{htype[1]}: HTYPE {htype[0]!r}: only constant-wavelength X-ray (PXC) "
                                  f"is supported")
    if icons is None:
        raise InstrumentFileError(f"{path}: missing wavelength (no 'INS  1 ICONS' line)")
    ic, kic = icons
    if not ic:
        raise InstrumentFileError(f"{path}:{kic}: missing wavelength in ICONS")
    lam1 = _num(path, kic, "ICONS λ1", ic[0])
    lam2 = _num(path, kic, "ICONS λ2", ic[1]) if len(ic) > 1 else 0.0
    zero_cd = _num(path, kic, "ICONS ZERO", ic[2]) if len(ic) > 2 else 0.0
    pola = _num(path, kic, "ICONS POLA", ic[3]) if len(ic) > 3 else 0.5
    ipola = int(_num(path, kic, "ICONS IPOLA", ic[4])) if len(ic) > 4 else 0
    kratio = _num(path, kic, "ICONS KRATIO", ic[5]) if len(ic) > 5 else 0.0
    if lam1 <= 0:
        raise InstrumentFileError(f"{path}:{kic}: missing wavelength (ICONS λ1 = {lam1})")
    if ipola != 0:
        raise InstrumentFileError(f"{path}:{kic}: IPOLA = {ipola} is not supported (0: POLA is the polarisation "
                                  f"fraction)")
    if not 0.0 <= pola <= 1.0:
        raise InstrumentFileError(f"{path}:{kic}: POLA {pola} outside [0, 1]")
    if lam2 > 0 or irad != 0:
        lines_ = ((lam1, 1.0),) + (((lam2, kratio),) if lam2 > 0 and kratio > 0 else ())
        rad = _lab_radiation(lines_, pola, path, kic)
    else:
        rad = Radiation.synchrotron(lam1, pola)
    if prcf is None:
        raise InstrumentFileError(f"{path}: missing profile ('INS  1PRCF1' line)")
    ptype, nterm, kpr = prcf
    values: list[float] = []
    names = _PRM_TYPES[ptype]
    for i in sorted(coeffs):
        vals, k = coeffs[i]
        values += [_num(path, k, f"PRCF1{i} term {len(values) + j + 1}", t) for j, t in enumerate(vals)]
    if len(values) < min(nterm, len(names)):
        raise InstrumentFileError(f"{path}:{kpr}: profile type {ptype} declares {nterm} terms, "
                                  f"{len(values)} found")
    terms = dict(zip(names, values))
    for key in _PRM_MUST_BE_ZERO & set(terms):
        if terms[key] != 0.0:
            raise InstrumentFileError(f"{path}:{kpr}: profile term {key} = {terms[key]:g} is not supported "
                                      f"(sample or transparency term; must be 0 in an instrument file)")
    if ptype == 4 and any(v != 0.0 for v in values[len(names):]):
        raise InstrumentFileError(f"{path}:{kpr}: profile type 4 Stephens strain terms must be 0 in an "
                                  f"instrument file")
    for key in ("S/L", "H/L"):
        if terms.get(key, 0.0) < 0:
            raise InstrumentFileError(f"{path}:{kpr}: {key} must be ≥ 0, got {terms[key]}")
    disp_um = -math.pi * goniometer_radius_mm * terms.get("shft", 0.0) / 36.0 + 0.0  # no "-0.0"
    return Instrument(rad, zero=zero_cd / 100.0, u=terms["GU"], v=terms["GV"], w=terms["GW"], z=terms["GP"],
                      x=terms["LX"], y=terms.get("LY", 0.0), s_l=terms["S/L"], h_l=terms["H/L"],
                      displacement_um=disp_um, goniometer_radius_mm=goniometer_radius_mm,
                      name=f"{path}" + (f" ({head})" if head else ""))


def read_instrument(path: str | Path) -> Instrument:
    """Read an instrument file: GSAS-II ``.instprm``, GSAS ``.prm``/``.ins``/``.inst``/``.iparm``, or ``.json``
    (`Instrument.to_dict`). Errors are `InstrumentFileError` naming the file (and line)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InstrumentFileError(f"{p}: cannot read instrument file: {exc.strerror or exc}") from None
    ext = p.suffix.lower()
    if ext == ".instprm":
        return _read_instprm(p, text)
    if ext in (".prm", ".ins", ".inst", ".iparm"):
        return _read_prm(p, text)
    if ext == ".json":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InstrumentFileError(f"{p}:{exc.lineno}: not JSON: {exc.msg}") from None
        try:
            return Instrument.from_dict(d)
        except (KeyError, TypeError, ValueError) as exc:
            raise InstrumentFileError(f"{p}: bad instrument: {exc}") from None
    raise InstrumentFileError(f"{p}: unknown instrument file type {ext!r} (.instprm, .prm, .ins, .inst, .json)")
