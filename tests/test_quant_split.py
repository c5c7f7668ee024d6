"""The live quantifier's parts (`hotstage.analysis.quant.config/model/gram/solver/warm`) on their own.

`PhaseQuantifier` is a facade over a `PatternModel` (design rows), `NormalEquations` (Gram cache), a `Solver` and a
`WarmStart` policy sharing one `QuantConfig`. These tests pin what each part promises the others: the keyword and
the `config=` forms build the same quantifier; the model's rows agree with from-scratch renders and their
derivatives with finite differences; the Gram cache, after rows are rewritten, equals a fresh weighted product; the
solver recovers a synthetic pattern's scales; the warm policy reverts a held phase to its remembered (ε, Y).
Small synthetic problems (one or two phases, 1200 points), seeded; tolerances stated per assertion.
"""

from __future__ import annotations

import numpy as np
import pytest

from hotstage.analysis.crystal import Crystal
from hotstage.analysis.phase_quant import PhaseQuantifier
from hotstage.analysis.quant.config import QuantConfig
from hotstage.analysis.quant.gram import NormalEquations
from hotstage.analysis.quant.model import PatternModel
from hotstage.analysis.radiation import Radiation

AXIS = np.linspace(10.0, 50.0, 1200)
PHASES = ("CsPbI3-delta", "CsPbI3-alpha")


@pytest.fixture(scope="module")
def crystals() -> list[Crystal]:
    """Two phases whose peaks overlap little (δ orthorhombic, α cubic)."""
    return [Crystal.builtin(p) for p in PHASES]


def _model(crystals: list[Crystal], **kw) -> PatternModel:
    """A model over AXIS with Cu Kα and no halos unless asked."""
    return PatternModel(crystals, AXIS, Radiation.cu_ka(), None, QuantConfig(halos=kw.pop("halos", False), **kw))


def test_config_refuses_unknown_refine_options() -> None:
    with pytest.raises(ValueError, match="unknown refine options"):
        QuantConfig(refine=frozenset({"strain", "cell"}))


def test_keywords_and_config_build_the_same_quantifier(crystals: list[Crystal]) -> None:
    """`PhaseQuantifier(**keywords)` and `PhaseQuantifier(config=QuantConfig(**same))` fit identically (exact), and
    the settings still read as attributes of the quantifier."""
    rng = np.random.default_rng(3)
    m = _model(crystals)
    y = rng.poisson(50.0 + 400.0 * m.exact_phase_pattern(0, 0.002, 0.06) / m.norms[0]
                    + 150.0 * m.exact_phase_pattern(1, -0.001, 0.04) / m.norms[1]).astype(float)
    kw = dict(halos=False, background_order=4, size_nm=80.0)
    qa = PhaseQuantifier(crystals, AXIS, Radiation.cu_ka(), **kw)
    qb = PhaseQuantifier(crystals, AXIS, Radiation.cu_ka(), config=QuantConfig(**kw))
    a, b = qa.fit(y), qb.fit(y)
    assert a.weight_fractions == b.weight_fractions and a.chi2 == b.chi2
    # the settings read as attributes, as before the split
    assert qa.background_order == 4 and qa.refine == frozenset({"strain", "width", "zero"})
    assert qa.min_significance == 5.0 and list(qa.strain_start) == [0.0, 0.0]
    with pytest.raises(AttributeError):
        qa.no_such_setting


def test_model_rows_match_exact_render_and_finite_differences(crystals: list[Crystal]) -> None:
    """Table columns within 0.5 % (of the peak) of a from-scratch render; ∂/∂ε, ∂/∂Y, ∂/∂z within 2 % (norm) of
    central differences of the table columns (the table's own interpolation is what the solver differentiates)."""
    m = _model(crystals)
    m.eps[0], m.wid[0], m.zero = 1.5e-3, 0.05, 0.01
    m.held = set()
    m.update_columns(None)
    exact = m.exact_phase_pattern(0, 1.5e-3, 0.05, 0.01) / m.norms[0]
    col = m.A[m.off].copy()
    assert np.max(np.abs(col - exact)) <= 5e-3 * exact.max()
    analytic = m.dphase[0].copy()
    steps = (2e-5, 1e-3, 1e-3)
    for k, h in enumerate(steps):
        vals = []
        for sgn in (1.0, -1.0):
            e, w, z = 1.5e-3, 0.05, 0.01
            e, w, z = (e + sgn * h, w, z) if k == 0 else (e, w + sgn * h, z) if k == 1 else (e, w, z + sgn * h)
            m.zero = z
            out = np.empty(AXIS.size)
            m.phase_column(0, e, w, out)
            vals.append(out)
        m.zero = 0.01
        numeric = (vals[0] - vals[1]) / (2.0 * h)
        assert np.linalg.norm(analytic[k] - numeric) <= 0.02 * np.linalg.norm(numeric), k


def test_gram_cache_equals_a_fresh_product_after_rows_change(crystals: list[Crystal]) -> None:
    """After a phase's rows are rewritten, the cached Gram (only those rows re-multiplied) equals the full weighted
    product of the requested rows to 1e-12 relative."""
    m = _model(crystals)
    ne = NormalEquations(m)
    m.held = set()
    m.update_columns(None)
    rng = np.random.default_rng(5)
    y = rng.uniform(20.0, 200.0, AXIS.size)
    w = 1.0 / y
    ne.set_pattern(y, w)
    params = [("strain", 0), ("width", 0), ("zero", 0)]
    ne.gram(params)
    m.eps[0] += 1e-3
    m.update_columns(None)  # rewrites phase 0's column and derivative rows only
    g, gy, rows = ne.gram(params)
    sub = m.M[rows]
    fresh = (sub * w) @ sub.T
    assert np.max(np.abs(g - fresh)) <= 1e-12 * np.max(np.abs(fresh))
    fresh_y = sub @ (w * y)
    assert np.max(np.abs(gy - fresh_y)) <= 1e-12 * np.max(np.abs(fresh_y))


def test_solver_and_warm_policy_recover_scales_and_revert_held_phases(crystals: list[Crystal]) -> None:
    """A noise-free two-phase pattern: the cold fit recovers the weight fractions within 0.5 wt %; a warm fit of
    the same pattern stays within 0.5 wt %; a held phase moved off its remembered (ε, Y) is put back by the warm
    policy before the next fit."""
    probe = _model(crystals)
    true_scale = np.array([300.0, 120.0])
    y = 40.0 + sum(s * probe.exact_phase_pattern(p, 0.0, probe.width_start) / probe.norms[p]
                   for p, s in enumerate(true_scale))
    q = PhaseQuantifier(crystals, AXIS, Radiation.cu_ka(), halos=False, background_order=3)
    zmv = np.array([c.zmv for c in crystals]) / probe.norms
    want = true_scale * zmv / float(true_scale @ zmv)
    r = q.fit(y)
    got = np.array([r.weight_fractions[n] for n in PHASES])
    assert r.cold and np.max(np.abs(got - want)) <= 5e-3
    r2 = q.fit(y)
    got2 = np.array([r2.weight_fractions[n] for n in PHASES])
    assert not r2.cold and np.max(np.abs(got2 - want)) <= 5e-3
    warm, m = q.warm, q.model
    warm.width_refined = {0}  # phase 1 counts as held; remembered at (ε, Y) = (1e-3, 0.07)
    warm.good[1] = (1e-3, 0.07)
    m.eps[1], m.wid[1] = 0.02, 0.01
    warm.revert_held()
    assert (m.eps[1], m.wid[1]) == (1e-3, 0.07)
