"""Write the small pattern files of tests/test_patterns.py (run: ``python tests/data/patterns/make_patterns.py``).

Every good file holds the same 25-point scan (``truth()``): 2θ = 10.00 + 0.02 i deg, integer counts of one peak on a
flat background (one zero count), σ = √counts (1 for the zero), λ = 1.540593 Å. Each file is written the way its
format's own writer lays it out (GSAS fixed columns, pyFAI's ``#`` header, XRDML elements, pdCIF loops), so that
``read_pattern`` must undo each format's units (centidegrees, centidegrees × 32, implied decimals, q, counts/s)
to get the same numbers back. The bad files each break one rule at a known line.
The test also runs this script into a temporary folder and compares: the checked-in files are its output.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

WAVELENGTH = 1.540593  # Å, Cu Kα1 (Hölzer et al. 1997)
START, STEP, N = 10.00, 0.02, 25


def truth() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(2θ deg, counts, σ) of the scan every good file holds."""
    x = START + STEP * np.arange(N)
    y = 100.0 + np.round(900.0 * np.exp(-(((x - 10.24) / 0.06) ** 2)))
    y[3] = 0.0  # a zero count: σ taken as 1
    s = np.sqrt(np.maximum(y, 1.0))
    return np.round(x, 6), y, s


def _xy(x, y, s) -> str:
    lines = ["Sample: synthetic peak (hotstage tests)", "2Theta  Counts",
             "# Wavelength: 1.540593 A", "# written by make_patterns.py"]
    lines += [f"{a:.4f} {b:.0f}" for a, b in zip(x, y)]
    return "\n".join(lines) + "\n"


def _xye(x, y, s) -> str:
    lines = ["! synthetic peak", "' another comment style", "# 2theta intensity esd"]
    lines += [f"{a:10.4f}  {b:10.1f}  {c:12.8f}" for a, b, c in zip(x, y, s)]
    return "\n".join(lines) + "\n"


def _chi_fit2d(x, y, s) -> str:
    lines = ["synthetic.tif: Integrated", "2-Theta Angle (Degrees)", "Intensity", f"{N:6d}"]
    lines += [f" {a:14.7E}  {b:14.7E}" for a, b in zip(x, y)]
    return "\n".join(lines) + "\n"


def _pyfai_header(unit: str) -> list[str]:
    return ["# == pyFAI calibration ==", "# Distance Sample to Detector: 0.1 m",
            "# PONI: 1.000e-02, 1.000e-02 m", "# Rotations: 0.000000 0.000000 0.000000 rad", "# ",
            f"# Wavelength: {WAVELENGTH * 1e-10:.7e} m", "# Polarization factor: None",
            "# Normalization factor: 1.0", "# --> synthetic.edf", f"#       {unit}             I          sigma "]


def _chi_pyfai_2th(x, y, s) -> str:
    lines = _pyfai_header("2th_deg") + [f"{a:.7e} {b:.7e} {c:.7e}" for a, b, c in zip(x, y, s)]
    return "\n".join(lines) + "\n"


def _chi_pyfai_q(x, y, s) -> str:
    q = 4 * math.pi * np.sin(np.radians(x) / 2) / WAVELENGTH * 10.0  # nm⁻¹
    lines = _pyfai_header("q_nm^-1") + [f"{a:.10e} {b:.7e} {c:.7e}" for a, b, c in zip(q, y, s)]
    return "\n".join(lines) + "\n"


def _bank_line(text: str) -> str:
    return f"{text:<80s}"


def _gsas_std(x, y, s, *, two_counters_at: int = 5) -> str:
    nrec = (N + 9) // 10
    lines = [_bank_line("synthetic peak, GSAS STD"), _bank_line("Instrument parameter file: synthetic.prm"),
             _bank_line(f"BANK 1 {N} {nrec} CONST {START * 100:.2f} {STEP * 100:.2f} 0 0 STD")]
    for r in range(nrec):
        rec = ""
        for i in range(10 * r, min(10 * r + 10, N)):
            if i == two_counters_at:  # the mean of 2 counters: σ² = y/2 (GSAS manual; GSAS-II reads it so)
                rec += f" 2{y[i]:6.0f}"
            else:
                rec += f"  {y[i]:6.0f}"
        lines.append(_bank_line(rec))
    return "\r\n".join(lines) + "\r\n"


