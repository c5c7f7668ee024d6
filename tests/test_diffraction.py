"""Diffraction from crystal structures: checks against pymatgen, Jana2006 F² and a measured synchrotron profile."""

from __future__ import annotations

import math
from pathlib import Path

import gemmi
import numpy as np
import pytest
from scipy.optimize import curve_fit

from hotstage.analysis.crystal import DEFAULT_UISO, Crystal
from hotstage.analysis.profiles import caglioti_fwhm, pseudo_voigt, render_peaks, scherrer_fwhm
from hotstage.analysis.radiation import CU_KA1_ANGSTROM, CU_KA2_ANGSTROM, Radiation

CIF_DIR = Path(__file__).resolve().parent / "data" / "cif"  # copies of shared reference CIFs (see SOURCES.md)
BETA_CIF = CIF_DIR / "CsPbI3_beta_P4mbm_Marronnier2018_510K_CCDC1872726.cif"
DELTA_CIF = CIF_DIR / "CsPbI3_delta_Pnma_Stoumpos2013_293K_CCDC968118.cif"
BUILTIN_DIR = Path(__file__).resolve().parents[1] / "analysis" / "data"


# --------------------------------------------------------------------------- helpers
def _merge_by_two_theta(two_theta: np.ndarray, intensity: np.ndarray, tol: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """Sum intensities of reflections at the same 2θ (as pymatgen does) and rescale to max 100."""
    key = np.round(two_theta / tol).astype(np.int64)
    uk, inv = np.unique(key, return_inverse=True)
    summed = np.bincount(inv, weights=intensity)
    tt = np.bincount(inv, weights=two_theta) / np.bincount(inv)
    return tt, 100.0 * summed / summed.max()


def _pymatgen_structures() -> dict:
    """Structures our code has never seen, built with pymatgen (plus δ-CsPbI3 read by pymatgen)."""
    from pymatgen.core import Lattice, Structure

    return {
        "NaCl": Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.6402), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        "Si": Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.43102), ["Si"], [[0, 0, 0]]),
        "CsCl": Structure.from_spacegroup("Pm-3m", Lattice.cubic(4.123), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        "TiO2-rutile": Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.5937, 2.9587), ["Ti", "O"],
                                                 [[0, 0, 0], [0.30478, 0.30478, 0]]),
        "ZnO-wurtzite": Structure.from_spacegroup("P6_3mc", Lattice.hexagonal(3.2495, 5.2069), ["Zn", "O"],
                                                  [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.3819]]),
        "CsPbI3-delta-pymatgen": Structure.from_file(str(DELTA_CIF)),
    }


def _fwhm_of(x: np.ndarray, y: np.ndarray) -> float:
    """FWHM of a single peak on a grid, by linear interpolation of the half-maximum crossings."""
    i = int(np.argmax(y))
    half = y[i] / 2.0
    j = i
    while y[j] > half:
        j -= 1
    left = x[j] + (half - y[j]) * (x[j + 1] - x[j]) / (y[j + 1] - y[j])
    j = i
    while y[j] > half:
        j += 1
    right = x[j - 1] + (half - y[j - 1]) * (x[j] - x[j - 1]) / (y[j] - y[j - 1])
    return right - left


