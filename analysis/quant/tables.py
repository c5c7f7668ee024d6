"""Per-phase unit-scale powder patterns tabulated on a uniform sinθ grid, for fast strain/zero/width changes.

Why a table in sinθ: an isotropic lattice strain ε multiplies every d by (1 + ε), so every line moves to
sinθ' = sinθ/(1 + ε) (Bragg's law) — a pure *rescaling* of sinθ. A pattern rendered once at a reference strain
ε_ref therefore gives the pattern at ε by reading the table at sinθ·r, r = (1 + ε)/(1 + ε_ref), with one
multiplication per point instead of re-rendering hundreds of peaks. The intensity bookkeeping is exact: with
I_k ∝ LP(2θ_k) and LP = P(2θ)/(sin²θ cosθ) (International Tables Vol. C §6.2.5, as in `hotstage.analysis.profiles`), the
area Jacobian r·cosθ/cosθ_b of the mapping and the LP ratio combine to r³·P(2θ)/P(2θ_b), θ_b the back-mapped
angle. What is not exact is second order: a mapped peak keeps the reference FWHM scaled by cosθ_b/(r cosθ)
instead of the Caglioti/Scherrer width at the new angle (relative error ≈ |ε − ε_ref|(1 + tan²θ)); tables are
re-rendered when |ε − ε_ref| exceeds `STRAIN_WINDOW` (error ≲ 0.5 % of a width).

The Lorentzian width parameter Y (FWHM_L = Y·(λ_line/λ₁)/cosθ, Scherrer form, Langford & Wilson, J. Appl. Cryst.
11, 102 (1978)) enters through a quadratic in Y built from three renders at Y_ref·(1 − δ, 1, 1 + δ)
(δ = `WIDTH_NODE`): exact at the nodes, third-order error in between; re-rendered when |Y/Y_ref − 1| >
`WIDTH_WINDOW`, and (cold fits) once more at convergence when Y ended further than `WIDTH_RECENTRE` from the
centre node. Values between table points are interpolated by Catmull–Rom cubics (the cubic-convolution kernel of
Keys, IEEE Trans. ASSP 29, 1153 (1981), third-order accurate); the table step is FWHM_min/`OVERSAMPLE` in 2θ. For
OVERSAMPLE = 8 the interpolation error, computed for unit-height pseudo-Voigts of unit FWHM, is ≤ 0.06 % (Gaussian),
0.11 % (η = 0.5), 0.17 % (Lorentzian) of the peak height — what linear interpolation reaches only at 24 points per
FWHM (0.12–0.17 %), so tables are 3× shorter and 3× cheaper to render. The derivative with respect to the read
position is the derivative of the cubic (exact for the interpolated model). Renders take the Gaussian part of the
profile from a tabulated exp (`render_peaks(fast_exp=True)`, within 2e-6 of the peak height, far below those errors).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numba
import numpy as np
from numpy.typing import NDArray

from hotstage.analysis.profiles import polarisation_coefficients, render_peaks, tch_combine
from hotstage.analysis.radiation import Radiation

if TYPE_CHECKING:
    from hotstage.analysis.instrument import Instrument

FloatArray = NDArray[np.float64]

OVERSAMPLE: float = 8.0
"""Table points per narrowest FWHM (2θ); see the module docstring for the interpolation error."""
STRAIN_WINDOW: float = 4e-3
"""Re-render a phase's table when its strain moved further than this from the table's reference strain."""
WIDTH_NODE: float = 0.2
"""Relative spacing of the three width nodes of a table (Y_ref·(1 ± WIDTH_NODE))."""
WIDTH_WINDOW: float = 0.2
"""Re-render when |Y/Y_ref − 1| exceeds this: no extrapolation beyond the nodes (a quadratic extrapolated in Y
can have a spurious minimum that stalls Gauss–Newton)."""
WIDTH_RECENTRE: float = 0.04
"""At convergence, re-render and iterate again when |Y/Y_ref − 1| exceeds this (final model near the centre node)."""
MAX_TABLE_POINTS: int = 400_000
"""Cap on table length (memory: 12 float64 columns, ≈ 38 MB at the cap)."""
_TABLE_S_MARGIN: float = 0.03
"""The table spans sinθ·(1 ± 3 %) beyond the data so strains up to ±3 % read inside it."""


def polarisation_from_sin(s: FloatArray, rad: Radiation) -> FloatArray:
    """Polarisation factor from sinθ (no trigonometric calls): cos2θ = 1 − 2 sin²θ (`polarisation_coefficients`)."""
    a, b = polarisation_coefficients(rad)
    c2 = 1.0 - 2.0 * s * s
    c2 *= c2
    return a + b * c2


@numba.njit(cache=True, nogil=True)
def shifted_axis(sin0: FloatArray, cos0: FloatArray, zero_deg: float, pol_a: float, pol_b: float, s: FloatArray,
                 dsdz: FloatArray, pol: FloatArray) -> None:
    """sinθ, d(sinθ)/dz and the polarisation factor on the axis 2θ − z, from sinθ₀, cosθ₀ of the fixed axis by the
    addition theorem (one pass, no transcendental per point; z in degrees, the derivative per degree of z)."""
    h = math.radians(zero_deg) * 0.5
    cd, sd = math.cos(h), math.sin(h)
    k = -math.pi / 360.0
    for i in range(s.size):
        v = sin0[i] * cd - cos0[i] * sd
        s[i] = v
        dsdz[i] = (cos0[i] * cd + sin0[i] * sd) * k
        c = 1.0 - 2.0 * v * v
        pol[i] = pol_a + pol_b * c * c


@dataclass
class PhasePeaks:
    """A phase's reflection list at zero strain over all radiation lines: sinθ, wavelength, w·|F|²·m (no LP)."""

    sin_theta: FloatArray
    wavelength: FloatArray
    f2m: FloatArray
    norm: float  # the largest integrated intensity in range at ε = 0: columns are divided by it (conditioning)


