"""Small bounded linear least squares on the normal equations (Gram matrix), for variable projection.

The whole-pattern problem has ~10–40 linear unknowns and thousands of points, so everything after forming
G = AᵀWA and h = AᵀWy is tiny. Non-negativity on a subset (phase scales, halo amplitudes) with the rest free
(Chebyshev background, Gauss–Newton shifts) is handled by the active-set method of Lawson & Hanson, *Solving Least
Squares Problems* (1974), ch. 23 (the algorithm behind scipy.optimize.nnls), written for the Gram form with
permanently-free variables. Columns are equilibrated by √diag(G) (Jacobi scaling) before the (LU) solves.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


def _solve(g: FloatArray, h: FloatArray) -> FloatArray:
    """Solve the (equilibrated, SPD) system g x = h; least-squares fallback when numerically singular."""
    try:
        x = np.linalg.solve(g, h)
        if np.all(np.isfinite(x)):
            return x
    except np.linalg.LinAlgError:
        pass
    return np.linalg.lstsq(g, h, rcond=1e-12)[0]


def bounded_lsq(g: FloatArray, h: FloatArray, nonneg: BoolArray, warm: BoolArray | None = None,
                max_iter: int = 100) -> tuple[FloatArray, BoolArray]:
    """Minimise xᵀGx − 2hᵀx subject to x[nonneg] ≥ 0; returns (x, passive set) — `warm` = a guess of the passive set.

    Lawson–Hanson started from the warm passive set (its solution, made feasible by zeroing negative constrained
    entries): in sequential refinement the guess is usually right and one solve plus the KKT check suffice.
    """
    n = h.size
    d = np.sqrt(np.diag(g).copy())
    d[~(d > 0.0)] = 1.0
    gs = g / d[:, None] / d[None, :]
    hs = h / d
    free = ~nonneg
    p = (warm | free) if warm is not None else free.copy()
    x = np.zeros(n)
    idx = np.flatnonzero(p)
    if idx.size:
        x[idx] = _solve(gs[idx[:, None], idx], hs[idx])
    neg = nonneg & (x < 0.0)
    if neg.any():  # make the start feasible: drop the offending constrained variables, re-solve
        p &= ~neg
        x[:] = 0.0
        idx = np.flatnonzero(p)
        if idx.size:
            x[idx] = _solve(gs[idx[:, None], idx], hs[idx])
        if np.any(nonneg & (x < 0.0)):  # still infeasible: the free-only start is always feasible
            p = free.copy()
            x[:] = 0.0
            idx = np.flatnonzero(p)
            if idx.size:
                x[idx] = _solve(gs[idx[:, None], idx], hs[idx])
    tol = 1e-10 * (1.0 + np.abs(hs).max())
    for _ in range(max_iter):
        grad = hs - gs @ x
        cand = np.flatnonzero(~p & (grad > tol))
        if cand.size == 0:
            break
        p[cand[np.argmax(grad[cand])]] = True
        for _ in range(max_iter):
            z = np.zeros(n)
            idx = np.flatnonzero(p)
            z[idx] = _solve(gs[idx[:, None], idx], hs[idx])
            bad = p & nonneg & (z <= 0.0)
            if not bad.any():
                x = z
                break
            b = np.flatnonzero(bad)
            alpha = np.min(x[b] / np.maximum(x[b] - z[b], 1e-300))
            x = x + alpha * (z - x)
            p &= ~(nonneg & (x <= 1e-14))
            x[~p] = 0.0
    return x / d, p


def chi2_from_gram(yy: float, g: FloatArray, h: FloatArray, x: FloatArray) -> float:
    """Weighted residual sum of squares yᵀWy − 2hᵀx + xᵀGx (never below 0)."""
    return max(float(yy - 2.0 * h @ x + x @ g @ x), 0.0)


def covariance(g: FloatArray, passive: BoolArray, sigma2: float) -> FloatArray:
    """σ²·(G restricted to the passive set)⁻¹, zero rows/columns for variables held at a bound."""
    n = g.shape[0]
    out = np.zeros((n, n))
    if not passive.any():
        return out
    idx = np.flatnonzero(passive)
    d = np.sqrt(np.diag(g)[idx])
    d[~(d > 0.0)] = 1.0
    sub = g[idx[:, None], idx] / d[:, None] / d[None, :]
    try:
        inv = np.linalg.inv(sub)
        if not np.all(np.isfinite(inv)):
            raise np.linalg.LinAlgError("non-finite inverse")
    except np.linalg.LinAlgError:
        inv = np.linalg.pinv(sub)
    out[idx[:, None], idx] = sigma2 * inv / d[:, None] / d[None, :]
    return out