# --------------------------------------------------------------------------- 1. established calculator
@pytest.mark.parametrize("name", list(_pymatgen_structures()))
def test_matches_pymatgen_xrdcalculator(name: str, tmp_path: Path) -> None:
    """Peak positions (< 0.001°) and strong relative intensities (±1.0 on 0–100) equal pymatgen's, U = 0."""
    from pymatgen.analysis.diffraction.xrd import WAVELENGTHS, XRDCalculator
    from pymatgen.io.cif import CifWriter

    structure = _pymatgen_structures()[name]
    path = tmp_path / f"{name}.cif"
    CifWriter(structure, symprec=0.01).write_file(str(path))  # symmetrised: our reader must expand it
    assert "_symmetry_equiv_pos_as_xyz" in path.read_text()
    crystal = Crystal.from_cif(path, default_uiso=0.0)  # pymatgen: no Debye–Waller
    assert len(crystal._atom_occ) == len(structure)  # symmetry expansion recovers every atom of the cell

    pat = XRDCalculator(wavelength="CuKa1").get_pattern(structure, scaled=True, two_theta_range=(0, 90))
    px, py = np.asarray(pat.x), np.asarray(pat.y)
    # pymatgen's "CuKa1" is 1.54056 Å; use the same wavelength so positions compare like for like.
    table = crystal.reflections(WAVELENGTHS["CuKa1"], 90.0)
    ox, oy = _merge_by_two_theta(table.two_theta, table.intensity)

    strong_p = px[py >= 10.0]
    strong_o = ox[oy >= 10.0]
    assert len(strong_p) >= 5
    assert len(strong_o) == len(strong_p)
    for x, y in zip(px[py >= 10.0], py[py >= 10.0]):
        j = int(np.argmin(np.abs(ox - x)))
        assert abs(ox[j] - x) < 1e-3, f"{name}: peak at {x:.4f} vs ours {ox[j]:.4f}"
        assert abs(oy[j] - y) < 1.0, f"{name}: I({x:.3f}) pymatgen {y:.2f} vs ours {oy[j]:.2f}"
    # and every pymatgen peak (any intensity) is where one of ours is
    assert np.max(np.min(np.abs(px[:, None] - ox[None, :]), axis=1)) < 1e-3


@pytest.mark.parametrize("builtin", ["CsPbI3-gamma", "CsPbI3-alpha"])
def test_builtin_settings_match_pymatgen(builtin: str) -> None:
    """Our shipped CIFs (γ in the non-standard Pnam setting) give pymatgen's pattern when read by pymatgen."""
    from pymatgen.analysis.diffraction.xrd import WAVELENGTHS, XRDCalculator
    from pymatgen.core import Structure

    path = BUILTIN_DIR / f"{builtin.replace('-', '_')}.cif"
    crystal = Crystal.from_cif(path, default_uiso=0.0)
    structure = Structure.from_file(str(path))
    assert len(crystal._atom_occ) == len(structure) == {"CsPbI3-gamma": 20, "CsPbI3-alpha": 5}[builtin]
    pat = XRDCalculator(wavelength="CuKa1").get_pattern(structure, scaled=True, two_theta_range=(5, 60))
    table = crystal.reflections(WAVELENGTHS["CuKa1"], 60.0, 5.0)
    ox, oy = _merge_by_two_theta(table.two_theta, table.intensity)
    for x, y in zip(pat.x, pat.y):
        if y < 10.0:
            continue
        j = int(np.argmin(np.abs(ox - x)))
        assert abs(ox[j] - x) < 1e-3 and abs(oy[j] - y) < 1.0


def test_beta_f_squared_matches_jana_refinement() -> None:
    """β-CsPbI3 |F|² (anisotropic U, P4/mbm) agree with the F²calc list of the 2018 Jana2006 refinement."""
    block = gemmi.cif.read(str(BETA_CIF)).sole_block()
    t = block.find(["_refln_index_h", "_refln_index_k", "_refln_index_l", "_refln_F_squared_calc", "_refln_d_spacing"])
    hkl = np.array([[int(r[0]), int(r[1]), int(r[2])] for r in t])
    f2_jana = np.array([float(r[3]) for r in t])
    d = np.array([float(r[4]) for r in t])
    assert len(hkl) == 102
    crystal = Crystal.builtin("CsPbI3-beta")
    f2 = crystal._f_squared(hkl, 0.25 / d ** 2)
    assert np.max(np.abs(f2 - f2_jana)) / f2_jana.max() < 1e-3  # whole list within 0.1 % of the largest
    strong = f2_jana > 0.05 * f2_jana.max()
    assert strong.sum() >= 20
    assert np.max(np.abs(f2 - f2_jana)[strong] / f2_jana[strong]) < 0.01  # strong ones within 1 %