def _gsas_std_counters(x, y, s) -> str:
    """STD records whose counter field reaches 10 and touches the previous value ("    27410   224"), the layout
    of real multi-detector files (e.g. the D1A garnet data of the GSAS-II exercises): counters 1, 2, ..., 10."""
    nrec = (N + 9) // 10
    lines = ["synthetic peak, multi-counter STD",
             f"BANK 1 {N} {nrec} CONST {START * 100:.0f} {STEP * 100:.0f} 0 0"]
    for r in range(nrec):
        lines.append("".join(f"{1 + i % 10:2d}{y[i]:6.0f}" for i in range(10 * r, min(10 * r + 10, N))))
    return "\n".join(lines) + "\n"


def _gsas_std_free(x, y, s) -> str:
    nrec = (N + 9) // 10
    lines = ["synthetic peak LA= 1.540593", f"BANK 1 {N} {nrec} CONST {START * 100:.0f} {STEP * 100:.0f}"]
    for r in range(nrec):
        lines.append(" ".join(f"{v:.0f}" for v in y[10 * r:10 * r + 10]))
    return "\n".join(lines) + "\n"


def _gsas_esd(x, y, s) -> str:
    nrec = (N + 4) // 5
    lines = [_bank_line("synthetic peak, GSAS ESD"),
             _bank_line(f"BANK 1 {N} {nrec} CONST {START * 100:.2f} {STEP * 100:.2f} 0 0 ESD")]
    for r in range(nrec):
        lines.append(_bank_line("".join(f"{y[i]:8.1f}{s[i]:8.3f}" for i in range(5 * r, min(5 * r + 5, N)))))
    return "\n".join(lines) + "\n"


def _gsas_alt(x, y, s) -> str:
    """ALT records (4(F8.0,F7.4,F5.4)): x in centidegrees × 32, y and σ scaled to fit, no decimal points."""
    nrec = (N + 3) // 4
    scale = 0.001  # intensities written as y·0.001 with 4 implied decimals: field = y·10 (≤ 7 digits)
    lines = [_bank_line("synthetic peak, GSAS ALT"),
             _bank_line(f"BANK 1 {N} {nrec} RALF {x[0] * 3200:.0f} {STEP * 3200:.0f} {x[-1] * 3200:.0f} 0 ALT")]
    for r in range(nrec):
        rec = ""
        for i in range(4 * r, min(4 * r + 4, N)):
            rec += f"{round(x[i] * 3200):8d}{round(y[i] * scale * 1e4):7d}{round(s[i] * scale * 1e4):5d}"
        lines.append(_bank_line(rec))
    return "\n".join(lines) + "\n"


def _fxye(x, y, s) -> str:
    lines = [_bank_line("synthetic peak, FXYE"), _bank_line("# a comment line"),
             _bank_line(f"BANK 1 {N} {N} CONS {x[0] * 100:.2f} {STEP * 100:.2f} 0 0 FXYE")]
    lines += [_bank_line(f"{a * 100:15.6f} {b:15.6f} {c:15.8f}") for a, b, c in zip(x, y, s)]
    return "\n".join(lines) + "\n"


