"""Which phases are present: backward elimination with F-tests corrected for serially correlated residuals.

Procedure (backward elimination from the full model, chosen over forward selection because every phase is then
tested against the best description of everything else, and a phase that only helps in the company of another
wrong phase is not kept by a lucky start):

1. Fit the model with every offered phase. A phase whose scale sits at its zero bound is removed at once
   ("scale at zero").
2. For every remaining phase, remove it and re-solve the linear parameters (scales, humps, background) with the
   others' nonlinear parameters held (from the full model's normal equations, `Refinement.chi2_without`: no
   re-evaluation of the pattern; not re-refined: a full re-fit per phase and round made elimination most of
   the cost; holding them can only raise χ² without the phase, so this F is an upper bound, and the decoy test of
   step 4 is the guard against keeping a phase on it), and form
   F = (Δχ²/k) / (χ²/(N_eff − P)), k = the parameters the phase adds (its scale + its free nonlinear parameters),
   P = the model's parameter count, χ² the current weighted residual sum of squares.
3. N_eff corrects for serial correlation of the residuals: N_eff = N/τ with τ the integrated autocorrelation
   time of the weighted residuals (`solver.autocorrelation_time`). For residuals correlated only between
   neighbours (AR(1), lag-1 ρ, Durbin–Watson d ≈ 2(1 − ρ)) τ = (1 + ρ)/(1 − ρ), the variance-inflation factor that
   Bérar & Lelann, J. Appl. Cryst. 24, 1 (1991), apply to Rietveld standard uncertainties; summing the
   autocorrelation over all lags also catches misfit broader than a step (peak-shape errors span tens of points),
   which the lag-1 form misses (measured β-CsPbI3: τ ≈ 8 where (1 + ρ)/(1 − ρ) ≈ 4). Both χ² sums overcount
   independent information by N/N_eff, which cancels in the ratio; the denominator's degrees of freedom do not:
   a 60,000-point pattern with systematic misfit (ρ ≈ 0.99) holds only a few hundred independent residuals, and
   a raw F-test on it accepts any phase that lowers χ² by a fraction of a per cent.
4. Decoy test (systematic misfit makes even the corrected F-test accept phases that merely soak up peak-shape or
   background misfit): each phase that passes step 2 is compared with two decoys, the same phase with all cell
   lengths × (1 ± DECOY_SHIFT) (beyond the ±3 % cell range, so its reflections cannot return to their place) and
   refined like the phase (scale, cell, size, strain; its own parameters only, the rest held as for the phase
   itself). The phase must beat its better decoy by the same F-test
   (same k, same N_eff): a phase that helps no more than a copy of itself at the wrong positions is not
   identified by its reflections (p-value = the larger of the two tests).
5. The phase with the largest p-value (F distribution with k and N_eff − P degrees of freedom) is removed if
   p > alpha, its re-fit becomes the current model, and step 2 repeats.
6. Evidence test (reflections of its own), once every remaining phase passes steps 2–4: each phase must also
   lower χ² significantly on the points where the fit says the counts are ITS OWN (`own_windows`): points within
   ±`WINDOW_FWHM` = 1 FWHM of one of its lines where its fitted intensity is at least the other phases' together
   (`OWN_FRACTION` = 1: at least half of the Bragg counts above the background there are the phase's). On those
   points the F-test of step 2 is formed (Δχ² restricted to them, same k, same denominator χ²/(N_eff − P) and
   degrees of freedom: the pooled variance of the whole fit, so a phase with few own points is not favoured by a
   small denominator). A phase with no such point is "not distinguishable (all reflections overlap <phase>)".
   The phase with the largest p-value is removed if p > alpha and elimination resumes at step 2 (after the
   standard tests have settled, so that phases are ordered by them, not by overlaps among absent phases).
   Why (reference practice): a phase is identified by reflections that only it explains — search–match and the
   IUCr CPD quantitative-analysis round robin (Madsen et al., J. Appl. Cryst. 34, 409 (2001)) both start from the
   phase's observed lines, and a crystallographer does not report a phase none of whose lines is seen apart from
   another phase's. Steps 2 and 4 cannot make that judgement: a minor phase whose lines all sit on a major phase's
   (α-CsPbI3's cubic sub-cell lines on β's; γ's strongest lines on β's) lowers χ² by correcting the major phase's
   per-line intensity and shape misfit (|F|², texture, absorption, profile errors), and its decoy, whose lines
   are moved off the major phase's, cannot do that as well, so it passes both. Why these numbers: ±1 FWHM holds
   most of a line (76 % of a Gaussian's area, 50 % of a Lorentzian's) and little of a resolved neighbour's; the
   dominance threshold is a majority, the weakest condition under which the window tests the phase more than the
   others (a line-based rule, "no line of another phase within 2 FWHM", was tried first and rejected β at 34 wt %
   in a lab δ/β/CsI mixture with 60 nm crystallites: δ's dense weak lines are within 2 FWHM of every β line).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import f as f_dist

from .solver import Refinement, autocorrelation_time, lag1_autocorrelation

DECOY_SHIFTS = (0.95, 1.05)
"""Decoy cell-length factors (±5 %: outside the refined ±3 % cell range)."""
OWN_FRACTION = 1.0
"""A point is a phase's own when its fitted intensity is at least this × the other phases' together (step 6)."""
WINDOW_FWHM = 1.0
"""Half-width (FWHM) of the window of points around each line of a phase (step 6)."""


@dataclass
class PhaseTest:
    """F-test of one phase against the model without it."""

    f_statistic: float
    p_value: float
    delta_chi2: float
    n_added: int
    decoy_p_value: float = 0.0
    own_p_value: float = 0.0
    """p-value of the F-test on the phase's own points (step 6; 1 when it has none)."""
    own_points: int = -1
    """Points where the phase's fitted intensity dominates, near its lines (-1: not tested)."""
    overlapped_by: tuple[str, ...] = ()
    """Phases with intensity in this phase's line windows (most first)."""