# --------------------------------------------------------------------------- 2. measured β profile
def test_beta_positions_match_measured_synchrotron_profile() -> None:
    """Isolated strong β reflections sit within 0.01° of the peaks fitted in the measured 510 K profile."""
    block = gemmi.cif.read(str(BETA_CIF)).sole_block()
    t = block.find(["_pd_proc_2theta_corrected", "_pd_proc_intensity_net"])
    x = np.array([float(r[0]) for r in t])
    y = np.array([float(r[1]) for r in t])
    assert len(x) == 8999 and x[0] == pytest.approx(2.002) and x[-1] == pytest.approx(19.998)

    table = Crystal.builtin("CsPbI3-beta").reflections(Radiation.synchrotron(0.41391), 19.9, 2.1)

    def model(xx: np.ndarray, c0: float, area: float, w: float, eta: float, b0: float, b1: float) -> np.ndarray:
        return area * pseudo_voigt(xx, c0, w, eta) + b0 + b1 * (xx - c0)

    checked = []
    for i in range(len(table)):
        tt = table.two_theta[i]
        dist = np.abs(table.two_theta - tt)
        dist[i] = np.inf
        if table.intensity[i] < 3.0 or dist[table.intensity > 0.01 * table.intensity[i]].min() < 0.15:
            continue
        m = np.abs(x - tt) < 0.07
        p0 = [x[m][np.argmax(y[m])], (y[m].max() - y[m].min()) * 0.02, 0.02, 0.5, y[m].min(), 0.0]
        p, _ = curve_fit(model, x[m], y[m], p0=p0,
                         bounds=([tt - 0.05, 0, 0.003, 0, -np.inf, -np.inf], [tt + 0.05, np.inf, 0.1, 1, np.inf, np.inf]))
        checked.append((table.h[i], table.k[i], table.l[i], tt, p[0]))
        assert abs(p[0] - tt) < 0.01, f"({table.h[i]}{table.k[i]}{table.l[i]}) calc {tt:.4f} measured {p[0]:.4f}"
    assert len(checked) >= 5
    hkls = {(int(h), int(k), int(l)) for h, k, l, *_ in checked}
    assert {(2, 0, 1), (2, 1, 1), (4, 0, 2)} <= hkls


# --------------------------------------------------------------------------- 3. built-ins and physics
HILL_HOWARD = {  # SOURCES.md, "Hill–Howard weights (ZMV)"
    "CsPbI3-alpha": 1 * 720.8 * 248.79,
    "CsPbI3-beta": 2 * 720.8 * 490.78,
    "CsPbI3-gamma": 4 * 720.8 * 947.24,
    "CsPbI3-delta": 4 * 720.8 * 887.78,
    "CsI": 1 * 259.81 * 95.24,
}


@pytest.mark.parametrize("name", list(HILL_HOWARD))
def test_builtins_load_with_zmv_and_citation(name: str) -> None:
    """Every built-in loads (case-insensitively), cites its source and has SOURCES.md's Z·M·V within 0.5 %."""
    crystal = Crystal.builtin(name.upper())
    assert crystal is Crystal.builtin(name)
    assert crystal.zmv == pytest.approx(HILL_HOWARD[name], rel=5e-3)
    assert crystal.citation
    if name != "CsI":
        assert "doi:10." in crystal.citation
    assert set(Crystal.builtin_names()) == set(HILL_HOWARD)


def test_builtin_default_and_given_displacements() -> None:
    """Files without ADPs (α, γ, CsI) get DEFAULT_UISO; δ keeps its refined anisotropic U."""
    for name in ("CsPbI3-alpha", "CsPbI3-gamma", "CsI"):
        assert all(s.uiso == DEFAULT_UISO and s.uaniso is None for s in Crystal.builtin(name).sites)
    delta = {s.label: s for s in Crystal.builtin("CsPbI3-delta").sites}
    assert delta["Pb"].uaniso == pytest.approx((0.03009, 0.02729, 0.02641, 0.0, 0.00212, 0.0))


