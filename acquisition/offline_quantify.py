"""`hotstage quantify`: quantify the crystalline phases of measured patterns by whole-pattern refinement.

    hotstage quantify PATTERN... --phases NAME_OR_CIF ... [--instrument FILE] [--wavelength Å] [--exclude LO:HI ...]
                      [--background-order N] [--json] [--plot fit.png]

Each pattern is refined on its own (`hotstage.analysis.refine.quantify`: per phase scale, cell, crystallite size,
microstrain; zero; Chebyshev background and an amorphous hump) with the instrument of --instrument (a GSAS-II
.instprm such as `hotstage calibrate` writes, a GSAS .prm, or .json); without one, a bare wavelength (--wavelength,
else the pattern's own) with the lab default widths, which the report warns about. With both, --wavelength
replaces the instrument file's wavelength (its lines keep their ratios). Phases are the built-in names
(CsPbI3-alpha/-beta/-gamma/-delta, CsI, and the standards LaB6, Si, CeO2, Al2O3) or CIF files. Printed per phase:
weight % with its standard uncertainty, lattice parameters, crystallite size and the significance test; then
Rwp and GoF, the phases rejected (with the reason) and the warnings. Bad input is one line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from hotstage.acquisition.offline_calibrate import (OfflineInputError, _json_default, check_output,
                                                    positive_wavelength, read_pattern_checked)


def exclusion(text: str) -> tuple[float, float]:
    """--exclude LO:HI, degrees 2θ with LO < HI."""
    lo_text, sep, hi_text = text.partition(":")
    try:
        lo, hi = float(lo_text), float(hi_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LO:HI in degrees 2θ") from None
    if not sep or not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
        raise argparse.ArgumentTypeError(f"{text!r} is not LO:HI with LO < HI in degrees 2θ")
    return lo, hi


def background_order(text: str) -> int:
    """--background-order: 0 … 40."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= n <= 40:
        raise argparse.ArgumentTypeError(f"{n} is not a background order between 0 and 40")
    return n


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the command's options (heavy imports stay inside `run`: every CLI call builds this parser)."""
    parser.add_argument("patterns", nargs="+", metavar="PATTERN", help="measured pattern file(s)")
    parser.add_argument("--phases", nargs="+", required=True, metavar="NAME_OR_CIF",
                        help="candidate phases: built-in names or CIF files")
    parser.add_argument("--instrument", metavar="FILE", help="instrument file (.instprm, .prm, .json)")
    parser.add_argument("--wavelength", type=positive_wavelength, metavar="Å",
                        help="wavelength (without --instrument: a bare wavelength with lab default widths)")
    parser.add_argument("--exclude", type=exclusion, action="append", default=[], metavar="LO:HI",
                        help="2θ range left out of the fit (repeatable)")
    parser.add_argument("--background-order", type=background_order, default=12, metavar="N",
                        help="Chebyshev background order (default 12)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--plot", metavar="FIT.png",
                        help="fit figure (PNG); with several patterns FIT-<pattern>.png for each")


def load_phase(text: str) -> Any:
    """A built-in phase or standard by name (case-insensitive), else a CIF file."""
    from hotstage.analysis.crystal import Crystal
    from hotstage.analysis.standards import lookup, standard

    names = {n.lower(): n for n in Crystal.builtin_names()}
    if text.lower() in names:
        return Crystal.builtin(names[text.lower()])
    if lookup(text) is not None:
        return standard(text)
    p = Path(text).expanduser()
    if p.is_file():
        try:
            return Crystal.from_cif(p)
        except ValueError:
            raise
        except Exception as exc:  # gemmi's parser errors are RuntimeError
            raise OfflineInputError(f"{text}: not a readable CIF ({' '.join(str(exc).split())})") from None
    choices = ", ".join(list(Crystal.builtin_names()) + ["LaB6", "Si", "CeO2", "Al2O3"])
    raise OfflineInputError(f"--phases {text!r}: not a built-in phase ({choices}) and no such CIF file")


def instrument_for(args: argparse.Namespace, pattern: Any, path: str, warnings: list[str]) -> Any:
    """The instrument for one pattern (module docstring for the order)."""
    from hotstage.analysis.instrument import Instrument, read_instrument
    from hotstage.analysis.radiation import Radiation

    if args.instrument:
        inst = read_instrument(Path(args.instrument).expanduser())
        if args.wavelength:
            k = args.wavelength / inst.radiation.wavelength
            rad = inst.radiation
            lines = tuple((wl * k, r) for wl, r in rad.lines)
            inst = inst.replace(radiation=Radiation(lines, rad.polarisation, rad.monochromator_two_theta,
                                                    rad.synchrotron_polarisation))
        return inst
    lam = args.wavelength or pattern.wavelength
    if not lam:
        raise OfflineInputError(f"{path}: no wavelength in the file; give --instrument or --wavelength")
    warnings.append("no instrument file: lab default widths at the bare wavelength; sizes and strains are then "
                    "only upper limits (calibrate with `hotstage calibrate` first)")
    return Instrument.from_wavelength(float(lam))


