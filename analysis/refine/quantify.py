"""`quantify()`: Rietveld-style whole-pattern quantitative phase analysis of a measured pattern.

Weight fractions: Hill & Howard, J. Appl. Cryst. 20, 467 (1987), W_p = s_p(ZMV)_p / Σ s_i(ZMV)_i with the
refined cell volume (the intensity convention of `hotstage.analysis.crystal`). Standard uncertainties: from the
covariance of the scales (σ²·G⁻¹ of the linear problem at the refined nonlinear parameters) and of the nonlinear
parameters (σ²·(JᵀJ)⁻¹ of the projected Jacobian), σ² = χ²/(N − P), times the Bérar & Lelann factor
√((1 + ρ)/(1 − ρ)) for serially correlated residuals (J. Appl. Cryst. 24, 1 (1991)).
Agreement factors: Rwp = √(χ²/Σ w y²), Rexp = √((N − P)/Σ w y²), GoF = χ²/(N − P) (the reduced χ²; √ of it is
the "S" of some programs).
Weights: 1/σ² when σ is given, else 1/max(y, 1) (Poisson counts).

Refinement strategy (cold): the CIF cells, 200 nm crystallites and ε = 1e-4 start; a first pass with every peak
broadened by a Gaussian of twice the instrument FWHM (continuation: a cell several FWHM off still slides into
place), then the sharp model; then backward elimination of insignificant phases (`significance`); then the
instrument checks that produce `warnings` instead of phases. Warm (`start=` a previous result), the policy for a
sequence of patterns: one sharp pass from its parameters with the same phases kept (χ² to 1e-5 relative: typically
two Gauss–Newton steps), then elimination, in which every F-test re-solves only the linear part (from the normal
equations) and the phases kept in `start` (they passed their decoy tests there) are not decoy-tested again while
their F-test passes; a phase rejected in `start` stays out (one appearing mid-sequence needs a cold fit). On the
60,000-point benchmark a warm fit is four evaluations and about three Jacobian passes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hotstage.analysis.crystal import Crystal

from .model import INSTRUMENT_PARAMETERS, MAX_SAMPLE_FWHM_CAP, PhaseModel, hump, max_sample_fwhm
from .significance import PhaseTest, backward_elimination
from .solver import Refinement, autocorrelation_time, berar_lelann_factor, lag1_autocorrelation, nonlinear_covariance

if TYPE_CHECKING:
    from hotstage.analysis.instrument import Instrument

FloatArray = NDArray[np.float64]

COLD_BLUR = 2.0
"""Extra Gaussian broadening (× instrument FWHM) of the first cold pass (module docstring)."""
COLD_BLUR_NFEV = 15
"""Evaluations of the blurred first pass: it only brings the lines near their places for the sharp pass (a fixed
budget, not a fraction of `max_nfev`: run to convergence, the blurred model's own optimum is not the sharp one's
start the sharp pass needs, and on the measured β pattern 250 blurred evaluations did not converge either)."""
SHARPER_SCALE = 0.7
"""An instrument-width scale at or below which a clearly better fit triggers the 'sharper than the instrument'
warning."""


class RefineInputError(ValueError):
    """Bad input to `quantify` (shapes, non-finite values, unknown names)."""


@dataclass
class PhaseResult:
    """Refined numbers of one phase (kept or rejected)."""

    weight_fraction: float
    weight_fraction_su: float
    scale: float
    cell: tuple[float, float, float, float, float, float]
    cell_su: tuple[float, float, float, float, float, float]
    size_nm: float
    size_nm_su: float
    microstrain: float
    microstrain_su: float
    preferred_orientation: float | None
    significant: bool
    f_statistic: float
    p_value: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (infinite sizes as None)."""
        d = dict(self.__dict__)
        d["cell"] = list(self.cell)
        d["cell_su"] = list(self.cell_su)
        for k in ("size_nm", "size_nm_su", "f_statistic", "p_value"):
            if not np.isfinite(d[k]):
                d[k] = None
        return d