def test_csi_lines_and_multiplicities() -> None:
    """CsI: (110) strongest at 27.60° (Cu Kα1), cubic multiplicities, (100)/(111) nearly extinct."""
    table = Crystal.builtin("CsI").reflections(Radiation.cu_ka1(), 60.0)
    rows = {(int(h), int(k), int(l)): i for i, (h, k, l) in enumerate(zip(table.h, table.k, table.l))}
    i110 = rows[(1, 1, 0)]
    assert table.intensity[i110] == pytest.approx(100.0)
    assert table.two_theta[i110] == pytest.approx(27.60, abs=0.01)
    assert {hkl: int(table.multiplicity[i]) for hkl, i in rows.items()} == {
        (1, 0, 0): 6, (1, 1, 0): 12, (1, 1, 1): 8, (2, 0, 0): 6, (2, 1, 0): 24, (2, 1, 1): 24, (2, 2, 0): 12}
    assert table.intensity[rows[(1, 0, 0)]] < 0.5 and table.intensity[rows[(1, 1, 1)]] < 0.5
    assert table.two_theta[rows[(2, 1, 1)]] == pytest.approx(48.81, abs=0.01)


def test_gamma_pnam_systematic_absences() -> None:
    """γ in Pnam: 0kl needs k+l even (n ⊥ a) and h0l needs h even (a ⊥ b); and such reflections do exist."""
    t = Crystal.builtin("CsPbI3-gamma").reflections(CU_KA1_ANGSTROM, 80.0)
    zero_h = t.h == 0
    zero_k = t.k == 0
    assert zero_h.sum() > 5 and zero_k.sum() > 5
    assert np.all((t.k[zero_h] + t.l[zero_h]) % 2 == 0)
    assert np.all(t.h[zero_k] % 2 == 0)
    # orthorhombic mmm: general hkl multiplicity 8
    general = (t.h != 0) & (t.k != 0) & (t.l != 0)
    assert np.all(t.multiplicity[general] == 8)


def test_synchrotron_differs_from_lab_only_by_polarisation() -> None:
    """At the same λ, synchrotron / lab intensities = (p + (1−p)cos²2θ) / ((1 + cos²2θ)/2) for every peak."""
    crystal = Crystal.builtin("CsPbI3-delta")
    lam = 0.41391
    tt_lab, i_lab = crystal.peaks(lam, 20.0)
    tt_syn, i_syn = crystal.peaks(Radiation.synchrotron(lam, polarisation=0.95), 20.0)
    np.testing.assert_array_equal(tt_lab, tt_syn)
    c2 = np.cos(np.radians(tt_lab)) ** 2
    np.testing.assert_allclose(i_syn / i_lab, (0.95 + 0.05 * c2) / (0.5 * (1 + c2)), rtol=1e-12)
    _, i_half = crystal.peaks(Radiation.synchrotron(lam, polarisation=0.5), 20.0)
    np.testing.assert_allclose(i_half, i_lab, rtol=1e-12)  # p = 0.5 is an unpolarised beam


def test_monochromator_polarisation() -> None:
    """A graphite monochromator (2θ_M = 26.6°) changes intensities by (1+K cos²2θ)/(1+K) / ((1+cos²2θ)/2)."""
    crystal = Crystal.builtin("CsI")
    tt, i0 = crystal.peaks(Radiation.cu_ka1(), 120.0)
    _, im = crystal.peaks(Radiation.cu_ka1(monochromator_two_theta=26.6), 120.0)
    k = math.cos(math.radians(26.6)) ** 2
    c2 = np.cos(np.radians(tt)) ** 2
    np.testing.assert_allclose(im / i0, ((1 + k * c2) / (1 + k)) / (0.5 * (1 + c2)), rtol=1e-12)
    # relative to an unpolarised beam the monochromator-polarised beam loses less at high angle:
    # (1+K c)/(1+K) − (1+c)/2 = (1−K)(1−c)/(2(1+K)) > 0
    assert np.all(im[tt > 20] > i0[tt > 20] * 1.01)


