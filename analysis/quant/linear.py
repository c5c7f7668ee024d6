"""Small bounded linear least squares on the normal equations (Gram matrix), for variable projection.

The whole-pattern problem has ~10–40 linear unknowns and thousands of points, so everything after forming
G = AᵀWA and h = AᵀWy is tiny. Non-negativity on a subset (phase scales, halo amplitudes) with the rest free
(Chebyshev background, Gauss–Newton shifts) is handled by the active-set method of Lawson & Hanson, *Solving Least
Squares Problems* (1974), ch. 23 (the algorithm behind scipy.optimize.nnls), written for the Gram form with
permanently-free variables. Columns are equilibrated by √diag(G) (Jacobi scaling) before the Cholesky solves.

Why compiled (numba, `nogil`): a warm fit solves a few of these 16–30-unknown systems and a re-selection scan
hundreds; as NumPy/LAPACK calls each cost ~100 µs of interpreter and call overhead for ~10 µs of arithmetic, which
made the small solves half of a warm fit. Compiled, they cost a few µs and release the GIL (the RunEngine thread
keeps running while the analysis thread solves).
"""

from __future__ import annotations

import numba
import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

_jit = numba.njit(cache=True, nogil=True)


@_jit
def _cholesky(a: FloatArray, idx: NDArray[np.intp], low: FloatArray) -> bool:
    """Lower Cholesky factor of a[idx][:, idx] into low[:m, :m]; False when not numerically positive definite."""
    m = idx.size
    for j in range(m):
        s = a[idx[j], idx[j]]
        for k in range(j):
            s -= low[j, k] * low[j, k]
        if not s > 0.0:  # also catches NaN
            return False
        d = np.sqrt(s)
        low[j, j] = d
        for i in range(j + 1, m):
            t = a[idx[i], idx[j]]
            for k in range(j):
                t -= low[i, k] * low[j, k]
            low[i, j] = t / d
    return True


@_jit
def _chol_apply(low: FloatArray, m: int, b: FloatArray) -> None:
    """Solve L Lᵀ x = b in place (first m entries)."""
    for i in range(m):
        t = b[i]
        for k in range(i):
            t -= low[i, k] * b[k]
        b[i] = t / low[i, i]
    for i in range(m - 1, -1, -1):
        t = b[i]
        for k in range(i + 1, m):
            t -= low[k, i] * b[k]
        b[i] = t / low[i, i]


@_jit
def _sub_solve(gs: FloatArray, hs: FloatArray, p: BoolArray, low: FloatArray) -> FloatArray:
    """x with x[p] solving the passive sub-system (Cholesky; least squares when not positive definite), 0 elsewhere."""
    n = hs.size
    idx = np.flatnonzero(p)
    m = idx.size
    x = np.zeros(n)
    if m == 0:
        return x
    b = np.empty(m)
    for i in range(m):
        b[i] = hs[idx[i]]
    ok = _cholesky(gs, idx, low)
    if ok:
        _chol_apply(low, m, b)
        for i in range(m):
            if not np.isfinite(b[i]):
                ok = False
                break
    if not ok:
        sub = np.empty((m, m))
        for i in range(m):
            b[i] = hs[idx[i]]
            for j in range(m):
                sub[i, j] = gs[idx[i], idx[j]]
        b = np.linalg.lstsq(sub, b, 1e-12)[0]
    for i in range(m):
        x[idx[i]] = b[i]
    return x


