"""Instrument descriptions (analysis.instrument): the real 11-BM GSAS .prm, .instprm round trips, bad files, FCJ.

Numbers: the .prm (tests/data/instruments, SOURCES.md) is 11-BM's LaB6 (SRM 660a) profile: λ = 0.413909 Å,
GU 1.163, GV −0.126, GW 0.063 centideg², LX 0.173 centideg, S/L = H/L = 0.0011. The measured β-CsPbI3 profile
(tests/data/cif, same beamline and wavelength) has isolated peaks whose local pseudo-Voigt FWHMs are
0.0062–0.0069° between 3.8 and 10.7° 2θ (measured here, 7 peaks): the sample adds almost nothing to the
instrument, whose total FWHM there is 0.0067–0.0068°.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import gemmi
import numpy as np
import pytest
from scipy.optimize import curve_fit
from scipy.signal import find_peaks

from hotstage.analysis.instrument import (
    Instrument,
    InstrumentFileError,
    fcj_kernel,
    polarisation_fraction,
    read_instrument,
    render_instrument_peaks,
    write_instprm,
)
from hotstage.analysis.profiles import DEFAULT_CAGLIOTI, caglioti_fwhm, pseudo_voigt, tch_combine
from hotstage.analysis.radiation import Radiation

DATA = Path(__file__).resolve().parent / "data"
PRM = DATA / "instruments" / "synchrotron-0.4139A-LaB6.prm"
BETA_CIF = DATA / "cif" / "CsPbI3_beta_P4mbm_Marronnier2018_510K_CCDC1872726.cif"


@pytest.fixture(scope="module")
def sync() -> Instrument:
    return read_instrument(PRM)


def test_prm_fields(sync: Instrument) -> None:
    """Every number of the .prm lands in the right field with the documented unit conversion."""
    assert sync.radiation.lines == ((0.413909, 1.0),)
    assert sync.radiation.polarisation == "synchrotron"
    assert sync.radiation.synchrotron_polarisation == pytest.approx(0.99)
    assert (sync.u, sync.v, sync.w, sync.z) == (1.163, -0.126, 0.063, 0.0)
    assert (sync.x, sync.y) == (0.173, 0.0)
    assert (sync.s_l, sync.h_l) == (0.0011, 0.0011)
    assert sync.zero == 0.0 and sync.displacement_um == 0.0
    assert "11-BM" in sync.name


@pytest.mark.parametrize("tt", [5.0, 10.0, 20.0])
def test_prm_widths_match_hand_formula(sync: Instrument, tt: float) -> None:
    """FWHM_G = √(8 ln2 (GU tan²θ + GV tanθ + GW))/100, FWHM_L = LX/cosθ/100 (deg), TCH total: to 1e-12."""
    th = math.radians(tt / 2)
    g = math.sqrt(8 * math.log(2) * (1.163 * math.tan(th) ** 2 - 0.126 * math.tan(th) + 0.063)) / 100
    lo = 0.173 / math.cos(th) / 100
    assert float(sync.fwhm_gauss(tt)) == pytest.approx(g, rel=1e-12)
    assert float(sync.fwhm_lorentz(tt)) == pytest.approx(lo, rel=1e-12)
    total = float(tch_combine(g, lo)[0])
    assert float(sync.fwhm(tt)) == pytest.approx(total, rel=1e-12)
    assert 0.0066 <= total <= 0.0076  # the 0.0066–0.0074° widths of the beamline in 2–20°
    # the Caglioti deg² form the live quantifier uses gives the same Gaussian width
    assert float(caglioti_fwhm(tt, *sync.caglioti_deg2())) == pytest.approx(g, rel=1e-12)


def _measured_beta_fwhms() -> list[tuple[float, float]]:
    """(2θ, FWHM) of isolated strong peaks of the measured β profile, by local pseudo-Voigt + line fits."""
    block = gemmi.cif.read(str(BETA_CIF)).sole_block()
    table = block.find(["_pd_proc_2theta_corrected", "_pd_proc_intensity_net"])
    x, y = np.array([[float(r[0]), float(r[1])] for r in table]).T
    peaks, _ = find_peaks(y, prominence=2000, distance=15)

    def model(t, c, a, w, e, b0, b1):
        return a * pseudo_voigt(t, c, w, e) + b0 + b1 * (t - c)

    out = []
    for i in peaks:
        if np.min(np.abs(np.delete(x[peaks], np.flatnonzero(peaks == i)) - x[i])) < 0.06:
            continue  # not isolated
        sel = np.abs(x - x[i]) < 0.03
        p, _ = curve_fit(model, x[sel], y[sel], p0=[x[i], y[i] * 0.007, 0.007, 0.3, y[sel].min(), 0.0],
                         bounds=([x[i] - 0.01, 0, 0.001, 0, -np.inf, -np.inf], [x[i] + 0.01, np.inf, 0.05, 1,
                                                                                np.inf, np.inf]))
        out.append((p[0], p[2]))
    return out


def test_prm_widths_match_measured_beta_profile(sync: Instrument) -> None:
    """The instrument's FWHM agrees with the widths observed in the β profile measured at the same beamline:
    each within ±10 % (the grid step, 0.002°, is 0.3 FWHM), the mean ratio within ±4 % (measured: 0.983)."""
    fits = _measured_beta_fwhms()
    assert len(fits) >= 5
    ratios = np.array([w / float(sync.fwhm(t)) for t, w in fits])
    assert np.all(np.abs(ratios - 1) < 0.10), ratios
    assert abs(ratios.mean() - 1) < 0.04, ratios.mean()


def _full_instrument() -> Instrument:
    return Instrument(Radiation.cu_ka(monochromator_two_theta=26.6), zero=-0.0123, u=12.5, v=-3.25, w=4.5,
                      x=0.75, y=1.25, s_l=0.012, h_l=0.021, displacement_um=35.0, goniometer_radius_mm=217.5,
                      geometry="bragg-brentano", name="bench diffractometer ü", z=0.375)


@pytest.mark.parametrize("ins", [_full_instrument(), Instrument.lab_default(), Instrument.from_wavelength(0.7),
                                 Instrument(Radiation.cu_ka1())])
def test_instprm_round_trip_all_fields(tmp_path: Path, ins: Instrument) -> None:
    """write_instprm → read_instrument gives back every field (unequal S/L, H/L via the #hotstage line)."""
    path = tmp_path / "inst.instprm"
    write_instprm(ins, path)
    assert path.read_text().startswith("#GSAS-II instrument parameter file")
    back = read_instrument(path)
    assert back == ins


def test_instprm_without_hotstage_line_is_plain_gsas2(tmp_path: Path) -> None:
    """A GSAS-II file as GSAS-II writes it: SH/L splits into S/L = H/L = SH/L/2, Polariz. is the fraction p,
    Lam1/Lam2 is a lab doublet, Azimuth folds into p."""
    path = tmp_path / "g2.instprm"
    path.write_text("#GSAS-II instrument parameter file; do not add/delete items!\nType:PXC\nBank:1.0\n"
                    "Lam1:1.5405;Lam2:1.5443;Zero:0.01;Polariz.:0.5;Azimuth:0.0;I(L2)/I(L1):0.5\n"
                    "U:2.0;V:-2.0;W:5.0;X:0.0;Y:0.0;SH/L:0.002\n")
    ins = read_instrument(path)
    assert ins.radiation == Radiation(((1.5405, 1.0), (1.5443, 0.5)), "lab")
    assert (ins.s_l, ins.h_l, ins.zero, ins.u, ins.v, ins.w) == (0.001, 0.001, 0.01, 2.0, -2.0, 5.0)
    path.write_text("#GSAS-II instrument parameter file\nType:PXC\nLam:0.7\nPolariz.:0.99\nAzimuth:90\n")
    ins = read_instrument(path)
    assert ins.radiation.synchrotron_polarisation == pytest.approx(0.01)
    path.write_text("#GSAS-II instrument parameter file\nType: PXC\nBank: 1\nLam: 1.5406\nSource: CuKa\n"
                    "Polariz.: 0.7\n")  # spaces after the colon, the tube's name (ignored), a monochromator
    ins = read_instrument(path)
    assert ins.radiation.polarisation == "synchrotron" and ins.radiation.synchrotron_polarisation == 0.7
    path.write_text("#GSAS-II instrument parameter file\nType:PXC\nLam1:1.5405;Lam2:1.5443;I(L2)/I(L1):0.5\n"
                    "Polariz.:0.7\n")
    rad = read_instrument(path).radiation
    assert rad.polarisation == "lab" and rad.monochromator_two_theta is not None
    assert polarisation_fraction(rad) == pytest.approx(0.7, abs=1e-12)


def test_prm_profile_type_4(tmp_path: Path) -> None:
    """Profile type 4 (GU GV GW GP LX ptec trns shft sfec S/L H/L eta + Stephens terms) gives the same
    instrument as type 3 with LY = 0; shft (centideg per cosθ) becomes a displacement s = −π R shft / 36."""
    lines = PRM.read_text().splitlines()
    lines[8:14] = ["INS  1PRCF1     4   27   0.00100",
                   "INS  1PRCF11       1.163000      -0.126000       0.063000   0.000000E+00",
                   "INS  1PRCF12       0.173000       0.000000       0.000000       0.500000",
                   "INS  1PRCF13       0.000000       0.001100       0.001100       0.000000",
                   "INS  1PRCF14   0.0 0.0 0.0 0.0", "INS  1PRCF15   0.0 0.0 0.0 0.0",
                   "INS  1PRCF16   0.0 0.0 0.0 0.0", "INS  1PRCF17   0.0 0.0 0.0"]
    path = tmp_path / "t4.prm"
    path.write_text("\n".join(lines) + "\n")
    ins = read_instrument(path)
    ref = read_instrument(PRM)
    assert ins.displacement_um == pytest.approx(-math.pi * 240.0 * 0.5 / 36.0)
    assert ins.replace(displacement_um=0.0, name="") == ref.replace(name="")
    # the displacement's shift is the GSAS term back: shft·cosθ centideg
    assert float(ins.shift(40.0)) == pytest.approx(0.5 * math.cos(math.radians(20.0)) / 100.0, rel=1e-12)


def test_prm_to_instprm_round_trip(tmp_path: Path, sync: Instrument) -> None:
    """.prm read → .instprm write → read: equal; and the JSON form too."""
    write_instprm(sync, tmp_path / "a.instprm")
    assert read_instrument(tmp_path / "a.instprm") == sync
    (tmp_path / "a.json").write_text(json.dumps(sync.to_dict()))
    assert read_instrument(tmp_path / "a.json") == sync
    text = (tmp_path / "a.instprm").read_text()
    assert "SH/L:0.0022" in text and "Lam:0.413909" in text and "Polariz.:0.99" in text


def test_lab_default_matches_quantifier_default() -> None:
    """lab_default's Gaussian widths are DEFAULT_CAGLIOTI (the quantifier's old default) to 1e-12."""
    lab = Instrument.lab_default()
    tt = np.array([10.0, 30.0, 60.0, 90.0])
    assert np.allclose(lab.fwhm_gauss(tt), caglioti_fwhm(tt, *DEFAULT_CAGLIOTI), rtol=1e-12)
    assert np.allclose(lab.caglioti_deg2(), DEFAULT_CAGLIOTI, rtol=1e-12)
    assert len(lab.radiation.lines) == 2 and lab.geometry == "bragg-brentano"
    bare = Instrument.from_wavelength(0.41391)
    assert bare.radiation.polarisation == "synchrotron" and bare.radiation.wavelength == 0.41391
    assert np.allclose(bare.fwhm(tt), lab.fwhm(tt))


def test_shift_zero_and_displacement() -> None:
    """shift = zero − 2 s cosθ / R (deg): 100 µm at R = 200 mm moves a 30° line by −0.0553°."""
    ins = Instrument(Radiation.cu_ka1(), zero=0.02, displacement_um=100.0, goniometer_radius_mm=200.0)
    expect = 0.02 + math.degrees(-2 * 0.1 * math.cos(math.radians(15)) / 200.0)
    assert float(ins.shift(30.0)) == pytest.approx(expect, rel=1e-12)
    assert float(ins.shift(30.0)) == pytest.approx(0.02 - 0.05534, abs=1e-5)


def _prm_text(**subs: str) -> str:
    text = PRM.read_text()
    for old, new in subs.items():
        text = text.replace(old, new)
    return text


def _assert_one_line_error(path: Path, words: list[str]) -> None:
    """Reading `path` raises InstrumentFileError: one line naming the file, containing every word."""
    with pytest.raises(InstrumentFileError) as err:
        read_instrument(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    for w in words:
        assert w in msg, msg


@pytest.mark.parametrize(("old", "new", "words"), [
    ("INS  1PRCF1     3   19", "INS  1PRCF1     2   19", ["profile type 2", ":9:"]),
    ("1.163000", "1.16x000", ["not a number", "'1.16x000'", ":10:"]),
    ("INS  1 ICONS 0.4139090", "INS  1 ICONZ 0.4139090", ["missing wavelength"]),
    ("INS  1 ICONS 0.4139090    0.0000    0.0000               0.990    0",
     "INS  1 ICONS 0.4139090    0.0000    0.0000               0.990    1", ["IPOLA", ":4:"]),
    ("0.000000E+00       0.000000E+00       0.000000E+00   0.000000E+00   0.000000E+00",
     "0.000000E+00       0.000000E+00       0.000000E+00   0.000000E+00   0.000000E+00"[:0] + "5.0 0.0 0.0 0.0",
     ["trns", ":9:"]),
])
def test_bad_prm_files(tmp_path: Path, old: str, new: str, words: list[str]) -> None:
    """Unknown profile type, garbled number, missing λ, unsupported IPOLA, a sample term: one clear line."""
    text = PRM.read_text()
    if old.startswith("0.000000E+00"):  # the trns term: 9th of profile 3, first of PRCF13
        lines = text.splitlines()
        lines[11] = "INS  1PRCF13       5.000000E+00   0.000000E+00   0.000000E+00   0.000000E+00        "
        text = "\n".join(lines) + "\n"
    else:
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "bad.prm"
    path.write_text(text)
    _assert_one_line_error(path, words)


@pytest.mark.parametrize(("text", "words"), [
    ("#GSAS-II instrument parameter file\nType:PXC\nZero:0\nU:1\n", ["missing wavelength"]),
    ("#GSAS-II instrument parameter file\nType:PXC\nLam:0.7\nU:1.2.3\n", [":4:", "U", "not a number"]),
    ("#GSAS-II instrument parameter file\nType:PXC\nLam:0.7\nFoo:1\n", [":4:", "unknown key 'Foo'"]),
    ("#GSAS-II instrument parameter file\nType:PNT\nLam:0.7\ndifC:5000\n", [":2:", "PXC"]),
    ("Type:PXC\nLam:0.7\n", [":1:", "#GSAS-II"]),
])
def test_bad_instprm_files(tmp_path: Path, text: str, words: list[str]) -> None:
    path = tmp_path / "bad.instprm"
    path.write_text(text)
    _assert_one_line_error(path, words)


def test_missing_file_and_unknown_type(tmp_path: Path) -> None:
    with pytest.raises(InstrumentFileError, match="cannot read"):
        read_instrument(tmp_path / "nope.instprm")
    (tmp_path / "x.xyz").write_text("")
    with pytest.raises(InstrumentFileError, match="unknown instrument file type"):
        read_instrument(tmp_path / "x.xyz")


# FCJ asymmetry ------------------------------------------------------------------------------------------------
def _fcj_reference(x: np.ndarray, c: float, g: float, lo: float, sl: float, hl: float, m: int = 8000) -> np.ndarray:
    """Direct numerical FCJ convolution (FCJ 1994 eqs. 7–9, midpoint rule in u = √(2θ − 2φ), m nodes) of a
    unit-area TCH pseudo-Voigt: written independently of the module's binning."""
    fw, eta = (float(v) for v in tch_combine(g, lo))
    low = c < 90
    tb = c if low else 180 - c
    c2 = math.cos(math.radians(tb))
    span = tb - math.degrees(math.acos(min(c2 * math.sqrt(1 + (sl + hl) ** 2), 1.0)))
    u = (np.arange(m) + 0.5) / m * math.sqrt(span)
    d = u * u
    phi = np.radians(tb - d)
    h = np.sqrt(np.maximum(np.cos(phi) ** 2 / c2 ** 2 - 1, 0))
    wgt = np.maximum(np.where(h <= abs(hl - sl), 2 * min(sl, hl), sl + hl - h), 0)
    dens = wgt / (h * np.cos(phi)) * 2 * u
    dens /= dens.sum()
    pos = c - d if low else c + d
    out = np.zeros_like(x)
    for k in range(0, m, 2000):
        out += (dens[k:k + 2000, None] * pseudo_voigt(x[None, :], pos[k:k + 2000, None], fw, eta)).sum(0)
    return out


@pytest.mark.parametrize(("tt", "sl", "hl", "gauss", "tol"), [
    (5.0, 0.03, 0.03, 0.0058, 0.010),    # measured 0.0069: synchrotron widths, extreme divergence, 547 points
    (30.0, 0.01, 0.03, 0.0058, 0.010),   # measured 0.0070, unequal S/L and H/L
    (150.0, 0.03, 0.03, 0.05, 0.010),    # measured 0.0020, lab widths, back-reflection (mirrored kernel)
    (20.0, 0.0011, 0.0011, 0.0058, 0.005),  # the 11-BM values: measured 0.0017
])
def test_fcj_render_matches_numerical_convolution(tt: float, sl: float, hl: float, gauss: float,
                                                  tol: float) -> None:
    """render_instrument_peaks (kernel + compiled render) vs a fine direct FCJ convolution: max |difference|
    below `tol` × the profile's peak height (≈ 1 % for S/L, H/L ≤ 0.03; the render's Lorentzian truncation at
    ±6 FWHM alone is up to 0.7 % of the Lorentzian height)."""
    ins = Instrument(Radiation.synchrotron(0.4), s_l=sl, h_l=hl, w=(gauss * 100) ** 2 / (8 * math.log(2)), x=0.17)
    g, lo, fw = float(ins.fwhm_gauss(tt)), float(ins.fwhm_lorentz(tt)), float(ins.fwhm(tt))
    off, _ = ins.asymmetry([tt])
    span = float(np.abs(off).max())
    side = -1.0 if tt < 90 else 1.0  # the tail side
    x = np.union1d(np.linspace(tt - span - 20 * fw, tt + span + 20 * fw, 801),
                   np.linspace(tt - 8 * fw, tt + 8 * fw, 801) + side * 2 * fw)
    ref = _fcj_reference(x, tt, g, lo, sl, hl)
    got = render_instrument_peaks(x, [tt], [1.0], [g], [lo], ins)
    assert np.abs(got - ref).max() <= tol * ref.max(), np.abs(got - ref).max() / ref.max()


def test_fcj_kernel_area_centroid_and_symmetric_limit() -> None:
    """Rows sum to 1; the centroid moves to lower 2θ below 90° and higher above, more at low angle; a
    symmetric instrument gives offset 0 weight 1; the rendered area is the given area."""
    ins = Instrument(Radiation.synchrotron(0.4), w=0.1, s_l=0.02, h_l=0.01)
    tt = np.array([5.0, 20.0, 60.0, 120.0, 160.0])
    off, wts = ins.asymmetry(tt)
    assert off.shape == wts.shape and off.shape[0] == tt.size
    assert np.allclose(wts.sum(axis=1), 1.0, atol=1e-12) and np.all(wts >= 0)
    centroid = (off * wts).sum(axis=1)
    assert np.all(centroid[:3] < 0) and np.all(centroid[3:] > 0)
    assert np.all(off[:3] <= 0) and np.all(off[3:] >= 0)
    assert abs(centroid[0]) > abs(centroid[1]) > abs(centroid[2])
    assert abs(centroid[4]) > abs(centroid[3])
    sym = ins.replace(s_l=0.0, h_l=0.0)
    o1, w1 = sym.asymmetry(tt)
    assert o1.shape == (tt.size, 1) and np.all(o1 == 0) and np.all(w1 == 1)
    o5, w5 = sym.asymmetry(tt, n=5)
    assert np.all(o5 == 0) and np.all(w5[:, 0] == 1) and np.all(w5[:, 1:] == 0)
    # small asymmetry tends to the symmetric profile
    x = np.linspace(19.0, 21.0, 20001)
    sym_y = render_instrument_peaks(x, [20.0], [3.0], [0.05], [0.01], sym)
    tiny_y = render_instrument_peaks(x, [20.0], [3.0], [0.05], [0.01], ins.replace(s_l=1e-5, h_l=1e-5))
    assert np.abs(tiny_y - sym_y).max() < 1e-3 * sym_y.max()
    big_y = render_instrument_peaks(x, [20.0], [3.0], [0.05], [0.01], ins)
    for y in (sym_y, big_y):
        assert np.trapezoid(y, x) == pytest.approx(3.0, rel=2e-3)
    # an explicit n: rows sum to 1 with that many points
    o, w = fcj_kernel(tt, 0.02, 0.01, 0.05, n=16)
    assert o.shape == (tt.size, 16) and np.allclose(w.sum(axis=1), 1.0)


def test_instrument_validation() -> None:
    with pytest.raises(ValueError, match="S/L"):
        Instrument(Radiation.cu_ka1(), s_l=-0.1)
    with pytest.raises(ValueError, match="geometry"):
        Instrument(Radiation.cu_ka1(), geometry="flat")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown instrument fields"):
        Instrument.from_dict({**Instrument.lab_default().to_dict(), "uu": 1})
