"""Live whole-pattern quantitative phase analysis (QPA) by variable projection, warm-started along a ramp.

Model (DESIGN.md, "Analysis methods"):
    y(2θ) = Σₖ bₖ Tₖ(t) + Σⱼ aⱼ Hⱼ(Q) + Σ_p s_p · pattern_p(2θ − z; ε_p, Y_p)
with Tₖ Chebyshev polynomials of the first kind on t ∈ [−1, 1] over the measured range; Hⱼ Gaussian glass halos in
Q = 4π sinθ/λ (agZIF-62 / ZIF-4 glass F(Q) maxima near 1.09, 2.40, 3.49 Å⁻¹, Gaillac et al., Nature Mater. 16,
1149 (2017), see analysis/data/SOURCES.md; FWHM starts 0.45/0.75/0.9 Å⁻¹ are assumed broad-halo values);
pattern_p the Rietveld-convention pattern of `hotstage.analysis.crystal` (areas w·|F|²·m·LP, no 1/V²) with isotropic
strain ε_p, Lorentzian (Scherrer) width Y_p — FWHM_L = Y_p(λ_line/λ₁)/cosθ, Langford & Wilson, J. Appl. Cryst. 11,
102 (1978) — combined with a fixed instrumental Gaussian (Caglioti U, V, W and an optional fixed microstrain term)
by Thompson–Cox–Hastings; z a zero shift. With an `Instrument` (`hotstage.analysis.instrument`, e.g. from the rig's
GSAS-II .instprm) the Gaussian is its U, V, W, Z, its X, Y add a fixed Lorentzian under Y_p, and z starts at its zero;
its FCJ asymmetry and sample-displacement shift are rendered into the phase tables (`quant.tables.PeakModel`).

Weight fractions: Hill & Howard, J. Appl. Cryst. 20, 467 (1987): W_p = s_p(ZMV)_p / Σᵢ sᵢ(ZMV)ᵢ over the crystalline
phases offered (amorphous halos are reported as an intensity, not a weight fraction).

Algorithm: linear parameters (b, a ≥ 0, s ≥ 0) by bounded least squares on the normal equations (Lawson–Hanson,
`hotstage.analysis.quant.linear`) for fixed nonlinear θ = (ε, Y, z, halo Q/FWHM) — variable projection (Golub & Pereyra, SIAM
J. Numer. Anal. 10, 413 (1973)); θ by Gauss–Newton steps of the Kaufman approximation (Kaufman, BIT 15, 49 (1975)):
one joint linearised solve over [linear columns | s·∂pattern/∂θ], θ-part taken, linear part re-projected, with
step halving when χ² does not fall. Convergence: every shift below `SHIFT_TOLERANCE` × its standard uncertainty
(the usual Rietveld shift/esd test); warm fits test the shift the next iteration would make with the step's own
normal matrix (a chord step, `_chord_final`) instead of running that iteration. Weights 1/max(y, 1) (Poisson)
unless given. Standard uncertainties from the inverse of the joint normal matrix × χ²/(N − P) (Rietveld practice;
Prince, Mathematical Techniques in Crystallography, §6), propagated to W by the gradient of the Hill–Howard formula.

Speed: each phase is rendered once into a sinθ table (`hotstage.analysis.quant.tables`) from which strain, zero shift and
moderate width changes are read by interpolation (a phase keeps its `TABLE_CACHE` most recent tables: widths jump back
and forth at transitions); warm fits start from the previous solution and usually need one Gram matrix (cached over
all model rows: after a step only the refined phases' rows are multiplied again), one Gauss–Newton step and one chord
step that both accepts the step and tests convergence (`_chord_final`). Phases at zero scale follow zero-shift changes
only beyond `_ABSENT_ZERO_TOLERANCE`. The small dense solves and the per-point loops are compiled (numba,
`hotstage.analysis.quant`). Cold fits
first scan each phase's strain over ±`strain_search` (thermal expansion of up to ±1.5 %, e.g. α-CsPbI3 referenced
at 361 °C measured at room temperature: −1.3 % with 4×10⁻⁵ K⁻¹) at a step of half a FWHM in peak shift, then a
coarse width scan, then Gauss–Newton.

Weak phases along a ramp (changed after γ/β misassignments at the γ→β transition, ≈ 178 °C): a phase too weak to
refine used to keep whatever strain/width it last had — often values a transient refinement or a re-scan had run
onto noise (widths on the 10 µm bound, strains +1.6 %) — so when it grew its column matched nothing, it never
became significant, and its look-alike took its intensity (β 6–7 wt % low, γ high). Now (i) before each warm fit
a phase whose width was not refined returns to its last well-determined (ε, Y) (refined at ≥ GOOD_MIN_FRACTION),
else to the starting strain with the width of the strongest refined phase (`_revert_held`); (ii) when a phase
becomes significant or χ² jumps (against the lowest of the last RESEED_WINDOW patterns), the newcomers and all
held phases are re-selected forward as in a cold fit, refined phases kept (`_warm_rescans`); (iii) a phase whose
width ends on a bound must pass a likelihood-ratio test against the refit without it (`_admit`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hotstage.analysis.crystal import Crystal
from hotstage.analysis.profiles import DEFAULT_CAGLIOTI, SCHERRER_K, polarisation_coefficients
from hotstage.analysis.quant.halos import halo_columns
from hotstage.analysis.quant.linear import bounded_lsq, chi2_from_gram, covariance, gather_weighted, replacement_chi2
from hotstage.analysis.quant.tables import (STRAIN_WINDOW, WIDTH_WINDOW, PeakModel, PhaseTable, phase_peaks,
                                   shifted_axis)
from hotstage.analysis.instrument import Instrument
from hotstage.analysis.radiation import Radiation

__all__ = ["PhaseQuantifier", "QuantResult", "DEFAULT_HALO_Q", "DEFAULT_HALO_FWHM_Q", "warm_up"]

FloatArray = NDArray[np.float64]

DEFAULT_HALO_Q: tuple[float, ...] = (1.09, 2.40, 3.49)
"""Glass halo centres, Å⁻¹ (ZIF glass F(Q) maxima, Gaillac et al. 2017; SOURCES.md)."""
DEFAULT_HALO_FWHM_Q: tuple[float, ...] = (0.45, 0.75, 0.9)
"""Starting halo FWHMs, Å⁻¹ (assumed: broad amorphous maxima)."""
TABLE_WINDOW: float = 20.0
"""Half-width, in FWHM, over which the phase tables render each peak (`render_peaks`; beyond it the Lorentzian tail's
area is a flat pedestal). 20, not the renderer's default 6: at 6 the pedestal holds 5 % of a Lorentzian's area and
its steps at ±6 FWHM (tens of counts beside a strong, broad line) are misfit a fit pays for with wrong fractions —
found when the simulator got its own profile code (exact Voigt tails, `hotstage.simulated.diffractometer`): pure
α at 350 °C came out 5.5 wt % low (β, δ soaking up the steps), within 0.7 wt % at 20 (0.3 % of the area left as
pedestal, steps 1/1601 of the height). Cold fits cost about the same (renders are a small part)."""
SHIFT_TOLERANCE: float = 0.2
"""Cold fits: converged when every nonlinear shift is below this fraction of its standard uncertainty."""
WARM_SHIFT_TOLERANCE: float = 0.5
"""Warm fits: the same test, looser — a remaining shift of half an s.u. costs less than its own noise and is
picked up by the next pattern's fit (errors do not accumulate: each fit starts from the previous solution)."""
_REFINABLE = frozenset({"strain", "width", "zero", "halos"})
RESEED_SIGMAS: float = 5.0
"""Warm fits re-scan held phases' strains when χ²/(N−P) rose by more than this many of its standard deviations
(√(2/(N−P)), the χ² distribution) above the lowest of the last `RESEED_WINDOW` patterns."""
_HELD_ZERO_TOLERANCE = 0.002
"""deg: columns of phases held (not refined) follow zero-shift changes only beyond this (≪ any FWHM)."""
_ABSENT_ZERO_TOLERANCE = 0.02
"""deg: the same for held phases at zero scale (on their NNLS bound: no part of the model). Their column only
decides whether NNLS releases them, through its overlap with the residual; a lag of 0.02° (a fifth of the
narrowest FWHM, ~0.1°) changes that overlap by a few per cent, and the column follows the zero once released."""
ONE_STEP_SU: float = 1.0
"""Warm fits: a full (untruncated) Gauss–Newton step whose every shift is below this many s.u. is taken as the
converged solution, with the joint solution's linear part, without a trial evaluation: Gauss–Newton converges
quadratically near the minimum, so the shift after it is second order (≪ the tolerance); the s.u. are those of the
step's normal matrix, as Rietveld programs report the last cycle's."""
ANTICIPATE: float = 0.6
"""Warm fits re-render a phase's table with its reference strain/width this fraction of the validity window ahead of
the current value in the direction the value is drifting (thermal expansion, coarsening): the table then serves
(1 + ANTICIPATE) windows of drift instead of one. Accuracy is unchanged (the same validity test applies)."""
GOOD_MIN_FRACTION: float = 0.05
"""A phase's refined (ε, Y) are remembered as its values to hold it at (see `_revert_held`) only when its weight
fraction is at least this: a weak phase's profile refines onto noise or a neighbour's misfit."""
RESEED_WINDOW: int = 10
"""The χ² jump test compares with the lowest χ²/(N−P) of this many previous patterns (a phase that grows over
several patterns raises χ² step by step, each step below the threshold)."""
TABLE_CACHE: int = 3
"""Tables kept per phase (the current one among them), ≤ 0.4 MB each."""
RESCAN_MIN_FRACTION: float = 0.01
"""Warm fits re-scan the strain and width of a phase that became refinable (significant) since the previous pattern
when its weight fraction is at least this (a phase appearing at a transition carries a stale ε/Y otherwise)."""


