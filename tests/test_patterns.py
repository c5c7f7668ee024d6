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
# SOURCES.md). name → (points, first 2θ, last 2θ, step, λ (Å) or None where the format carries none, σ given,
# points the file itself excludes: zero _pd_proc_ls_weight, read as σ = inf)
REAL_DIR = DATA / "real"
REAL_EXPECTED: dict[str, tuple[int, float, float, float, float | None, bool, int]] = {
    BETA_CIF.name: (8999, 2.002, 19.998, 0.002, 0.41391, True, 0),
    "COD1501688_ethylammonium_chloride_CuKa.cif": (3728, 8.0, 89.994, 0.022, 1.540598, True, 1),
    "GSAS-II_garnet_D1A_neutron.raw": (2679, 24.0, 157.9, 0.05, None, True, 0),
    "GSAS-II_fluoroapatite_lab_CuKa.xra": (5751, 15.0, 130.0, 0.02, None, True, 0),
    "xrd-xy-parser_example_CuKa.xy": (2000, 30.0, 49.99, 0.01, 1.54059, False, 0),
    "nomad-measurements_XRD-918-16_10_Empyrean_CuKa.xrdml": (5027, 4.00656514, 69.99936587,
                                                             (69.99936587 - 4.00656514) / 5026, 1.540598, True, 0),
}
REAL = [BETA_CIF, *sorted(p for p in REAL_DIR.iterdir() if p.suffix not in (".md", ".txt"))]


def test_every_real_file_has_its_expectations() -> None:
    assert sorted(p.name for p in REAL) == sorted(REAL_EXPECTED)


@pytest.mark.parametrize("path", REAL, ids=[p.name for p in REAL])
def test_real_measured_files_read(path: Path) -> None:
    """Shape, 2θ range and step, λ where the format has one, σ where the file or statistics give it."""
    n, first, last, step, wavelength, has_sigma, excluded = REAL_EXPECTED[path.name]
    p = read_pattern(path)
    assert len(p) == n
    assert p.two_theta[0] == pytest.approx(first, abs=1e-9) and p.two_theta[-1] == pytest.approx(last, abs=1e-9)
    np.testing.assert_allclose(np.diff(p.two_theta), step, atol=1e-9)
    assert np.all(np.isfinite(p.counts)) and np.all(p.counts >= 0)
    if wavelength is None:
        assert p.wavelength is None
    else:
        assert p.wavelength == pytest.approx(wavelength, abs=1e-9)
    if has_sigma:
        assert p.sigma is not None and np.all(p.sigma > 0)
        assert int(np.count_nonzero(~np.isfinite(p.sigma))) == excluded
    else:
        assert p.sigma is None


def test_real_gsas_std_with_counter_fields() -> None:
    """GSAS-II's garnet (ILL D1A neutrons): 10(I2,F6.0) records whose fields run together ('10  163110  1475'),
    σ = √(y/n) with n detectors summed, the last record's '0     0' padding past nchan ignored."""
    p = read_pattern(REAL_DIR / "GSAS-II_garnet_D1A_neutron.raw")
    m = p.metadata
    assert m["data_type"] == "STD" and m["bintyp"] == "CONST" and m["title"] == "Y3FE2(ALO4)3 RT 1.909"
    assert p.counts[:3].tolist() == [162.0, 178.0, 155.0] and p.counts[-3:].tolist() == [130.0, 140.0, 135.0]
    assert m["n_counters"][0] == 1 and max(m["n_counters"]) == 10
    i = int(np.argmax(p.counts))  # '8  2664' on the file's 97th record: the strongest point, 8 detectors
    assert p.counts[i] == 2664.0 and p.two_theta[i] == pytest.approx(71.75) and m["n_counters"][i] == 8
    assert p.sigma[i] == pytest.approx(math.sqrt(2664 / 8))
    j = int(np.flatnonzero(p.counts == 1631)[0])  # '10  1631' inside '...161910  163110  147510...'
    assert p.two_theta[j] == pytest.approx(101.75) and p.sigma[j] == pytest.approx(math.sqrt(163.1))
    assert "warnings" not in m  # 268 records as declared, padding dropped silently


