"""Which phases are present: backward elimination with F-tests corrected for serially correlated residuals.

Procedure (backward elimination from the full model, chosen over forward selection because every phase is then
tested against the best description of everything else, and a phase that only helps in the company of another
wrong phase is not kept by a lucky start):

1. Fit the model with every offered phase. A phase whose scale sits at its zero bound is removed at once
   ("scale at zero").
2. For every remaining phase, re-fit the model without it (warm start from the current solution) and form
   F = (Δχ²/k) / (χ²/(N_eff − P)), k = the parameters the phase adds (its scale + its free nonlinear parameters),
   P = the model's parameter count, χ² the current weighted residual sum of squares.
3. N_eff corrects for serial correlation of the residuals: with lag-1 autocorrelation ρ of the weighted residuals
   (Durbin–Watson d ≈ 2(1 − ρ)), N_eff = N·(1 − ρ)/(1 + ρ) (the AR(1) variance-inflation factor that Bérar &
   Lelann, J. Appl. Cryst. 24, 1 (1991), apply to Rietveld standard uncertainties). Both χ² sums overcount
   independent information by N/N_eff, which cancels in the ratio; the denominator's degrees of freedom do not:
   a 60,000-point pattern with systematic misfit (ρ ≈ 0.99) holds only a few hundred independent residuals, and
   a raw F-test on it accepts any phase that lowers χ² by a fraction of a per cent.
4. The phase with the largest p-value (F distribution with k and N_eff − P degrees of freedom) is removed if
   p > alpha, its re-fit becomes the current model, and step 2 repeats; otherwise every remaining phase is
   significant and elimination stops.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import f as f_dist

from .solver import Refinement, effective_points, lag1_autocorrelation


@dataclass
class PhaseTest:
    """F-test of one phase against the model without it."""

    f_statistic: float
    p_value: float
    delta_chi2: float
    n_added: int


def model_size(ref: Refinement, lin_passive: np.ndarray) -> int:
    """P: free nonlinear parameters of active phases/humps/instrument + free linear coefficients."""
    return int(ref.free_mask().sum() + lin_passive.sum())


def phase_parameter_count(ref: Refinement, i: int) -> int:
    """Parameters phase i adds: its scale and its free nonlinear parameters."""
    sl = ref.phase_slices[i]
    return 1 + int((~ref.fixed[sl]).sum())


def backward_elimination(ref: Refinement, theta: np.ndarray, alpha: float, *, refit_nfev: int = 30) \
        -> tuple[np.ndarray, dict[int, PhaseTest], dict[int, str], float]:
    """Eliminate insignificant phases (module docstring). Returns (θ, tests of kept phases, reasons of rejected
    phases, ρ of the final residuals); `ref.active` is left at the kept set."""
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
        n_eff = effective_points(n, rho, p_full)
        dof = max(n_eff - p_full, 1.0)
        chi2 = max(lin.chi2, 1e-300)
        tests = {}
        refits: dict[int, np.ndarray] = {}
        for i in np.flatnonzero(ref.active):
            ref.active[i] = False
            t_i, _ = ref.fit(theta, max_nfev=refit_nfev)
            chi2_i = ref.chi2(t_i)
            ref.active[i] = True
            k = phase_parameter_count(ref, int(i))
            dchi2 = max(chi2_i - chi2, 0.0)
            fstat = (dchi2 / k) / (chi2 / dof)
            tests[int(i)] = PhaseTest(float(fstat), float(f_dist.sf(fstat, k, dof)), float(dchi2), k)
            refits[int(i)] = t_i
        if not tests:
            return theta, tests, rejected, rho
        worst = max(tests, key=lambda i: (tests[i].p_value, -tests[i].f_statistic))
        if tests[worst].p_value <= alpha:
            return theta, tests, rejected, rho
        t = tests[worst]
        rejected[worst] = (f"not significant: F = {t.f_statistic:.3g} for {t.n_added} parameters, p = "
                           f"{t.p_value:.3g} > alpha (N_eff = {n_eff:.0f} of {n} points, lag-1 ρ = {rho:.3f})")
        ref.active[worst] = False
        theta = refits[worst]
