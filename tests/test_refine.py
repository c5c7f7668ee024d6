"""hotstage.analysis.refine: whole-pattern refinement of measured patterns (issue 13, DONE-WHEN targets).

Simulated patterns come from `hotstage.simulated.synthesis.XRDSynthesizer`'s pseudo-Voigt path (its own peak lists
from `Crystal.peaks`, Caglioti widths in deg², TCH η, Poisson noise) — a different profile code from the refinement's
(`render_instrument_peaks`, reflections re-derived from refined cells), fitted with `Instrument.lab_default()`, whose
widths are the synthesizer's default Caglioti values.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from hotstage.analysis.crystal import Crystal
from hotstage.analysis.instrument import Instrument, read_instrument
from hotstage.analysis.patterns import read_pattern
from hotstage.analysis.refine import RefineInputError, crystal_system, free_cell_parameters, quantify
from hotstage.analysis.refine.model import PhaseModel, expand_cell
from hotstage.simulated.synthesis import XRDSynthesizer

from pathlib import Path

DATA = Path(__file__).parent / "data"
BETA_CIF = DATA / "cif" / "CsPbI3_beta_P4mbm_Marronnier2018_510K_CCDC1872726.cif"
PRM = DATA / "instruments" / "synchrotron-0.4139A-LaB6.prm"


def _state(wf: dict[str, float], size: float = 60.0) -> SimpleNamespace:
    """The parts of a SampleState the XRD synthesizer reads."""
    return SimpleNamespace(weight_fractions={**wf, "glass": 0.0}, crystallite_size_nm={p: size for p in wf},
                           strain={p: 0.0 for p in wf}, temperature_C=25.0, time_s=0.0)


def _truth(synth: XRDSynthesizer, names: list[str]) -> dict[str, float]:
    """Renormalised true weight fractions over `names`."""
    tr = synth.last_truth
    tot = sum(tr.get(f"wf_{n}", 0.0) for n in names)
    return {n: tr.get(f"wf_{n}", 0.0) / tot for n in names}


def test_crystal_systems_and_cell_constraints() -> None:
    """Free cell parameters follow gemmi's crystal system; constrained parameters follow the free ones."""
    assert free_cell_parameters(Crystal.builtin("CsPbI3-alpha")) == ("a",)
    assert free_cell_parameters(Crystal.builtin("CsPbI3-beta")) == ("a", "c")
    assert free_cell_parameters(Crystal.builtin("CsPbI3-delta")) == ("a", "b", "c")
    assert crystal_system(Crystal.builtin("CsI")) == "cubic"
    assert expand_cell("tetragonal", (1, 1, 2, 90, 90, 90), ("a", "c"), (3.0, 4.0)) == (3.0, 3.0, 4.0, 90, 90, 90)
    m = PhaseModel(Crystal.builtin("CsPbI3-beta"), Instrument.lab_default().radiation, 10.0, 40.0)
    assert m.parameter_names == ("a", "c", "inv_size", "strain")


def test_three_phase_mixture_weight_fractions() -> None:
    """δ 60 / β 34 / CsI 6 wt % (γ offered, absent), lab Cu Kα: each within 2 wt % abs, γ rejected, CsI kept."""
    names = ["CsPbI3-delta", "CsPbI3-beta", "CsI"]
    synth = XRDSynthesizer(phases={n: Crystal.builtin(n) for n in names})
    y = synth(_state({"CsPbI3-delta": 0.60, "CsPbI3-beta": 0.34, "CsI": 0.06}), 2.0, np.random.default_rng(3))
    truth = _truth(synth, names)
    offered = [Crystal.builtin(n) for n in names + ["CsPbI3-gamma"]]
    r = quantify(synth.axis, y, offered, Instrument.lab_default(), background_order=8, humps=0)
    assert "CsPbI3-gamma" in r.rejected, r.phases.keys()
    for n in names:
        assert abs(r.phases[n].weight_fraction - truth[n]) <= 0.02, (n, r.weight_fractions, truth)
    assert r.rwp < 0.2 and not r.warnings, (r.rwp, r.warnings)


def test_anisotropic_cell_recovered() -> None:
    """β with a × 1.005 and c × 0.995 (the CIF's own cell as the start): a and c within 1e-4 relative."""
    ref = Crystal.builtin("CsPbI3-beta")
    a, b, c = ref.cell[:3]
    true_cell = (a * 1.005, b * 1.005, c * 0.995, 90.0, 90.0, 90.0)
    strained = Crystal(ref.name, true_cell, ref.spacegroup, ref.sites, ref.symops, ref.z, ref.formula_mass)
    synth = XRDSynthesizer(phases={"CsPbI3-beta": strained, "CsPbI3-delta": Crystal.builtin("CsPbI3-delta")})
    y = synth(_state({"CsPbI3-beta": 1.0}), 20.0, np.random.default_rng(5))
    r = quantify(synth.axis, y, [ref], Instrument.lab_default(), background_order=8, humps=0)
    cell = r.phases["CsPbI3-beta"].cell
    assert abs(cell[0] / true_cell[0] - 1.0) <= 1e-4, cell
    assert abs(cell[2] / true_cell[2] - 1.0) <= 1e-4, cell