def test_cu_ka_doublet_gives_ka2_shoulder() -> None:
    """Cu Kα: each line has a Kα2 partner at λ2, half as strong (×LP ratio), resolved at CsI (110)."""
    crystal = Crystal.builtin("CsI")
    tt, inten = crystal.peaks(Radiation.cu_ka(), 60.0)
    n = len(tt) // 2
    t1, t2, i1, i2 = tt[:n], tt[n:], inten[:n], inten[n:]
    theta1 = np.radians(t1) / 2
    expected_t2 = np.degrees(2 * np.arcsin(np.sin(theta1) * CU_KA2_ANGSTROM / CU_KA1_ANGSTROM))
    np.testing.assert_allclose(t2, expected_t2, atol=1e-9)
    np.testing.assert_allclose(i2 / i1, 0.5, rtol=0.01)  # 0.5 × LP(2θ₂)/LP(2θ₁)
    x = np.arange(27.3, 27.9, 0.002)
    narrow = dict(caglioti=(0.0, 0.0, 0.0004), eta=0.5)  # 0.02° FWHM resolves the doublet (Δ2θ ≈ 0.070°)
    y = crystal.pattern(x, Radiation.cu_ka(), **narrow)
    y1 = crystal.pattern(x, Radiation.cu_ka1(), **narrow)
    peaks = [i for i in range(1, len(y) - 1) if y[i] > y[i - 1] and y[i] >= y[i + 1] and y[i] > 0.1 * y.max()]
    assert len(peaks) == 2
    assert x[peaks[0]] == pytest.approx(27.601, abs=0.003)
    assert x[peaks[1]] - x[peaks[0]] == pytest.approx(0.0700, abs=0.003)
    assert y[peaks[1]] / y[peaks[0]] == pytest.approx(0.5, abs=0.05)
    assert np.trapezoid(y - y1, x) / np.trapezoid(y1, x) == pytest.approx(0.5, rel=0.02)


def test_strain_shifts_peaks_to_lower_angle() -> None:
    """+1 % isotropic strain: sinθ falls by exactly 1/(1.01) for every line, all peaks move down."""
    crystal = Crystal.builtin("CsPbI3-gamma")
    tt0, i0 = crystal.peaks(Radiation.cu_ka1(), 50.0)
    tt1, i1 = crystal.peaks(Radiation.cu_ka1(), 50.0, strain=0.01)
    n = min(len(tt0), len(tt1))
    assert np.all(tt1[:n] < tt0[:n])
    np.testing.assert_allclose(np.sin(np.radians(tt1[:n]) / 2) * 1.01, np.sin(np.radians(tt0[:n]) / 2), rtol=1e-12)
    x = np.linspace(10, 40, 3000)
    y0 = crystal.pattern(x, CU_KA1_ANGSTROM)
    y1 = crystal.pattern(x, CU_KA1_ANGSTROM, strain=0.01)
    c0 = (x * y0).sum() / y0.sum()
    c1 = (x * y1).sum() / y1.sum()
    assert c1 < c0 - 0.2


def test_scherrer_size_broadens_to_the_expected_width() -> None:
    """20 nm crystallites broaden CsI (110) to Kλ/(L cosθ) = 0.409° (measured on the rendered profile, ±2 %)."""
    crystal = Crystal.builtin("CsI")
    x = np.arange(25.0, 30.2, 0.001)
    sharp = crystal.pattern(x, Radiation.cu_ka1(), caglioti=(0, 0, 1e-5), eta=None)  # 0.0032° FWHM
    broad = crystal.pattern(x, Radiation.cu_ka1(), caglioti=(0, 0, 1e-8), eta=None, size_nm=20.0)
    expected = float(scherrer_fwhm(20.0, CU_KA1_ANGSTROM, 27.601))
    assert expected == pytest.approx(math.degrees(0.9 * CU_KA1_ANGSTROM / (200.0 * math.cos(math.radians(13.8)))), rel=1e-3)
    assert _fwhm_of(x, broad) == pytest.approx(expected, rel=0.02)
    assert _fwhm_of(x, sharp) < 0.01
    tt, inten = crystal.peaks(Radiation.cu_ka1(), 30.2)
    area = inten[(tt > 26.0) & (tt < 29.0)].sum()  # only (110) in this range
    assert np.trapezoid(broad, x) == pytest.approx(area, rel=0.01)  # broadening keeps the area


