"""Normal equations of the live quantifier for one pattern: a cached weighted Gram matrix over every design row.

Variable projection (Golub & Pereyra, SIAM J. Numer. Anal. 10, 413 (1973)) needs, at each θ, the bounded linear
solution over the linear columns A (Lawson–Hanson, `quant.linear`) and, for a Gauss–Newton step, the joint
(Kaufman, BIT 15, 49 (1975)) normal equations over [A | s·∂model/∂θ]. Both come from one Gram matrix of the rows of
`PatternModel.M` weighted by the pattern's weights: the joint matrix by a change of basis that puts the current
scales into the derivative rows (`joint`). The Gram entries are cached per pattern, so after a step only the rows
the model rewrote (`PatternModel.current`) are multiplied again — background, halo and held-phase entries are
computed once per pattern.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from hotstage.analysis.quant.linear import bounded_lsq, chi2_from_gram, gather_weighted
from hotstage.analysis.quant.model import FloatArray, PatternModel

Params = list[tuple[str, int]]


@dataclass
class Linear:
    """A solved linear sub-problem at fixed nonlinear parameters (Gram block, right side, solution, free set, χ²)."""

    g: FloatArray
    h: FloatArray
    c: FloatArray
    passive: NDArray[np.bool_]
    chi2: float


@dataclass
class Step:
    """A solved joint (Kaufman) linearised problem: solution, normal matrix, passive set, θ-shifts and the basis
    change from Gram rows to joint columns."""

    x: FloatArray
    g: FloatArray
    passive: NDArray[np.bool_]
    shift: FloatArray
    basis: FloatArray


class NormalEquations:
    """The current pattern's counts and weights and the Gram cache over the model's rows."""

    def __init__(self, model: PatternModel) -> None:
        """Allocate the cache for the model's row layout (call `reset` after the model's)."""
        self.m = model
        self.reset()

    def reset(self) -> None:
        """Empty caches sized for the model's current `M`."""
        m = self.m
        rows = m.M.shape[0]
        n = m.two_theta.size
        self.G = np.zeros((rows, rows))
        self.Gy = np.zeros(rows)
        self.wbuf = np.empty_like(m.M)  # weighted rows for the Gram products
        self.lin_rows = np.arange(m.nl, dtype=np.intp)
        # Gram rows per refined parameter set: as an array, a list and the (rows × rows) fancy index
        self.rows_of: dict[tuple, tuple[NDArray[np.intp], list[int], tuple]] = {}
        self.basis_of: dict[tuple, tuple] = {}  # `joint`'s change-of-basis recipe per refined parameter set
        self.parts_c: FloatArray | None = None
        self.parts_version = -1
        self.parts: tuple = ()
        self.w, self.y = np.ones(n), np.zeros(n)
        self.sw = np.ones(n)
        self.ysw = np.zeros(n)

    def set_pattern(self, y: FloatArray, w: FloatArray) -> None:
        """New counts and weights: every cached weighted row and Gram entry is stale."""
        self.w, self.y = w, y
        self.parts_c = None
        self.sw = np.sqrt(w)
        self.ysw = y * self.sw
        self.m.current[:] = False

    def gram(self, params: Params) -> tuple[FloatArray, FloatArray, list[int]]:
        """Weighted Gram matrix and AᵀWy of the linear columns plus the derivative rows the parameters need.

        Cached for the current pattern: when rows requested again were rewritten since (the refined phases' columns
        and derivatives, after a Gauss–Newton step), only those are re-weighted and multiplied against the requested
        rows — the background, halo and held-phase entries are computed once per pattern (float64 BLAS).
        """
        m = self.m
        key = tuple(params)
        if key not in self.rows_of:
            dr = m.deriv_rows(params)
            rows = np.concatenate((self.lin_rows, np.asarray(dr, dtype=np.intp))) if dr else self.lin_rows
            self.rows_of[key] = (rows, rows.tolist(), np.ix_(rows, rows))
        rows, row_list, block = self.rows_of[key]
        ok = m.current
        bad = rows[~ok[rows]]
        lin_only = rows.size == m.nl  # rows 0 … nl−1: contiguous, served by views instead of gathered copies
        if bad.size == rows.size:  # nothing current (a new pattern): one symmetric product
            wb = gather_weighted(m.M, rows, self.sw, self.wbuf)
            g, gy = wb @ wb.T, wb @ self.ysw
            self.G[block] = g
            self.Gy[rows] = gy
            ok[:] = False
            ok[rows] = True
            return g, gy, row_list
        elif bad.size:  # the rewritten rows against the requested ones
            wb = gather_weighted(m.M, bad, self.w, self.wbuf)
            # against a contiguous block of `M` (no gathered copy), then the requested columns
            blk = wb @ m.M[:m.nl].T if lin_only else (wb @ m.M[:int(rows.max()) + 1].T)[:, rows]
            self.G[bad[:, None], rows] = blk
            self.G[rows[:, None], bad] = blk.T
            self.Gy[bad] = wb @ self.y
        # the rows requested are now mutually current; others may hold entries stale against the rewritten ones
        ok[:] = False
        ok[rows] = True
        if lin_only:
            nl = m.nl
            return self.G[:nl, :nl].copy(), self.Gy[:nl].copy(), row_list
        return self.G[block], self.Gy[rows], row_list

    def linear(self, g: FloatArray, h: FloatArray, yy: float, warm: NDArray[np.bool_] | None) -> Linear:
        """Bounded solution of the linear block (the variable-projection inner problem) at the current θ, active
        set warm-started from `warm`."""
        nl = self.m.nl
        gl, hl = g[:nl, :nl], h[:nl]
        c, passive = bounded_lsq(gl, hl, self.m.nonneg, warm)
        return Linear(gl, hl, c, passive, chi2_from_gram(yy, gl, hl, c))

    def linear_at(self, c: FloatArray, passive: NDArray[np.bool_]) -> Linear:
        """The linear solution `c` taken as is at the current columns (χ² from the residual; no Gram matrix)."""
        return Linear(np.zeros((0, 0)), np.zeros(0), c, passive, self.curve_parts(c)[4])

    def curve_parts(self, c: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, float]:
        """Background, halo, crystalline and total model curves of linear solution `c` at the current columns and
        their χ², computed once per solution, set of columns and pattern (`linear_at` and the result share them)."""
        m = self.m
        if self.parts_c is not c or self.parts_version != m.col_version:
            nb, off, nl, A = m.nb, m.off, m.nl, m.A
            background = c[:nb] @ A[:nb]
            halo = c[nb:off] @ A[nb:off] if off > nb else np.zeros_like(background)
            phases = c[off:nl] @ A[off:nl]
            curve = background + halo
            curve += phases
            r = self.y - curve
            r *= r
            self.parts = (background, halo, phases, curve, float(self.w @ r))
            self.parts_c, self.parts_version = c, m.col_version
        return self.parts

    def joint(self, g: FloatArray, h: FloatArray, rows: list[int], lin: Linear, params: Params) -> Step:
        """Joint linearised normal equations over [A; s·∂model/∂θ] (Kaufman), from the Gram by a change of basis."""
        nl = self.m.nl
        key = (tuple(rows), tuple(params))  # rows are the Gram's: a superset when pinned parameters are left out
        if key not in self.basis_of:
            self.basis_of[key] = self._basis_recipe(rows, params)
        template, tr, tc, src, nonneg, warm = self.basis_of[key]
        t = template.copy()
        t[tr, tc] = lin.c[src]
        gj = t.T @ g @ t
        hj = t.T @ h
        warm = warm.copy()
        warm[:nl] = lin.passive
        x, passive = bounded_lsq(gj, hj, nonneg, warm)
        return Step(x, gj, passive, x[nl:], t)

    def _basis_recipe(self, rows: list[int], params: Params) -> tuple:
        """Where the scales enter the change of basis of `joint` for this parameter set: the identity block over
        the linear columns, (row, column, scale index) of each derivative entry, and the joint non-negativity."""
        m = self.m
        nl, np_, off = m.nl, m.np, m.off
        pos = {r: k for k, r in enumerate(rows)}
        zero_phases = sorted({i for kind, i in params if kind in ("strain", "width")})
        entries: list[tuple[int, int, int]] = []
        for k, (kind, i) in enumerate(params):
            col = nl + k
            if kind == "strain":
                entries.append((pos[nl + 3 * i], col, off + i))
            elif kind == "width":
                entries.append((pos[nl + 3 * i + 1], col, off + i))
            elif kind == "zero":
                entries += [(pos[nl + 3 * p + 2], col, off + p) for p in zero_phases]
            elif kind == "hq":
                entries.append((pos[nl + 3 * np_ + 2 * i], col, m.nb + i))
            else:
                entries.append((pos[nl + 3 * np_ + 2 * i + 1], col, m.nb + i))
        n = nl + len(params)
        template = np.zeros((len(rows), n))
        template[np.arange(nl), np.arange(nl)] = 1.0
        tr, tc, src = (np.array(v, dtype=np.intp) for v in zip(*entries)) if entries else (np.zeros(0, np.intp),) * 3
        nonneg = np.zeros(n, dtype=bool)
        nonneg[:nl] = m.nonneg
        return template, tr, tc, src, nonneg, np.ones(n, dtype=bool)
