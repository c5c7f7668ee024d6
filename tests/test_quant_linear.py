"""Bounded least squares on the Gram matrix (`hotstage.analysis.quant.linear`): agreement with SciPy's bounded solver."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import lsq_linear

from hotstage.analysis.quant.linear import bounded_lsq, chi2_from_gram, replacement_chi2

N_FREE, N_NONNEG, N_PTS = 4, 8, 200


def _design(rng: np.random.Generator, n_free: int = N_FREE, n_nonneg: int = N_NONNEG, m: int = N_PTS) -> np.ndarray:
    """m×n design: free columns of either sign, non-negative columns with positive entries (like peak profiles)."""
    return np.hstack([rng.normal(size=(m, n_free)), np.abs(rng.normal(size=(m, n_nonneg))) + 0.1])


def _nonneg(n_free: int = N_FREE, n_nonneg: int = N_NONNEG) -> np.ndarray:
    return np.r_[np.zeros(n_free, bool), np.ones(n_nonneg, bool)]


def _candidates(a, y, cols):
    """(cross, cc, cy) of candidate columns (rows of `cols`) against design a and data y."""
    return cols @ a, np.einsum("km,km->k", cols, cols), cols @ y


def _problem(rng, c_nonneg, noise=0.5):
    """Random problem with data from the given non-negative coefficients (free ones random)."""
    a = _design(rng)
    c = np.r_[rng.normal(size=N_FREE), c_nonneg]
    y = a @ c + rng.normal(0.0, noise, a.shape[0])
    return a, y, c, a.T @ a, a.T @ y, float(y @ y)


def _rel(a, b):
    return np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300))


# ---------------------------------------------------------------------------------------------- bounded_lsq
@pytest.mark.parametrize("seed", range(10))
def test_bounded_lsq_matches_scipy(seed):
    rng = np.random.default_rng(1000 + seed)
    # three of the non-negative truths are negative: their bounds end up active
    c_nonneg = np.r_[rng.uniform(0.5, 2.0, N_NONNEG - 3), -rng.uniform(0.5, 2.0, 3)]
    a, y, _, g, h, yy = _problem(rng, c_nonneg)
    nonneg = _nonneg()
    x, passive = bounded_lsq(g, h, nonneg)
    lb = np.where(nonneg, 0.0, -np.inf)
    ref = lsq_linear(a, y, bounds=(lb, np.full(nonneg.size, np.inf)), method="bvls", tol=1e-14)
    assert np.sum(nonneg & ~passive) >= 2  # several constraints active
    assert np.all(x[nonneg] >= 0.0)
    assert np.linalg.norm(x - ref.x) <= 1e-8 * np.linalg.norm(ref.x)
    chi2_ref = float(np.sum((y - a @ ref.x) ** 2))
    assert chi2_from_gram(yy, g, h, x) == pytest.approx(chi2_ref, rel=1e-8)
    # any warm start reaches the same optimum
    for warm in (np.ones(nonneg.size, bool), rng.random(nonneg.size) < 0.5, passive):
        xw, _ = bounded_lsq(g, h, nonneg, warm)
        assert np.linalg.norm(xw - ref.x) <= 1e-8 * np.linalg.norm(ref.x)


def test_zero_column_is_never_passive():
    """A column that is all zero (a phase left out of the model) is held at 0 and not returned as passive, even when
    the warm start says passive: a singular passive sub-system would cost a least-squares solve at every step."""
    rng = np.random.default_rng(1500)
    a, y, _, _, _, _ = _problem(rng, rng.uniform(0.5, 2.0, N_NONNEG))
    a[:, N_FREE + 2] = 0.0
    g, h = a.T @ a, a.T @ y
    nonneg = _nonneg()
    x, passive = bounded_lsq(g, h, nonneg, np.ones(nonneg.size, bool))
    assert not passive[N_FREE + 2] and x[N_FREE + 2] == 0.0
    keep = np.arange(nonneg.size) != N_FREE + 2
    ref = lsq_linear(a[:, keep], y, bounds=(np.where(nonneg[keep], 0.0, -np.inf), np.inf), method="bvls", tol=1e-14)
    assert np.linalg.norm(x[keep] - ref.x) <= 1e-8 * np.linalg.norm(ref.x)


# ---------------------------------------------------------------------------------------------- replacement_chi2
ROW = N_FREE + 2  # a non-negative (phase-scale-like) column


def _reference_chi2(a: np.ndarray, y: np.ndarray, row: int, cols: np.ndarray, nonneg: np.ndarray) -> np.ndarray:
    """Independent reference: SciPy's bounded least squares on the design with column `row` replaced."""
    out = np.empty(cols.shape[0])
    lb = np.where(nonneg, 0.0, -np.inf)
    for k, col in enumerate(cols):
        ak = a.copy()
        ak[:, row] = col
        x = lsq_linear(ak, y, bounds=(lb, np.inf), method="bvls", tol=1e-14).x
        out[k] = float(np.sum((y - ak @ x) ** 2))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_replacement_chi2_matches_bounded_refits(seed):
    """Candidates that keep the active set, push another scale or their own onto the bound, duplicate a column, or
    replace a column held at 0: each χ² equals that of a bounded refit with the candidate in place."""
    rng = np.random.default_rng(3000 + seed)
    c_nonneg = rng.uniform(1.0, 2.0, N_NONNEG)
    a, y, c, g, h, yy = _problem(rng, c_nonneg)
    nonneg = _nonneg()
    _, passive = bounded_lsq(g, h, nonneg)
    j = N_FREE + 5
    good = a[:, ROW] * rng.uniform(0.8, 1.2, (6, 1)) + rng.normal(0.0, 0.05, (6, a.shape[0]))
    over = (c[ROW] * a[:, ROW] + 2.0 * c[j] * a[:, j]) / c[ROW]  # would need x_j = −c_j: held at 0
    cols = np.vstack([good, over, -y, a[:, N_FREE + 1] * 1.7])
    cross, cc, cy = _candidates(a, y, cols)
    for warm in (passive, np.where(np.arange(nonneg.size) == ROW, False, passive)):
        got = replacement_chi2(g, h, ROW, cross, cc, cy, nonneg, warm, yy)
        assert _rel(got, _reference_chi2(a, y, ROW, cols, nonneg)) < 1e-8


def test_replacement_chi2_free_row_and_random_problems():
    """A free replaced column (no sign condition), random warm passive sets and active constraints."""
    rng = np.random.default_rng(5000)
    nonneg = _nonneg()
    for trial in range(12):
        c_nonneg = np.where(rng.random(N_NONNEG) < 0.3, -1.0, 1.0) * rng.uniform(0.5, 2.0, N_NONNEG)
        a, y, _, g, h, yy = _problem(rng, c_nonneg)
        row = int(rng.integers(0, N_FREE)) if trial % 3 == 0 else int(rng.integers(N_FREE, nonneg.size))
        passive = rng.random(nonneg.size) < 0.6 if trial % 2 else bounded_lsq(g, h, nonneg)[1]
        cols = a[:, row] + rng.normal(0.0, rng.choice([0.05, 0.5, 2.0]), (6, a.shape[0]))
        cross, cc, cy = _candidates(a, y, cols)
        got = replacement_chi2(g, h, row, cross, cc, cy, nonneg, passive, yy)
        assert _rel(got, _reference_chi2(a, y, row, cols, nonneg)) < 1e-8
    assert replacement_chi2(g, h, row, cross[:0], cc[:0], cy[:0], nonneg, passive, yy).shape == (0,)