def phase_peaks(crystal, rad: Radiation, two_theta_max: float, min_relative_intensity: float) -> PhasePeaks:
    """Collect a crystal's peaks line by line (so each knows its wavelength) and strip the LP factor."""
    from hotstage.analysis.profiles import lorentz_polarisation

    sins, lams, f2ms = [], [], []
    for lam, weight in rad.lines:
        line = Radiation(((lam, weight),), rad.polarisation, rad.monochromator_two_theta,
                         rad.synchrotron_polarisation)
        c, a = crystal.peaks(line, two_theta_max, strain=0.0)
        c = np.asarray(c, dtype=float)
        a = np.asarray(a, dtype=float)
        sins.append(np.sin(np.radians(c) / 2.0))
        lams.append(np.full(c.size, lam))
        f2ms.append(a / lorentz_polarisation(c, rad))
    s, lam, f2m = np.concatenate(sins), np.concatenate(lams), np.concatenate(f2ms)
    areas = f2m * _lp_from_sin(s, rad)
    norm = float(areas.max()) if areas.size else 1.0
    keep = areas >= min_relative_intensity * norm
    return PhasePeaks(s[keep], lam[keep], f2m[keep], norm)


def _lp_from_sin(s: FloatArray, rad: Radiation) -> FloatArray:
    """Lorentz–polarisation factor P/(sin²θ cosθ) from sinθ."""
    return polarisation_from_sin(s, rad) / (s * s * np.sqrt(np.maximum(1.0 - s * s, 1e-300)))