def test_sharp_peaks_with_too_broad_instrument_warn() -> None:
    """Peaks 4× narrower than the instrument claims: a warning that the instrument is wrong, β still the phase."""
    names = ["CsPbI3-beta"]
    synth = XRDSynthesizer(caglioti=(0.0, 0.0, 0.015 ** 2), phases={n: Crystal.builtin(n) for n in names})
    y = synth(_state({"CsPbI3-beta": 1.0}, size=1e4), 2.0, np.random.default_rng(11))
    r = quantify(synth.axis, y, [Crystal.builtin("CsPbI3-beta"), Crystal.builtin("CsI")], Instrument.lab_default(),
                 background_order=8, humps=0)
    assert any("sharper than the instrument" in w for w in r.warnings), r.warnings
    assert "CsI" in r.rejected


def test_warm_refit_from_previous_result() -> None:
    """A second noise draw fitted from the first result: same phases kept, weight fractions within 1 wt %, and
    reflection residuals for calibration are finite for the strong reflections."""
    names = ["CsPbI3-delta", "CsPbI3-beta"]
    synth = XRDSynthesizer(phases={n: Crystal.builtin(n) for n in names})
    rng = np.random.default_rng(2)
    st = _state({"CsPbI3-delta": 0.5, "CsPbI3-beta": 0.5})
    offered = [Crystal.builtin(n) for n in names]
    cold = quantify(synth.axis, synth(st, 2.0, rng), offered, Instrument.lab_default(), background_order=8, humps=0)
    warm = quantify(synth.axis, synth(st, 2.0, rng), offered, Instrument.lab_default(), background_order=8, humps=0,
                    start=cold)
    assert set(warm.phases) == set(cold.phases) == set(names)
    for n in names:
        assert abs(warm.phases[n].weight_fraction - cold.phases[n].weight_fraction) <= 0.01
    assert warm.n_evaluations < cold.n_evaluations
    res = warm.reflection_residuals("CsPbI3-beta")
    assert res["two_theta"].size == res["hkl"].shape[0] > 10
    assert np.nanmedian(np.abs(res["position"])) < 0.01  # deg, ~1/8 FWHM: positions agree (no zero error simulated)


def test_refine_zero_with_cell_fixed() -> None:
    """Calibration use: a 0.03° zero shift recovered within 0.002° with the cell fixed (refine_instrument, fix_cell)."""
    synth = XRDSynthesizer(zero_shift=0.03, phases={"CsPbI3-beta": Crystal.builtin("CsPbI3-beta")})
    y = synth(_state({"CsPbI3-beta": 1.0}), 5.0, np.random.default_rng(13))
    r = quantify(synth.axis, y, [Crystal.builtin("CsPbI3-beta")], Instrument.lab_default(), background_order=8,
                 humps=0, refine_instrument=("zero",), fix_cell=True)
    assert abs(r.instrument.zero - 0.03) <= 0.002, r.instrument.zero
    assert r.phases["CsPbI3-beta"].cell == Crystal.builtin("CsPbI3-beta").cell


def test_invalid_input() -> None:
    """Mis-shaped, unsorted or non-finite input and unknown names fail with one RefineInputError."""
    x = np.linspace(10, 40, 100)
    beta = [Crystal.builtin("CsPbI3-beta")]
    with pytest.raises(RefineInputError, match="finite"):
        quantify(x, np.full(100, np.nan), beta, Instrument.lab_default())
    with pytest.raises(RefineInputError, match="increasing"):
        quantify(x[::-1], np.ones(100), beta, Instrument.lab_default())
    with pytest.raises(RefineInputError, match="unknown instrument"):
        quantify(x, np.ones(100), beta, Instrument.lab_default(), refine_instrument=("bogus",))


