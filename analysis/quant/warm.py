"""The live quantifier's warm-start policy: what a fit along a ramp keeps from the previous pattern, and when not.

A warm fit starts from the previous solution (θ, the linear free set, the tables) and usually needs one Gauss–Newton
step. What this module decides (changed after γ/β misassignments at the γ→β transition, ≈ 178 °C — a phase too weak
to refine used to keep whatever strain/width it last had, often values a transient refinement had run onto noise,
so when it grew its column matched nothing and its look-alike took its intensity: β 6–7 wt % low, γ high):

(i)   before each warm fit a phase whose width was not refined returns to its last well-determined (ε, Y) (refined
      at ≥ GOOD_MIN_FRACTION), else to the starting strain with the width of the strongest refined phase
      (`revert_held`);
(ii)  when a phase becomes significant or χ² jumps (against the lowest of the last RESEED_WINDOW patterns), the
      newcomers and all held phases are re-selected forward as in a cold fit, refined phases kept (`rescans`);
(iii) a phase whose width ends on a bound must pass a likelihood-ratio test against the refit without it (`admit`).
It also records the per-pattern drift of ε and Y, from which the model places new tables ahead of the drift.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from hotstage.analysis.quant.config import QuantConfig
from hotstage.analysis.quant.gram import Params
from hotstage.analysis.quant.model import FloatArray, PatternModel
from hotstage.analysis.quant.solver import WARM_SHIFT_TOLERANCE, Outcome, Solver

RESEED_SIGMAS: float = 5.0
"""Warm fits re-scan held phases' strains when χ²/(N−P) rose by more than this many of its standard deviations
(√(2/(N−P)), the χ² distribution) above the lowest of the last `RESEED_WINDOW` patterns."""
GOOD_MIN_FRACTION: float = 0.05
"""A phase's refined (ε, Y) are remembered as its values to hold it at (see `revert_held`) only when its weight
fraction is at least this: a weak phase's profile refines onto noise or a neighbour's misfit."""
RESEED_WINDOW: int = 10
"""The χ² jump test compares with the lowest χ²/(N−P) of this many previous patterns (a phase that grows over
several patterns raises χ² step by step, each step below the threshold)."""
RESCAN_MIN_FRACTION: float = 0.01
"""Warm fits re-scan the strain and width of a phase that became refinable (significant) since the previous pattern
when its weight fraction is at least this (a phase appearing at a transition carries a stale ε/Y otherwise)."""


def width_refined(params: Params) -> set[int]:
    """Phases whose width is among the refined parameters."""
    return {p for kind, p in params if kind == "width"}


class WarmStart:
    """Memory between patterns and the warm-fit decisions (module doc)."""

    def __init__(self, model: PatternModel, solver: Solver, cfg: QuantConfig) -> None:
        """Policy over `model`, refining through `solver`, with the significance settings of `cfg`."""
        self.m, self.solver, self.cfg = model, solver, cfg
        self.reset()

    def reset(self) -> None:
        """Forget every previous pattern."""
        m = self.m
        self.prev_eps = m.eps.copy()  # nonlinear parameters at the start of the previous fit (drift)
        self.prev_wid = m.wid.copy()
        self.prev_refined: set[int] = set()
        # (ε, Y) of each phase at the end of the last fit that refined its width (NaN: never): what a held phase
        # reverts to (see `revert_held`)
        self.good = np.full((m.np, 2), np.nan)
        self.width_refined: set[int] = set()
        self.dropped: set[int] = set()
        self.last_c = np.zeros(m.nl)
        self.recent_gof2: list[float] = []

    def begin(self) -> None:
        """Start a warm fit: record the per-pattern drift of ε and the relative drift of Y (table anticipation)
        and revert the held phases."""
        m = self.m
        m.anticipate = True
        m.drift_eps = m.eps - self.prev_eps
        m.drift_wid = m.wid / self.prev_wid - 1.0
        self.prev_eps, self.prev_wid = m.eps.copy(), m.wid.copy()
        self.revert_held()

    def refine(self, halos: bool, max_iter: int | None = None) -> Outcome:
        """One warm refinement (loose tolerance, one-step acceptance, no re-centring)."""
        it = self.cfg.warm_iterations if max_iter is None else max_iter
        return self.solver.refine(it, halos, False, WARM_SHIFT_TOLERANCE, True)

    def finish(self, out: Outcome, gof2: float) -> None:
        """After any fit: remember which phases refined, their good (ε, Y), χ²/(N−P) and the linear solution."""
        self.prev_refined = {p for kind, p in out.params if kind == "strain"}
        self.remember_good(out.params, out.lin.c)
        self.recent_gof2 = (self.recent_gof2 + [gof2])[-RESEED_WINDOW:]
        self.last_c = out.lin.c.copy()

    def release_dropped(self) -> None:
        """Phases left out by `admit` return (at their held values) for the next pattern."""
        if self.dropped:
            self.m.active[list(self.dropped)] = True
            self.dropped.clear()

    def remember_good(self, params: Params, c: FloatArray) -> None:
        """Record (ε, Y) of the phases whose width was refined at ≥ GOOD_MIN_FRACTION (and not left on a bound)."""
        m = self.m
        lo, hi = m.width_bounds
        tol = 1e-6 * (hi - lo)
        self.width_refined = width_refined(params)
        wf = m.weight_fractions(c)
        for p in self.width_refined:
            if wf[p] >= GOOD_MIN_FRACTION and lo + tol < m.wid[p] < hi - tol:
                self.good[p] = m.eps[p], m.wid[p]

    def held_prior(self, p: int) -> tuple[float, float]:
        """(ε, Y) a held phase p is kept at: its last well-determined values, else the starting strain with the
        width of the strongest width-refined phase (or the starting width)."""
        m = self.m
        if np.isfinite(self.good[p, 0]):
            return float(self.good[p, 0]), float(self.good[p, 1])
        ref = [q for q in self.width_refined if q != p]
        if ref and self.solver.passive is not None:
            c = self.last_c
            q = max(ref, key=lambda q: c[m.off + q] * m.zmv_over_norm[q])
            return float(m.strain_start[p]), float(m.wid[q])
        return float(m.strain_start[p]), float(m.width_start)

    def revert_held(self) -> None:
        """Phases not refined in the previous fit return to `held_prior` before the new pattern.

        Held at values a transient refinement or a re-scan left (strain far off, width on a bound) a phase's
        column is no template of the phase, so when it grows NNLS cannot see it and its look-alike takes its
        intensity; kept at plausible values, a growing phase is picked up and re-scanned. Widths followed from
        another phase move only beyond 5 % (no column re-evaluation otherwise)."""
        m = self.m
        for p in range(m.np):
            if p in self.width_refined:
                continue
            e, yv = self.held_prior(p)
            if e != m.eps[p] or abs(yv / m.wid[p] - 1.0) > 0.05:
                m.eps[p], m.wid[p] = e, yv

    def rescans(self, out: Outcome, halos: bool) -> tuple[Outcome, bool]:
        """After a warm refinement: forward re-selection of the weak phases when one became significant or χ² jumped.

        Trigger: a phase became refinable (scale ≥ min_significance s.u., ≥ RESCAN_MIN_FRACTION) since the previous
        pattern, or χ²/(N−P) rose by more than RESEED_SIGMAS of its scatter above the lowest of the last
        RESEED_WINDOW patterns. Then the candidates — the newcomers and every held phase — are taken out and put
        back one at a time as in the cold forward selection (the cold strain grid at the held width, then the
        starting width and those of the refined phases at the best strain), each if it lowers χ² by
        ≥ 2·min_significance², with the well-refined phases kept; the result replaces the warm fit if χ² is lower.
        Why all held phases: at γ→β or β→α the growing polymorph's intensity is first taken by whichever look-alike
        has the better-placed column; re-scanning the newcomer alone keeps the wrong phase. Tens of ms, only at
        transitions. Returns the outcome and whether the re-selection was kept.
        """
        m, solver, cfg = self.m, self.solver, self.cfg
        n = m.two_theta.size
        lin = out.lin
        dof = max(n - np.count_nonzero(lin.passive) - len(out.params), 1)
        gof2 = lin.chi2 / dof
        recent = self.recent_gof2[-RESEED_WINDOW:]
        jumped = bool(recent) and gof2 > min(recent) + RESEED_SIGMAS * math.sqrt(2.0 / dof)
        wf = m.weight_fractions(lin.c)
        refined = {p for kind, p in out.params if kind == "strain"}
        newly = sorted(p for p in refined - self.prev_refined if wf[p] >= RESCAN_MIN_FRACTION)
        lo, hi = m.width_bounds
        tol = 1e-6 * (hi - lo)
        pinned = [p for p in sorted(refined) if p in width_refined(out.params)
                  and not lo + tol < m.wid[p] < hi - tol]
        if not (newly or jumped):
            return (self.admit(out, pinned, halos) if pinned else out), False
        keep = {p for p in refined - set(newly) if p in self.prev_refined}
        cands = [p for p in range(m.np) if p not in keep]
        if not cands:
            return out, False
        snap = m.get()
        widths = {float(m.wid[p]) for p in keep} | {float(m.width_start)}
        held_at = {p: (self.held_prior(p) if p not in newly else (float(m.eps[p]), float(m.wid[p])))
                   for p in cands}
        m.active[cands] = False
        solver.update(derivs=False)
        lin = solver.solve_linear()
        solver.passive = lin.passive

        def start(p: int) -> tuple[list[tuple[float, float]], list[float]]:
            m.eps[p], m.wid[p] = held_at[p]
            grid = solver.strain_grid(p) if "strain" in cfg.refine else [held_at[p]]
            return grid, sorted(widths - {held_at[p][1]})

        solver.forward_select(lin, cands, start, lambda: self.refine(halos, 8).lin, coarse_widths=False)
        for p in cands:
            if not m.active[p]:
                m.eps[p], m.wid[p] = held_at[p] if p not in newly else self.held_prior(p)
                m.col_key[p] = None
        m.active[:] = True
        out2 = self.refine(halos, cfg.max_iterations)
        # the re-selection admits a phase only for Δχ² ≥ 2·min_significance²: the warm fit is kept only if it is
        # better by the likelihood-ratio margin min_significance² (not for a weak phase the selection left out)
        if out2.lin.chi2 < out.lin.chi2 + cfg.min_significance ** 2:
            out, reseeded = out2, True
        else:
            m.set(snap)
            for p in cands:
                m.col_key[p] = None
            out = self.refine(halos)
            reseeded = False
        pinned = [p for p in sorted(width_refined(out.params)) if not lo + tol < m.wid[p] < hi - tol]
        return (self.admit(out, pinned, halos) if pinned else out), reseeded

    def admit(self, out: Outcome, newly: Sequence[int], halos: bool) -> Outcome:
        """Likelihood-ratio test of phases that just became refinable (or whose width sits on a bound): each must
        lower χ² by ≥ min_significance² against the refit without it, weakest first, or it is left out of this
        pattern's model (scale 0).

        The Wald test that made it refinable (scale ≥ min_significance s.u.) is met too easily by a phase whose
        width ran onto the 2 nm bound while it soaked up background or halo misfit (α-CsPbI3 at 5 wt % of 2 nm
        crystallites in a pure-β pattern, Δχ² ≈ 10); the refit without it decides.
        """
        m = self.m
        off = m.off
        for p in sorted((p for p in newly if out.lin.c[off + p] > 0.0), key=lambda p: out.lin.c[off + p]):
            snap = m.get()
            m.active[p] = False
            self.dropped.add(p)
            out2 = self.refine(halos)
            if out.lin.chi2 <= out2.lin.chi2 - self.cfg.min_significance ** 2:  # it earns its place
                m.active[p] = True
                self.dropped.discard(p)
                m.set(snap)
                out = self.refine(halos)
            else:
                out = out2
        return out