def own_windows(ref: Refinement, theta: np.ndarray, a: np.ndarray, coef: np.ndarray, i: int) \
        -> tuple[np.ndarray, tuple[str, ...]]:
    """(mask of phase i's own points, the phases whose intensity exceeds i's in its line windows, most first):
    module docstring, step 6. `a`: the weighted design at θ, `coef` its linear coefficients."""
    from hotstage.analysis.profiles import tch_combine

    m = ref.phases[i]
    centres, _, fg, fl, _ = m.peaks(theta[ref.phase_slices[i]], ref.instrument(theta))
    fw = np.maximum(tch_combine(fg, fl)[0], 1e-6)
    near = np.zeros(ref.x.size, dtype=bool)
    lo = np.searchsorted(ref.x, centres - WINDOW_FWHM * fw)
    hi = np.searchsorted(ref.x, centres + WINDOW_FWHM * fw, side="right")
    for p, q in zip(lo, hi):
        near[p:q] = True
    mine = coef[i] * a[:, i]
    others = np.zeros(ref.x.size)
    share: dict[str, float] = {}
    for k in np.flatnonzero(ref.active):
        if int(k) != i and coef[k] > 0.0:
            col = coef[k] * a[:, k]
            others += col
            share[ref.phases[int(k)].name] = float(col[near].sum())
    mask = near & (mine > 0.0) & (mine >= OWN_FRACTION * others)
    names = tuple(n for n in sorted(share, key=lambda n: -share[n]) if share[n] > 0.0)
    return mask, names


def model_size(ref: Refinement, lin_passive: np.ndarray) -> int:
    """P: free nonlinear parameters of active phases/humps/instrument + free linear coefficients."""
    return int(ref.free_mask().sum() + lin_passive.sum())


def phase_parameter_count(ref: Refinement, i: int) -> int:
    """Parameters phase i adds: its scale and its free nonlinear parameters."""
    sl = ref.phase_slices[i]
    return 1 + int((~ref.fixed[sl]).sum())


