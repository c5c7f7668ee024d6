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
   p > alpha, its re-fit becomes the current model, and step 2 repeats; otherwise every remaining phase is
   significant and elimination stops.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import f as f_dist

from .solver import Refinement, autocorrelation_time, lag1_autocorrelation

DECOY_SHIFTS = (0.95, 1.05)
"""Decoy cell-length factors (±5 %: outside the refined ±3 % cell range)."""


@dataclass
class PhaseTest:
    """F-test of one phase against the model without it."""

    f_statistic: float
    p_value: float
    delta_chi2: float
    n_added: int
    decoy_p_value: float = 0.0


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
        if tests[worst].p_value <= alpha:
            return theta, tests, rejected, rho
        t = tests[worst]
        if t.decoy_p_value > alpha:
            rejected[worst] = (f"no better than a decoy (the phase with its cell × 0.95 or × 1.05): p = "
                               f"{t.decoy_p_value:.3g} > alpha, though F = {t.f_statistic:.3g} against its absence; it "
                               f"fits misfit, not its reflections (N_eff = {n_eff:.0f} of {n} points)")
        else:
            rejected[worst] = (f"not significant: F = {t.f_statistic:.3g} for {t.n_added} parameters, p = "
                               f"{t.p_value:.3g} > alpha (N_eff = {n_eff:.0f} of {n} points, lag-1 ρ = {rho:.3f})")
        ref.active[worst] = False
        theta, _ = ref.fit(refits[worst], max_nfev=refit_nfev)