def _measured_beta() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2θ, net intensity and σ of β-CsPbI3 at 510 K, read as a user would (`read_pattern`: its ls_weight column holds
    σ ≈ √I, which the reader detects; see tests/test_patterns.py)."""
    p = read_pattern(BETA_CIF)
    assert p.sigma is not None and p.wavelength == 0.41391
    return p.two_theta, p.counts, p.sigma


def test_measured_beta_with_instrument_file() -> None:
    """Measured β-CsPbI3 (510 K, λ 0.41391 Å), the 11-BM LaB6 instrument file, all five built-in phases offered,
    no hand-set widths or sizes: β ≥ 97 wt % with every other phase rejected, Rwp ≤ 0.14 (published wRp 0.1228).

    At the default cap of 60 sharp evaluations (this test): β 100 %, Rwp 0.136, α/γ/CsI at zero scale, δ rejected.
    Run to convergence by hand (`max_nfev=1000`, 676 sharp evaluations, 8–10 min on 2 shared cores) the answer is
    the same: CsI (p = 0.005), δ (its decoy, p = 0.02) and γ (p = 0.10) fail the F/decoy tests, α passes them
    (F = 21.8) but has no evidence of its own (`significance` step 6: p = 0.043 on its 632 own points).
    """
    x, y, s = _measured_beta()
    phases = [Crystal.builtin(n) for n in Crystal.builtin_names()]
    r = quantify(x, y, phases, read_instrument(PRM), sigma=s)
    assert r.rwp <= 0.14, r.rwp
    assert r.phases["CsPbI3-beta"].weight_fraction >= 0.97, r.weight_fractions
    for n in ("CsPbI3-alpha", "CsPbI3-gamma", "CsPbI3-delta", "CsI"):
        assert n in r.rejected, (n, r.weight_fractions)
    a, _, c = r.phases["CsPbI3-beta"].cell[:3]
    assert abs(a / 8.8269 - 1) < 2e-4 and abs(c / 6.29902 - 1) < 2e-4  # the CIF is this very refinement


def test_measured_beta_without_instrument_warns_or_is_right() -> None:
    """Same pattern with a bare wavelength (lab default widths, ~10× too broad): either β ≥ 90 wt % or a warning
    that the instrument is wrong — never an absent phase at tens of wt %."""
    x, y, s = _measured_beta()
    phases = [Crystal.builtin(n) for n in Crystal.builtin_names()]
    r = quantify(x, y, phases, Instrument.from_wavelength(0.41391), sigma=s)
    others = {k: v for k, v in r.weight_fractions.items() if k != "CsPbI3-beta"}
    assert r.warnings or r.weight_fractions.get("CsPbI3-beta", 0.0) >= 0.9, (r.weight_fractions, r.warnings)
    assert any("sharper than the instrument" in w for w in r.warnings), r.warnings  # measured: β 100 %, warned
    assert all(v < 0.1 for v in others.values()), (r.weight_fractions, r.warnings)


def test_peak_derivatives_match_finite_differences() -> None:
    """`render_peak_derivatives` (centre, FWHM, η, ln area; two peaks sharing rows) against central differences of
    `render_peaks` with windows wider than the grid (no window-edge jumps): within 1e-4 of the derivative's scale
    (its Gaussian is tabulated: 2e-6 of the peak height)."""
    from hotstage.analysis.profiles import render_peak_derivatives, render_peaks

    x = np.linspace(0.0, 10.0, 4001)
    c, a, w, e = np.array([3.0, 6.5]), np.array([1.0, 2.5]), np.array([0.1, 0.3]), np.array([0.3, 0.8])
    dc = np.array([[1.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0]])  # peak 2 moves twice as fast with θ_0
    dw = np.array([[0.0, 1.0, 0.0, 0.0], [0.0, 0.5, 0.0, 0.0]])
    de = np.array([[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, -1.0, 0.0]])
    da = np.array([[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 3.0]])
    got = render_peak_derivatives(x, c, a, w, e, dc, dw, de, da, window=200.0)
    h = 1e-5
    for j in range(4):
        up = render_peaks(x, c + h * dc[:, j], a * (1 + h * da[:, j]), w + h * dw[:, j], e + h * de[:, j], window=200.0)
        dn = render_peaks(x, c - h * dc[:, j], a * (1 - h * da[:, j]), w - h * dw[:, j], e - h * de[:, j], window=200.0)
        fd = (up - dn) / (2 * h)
        assert np.max(np.abs(got[:, j] - fd)) <= 1e-4 * np.max(np.abs(fd)), j


def test_phase_jacobian_matches_render_differences(monkeypatch: pytest.MonkeyPatch) -> None:
    """A phase's Jacobian columns (cell a, c, 1/size, strain, and the instrument zero) from `render_derivatives`
    against central differences of `render`, both windows widened so that truncation does not differ: within 1 %
    (the render's Gaussian is tabulated, whose piecewise-linear slope differs from exp's by ~1e-3)."""
    import hotstage.analysis.refine.model as model

    monkeypatch.setattr(model, "RENDER_WINDOW", 300.0)
    monkeypatch.setattr(model, "DERIVATIVE_WINDOW", 300.0)
    inst = Instrument.lab_default()
    x = np.linspace(20.0, 35.0, 3001)
    m = PhaseModel(Crystal.builtin("CsPbI3-beta"), inst.radiation, float(x[0]), float(x[-1]))
    p = m.start(size_nm=80.0, strain=5e-4)
    steps = [1e-5 * abs(v) for v in p]
    perturbed = []
    for j, h in enumerate(steps):
        q = p.copy()
        q[j] += h
        perturbed.append((q, inst, h))
    perturbed.append((p, inst.replace(zero=1e-5), 1e-5))
    got = m.render_derivatives(x, p, inst, perturbed)
    for j, h in enumerate(steps):
        q_up, q_dn = p.copy(), p.copy()
        q_up[j] += h
        q_dn[j] -= h
        fd = (m.render(x, q_up, inst) - m.render(x, q_dn, inst)) / (2 * h)
        assert np.linalg.norm(got[:, j] - fd) <= 0.01 * np.linalg.norm(fd), m.parameter_names[j]
    fd = (m.render(x, p, inst.replace(zero=1e-5)) - m.render(x, p, inst.replace(zero=-1e-5))) / 2e-5
    assert np.linalg.norm(got[:, -1] - fd) <= 0.01 * np.linalg.norm(fd)


def test_compressed_jacobian_keeps_the_normal_equations() -> None:
    """The (p + 1)-row stand-in the trust-region solver sees: JcᵀJc = JᵀJ and Jcᵀrc = Jᵀr for rc = (0, …, ‖r‖),
    with columns of very different scales (Å, nm⁻¹, ε); relative 1e-9."""
    from hotstage.analysis.refine.solver import compressed_jacobian

    rng = np.random.default_rng(4)
    j = rng.normal(size=(500, 4)) * np.array([1e3, 1.0, 1e-2, 1e5])
    r = rng.normal(size=500) + j @ np.array([1e-3, 0.5, 3.0, 1e-5])
    jc = compressed_jacobian(j.T @ j, j.T @ r, float(np.linalg.norm(r)))
    rc = np.zeros(5)
    rc[-1] = np.linalg.norm(r)
    scale = np.sqrt(np.outer(np.diag(j.T @ j), np.diag(j.T @ j)))
    assert np.max(np.abs(jc.T @ jc - j.T @ j) / scale) <= 1e-9
    assert np.max(np.abs(jc.T @ rc - j.T @ r) / (np.sqrt(np.diag(j.T @ j)) * np.linalg.norm(r))) <= 1e-9


def test_own_windows_counts_only_points_where_the_phase_outweighs_the_others() -> None:
    """The evidence test's points (`significance.own_windows`, step 6): a strong phase P0 (lines at 20° and 30°), a
    weak P1 with one line on P0's 20° line and one alone at 25°, a weak P2 whose only line sits on P0's 30° line.
    P1's own points are those within ±1 FWHM of 25° only; P2 has none and names P0 as the overlapping phase."""
    from hotstage.analysis.refine.significance import own_windows

    x = np.linspace(15.0, 35.0, 2001)
    fw = 0.1

    class Lines:
        def __init__(self, name: str, centres: list[float]) -> None:
            self.name, self.c = name, np.array(centres)

        def peaks(self, block: object, inst: object) -> tuple:
            n = self.c.size
            return self.c, np.ones(n), np.full(n, fw), np.zeros(n), np.arange(n)

        def column(self) -> np.ndarray:
            return sum(np.exp(-4 * math.log(2) * ((x - c) / fw) ** 2) for c in self.c)

    phases = [Lines("P0", [20.0, 30.0]), Lines("P1", [20.0, 25.0]), Lines("P2", [30.0])]
    ref = SimpleNamespace(x=x, phases=phases, phase_slices=[slice(0, 0)] * 3, active=np.ones(3, dtype=bool),
                          instrument=lambda theta: None)
    a = np.column_stack([p.column() for p in phases])
    coef = np.array([1.0, 0.05, 0.05])
    mask, over = own_windows(ref, np.zeros(0), a, coef, 1)  # type: ignore[arg-type]
    assert mask.any() and np.all(np.abs(x[mask] - 25.0) <= fw + 1e-9), x[mask]
    assert over == ("P0",)
    mask, over = own_windows(ref, np.zeros(0), a, coef, 2)  # type: ignore[arg-type]
    assert not mask.any() and over == ("P0",)
    mask, _ = own_windows(ref, np.zeros(0), a, coef, 0)  # P0 outweighs the others at both its lines
    near = (np.abs(x - 20.0) <= fw + 1e-9) | (np.abs(x - 30.0) <= fw + 1e-9)
    assert np.array_equal(mask, near)
