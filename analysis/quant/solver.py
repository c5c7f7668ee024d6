"""The live quantifier's solver: Gauss–Newton / variable projection on a `PatternModel`, and the cold search.

Refinement (`Solver.refine`): linear parameters (background, halo amplitudes ≥ 0, scales ≥ 0) by bounded least
squares for fixed θ (variable projection); θ by Gauss–Newton steps of the Kaufman approximation — one joint
linearised solve over [linear columns | s·∂pattern/∂θ], θ-part taken, linear part re-projected, with step halving
when χ² does not fall, a trust limit per parameter kind and projected steps for parameters on a bound. Converged
when every shift is below `tolerance` × its s.u. (the Rietveld shift/esd test); warm fits test the shift the next
iteration would make with the step's own normal matrix (a chord step, `_chord_final`) instead of running it.
Standard uncertainties: inverse joint normal matrix × χ²/(N − P) (Prince, Mathematical Techniques in
Crystallography, §6). Only phases significant at `min_significance` s.u. refine their profile (`nonlinear_set`).

Cold search (`cold_search`, `forward_select`): forward selection from background + halos — each round scans every
absent phase's strain over ±`strain_search` at half-FWHM steps (rank-one Gram updates, `quant.linear`), adds the
one lowering χ² most if by ≥ 2·min_significance², scans its width ×¼ … ×4 and refines before the next round.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from hotstage.analysis.quant.config import QuantConfig
from hotstage.analysis.quant.gram import Linear, NormalEquations, Params, Step
from hotstage.analysis.quant.linear import bounded_lsq, chi2_from_gram, covariance, replacement_chi2
from hotstage.analysis.quant.model import FloatArray, PatternModel

SHIFT_TOLERANCE: float = 0.2
"""Cold fits: converged when every nonlinear shift is below this fraction of its standard uncertainty."""
WARM_SHIFT_TOLERANCE: float = 0.5
"""Warm fits: the same test, looser — a remaining shift of half an s.u. costs less than its own noise and is
picked up by the next pattern's fit (errors do not accumulate: each fit starts from the previous solution)."""
ONE_STEP_SU: float = 1.0
"""Warm fits: a full (untruncated) Gauss–Newton step whose every shift is below this many s.u. is taken as the
converged solution, with the joint solution's linear part, without a trial evaluation: Gauss–Newton converges
quadratically near the minimum, so the shift after it is second order (≪ the tolerance); the s.u. are those of the
step's normal matrix, as Rietveld programs report the last cycle's."""


class Outcome(NamedTuple):
    """A refinement's final state: linear solution, refined parameters, the last joint normal matrix and free set
    (None when nothing was refined), iterations run and whether the shift test passed."""

    lin: Linear
    params: Params
    g_joint: FloatArray | None
    passive_joint: NDArray[np.bool_] | None
    iterations: int
    converged: bool


