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
phases offered (amorphous halos are reported as an intensity, not a weight fraction); their uncertainties propagate
the covariance of the scales through the gradient of that formula.

Three parts, with the model as their shared input (this module is the facade that runs them per pattern):
- `quant.model.PatternModel` — instrument and phases → design rows at the current nonlinear θ (sinθ tables,
  `quant.tables`; halos, `quant.halos`; Chebyshev background);
- `quant.solver.Solver` over `quant.gram.NormalEquations` — variable projection with Kaufman Gauss–Newton steps,
  bounded linear solves (`quant.linear`), the cold forward-selection search;
- `quant.warm.WarmStart` — what a warm fit keeps from the previous pattern (held phases, re-selection at
  transitions, likelihood-ratio admission).
Settings are one `quant.config.QuantConfig`; `PhaseQuantifier(...)` keeps its keyword arguments and builds it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hotstage.analysis.crystal import Crystal
from hotstage.analysis.instrument import Instrument
from hotstage.analysis.profiles import DEFAULT_CAGLIOTI, SCHERRER_K
from hotstage.analysis.quant.config import DEFAULT_HALO_FWHM_Q, DEFAULT_HALO_Q, TABLE_WINDOW, QuantConfig
from hotstage.analysis.quant.gram import NormalEquations
from hotstage.analysis.quant.model import PatternModel
from hotstage.analysis.quant.solver import Outcome, Solver
from hotstage.analysis.quant.warm import WarmStart
from hotstage.analysis.radiation import Radiation

__all__ = ["PhaseQuantifier", "QuantResult", "QuantConfig", "DEFAULT_HALO_Q", "DEFAULT_HALO_FWHM_Q", "TABLE_WINDOW",
           "warm_up"]