@dataclass
class RefineResult:
    """Outcome of `quantify` (see api.md): kept phases, rejected phases with reasons, agreement, curves."""

    phases: dict[str, PhaseResult]
    rejected: dict[str, str]
    rwp: float
    rexp: float
    gof: float
    chi2: float
    n_points: int
    n_parameters: int
    two_theta: FloatArray
    counts: FloatArray
    curve: FloatArray
    background: FloatArray
    phase_curves: dict[str, FloatArray]
    instrument: Any
    warnings: list[str]
    reflections: dict[str, tuple[FloatArray, NDArray[np.int64]]]
    humps: list[tuple[float, float, float]]
    durbin_watson: float
    n_effective: float
    parameters: dict[str, dict[str, float]] = field(default_factory=dict)
    n_evaluations: int = 0

    @property
    def weight_fractions(self) -> dict[str, float]:
        """Weight fractions of the kept phases."""
        return {k: v.weight_fraction for k, v in self.phases.items()}

    def reflection_residuals(self, name: str) -> dict[str, FloatArray]:
        """Per-reflection residuals of phase `name` (primary line, reflections inside the data): ``two_theta``
        (calculated centre), ``hkl``, ``intensity_ratio`` Σ(obs − calc)/Σ peak over ±1 FWHM (0 = perfect),
        ``position`` observed − calculated centre (deg) and ``width`` observed − calculated FWHM (deg), both from a
        one-parameter local least-squares of the residual on the peak's derivative (NaN where the window is
        empty or the phase absent)."""
        return _reflection_residuals(self, name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no curves)."""
        return {
            "phases": {k: v.to_dict() for k, v in self.phases.items()},
            "rejected": dict(self.rejected),
            "rwp": self.rwp, "rexp": self.rexp, "gof": self.gof, "chi2": self.chi2,
            "n_points": self.n_points, "n_parameters": self.n_parameters,
            "warnings": list(self.warnings),
            "humps": [{"amplitude": a, "centre": c, "fwhm": w} for a, c, w in self.humps],
            "durbin_watson": self.durbin_watson, "n_effective": self.n_effective,
            "instrument": (self.instrument.to_dict() if hasattr(self.instrument, "to_dict") else repr(self.instrument)),
        }


# ---------------------------------------------------------------------------------------------- inputs
def _inputs(two_theta: ArrayLike, counts: ArrayLike, sigma: ArrayLike | None,
            excluded: Sequence[tuple[float, float]]) -> tuple[FloatArray, FloatArray, FloatArray, NDArray[np.bool_]]:
    """Validated arrays, weights and the mask of fitted points.

    σ = +inf marks a zero-weight point (what `read_pattern` returns for a powder CIF's ``_pd_proc_ls_weight`` of 0,
    e.g. an unmeasured last channel): such points are left out of the fit like an excluded region (weight 0
    contributes nothing to χ² and must not count in N). Each excluded region must be two finite numbers and overlap
    the data (a region that excludes nothing is a wrong unit or a wrong pattern, not a no-op)."""
    x = np.asarray(two_theta, dtype=float)
    y = np.asarray(counts, dtype=float)
    if x.ndim != 1 or y.shape != x.shape or x.size < 20:
        raise RefineInputError(f"two_theta and counts must be 1-D of equal length ≥ 20, got {x.shape} and {y.shape}")
    if not np.all(np.isfinite(x)) or np.any(np.diff(x) <= 0):
        raise RefineInputError("two_theta must be finite and strictly increasing")
    if not np.all(np.isfinite(y)):
        bad = int(np.flatnonzero(~np.isfinite(y))[0])
        raise RefineInputError(f"counts must be finite (first bad point index {bad})")
    mask = np.ones(x.size, dtype=bool)
    if sigma is not None:
        s = np.asarray(sigma, dtype=float)
        if s.shape != x.shape or np.any(np.isnan(s)) or np.any(s <= 0) or np.any(np.isneginf(s)):
            raise RefineInputError("sigma must be positive (+inf: zero weight) and of the same length as counts")
        mask &= np.isfinite(s)  # σ = +inf: zero weight, the point is left out
        w = np.where(mask, 1.0 / np.where(mask, s, 1.0) ** 2, 0.0)
    else:
        w = 1.0 / np.maximum(y, 1.0)
    for region in excluded:
        try:
            lo, hi = (float(v) for v in region)
        except (TypeError, ValueError):
            raise RefineInputError(f"excluded region {region!r} must be two numbers (lo, hi) in degrees 2θ") from None
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise RefineInputError(f"excluded region ({lo:g}, {hi:g}) must have finite bounds")
        lo, hi = min(lo, hi), max(lo, hi)
        inside = (x >= lo) & (x <= hi)
        if not inside.any():
            raise RefineInputError(f"excluded region ({lo:g}, {hi:g}) holds no point of the data "
                                   f"({x[0]:g}–{x[-1]:g}° 2θ): wrong unit or wrong pattern?")
        mask &= ~inside
    if mask.sum() < 20:
        raise RefineInputError("fewer than 20 points left after the excluded regions and zero-weight points")
    return x, y, w, mask


def _po_direction(phase: str, direction: Any) -> tuple[int, int, int]:
    """A preferred-orientation direction as three integers, not all zero (one-line `RefineInputError` otherwise)."""
    try:
        values = [float(v) for v in direction]
    except (TypeError, ValueError):
        values = []
    if len(values) != 3 or not all(math.isfinite(v) and v == round(v) for v in values) or not any(values):
        raise RefineInputError(f"preferred_orientation of {phase}: {direction!r} is not a direction hkl (three "
                               "integers, not all zero)")
    return (int(values[0]), int(values[1]), int(values[2]))


def _hump_starts(x: FloatArray, y: FloatArray, n: int, min_fwhm: float) -> list[float]:
    """Start centres for n humps: maxima of a smooth lower envelope above its linear trend."""
    nb = 60
    edges = np.linspace(0, x.size, nb + 1).astype(int)
    xc = np.array([x[a:b].mean() for a, b in zip(edges[:-1], edges[1:]) if b > a])
    yc = np.array([np.percentile(y[a:b], 20) for a, b in zip(edges[:-1], edges[1:]) if b > a])
    trend = np.polyval(np.polyfit(xc, yc, 1), xc)
    rest = yc - trend
    out: list[float] = []
    for _ in range(n):
        i = int(np.argmax(rest))
        out.append(float(xc[i]))
        rest = rest - rest[i] * hump(xc, xc[i], max(min_fwhm, (x[-1] - x[0]) / 8.0))
    return out


def _instrument_bounds(names: Sequence[str], inst: "Instrument") -> tuple[FloatArray, FloatArray]:
    """Bounds of refinable instrument parameters (widths ≥ 0 except V; zero ±1°; displacement ±5 mm)."""
    lo, hi = [], []
    for n in names:
        if n == "zero":
            lo.append(inst.zero - 1.0), hi.append(inst.zero + 1.0)
        elif n == "v":
            lo.append(-np.inf), hi.append(np.inf)
        elif n == "displacement_um":
            lo.append(-5000.0), hi.append(5000.0)
        else:
            lo.append(0.0), hi.append(np.inf)
    return np.array(lo), np.array(hi)


# ---------------------------------------------------------------------------------------------- quantify
def quantify(pattern_two_theta: ArrayLike, counts: ArrayLike, phases: Sequence[Crystal], instrument: "Instrument",
             *, sigma: ArrayLike | None = None, background_order: int = 12, humps: int | Sequence[float] = 1,
             excluded: Sequence[tuple[float, float]] = (),
             preferred_orientation: Mapping[str, tuple[int, int, int]] = {},
             alpha: float = 1e-3, refine_instrument: Sequence[str] = (), fix_cell: bool = False,
             start: RefineResult | None = None, max_nfev: int = 60) -> RefineResult:
    """Whole-pattern refinement and significance-tested weight fractions of `phases` in a measured pattern.

    Refines per phase the cell (within its crystal system), crystallite size, microstrain, scale (and March r for
    the phases named in `preferred_orientation`), a Chebyshev background of `background_order`, amorphous humps
    (`humps` = how many, or their start centres in deg), and the instrument parameters named in
    `refine_instrument` (of `INSTRUMENT_PARAMETERS`; e.g. ``("zero",)``, or widths for a calibration with
    `fix_cell=True`). Phases are kept only when significant at `alpha` (`significance`). `start`: a previous
    result on the same phases to start from (warm re-fit). `sigma`: σ per point, +inf = zero weight (the point is
    left out, as `read_pattern` returns for a powder CIF's zero ``_pd_proc_ls_weight``). `max_nfev`: a cap on the sharp pass's evaluations (it stops earlier on scipy's ftol/xtol). The default 60
    keeps a cold fit of a 60,000-point pattern near a minute; on the measured β pattern it stops at the cap with the
    same answer as the converged fit (`max_nfev=1000`: 676 evaluations, ~8 min on 2 shared cores; β 100 %, Rwp
    0.136, the other phases rejected — α only by the evidence test). See the package docstring for the result.
    """
    x_all, y_all, w_all, mask = _inputs(pattern_two_theta, counts, sigma, excluded)
    unknown = [n for n in refine_instrument if n not in INSTRUMENT_PARAMETERS]
    if unknown:
        raise RefineInputError(f"unknown instrument parameter(s) {unknown}; choose from {INSTRUMENT_PARAMETERS}")
    if not phases:
        raise RefineInputError("at least one phase is needed")
    names = [p.name for p in phases]
    if len(set(names)) != len(names):
        raise RefineInputError(f"phase names must be unique, got {names}")
    bad_po = [k for k in preferred_orientation if k not in names]
    if bad_po:
        raise RefineInputError(f"preferred_orientation names unknown phase(s) {bad_po}")
    po_dirs = {k: _po_direction(k, v) for k, v in preferred_orientation.items()}
    if not 0.0 < alpha < 1.0:
        raise RefineInputError(f"alpha must be within (0, 1), got {alpha}")
    x, y, w = x_all[mask], y_all[mask], w_all[mask]
    span = float(x[-1] - x[0])
    fw_max = max_sample_fwhm(span, background_order)
    models = [PhaseModel(c, instrument.radiation, float(x[0]), float(x[-1]),
                         po_dirs.get(c.name))
              for c in phases]
    if isinstance(humps, (int, np.integer)):
        n_humps = int(humps)
        hump_centres = _hump_starts(x, y, n_humps, 2.0 * fw_max) if n_humps else []
    else:
        hump_centres = [float(v) for v in humps]
        n_humps = len(hump_centres)
    hump_lo = np.array([x[0], min(2.0 * fw_max, span / 4.0)])
    hump_hi = np.array([x[-1], span])
    ref = Refinement(x, y, w, models, instrument, background_order=background_order, n_humps=n_humps,
                     hump_bounds=(hump_lo, hump_hi) if n_humps else None,
                     phase_bounds=[m.bounds(fw_max) for m in models], refine_instrument=refine_instrument,
                     instrument_bounds=_instrument_bounds(refine_instrument, instrument) if refine_instrument else None,
                     fix_cell=fix_cell)
    theta = np.empty(ref.lower.size)
    theta[ref.inst_slice] = [getattr(instrument, n) for n in refine_instrument]
    for m, sl in zip(models, ref.phase_slices):
        theta[sl] = m.start()
    for c, sl in zip(hump_centres, ref.hump_slices):
        theta[sl] = [c, float(np.clip(span / 8.0, hump_lo[1], hump_hi[1]))]
    warm = start is not None and _apply_start(ref, theta, start, models)
    if warm:  # χ² to 1e-5 relative: the parameters then move by ≪ their s.u. (a warm start is already close)
        theta, _ = ref.fit(theta, max_nfev=max_nfev, ftol=1e-5, xtol=1e-6)
    else:
        ref.blur = COLD_BLUR
        theta, _ = ref.fit(theta, max_nfev=min(COLD_BLUR_NFEV, max_nfev), ftol=1e-4, xtol=1e-5)  # positions only
        ref.blur = 0.0
        best: tuple[float, FloatArray] | None = None
        for t0 in _po_branch_starts(ref, theta, models):
            t1, _ = ref.fit(t0, max_nfev=max_nfev)
            c2 = ref.chi2(t1)
            if best is None or c2 < best[0]:
                best = (c2, t1)
        assert best is not None
        theta = best[1]
    trusted = frozenset(i for i, m in enumerate(models) if warm and start is not None and m.name in start.phases)
    theta, tests, rejected_idx, _ = backward_elimination(ref, theta, alpha, trusted=trusted)
    return _result(ref, theta, tests, rejected_idx, x_all, y_all, w_all, mask, fw_max)


def _po_branch_starts(ref: Refinement, theta: FloatArray, models: Sequence[PhaseModel]) -> list[FloatArray]:
    """Starts of the sharp pass: θ itself, or, for phases whose March r = 1 is a stationary point
    (`PhaseModel.po_branch_starts`: cubic phases), θ with r on each side of 1 (every combination when several
    phases have one); the sharp fit is run from each and the lowest χ² kept. The whole sharp fit, not a trial of
    the phase alone: measured on a CsI [100] r = 0.6 pattern, the two branches' χ² after the blurred pass differ by
    1e-4 relative (the other phases are not yet sharp), while the sharp fits end at r = 0.6 and r = 1 with clearly
    different χ²."""
    out = [theta]
    for i, (m, sl) in enumerate(zip(models, ref.phase_slices)):
        if not m.po_branch_starts or not ref.active[i]:
            continue
        j = sl.start + m.parameter_names.index("po")
        grown = []
        for t in out:
            for r0 in m.po_branch_starts:
                t2 = t.copy()
                t2[j] = r0
                grown.append(t2)
        out = grown
    return out


def _apply_start(ref: Refinement, theta: FloatArray, start: RefineResult, models: Sequence[PhaseModel]) -> bool:
    """Copy a previous result's parameters into θ (phases by name, humps in order); phases absent there stay out."""
    ok = False
    for i, (m, sl) in enumerate(zip(models, ref.phase_slices)):
        p = start.parameters.get(m.name)
        if p is None:
            ref.active[i] = False
            continue
        ok = True
        theta[sl] = [p[n] for n in m.parameter_names]
    for sl, (_, c, fw) in zip(ref.hump_slices, start.humps):
        theta[sl] = [c, fw]
    inst = start.instrument
    for j, n in enumerate(ref.inst_names):
        theta[ref.inst_slice.start + j] = getattr(inst, n)
    theta[:] = np.clip(theta, ref.lower, ref.upper)
    if not ok:
        ref.active[:] = True
    return ok


# ---------------------------------------------------------------------------------------------- result
def _result(ref: Refinement, theta: FloatArray, tests: dict[int, PhaseTest],
            rejected_idx: dict[int, str], x_all: FloatArray, y_all: FloatArray, w_all: FloatArray,
            mask: NDArray[np.bool_], fw_max: float) -> RefineResult:
    """Assemble the RefineResult: weight fractions with s.u., curves on the full axis, warnings."""
    a, lin = ref.evaluate(theta)
    n = ref.y_w.size
    free = ref.free_mask()
    # JᵀJ of the projected Jacobian at the final θ (one derivative pass; `Refinement.normal_equations`)
    jtj = ref.normal_equations(theta, a, lin, free)[0] if free.any() else None
    n_par = int(free.sum() + lin.passive.sum())
    dof = max(n - n_par, 1)
    chi2 = lin.chi2
    s2 = chi2 / dof
    r = ref.y_w - lin.model_w
    rho = lag1_autocorrelation(r)
    bl = berar_lelann_factor(rho)
    n_eff = max(n / autocorrelation_time(r), n_par + 2.0)  # as in the significance tests
    cov_lin = ref.linear_covariance(a, lin, s2)
    cov_nl = nonlinear_covariance(None, s2, jtj=jtj)
    nl_index = {int(j): c for c, j in enumerate(np.flatnonzero(free))}
    full_axis = bool(mask.all())
    inst = ref.instrument(theta)
    nph = len(ref.phases)
    zmv = np.array([m.zmv(theta[sl]) for m, sl in zip(ref.phases, ref.phase_slices)])
    scales = lin.coef[:nph].copy()
    mass = scales * zmv
    total = float(mass.sum())
    wf = mass / total if total > 0 else np.zeros(nph)
    # s.u. of W from the scales' covariance: ∂W_i/∂s_j = zmv_j (δ_ij T − mass_i)/T²
    grad = np.zeros((nph, nph))
    if total > 0:
        for i in range(nph):
            grad[i] = -mass[i] * zmv / total ** 2
            grad[i, i] += zmv[i] / total
    cs = cov_lin[:nph, :nph]
    wf_su = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", grad, cs, grad), 0.0)) * bl

    def su(j: int) -> float:
        if cov_nl is None or j not in nl_index:
            return 0.0
        c = nl_index[j]
        return float(math.sqrt(max(cov_nl[c, c], 0.0))) * bl

    phases: dict[str, PhaseResult] = {}
    rejected: dict[str, str] = {}
    params: dict[str, dict[str, float]] = {}
    curves: dict[str, FloatArray] = {}
    reflections: dict[str, tuple[FloatArray, NDArray[np.int64]]] = {}
    for i, (m, sl) in enumerate(zip(ref.phases, ref.phase_slices)):
        block = theta[sl]
        centres, _, _, _, refl = m.peaks(block, inst)
        primary = np.zeros(centres.size, dtype=bool)
        # the first occurrence of each reflection index is the primary line (lines are flattened line-major)
        _, first = np.unique(refl, return_index=True)
        primary[first] = True
        inside = primary & (centres >= x_all[0]) & (centres <= x_all[-1])
        reflections[m.name] = (centres[inside], m.hkl[refl[inside]].astype(np.int64))
        if not ref.active[i]:
            rejected[m.name] = rejected_idx.get(i, "not in the model")
            continue
        ncell = len(m.cell_names)
        cell = m.cell(block)
        cell_su = [0.0] * 6
        for j, name in enumerate(m.cell_names):
            cell_su[("a", "b", "c", "alpha", "beta", "gamma").index(name)] = su(sl.start + j)
        sys_ = m.system
        if sys_ == "cubic":
            cell_su[1] = cell_su[2] = cell_su[0]
        elif sys_ in ("tetragonal", "hexagonal", "trigonal"):
            cell_su[1] = cell_su[0]
        inv_size = float(block[ncell])
        inv_su = su(sl.start + ncell)
        size = 1.0 / inv_size if inv_size > 0 else math.inf
        size_su = inv_su / inv_size ** 2 if inv_size > 0 else math.inf
        t = tests.get(i)
        po = float(block[ncell + 2]) if m.po_direction is not None else None
        phases[m.name] = PhaseResult(float(wf[i]), float(wf_su[i]), float(scales[i]), cell, tuple(cell_su), size,
                                     size_su, float(block[ncell + 1]), su(sl.start + ncell + 1), po, True,
                                     t.f_statistic if t else math.inf, t.p_value if t else 0.0)
        params[m.name] = {nm: float(v) for nm, v in zip(m.parameter_names, block)}
        # without excluded regions the fitted column is the curve (the render on the same grid, × √w)
        column = a[:, i] / ref.sqrt_w if full_axis else m.render(x_all, block, inst)
        curves[m.name] = scales[i] * column
    bg_coef = lin.coef[nph + ref.n_humps:]
    from .model import chebyshev_basis

    if full_axis:
        background = (ref.bg_w @ bg_coef) / ref.sqrt_w
    else:
        background = chebyshev_basis(x_all, ref.background_order, float(ref.x[0]), float(ref.x[-1])) @ bg_coef
    hump_list: list[tuple[float, float, float]] = []
    for k, sl in enumerate(ref.hump_slices):
        amp = float(lin.coef[nph + k])
        c, fw = (float(v) for v in theta[sl])
        hump_list.append((amp, c, fw))
        background = background + amp * hump(x_all, c, fw)
    curve = background + sum(curves.values(), np.zeros_like(x_all))
    yw2 = float(np.sum(w_all[mask] * y_all[mask] ** 2))
    warnings = _instrument_warnings(ref, theta, lin, n_eff, n_par)
    return RefineResult(
        phases=phases, rejected=rejected, rwp=math.sqrt(chi2 / yw2), rexp=math.sqrt(dof / yw2), gof=s2, chi2=chi2,
        n_points=n, n_parameters=n_par, two_theta=x_all, counts=y_all, curve=curve, background=background,
        phase_curves=curves, instrument=inst, warnings=warnings, reflections=reflections, humps=hump_list,
        durbin_watson=2.0 * (1.0 - rho), n_effective=n_eff, parameters=params, n_evaluations=ref.n_evaluations)


def _instrument_warnings(ref: Refinement, theta: FloatArray, lin: Any, n_eff: float, n_par: int) -> list[str]:
    """Warnings when the data are clearly sharper or broader than the model allows (instead of phases)."""
    from scipy.stats import f as f_dist

    out: list[str] = []
    pinned_low, at_high = [], []
    for i, (m, sl) in enumerate(zip(ref.phases, ref.phase_slices)):
        if not ref.active[i]:
            continue
        ncell = len(m.cell_names)
        lo_i, hi_i = ref.upper[sl.start + ncell], ref.upper[sl.start + ncell + 1]
        inv_size, strain = theta[sl.start + ncell], theta[sl.start + ncell + 1]
        if inv_size <= 1e-3 * lo_i and strain <= 1e-3 * hi_i:
            pinned_low.append(m.name)
        if inv_size >= 0.99 * lo_i or strain >= 0.99 * hi_i:
            at_high.append(m.name)
    if pinned_low:
        inst0 = ref.instrument(theta)
        best_chi2, best_f = lin.chi2, 1.0
        saved = ref.instrument0, ref.inst_names
        for f in (0.25, 0.5, SHARPER_SCALE):
            narrow = inst0.replace(u=inst0.u * f * f, v=inst0.v * f * f, w=inst0.w * f * f, x=inst0.x * f,
                                   y=inst0.y * f)
            ref.instrument0, ref.inst_names = narrow, ()
            ref._cache.clear()  # the column cache is keyed on θ, not on the base instrument
            try:
                c2 = ref.chi2(theta)
            finally:
                ref.instrument0, ref.inst_names = saved
                ref._cache.clear()
            if c2 < best_chi2:
                best_chi2, best_f = c2, f
        ref._cache.clear()
        dof = max(n_eff - n_par, 1.0)
        if best_f <= SHARPER_SCALE and best_chi2 < lin.chi2:
            fstat = (lin.chi2 - best_chi2) / (best_chi2 / dof)
            if f_dist.sf(fstat, 1, dof) < 1e-3:
                out.append(f"peaks are sharper than the instrument allows (sample broadening of {pinned_low} at zero; "
                           f"instrument widths × {best_f:g} fit better, χ² {lin.chi2:.4g} → {best_chi2:.4g}): "
                           "wrong instrument?")
    if at_high:
        out.append(f"peaks are broader than the model allows (size or strain of {at_high} at the sample-width bound "
                   f"of the background resolution, ≤ {MAX_SAMPLE_FWHM_CAP:g}°): wrong instrument, or a nanocrystalline "
                   "or amorphous component the humps should take?")
    return out


def _reflection_residuals(res: RefineResult, name: str) -> dict[str, FloatArray]:
    """See `RefineResult.reflection_residuals`."""
    if name not in res.reflections:
        raise KeyError(f"unknown phase {name!r}")
    tt, hkl = res.reflections[name]
    n = tt.size
    out = {"two_theta": tt, "hkl": hkl, "intensity_ratio": np.full(n, np.nan), "position": np.full(n, np.nan),
           "width": np.full(n, np.nan)}
    if name not in res.phases:
        return out
    x = res.two_theta
    resid = res.counts - res.curve
    phase_curve = res.phase_curves[name]
    fw = np.maximum(res.instrument.fwhm(tt), 1e-4) if hasattr(res.instrument, "fwhm") else np.full(n, 0.01)
    for k in range(n):
        lo, hi = np.searchsorted(x, [tt[k] - fw[k], tt[k] + fw[k]])
        if hi - lo < 3:
            continue
        seg = slice(lo, hi)
        pc = phase_curve[seg]
        tot = float(pc.sum())
        if tot <= 0:
            continue
        out["intensity_ratio"][k] = float(resid[seg].sum()) / tot
        dx = np.gradient(pc, x[seg])
        den = float(dx @ dx)
        if den > 0:
            out["position"][k] = -float(resid[seg] @ dx) / den
        u = (x[seg] - tt[k]) / fw[k]
        dw = -(pc + u * dx * fw[k]) / fw[k]  # ∂/∂FWHM of a peak profile p((x−c)/w)/w
        den = float(dw @ dw)
        if den > 0:
            out["width"][k] = float(resid[seg] @ dw) / den
    return out