def run(args: argparse.Namespace) -> int:
    """Run the command; exit status 0 on success, 2 on bad input."""
    from hotstage.analysis.refine import quantify

    plot = check_output(args.plot, "--plot")
    if args.instrument and not Path(args.instrument).expanduser().is_file():
        raise OfflineInputError(f"--instrument {args.instrument}: no such file")
    phases = [load_phase(p) for p in args.phases]
    seen: set[str] = set()
    for ph in phases:
        if ph.name in seen:
            raise OfflineInputError(f"--phases: {ph.name} is given twice")
        seen.add(ph.name)
    loaded = []
    for path in args.patterns:  # all input is read and checked before any fit
        pattern = read_pattern_checked(path)
        warnings: list[str] = []
        loaded.append((path, pattern, instrument_for(args, pattern, path, warnings), warnings))
    reports = []
    for path, pattern, inst, warnings in loaded:
        try:
            res = quantify(pattern.two_theta, pattern.counts, phases, inst, sigma=pattern.sigma,
                           background_order=args.background_order, excluded=tuple(args.exclude))
        except ValueError as exc:
            raise OfflineInputError(f"{path}: {exc}") from None
        figure = None
        if plot is not None:
            figure = plot if len(loaded) == 1 else plot.with_name(f"{plot.stem}-{Path(path).stem}{plot.suffix}")
            _plot(figure, path, pattern, res, inst, args.exclude)
        reports.append((path, res, warnings + list(getattr(res, "warnings", []) or []), figure))
    if args.json:
        out = []
        for path, res, warnings, figure in reports:
            d = res.to_dict()
            d.update(pattern=str(path), warnings=warnings, plot=str(figure) if figure else None)
            out.append(d)
        print(json.dumps({"patterns": out}, indent=1, ensure_ascii=False, default=_json_default))
        return 0
    print("\n\n".join(summary_text(path, res, warnings, figure) for path, res, warnings, figure in reports))
    return 0


def _plot(figure: Path, path: str, pattern: Any, res: Any, inst: Any, excluded: list[tuple[float, float]]) -> None:
    """The fit figure of one pattern: ticks for the phases kept (significant) first, then the others."""
    from hotstage.acquisition.diffraction_plot import plot_fit

    refl = getattr(res, "reflections", {}) or {}
    kept = [n for n, p in res.phases.items() if getattr(p, "significant", True)]
    order = kept + [n for n in refl if n not in kept]
    ticks = {(n if n in kept else f"{n} (rejected)"): refl[n][0] for n in order if n in refl}
    plot_fit(figure, pattern.two_theta, pattern.counts, res.curve, background=getattr(res, "background", None),
             ticks=ticks, excluded=excluded, wavelength=inst.radiation.wavelength,
             title=f"{Path(path).name}: whole-pattern quantification",
             subtitle=f"Rwp = {100 * res.rwp:.2f} %, GoF = {res.gof:.2f}")


def with_su(value: float, su: float | None, decimals: int = 5) -> str:
    """Crystallographic notation: 5.43113(2) — the s.u. in units of the last digit, 1 significant digit (2 when
    it starts with 1); the plain value with `decimals` when there is no s.u."""
    if su is None or not math.isfinite(su) or su <= 0:
        return f"{value:.{decimals}f}"
    d = max(0, -int(math.floor(math.log10(su))))
    if round(su * 10 ** d) < 2:
        d += 1
    return f"{value:.{d}f}({int(round(su * 10 ** d))})"


def _fmt_cell(cell: Any, su: Any) -> str:
    """The independent cell parameters (a; b, c when they differ from a; angles other than 90° and the 120° of
    hexagonal axes) with their s.u."""
    a, b, c, al, be, ga = (float(v) for v in cell)
    sus = list(su) if su is not None else [None] * 6
    parts = [f"a = {with_su(a, sus[0])} Å"]
    if abs(b - a) > 1e-9:
        parts.append(f"b = {with_su(b, sus[1])} Å")
    if abs(c - a) > 1e-9:
        parts.append(f"c = {with_su(c, sus[2])} Å")
    hexagonal = abs(b - a) < 1e-9 and abs(ga - 120.0) < 1e-9
    for name, v, u in (("α", al, sus[3]), ("β", be, sus[4]), ("γ", ga, sus[5])):
        if abs(v - 90.0) > 1e-9 and not (name == "γ" and hexagonal):
            parts.append(f"{name} = {with_su(v, u, 3)}°")
    return ", ".join(parts)


def summary_text(path: str, res: Any, warnings: list[str], figure: Path | None) -> str:
    """Human-readable report of one pattern."""
    lines = [f"{path}: Rwp = {100 * res.rwp:.2f} %   GoF = {res.gof:.3f}"]
    lines.append("  phase                wt %      s.u.   size (nm)   significant")
    for name, p in res.phases.items():
        size = getattr(p, "size_nm", None)
        size_su = getattr(p, "size_nm_su", None)
        size_text = "—" if size is None or not math.isfinite(size) else (
            f"{size:.0f}" + (f" ± {size_su:.0f}" if size_su and math.isfinite(size_su) else ""))
        pval = getattr(p, "p_value", None)
        sig = ("yes" if p.significant else "no") + (f" (p = {pval:.2g})" if pval is not None else "")
        su = getattr(p, "weight_fraction_su", None)
        su_text = f"{100 * su:.2f}" if su is not None and math.isfinite(su) else "—"
        lines.append(f"  {name:<18} {100 * p.weight_fraction:7.2f}  {su_text:>8}   {size_text:>9}   {sig}")
        lines.append(f"      {_fmt_cell(p.cell, getattr(p, 'cell_su', None))}"
                     + (f", microstrain {p.microstrain:.2e}" if getattr(p, "microstrain", None) else ""))
    for name, reason in (getattr(res, "rejected", {}) or {}).items():
        lines.append(f"  rejected {name}: {reason}")
    for w in warnings:
        lines.append(f"  warning: {w}")
    if figure:
        lines.append(f"  fit figure {figure}")
    return "\n".join(lines)