class Solver:
    """Refinement and forward selection over a model's θ; keeps the linear free set and the last covariance."""

    def __init__(self, model: PatternModel, ne: NormalEquations, cfg: QuantConfig) -> None:
        """Work on `model` through the normal equations `ne` with the settings of `cfg`."""
        self.m, self.ne, self.cfg = model, ne, cfg
        self.refine_set = cfg.refine
        self.reset()

    def reset(self) -> None:
        """Forget the free set, refined parameters and covariance (a cold start)."""
        self.passive: NDArray[np.bool_] | None = None
        self.params: Params = []
        self.cov: FloatArray | None = None
        self.n_iter = 0
        self.yy = 0.0

    def update(self, derivs: bool = True) -> None:
        """Bring the model's rows up to θ (`PatternModel.update_columns` with the current free set)."""
        self.m.update_columns(self.passive, derivs)

    def solve_linear(self) -> Linear:
        """Gram matrix of the linear columns only and its bounded solution (used by the scans)."""
        return self.ne.linear(*self.ne.gram([])[:2], self.yy, self.passive)

    def _linear(self, g: FloatArray, h: FloatArray) -> Linear:
        """Bounded linear solution from a Gram block, warm-started from the current free set."""
        return self.ne.linear(g, h, self.yy, self.passive)

    def nonlinear_set(self, lin: Linear, dof: int, with_halos: bool) -> Params:
        """Nonlinear parameters to refine now: those of phases/halos significantly present (others held)."""
        m, cfg = self.m, self.cfg
        cov = covariance(lin.g, lin.passive, lin.chi2 / max(dof, 1))
        su = np.sqrt(np.maximum(np.diag(cov), 0.0))
        out: Params = []
        off = m.off
        any_phase = False
        wf = m.weight_fractions(lin.c)
        for p in range(m.np):
            c = lin.c[off + p]
            if c > 0.0 and c >= cfg.min_significance * su[off + p] and wf[p] >= cfg.min_fraction_strain:
                any_phase = True
                if "strain" in self.refine_set:
                    out.append(("strain", p))
                if "width" in self.refine_set and wf[p] >= cfg.min_fraction_width:
                    out.append(("width", p))
        m.held = set(range(m.np)) - {i for kind, i in out if kind in ("strain", "width")}
        if any_phase and "zero" in self.refine_set:
            out.append(("zero", 0))
        if with_halos:
            for j in range(m.nh):
                a = lin.c[m.nb + j]
                if a > 0.0 and a >= cfg.min_significance * su[m.nb + j]:
                    out += [("hq", j), ("hw", j)]
        return out

    # ------------------------------------------------------------------ projected, trust-limited steps
    def pinned(self, params: Params, shift: FloatArray) -> Params:
        """Parameters sitting on a bound whose Gauss–Newton shift points outside it."""
        out = []
        for (kind, i), d in zip(params, shift.tolist()):
            lo, hi = self.m.bounds(kind, i)
            v = self.m.value(kind, i)
            tol = 1e-9 * max(abs(hi - lo), 1e-12)
            if (d > 0 and v >= hi - tol) or (d < 0 and v <= lo + tol):
                out.append((kind, i))
        return out

    def trust(self, params: Params, shift: FloatArray) -> FloatArray:
        """Scale the Gauss–Newton step so no parameter moves further than a safe amount in one iteration (strain
        2×10⁻³, width half its value, zero shift and halo centre 0.05, halo width a quarter of its value)."""
        ratio = 1.0
        m = self.m
        for (kind, i), d in zip(params, shift.tolist()):
            lim = (2e-3 if kind == "strain" else 0.5 * m.wid[i] if kind == "width"
                   else 0.25 * m.hw[i] if kind == "hw" else 0.05)
            if abs(d) > lim:
                ratio = min(ratio, lim / abs(d))
        return shift * ratio

    # ------------------------------------------------------------------ the refinement loop
    def refine(self, max_iter: int, with_halos: bool, recentre: bool = True, tolerance: float = SHIFT_TOLERANCE,
               one_step: bool = False) -> Outcome:
        """Gauss–Newton/variable-projection iterations from the current θ; returns the final state.

        One Gram matrix per iteration (linear columns + the derivative rows of the refined θ); the linear block
        gives the projected solution and χ², a change of basis gives the joint (Kaufman) normal equations.
        """
        m, ne = self.m, self.ne
        n, nl = m.two_theta.size, m.nl
        m.halo_derivs = with_halos
        self.update()
        params = [pr for pr in self.params if m.active[pr[1]] or pr[0] not in ("strain", "width")]
        g, h, rows = ne.gram(params)
        lin = self._linear(g, h)
        self.passive = lin.passive
        new = self.nonlinear_set(lin, n - np.count_nonzero(lin.passive), with_halos)
        if new != params:
            params = new
            self.update()  # derivative rows of phases that became refined
            g, h, rows = ne.gram(params)
        st: Step | None = None
        converged = False
        recentred = 0
        it = 0
        while params and it < max_iter:
            it += 1
            self.n_iter += 1
            st = ne.joint(g, h, rows, lin, params)
            pinned = self.pinned(params, st.shift)
            if pinned:  # parameters at a bound pushing outwards are held for this step (projected Gauss–Newton)
                free = [pr for pr in params if pr not in pinned]
                if not free:
                    converged = True
                    break
                st = ne.joint(g, h, rows, lin, free)
            else:
                free = params
            shift = st.shift
            dof = n - np.count_nonzero(st.passive)
            self.cov = covariance(st.g, st.passive, lin.chi2 / max(dof, 1))
            su = np.sqrt(np.maximum(np.diag(self.cov)[nl:], 0.0))
            if np.all(np.abs(shift) <= tolerance * su + 1e-15):
                if pinned:
                    st = ne.joint(g, h, rows, lin, params)
                    self.cov = covariance(st.g, st.passive, lin.chi2 / max(dof, 1))
                if recentre and recentred < 2 and m.recentre():
                    recentred += 1
                    self.update()
                    g, h, rows = ne.gram(params)
                    lin = self._linear(g, h)
                    self.passive = lin.passive
                    continue
                converged = True
                break
            step = self.trust(free, shift)
            untruncated = one_step and not pinned and bool(np.array_equal(step, shift))
            base = m.get()
            if untruncated and bool(np.all(np.abs(shift) <= ONE_STEP_SU * su)):
                # a full step below ONE_STEP_SU s.u.: taken with the joint solution's linear part, final
                self.m.apply(free, step, base)
                self.update()
                lin = ne.linear_at(st.x[:nl], st.passive[:nl])
                self.passive = lin.passive
                converged = True
                break
            sigma2 = lin.chi2 / max(dof, 1)  # that of self.cov
            accepted = chord_accepted = False
            if untruncated:
                self.m.apply(free, step, base)
                self.update()
                final, chord_accepted = self._chord_final(lin, st, rows, su, sigma2, tolerance)
                if final is not None:
                    lin = final
                    self.passive = lin.passive
                    converged = True
                    break
                if chord_accepted:  # χ² fell already with the joint linear part: no trial projection needed,
                    g, h, rows = ne.gram(params)  # the next iteration's Gram gives the projection at θ₁
                    lin = self._linear(g, h)
                    self.passive = lin.passive
                    accepted = True
            for _ in range(0 if accepted else 6):
                self.m.apply(free, step, base)
                self.update()
                g2, h2, _ = ne.gram([])  # the linear block only: the trial needs χ² and the projection
                trial = self._linear(g2, h2)
                if trial.chi2 <= lin.chi2 * (1.0 + 1e-12) + 1e-12:
                    lin = trial
                    self.passive = lin.passive
                    accepted = True
                    break
                step = 0.5 * step
                untruncated = False
            if not accepted:  # no decrease along the Gauss–Newton direction: at the minimum within noise
                m.set(base)
                self.update()
                g, h, rows = ne.gram(params)
                lin = self._linear(g, h)
                self.passive = lin.passive
                converged = True
                break
            # a refined phase whose scale fell to zero cannot be refined (its Jacobian rows vanish)
            keep = [pr for pr in params if pr[0] not in ("strain", "width") or lin.c[m.off + pr[1]] > 0.0]
            if len(keep) != len(params):
                params = keep if any(k[0] in ("strain", "width") for k in keep) else []
            elif chord_accepted:
                continue  # the Gram of these parameters at θ₁ is current
            g, h, rows = ne.gram(params)
        g_joint = passive_joint = None
        if not params:
            converged = True
            self.cov = covariance(lin.g, lin.passive, lin.chi2 / max(n - np.count_nonzero(lin.passive), 1))
        elif not converged:
            st = ne.joint(g, h, rows, lin, params)
            self.cov = covariance(st.g, st.passive, lin.chi2 / max(n - np.count_nonzero(st.passive), 1))
        if params and st is not None:
            g_joint, passive_joint = st.g, st.passive
        self.params = params
        return Outcome(lin, params, g_joint, passive_joint, it, converged)

    def _chord_final(self, lin: Linear, st: Step, rows: list[int], su: FloatArray, sigma2: float,
                     tolerance: float) -> tuple[Linear | None, bool]:
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
        m, ne = self.m, self.ne
        nl = m.nl
        c1 = st.x[:nl]
        r = ne.y - c1 @ m.A
        wr = r * ne.w
        if not float(wr @ r) <= lin.chi2 * (1.0 + 1e-12) + 1e-12:
            return None, False
        nxt = (self.cov @ (st.basis.T @ (m.M[:max(rows) + 1] @ wr)[rows])) / sigma2
        if not np.all(np.abs(nxt[nl:]) <= tolerance * su + 1e-15):
            return None, True
        c = c1 + nxt[:nl]
        if np.any(c[m.nonneg] < 0.0):
            return None, True
        return ne.linear_at(c, st.passive[:nl]), True

    # ------------------------------------------------------------------ scans and forward selection
    def scan(self, p: int, candidates: Sequence[tuple[float, float]], lin: Linear, exact: bool,
             commit: bool = True) -> tuple[Linear, int, FloatArray]:
        """Try (ε, Y) candidates for phase p with all else fixed (rank-one Gram updates); keep the best if asked."""
        m, ne = self.m, self.ne
        row = m.off + p
        if exact:
            cols = np.array([m.models[p].render(m.two_theta - m.zero, e, yv, 0.0, m.window) for e, yv in candidates])
        else:
            tab = m.table(p)
            cols = np.empty((len(candidates), m.two_theta.size))
            widths = {yv for _, yv in candidates}
            if len(widths) == 1:  # a strain scan: one width contraction for all candidates
                m.axis_sin()
                tab.columns(m.s, m.pol, np.array([e for e, _ in candidates]), widths.pop(), cols)
            else:
                for k, (e, yv) in enumerate(candidates):
                    m.phase_column(p, e, yv, cols[k])
        m.n_eval += len(candidates)
        cw = cols * ne.w
        cross = cw @ m.A.T
        cc = np.einsum("kn,kn->k", cw, cols)
        cy = cw @ ne.y
        chi2 = replacement_chi2(lin.g, lin.h, row, cross, cc, cy, m.nonneg, lin.passive, self.yy)
        best, best_k = lin, -1
        k = int(np.argmin(chi2))
        if chi2[k] < lin.chi2:
            g = lin.g.copy()
            h = lin.h.copy()
            g[row, :] = cross[k]
            g[:, row] = cross[k]
            g[row, row] = cc[k]
            h[row] = cy[k]
            c, passive = bounded_lsq(g, h, m.nonneg, lin.passive)
            best, best_k = Linear(g, h, c, passive, chi2_from_gram(self.yy, g, h, c)), k
        if commit and best_k >= 0:
            self.commit(p, candidates[best_k], cols[best_k], best)
        return best, best_k, cols

    def commit(self, p: int, params: tuple[float, float], col: FloatArray, lin: Linear) -> None:
        """Adopt a scanned (ε, Y) and its column for phase p."""
        self.m.set_column(p, params[0], params[1], col)
        self.passive = lin.passive

    def strain_grid(self, p: int) -> list[tuple[float, float]]:
        """(ε, Y) candidates of the strain scan: ±strain_search around the start, half-FWHM steps."""
        m = self.m
        step = m.strain_step(p)
        k = int(math.ceil(self.cfg.strain_search / step))
        grid = m.strain_start[p] + step * np.arange(-k, k + 1)
        grid = grid[np.abs(grid) <= self.cfg.strain_range]
        return [(float(e), float(m.wid[p])) for e in grid]

    def width_scan(self, lin: Linear, phases: Sequence[int]) -> Linear:
        """Coarse Lorentzian-width scan (×¼ … ×4) of the given phases, exact renders."""
        m = self.m
        lo, hi = m.width_bounds
        for p in phases:
            cands = [(float(m.eps[p]), float(np.clip(m.wid[p] * f, lo, hi))) for f in (0.25, 0.5, 1.0, 2.0, 4.0)]
            lin = self.scan(p, cands, lin, exact=True)[0]
        return lin

    def cold_search(self) -> None:
        """Forward selection: add, one at a time, the phase whose best strain lowers χ² most, then refine it.

        Starting from background + halos only, each round scans every absent phase's strain and adds the one with
        the largest χ² decrease if that exceeds `min_significance`²·2; the newcomer's width is scanned and the
        included phases are refined by a few Gauss–Newton steps before the next round, so a misfit of the main
        phase is not taken up by a look-alike (α/β/γ-CsPbI3 share their pseudo-cubic sub-cell reflections).
        """
        m = self.m
        m.active[:] = False
        self.update(derivs=False)
        lin = self.solve_linear()
        self.passive = lin.passive

        def start(p: int) -> tuple[list[tuple[float, float]], list[float]]:
            m.eps[p], m.wid[p] = m.strain_start[p], m.width_start
            return (self.strain_grid(p) if "strain" in self.refine_set else [(m.eps[p], m.wid[p])]), []

        self.forward_select(lin, range(m.np), start, lambda: self.refine(8, m.halos).lin, coarse_widths=True)
        # the phases not selected stay in the model at their starting values (NNLS keeps them at ≈ 0)
        for p in np.flatnonzero(~m.active):
            m.eps[p], m.wid[p] = m.strain_start[p], m.width_start
            m.col_key[p] = None
        m.active[:] = True

    def forward_select(self, lin: Linear, cands: Sequence[int],
                       start: Callable[[int], tuple[list[tuple[float, float]], list[float]]],
                       refine: Callable[[], Linear], coarse_widths: bool) -> Linear:
        """Add inactive candidates one at a time: each round scans every one and adds the one lowering χ² most if
        by ≥ 2·min_significance²; with `coarse_widths` its width is scanned (×¼ … ×4), then `refine()` runs before
        the next round.

        `start(p)` sets p's starting values and gives its (ε, Y) grid and other widths to try at the grid's best
        strain (a separable search: peak positions fix the strain whatever the width, so the widths are tried at
        one strain rather than the grid repeated per width — a quarter of the candidate columns)."""
        m = self.m
        off = m.off
        threshold = 2.0 * self.cfg.min_significance ** 2
        while True:
            best = None
            for p in cands:
                if m.active[p]:
                    continue
                m.active[p] = True
                grid, widths = start(p)
                trial, k, cols = self.scan(p, grid, lin, exact=False, commit=False)
                pick = (grid[k], cols[k]) if k >= 0 else None
                if k >= 0 and widths:
                    alt = [(grid[k][0], yv) for yv in widths]
                    trial2, k2, cols2 = self.scan(p, alt, lin, exact=False, commit=False)
                    if k2 >= 0 and trial2.chi2 < trial.chi2:
                        trial, pick = trial2, (alt[k2], cols2[k2])
                m.active[p] = False
                if pick is not None and trial.c[off + p] > 0.0 and (best is None or trial.chi2 < best[0].chi2):
                    best = (trial, p) + pick
            if best is None or lin.chi2 - best[0].chi2 < threshold:
                return lin
            trial, p, params, col = best
            m.active[p] = True
            self.commit(p, params, col, trial)
            lin = trial
            if "width" in self.refine_set and coarse_widths:
                lin = self.width_scan(lin, [p])
            refine()
            lin = self.solve_linear()  # the next round's scans need the Gram matrix at the refined θ