@_jit
def _lawson_hanson(g: FloatArray, h: FloatArray, nonneg: BoolArray, p: BoolArray, max_iter: int
                   ) -> tuple[FloatArray, BoolArray]:
    """The active-set iterations on the equilibrated system (see `bounded_lsq`); `p` is the starting passive set."""
    n = h.size
    inv = np.empty(n)
    for i in range(n):
        d = np.sqrt(g[i, i])
        inv[i] = 1.0 / d if d > 0.0 else 1.0
    gs = np.empty((n, n))
    hs = np.empty(n)
    for i in range(n):
        hs[i] = h[i] * inv[i]
        for j in range(n):
            gs[i, j] = g[i, j] * inv[i] * inv[j]
    low = np.empty((n, n))
    free = ~nonneg
    for i in range(n):  # a zero column (a phase left out of the model) is held at 0, never passive: it would make
        if nonneg[i] and not g[i, i] > 0.0:  # every passive sub-system singular (a least-squares solve each time)
            p[i] = False
    x = _sub_solve(gs, hs, p, low)
    neg = nonneg & (x < 0.0)
    if np.any(neg):  # make the start feasible: drop the offending constrained variables, re-solve
        p &= ~neg
        x = _sub_solve(gs, hs, p, low)
        if np.any(nonneg & (x < 0.0)):  # still infeasible: the free-only start is always feasible
            p = free.copy()
            x = _sub_solve(gs, hs, p, low)
    tol = 1e-10 * (1.0 + np.abs(hs).max())
    for _ in range(max_iter):
        grad = hs - gs @ x
        best, best_k = tol, -1
        for k in range(n):
            if not p[k] and grad[k] > best:
                best, best_k = grad[k], k
        if best_k < 0:
            break
        p[best_k] = True
        for _ in range(max_iter):
            z = _sub_solve(gs, hs, p, low)
            alpha = np.inf
            for k in range(n):
                if p[k] and nonneg[k] and z[k] <= 0.0:
                    alpha = min(alpha, x[k] / max(x[k] - z[k], 1e-300))
            if alpha == np.inf:
                x = z
                break
            x = x + alpha * (z - x)
            for k in range(n):
                if nonneg[k] and x[k] <= 1e-14:
                    p[k] = False
                if not p[k]:
                    x[k] = 0.0
    return x * inv, p


def bounded_lsq(g: FloatArray, h: FloatArray, nonneg: BoolArray, warm: BoolArray | None = None,
                max_iter: int = 100) -> tuple[FloatArray, BoolArray]:
    """Minimise xᵀGx − 2hᵀx subject to x[nonneg] ≥ 0; returns (x, passive set) — `warm` = a guess of the passive set.

    Lawson–Hanson started from the warm passive set (its solution, made feasible by zeroing negative constrained
    entries): in sequential refinement the guess is usually right and one solve plus the KKT check suffice.
    """
    p = (warm | ~nonneg) if warm is not None else ~nonneg  # a new array: the solver updates it in place
    return _lawson_hanson(np.ascontiguousarray(g, dtype=np.float64), np.ascontiguousarray(h, dtype=np.float64),
                          nonneg, p, int(max_iter))


@_jit
def _replacement_chi2(g: FloatArray, h: FloatArray, row: int, cross: FloatArray, cc: FloatArray, cy: FloatArray,
                      nonneg: BoolArray, passive: BoolArray, yy: float) -> FloatArray:
    """χ² of the bounded solution for each candidate k replacing column `row` (Gram row cross[k], diagonal cc[k],
    right-hand side cy[k]); the rest of the Gram matrix is fixed."""
    out = np.empty(cc.size)
    for k in range(cc.size):
        gk = g.copy()
        hk = h.copy()
        gk[row, :] = cross[k]
        gk[:, row] = cross[k]
        gk[row, row] = cc[k]
        hk[row] = cy[k]
        c, _ = _lawson_hanson(gk, hk, nonneg, passive | ~nonneg, 100)
        out[k] = max(yy - 2.0 * (hk @ c) + c @ (gk @ c), 0.0)
    return out