def test_zero_shift_translates_pattern() -> None:
    """pattern(x, zero_shift=s) equals the unshifted pattern evaluated at x − s."""
    crystal = Crystal.builtin("CsPbI3-delta")
    x = np.linspace(10, 50, 4001)
    shifted = crystal.pattern(x, CU_KA1_ANGSTROM, zero_shift=0.05)
    reference = crystal.pattern(x - 0.05, CU_KA1_ANGSTROM)
    np.testing.assert_allclose(shifted, reference, rtol=1e-9, atol=1e-9 * reference.max())
    assert x[np.argmax(shifted)] - x[np.argmax(crystal.pattern(x, CU_KA1_ANGSTROM))] == pytest.approx(0.05, abs=0.011)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_pattern_integrates_to_sum_of_peak_areas(eta: float) -> None:
    """∫ pattern d2θ = scale · Σ peak intensities (peaks well inside the grid), within 0.3 %, any η."""
    crystal = Crystal.builtin("CsPbI3-gamma")
    rad = Radiation.cu_ka()
    x = np.linspace(5.0, 60.0, 20001)
    y = crystal.pattern(x, rad, eta=eta, size_nm=80.0, scale=3.0)
    tt, inten = crystal.peaks(rad, 60.0)
    # integration limits chosen in gaps between peaks, so no peak straddles them
    cand = np.linspace(6.0, 9.0, 301)
    lo = cand[np.argmax([np.min(np.abs(tt - c)) for c in cand])]
    cand = np.linspace(55.0, 58.0, 301)
    hi = cand[np.argmax([np.min(np.abs(tt - c)) for c in cand])]
    assert min(np.min(np.abs(tt - lo)), np.min(np.abs(tt - hi))) > 0.15
    edge = (tt > lo) & (tt < hi)
    inside = (x >= lo) & (x <= hi)
    total = np.trapezoid(y[inside], x[inside])
    assert total == pytest.approx(3.0 * inten[edge].sum(), rel=3e-3)


def test_render_peaks_matches_dense_evaluation() -> None:
    """The windowed renderer equals a dense pseudo-Voigt sum to 1 % of the peak height (window ±6 FWHM)."""
    x = np.linspace(10, 20, 2001)
    centres = np.array([11.0, 12.5, 12.56, 17.3])
    areas = np.array([1.0, 2.0, 0.5, 3.0])
    fwhm = caglioti_fwhm(centres, 0.01, -0.005, 0.005)
    fast = render_peaks(x, centres, areas, fwhm, 0.5)
    dense = sum(a * pseudo_voigt(x, c, w, 0.5) for c, a, w in zip(centres, areas, fwhm))
    assert np.max(np.abs(fast - dense)) < 0.01 * dense.max()