FloatArray = NDArray[np.float64]


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
                 instrument: Instrument | None = None, config: QuantConfig | None = None) -> None:
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
        usual Rietveld practice: their widths are poorly determined and wander). `config` (a `QuantConfig`)
        replaces all the keyword settings at once.
        """
        cfg = config if config is not None else QuantConfig(
            background_order=background_order, halos=halos, halo_q=tuple(halo_q), halo_fwhm_q=tuple(halo_fwhm_q),
            halo_q_bound=halo_q_bound, halo_fwhm_bounds=halo_fwhm_bounds, refine=frozenset(refine),
            caglioti=caglioti, microstrain=microstrain, eta=eta, size_nm=size_nm, strain_start=strain_start,
            strain_range=strain_range, strain_search=strain_search, size_bounds_nm=size_bounds_nm,
            zero_range=zero_range, min_relative_intensity=min_relative_intensity, window=window,
            min_significance=min_significance, min_fraction_strain=min_fraction_strain,
            min_fraction_width=min_fraction_width, max_iterations=max_iterations, warm_iterations=warm_iterations)
        self.config = cfg
        self.model = PatternModel(phases, np.asarray(two_theta, dtype=np.float64), wavelength, instrument, cfg)
        self.normal = NormalEquations(self.model)
        self.solver = Solver(self.model, self.normal, cfg)
        self.warm = WarmStart(self.model, self.solver, cfg)

    # ------------------------------------------------------------------ what the model is
    @property
    def phases(self) -> list[Crystal]:
        """The crystalline phases offered."""
        return self.model.phases

    @property
    def names(self) -> list[str]:
        """Their names (the keys of every `QuantResult` dict)."""
        return self.model.names

    @property
    def two_theta(self) -> FloatArray:
        """The fixed 2θ axis (deg)."""
        return self.model.two_theta

    @property
    def radiation(self) -> Radiation:
        """The radiation (the instrument's when there is one)."""
        return self.model.radiation

    @property
    def instrument(self) -> Instrument | None:
        """The instrument given, if any."""
        return self.model.instrument

    @property
    def width_start(self) -> float:
        """Starting Lorentzian coefficient Y₀ (deg) from `size_nm`."""
        return self.model.width_start

    @property
    def width_bounds(self) -> tuple[float, float]:
        """Bounds of Y (deg) from `size_bounds_nm`."""
        return self.model.width_bounds

    @property
    def background_basis(self) -> FloatArray:
        """Chebyshev background rows on `two_theta` (order + 1 rows)."""
        return self.model.bg.copy()

    @property
    def strain_start(self) -> FloatArray:
        """Starting strain per phase (from `strain_start`, a number or a mapping by phase name)."""
        return self.model.strain_start

    def __getattr__(self, name: str) -> object:
        """The settings as attributes (`q.min_significance`, `q.refine`, ...), as before the split: read from
        `config` (only called for names not found otherwise)."""
        config = self.__dict__.get("config")
        if config is not None and name in QuantConfig.__dataclass_fields__:
            return getattr(config, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def _zero(self) -> float:
        """The current zero shift (deg); before any fit the starting one (the instrument's zero)."""
        return self.model.zero

    def exact_phase_pattern(self, phase: int | str, strain: float, width: float, zero: float = 0.0) -> FloatArray:
        """Phase pattern in the Crystal.peaks scale convention (s = 1), rendered from scratch on `two_theta`."""
        return self.model.exact_phase_pattern(phase, strain, width, zero)

    def halo_shapes(self, q: Sequence[float] | None = None, fwhm: Sequence[float] | None = None,
                    zero: float = 0.0) -> FloatArray:
        """Unit-height Gaussian halos in Q on `two_theta` (rows), as used by the model."""
        return self.model.halo_shapes(q, fwhm, zero)

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget the previous solution: the next `fit` is cold."""
        self.model.reset()
        self.normal.reset()
        self.solver.reset()
        self.warm.reset()

    @property
    def is_warm(self) -> bool:
        """True when a previous solution exists (the next `fit` may warm-start)."""
        return self.solver.passive is not None

    # ------------------------------------------------------------------ fitting
    def fit(self, counts: ArrayLike, *, warm_start: bool = True, weights: ArrayLike | None = None) -> QuantResult:
        """Fit one pattern on `two_theta`; warm-starts from the previous fit unless `warm_start=False`."""
        m, solver, warm, cfg = self.model, self.solver, self.warm, self.config
        y = np.asarray(counts, dtype=np.float64)
        if y.shape != m.two_theta.shape:
            raise ValueError(f"counts has shape {y.shape}, expected {m.two_theta.shape}")
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
        m.n_eval = 0
        solver.n_iter = 0
        reseeded = False
        if cold:
            self.reset()
            self.normal.set_pattern(y, w)
            solver.yy = yy
            solver.cold_search()
            out = solver.refine(cfg.max_iterations, m.halos)
        else:
            self.normal.set_pattern(y, w)
            solver.yy = yy
            warm.begin()
            halos = m.halos and "halos" in cfg.refine
            try:
                out = warm.refine(halos)
                out, reseeded = warm.rescans(out, halos)
            finally:
                m.anticipate = False
        res = self._result(y, yy, out, cold, reseeded)
        warm.finish(out, res.chi2 / max(res.n_points - res.n_parameters, 1))
        warm.release_dropped()
        return res

    def _result(self, y: FloatArray, yy: float, out: Outcome, cold: bool, reseeded: bool) -> QuantResult:
        """Assemble the QuantResult (curve, R factors, Hill–Howard fractions and their uncertainties)."""
        m = self.model
        lin, params = out.lin, out.params
        nb, nh, nl, off = m.nb, m.nh, m.nl, m.off
        c = lin.c
        background, halo, phases, curve, chi2 = self.normal.curve_parts(c)
        n_par = int(np.count_nonzero(lin.passive)) + len(params)
        dof = max(y.size - n_par, 1)
        rwp = math.sqrt(chi2 / yy) if yy > 0 else math.nan
        rexp = math.sqrt(dof / yy) if yy > 0 else math.nan
        cov = self.solver.cov  # σ²(JᵀWJ)⁻¹ at the final θ, σ² = χ²/(N − P) (the Rietveld convention)
        cs = c[off:nl]
        a = m.zmv_over_norm
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
        norms = m.norms
        sc, sc_su = cs / norms, su_all[off:nl] / norms
        su_theta = dict(zip(params, su_all[nl:].tolist())) if params else {}
        refined = {p for kind, p in params if kind in ("strain", "width")}
        lam = m.radiation.wavelength
        phase_area = float(phases @ m.dx)
        halo_area = float(halo @ m.dx)
        names = m.names
        return QuantResult(
            weight_fractions=dict(zip(names, wf.tolist())), weight_fraction_su=dict(zip(names, wf_su.tolist())),
            scale_factors=dict(zip(names, sc.tolist())), scale_factor_su=dict(zip(names, sc_su.tolist())),
            strain=dict(zip(names, m.eps.tolist())),
            strain_su={n: su_theta.get(("strain", p), 0.0) for p, n in enumerate(names)},
            width=dict(zip(names, m.wid.tolist())),
            width_su={n: su_theta.get(("width", p), 0.0) for p, n in enumerate(names)},
            size_nm={n: SCHERRER_K * lam / (10.0 * math.radians(yv)) for n, yv in zip(names, m.wid)},
            refined={n: p in refined for p, n in enumerate(names)},
            zero_shift=float(m.zero), zero_shift_su=float(su_theta.get(("zero", 0), 0.0)),
            halo_intensity=halo_area,
            halo_fraction=halo_area / (halo_area + phase_area) if halo_area + phase_area > 0 else 0.0,
            halo_amplitudes=tuple(c[nb:nb + nh].tolist()), halo_q=tuple(m.hq.tolist()),
            halo_fwhm_q=tuple(m.hw.tolist()), rwp=rwp, rexp=rexp, gof=rwp / rexp, chi2=chi2,
            n_points=int(y.size), n_parameters=n_par, curve=curve, background=background, halo=halo,
            n_iterations=int(self.solver.n_iter), n_evaluations=int(m.n_eval), converged=bool(out.converged),
            cold=cold, reseeded=reseeded)