def test_real_gsas_std_lab_xray_trailing_zeros() -> None:
    """GSAS-II's fluoroapatite (lab Cu Kα): STD records without counter fields; the two zero channels ending the
    declared 5753 (after ~80 counts of background) are unmeasured fill and are dropped, with a warning."""
    p = read_pattern(REAL_DIR / "GSAS-II_fluoroapatite_lab_CuKa.xra")
    m = p.metadata
    assert m["format"] == "gsas" and m["data_type"] == "STD" and m["nchan_declared"] == 5753
    assert m["trailing_zeros_dropped"] == 2 and any("2 zero intensities" in w for w in m["warnings"])
    assert p.counts[:3].tolist() == [609.0, 612.0, 673.0] and p.counts[-3:].tolist() == [82.0, 84.0, 84.0]
    i = int(np.argmax(p.counts))
    assert p.counts[i] == 19693.0 and p.two_theta[i] == pytest.approx(31.86)
    np.testing.assert_allclose(p.sigma, np.sqrt(p.counts))  # one counter each: σ = √y
    assert "n_counters" not in m


def test_trailing_zeros_kept_when_the_background_is_too_low_to_tell(tmp_path: Path) -> None:
    """Zeros after a background of a few counts may be real counts: kept (and so are zeros inside a scan)."""
    vals = [3, 0, 2, 1, 4, 2, 3, 1, 2, 0, 0, 0]
    f = tmp_path / "low.gsa"
    f.write_text("low counts\nBANK 1 12 2 CONST 1000 2 0 0 STD\n"
                 + "".join(f"{v:8d}" for v in vals[:10]) + "\n" + "".join(f"{v:8d}" for v in vals[10:]) + "\n")
    p = read_pattern(f)
    assert len(p) == 12 and p.counts.tolist() == [float(v) for v in vals] and "trailing_zeros_dropped" not in p.metadata


def test_real_xrdml_empyrean_scan() -> None:
    """A PANalytical Empyrean scan (XRDML 1.6, <intensities unit="counts">, PIXcel1D, CRLF): metadata and values."""
    p = read_pattern(REAL_DIR / "nomad-measurements_XRD-918-16_10_Empyrean_CuKa.xrdml")
    m = p.metadata
    assert m["namespace"] == "http://www.xrdml.com/XRDMeasurement/1.6" and m["intensity_element"] == "intensities"
    assert m["kAlpha2"] == pytest.approx(1.544426) and m["kBeta"] == pytest.approx(1.39225)
    assert m["ratioKAlpha2KAlpha1"] == pytest.approx(0.5) and m["counting_time_s"] == pytest.approx(39.27)
    assert m["scan_axis"] == "Gonio" and m["startTimeStamp"] == "2021-03-16T13:10:14+03:00"
    assert "converted_from" not in m and "sample_id" not in m  # counts as recorded; empty <id> not reported
    assert p.counts[:4].tolist() == [1305.0, 1310.0, 1345.0, 1280.0] and p.counts[-2:].tolist() == [189.0, 171.0]
    i = int(np.argmax(p.counts))
    assert p.counts[i] == 100168.0 and p.two_theta[i] == pytest.approx(26.6169, abs=1e-4)  # quartz 101
    assert p.sigma[i] == pytest.approx(math.sqrt(100168.0))


def test_real_lab_xy_with_temperature_header() -> None:
    """xrd-xy-parser's example (tab-separated, CRLF, no final newline): header lines kept, λ from 'Wavelength ='."""
    p = read_pattern(REAL_DIR / "xrd-xy-parser_example_CuKa.xy")
    assert p.metadata["header"] == ["<299.25K>", "Wavelength = 1.54059"]
    assert p.counts[:3].tolist() == [1.0, 1.0, 3.0] and p.counts[-1] == 0.0
    i = int(np.argmax(p.counts))
    assert p.counts[i] == 107.0 and p.two_theta[i] == pytest.approx(45.35)


def test_real_cod_pdcif_implicit_axis_and_proper_weights() -> None:
    """COD 1501688 (lab Cu Kα, GSAS2CIF): 2θ only as range min/max/inc, ls_weight = 1/σ² as the dictionary says."""
    p = read_pattern(DATA / "real" / "COD1501688_ethylammonium_chloride_CuKa.cif")
    assert len(p) == 3728
    assert p.two_theta[0] == pytest.approx(8.0) and p.two_theta[-1] == pytest.approx(89.994, abs=1e-9)
    assert p.counts[:3].tolist() == [1733.0, 1620.0, 1629.0]
    assert p.sigma[0] == pytest.approx(1 / math.sqrt(0.000577))  # the file's first weight
    assert p.sigma[-1] == math.inf and np.all(np.isfinite(p.sigma[:-1]))  # its last point has weight 0 (excluded)
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