_XRDML_HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<xrdMeasurements xmlns="http://www.xrdml.com/XRDMeasurement/{ver}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" status="Completed">
\t<sample type="To be analyzed">
\t\t<id>CsPbI3-synthetic-01</id>
\t\t<name>synthetic peak</name>
\t</sample>
\t<xrdMeasurement measurementType="Scan" status="Completed">
\t\t<usedWavelength intended="K-Alpha 1">
\t\t\t<kAlpha1 unit="Angstrom">1.5405980</kAlpha1>
\t\t\t<kAlpha2 unit="Angstrom">1.5444260</kAlpha2>
\t\t\t<kBeta unit="Angstrom">1.3922500</kBeta>
\t\t\t<ratioKAlpha2KAlpha1>0.5000</ratioKAlpha2KAlpha1>
\t\t</usedWavelength>
\t\t<scan appendNumber="0" mode="Continuous" scanAxis="Gonio" status="Completed">
\t\t\t<header>
\t\t\t\t<startTimeStamp>2026-12-07T10:00:00+01:00</startTimeStamp>
\t\t\t\t<endTimeStamp>2026-12-07T10:05:00+01:00</endTimeStamp>
\t\t\t\t<author><name>hotstage</name></author>
\t\t\t</header>
\t\t\t<dataPoints>
"""
_XRDML_TAIL = """\t\t\t</dataPoints>
\t\t</scan>
\t</xrdMeasurement>
</xrdMeasurements>
"""


def _xrdml_startend(x, y, s) -> str:
    body = (f'\t\t\t\t<positions axis="2Theta" unit="deg">\n\t\t\t\t\t<startPosition>{x[0]:.4f}</startPosition>\n'
            f'\t\t\t\t\t<endPosition>{x[-1]:.4f}</endPosition>\n\t\t\t\t</positions>\n'
            '\t\t\t\t<positions axis="Omega" unit="deg">\n\t\t\t\t\t<startPosition>5.0000</startPosition>\n'
            '\t\t\t\t\t<endPosition>5.2400</endPosition>\n\t\t\t\t</positions>\n'
            '\t\t\t\t<commonCountingTime unit="seconds">2.000</commonCountingTime>\n'
            f'\t\t\t\t<counts unit="counts">{" ".join(f"{v:.0f}" for v in y)}</counts>\n')
    return _XRDML_HEAD.format(ver="2.1") + body + _XRDML_TAIL


def _xrdml_list_cps(x, y, s) -> str:
    body = ('\t\t\t\t<positions axis="2Theta" unit="deg">\n'
            f'\t\t\t\t\t<listPositions>{" ".join(f"{v:.4f}" for v in x)}</listPositions>\n\t\t\t\t</positions>\n'
            '\t\t\t\t<commonCountingTime unit="seconds">4.000</commonCountingTime>\n'
            f'\t\t\t\t<intensities unit="counts/s">{" ".join(f"{v / 4:.2f}" for v in y)}</intensities>\n')
    return _XRDML_HEAD.format(ver="1.0") + body + _XRDML_TAIL


def _cif_counts(x, y, s) -> str:
    rows = "\n".join(f"{a:8.3f} {b:8.0f}" for a, b in zip(x, y))
    return ("data_synthetic_counts\n_diffrn_radiation_wavelength 1.540593\n_pd_meas_number_of_points 25\n"
            "loop_\n_pd_meas_2theta_scan\n_pd_meas_counts_total\n" + rows + "\n")


def _cif_su(x, y, s) -> str:
    def su(v: float, e: float) -> str:
        return f"{v:.1f}({round(e * 10):d})"
    rows = "\n".join(f"{a:8.3f} {su(b, c):>14s}" for a, b, c in zip(x, y, s))
    return ("data_synthetic_su\n_pd_proc_wavelength 1.540593\n"
            "loop_\n_pd_proc_point_id\n_pd_proc_2theta_corrected\n_pd_proc_intensity_total\n"
            + "\n".join(f"{i + 1:4d} {r}" for i, r in enumerate(rows.splitlines())) + "\n")


def _cif_implicit(x, y, s) -> str:
    rows = "\n".join(f"{b:8.1f} {1.0 / c ** 2:.8e}" for b, c in zip(y, s))
    return ("data_synthetic_implicit\n_diffrn_radiation_wavelength 1.540593\n"
            f"_pd_meas_2theta_range_min {x[0]:.3f}\n_pd_meas_2theta_range_max {x[-1]:.3f}\n"
            f"_pd_meas_2theta_range_inc {STEP:.3f}\n"
            "loop_\n_pd_meas_intensity_total\n_pd_proc_ls_weight\n" + rows + "\n")


GOOD = {
    "sample.xy": _xy, "sample.xye": _xye, "sample_fit2d.chi": _chi_fit2d, "sample_pyfai_2th.chi": _chi_pyfai_2th,
    "sample_pyfai_q.chi": _chi_pyfai_q, "sample_std.gsa": _gsas_std, "sample_std_free.raw": _gsas_std_free,
    "sample_std_counters.gsa": _gsas_std_counters,
    "sample_esd.gss": _gsas_esd, "sample_alt.gsa": _gsas_alt, "sample.fxye": _fxye,
    "sample.xrdml": _xrdml_startend, "sample_list_cps.xrdml": _xrdml_list_cps, "sample_counts.cif": _cif_counts,
    "sample_su.cif": _cif_su, "sample_implicit.cif": _cif_implicit,
}


def _bad() -> dict[str, str]:
    """Bad files: name → text (each breaks one rule; the test names the expected line)."""
    x, y, s = truth()
    good_xy = [f"{a:.4f} {b:.0f}" for a, b in zip(x, y)]
    bad = {}
    bad["bad_nonnumeric.xy"] = "\n".join(["# header", *good_xy[:5], "10.1000 12a4", *good_xy[6:]]) + "\n"
    bad["bad_columns.xye"] = "\n".join(["# 2theta I esd", *[f"{r} 10.0" for r in good_xy[:4]],
                                        good_xy[4], *[f"{r} 10.0" for r in good_xy[5:]]]) + "\n"
    rows = list(good_xy)
    rows[10], rows[11] = rows[11], rows[10]
    bad["bad_nonmonotonic.xy"] = "\n".join(["2theta counts", *rows]) + "\n"
    bad["bad_empty.xy"] = "# only a comment\n\n"
    bad["bad_four_columns.xy"] = "\n".join(f"{r} 1 2" for r in good_xy) + "\n"
    std = _gsas_std(x, y, s).split("\r\n")
    bad["bad_std_short.gsa"] = "\r\n".join(std[:-2]) + "\r\n"  # last record missing: 20 of 25 points
    bad["bad_nobank.gsa"] = "a title\n" + "\n".join(good_xy) + "\n"
    bad["bad_fxye_value.fxye"] = _fxye(x, y, s).replace(f"{y[7]:15.6f}", f"{'abc':>15s}", 1)
    chi = _chi_fit2d(x, y, s).splitlines()
    chi[3] = f"{N + 2:6d}"
    bad["bad_count.chi"] = "\n".join(chi) + "\n"
    q = _chi_pyfai_q(x, y, s).splitlines()
    bad["bad_q_no_wavelength.chi"] = "\n".join(ln for ln in q if "Wavelength" not in ln) + "\n"
    bad["bad_broken.xrdml"] = _xrdml_startend(x, y, s).replace("</sample>", "</sampel>")
    bad["bad_counts_value.xrdml"] = _xrdml_startend(x, y, s).replace(" 100 ", " 1O0 ", 1)
    bad["bad_structure_only.cif"] = ("data_nacl\n_cell_length_a 5.64\n_symmetry_space_group_name_H-M 'F m -3 m'\n"
                                     "loop_\n_atom_site_label\n_atom_site_fract_x\nNa 0\nCl 0.5\n")
    bad["bad_value.cif"] = _cif_counts(x, y, s).replace(f"{y[9]:8.0f}", "    12x4", 1)
    bad["bad_implicit_count.cif"] = _cif_implicit(x, y, s).replace(f"_pd_meas_2theta_range_max {x[-1]:.3f}",
                                                                   "_pd_meas_2theta_range_max 11.000")
    cif = _cif_counts(x, y, s).splitlines()
    cif[12], cif[13] = cif[13], cif[12]  # points 7 and 8 swapped: 2θ goes back at line 14
    bad["bad_nonmonotonic.cif"] = "\n".join(cif) + "\n"
    bad["bad_list_count.xrdml"] = _xrdml_list_cps(x, y, s).replace(f" {x[-1]:.4f}</listPositions>", "</listPositions>")
    bad["bad_tof.gsa"] = _gsas_esd(x, y, s).replace("CONST 1000.00 2.00 0 0 ESD", "SLOG 1000.0 20000.0 0.0005 0 ESD")
    return bad


def write_all(out: Path) -> list[Path]:
    """Write every good and bad file into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    x, y, s = truth()
    written = []
    for name, make in GOOD.items():
        p = out / name
        p.write_bytes(make(x, y, s).encode("utf-8"))
        written.append(p)
    for name, text in _bad().items():
        p = out / name
        p.write_bytes(text.encode("utf-8"))
        written.append(p)
    p = out / "bad_binary.raw"  # a binary diffractometer file (Bruker-RAW-like header), not GSAS text
    p.write_bytes(b"RAW1.01\x00\x00\x00\x01\x00\x00\x00" + bytes(range(256)) * 2)
    written.append(p)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    for path in write_all(target):
        print(path)
