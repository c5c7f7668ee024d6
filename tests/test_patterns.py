"""hotstage.analysis.patterns: every format round-trips known numbers; real measured files read; bad files fail
naming file and line.

The small files in tests/data/patterns/ are written by tests/data/patterns/make_patterns.py (checked here to be
its exact output); each holds the same 25-point scan in its format's own units (centidegrees, centidegrees × 32
with implied decimals, q in nm⁻¹, counts/s), so reading it back to the same numbers checks each conversion.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from hotstage.analysis.patterns import FORMATS, Pattern, PatternFileError, read_pattern

DATA = Path(__file__).parent / "data" / "patterns"
BETA_CIF = Path(__file__).parent / "data" / "cif" / "CsPbI3_beta_P4mbm_Marronnier2018_510K_CCDC1872726.cif"


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_patterns", DATA / "make_patterns.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


GEN = _load_generator()
X, Y, S = GEN.truth()
N = len(X)


def test_checked_in_files_are_the_generator_output(tmp_path: Path) -> None:
    written = GEN.write_all(tmp_path)
    assert len(written) >= 30
    for p in written:
        assert (DATA / p.name).read_bytes() == p.read_bytes(), f"{p.name} differs from make_patterns.py output"


# name → (intensity scale in the file, σ override: {index: σ}, wavelength expected (Å) or None, format tag)
ROUND_TRIPS = {
    "sample.xy": (1.0, None, 1.540593, "xy"),
    "sample.xye": (1.0, {}, None, "xye"),
    "sample_fit2d.chi": (1.0, None, None, "chi"),
    "sample_pyfai_2th.chi": (1.0, {}, 1.540593, "chi"),
    "sample_pyfai_q.chi": (1.0, {}, 1.540593, "chi"),
    "sample_std.gsa": (1.0, {5: math.sqrt(Y[5] / 2)}, None, "gsas"),  # 2 counters: σ² = y/2
    "sample_std_free.raw": (1.0, {}, None, "gsas"),
    "sample_std_counters.gsa": (1.0, {i: math.sqrt(max(Y[i], 1.0) / (1 + i % 10)) for i in range(N)}, None, "gsas"),
    "sample_esd.gss": (1.0, {}, None, "gsas"),
    "sample_alt.gsa": (1e-3, {}, None, "gsas"),  # written as y/1000 (F7.4 with implied decimals)
    "sample.fxye": (1.0, {}, None, "gsas"),
    "sample.xrdml": (1.0, {}, 1.540598, "xrdml"),
    "sample_list_cps.xrdml": (1.0, {}, 1.540598, "xrdml"),
    "sample_counts.cif": (1.0, {}, 1.540593, "cif"),
    "sample_su.cif": (1.0, {}, 1.540593, "cif"),
    "sample_implicit.cif": (1.0, {}, 1.540593, "cif"),
}


@pytest.mark.parametrize("name", sorted(ROUND_TRIPS))
def test_round_trip_known_numbers(name: str) -> None:
    scale, sigma_override, wavelength, kind = ROUND_TRIPS[name]
    p = read_pattern(DATA / name)
    assert isinstance(p, Pattern) and p.source == str(DATA / name)
    assert p.metadata["format"] in (kind, "xye")
    assert len(p) == 25
    # 2θ: to 1e-9 deg where the file writes exact decimals; the q file to 1e-8 (10-digit q, asin)
    np.testing.assert_allclose(p.two_theta, X, rtol=0, atol=1e-8)
    assert np.all(np.diff(p.two_theta) > 0)
    np.testing.assert_allclose(p.counts, Y * scale, rtol=0, atol=1e-9 * max(1.0, scale * Y.max()))
    if sigma_override is None:
        assert p.sigma is None
    else:
        want = S * scale
        for i, v in sigma_override.items():
            want[i] = v * scale
        # files round σ: ESD to 1e-3, su to 0.1 (one digit), ALT to 1e-4 of y/1000
        tol = {"sample_su.cif": 0.051, "sample_esd.gss": 5e-4, "sample_alt.gsa": 5e-5}.get(name, 1e-6)
        np.testing.assert_allclose(p.sigma, want, rtol=0, atol=tol)
    if wavelength is None:
        assert p.wavelength is None
    else:
        assert p.wavelength == pytest.approx(wavelength, abs=1e-9)


def test_fmt_forces_the_reader_and_unknown_fmt_is_refused(tmp_path: Path) -> None:
    odd = tmp_path / "scan.data"
    odd.write_bytes((DATA / "sample_esd.gss").read_bytes())
    assert read_pattern(odd).metadata["format"] == "gsas"  # by content
    p = read_pattern(odd, fmt="gsas")
    assert p.metadata["data_type"] == "ESD"
    with pytest.raises(PatternFileError, match=r"unknown format 'abc'"):
        read_pattern(odd, fmt="abc")
    assert set(FORMATS) == {"xy", "xye", "chi", "gsas", "xrdml", "cif"}


def test_decreasing_scan_is_reversed(tmp_path: Path) -> None:
    f = tmp_path / "down.xy"
    f.write_text("".join(f"{a:.4f} {b:.0f}\n" for a, b in zip(X[::-1], Y[::-1])))
    p = read_pattern(f)
    np.testing.assert_allclose(p.two_theta, X, atol=1e-12)
    np.testing.assert_allclose(p.counts, Y, atol=0)
    assert p.metadata["reversed"] is True


def test_xrdml_metadata() -> None:
    p = read_pattern(DATA / "sample.xrdml")
    m = p.metadata
    assert m["sample_id"] == "CsPbI3-synthetic-01"
    assert m["startTimeStamp"] == "2026-12-07T10:00:00+01:00" and m["endTimeStamp"].endswith("10:05:00+01:00")
    assert m["kAlpha2"] == pytest.approx(1.544426) and m["ratioKAlpha2KAlpha1"] == pytest.approx(0.5)
    assert m["counting_time_s"] == pytest.approx(2.0)
    assert read_pattern(DATA / "sample_list_cps.xrdml").metadata["converted_from"].startswith("counts/s")


def test_cif_weights_interpretation_of_a_proper_file() -> None:
    p = read_pattern(DATA / "sample_implicit.cif")
    assert p.metadata["sigma_from"] == "_pd_proc_ls_weight"
    assert p.metadata["ls_weight_interpretation"].startswith("w = 1/σ²")
    assert p.metadata["two_theta_tag"] == "_pd_meas_2theta_range_min/max/inc"


def test_real_beta_cspbi3_cif_profile() -> None:
    """The measured synchrotron profile of Marronnier et al. 2018 (CCDC 1872726), σ held in _pd_proc_ls_weight."""
    p = read_pattern(BETA_CIF)
    assert len(p) == 8999
    assert p.two_theta[0] == pytest.approx(2.002, abs=1e-9) and p.two_theta[-1] == pytest.approx(19.998, abs=1e-9)
    np.testing.assert_allclose(np.diff(p.two_theta), 0.002, atol=1e-9)
    assert p.wavelength == pytest.approx(0.41391)
    assert p.metadata["intensity_tag"] == "_pd_proc_intensity_net"
    assert p.metadata["ls_weight_interpretation"].startswith("column holds σ")
    ok = p.counts > 0
    ratio = np.median(p.sigma[ok] / np.sqrt(p.counts[ok]))
    assert 0.9 < ratio < 1.05  # σ ≈ √I (measured 0.976); read as 1/√w it would be ~1/I^¼, far from this
    assert np.all(np.isfinite(p.sigma) & (p.sigma > 0))


# every real measured pattern file the tests have: the β-CsPbI3 CIF and tests/data/patterns/real/ (see its
# SOURCES.md; the project's installed packages ship none: .venv searched for *.xy *.xye *.chi *.xrdml *.gsa *.gss
# *.fxye *.raw and CIFs with pd_ loops)
REAL = [BETA_CIF, *sorted(p for p in (DATA / "real").iterdir() if p.name != "SOURCES.md")]


@pytest.mark.parametrize("path", REAL, ids=[p.name for p in REAL])
def test_real_measured_files_read(path: Path) -> None:
    p = read_pattern(path)
    assert len(p) > 1000 and np.all(np.diff(p.two_theta) > 0) and np.all(np.isfinite(p.counts))
    assert p.sigma is not None and p.wavelength is not None


def test_real_cod_pdcif_implicit_axis_and_proper_weights() -> None:
    """COD 1501688 (lab Cu Kα, GSAS2CIF): 2θ only as range min/max/inc, ls_weight = 1/σ² as the dictionary says."""
    p = read_pattern(DATA / "real" / "COD1501688_ethylammonium_chloride_CuKa.cif")
    assert len(p) == 3728
    assert p.two_theta[0] == pytest.approx(8.0) and p.two_theta[-1] == pytest.approx(89.994, abs=1e-9)
    assert p.counts[:3].tolist() == [1733.0, 1620.0, 1629.0]
    assert p.sigma[0] == pytest.approx(1 / math.sqrt(0.000577))  # the file's first weight
    assert p.metadata["ls_weight_interpretation"].startswith("w = 1/σ²")
    ok = p.counts > 0
    assert np.median(p.sigma[ok] / np.sqrt(p.counts[ok])) == pytest.approx(1.0, abs=0.02)  # σ ≈ √counts
    assert p.wavelength == pytest.approx(1.540598)
    assert p.metadata["wavelengths"] == [(1.540598, 1.0), (1.54439, 0.38)]


BAD = {
    "bad_nonnumeric.xy": (7, r"'12a4' is not a number"),
    "bad_columns.xye": (6, r"2 columns where the data above have 3"),
    "bad_nonmonotonic.xy": (13, r"not strictly increasing"),
    "bad_empty.xy": (2, r"no data lines"),
    "bad_four_columns.xy": (1, r"4 columns"),
    "bad_std_short.gsa": (5, r"declares 25 points but holds 20"),
    "bad_nobank.gsa": (1, r"no 'BANK' record"),
    "bad_fxye_value.fxye": (11, r"'abc' is not a number"),
    "bad_count.chi": (4, r"declares 27 points but 25"),
    "bad_q_no_wavelength.chi": (9, r"no wavelength"),
    "bad_broken.xrdml": (6, r"not well-formed XML"),
    "bad_counts_value.xrdml": (30, r"'1O0', not a number"),
    "bad_structure_only.cif": (1, r"no powder intensities"),
    "bad_value.cif": (16, r"'12x4' \(point 10\) is not a number"),
    "bad_implicit_count.cif": (5, r"give 51 points but"),
    "bad_binary.raw": (None, r"binary file"),
    "bad_nonmonotonic.cif": (14, r"2θ not strictly increasing: 10\.12 follows 10\.14"),
    "bad_list_count.xrdml": (22, r"24 listPositions for 25 intensities"),
    "bad_tof.gsa": (2, r"BINTYP 'SLOG' not read"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_files_fail_naming_file_and_line(name: str) -> None:
    line, what = BAD[name]
    path = DATA / name
    with pytest.raises(PatternFileError) as info:
        read_pattern(path)
    msg = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "\n" not in msg
    prefix = f"{path}:{line}: " if line is not None else f"{path}: "
    assert msg.startswith(prefix), msg
    assert info.value.line == line
    import re
    assert re.search(what, msg), msg


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(PatternFileError, match=r"no such file"):
        read_pattern(tmp_path / "nope.xy")
    empty = tmp_path / "empty.xye"
    empty.write_bytes(b"")
    with pytest.raises(PatternFileError, match=r"empty\.xye:1: empty file"):
        read_pattern(empty)


def test_pyfai_xy_with_q_axis_is_not_read_as_two_theta(tmp_path: Path) -> None:
    """A pyFAI .xy/.dat whose column line says q_nm^-1 goes through the .chi rules: no λ, no reading."""
    f = tmp_path / "integrated.xy"
    f.write_text("# pyFAI\n#  q_nm^-1  I\n10.0 5\n10.1 6\n")
    with pytest.raises(PatternFileError, match=r"integrated\.xy:2: x axis is q_nm\^-1 and the header gives no "):
        read_pattern(f)
    f.write_text("# Wavelength: 1.0e-10 m\n#  q_nm^-1  I\n10.0 5\n10.1 6\n")
    p = read_pattern(f)
    want = 2 * np.degrees(np.arcsin(np.array([1.0, 1.01]) * 1.0 / (4 * np.pi)))  # q = 1.0, 1.01 Å⁻¹, λ = 1 Å
    np.testing.assert_allclose(p.two_theta, want, rtol=1e-12)


def test_lone_point_count_before_xy_data_is_a_header(tmp_path: Path) -> None:
    f = tmp_path / "n.xy"
    f.write_text("3\n10.0 5\n10.1 6\n10.2 7\n")
    p = read_pattern(f)
    assert len(p) == 3 and p.metadata["header"] == ["3"]
