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
from scipy.linalg.lapack import dposv, dpotrf, dpotri

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


def _solve(g: FloatArray, h: FloatArray) -> FloatArray:
    """Solve the (equilibrated, SPD) system g x = h by Cholesky (LAPACK dposv, no Python-level checks on the way);
    least-squares fallback when not numerically positive definite."""
    _, x, info = dposv(g, h, lower=0, overwrite_a=0, overwrite_b=0)
    if info == 0 and np.isfinite(x).all():
        return x
    return np.linalg.lstsq(g, h, rcond=1e-12)[0]


def _sub_solve(gs: FloatArray, hs: FloatArray, p: BoolArray) -> FloatArray:
    """x with x[p] solving the passive sub-system and 0 elsewhere (no gather when everything is passive)."""
    if p.all():
        return _solve(gs, hs)
    x = np.zeros(hs.size)
    idx = np.flatnonzero(p)
    if idx.size:
        x[idx] = _solve(gs[np.ix_(idx, idx)], hs[idx])
    return x


def bounded_lsq(g: FloatArray, h: FloatArray, nonneg: BoolArray, warm: BoolArray | None = None,
                max_iter: int = 100) -> tuple[FloatArray, BoolArray]:
    """Minimise xᵀGx − 2hᵀx subject to x[nonneg] ≥ 0; returns (x, passive set) — `warm` = a guess of the passive set.

    Lawson–Hanson started from the warm passive set (its solution, made feasible by zeroing negative constrained
    entries): in sequential refinement the guess is usually right and one solve plus the KKT check suffice.
    """
    n = h.size
    d = np.sqrt(np.diagonal(g))
    d = np.where(d > 0.0, d, 1.0)
    inv = 1.0 / d
    gs = g * np.multiply.outer(inv, inv)
    hs = h * inv
    free = ~nonneg
    p = (warm | free) if warm is not None else free.copy()
    x = _sub_solve(gs, hs, p)
    neg = nonneg & (x < 0.0)
    if neg.any():  # make the start feasible: drop the offending constrained variables, re-solve
        p &= ~neg
        x = _sub_solve(gs, hs, p)
        if np.any(nonneg & (x < 0.0)):  # still infeasible: the free-only start is always feasible
            p = free.copy()
            x = _sub_solve(gs, hs, p)
    tol = 1e-10 * (1.0 + np.abs(hs).max())
    for _ in range(max_iter):
        grad = hs - gs @ x
        cand = np.flatnonzero(~p & (grad > tol))
        if cand.size == 0:
            break
        p[cand[np.argmax(grad[cand])]] = True
        for _ in range(max_iter):
            z = _sub_solve(gs, hs, p)
            bad = p & nonneg & (z <= 0.0)
            if not bad.any():
                x = z
                break
            b = np.flatnonzero(bad)
            alpha = np.min(x[b] / np.maximum(x[b] - z[b], 1e-300))
            x = x + alpha * (z - x)
            p &= ~(nonneg & (x <= 1e-14))
            x[~p] = 0.0
    return x * inv, p


def chi2_from_gram(yy: float, g: FloatArray, h: FloatArray, x: FloatArray) -> float:
    """Weighted residual sum of squares yᵀWy − 2hᵀx + xᵀGx (never below 0)."""
    return max(float(yy - 2.0 * h @ x + x @ g @ x), 0.0)


def covariance(g: FloatArray, passive: BoolArray, sigma2: float) -> FloatArray:
    """σ²·(G restricted to the passive set)⁻¹, zero rows/columns for variables held at a bound."""
    n = g.shape[0]
    out = np.zeros((n, n))
    if not passive.any():
        return out
    every = bool(passive.all())
    idx = np.flatnonzero(passive)
    sub = g if every else g[np.ix_(idx, idx)]
    d = np.sqrt(np.diagonal(sub))
    d = np.where(d > 0.0, d, 1.0)
    scale = np.multiply.outer(1.0 / d, 1.0 / d)
    sub = sub * scale
    c, info = dpotrf(sub, lower=0, clean=1, overwrite_a=0)
    if info == 0:
        inv, info = dpotri(c, lower=0, overwrite_c=1)
    if info == 0 and np.isfinite(inv).all():
        inv = np.triu(inv) + np.triu(inv, 1).T  # dpotri fills the upper triangle
    else:
        inv = np.linalg.pinv(sub)
    inv *= scale
    inv *= sigma2
    if every:
        return inv
    out[np.ix_(idx, idx)] = inv
    return out