def _radiation_of(wavelength: float | Radiation | None, instrument: Instrument | None,
                  caglioti: Sequence[float]) -> Radiation:
    """The quantifier's radiation: the instrument's when there is one (a `wavelength` given as well must agree:
    the same primary wavelength to 1 ppm, or the same Radiation), else `wavelength` (`Radiation.coerce`)."""
    if instrument is None:
        if wavelength is None:
            raise ValueError("give a wavelength (or Radiation) or an instrument")
        return Radiation.coerce(wavelength)
    if tuple(float(c) for c in caglioti) != tuple(DEFAULT_CAGLIOTI):
        raise ValueError("give the instrumental widths either as caglioti or as an instrument, not both")
    rad = instrument.radiation
    if wavelength is not None:
        same = (wavelength == rad if isinstance(wavelength, Radiation)
                else math.isclose(float(wavelength), rad.wavelength, rel_tol=1e-6))
        if not same:
            raise ValueError(f"wavelength {wavelength!r} differs from the instrument's radiation {rad!r}")
    return rad


def warm_up() -> None:
    """Load every compiled kernel the quantifier uses (numba cache; compiled on the first use after an install:
    ~10 s once, then ~0.5 s per new process): a live analysis does this before its first pattern, not on it."""
    from hotstage.analysis import profiles
    from hotstage.analysis.quant import halos, linear, tables

    profiles.warm_up()
    tables.warm_up()
    linear.warm_up()
    halos.warm_up()


@dataclass(frozen=True)
class QuantResult:
    """Outcome of one whole-pattern fit (per crystalline phase offered, keyed by phase name)."""

    weight_fractions: dict[str, float]
    weight_fraction_su: dict[str, float]
    scale_factors: dict[str, float]  # Rietveld scales s_p in the Crystal.peaks convention
    scale_factor_su: dict[str, float]
    strain: dict[str, float]
    strain_su: dict[str, float]
    width: dict[str, float]  # Lorentzian coefficient Y_p, deg: FWHM_L = Y_p / cosθ
    width_su: dict[str, float]
    size_nm: dict[str, float]  # apparent Scherrer size K·λ/Y_p
    refined: dict[str, bool]  # whether the phase's ε/Y were refined (False: too weak, held)
    zero_shift: float
    zero_shift_su: float
    halo_intensity: float  # integrated halo counts × deg over the measured range
    halo_fraction: float  # halo area / (halo + crystalline peak area) over the range
    halo_amplitudes: tuple[float, ...]
    halo_q: tuple[float, ...]
    halo_fwhm_q: tuple[float, ...]
    rwp: float
    rexp: float
    gof: float
    chi2: float
    n_points: int
    n_parameters: int
    curve: FloatArray = field(repr=False)
    background: FloatArray = field(repr=False)
    halo: FloatArray = field(repr=False)
    n_iterations: int = 0
    n_evaluations: int = 0  # model evaluations at new nonlinear parameters (grid candidates included)
    converged: bool = False
    cold: bool = False
    reseeded: bool = False  # a warm fit whose misfit jumped and that re-ran the strain scan


@dataclass
class _Linear:
    """A solved linear sub-problem at fixed nonlinear parameters."""

    g: FloatArray
    h: FloatArray
    c: FloatArray
    passive: NDArray[np.bool_]
    chi2: float


@dataclass
class _Step:
    """A solved joint (Kaufman) linearised problem: solution, normal matrix, passive set, θ-shifts and the basis
    change from Gram rows to joint columns."""

    x: FloatArray
    g: FloatArray
    passive: NDArray[np.bool_]
    shift: FloatArray
    basis: FloatArray


