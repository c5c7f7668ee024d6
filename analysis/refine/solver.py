"""Variable-projection least squares for the whole-pattern model of `hotstage.analysis.refine.model`.

Linear parameters (phase scales ≥ 0, hump amplitudes ≥ 0, Chebyshev background coefficients free) are solved
exactly for every set of nonlinear parameters by bounded least squares on the normal equations
(`hotstage.analysis.quant.linear.bounded_lsq`, Lawson–Hanson active set). The nonlinear parameters (cells, sizes,
microstrains, March r, hump centres/widths, named instrument parameters) are refined by scipy's trust-region
reflective Gauss–Newton/Levenberg–Marquardt (`scipy.optimize.least_squares`, method "trf", bounds) on the
projected residual r(θ) = W^½ (y − A(θ) c(θ)), with Kaufman's variable-projection Jacobian
J = −P⊥ W^½ (∂A/∂θ) c (Kaufman, BIT 15, 49 (1975); Golub & Pereyra, Inverse Problems 19, R1 (2003)), P⊥ the
projector onto the orthogonal complement of the free (not at a bound) weighted columns. ∂A/∂θ of a phase column
is analytic in the profile (`hotstage.analysis.profiles.render_peak_derivatives`: ∂/∂centre, ∂/∂FWHM, ∂/∂η,
∂/∂area per peak) chained with forward differences of each line's centre, FWHM, η and area (no rendering), so all
of a phase's Jacobian columns, its own parameters' and the instrument's, cost about two renders; a phase parameter
only changes its own phase's column.

Cost on N = 60,000 points: the solver is handed the problem compressed to p + 1 rows (`compressed_jacobian`, built
from JᵀJ and Jᵀr, which `Refinement.normal_equations` forms from DᵀD, DᵀA and Dᵀr without the N × p projection), so
trust-region iterations need no N × p SVD, and the steps are those of the full problem (same χ² path to rounding:
the measured β-CsPbI3 refinement reproduces every stage's χ²). The background block of the normal equations is
formed once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import least_squares

from hotstage.analysis.quant.linear import bounded_lsq, covariance

from .model import PhaseModel, chebyshev_basis, hump

if TYPE_CHECKING:
    from hotstage.analysis.instrument import Instrument

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

_REL_STEP = {"cell": 2e-6, "width": 1e-3, "po": 1e-4, "hump": 1e-4}


@dataclass
class LinearSolution:
    """Linear coefficients at one θ: coefficients (phases, humps, background), passive set, χ², weighted model."""

    coef: FloatArray
    passive: BoolArray
    chi2: float
    model_w: FloatArray
    gram: FloatArray | None = None
    """AᵀA of the weighted design (inactive phases' rows/columns pinned to the identity)."""
    rhs: FloatArray | None = None
    """Aᵀy_w (inactive phases' entries −1, with the pinned Gram rows: their coefficients solve to 0)."""


class Refinement:
    """The fitted problem on the (non-excluded) points: full parameter vector θ, which phases are in the model, and
    which entries are free. Columns are cached per component so an unchanged phase is never re-rendered."""

    def __init__(self, x: FloatArray, y: FloatArray, weights: FloatArray, phases: Sequence[PhaseModel],
                 instrument: "Instrument", *, background_order: int, n_humps: int,
                 hump_bounds: tuple[FloatArray, FloatArray] | None,
                 phase_bounds: Sequence[tuple[FloatArray, FloatArray]],
                 refine_instrument: Sequence[str] = (), instrument_bounds: tuple[FloatArray, FloatArray] | None = None,
                 fix_cell: bool = False) -> None:
        """x sorted (deg), y counts, weights 1/σ²; bounds per phase block and per hump block (centre, fwhm)."""
        self.x = np.ascontiguousarray(x, dtype=float)
        self.y = np.ascontiguousarray(y, dtype=float)
        self.sqrt_w = np.sqrt(np.asarray(weights, dtype=float))
        self.y_w = self.y * self.sqrt_w
        self.yy = float(self.y_w @ self.y_w)
        self.phases = list(phases)
        self.instrument0 = instrument
        self.inst_names = tuple(refine_instrument)
        self.n_humps = int(n_humps)
        self.background_order = int(background_order)
        bg = _chebyshev_cached(self.x, self.background_order)
        self.bg_w = np.asfortranarray(bg * self.sqrt_w[:, None])
        # the background block of the normal equations never changes: formed once (60,000 × 13 columns)
        self.bg_gram = self.bg_w.T @ self.bg_w
        self.bg_y = self.bg_w.T @ self.y_w
        # parameter layout
        sizes = [len(self.inst_names)] + [len(p.parameter_names) for p in self.phases] + [2] * self.n_humps
        offs = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self.inst_slice = slice(offs[0], offs[1])
        self.phase_slices = [slice(offs[1 + i], offs[2 + i]) for i in range(len(self.phases))]
        self.hump_slices = [slice(offs[1 + len(self.phases) + i], offs[2 + len(self.phases) + i])
                            for i in range(self.n_humps)]
        n = int(offs[-1])
        self.lower = np.full(n, -np.inf)
        self.upper = np.full(n, np.inf)
        if self.inst_names:
            assert instrument_bounds is not None
            self.lower[self.inst_slice], self.upper[self.inst_slice] = instrument_bounds
        for sl, (lo, hi) in zip(self.phase_slices, phase_bounds):
            self.lower[sl], self.upper[sl] = lo, hi
        if self.n_humps:
            assert hump_bounds is not None
            for sl in self.hump_slices:
                self.lower[sl], self.upper[sl] = hump_bounds[0], hump_bounds[1]
        self.kind = np.empty(n, dtype=object)
        self.kind[self.inst_slice] = "inst"
        for p, sl in zip(self.phases, self.phase_slices):
            for j, name in enumerate(p.parameter_names):
                self.kind[sl.start + j] = "cell" if j < len(p.cell_names) else ("po" if name == "po" else "width")
        for sl in self.hump_slices:
            self.kind[sl] = "hump"
        self.active = np.ones(len(self.phases), dtype=bool)
        self.fixed = np.zeros(n, dtype=bool)
        if fix_cell:
            for p, sl in zip(self.phases, self.phase_slices):
                self.fixed[sl.start:sl.start + len(p.cell_names)] = True
        self.blur = 0.0
        self._cache: dict[int, tuple[bytes, FloatArray]] = {}
        self._warm: BoolArray | None = None
        self._normal: tuple[tuple, tuple[FloatArray, FloatArray]] | None = None
        self._last: tuple[tuple, tuple[FloatArray, LinearSolution]] | None = None
        self.n_renders = 0
        self.n_evaluations = 0

    # ------------------------------------------------------------------ helpers
    @property
    def n_linear(self) -> int:
        """Number of linear unknowns: phases + humps + background coefficients."""
        return len(self.phases) + self.n_humps + self.bg_w.shape[1]

    def free_mask(self) -> BoolArray:
        """Nonlinear entries the optimiser moves: not fixed, not in an inactive phase's block."""
        m = ~self.fixed.copy()
        for i, sl in enumerate(self.phase_slices):
            if not self.active[i]:
                m[sl] = False
        return m

    def instrument(self, theta: FloatArray) -> "Instrument":
        """The instrument with the refined parameters of θ."""
        if not self.inst_names:
            return self.instrument0
        return self.instrument0.replace(**{n: float(v) for n, v in zip(self.inst_names, theta[self.inst_slice])})

    def _column(self, k: int, theta: FloatArray, inst: "Instrument") -> FloatArray:
        """Weighted column of component k (phases first, then humps) at θ, cached on its parameter bytes."""
        if k < len(self.phases):
            block = theta[self.phase_slices[k]]
            key = block.tobytes() + theta[self.inst_slice].tobytes() + np.float64(self.blur).tobytes()
        else:
            block = theta[self.hump_slices[k - len(self.phases)]]
            key = block.tobytes()
        hit = self._cache.get(k)
        if hit is not None and hit[0] == key:
            return hit[1]
        col = self._render(k, block, inst)
        self._cache[k] = (key, col)
        return col

    def _render(self, k: int, block: FloatArray, inst: "Instrument") -> FloatArray:
        """Weighted column of component k for parameter block `block` (not cached)."""
        self.n_renders += 1
        if k < len(self.phases):
            col = self.phases[k].render(self.x, block, inst, self.blur)
        else:
            col = hump(self.x, float(block[0]), float(block[1]))
        return col * self.sqrt_w

    def design(self, theta: FloatArray) -> FloatArray:
        """Weighted design matrix (column-major): phase columns (zero for inactive phases), humps, background."""
        inst = self.instrument(theta)
        ncomp = len(self.phases) + self.n_humps
        a = np.empty((self.x.size, self.n_linear), order="F")
        for k in range(ncomp):
            if k < len(self.phases) and not self.active[k]:
                a[:, k] = 0.0
            else:
                a[:, k] = self._column(k, theta, inst)
        a[:, ncomp:] = self.bg_w
        return a

    def solve_linear(self, a: FloatArray) -> LinearSolution:
        """Bounded linear least squares for the coefficients (≥ 0 for phases and humps). The normal equations'
        background block is precomputed; only the phase and hump rows are formed here."""
        ncomp = len(self.phases) + self.n_humps
        g = np.empty((self.n_linear, self.n_linear))
        h = np.empty(self.n_linear)
        comp = a[:, :ncomp]
        g[:ncomp, :] = comp.T @ a
        g[ncomp:, :ncomp] = g[:ncomp, ncomp:].T
        g[ncomp:, ncomp:] = self.bg_gram
        h[:ncomp] = comp.T @ self.y_w
        h[ncomp:] = self.bg_y
        nonneg = np.zeros(self.n_linear, dtype=bool)
        nonneg[:ncomp] = True
        idle = np.zeros(self.n_linear, dtype=bool)
        idle[:len(self.phases)] = ~self.active
        # an inactive phase's zero column: pin it at zero with a unit diagonal (it stays out of the passive set)
        g[idle, :] = 0.0
        g[:, idle] = 0.0
        g[idle, idle] = 1.0
        h[idle] = -1.0
        warm = self._warm if self._warm is not None and self._warm.size == self.n_linear else None
        coef, passive = bounded_lsq(g, h, nonneg, warm)
        coef[idle] = 0.0
        passive = passive & ~idle
        self._warm = passive.copy()
        model_w = a @ coef
        r = self.y_w - model_w
        return LinearSolution(coef, passive, float(r @ r), model_w, g, h)

    def chi2_without(self, lin: LinearSolution, i: int) -> float:
        """χ² with component i's column removed and the linear parameters re-solved (bounds as always), from the
        normal equations of `lin` alone: yᵀy − 2hᵀc + cᵀGc, no N-point work (the same number as re-evaluating with
        the phase inactive, to rounding)."""
        return self._without(lin, i)[1]

    def coef_without(self, lin: LinearSolution, i: int) -> FloatArray:
        """The linear coefficients re-solved with component i's column removed (`chi2_without`)."""
        return self._without(lin, i)[0]

    def _without(self, lin: LinearSolution, i: int) -> tuple[FloatArray, float]:
        """(coefficients, χ²) without component i (`chi2_without`)."""
        assert lin.gram is not None and lin.rhs is not None
        ncomp = len(self.phases) + self.n_humps
        g = lin.gram.copy()
        h = lin.rhs.copy()
        g[i, :] = 0.0
        g[:, i] = 0.0
        g[i, i] = 1.0
        h[i] = -1.0
        nonneg = np.zeros(self.n_linear, dtype=bool)
        nonneg[:ncomp] = True
        warm = lin.passive.copy()
        warm[i] = False
        coef, _ = bounded_lsq(g, h, nonneg, warm)
        coef[i] = 0.0
        return coef, max(self.yy - 2.0 * float(h @ coef) + float(coef @ (g @ coef)), 0.0)

    # ------------------------------------------------------------------ residual and Jacobian
    def evaluate(self, theta: FloatArray) -> tuple[FloatArray, LinearSolution]:
        """Weighted design matrix and linear solution at θ (the last one kept: elimination and the result assembly
        ask again for the solver's final point)."""
        key = (theta.tobytes(), self.active.tobytes(), float(self.blur), self.instrument0,
               tuple(m.decoy_factor for m in self.phases))
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        self.n_evaluations += 1
        a = self.design(theta)
        out = (a, self.solve_linear(a))
        self._last = (key, out)
        return out

    def _step(self, j: int, value: float) -> float:
        """Forward-difference step for parameter j, pointing into the bounds."""
        kind = self.kind[j]
        if kind == "inst":
            h = 1e-4 * max(abs(value), 1e-2)
        elif kind == "width":
            h = 1e-3 * max(self.upper[j] - self.lower[j], 1e-12)
        else:
            h = _REL_STEP[kind] * max(abs(value), 1e-3)
        if value + h > self.upper[j]:
            h = -h
        return h

    def jacobian(self, theta: FloatArray, a: FloatArray, lin: LinearSolution, free: BoolArray) -> FloatArray:
        """Kaufman variable-projection Jacobian of r(θ) over the free entries, −P⊥·∂(A c)/∂θ (`derivatives`)."""
        d = self.derivatives(theta, a, lin, free)
        pas = np.flatnonzero(lin.passive)
        if pas.size:
            # P⊥D = D − A_p G_p⁻¹ A_pᵀD on the Jacobi-scaled Gram matrix (m×m): N·m·n work instead of a QR's N·m²;
            # G_p from the linear solve, A_pᵀD as AᵀD (no copy of the passive columns)
            coef = self._gram_solve(lin, a, pas, (a.T @ d)[pas])
            full = np.zeros((a.shape[1], d.shape[1]))
            full[pas] = coef
            d -= a @ full
        return -d

    def _gram_solve(self, lin: LinearSolution, a: FloatArray, pas: NDArray[np.intp], rhs: FloatArray) -> FloatArray:
        """G_p⁻¹·rhs over the passive set, Jacobi-scaled (least squares if singular)."""
        g = lin.gram[np.ix_(pas, pas)] if lin.gram is not None else a[:, pas].T @ a[:, pas]
        sc = 1.0 / np.sqrt(np.maximum(np.diag(g), 1e-300))
        gs = g * np.outer(sc, sc)
        try:
            out = np.linalg.solve(gs, rhs * sc[:, None])
        except np.linalg.LinAlgError:
            out = np.linalg.lstsq(gs, rhs * sc[:, None], rcond=None)[0]
        return out * sc[:, None]

    def normal_equations(self, theta: FloatArray, a: FloatArray, lin: LinearSolution, free: BoolArray) \
            -> tuple[FloatArray, FloatArray]:
        """(JᵀJ, Jᵀr) of the projected Jacobian J = −P⊥D without forming P⊥D: JᵀJ = DᵀD − (DᵀA_p)G_p⁻¹(A_pᵀD) and
        Jᵀr = −DᵀP⊥r (small matrices only; the N × n products are DᵀD, DᵀA and Dᵀr). The last result is kept: the
        solver's final Jacobian is the one the covariance needs when nothing changed since."""
        key = (theta.tobytes(), free.tobytes(), self.active.tobytes(), lin.coef.tobytes(), float(self.blur),
               self.instrument0, tuple(m.decoy_factor for m in self.phases))
        if self._normal is not None and self._normal[0] == key:
            return self._normal[1]
        out = self._normal_equations(theta, a, lin, free)
        self._normal = (key, out)
        return out

    def _normal_equations(self, theta: FloatArray, a: FloatArray, lin: LinearSolution, free: BoolArray) \
            -> tuple[FloatArray, FloatArray]:
        """`normal_equations`, not cached."""
        d = self.derivatives(theta, a, lin, free)
        r = self.y_w - lin.model_w
        jtj = d.T @ d
        dr = d.T @ r
        pas = np.flatnonzero(lin.passive)
        if pas.size:
            x = (a.T @ d)[pas]  # A_pᵀD
            ar = (r @ a)[pas]  # A_pᵀr (≈ 0 at the linear optimum)
            sol = self._gram_solve(lin, a, pas, np.column_stack([x, ar]))
            jtj = jtj - x.T @ sol[:, :-1]
            dr = dr - x.T @ sol[:, -1]
        return 0.5 * (jtj + jtj.T), -dr

    def derivatives(self, theta: FloatArray, a: FloatArray, lin: LinearSolution, free: BoolArray) -> FloatArray:
        """D = ∂(A c)/∂θ (weighted) over the free entries at fixed linear coefficients c. Phase columns: per-line
        forward differences of centre, FWHM, η and area with analytic profile derivatives, all of a phase's columns
        (its own parameters and the instrument's) in one pass (`PhaseModel.render_derivatives`); hump columns: a
        forward difference of the hump."""
        inst = self.instrument(theta)
        idx = np.flatnonzero(free)
        d = np.zeros((self.x.size, idx.size), order="F")
        nph = len(self.phases)
        steps = {int(j): self._step(int(j), float(theta[j])) for j in idx}
        inst_cols = []
        fcj_cols = []  # S/L, H/L only move the FCJ kernel, which render_derivatives holds: difference the render
        for col, j in enumerate(idx):
            if self.kind[j] == "inst":
                t2 = theta.copy()
                t2[j] += steps[int(j)]
                fcj = self.inst_names[int(j) - self.inst_slice.start] in ("s_l", "h_l")
                (fcj_cols if fcj else inst_cols).append((col, self.instrument(t2), steps[int(j)]))
        for k, (m, sl) in enumerate(zip(self.phases, self.phase_slices)):
            if not self.active[k] or lin.coef[k] == 0.0:
                continue
            block = theta[sl]
            cols: list[int] = []
            perturbed: list[tuple[FloatArray, "Instrument", float]] = []
            for col, j in enumerate(idx):
                if sl.start <= j < sl.stop:
                    b2 = block.copy()
                    b2[j - sl.start] += steps[int(j)]
                    cols.append(col)
                    perturbed.append((b2, inst, steps[int(j)]))
            for col, inst2, h in inst_cols:
                cols.append(col)
                perturbed.append((block, inst2, h))
            if cols:
                g = m.render_derivatives(self.x, block, inst, perturbed, self.blur)
                wk = lin.coef[k] * self.sqrt_w
                for i, col in enumerate(cols):  # column by column into the column-major D (no fancy-index copy)
                    d[:, col] += g[:, i] * wk
            for col, inst2, h in fcj_cols:
                d[:, col] += lin.coef[k] * (self._render(k, block, inst2) - a[:, k]) / h
        for col, j in enumerate(idx):
            if self.kind[j] != "hump":
                continue
            k = self._owner(int(j))
            if lin.coef[k] == 0.0:
                continue
            h = steps[int(j)]
            t2 = theta.copy()
            t2[j] += h
            new = self._render(k, t2[self.hump_slices[k - nph]], inst)
            d[:, col] = lin.coef[k] * (new - a[:, k]) / h
        return d

    def _owner(self, j: int) -> int:
        """Component index owning parameter j."""
        for k, sl in enumerate(self.phase_slices):
            if sl.start <= j < sl.stop:
                return k
        for i, sl in enumerate(self.hump_slices):
            if sl.start <= j < sl.stop:
                return len(self.phases) + i
        raise IndexError(j)

    # ------------------------------------------------------------------ fit
    def fit(self, theta0: FloatArray, *, max_nfev: int = 60, ftol: float = 1e-7, xtol: float = 1e-8,
            only: int | None = None) -> tuple[FloatArray, None]:
        """Refine the free nonlinear parameters from θ0 (`only`: just phase `only`'s block, the rest held) by
        scipy's trust-region reflective solver on the compressed problem (`compressed_jacobian`: the same steps as
        on all N points, p + 1 rows instead of N); returns (θ, None) (the covariance is formed from
        `normal_equations` at the final θ)."""
        theta = np.clip(np.asarray(theta0, dtype=float).copy(), self.lower, self.upper)
        free = self.free_mask()
        if only is not None:
            keep = np.zeros_like(free)
            keep[self.phase_slices[only]] = True
            free &= keep
        if not free.any():
            return theta, None
        idx = np.flatnonzero(free)
        lo, hi = self.lower[idx], self.upper[idx]
        # least_squares wants strictly feasible starts when a bound is finite: nudge onto the inside
        span = np.where(np.isfinite(hi - lo), hi - lo, 1.0)
        z0 = np.clip(theta[idx], lo + 1e-9 * span, hi - 1e-9 * span)
        state: dict[str, tuple] = {}

        def full(z: FloatArray) -> FloatArray:
            t = theta.copy()
            t[idx] = z
            return t

        def at(z: FloatArray) -> tuple[FloatArray, LinearSolution]:
            key = z.tobytes()
            hit = state.get("last")
            if hit is not None and hit[0] == key:
                return hit[1], hit[2]
            a, lin = self.evaluate(full(z))
            state["last"] = (key, a, lin)
            return a, lin

        def fun(z: FloatArray) -> FloatArray:
            _, lin = at(z)
            out = np.zeros(idx.size + 1)
            out[-1] = math.sqrt(max(lin.chi2, 0.0))
            return out

        def jac(z: FloatArray) -> FloatArray:
            a, lin = at(z)
            jtj, jtr = self.normal_equations(full(z), a, lin, free)
            return compressed_jacobian(jtj, jtr, math.sqrt(max(lin.chi2, 0.0)))

        res = least_squares(fun, z0, jac=jac, bounds=(lo, hi), method="trf", x_scale="jac", ftol=ftol,
                            xtol=xtol, gtol=1e-10, max_nfev=max_nfev)
        return full(res.x), None

    def chi2(self, theta: FloatArray) -> float:
        """Weighted χ² at θ (linear parameters re-solved)."""
        return self.evaluate(theta)[1].chi2

    def linear_covariance(self, a: FloatArray, lin: LinearSolution, sigma2: float) -> FloatArray:
        """Covariance of the linear coefficients at fixed nonlinear parameters (σ²·G⁻¹ over the passive set)."""
        g = lin.gram if lin.gram is not None else a.T @ a  # inactive phases' pinned rows are outside the passive set
        return covariance(np.ascontiguousarray(g), lin.passive, sigma2)


_BASIS_CACHE: list[tuple[bytes, int, FloatArray]] = []


def _chebyshev_cached(x: FloatArray, order: int) -> FloatArray:
    """`chebyshev_basis` over x's own range, the last one kept (a sequence of patterns on one axis reuses it)."""
    key = x.tobytes()
    for k, o, basis in _BASIS_CACHE:
        if o == order and k == key:
            return basis
    basis = chebyshev_basis(x, order, float(x[0]), float(x[-1]))
    basis.flags.writeable = False
    _BASIS_CACHE[:] = [(key, order, basis)]
    return basis


def compressed_jacobian(jtj: FloatArray, jtr: FloatArray, r_norm: float) -> FloatArray:
    """A (p + 1) × p Jacobian Jc for the residual rc = (0, …, 0, ‖r‖) with JcᵀJc = JᵀJ and Jcᵀrc = Jᵀr: the pair
    (rc, Jc) is an orthogonal image of (r, J) restricted to span(r, J), so a least-squares solver that sees only inner
    products of r and J (scipy's trust-region reflective: SVD of J, Uᵀr, column norms, Jᵀr) takes exactly the steps
    it would take on the N-point problem, without an N × p SVD per iteration. Last row Jᵀr/‖r‖; the first p rows
    B with BᵀB = Jᵀ(I − r rᵀ/‖r‖²)J (positive semi-definite), from a Jacobi-scaled eigendecomposition."""
    p = jtr.size
    out = np.zeros((p + 1, p))
    if r_norm <= 0.0:
        w, v = np.linalg.eigh(jtj)
        out[:p] = np.sqrt(np.maximum(w, 0.0))[:, None] * v.T
        return out
    last = jtr / r_norm
    d = np.sqrt(np.maximum(np.diag(jtj), 0.0))
    inv = np.where(d > 0, 1.0 / np.where(d > 0, d, 1.0), 0.0)
    m = jtj * np.outer(inv, inv) - np.outer(last * inv, last * inv)
    w, v = np.linalg.eigh(0.5 * (m + m.T))
    out[:p] = (np.sqrt(np.maximum(w, 0.0))[:, None] * v.T) * d[None, :]
    out[p] = last
    return out


def nonlinear_covariance(jac: FloatArray | None, sigma2: float, *, jtj: FloatArray | None = None) \
        -> FloatArray | None:
    """σ²·(JᵀJ)⁻¹ of the projected Jacobian (pseudo-inverse when singular), from `jac` or directly from `jtj`; None
    without either."""
    if jtj is None:
        if jac is None or jac.size == 0:
            return None
        jtj = jac.T @ jac
    if jtj.size == 0:
        return None
    d = np.sqrt(np.maximum(np.diag(jtj), 1e-300))
    inv = np.linalg.pinv(jtj / np.outer(d, d)) / np.outer(d, d)
    return inv * sigma2


def lag1_autocorrelation(r: FloatArray) -> float:
    """ρ = Σ r_i r_{i−1} / Σ r_i² of weighted residuals (Durbin–Watson d ≈ 2(1 − ρ))."""
    rr = float(r @ r)
    if rr <= 0.0 or r.size < 3:
        return 0.0
    return float(r[1:] @ r[:-1]) / rr


def autocorrelation_time(r: FloatArray) -> float:
    """Integrated autocorrelation time τ = 1 + 2 Σ_k ρ_k of the residuals, summed over the initial positive sequence
    (lags before the first ρ_k ≤ 0; Geyer, Statist. Sci. 7, 473 (1992)); ≥ 1. For an AR(1) sequence it equals
    (1 + ρ)/(1 − ρ), the Bérar–Lelann factor; systematic misfit broader than a step makes it larger."""
    n = r.size
    if n < 3:
        return 1.0
    rc = r - r.mean()
    f = np.fft.rfft(rc, 2 * n)
    ac = np.fft.irfft(f * np.conj(f))[:n]
    if ac[0] <= 0:
        return 1.0
    ac = ac / ac[0]
    neg = np.flatnonzero(ac[1:] <= 0.0)
    stop = int(neg[0]) + 1 if neg.size else n
    return max(1.0 + 2.0 * float(ac[1:stop].sum()), 1.0)


def effective_points(n: int, rho: float, n_params: int) -> float:
    """Number of effectively independent points of n serially correlated residuals: n·(1 − ρ)/(1 + ρ) for ρ > 0
    (AR(1) variance inflation; Bérar & Lelann, J. Appl. Cryst. 24, 1 (1991)), at least n_params + 2."""
    rho = min(max(rho, 0.0), 0.9999)
    return max(n * (1.0 - rho) / (1.0 + rho), n_params + 2.0)


def berar_lelann_factor(rho: float) -> float:
    """Factor on standard uncertainties for serially correlated residuals, √((1 + ρ)/(1 − ρ)) (≥ 1)."""
    rho = min(max(rho, 0.0), 0.9999)
    return math.sqrt((1.0 + rho) / (1.0 - rho))