def test_hill_howard_invariant_to_cell_choice(tmp_path: Path) -> None:
    """NaCl in its F cell and in a primitive P1 cell: pattern ratio equals the ZMV ratio (16), so W_p = s·ZMV works."""
    from pymatgen.core import Lattice, Structure
    from pymatgen.io.cif import CifWriter

    conv = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.6402), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    prim = conv.get_primitive_structure()
    CifWriter(conv, symprec=0.01).write_file(str(tmp_path / "conv.cif"))
    CifWriter(prim).write_file(str(tmp_path / "prim.cif"))  # P1, no symmetry
    c_conv = Crystal.from_cif(tmp_path / "conv.cif")
    c_prim = Crystal.from_cif(tmp_path / "prim.cif")
    assert c_conv.zmv / c_prim.zmv == pytest.approx(16.0, rel=1e-6)
    x = np.linspace(20, 90, 7001)
    ratio = np.trapezoid(c_conv.pattern(x, CU_KA1_ANGSTROM), x) / np.trapezoid(c_prim.pattern(x, CU_KA1_ANGSTROM), x)
    assert ratio == pytest.approx(c_conv.zmv / c_prim.zmv, rel=1e-6)
    # so equal weights of the same material give equal Hill–Howard fractions from the fitted scales
    s_conv, s_prim = 1.0, ratio  # scales that reproduce the same observed pattern
    w_conv = s_conv * c_conv.zmv / (s_conv * c_conv.zmv + s_prim * c_prim.zmv)
    assert w_conv == pytest.approx(0.5, abs=1e-6)


def test_isotropic_aniso_equals_uiso(tmp_path: Path) -> None:
    """An anisotropic tensor U·I on a cubic cell gives the same |F|² as U_iso = U; the default U applies otherwise."""
    base = """data_t
_cell_length_a 4.1
_cell_length_b 4.1
_cell_length_c 4.1
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_space_group_name_H-M_alt 'P m -3 m'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
{extra_head}
Cs1 Cs 0 0 0 {extra1}
Cl1 Cl 0.5 0.5 0.5 {extra2}
{tail}"""
    iso = base.format(extra_head="_atom_site_U_iso_or_equiv", extra1="0.02", extra2="0.03", tail="")
    ani = base.format(extra_head="_atom_site_U_iso_or_equiv", extra1="0.02", extra2="0.03", tail="""loop_
_atom_site_aniso_label
_atom_site_aniso_U_11
_atom_site_aniso_U_22
_atom_site_aniso_U_33
_atom_site_aniso_U_12
_atom_site_aniso_U_13
_atom_site_aniso_U_23
Cs1 0.02 0.02 0.02 0 0 0
Cl1 0.03 0.03 0.03 0 0 0
""")
    none = base.format(extra_head="", extra1="", extra2="", tail="")
    for name, text in (("iso", iso), ("ani", ani), ("none", none)):
        (tmp_path / f"{name}.cif").write_text(text)
    t_iso = Crystal.from_cif(tmp_path / "iso.cif").reflections(CU_KA1_ANGSTROM, 100)
    t_ani = Crystal.from_cif(tmp_path / "ani.cif").reflections(CU_KA1_ANGSTROM, 100)
    np.testing.assert_allclose(t_ani.f_squared, t_iso.f_squared, rtol=1e-10)
    c_none = Crystal.from_cif(tmp_path / "none.cif")
    assert [s.uiso for s in c_none.sites] == [DEFAULT_UISO, DEFAULT_UISO]
    assert c_none.z == 1 and c_none.formula_mass == pytest.approx(132.905 + 35.45, rel=1e-3)


@pytest.mark.parametrize("eta", [0.0, 0.5, 0.95])
def test_render_peaks_tabulated_exp_is_within_2e6(eta: float) -> None:
    """The phase tables' tabulated Gaussian (`fast_exp`) stays within 2e-6 of each peak's height of exp's."""
    x = np.linspace(10.0, 80.0, 20_000)
    centres, areas, fwhm = np.array([20.0, 35.3, 61.7]), np.array([1.0, 2.5, 0.7]), np.array([0.08, 0.3, 1.1])
    exact = render_peaks(x, centres, areas, fwhm, eta)
    fast = render_peaks(x, centres, areas, fwhm, eta, fast_exp=True)
    height = (areas / fwhm).max()
    assert np.max(np.abs(fast - exact)) <= 2e-6 * height
    assert eta == 1.0 or np.max(np.abs(fast - exact)) > 0.0  # the table is in use