def replacement_chi2(g: FloatArray, h: FloatArray, row: int, cross: FloatArray, cc: FloatArray, cy: FloatArray,
                     nonneg: BoolArray, passive: BoolArray, yy: float) -> FloatArray:
    """χ² of the bounded least-squares solution with column `row` replaced by each of K candidate columns.

    `cross[k]` is the candidate's Gram row against the current columns, `cc[k]` its own squared norm and `cy[k]`
    its product with the data (all weighted); used by the strain/width scans, hundreds of candidates at a time.
    """
    return _replacement_chi2(np.ascontiguousarray(g), np.ascontiguousarray(h), int(row), np.ascontiguousarray(cross),
                             np.ascontiguousarray(cc), np.ascontiguousarray(cy), nonneg, passive, float(yy))


def chi2_from_gram(yy: float, g: FloatArray, h: FloatArray, x: FloatArray) -> float:
    """Weighted residual sum of squares yᵀWy − 2hᵀx + xᵀGx (never below 0)."""
    return max(float(yy - 2.0 * h @ x + x @ g @ x), 0.0)


@_jit
def _covariance(g: FloatArray, passive: BoolArray, sigma2: float) -> FloatArray:
    """Compiled body of `covariance`."""
    n = g.shape[0]
    out = np.zeros((n, n))
    idx = np.flatnonzero(passive)
    m = idx.size
    if m == 0:
        return out
    d = np.empty(m)
    for i in range(m):
        v = np.sqrt(g[idx[i], idx[i]])
        d[i] = 1.0 / v if v > 0.0 else 1.0
    sub = np.empty((m, m))
    for i in range(m):
        for j in range(m):
            sub[i, j] = g[idx[i], idx[j]] * d[i] * d[j]
    low = np.empty((m, m))
    ident = np.arange(m)
    inv = np.zeros((m, m))
    ok = _cholesky(sub, ident, low)
    if ok:
        for j in range(m):
            e = np.zeros(m)
            e[j] = 1.0
            _chol_apply(low, m, e)
            for i in range(m):
                if not np.isfinite(e[i]):
                    ok = False
                inv[i, j] = e[i]
    if not ok:
        inv = np.linalg.pinv(sub)
    for i in range(m):
        for j in range(m):
            out[idx[i], idx[j]] = inv[i, j] * d[i] * d[j] * sigma2
    return out


def covariance(g: FloatArray, passive: BoolArray, sigma2: float) -> FloatArray:
    """σ²·(G restricted to the passive set)⁻¹, zero rows/columns for variables held at a bound."""
    return _covariance(np.ascontiguousarray(g, dtype=np.float64), passive, float(sigma2))


@_jit
def _gather_weighted(m: FloatArray, rows: NDArray[np.intp], weights: FloatArray, out: FloatArray) -> None:
    """out[k] = m[rows[k]] · weights (one pass, into a preallocated buffer)."""
    for k in range(rows.size):
        r = rows[k]
        for i in range(weights.size):
            out[k, i] = m[r, i] * weights[i]


def gather_weighted(m: FloatArray, rows: NDArray[np.intp], weights: FloatArray, out: FloatArray) -> FloatArray:
    """The weighted rows m[rows]·weights written into out[:len(rows)] (returned), for forming AᵀWA by BLAS: one
    compiled pass instead of a gathered copy and a product, and no fresh megabyte-sized array per Gram matrix."""
    view = out[:rows.size]
    _gather_weighted(m, rows, weights, view)
    return view


def warm_up() -> None:
    """Load this module's compiled kernels now (see `hotstage.analysis.profiles.warm_up`), with the argument types of
    `PhaseQuantifier`'s calls."""
    g = np.array([[2.0, 0.5], [0.5, 1.0]])
    h = np.array([1.0, -1.0])
    nonneg = np.array([False, True])
    bounded_lsq(g, h, nonneg, np.ones(2, dtype=bool))
    covariance(g, np.ones(2, dtype=bool), 1.0)
    replacement_chi2(g, h, 1, g.copy(), h.copy(), h.copy(), nonneg, np.ones(2, dtype=bool), 3.0)
    gather_weighted(g, np.arange(2, dtype=np.intp), h, np.empty((2, 2)))
