"""`hotstage calibrate`: refine an instrument (zero, widths, asymmetry, displacement) from a pattern of a standard.

    hotstage calibrate PATTERN --standard LaB6 [--radiation cu-ka|cu-ka1|mo-ka | --wavelength Å | --instrument START]
                       --out inst.instprm [--plot fit.png] [--json]

The standard's cell is held at its certified value (`hotstage.analysis.standards`: LaB6 SRM 660c, Si SRM 640f,
CeO2 SRM 674b, Al2O3 SRM 676a); the refined instrument is written as a GSAS-II .instprm that `hotstage quantify
--instrument` (and GSAS-II) read. Where the start instrument comes from, first found: --instrument FILE (.instprm,
.prm, .json), --radiation (a Cu or Mo tube on a Bragg–Brentano goniometer with the lab default widths),
--wavelength (a synchrotron beam), the wavelength recorded in the pattern file. Widths that do not fit the
pattern are rescaled from a quick peak search before the refinement. Bad input (unreadable pattern, unknown
standard, no wavelength anywhere, a pattern that is not the standard) is one line and exit status 2.

Mo Kα wavelengths: Kα1 0.709317 Å, Kα2 0.713607 Å (Hölzer et al., Phys. Rev. A 56, 4554 (1997)), Kα2/Kα1 = 0.5
as for Cu (`hotstage.analysis.radiation`).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

MO_KA1_ANGSTROM = 0.709317
"""Mo Kα1 wavelength, Å (Hölzer et al. 1997)."""
MO_KA2_ANGSTROM = 0.713607
"""Mo Kα2 wavelength, Å (Hölzer et al. 1997)."""
RADIATIONS = ("cu-ka", "cu-ka1", "mo-ka")


class OfflineInputError(ValueError):
    """Bad input for an offline command: one line, exit status 2."""


def positive_wavelength(text: str) -> float:
    """--wavelength: a finite positive number of ångström (at most 10 Å: X-rays)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a wavelength in Å") from None
    if not (math.isfinite(value) and 0.0 < value <= 10.0):
        raise argparse.ArgumentTypeError(f"{value} Å is not an X-ray wavelength (0 < λ ≤ 10 Å)")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the command's options (heavy imports stay inside `run`: every CLI call builds this parser)."""
    parser.add_argument("pattern", metavar="PATTERN",
                        help="the measured pattern of the standard (.xye, .xy, .chi, GSAS, .xrdml, pdCIF)")
    parser.add_argument("--standard", required=True, metavar="NAME",
                        help="the standard measured: LaB6, Si, CeO2 or Al2O3 (NIST SRM 660c, 640f, 674b, 676a)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--radiation", choices=RADIATIONS, help="a lab tube on a Bragg–Brentano goniometer")
    start.add_argument("--wavelength", type=positive_wavelength, metavar="Å", help="a synchrotron wavelength")
    start.add_argument("--instrument", metavar="START", help="start instrument file (.instprm, .prm, .json)")
    parser.add_argument("--out", required=True, metavar="FILE.instprm", help="where to write the refined instrument")
    parser.add_argument("--plot", metavar="FIT.png", help="also write the fit figure (PNG)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def radiation_instrument(name: str) -> Any:
    """The start instrument for a --radiation choice: lab tube, Bragg–Brentano, the lab default widths."""
    from hotstage.analysis.instrument import Instrument
    from hotstage.analysis.radiation import CU_KA2_KA1_RATIO, Radiation

    lab = Instrument.lab_default()
    if name == "cu-ka":
        return lab.replace(name="Cu Kα1+Kα2 tube, lab default widths")
    if name == "cu-ka1":
        return lab.replace(radiation=Radiation.cu_ka1(), name="Cu Kα1 tube, lab default widths")
    if name == "mo-ka":
        rad = Radiation(((MO_KA1_ANGSTROM, 1.0), (MO_KA2_ANGSTROM, CU_KA2_KA1_RATIO)), "lab")
        return lab.replace(radiation=rad, name="Mo Kα1+Kα2 tube, lab default widths")
    raise OfflineInputError(f"--radiation {name!r}: choose from {', '.join(RADIATIONS)}")


def read_pattern_checked(path: str) -> Any:
    """Read a pattern file; a missing or unreadable file is one line naming it."""
    from hotstage.analysis.patterns import read_pattern

    p = Path(path).expanduser()
    if not p.is_file():
        raise OfflineInputError(f"{path}: no such pattern file")
    return read_pattern(p)


def check_output(path: str | None, option: str) -> Path | None:
    """An output file must be writable where it is named: its folder exists and it is not a folder itself."""
    if path is None:
        return None
    p = Path(path).expanduser()
    if not path.strip() or p.is_dir():
        raise OfflineInputError(f"{option} {path!r}: must name a file, not a directory")
    if not p.parent.is_dir():
        raise OfflineInputError(f"{option} {path!r}: folder {str(p.parent)!r} does not exist")
    return p


def start_instrument(args: argparse.Namespace, pattern: Any) -> Any:
    """The start instrument from the options, else from the pattern's wavelength (module docstring)."""
    from hotstage.analysis.instrument import Instrument, read_instrument

    if args.instrument:
        if not Path(args.instrument).expanduser().is_file():
            raise OfflineInputError(f"--instrument {args.instrument}: no such file")
        return read_instrument(Path(args.instrument).expanduser())
    if args.radiation:
        return radiation_instrument(args.radiation)
    if args.wavelength:
        return Instrument.from_wavelength(args.wavelength)
    if pattern.wavelength:
        return Instrument.from_wavelength(float(pattern.wavelength))
    raise OfflineInputError(f"{args.pattern}: no wavelength in the file; give --radiation, --wavelength or "
                            "--instrument")


def run(args: argparse.Namespace) -> int:
    """Run the command; exit status 0 on success, 2 on bad input."""
    from hotstage.analysis.calibration import calibrate
    from hotstage.analysis.instrument import write_instprm
    from hotstage.analysis.standards import lookup, standard_names

    out = check_output(args.out, "--out")
    plot = check_output(args.plot, "--plot")
    std = lookup(args.standard)
    if std is None:
        raise OfflineInputError(f"--standard {args.standard!r}: unknown standard; choose from "
                                f"{', '.join(standard_names())}")
    pattern = read_pattern_checked(args.pattern)
    start = start_instrument(args, pattern)
    try:
        cal = calibrate(pattern.two_theta, pattern.counts, std.name, start, sigma=pattern.sigma)
    except ValueError as exc:
        raise OfflineInputError(f"{args.pattern}: {exc}") from None
    assert out is not None
    write_instprm(cal.instrument, out)
    if plot is not None:
        from hotstage.acquisition.diffraction_plot import plot_fit

        tt, _ = cal.tick_positions
        plot_fit(plot, cal.two_theta, cal.counts, cal.curve, background=cal.background,
                 ticks={f"{std.name} ({std.srm})": tt}, wavelength=start.radiation.wavelength,
                 title=f"{Path(args.pattern).name}: calibration on {std.name} ({std.srm})",
                 subtitle=f"Rwp = {100 * cal.rwp:.2f} %, GoF = {cal.gof:.2f}")
    if args.json:
        d = cal.to_dict()
        d.update(pattern=str(args.pattern), out=str(out), plot=str(plot) if plot else None, srm=std.srm)
        print(json.dumps(d, indent=1, ensure_ascii=False, default=_json_default))
        return 0
    print(summary_text(cal, std, out, plot))
    return 0


def _json_default(o: Any) -> Any:
    """numpy scalars and arrays in JSON."""
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def summary_text(cal: Any, std: Any, out: Path, plot: Path | None) -> str:
    """Human-readable report: the refined instrument, the fit quality and the per-reflection table."""
    inst = cal.instrument
    lines = [f"calibration on {std.name} ({std.srm}, a = {std.cell[0]:.6f} Å"
             + (f", c = {std.cell[2]:.6f} Å" if std.cell[2] != std.cell[0] else "") + ", fixed)",
             f"  Rwp = {100 * cal.rwp:.2f} %   GoF = {cal.gof:.3f}   points = {cal.two_theta.size}",
             f"  λ = {inst.radiation.wavelength:.6f} Å ({inst.radiation.polarisation}), geometry {inst.geometry}",
             f"  zero = {inst.zero:+.5f}°" + (f"   displacement = {inst.displacement_um:+.1f} µm"
                                              if inst.geometry == "bragg-brentano" else ""),
             f"  U = {inst.u:.4g}  V = {inst.v:.4g}  W = {inst.w:.4g} (centideg²)   "
             f"X = {inst.x:.4g}  Y = {inst.y:.4g} (centideg)   S/L = {inst.s_l:.4g}  H/L = {inst.h_l:.4g}"]
    if cal.reflections:
        lines.append("  hkl          2θ_calc     Δ2θ obs−calc   FWHM obs   FWHM model   ΔI/I")
        for r in cal.reflections:
            hkl = " ".join(f"{i:d}" for i in r.hkl)
            lines.append(f"  {hkl:<10} {r.two_theta_calc:9.4f}   {r.delta_two_theta:+10.5f}   {r.fwhm_obs:9.5f}  "
                         f"{r.fwhm_model:9.5f}   {100 * r.intensity_residual:+6.1f} %")
    for w in cal.warnings:
        lines.append(f"  warning: {w}")
    lines.append(f"  instrument written to {out}" + (f"; fit figure {plot}" if plot else ""))
    return "\n".join(lines)