class PeakModel:
    """Peak positions, areas and widths of one phase as a function of strain ε and Lorentzian width Y (deg).

    With an `instrument` (`hotstage.analysis.instrument.Instrument`) the fixed Gaussian is the instrument's
    (U, V, W, Z in centideg², `Instrument.fwhm_gauss`) instead of `caglioti`, and the instrument's Lorentzian
    (X/cosθ + Y_i tanθ) is a fixed FWHM added to the phase's refined Lorentzian: FWHM_L = Y·(λ_line/λ₁)/cosθ +
    FWHM_L,instrument, so no width goes below the instrument's. Its FCJ asymmetry and its sample-displacement shift
    (the θ-dependent part of `Instrument.shift`; the constant zero is refined) are rendered into every peak
    (`render`, and the tables' nodes): each peak is spread over the instrument's FCJ kernel (`Instrument.asymmetry`,
    sized for the narrowest width it is rendered with) at render time, so reads and derivatives cost the same."""

    def __init__(self, peaks: PhasePeaks, rad: Radiation, caglioti: tuple[float, float, float],
                 microstrain: float, eta: float | None, instrument: "Instrument | None" = None) -> None:
        """Keep the reflection list and the fixed (instrumental) Gaussian width parameters."""
        self.pk = peaks
        self.rad = rad
        self.caglioti = caglioti
        self.microstrain = microstrain
        self.eta = eta
        self.instrument = instrument
        self.lam_ratio = peaks.wavelength / rad.wavelength

    def peaks(self, strain: float, width: float, zero: float = 0.0
              ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """Centres (deg, + zero), areas (÷ norm), FWHM (deg) and η for strain ε and Lorentzian coefficient Y."""
        tt, area, g, lor1 = self.geometry(strain)
        return (tt + zero, area) + self.profile(g, self.lorentz(width, lor1, self.lorentz_fixed(strain)))

    def geometry(self, strain: float) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """The width-independent part of `peaks`: centres (deg), areas (÷ norm), instrumental Gaussian FWHM (deg) and
        the Lorentzian FWHM per unit Y (λ_line/λ₁/cosθ)."""
        s = self.pk.sin_theta / (1.0 + strain)
        ok = s < 1.0
        s = s[ok]
        theta = np.arcsin(s)
        tt = np.degrees(2.0 * theta)
        area = self.pk.f2m[ok] * _lp_from_sin(s, self.rad) / self.pk.norm
        t = np.tan(theta)
        if self.instrument is None:
            u, v, w = self.caglioti
            g = np.sqrt(np.maximum(u * t * t + v * t + w, 0.0))
        else:
            g = self.instrument.fwhm_gauss(tt)
        if self.microstrain:
            g = np.hypot(g, np.degrees(4.0 * self.microstrain * t))
        return tt, area, g, self.lam_ratio[ok] / np.cos(theta)

    def lorentz_fixed(self, strain: float) -> FloatArray | None:
        """The instrument's Lorentzian FWHM (deg) at each peak of `geometry(strain)`; None without an instrument."""
        if self.instrument is None or (self.instrument.x == 0.0 and self.instrument.y == 0.0):
            return None
        s = self.pk.sin_theta / (1.0 + strain)
        return self.instrument.fwhm_lorentz(np.degrees(2.0 * np.arcsin(s[s < 1.0])))

    @staticmethod
    def lorentz(width: float, lor1: FloatArray, fixed: FloatArray | None) -> FloatArray:
        """Total Lorentzian FWHM: Y·lor1 plus the fixed instrumental part when there is one."""
        return width * lor1 if fixed is None else width * lor1 + fixed

    def profile(self, gauss: FloatArray, lorentz: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Pseudo-Voigt FWHM and η from the Gaussian and Lorentzian FWHMs (Thompson–Cox–Hastings; η fixed if set)."""
        fwhm, eta = tch_combine(gauss, lorentz)
        fwhm = np.maximum(fwhm, 1e-6)
        if self.eta is not None:
            eta = np.full_like(fwhm, self.eta)
        return fwhm, eta

    def render(self, x: FloatArray, strain: float, width: float, zero: float = 0.0,
               window: float = 6.0) -> FloatArray:
        """Exact unit-scale pattern (÷ norm) on a sorted 2θ grid: peaks re-rendered from scratch (slow path)."""
        tt, area, fwhm, eta = self.peaks(strain, width, zero)
        return self.render_peaks(x, tt, area, [(fwhm, eta)], window, fwhm)[0]

    def render_peaks(self, x: FloatArray, tt: FloatArray, area: FloatArray,
                     profiles: list[tuple[FloatArray, FloatArray]], window: float, resolution: FloatArray,
                     fast_exp: bool = False) -> list[FloatArray]:
        """Render the peaks once per (FWHM, η) set in `profiles`, through the instrument's displacement shift and
        FCJ kernel when it has them (one kernel for every set, sized by `resolution`, so the sets stay
        comparable: the tables difference them)."""
        ins = self.instrument
        if ins is not None and ins.displacement_um != 0.0:
            tt = tt + (ins.shift(tt) - ins.zero)
        if ins is None or ins.symmetric or tt.size == 0:
            return [render_peaks(x, tt, area, fw, eta, window=window, fast_exp=fast_exp) for fw, eta in profiles]
        off, wts = ins.asymmetry(tt)
        keep = wts > 0
        rows = np.nonzero(keep)[0]
        centres, areas = (tt[:, None] + off)[keep], (area[:, None] * wts)[keep]
        return [render_peaks(x, centres, areas, fw[rows], eta[rows], window=window, fast_exp=fast_exp)
                for fw, eta in profiles]


class PhaseTable:
    """One phase tabulated on a uniform sinθ grid at (ε_ref, Y_ref): value and slope for a quadratic in Y."""

    def __init__(self, model: PeakModel, strain_ref: float, width_ref: float, s_lo: float, s_hi: float,
                 window: float) -> None:
        """Render the three width nodes and store [T0, T1, T2, D0, D1, D2] per table point."""
        self.strain_ref = float(strain_ref)
        self.width_ref = float(width_ref)
        self.dy = WIDTH_NODE * self.width_ref
        tt, area, gauss, lor1 = model.geometry(strain_ref)
        lor0 = model.lorentz_fixed(strain_ref)
        profiles = [model.profile(gauss, model.lorentz(width_ref * (1.0 + k * WIDTH_NODE), lor1, lor0))
                    for k in (-1, 0, 1)]
        fwhm = profiles[0][0]
        s_lo = max(s_lo / (1.0 + _TABLE_S_MARGIN), 1e-6)
        s_hi = min(s_hi * (1.0 + _TABLE_S_MARGIN), 1.0)
        inside = (tt > 2.0 * math.degrees(math.asin(s_lo))) & (tt < 2.0 * math.degrees(math.asin(s_hi)))
        f_min = float(fwhm[inside].min()) if inside.any() else 0.1
        cos_hi = math.sqrt(max(1.0 - s_hi * s_hi, 1e-12))
        h_s = max(math.radians(f_min / OVERSAMPLE) * 0.5 * cos_hi, (s_hi - s_lo) / MAX_TABLE_POINTS)
        s_lo -= h_s  # one node below the range: the cubic reads nodes i−1 … i+2
        n = int(math.ceil((s_hi - s_lo) / h_s)) + 3
        grid = s_lo + h_s * np.arange(n)
        xs = np.degrees(2.0 * np.arcsin(np.minimum(grid, 1.0)))
        nodes = model.render_peaks(xs, tt, area, profiles, window, fwhm, fast_exp=True)
        # the polarisation factor at the table node is divided out (G/P is tabulated): the caller multiplies by P at
        # the measured angle, which is the exact intensity bookkeeping of the mapping (module doc) without a
        # second polarisation evaluation at the read position per column
        inv_pol = 1.0 / polarisation_from_sin(np.minimum(grid, 1.0), model.rad)
        t0 = nodes[1] * inv_pol
        t1 = (nodes[2] - nodes[0]) * (inv_pol / (2.0 * self.dy))
        t2 = (nodes[2] - 2.0 * nodes[1] + nodes[0]) * (inv_pol / (self.dy * self.dy))
        base = np.stack((t0, t1, t2), axis=1)
        tab = np.zeros((n, 12))  # row i: [T0, T1, T2] at nodes i−1, i, i+1, i+2 (one gather per read point)
        for j in range(4):
            tab[1:n - 2, 3 * j:3 * j + 3] = base[j:n - 3 + j]
        self.tab = tab
        self.s_lo = s_lo
        self.h_s = h_s
        self.n = n

    def centred(self, width: float) -> bool:
        """True when Y is close to the centre node (no final re-render needed)."""
        return abs(width / self.width_ref - 1.0) <= WIDTH_RECENTRE

    def valid(self, strain: float, width: float) -> bool:
        """True while (ε, Y) is close enough to the reference for the table approximations."""
        return (abs(strain - self.strain_ref) <= STRAIN_WINDOW
                and abs(width / self.width_ref - 1.0) <= WIDTH_WINDOW)

    def column(self, s: FloatArray, pol: FloatArray, dsdz: FloatArray, strain: float, width: float,
               col: FloatArray, derivs: tuple[FloatArray, FloatArray, FloatArray] | None = None) -> None:
        """Unit-scale column at (ε, Y) into `col` and, when `derivs` is given, ∂/∂ε, ∂/∂Y, ∂/∂z into its arrays.

        `s` is sinθ of the (zero-corrected) measured axis, `pol` the polarisation factor there, `dsdz` d(sinθ)/dz.
        The table holds G/P, so the column is r³·P(2θ)·(G/P)(sinθ·r), r = (1+ε)/(1+ε_ref) (module doc); its strain
        derivative follows from the read position sinθ·r and the r³ factor, its zero-shift derivative from dsdz.
        """
        d_eps, d_y, d_z = (col, col, col) if derivs is None else derivs
        _read_column(self.tab, self.s_lo, self.h_s, self.n, s, pol, dsdz, self.strain_ref, strain,
                     width - self.width_ref, col, d_eps, d_y, d_z, derivs is not None)

    def columns(self, s: FloatArray, pol: FloatArray, strains: FloatArray, width: float, out: FloatArray) -> None:
        """Unit-scale columns at several strains and one width into the rows of `out` (a strain scan): the quadratic
        in Y is contracted once for all of them, so each column reads 4 table values per point instead of 12."""
        nodes = np.empty((self.n, 4))
        _contract_width(self.tab, width - self.width_ref, nodes)
        _read_columns(nodes, self.s_lo, self.h_s, self.n, s, pol, self.strain_ref,
                      np.asarray(strains, dtype=np.float64), out)


@numba.njit(cache=True, nogil=True, inline="always")
def _catmull_rom(u: float, hi: float) -> tuple[int, float, float, float, float, float]:
    """Cell index i and fraction f of table position u (clamped to [1, hi]) and the Catmull–Rom weights (Keys'
    cubic convolution, a = −½) of the nodes i−1, i, i+1, i+2."""
    if u < 1.0:
        u = 1.0
    elif u > hi:
        u = hi
    i = int(u)
    f = u - i
    f2 = f * f
    f3 = f2 * f
    return (i, f, -0.5 * f + f2 - 0.5 * f3, 1.0 - 2.5 * f2 + 1.5 * f3, 0.5 * f + 2.0 * f2 - 1.5 * f3,
            -0.5 * f2 + 0.5 * f3)


@numba.njit(cache=True, nogil=True)
def _contract_width(tab: FloatArray, dy: float, nodes: FloatArray) -> None:
    """nodes[i, j] = T0 + dy·T1 + ½dy²·T2 of node j of table row i: the pattern at Y = Y_ref + dy."""
    half_dy2 = 0.5 * dy * dy
    for i in range(nodes.shape[0]):
        for j in range(4):
            nodes[i, j] = tab[i, 3 * j] + dy * tab[i, 3 * j + 1] + half_dy2 * tab[i, 3 * j + 2]


@numba.njit(cache=True, nogil=True)
def _read_columns(nodes: FloatArray, s_lo: float, h_s: float, n: int, s: FloatArray, pol: FloatArray,
                  strain_ref: float, strains: FloatArray, out: FloatArray) -> None:
    """Columns at each strain from width-contracted nodes (`_contract_width`), as `_read_column` reads them."""
    off = s_lo / h_s
    hi = n - 2.000001
    for c in range(strains.size):
        r = (1.0 + strains[c]) / (1.0 + strain_ref)
        scale = r / h_s
        r3 = r * r * r
        for k in range(s.size):
            i, _, w0, w1, w2, w3 = _catmull_rom(s[k] * scale - off, hi)
            out[c, k] = pol[k] * r3 * (w0 * nodes[i, 0] + w1 * nodes[i, 1] + w2 * nodes[i, 2] + w3 * nodes[i, 3])


@numba.njit(cache=True, nogil=True)
def _read_column(tab: FloatArray, s_lo: float, h_s: float, n: int, s: FloatArray, pol: FloatArray,
                 dsdz: FloatArray, strain_ref: float, strain: float, dy: float, out: FloatArray, d_eps: FloatArray,
                 d_y: FloatArray, d_z: FloatArray, derivs: bool) -> None:
    """One pass over the axis: gather the four Catmull–Rom nodes, contract the quadratic in Y, combine (see
    `PhaseTable.column`); a single compiled loop instead of a dozen array temporaries per column."""
    r = (1.0 + strain) / (1.0 + strain_ref)
    scale = r / h_s
    off = s_lo / h_s
    hi = n - 2.000001
    half_dy2 = 0.5 * dy * dy
    r3 = r * r * r
    d_eps_s = 1.0 / ((1.0 + strain_ref) * h_s)
    d_eps_c = 3.0 / (1.0 + strain)
    for k in range(s.size):
        i, f, w0, w1, w2, w3 = _catmull_rom(s[k] * scale - off, hi)
        f2 = f * f
        v0 = tab[i, 0] + dy * tab[i, 1] + half_dy2 * tab[i, 2]
        v1 = tab[i, 3] + dy * tab[i, 4] + half_dy2 * tab[i, 5]
        v2 = tab[i, 6] + dy * tab[i, 7] + half_dy2 * tab[i, 8]
        v3 = tab[i, 9] + dy * tab[i, 10] + half_dy2 * tab[i, 11]
        pr = pol[k] * r3
        col = pr * (w0 * v0 + w1 * v1 + w2 * v2 + w3 * v3)
        out[k] = col
        if derivs:
            g_y = (w0 * (tab[i, 1] + dy * tab[i, 2]) + w1 * (tab[i, 4] + dy * tab[i, 5])
                   + w2 * (tab[i, 7] + dy * tab[i, 8]) + w3 * (tab[i, 10] + dy * tab[i, 11]))
            # d/df of the weights, times the node values
            g_s = ((-0.5 + 2.0 * f - 1.5 * f2) * v0 + (-5.0 * f + 4.5 * f2) * v1
                   + (0.5 + 4.0 * f - 4.5 * f2) * v2 + (-f + 1.5 * f2) * v3)
            pg = pr * g_s
            d_eps[k] = pg * s[k] * d_eps_s + col * d_eps_c
            d_y[k] = pr * g_y
            d_z[k] = pg * dsdz[k] * r / h_s


def warm_up() -> None:
    """Load this module's compiled kernels now (see `hotstage.analysis.profiles.warm_up`), with the argument types of
    `PhaseQuantifier`'s calls."""
    x = np.linspace(0.1, 0.2, 8)
    out = [np.empty(8) for _ in range(6)]
    shifted_axis(x, x, 0.0, 0.5, 0.5, out[0], out[1], out[2])
    tab = np.zeros((16, 12))
    for derivs in (False, True):
        _read_column(tab, 0.05, 0.01, 16, x, x, x, 0.0, 0.0, 0.0, out[3], out[4], out[5], out[5], derivs)
    nodes = np.empty((16, 4))
    _contract_width(tab, 0.0, nodes)
    _read_columns(nodes, 0.05, 0.01, 16, x, x, 0.0, x[:2], np.empty((2, 8)))