class PhaseQuantifier:
    """Sequential whole-pattern QPA on a fixed 2θ axis: `fit(counts)` pattern after pattern (see module doc)."""

    def __init__(self, phases: Sequence[Crystal], two_theta: ArrayLike, wavelength: float | Radiation | None = None, *,
                 background_order: int = 8, halos: bool = True,
                 halo_q: Sequence[float] = DEFAULT_HALO_Q, halo_fwhm_q: Sequence[float] = DEFAULT_HALO_FWHM_Q,
                 halo_q_bound: float = 0.1, halo_fwhm_bounds: tuple[float, float] = (0.6, 1.5),
                 refine: Sequence[str] = ("strain", "width", "zero"),
                 caglioti: tuple[float, float, float] = DEFAULT_CAGLIOTI, microstrain: float = 0.0,
                 eta: float | None = None, size_nm: float = 50.0,
                 strain_start: float | Mapping[str, float] = 0.0, strain_range: float = 0.03,
                 strain_search: float = 0.015, size_bounds_nm: tuple[float, float] = (2.0, 10_000.0),
                 zero_range: float = 0.3, min_relative_intensity: float = 1e-3, window: float = TABLE_WINDOW,
                 min_significance: float = 5.0, min_fraction_strain: float = 0.0,
                 min_fraction_width: float = 0.01, max_iterations: int = 40, warm_iterations: int = 20,
                 instrument: Instrument | None = None) -> None:
        """Set up phases, axis and model; `caglioti`/`microstrain`/`eta` describe the (calibrated) instrument.

        `instrument` (`hotstage.analysis.instrument.Instrument`, e.g. read from a GSAS-II .instprm): its radiation
        is the radiation (`wavelength` may then be None; given and different: ValueError), its U, V, W, Z the fixed
        Gaussian (instead of `caglioti`, which must stay at its default), its X, Y a fixed Lorentzian added to each
        phase's refined Lorentzian, its zero the starting zero shift (refined within ±`zero_range` of it). Its FCJ
        asymmetry and sample-displacement shift are rendered into the tables (`quant.tables.PeakModel`).

        `refine` ⊆ {"strain", "width", "zero", "halos"}: cold fits always refine halo Q/FWHM when halos are on;
        warm fits only when "halos" is listed. `size_nm` is the starting crystallite size (sets Y₀). A phase's
        strain is refined only when its scale is ≥ `min_significance` s.u. and its weight fraction ≥
        `min_fraction_strain`, its width only above `min_fraction_width` (minor phases keep their profile, the
        usual Rietveld practice: their widths are poorly determined and wander).
        """
        unknown = set(refine) - _REFINABLE
        if unknown:
            raise ValueError(f"unknown refine options {sorted(unknown)}; choose from {sorted(_REFINABLE)}")
        self.phases = list(phases)
        if not self.phases:
            raise ValueError("at least one crystalline phase is needed")
        self.names = [c.name for c in self.phases]
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"phase names must be unique, got {self.names}")
        x = np.asarray(two_theta, dtype=np.float64)
        if x.ndim != 1 or x.size < 10 or np.any(np.diff(x) <= 0):
            raise ValueError("two_theta must be a strictly increasing 1-D array of at least 10 points")
        self.two_theta = x
        self.instrument = instrument
        self.radiation = _radiation_of(wavelength, instrument, caglioti)
        self._zero0 = 0.0 if instrument is None else float(instrument.zero)
        self.refine = frozenset(refine)
        self.window = float(window)
        self.min_significance = float(min_significance)
        self.min_fraction_strain = float(min_fraction_strain)
        self.min_fraction_width = float(min_fraction_width)
        self.max_iterations = int(max_iterations)
        self.warm_iterations = int(warm_iterations)
        self.strain_range = float(strain_range)
        self.strain_search = float(strain_search)
        self.zero_range = float(zero_range)
        lam = self.radiation.wavelength
        self._y_from_size = lambda d_nm: math.degrees(SCHERRER_K * lam / (10.0 * d_nm))
        self.width_bounds = (self._y_from_size(size_bounds_nm[1]), self._y_from_size(size_bounds_nm[0]))
        self.width_start = self._y_from_size(size_nm)
        np_ = len(self.phases)
        if isinstance(strain_start, Mapping):
            self.strain_start = np.array([float(strain_start.get(n, 0.0)) for n in self.names])
        else:
            self.strain_start = np.full(np_, float(strain_start))
        # peak lists and models
        margin = self.zero_range + abs(self._zero0) + 1.0
        tt_max = min(float(x[-1]) * (1.0 + strain_search + 0.01) + margin + 2.0, 179.0)
        self._models = [PeakModel(phase_peaks(c, self.radiation, tt_max, min_relative_intensity), self.radiation,
                                  tuple(float(v) for v in caglioti), float(microstrain), eta, instrument)
                        for c in self.phases]
        self._norms = np.array([m.pk.norm for m in self._models])
        self._zmv_over_norm = np.array([c.zmv for c in self.phases]) / self._norms
        self._s_lo = math.sin(math.radians(max(float(x[0]) - margin, 0.05)) / 2.0)
        self._s_hi = math.sin(math.radians(min(float(x[-1]) + margin, 179.0)) / 2.0)
        # fixed background rows (Chebyshev on the measured range)
        t = 2.0 * (x - x[0]) / (x[-1] - x[0]) - 1.0
        self.background_order = int(background_order)
        self._bg = np.polynomial.chebyshev.chebvander(t, self.background_order).T.copy()
        self.halos = bool(halos)
        self._halo_q0 = np.array(halo_q, dtype=float) if halos else np.zeros(0)
        self._halo_w0 = np.array(halo_fwhm_q, dtype=float) if halos else np.zeros(0)
        self._halo_q_bound = float(halo_q_bound)
        self._halo_w_bounds = (float(halo_fwhm_bounds[0]), float(halo_fwhm_bounds[1]))
        nb, nh = self._bg.shape[0], self._halo_q0.size
        self._nb, self._nh, self._np = nb, nh, np_
        self._nl = nb + nh + np_
        self._nonneg = np.zeros(self._nl, dtype=bool)
        self._nonneg[nb:] = True
        self._dx = np.gradient(x)
        self._sin0 = np.sin(np.radians(x) * 0.5)
        self._cos0 = np.cos(np.radians(x) * 0.5)
        self._pol_ab = polarisation_coefficients(self.radiation)
        self._s, self._dsdz, self._pol = np.empty_like(x), np.empty_like(x), np.empty_like(x)
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget the previous solution: the next `fit` is cold."""
        n, np_ = self.two_theta.size, self._np
        self._eps = self.strain_start.copy()
        self._wid = np.full(np_, self.width_start)
        self._zero = self._zero0
        self._hq = self._halo_q0.copy()
        self._hw = self._halo_w0.copy()
        self._tables: list[PhaseTable | None] = [None] * np_
        self._recent_tables: list[list[PhaseTable]] = [[] for _ in range(np_)]  # newest last, TABLE_CACHE each
        nl, nh = self._nl, self._nh
        # every model row in one array: linear columns, then ∂/∂ε, ∂/∂Y, ∂/∂z per phase, then ∂/∂q, ∂/∂w per halo
        self._M = np.zeros((nl + 3 * np_ + 2 * nh, n))
        self._A = self._M[:nl]
        self._A[: self._nb] = self._bg
        self._dphase = self._M[nl:nl + 3 * np_].reshape(np_, 3, n)
        self._dhalo = self._M[nl + 3 * np_:].reshape(nh, 2, n)
        # Gram cache for the current pattern's weights, over every row of `_M`: Gram entries `_G` and AᵀWy `_Gy`;
        # `_gok` marks the rows whose entries against each other are current (rows rewritten since leave the set and
        # are re-multiplied alone)
        self._G = np.zeros((self._M.shape[0], self._M.shape[0]))
        self._wbuf = np.empty_like(self._M)  # weighted rows for the Gram products
        self._Gy = np.zeros(self._M.shape[0])
        self._gok = np.zeros(self._M.shape[0], dtype=bool)
        self._lin_rows = np.arange(nl, dtype=np.intp)
        self._rows_of: dict[tuple, tuple[NDArray[np.intp], list[int]]] = {}  # Gram rows per refined parameter set
        self._phase_row_sets = [np.array([self._nb + self._nh + p, nl + 3 * p, nl + 3 * p + 1, nl + 3 * p + 2],
                                         dtype=np.intp) for p in range(np_)]
        self._halo_row_set = np.r_[np.arange(self._nb, self._nb + nh), np.arange(nl + 3 * np_, nl + 3 * np_ + 2 * nh)]
        self._basis_of: dict[tuple, tuple] = {}  # `_joint`'s change-of-basis recipe per refined parameter set
        self._col_version = 0  # counts column rewrites (`_touch`): the cached model curves are of one version
        self._parts_c: FloatArray | None = None
        self._parts_version = -1
        self._w, self._y = np.ones(n), np.zeros(n)
        self._sw = np.ones(n)
        self._ysw = np.zeros(n)
        self._anticipate = False
        self._prev_eps = self._eps.copy()  # nonlinear parameters at the start of the previous fit (drift)
        self._prev_wid = self._wid.copy()
        self._drift_eps = np.zeros(np_)
        self._drift_wid = np.zeros(np_)
        self._prev_refined: set[int] = set()
        # (ε, Y) of each phase at the end of the last fit that refined its width (NaN: never): what a held phase
        # reverts to (see `_revert_held`)
        self._good = np.full((np_, 2), np.nan)
        self._width_refined: set[int] = set()
        self._dropped: set[int] = set()
        self._last_c = np.zeros(self._nl)
        self._params: list[tuple[str, int]] = []
        self._cov: FloatArray | None = None
        self._col_key: list[tuple | None] = [None] * np_
        self._active = np.ones(np_, dtype=bool)  # inactive phases have a zero column (cold forward selection)
        self._held: set[int] = set(range(np_))  # phases whose ε/Y were not refined in the last iteration
        self._halo_key: tuple | None = None
        self._halo_derivs = True  # whether halo derivative rows are kept current (set per refinement)
        self._s_key: float | None = None
        self._passive: NDArray[np.bool_] | None = None
        self._last_gof2: float | None = None
        self._recent_gof2: list[float] = []
        self._n_eval = 0

    @property
    def is_warm(self) -> bool:
        """True when a previous solution exists (the next `fit` may warm-start)."""
        return self._passive is not None

    # ------------------------------------------------------------------ model columns
    def _axis_sin(self) -> tuple[FloatArray, FloatArray]:
        """sinθ and d(sinθ)/dz on the zero-corrected axis (cached per zero shift)."""
        if self._s_key != self._zero:
            shifted_axis(self._sin0, self._cos0, self._zero, *self._pol_ab, self._s, self._dsdz, self._pol)
            self._s_key = self._zero
        return self._s, self._dsdz

    def _zero_tolerance(self, p: int) -> float:
        """Zero-shift change a held phase's column may lag behind (larger when the phase is at zero scale)."""
        passive = self._passive
        absent = passive is not None and not passive[self._nb + self._nh + p]
        return _ABSENT_ZERO_TOLERANCE if absent else _HELD_ZERO_TOLERANCE

    def _table(self, p: int) -> PhaseTable:
        """The phase's table, re-rendered at the current (ε, Y) when they left its validity window (unless one of
        the phase's `TABLE_CACHE` most recent tables is valid there: widths jump back and forth at transitions)."""
        tab = self._tables[p]
        eps, wid = self._eps[p], self._wid[p]
        if tab is None or not tab.valid(eps, wid):
            tab = next((t for t in reversed(self._recent_tables[p]) if t.valid(eps, wid)), None)
            self._tables[p] = tab
        if tab is None:
            eps_ref, wid_ref = eps, wid
            if self._anticipate:  # warm: place the reference ahead of a steady drift so the table serves longer
                d_eps, d_wid = self._drift_eps[p], self._drift_wid[p]
                if 0.0 < abs(d_eps) <= 0.5 * STRAIN_WINDOW:
                    eps_ref = eps + math.copysign(ANTICIPATE * STRAIN_WINDOW, d_eps)
                if 0.0 < abs(d_wid) <= 0.5 * WIDTH_WINDOW:
                    wid_ref = wid / (1.0 - math.copysign(ANTICIPATE * WIDTH_WINDOW, d_wid))
            tab = PhaseTable(self._models[p], eps_ref, wid_ref, self._s_lo, self._s_hi, self.window)
            self._tables[p] = tab
            self._recent_tables[p] = (self._recent_tables[p] + [tab])[-TABLE_CACHE:]
        return tab

    def _phase_column(self, p: int, strain: float, width: float, col: FloatArray,
                      derivs: tuple[FloatArray, FloatArray, FloatArray] | None = None) -> None:
        """Unit-scale column of phase p at (ε, Y, current z) into `col` and, on request, ∂/∂ε, ∂/∂Y, ∂/∂z into
        `derivs` (`PhaseTable.column`)."""
        s, dsdz = self._axis_sin()
        self._tables[p].column(s, self._pol, dsdz, strain, width, col, derivs)

    def _update_columns(self, derivs: bool = True) -> None:
        """Bring the design rows (phases, halos) and their derivatives up to the current nonlinear parameters."""
        self._axis_sin()
        nb, nh = self._nb, self._nh
        changed = False
        for p in range(self._np):
            if not self._active[p]:
                if self._col_key[p] != "off":
                    self._A[nb + nh + p] = 0.0
                    self._dphase[p] = 0.0
                    self._col_key[p] = "off"
                    self._touch(self._phase_rows(p))
                continue
            key = (self._eps[p], self._wid[p], self._zero)
            old = self._col_key[p]
            derivs_p = derivs and p not in self._held
            if isinstance(old, tuple) and old[:2] == key[:2] and (old[3] or not derivs_p) and (
                    old[2] == key[2] or (p in self._held and abs(old[2] - key[2]) < self._zero_tolerance(p))):
                continue
            self._table(p)
            d = self._dphase[p]
            self._phase_column(p, self._eps[p], self._wid[p], self._A[nb + nh + p],
                               (d[0], d[1], d[2]) if derivs_p else None)
            self._touch(self._phase_rows(p))
            self._col_key[p] = key + (derivs_p,)
            changed = True
        if nh:
            # derivative rows only when halo Q/FWHM may be refined (cold fits; warm with "halos" in `refine`)
            derivs_h = derivs and self._halo_derivs
            key = (tuple(self._hq), tuple(self._hw), self._zero, derivs_h)
            old = self._halo_key
            if (old is None or old[:2] != key[:2] or abs(old[2] - key[2]) >= _HELD_ZERO_TOLERANCE
                    or (derivs_h and not old[3])):
                halo_columns(self._s, 4.0 * math.pi / self.radiation.wavelength, self._hq, self._hw,
                             self._A[nb:nb + nh], self._dhalo, derivs_h)
                self._touch(self._halo_row_set)
                self._halo_key = key
                changed = True
        self._n_eval += changed

    # ------------------------------------------------------------------ linear algebra
    def _deriv_rows(self, params: list[tuple[str, int]]) -> list[int]:
        """Rows of `_M` holding the derivatives the refined parameters need (zero: one per refined phase)."""
        nl, np_ = self._nl, self._np
        rows: list[int] = []
        zero_phases = sorted({i for kind, i in params if kind in ("strain", "width")})
        for kind, i in params:
            if kind == "strain":
                rows.append(nl + 3 * i)
            elif kind == "width":
                rows.append(nl + 3 * i + 1)
            elif kind == "zero":
                rows += [nl + 3 * p + 2 for p in zero_phases]
            elif kind == "hq":
                rows.append(nl + 3 * np_ + 2 * i)
            else:
                rows.append(nl + 3 * np_ + 2 * i + 1)
        return rows

    def _phase_rows(self, p: int) -> NDArray[np.intp]:
        """Rows of `_M` holding phase p's column and its three derivatives."""
        return self._phase_row_sets[p]

    def _touch(self, rows: Sequence[int]) -> None:
        """Mark rows of `_M` as rewritten: their weighted copies and Gram entries are recomputed when next needed."""
        self._gok[rows] = False
        self._col_version += 1

    def _set_pattern(self, y: FloatArray, w: FloatArray) -> None:
        """New counts and weights: every cached weighted row and Gram entry is stale."""
        self._w, self._y = w, y
        self._parts_c = None
        self._sw = np.sqrt(w)
        self._ysw = y * self._sw
        self._gok[:] = False

    def _gram(self, params: list[tuple[str, int]]) -> tuple[FloatArray, FloatArray, list[int]]:
        """Weighted Gram matrix and AᵀWy of the linear columns plus the derivative rows the parameters need.

        Cached for the current pattern: when rows requested again were rewritten since (the refined phases' columns
        and derivatives, after a Gauss–Newton step), only those are re-weighted and multiplied against the requested
        rows — the background, halo and held-phase entries are computed once per pattern (float64 BLAS).
        """
        key = tuple(params)
        if key not in self._rows_of:
            dr = self._deriv_rows(params)
            rows = np.concatenate((self._lin_rows, np.asarray(dr, dtype=np.intp))) if dr else self._lin_rows
            self._rows_of[key] = (rows, rows.tolist())
        rows, row_list = self._rows_of[key]
        ok = self._gok
        bad = rows[~ok[rows]]
        lin_only = rows.size == self._nl  # rows 0 … nl−1: contiguous, served by views instead of gathered copies
        if bad.size == rows.size:  # nothing current (a new pattern): one symmetric product
            wb = gather_weighted(self._M, rows, self._sw, self._wbuf)
            g, gy = wb @ wb.T, wb @ self._ysw
            self._G[np.ix_(rows, rows)] = g
            self._Gy[rows] = gy
            ok[:] = False
            ok[rows] = True
            return g, gy, row_list
        elif bad.size:  # the rewritten rows against the requested ones
            wb = gather_weighted(self._M, bad, self._w, self._wbuf)
            # against a contiguous block of `_M` (no gathered copy), then the requested columns
            blk = wb @ self._M[:self._nl].T if lin_only else (wb @ self._M[:int(rows.max()) + 1].T)[:, rows]
            self._G[bad[:, None], rows] = blk
            self._G[rows[:, None], bad] = blk.T
            self._Gy[bad] = wb @ self._y
        # the rows requested are now mutually current; others may hold entries stale against the rewritten ones
        ok[:] = False
        ok[rows] = True
        if lin_only:
            nl = self._nl
            return self._G[:nl, :nl].copy(), self._Gy[:nl].copy(), row_list
        return self._G[np.ix_(rows, rows)], self._Gy[rows], row_list

    def _linear(self, g: FloatArray, h: FloatArray, yy: float) -> _Linear:
        """Bounded solution of the linear block (the variable-projection inner problem) at the current θ."""
        nl = self._nl
        gl, hl = g[:nl, :nl], h[:nl]
        c, passive = bounded_lsq(gl, hl, self._nonneg, self._passive)
        return _Linear(gl, hl, c, passive, chi2_from_gram(yy, gl, hl, c))

    def _linear_at(self, y: FloatArray, c: FloatArray, passive: NDArray[np.bool_]) -> _Linear:
        """The linear solution `c` taken as is at the current columns (χ² from the residual; no Gram matrix)."""
        return _Linear(np.zeros((0, 0)), np.zeros(0), c, passive, self._curve_parts(c)[4])

    def _curve_parts(self, c: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, float]:
        """Background, halo, crystalline and total model curves of linear solution `c` at the current columns and
        their χ², computed once per solution, set of columns and pattern (`_linear_at` and `_result` share them)."""
        if self._parts_c is not c or self._parts_version != self._col_version:
            nb, off, nl = self._nb, self._nb + self._nh, self._nl
            background = c[:nb] @ self._A[:nb]
            halo = c[nb:off] @ self._A[nb:off] if off > nb else np.zeros_like(background)
            phases = c[off:nl] @ self._A[off:nl]
            curve = background + halo
            curve += phases
            r = self._y - curve
            r *= r
            self._parts = (background, halo, phases, curve, float(self._w @ r))
            self._parts_c, self._parts_version = c, self._col_version
        return self._parts

    def _solve_linear(self, y: FloatArray, w: FloatArray, yy: float) -> _Linear:
        """Gram matrix of the linear columns only and its bounded solution (used by the scans)."""
        return self._linear(*self._gram([])[:2], yy)

    def _nonlinear_set(self, lin: _Linear, dof: int, with_halos: bool) -> list[tuple[str, int]]:
        """Nonlinear parameters to refine now: those of phases/halos significantly present (others held)."""
        cov = covariance(lin.g, lin.passive, lin.chi2 / max(dof, 1))
        su = np.sqrt(np.maximum(np.diag(cov), 0.0))
        out: list[tuple[str, int]] = []
        off = self._nb + self._nh
        any_phase = False
        cs = lin.c[off:self._nl]
        total = float(self._zmv_over_norm @ cs)
        wf = self._zmv_over_norm * cs / total if total > 0 else np.zeros_like(cs)
        for p in range(self._np):
            c = lin.c[off + p]
            if c > 0.0 and c >= self.min_significance * su[off + p] and wf[p] >= self.min_fraction_strain:
                any_phase = True
                if "strain" in self.refine:
                    out.append(("strain", p))
                if "width" in self.refine and wf[p] >= self.min_fraction_width:
                    out.append(("width", p))
        self._held = set(range(self._np)) - {i for kind, i in out if kind in ("strain", "width")}
        if any_phase and "zero" in self.refine:
            out.append(("zero", 0))
        if with_halos:
            for j in range(self._nh):
                a = lin.c[self._nb + j]
                if a > 0.0 and a >= self.min_significance * su[self._nb + j]:
                    out += [("hq", j), ("hw", j)]
        return out

    def _joint(self, g: FloatArray, h: FloatArray, rows: list[int], lin: _Linear, params: list[tuple[str, int]]
               ) -> _Step:
        """Joint linearised normal equations over [A; s·∂model/∂θ] (Kaufman), from the Gram by a change of basis."""
        nl = self._nl
        key = (tuple(rows), tuple(params))  # rows are the Gram's: a superset when pinned parameters are left out
        if key not in self._basis_of:
            self._basis_of[key] = self._basis_recipe(rows, params)
        template, tr, tc, src, nonneg, warm = self._basis_of[key]
        t = template.copy()
        t[tr, tc] = lin.c[src]
        gj = t.T @ g @ t
        hj = t.T @ h
        warm = warm.copy()
        warm[:nl] = lin.passive
        x, passive = bounded_lsq(gj, hj, nonneg, warm)
        return _Step(x, gj, passive, x[nl:], t)

    def _basis_recipe(self, rows: list[int], params: list[tuple[str, int]]) -> tuple:
        """Where the scales enter the change of basis of `_joint` for this parameter set: the identity block over
        the linear columns, (row, column, scale index) of each derivative entry, and the joint non-negativity."""
        nl, np_ = self._nl, self._np
        off = self._nb + self._nh
        pos = {r: k for k, r in enumerate(rows)}
        zero_phases = sorted({i for kind, i in params if kind in ("strain", "width")})
        entries: list[tuple[int, int, int]] = []
        for k, (kind, i) in enumerate(params):
            col = nl + k
            if kind == "strain":
                entries.append((pos[nl + 3 * i], col, off + i))
            elif kind == "width":
                entries.append((pos[nl + 3 * i + 1], col, off + i))
            elif kind == "zero":
                entries += [(pos[nl + 3 * p + 2], col, off + p) for p in zero_phases]
            elif kind == "hq":
                entries.append((pos[nl + 3 * np_ + 2 * i], col, self._nb + i))
            else:
                entries.append((pos[nl + 3 * np_ + 2 * i + 1], col, self._nb + i))
        n = nl + len(params)
        template = np.zeros((len(rows), n))
        template[np.arange(nl), np.arange(nl)] = 1.0
        tr, tc, src = (np.array(v, dtype=np.intp) for v in zip(*entries)) if entries else (np.zeros(0, np.intp),) * 3
        nonneg = np.zeros(n, dtype=bool)
        nonneg[:nl] = self._nonneg
        return template, tr, tc, src, nonneg, np.ones(n, dtype=bool)

    # ------------------------------------------------------------------ nonlinear parameters
    def _get(self) -> tuple:
        """Snapshot of the nonlinear parameters."""
        return (self._eps.copy(), self._wid.copy(), self._zero, self._hq.copy(), self._hw.copy())

    def _set(self, snap: tuple) -> None:
        """Restore a snapshot of the nonlinear parameters."""
        self._eps, self._wid, self._zero, self._hq, self._hw = (snap[0].copy(), snap[1].copy(), snap[2],
                                                                snap[3].copy(), snap[4].copy())

    def _bounds(self, kind: str, i: int) -> tuple[float, float]:
        """Lower and upper bound of a nonlinear parameter."""
        if kind == "strain":
            return -self.strain_range, self.strain_range
        if kind == "width":
            return self.width_bounds
        if kind == "zero":
            return self._zero0 - self.zero_range, self._zero0 + self.zero_range
        if kind == "hq":
            q0 = float(self._halo_q0[i])
            return q0 - self._halo_q_bound, q0 + self._halo_q_bound
        w0 = float(self._halo_w0[i])
        return w0 * self._halo_w_bounds[0], w0 * self._halo_w_bounds[1]

    def _value(self, kind: str, i: int) -> float:
        """Current value of a nonlinear parameter."""
        if kind == "strain":
            return float(self._eps[i])
        if kind == "width":
            return float(self._wid[i])
        if kind == "zero":
            return self._zero
        return float(self._hq[i] if kind == "hq" else self._hw[i])

    def _apply(self, params: list[tuple[str, int]], shift: FloatArray, base: tuple) -> None:
        """Set θ = base + shift, clipped to the bounds."""
        self._set(base)
        for (kind, i), d in zip(params, shift.tolist()):
            lo, hi = self._bounds(kind, i)
            v = min(max(self._value(kind, i) + d, lo), hi)
            if kind == "strain":
                self._eps[i] = v
            elif kind == "width":
                self._wid[i] = v
            elif kind == "zero":
                self._zero = v
            elif kind == "hq":
                self._hq[i] = v
            else:
                self._hw[i] = v

    def _pinned(self, params: list[tuple[str, int]], shift: FloatArray) -> list[tuple[str, int]]:
        """Parameters sitting on a bound whose Gauss–Newton shift points outside it."""
        out = []
        for (kind, i), d in zip(params, shift.tolist()):
            lo, hi = self._bounds(kind, i)
            v = self._value(kind, i)
            tol = 1e-9 * max(abs(hi - lo), 1e-12)
            if (d > 0 and v >= hi - tol) or (d < 0 and v <= lo + tol):
                out.append((kind, i))
        return out

    def _trust(self, params: list[tuple[str, int]], shift: FloatArray) -> FloatArray:
        """Scale the Gauss–Newton step so no parameter moves further than a safe amount in one iteration (strain
        2×10⁻³, width half its value, zero shift and halo centre 0.05, halo width a quarter of its value)."""
        ratio = 1.0
        for (kind, i), d in zip(params, shift.tolist()):
            lim = (2e-3 if kind == "strain" else 0.5 * self._wid[i] if kind == "width"
                   else 0.25 * self._hw[i] if kind == "hw" else 0.05)
            if abs(d) > lim:
                ratio = min(ratio, lim / abs(d))
        return shift * ratio

    # ------------------------------------------------------------------ the refinement loop
    def _refine(self, y: FloatArray, w: FloatArray, yy: float, max_iter: int, with_halos: bool,
                recentre: bool = True, tolerance: float = SHIFT_TOLERANCE, one_step: bool = False
                ) -> tuple[_Linear, list, FloatArray | None, NDArray | None, int, bool]:
        """Gauss–Newton/variable-projection iterations from the current θ; returns the final state.

        One Gram matrix per iteration (linear columns + the derivative rows of the refined θ); the linear block
        gives the projected solution and χ², a change of basis gives the joint (Kaufman) normal equations.
        """
        n = y.size
        self._halo_derivs = with_halos
        self._update_columns()
        params = [pr for pr in self._params if self._active[pr[1]] or pr[0] not in ("strain", "width")]
        g, h, rows = self._gram(params)
        lin = self._linear(g, h, yy)
        self._passive = lin.passive
        new = self._nonlinear_set(lin, n - int(lin.passive.sum()), with_halos)
        if new != params:
            params = new
            self._update_columns()  # derivative rows of phases that became refined
            g, h, rows = self._gram(params)
        st: _Step | None = None
        converged = False
        recentred = 0
        it = 0
        while params and it < max_iter:
            it += 1
            self._n_iter += 1
            st = self._joint(g, h, rows, lin, params)
            pinned = self._pinned(params, st.shift)
            if pinned:  # parameters at a bound pushing outwards are held for this step (projected Gauss–Newton)
                free = [pr for pr in params if pr not in pinned]
                if not free:
                    converged = True
                    break
                st = self._joint(g, h, rows, lin, free)
            else:
                free = params
            shift = st.shift
            dof = n - int(st.passive.sum())
            self._cov = covariance(st.g, st.passive, lin.chi2 / max(dof, 1))
            su = np.sqrt(np.maximum(np.diag(self._cov)[self._nl:], 0.0))
            if np.all(np.abs(shift) <= tolerance * su + 1e-15):
                if pinned:
                    st = self._joint(g, h, rows, lin, params)
                    self._cov = covariance(st.g, st.passive, lin.chi2 / max(dof, 1))
                if recentre and recentred < 2 and self._recentre():
                    recentred += 1
                    self._update_columns()
                    g, h, rows = self._gram(params)
                    lin = self._linear(g, h, yy)
                    self._passive = lin.passive
                    continue
                converged = True
                break
            step = self._trust(free, shift)
            untruncated = one_step and not pinned and bool(np.array_equal(step, shift))
            base = self._get()
            if untruncated and bool(np.all(np.abs(shift) <= ONE_STEP_SU * su)):
                # a full step below ONE_STEP_SU s.u.: taken with the joint solution's linear part, final
                self._apply(free, step, base)
                self._update_columns()
                lin = self._linear_at(y, st.x[:self._nl], st.passive[:self._nl])
                self._passive = lin.passive
                converged = True
                break
            sigma2 = lin.chi2 / max(dof, 1)  # that of self._cov
            accepted = chord_accepted = False
            if untruncated:
                self._apply(free, step, base)
                self._update_columns()
                final, chord_accepted = self._chord_final(y, lin, st, rows, su, sigma2, tolerance)
                if final is not None:
                    lin = final
                    self._passive = lin.passive
                    converged = True
                    break
                if chord_accepted:  # χ² fell already with the joint linear part: no trial projection needed,
                    g, h, rows = self._gram(params)  # the next iteration's Gram gives the projection at θ₁
                    lin = self._linear(g, h, yy)
                    self._passive = lin.passive
                    accepted = True
            for _ in range(0 if accepted else 6):
                self._apply(free, step, base)
                self._update_columns()
                g2, h2, rows2 = self._gram([])  # the linear block only: the trial needs χ² and the projection
                trial = self._linear(g2, h2, yy)
                if trial.chi2 <= lin.chi2 * (1.0 + 1e-12) + 1e-12:
                    lin = trial
                    self._passive = lin.passive
                    accepted = True
                    break
                step = 0.5 * step
                untruncated = False
            if not accepted:  # no decrease along the Gauss–Newton direction: at the minimum within noise
                self._set(base)
                self._update_columns()
                g, h, rows = self._gram(params)
                lin = self._linear(g, h, yy)
                self._passive = lin.passive
                converged = True
                break
            # a refined phase whose scale fell to zero cannot be refined (its Jacobian rows vanish)
            off = self._nb + self._nh
            keep = [pr for pr in params if pr[0] not in ("strain", "width") or lin.c[off + pr[1]] > 0.0]
            if len(keep) != len(params):
                params = keep if any(k[0] in ("strain", "width") for k in keep) else []
            elif chord_accepted:
                continue  # the Gram of these parameters at θ₁ is current
            g, h, rows = self._gram(params)
        g_joint = passive_joint = None
        if not params:
            converged = True
            self._cov = covariance(lin.g, lin.passive, lin.chi2 / max(n - int(lin.passive.sum()), 1))
        elif not converged:
            st = self._joint(g, h, rows, lin, params)
            self._cov = covariance(st.g, st.passive, lin.chi2 / max(n - int(st.passive.sum()), 1))
        if params and st is not None:
            g_joint, passive_joint = st.g, st.passive
        self._params = params
        return lin, params, g_joint, passive_joint, it, converged

    def _chord_final(self, y: FloatArray, lin: _Linear, st: _Step, rows: list[int], su: FloatArray, sigma2: float,
                     tolerance: float) -> tuple[_Linear | None, bool]:
        """Warm fits, after an untruncated step to θ₁ (columns current): the converged solution without a trial
        projection and a second iteration, or None when the step must be tried the usual way (step halving).

        The joint solution's linear part c₁ at θ₁ gives the residual r₁ and χ²₁; if χ²₁ ≤ χ²₀ the step is accepted
        (the projected χ² at θ₁ is lower still). The next shift of every parameter is then estimated by a chord
        (frozen-Jacobian) step: δ = (JᵀWJ)⁻¹·JᵀWr₁ with the step's own normal matrix and J's rows at θ₁ — the
        normal matrix changes by far less than its own precision over a step of a few s.u., and the gradient costs
        two matrix–vector products instead of the Gram matrix and joint solve of a second iteration (which, in most
        warm patterns, only confirms convergence). Converged when δ's θ-part passes the loop's test (every shift
        within `tolerance` s.u.); the solution is c₁ plus δ's linear part (a Gauss–Newton update, second order from
        the projection). A δ that would take a bounded linear parameter below zero falls back to the trial.
        Returns the solution (or None) and whether χ² fell (the step is then accepted either way)."""
        if not sigma2 > 0:
            return None, False
        nl = self._nl
        c1 = st.x[:nl]
        r = y - c1 @ self._A
        wr = r * self._w
        if not float(wr @ r) <= lin.chi2 * (1.0 + 1e-12) + 1e-12:
            return None, False
        nxt = (self._cov @ (st.basis.T @ (self._M[:max(rows) + 1] @ wr)[rows])) / sigma2
        if not np.all(np.abs(nxt[nl:]) <= tolerance * su + 1e-15):
            return None, True
        c = c1 + nxt[:nl]
        if np.any(c[self._nonneg] < 0.0):
            return None, True
        return self._linear_at(y, c, st.passive[:nl]), True

    def _recentre(self) -> bool:
        """Drop tables whose width node is off-centre (re-rendered on the next update); True if any was."""
        any_ = False
        for p, tab in enumerate(self._tables):
            if tab is not None and not tab.centred(self._wid[p]):
                self._tables[p] = None
                self._recent_tables[p] = [t for t in self._recent_tables[p] if t.centred(self._wid[p])]
                self._col_key[p] = None
                any_ = True
        return any_

    # ------------------------------------------------------------------ cold-start searches
    def _strain_step(self, p: int) -> float:
        """Strain step moving the phase's strong peaks by about half their FWHM (grid spacing of the scan)."""
        model = self._models[p]
        tt, area, gauss, lor1 = model.geometry(self._eps[p])
        x = self.two_theta
        sel = (tt > x[0]) & (tt < x[-1]) & (area >= 0.05 * (area.max() if area.size else 0.0))
        if not sel.any():
            return 2e-3
        lor0 = model.lorentz_fixed(self._eps[p])
        fwhm = model.profile(gauss[sel], model.lorentz(self._wid[p], lor1[sel], None if lor0 is None else lor0[sel])
                             )[0]  # the strong peaks' widths only
        th = np.radians(tt[sel]) / 2.0
        return float(np.clip(np.min(0.5 * np.radians(fwhm) / (2.0 * np.tan(th))), 5e-5, 2e-3))

    def _scan(self, y: FloatArray, w: FloatArray, yy: float, p: int, candidates: Sequence[tuple[float, float]],
              lin: _Linear, exact: bool, commit: bool = True) -> tuple[_Linear, int, FloatArray]:
        """Try (ε, Y) candidates for phase p with all else fixed (rank-one Gram updates); keep the best if asked."""
        row = self._nb + self._nh + p
        if exact:
            cols = np.array([self._models[p].render(self.two_theta - self._zero, e, yv, 0.0, self.window)
                             for e, yv in candidates])
        else:
            tab = self._table(p)
            cols = np.empty((len(candidates), self.two_theta.size))
            widths = {yv for _, yv in candidates}
            if len(widths) == 1:  # a strain scan: one width contraction for all candidates
                self._axis_sin()
                tab.columns(self._s, self._pol, np.array([e for e, _ in candidates]), widths.pop(), cols)
            else:
                for k, (e, yv) in enumerate(candidates):
                    self._phase_column(p, e, yv, cols[k])
        self._n_eval += len(candidates)
        cw = cols * w
        cross = cw @ self._A.T
        cc = np.einsum("kn,kn->k", cw, cols)
        cy = cw @ y
        chi2 = replacement_chi2(lin.g, lin.h, row, cross, cc, cy, self._nonneg, lin.passive, yy)
        best, best_k = lin, -1
        k = int(np.argmin(chi2))
        if chi2[k] < lin.chi2:
            g = lin.g.copy()
            h = lin.h.copy()
            g[row, :] = cross[k]
            g[:, row] = cross[k]
            g[row, row] = cc[k]
            h[row] = cy[k]
            c, passive = bounded_lsq(g, h, self._nonneg, lin.passive)
            best, best_k = _Linear(g, h, c, passive, chi2_from_gram(yy, g, h, c)), k
        if commit and best_k >= 0:
            self._commit(p, candidates[best_k], cols[best_k], best)
        return best, best_k, cols

    def _commit(self, p: int, params: tuple[float, float], col: FloatArray, lin: _Linear) -> None:
        """Adopt a scanned (ε, Y) and its column for phase p."""
        self._eps[p], self._wid[p] = params
        self._col_key[p] = None
        self._A[self._nb + self._nh + p] = col
        self._touch(self._phase_rows(p))
        self._passive = lin.passive

    def _strain_grid(self, p: int) -> list[tuple[float, float]]:
        """(ε, Y) candidates of the strain scan: ±strain_search around the start, half-FWHM steps."""
        step = self._strain_step(p)
        k = int(math.ceil(self.strain_search / step))
        grid = self.strain_start[p] + step * np.arange(-k, k + 1)
        grid = grid[np.abs(grid) <= self.strain_range]
        return [(float(e), float(self._wid[p])) for e in grid]

    def _strain_scan(self, y: FloatArray, w: FloatArray, yy: float, lin: _Linear, phases: Sequence[int]) -> _Linear:
        """One sweep of strain scans over `phases`, strongest contribution first."""
        off = self._nb + self._nh
        order = sorted(phases, key=lambda p: -lin.c[off + p] * self._A[off + p].sum())
        for p in order:
            lin = self._scan(y, w, yy, p, self._strain_grid(p), lin, exact=False)[0]
        return lin

    def _width_scan(self, y: FloatArray, w: FloatArray, yy: float, lin: _Linear, phases: Sequence[int]) -> _Linear:
        """Coarse Lorentzian-width scan (×¼ … ×4) of the given phases, exact renders."""
        lo, hi = self.width_bounds
        for p in phases:
            cands = [(float(self._eps[p]), float(np.clip(self._wid[p] * f, lo, hi)))
                     for f in (0.25, 0.5, 1.0, 2.0, 4.0)]
            lin = self._scan(y, w, yy, p, cands, lin, exact=True)[0]
        return lin

    def _cold_search(self, y: FloatArray, w: FloatArray, yy: float) -> None:
        """Forward selection: add, one at a time, the phase whose best strain lowers χ² most, then refine it.

        Starting from background + halos only, each round scans every absent phase's strain and adds the one with
        the largest χ² decrease if that exceeds `min_significance`²·2; the newcomer's width is scanned and the
        included phases are refined by a few Gauss–Newton steps before the next round, so a misfit of the main
        phase is not taken up by a look-alike (α/β/γ-CsPbI3 share their pseudo-cubic sub-cell reflections).
        """
        self._active[:] = False
        self._update_columns(derivs=False)
        lin = self._solve_linear(y, w, yy)
        self._passive = lin.passive

        def start(p: int) -> tuple[list[tuple[float, float]], list[float]]:
            self._eps[p], self._wid[p] = self.strain_start[p], self.width_start
            return (self._strain_grid(p) if "strain" in self.refine else [(self._eps[p], self._wid[p])]), []

        self._forward_select(y, w, yy, lin, range(self._np), start, lambda: self._refine(y, w, yy, 8, self.halos)[0],
                             coarse_widths=True)
        # the phases not selected stay in the model at their starting values (NNLS keeps them at ≈ 0)
        for p in np.flatnonzero(~self._active):
            self._eps[p], self._wid[p] = self.strain_start[p], self.width_start
            self._col_key[p] = None
        self._active[:] = True

    def _forward_select(self, y: FloatArray, w: FloatArray, yy: float, lin: _Linear, cands: Sequence[int],
                        start: Callable[[int], tuple[list[tuple[float, float]], list[float]]],
                        refine: Callable[[], _Linear], coarse_widths: bool) -> _Linear:
        """Add inactive candidates one at a time: each round scans every one and adds the one lowering χ² most if
        by ≥ 2·min_significance²; with `coarse_widths` its width is scanned (×¼ … ×4), then `refine()` runs before
        the next round.

        `start(p)` sets p's starting values and gives its (ε, Y) grid and other widths to try at the grid's best
        strain (a separable search: peak positions fix the strain whatever the width, so the widths are tried at
        one strain rather than the grid repeated per width — a quarter of the candidate columns)."""
        off = self._nb + self._nh
        threshold = 2.0 * self.min_significance ** 2
        while True:
            best = None
            for p in cands:
                if self._active[p]:
                    continue
                self._active[p] = True
                grid, widths = start(p)
                trial, k, cols = self._scan(y, w, yy, p, grid, lin, exact=False, commit=False)
                pick = (grid[k], cols[k]) if k >= 0 else None
                if k >= 0 and widths:
                    alt = [(grid[k][0], yv) for yv in widths]
                    trial2, k2, cols2 = self._scan(y, w, yy, p, alt, lin, exact=False, commit=False)
                    if k2 >= 0 and trial2.chi2 < trial.chi2:
                        trial, pick = trial2, (alt[k2], cols2[k2])
                self._active[p] = False
                if pick is not None and trial.c[off + p] > 0.0 and (best is None or trial.chi2 < best[0].chi2):
                    best = (trial, p) + pick
            if best is None or lin.chi2 - best[0].chi2 < threshold:
                return lin
            trial, p, params, col = best
            self._active[p] = True
            self._commit(p, params, col, trial)
            lin = trial
            if "width" in self.refine and coarse_widths:
                lin = self._width_scan(y, w, yy, lin, [p])
            refine()
            lin = self._solve_linear(y, w, yy)  # the next round's scans need the Gram matrix at the refined θ

    # ------------------------------------------------------------------ public API
    def fit(self, counts: ArrayLike, *, warm_start: bool = True, weights: ArrayLike | None = None) -> QuantResult:
        """Fit one pattern on `two_theta`; warm-starts from the previous fit unless `warm_start=False`."""
        y = np.asarray(counts, dtype=np.float64)
        if y.shape != self.two_theta.shape:
            raise ValueError(f"counts has shape {y.shape}, expected {self.two_theta.shape}")
        if not np.isfinite(y).all():
            raise ValueError("counts must be finite")
        if weights is None:
            w = 1.0 / np.maximum(y, 1.0)
        else:
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != y.shape or np.any(w < 0) or not np.all(np.isfinite(w)):
                raise ValueError("weights must be finite, non-negative and shaped like counts")
        yy = float(w @ (y * y))
        cold = not (warm_start and self.is_warm)
        self._n_eval = 0
        self._n_iter = 0
        reseeded = False
        if cold:
            self.reset()
            self._set_pattern(y, w)
            self._cold_search(y, w, yy)
            out = self._refine(y, w, yy, self.max_iterations, self.halos)
        else:
            self._set_pattern(y, w)
            self._anticipate = True
            # per-pattern drift of ε and relative drift of Y (for table anticipation)
            self._drift_eps = self._eps - self._prev_eps
            self._drift_wid = self._wid / self._prev_wid - 1.0
            self._prev_eps, self._prev_wid = self._eps.copy(), self._wid.copy()
            self._revert_held()
            halos = self.halos and "halos" in self.refine
            try:
                out = self._refine(y, w, yy, self.warm_iterations, halos, False, WARM_SHIFT_TOLERANCE, True)
                out, reseeded = self._warm_rescans(y, w, yy, out, halos)
            finally:
                self._anticipate = False
        self._prev_refined = {p for kind, p in out[1] if kind == "strain"}
        self._remember_good(out[1], out[0])
        res = self._result(y, w, yy, out, cold, reseeded)
        if self._dropped:  # phases left out by `_admit` return (at their held values) for the next pattern
            self._active[list(self._dropped)] = True
            self._dropped.clear()
        return res

    def _remember_good(self, params: list[tuple[str, int]], lin: _Linear) -> None:
        """Record (ε, Y) of the phases whose width was refined at ≥ GOOD_MIN_FRACTION (and not left on a bound)."""
        lo, hi = self.width_bounds
        tol = 1e-6 * (hi - lo)
        self._width_refined = {p for kind, p in params if kind == "width"}
        cs = lin.c[self._nb + self._nh:self._nl]
        total = float(self._zmv_over_norm @ cs)
        wf = self._zmv_over_norm * cs / total if total > 0 else np.zeros_like(cs)
        for p in self._width_refined:
            if wf[p] >= GOOD_MIN_FRACTION and lo + tol < self._wid[p] < hi - tol:
                self._good[p] = self._eps[p], self._wid[p]

    def _held_prior(self, p: int) -> tuple[float, float]:
        """(ε, Y) a held phase p is kept at: its last well-determined values, else the starting strain with the
        width of the strongest width-refined phase (or the starting width)."""
        if np.isfinite(self._good[p, 0]):
            return float(self._good[p, 0]), float(self._good[p, 1])
        off = self._nb + self._nh
        ref = [q for q in self._width_refined if q != p]
        if ref and self._passive is not None:
            c = self._last_c
            q = max(ref, key=lambda q: c[off + q] * self._zmv_over_norm[q])
            return float(self.strain_start[p]), float(self._wid[q])
        return float(self.strain_start[p]), float(self.width_start)

    def _revert_held(self) -> None:
        """Warm fits: phases not refined in the previous fit return to `_held_prior` before the new pattern.

        A phase too weak to refine can still have been refined transiently (while it absorbed part of a neighbour's
        or an emerging polymorph's intensity) or re-scanned onto noise, leaving its strain far off or its width on a
        bound (10 µm or 2 nm crystallites). Held at such values its column is no template of the phase, so when the
        phase does grow (γ→β at ≈ 180 °C) NNLS cannot see it, it never becomes significant, never gets re-scanned,
        and its intensity is taken by the look-alike that is refined (β low, γ high by several wt %). Kept at
        plausible values instead, the column of a growing phase matches well enough to be picked up and re-scanned.
        Widths that are followed from another phase move only beyond 5 % (no column re-evaluation otherwise)."""
        for p in range(self._np):
            if p in self._width_refined:
                continue
            e, yv = self._held_prior(p)
            if e != self._eps[p] or abs(yv / self._wid[p] - 1.0) > 0.05:
                self._eps[p], self._wid[p] = e, yv

    def _warm_rescans(self, y: FloatArray, w: FloatArray, yy: float, out: tuple, halos: bool) -> tuple[tuple, bool]:
        """After a warm refinement: forward re-selection of the weak phases when one became significant or χ² jumped.

        Trigger: a phase became refinable (scale ≥ min_significance s.u., ≥ RESCAN_MIN_FRACTION) since the previous
        pattern, or χ²/(N−P) rose by more than RESEED_SIGMAS of its scatter above the lowest of the last
        RESEED_WINDOW patterns. Then the candidates — the newcomers and every held phase — are re-selected as in the
        cold forward selection, with the well-refined phases kept as they are: all candidates are taken out, and
        one at a time the candidate whose scan (the cold-fit strain grid at its held width, then at the best strain
        the starting width and those of the refined phases) lowers χ² most is put back if it lowers it by
        ≥ 2·min_significance², everything refined; the rest return at their held values. The
        result replaces the warm fit if χ² is lower. Why all held phases and not the newcomer alone: at γ→β or
        β→α the intensity of the growing polymorph is first taken by whichever look-alike has the better-placed
        column (α for β, β for α); re-scanning that one alone keeps the wrong phase. Costs tens of milliseconds,
        only at transitions.
        """
        lin = out[0]
        dof = max(y.size - int(lin.passive.sum()) - len(out[1]), 1)
        gof2 = lin.chi2 / dof
        recent = self._recent_gof2[-RESEED_WINDOW:]
        jumped = bool(recent) and gof2 > min(recent) + RESEED_SIGMAS * math.sqrt(2.0 / dof)
        off = self._nb + self._nh
        cs = lin.c[off:self._nl]
        total = float(self._zmv_over_norm @ cs)
        wf = self._zmv_over_norm * cs / total if total > 0 else np.zeros_like(cs)
        refined = {p for kind, p in out[1] if kind == "strain"}
        newly = sorted(p for p in refined - self._prev_refined if wf[p] >= RESCAN_MIN_FRACTION)
        lo, hi = self.width_bounds
        tol = 1e-6 * (hi - lo)
        pinned = [p for p in sorted(refined) if p in self._width_refined_now(out[1])
                  and not lo + tol < self._wid[p] < hi - tol]
        if not (newly or jumped):
            return (self._admit(y, w, yy, out, pinned, halos) if pinned else out), False
        keep = {p for p in refined - set(newly) if p in self._prev_refined}
        cands = [p for p in range(self._np) if p not in keep]
        if not cands:
            return out, False
        snap = self._get()
        widths = {float(self._wid[p]) for p in keep} | {float(self.width_start)}
        held_at = {p: (self._held_prior(p) if p not in newly else (float(self._eps[p]), float(self._wid[p])))
                   for p in cands}
        self._active[cands] = False
        self._update_columns(derivs=False)
        lin = self._solve_linear(y, w, yy)
        self._passive = lin.passive

        def start(p: int) -> tuple[list[tuple[float, float]], list[float]]:
            self._eps[p], self._wid[p] = held_at[p]
            grid = self._strain_grid(p) if "strain" in self.refine else [held_at[p]]
            return grid, sorted(widths - {held_at[p][1]})

        self._forward_select(y, w, yy, lin, cands, start,
                             lambda: self._refine(y, w, yy, 8, halos, False, WARM_SHIFT_TOLERANCE, True)[0],
                             coarse_widths=False)
        for p in cands:
            if not self._active[p]:
                self._eps[p], self._wid[p] = held_at[p] if p not in newly else self._held_prior(p)
                self._col_key[p] = None
        self._active[:] = True
        out2 = self._refine(y, w, yy, self.max_iterations, halos, False, WARM_SHIFT_TOLERANCE, True)
        # the re-selection admits a phase only for Δχ² ≥ 2·min_significance²: the warm fit is kept only if it is
        # better by the likelihood-ratio margin min_significance² (not for a weak phase the selection left out)
        if out2[0].chi2 < out[0].chi2 + self.min_significance ** 2:
            out, reseeded = out2, True
        else:
            self._set(snap)
            for p in cands:
                self._col_key[p] = None
            out = self._refine(y, w, yy, self.warm_iterations, halos, False, WARM_SHIFT_TOLERANCE, True)
            reseeded = False
        pinned = [p for p in sorted(self._width_refined_now(out[1])) if not lo + tol < self._wid[p] < hi - tol]
        return (self._admit(y, w, yy, out, pinned, halos) if pinned else out), reseeded

    @staticmethod
    def _width_refined_now(params: list[tuple[str, int]]) -> set[int]:
        """Phases whose width is among the refined parameters."""
        return {p for kind, p in params if kind == "width"}

    def _admit(self, y: FloatArray, w: FloatArray, yy: float, out: tuple, newly: Sequence[int], halos: bool
               ) -> tuple:
        """Likelihood-ratio test of phases that just became refinable (or whose width sits on a bound): each must
        lower χ² by ≥ min_significance² against the refit without it, weakest first, or it is left out of this
        pattern's model (scale 0).

        The Wald test that made it refinable (scale ≥ min_significance s.u.) is met too easily by a phase whose
        width ran onto the 2 nm bound while it soaked up background or halo misfit (α-CsPbI3 at 5 wt % of 2 nm
        crystallites in a pure-β pattern, Δχ² ≈ 10); the refit without it decides.
        """
        off = self._nb + self._nh
        for p in sorted((p for p in newly if out[0].c[off + p] > 0.0), key=lambda p: out[0].c[off + p]):
            snap = self._get()
            self._active[p] = False
            self._dropped.add(p)
            out2 = self._refine(y, w, yy, self.warm_iterations, halos, False, WARM_SHIFT_TOLERANCE, True)
            if out[0].chi2 <= out2[0].chi2 - self.min_significance ** 2:  # it earns its place
                self._active[p] = True
                self._dropped.discard(p)
                self._set(snap)
                out = self._refine(y, w, yy, self.warm_iterations, halos, False, WARM_SHIFT_TOLERANCE, True)
            else:
                out = out2
        return out

    def _result(self, y: FloatArray, w: FloatArray, yy: float, out: tuple, cold: bool, reseeded: bool) -> QuantResult:
        """Assemble the QuantResult (curve, R factors, Hill–Howard fractions and their uncertainties)."""
        lin, params, g_joint, passive_joint, _, converged = out
        iterations = self._n_iter
        nb, nh, nl = self._nb, self._nh, self._nl
        c = lin.c
        off = nb + nh
        background, halo, phases, curve, chi2 = self._curve_parts(c)
        n_par = int(np.count_nonzero(lin.passive)) + len(params)
        dof = max(y.size - n_par, 1)
        rwp = math.sqrt(chi2 / yy) if yy > 0 else math.nan
        rexp = math.sqrt(dof / yy) if yy > 0 else math.nan
        self._last_gof2 = chi2 / dof
        self._recent_gof2 = (self._recent_gof2 + [chi2 / dof])[-RESEED_WINDOW:]
        self._last_c = c.copy()
        cov = self._cov  # σ²(JᵀWJ)⁻¹ at the final θ, σ² = χ²/(N − P) (the Rietveld convention)
        cs = c[off:nl]
        a = self._zmv_over_norm
        total = float(a @ cs)
        wf = a * cs / total if total > 0 else np.zeros_like(cs)
        su_all = np.sqrt(np.maximum(np.diagonal(cov), 0.0))
        if total > 0:
            # ∂W_p/∂c_i = (δ_pi a_p − W_p a_i)/T, so var W_p = (a_p² C_pp − 2 a_p W_p (Ca)_p + W_p² aᵀCa)/T²
            cov_c = cov[off:nl, off:nl]
            ca = cov_c @ a
            var = a * a * np.diagonal(cov_c) - 2.0 * a * wf * ca + wf * wf * float(a @ ca)
            wf_su = np.sqrt(np.maximum(var, 0.0)) / total
        else:
            wf_su = np.zeros_like(cs)
        norms = self._norms
        sc, sc_su = cs / norms, su_all[off:nl] / norms
        su_theta = dict(zip(params, su_all[nl:].tolist())) if params else {}
        refined = {p for kind, p in params if kind in ("strain", "width")}
        lam = self.radiation.wavelength
        phase_area = float(phases @ self._dx)
        halo_area = float(halo @ self._dx)
        names = self.names
        return QuantResult(
            weight_fractions=dict(zip(names, wf.tolist())), weight_fraction_su=dict(zip(names, wf_su.tolist())),
            scale_factors=dict(zip(names, sc.tolist())), scale_factor_su=dict(zip(names, sc_su.tolist())),
            strain=dict(zip(names, self._eps.tolist())),
            strain_su={n: su_theta.get(("strain", p), 0.0) for p, n in enumerate(names)},
            width=dict(zip(names, self._wid.tolist())),
            width_su={n: su_theta.get(("width", p), 0.0) for p, n in enumerate(names)},
            size_nm={n: SCHERRER_K * lam / (10.0 * math.radians(yv)) for n, yv in zip(names, self._wid)},
            refined={n: p in refined for p, n in enumerate(names)},
            zero_shift=float(self._zero), zero_shift_su=float(su_theta.get(("zero", 0), 0.0)),
            halo_intensity=halo_area,
            halo_fraction=halo_area / (halo_area + phase_area) if halo_area + phase_area > 0 else 0.0,
            halo_amplitudes=tuple(c[nb:nb + nh].tolist()), halo_q=tuple(self._hq.tolist()),
            halo_fwhm_q=tuple(self._hw.tolist()), rwp=rwp, rexp=rexp, gof=rwp / rexp, chi2=chi2,
            n_points=int(y.size), n_parameters=n_par, curve=curve, background=background, halo=halo,
            n_iterations=int(iterations), n_evaluations=int(self._n_eval), converged=bool(converged), cold=cold,
            reseeded=reseeded)

    # ------------------------------------------------------------------ exact model (baselines, checks)
    def exact_phase_pattern(self, phase: int | str, strain: float, width: float, zero: float = 0.0) -> FloatArray:
        """Phase pattern in the Crystal.peaks scale convention (s = 1), rendered from scratch on `two_theta`."""
        p = self.names.index(phase) if isinstance(phase, str) else int(phase)
        m = self._models[p]
        return m.render(self.two_theta, strain, width, zero, self.window) * m.pk.norm

    def halo_shapes(self, q: Sequence[float] | None = None, fwhm: Sequence[float] | None = None,
                    zero: float = 0.0) -> FloatArray:
        """Unit-height Gaussian halos in Q on `two_theta` (rows), as used by the model."""
        q = self._halo_q0 if q is None else np.asarray(q, dtype=float)
        fw = self._halo_w0 if fwhm is None else np.asarray(fwhm, dtype=float)
        out = np.empty((q.size, self.two_theta.size))
        halo_columns(np.sin(np.radians(self.two_theta - zero) / 2.0), 4.0 * math.pi / self.radiation.wavelength,
                     q, fw, out, np.empty((0, 2, 0)), False)
        return out

    @property
    def background_basis(self) -> FloatArray:
        """Chebyshev background rows on `two_theta` (order + 1 rows)."""
        return self._bg.copy()