def backward_elimination(ref: Refinement, theta: np.ndarray, alpha: float, *, refit_nfev: int = 30,
                         decoy_nfev: int = 15, trusted: frozenset[int] = frozenset()) \
        -> tuple[np.ndarray, dict[int, PhaseTest], dict[int, str], float]:
    """Eliminate insignificant phases (module docstring). `trusted`: phases that passed the decoy test in the
    previous pattern of a warm sequence; they skip it while their F-test passes. Returns (θ, tests of kept phases,
    reasons of rejected phases, ρ of the final residuals); `ref.active` is left at the kept set."""
    rejected: dict[int, str] = {}
    tests: dict[int, PhaseTest] = {}
    while True:
        a, lin = ref.evaluate(theta)
        zero = [i for i in np.flatnonzero(ref.active) if lin.coef[i] <= 0.0]
        if zero:
            for i in zero:
                ref.active[i] = False
                rejected[int(i)] = "scale refined to zero"
            theta, _ = ref.fit(theta, max_nfev=refit_nfev)
            continue
        r = ref.y_w - lin.model_w
        rho = lag1_autocorrelation(r)
        n = ref.y_w.size
        p_full = model_size(ref, lin.passive)
        n_eff = max(n / autocorrelation_time(r), p_full + 2.0)
        dof = max(n_eff - p_full, 1.0)
        chi2 = max(lin.chi2, 1e-300)
        tests = {}
        refits: dict[int, np.ndarray] = {}
        for i in np.flatnonzero(ref.active):
            chi2_i = ref.chi2_without(lin, int(i))  # the others not re-refined: see step 2
            t_i = theta
            k = phase_parameter_count(ref, int(i))
            dchi2 = max(chi2_i - chi2, 0.0)
            fstat = (dchi2 / k) / (chi2 / dof)
            pval = float(f_dist.sf(fstat, k, dof))
            decoy_p = 0.0
            if pval <= alpha and int(i) not in trusted:
                chi2_d = chi2_i
                m = ref.phases[int(i)]
                for factor in DECOY_SHIFTS:
                    m.decoy_factor = factor
                    ref._cache.pop(int(i), None)
                    try:
                        t_d, _ = ref.fit(theta, max_nfev=decoy_nfev, only=int(i))
                        chi2_d = min(chi2_d, ref.chi2(t_d))
                    finally:
                        m.decoy_factor = 1.0
                        ref._cache.pop(int(i), None)
                f_dec = (max(chi2_d - chi2, 0.0) / k) / (chi2 / dof)
                decoy_p = float(f_dist.sf(f_dec, k, dof))
            tests[int(i)] = PhaseTest(float(fstat), max(pval, decoy_p), float(dchi2), k, decoy_p)
            refits[int(i)] = t_i
        if not tests:
            return theta, tests, rejected, rho
        worst = max(tests, key=lambda i: (tests[i].p_value, -tests[i].f_statistic))
        if tests[worst].p_value <= alpha:  # step 6: every phase passes steps 2-4; each needs points of its own
            for i, t in tests.items():
                mask, over = own_windows(ref, theta, a, lin.coef, i)
                t.own_points, t.overlapped_by = int(mask.sum()), over
                if t.own_points == 0:
                    t.own_p_value = 1.0
                else:
                    r_wo = ref.y_w[mask] - a[mask] @ ref.coef_without(lin, i)
                    r_in = r[mask]
                    d_own = max(float(r_wo @ r_wo - r_in @ r_in), 0.0)
                    t.own_p_value = float(f_dist.sf((d_own / t.n_added) / (chi2 / dof), t.n_added, dof))
                t.p_value = max(t.p_value, t.own_p_value)
            worst = max(tests, key=lambda i: (tests[i].own_p_value, -tests[i].f_statistic))
            if tests[worst].own_p_value <= alpha:
                return theta, tests, rejected, rho
        t = tests[worst]
        if t.own_points == 0:
            over = ", ".join(t.overlapped_by) or "other phases"
            rejected[worst] = (f"not distinguishable (all reflections overlap {over}): no reflection of its own, "
                               f"though F = {t.f_statistic:.3g} against its absence")
        elif t.own_p_value > alpha:
            rejected[worst] = (f"no evidence of its own: on the {t.own_points} points where it outweighs "
                               f"{', '.join(t.overlapped_by) or 'the other phases'} p = {t.own_p_value:.3g} > alpha, "
                               f"though F = {t.f_statistic:.3g} on the whole pattern")
        elif t.decoy_p_value > alpha:
            rejected[worst] = (f"no better than a decoy (the phase with its cell × 0.95 or × 1.05): p = "
                               f"{t.decoy_p_value:.3g} > alpha, though F = {t.f_statistic:.3g} against its absence; it "
                               f"fits misfit, not its reflections (N_eff = {n_eff:.0f} of {n} points)")
        else:
            rejected[worst] = (f"not significant: F = {t.f_statistic:.3g} for {t.n_added} parameters, p = "
                               f"{t.p_value:.3g} > alpha (N_eff = {n_eff:.0f} of {n} points, lag-1 ρ = {rho:.3f})")
        ref.active[worst] = False
        theta, _ = ref.fit(refits[worst], max_nfev=refit_nfev)
