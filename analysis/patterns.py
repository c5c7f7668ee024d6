"""Read measured 1-D powder patterns (2θ, counts, σ) from the common file formats.

``read_pattern(path, fmt=None) -> Pattern`` picks the reader by extension, then by content (``fmt`` forces one:
``"xy"``, ``"xye"``, ``"chi"``, ``"gsas"``, ``"xrdml"``, ``"cif"``). Every reader returns 2θ in degrees, strictly
increasing (a strictly decreasing scan is reversed), counts as in the file and σ where the file gives it or
counting statistics define it. A file that is not a pattern or is garbled (non-numeric value, wrong column count,
point count not matching its header, non-monotonic 2θ, empty) raises :class:`PatternFileError` with one line
``"path:LINE: what is wrong"`` (the line number where it means something).

Which reader, and why (checked on PyPI, December 2026):

- ``xylib-py`` / ``xylib-py-wheels`` (xy, GSAS, pdCIF, ...): last releases 2020/2022, the latter a source
  archive that needs a C++ toolchain and Boost; it returns no σ and no line-numbered errors. Not used.
- ``fabio`` reads 2-D detector images, not 1-D patterns; ``pyFAI`` *writes* .chi/.dat/.xy but has no reader for
  them beyond ``numpy.loadtxt``. Not used.
- ``xrayutilities`` (maintained) reads .xrdml into raw arrays, but brings an 11 MB compiled package for one
  format, leaves listPositions/counting time/wavelength handling to the caller and reports no line numbers;
  ``xrdtools`` (last release 2018) is unmaintained. Not used.
- So: plain numpy for the text formats (.xy/.xye/.chi/GSAS), ``xml.etree`` for .xrdml, and ``gemmi`` (already a
  dependency, maintained, the CIF 1.1/2.0 parser of CCP4) for CIF. Our own parsers give the line numbers.

Format details and their sources:

- GSAS raw files (GSAS manual, Larson & Von Dreele, LAUR 86-748, "Powder data files"): a title line, an optional
  ``Instrument parameter file:`` line, ``#`` comments, then ``BANK n nchan nrec BINTYP c1 c2 c3 c4 TYPE``. For
  BINTYP ``CONST``/``CONS`` c1 = start, c2 = step, both in centidegrees. TYPE ``STD`` (the default): 10 points
  a line in (10(I2,F6.0)), the I2 being the number of counters summed (blank = 1), σ = √(y/n); ``ESD``: (10F8)
  value and σ pairs, 5 a line; ``ALT`` (BINTYP ``RALF``): (4(F8.0,F7.4,F5.4)) position, intensity, σ, where the
  manual gives the position in "centidegrees times 32" (GSAS-II's reader also divides by 3200) and the Fortran
  F7.4/F5.4 descriptors scale fields written without a decimal point by 10⁻⁴ (intensities come back as the
  file's normalised counts, not rescaled); ``FXYE``: free format x y σ, x in centidegrees (``FXY``: x y,
  σ = √y). Fixed-column records are read by columns; a line that does not fit the columns is read as
  whitespace-separated numbers (many writers produce that, e.g. the files of the Rietveld mailing list, 1998).
  Only the first bank is read (the number of banks is in ``metadata["n_banks"]``). A run of zero intensities
  ending the bank after a well-counted background is the writer's fill of unmeasured channels (GSAS and GSAS-II
  give zero intensities no weight) and is dropped (``metadata["trailing_zeros_dropped"]``; found on the GSAS-II
  exercise file FAP.XRA, tests/data/patterns/real/).
- Fit2D/pyFAI .chi: the classic form is 4 header lines (title, x label, y label, number of points) then x y [σ];
  pyFAI's own 1-D output has ``#`` comment lines with the radial unit (``2th_deg``, ``2th_rad``, ``q_nm^-1``,
  ``q_A^-1``) in the column-name line and ``Wavelength: value [m]`` (SI metres) in the header. q is turned into
  2θ = 2 asin(qλ/4π) only when the header gives λ; otherwise it is refused.
- PANalytical .xrdml (XRDML schema 1.0–2.x, www.xrdml.com): ``dataPoints/positions[@axis='2Theta']`` as
  startPosition/endPosition (equally spaced) or listPositions, ``counts`` (schema ≥ 1.5) or ``intensities``;
  a unit of counts/s (cps) is turned into counts with ``commonCountingTime`` (σ = √counts needs counts). The
  wavelength is ``usedWavelength/kAlpha1`` (kAlpha2, ratioKAlpha2KAlpha1 and kBeta in metadata).
- CIF powder data (pdCIF dictionary, Toby 2006, Int. Tables G §4.3): 2θ from ``_pd_meas_2theta_scan`` or
  ``_pd_proc_2theta_corrected`` or, without a column, from ``_pd_meas_2theta_range_min/max/inc`` (for measured
  intensities) / ``_pd_proc_2theta_range_*`` (processed); intensities from ``_pd_meas_counts_total``,
  ``_pd_meas_intensity_total``, ``_pd_proc_intensity_total`` or ``_pd_proc_intensity_net`` (first present);
  σ from the value's ``(su)``, else ``_pd_proc_ls_weight`` (the dictionary defines w = 1/σ²), else √counts for
  counts. Some files put σ itself in ``_pd_proc_ls_weight`` (the measured β-CsPbI3 profile of Marronnier et al.
  2018, CCDC 1872726: w/√I has median 0.98): when log w rises with log I (slope near +½, as σ ∝ √I would)
  instead of falling (slope near −1, as 1/σ² ∝ 1/I would), σ = w is taken; ``metadata["sigma_from"]`` and
  ``metadata["ls_weight_interpretation"]`` record which and why.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["Pattern", "PatternFileError", "read_pattern", "FORMATS"]

FORMATS: tuple[str, ...] = ("xy", "xye", "chi", "gsas", "xrdml", "cif")
"""Values ``fmt`` accepts."""

_EXTENSIONS: dict[str, str] = {
    ".xy": "xy", ".xye": "xye", ".dat": "xy", ".txt": "xy", ".csv": "xy", ".chi": "chi",
    ".gsa": "gsas", ".gss": "gsas", ".gsas": "gsas", ".gda": "gsas", ".raw": "gsas", ".fxye": "gsas",
    ".xra": "gsas",
    ".xrdml": "xrdml", ".cif": "cif",
}
_COMMENT_CHARS = ("#", "!", "'")
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eEdD][-+]?\d+)?"


class PatternFileError(ValueError):
    """A file that is not a readable powder pattern; the message is ``"path:LINE: what is wrong"``."""

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line


@dataclass(frozen=True, eq=False)
class Pattern:
    """A measured powder pattern: 2θ (deg, strictly increasing), counts, σ (or None), λ (Å, or None)."""

    two_theta: np.ndarray
    counts: np.ndarray
    sigma: np.ndarray | None
    wavelength: float | None
    metadata: dict = field(default_factory=dict)
    source: str = ""

    def __len__(self) -> int:
        return int(self.two_theta.size)


# ----------------------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------------------

def read_pattern(path: str | Path, *, fmt: str | None = None) -> Pattern:
    """Read a powder pattern; the format from ``fmt``, else the extension, else the content."""
    p = Path(path)
    if fmt is not None and fmt not in FORMATS:
        raise PatternFileError(p, f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    if not p.is_file():
        raise PatternFileError(p, "no such file" if not p.exists() else "not a regular file")
    raw = p.read_bytes()
    if not raw.strip():
        raise PatternFileError(p, "empty file", 1)
    kind = fmt or _EXTENSIONS.get(p.suffix.lower()) or _sniff(raw)
    if kind in ("gsas", "xy", "xye", "chi", "cif") and b"\x00" in raw[:4096]:
        raise PatternFileError(p, f"binary file, not a {kind} text pattern (binary .raw files of Bruker/Rigaku/"
                                  "Philips diffractometers are not read; export .xy or .xrdml)")
    if kind in ("xy", "xye") and fmt is None and _sniff(raw) not in ("xy", None):
        # a .dat/.txt/.xy that is really GSAS, CIF, XML or a pyFAI file with a q column
        kind = _sniff(raw)
    readers: dict[str, Callable[[Path, bytes], Pattern]] = {
        "xy": _read_xy, "xye": _read_xy, "chi": _read_chi, "gsas": _read_gsas, "xrdml": _read_xrdml,
        "cif": _read_cif,
    }
    if kind is None:
        kind = "xy"
    return readers[kind](p, raw)


def _sniff(raw: bytes) -> str | None:
    """Guess a format from the first few kB of content (None: nothing recognised)."""
    head = raw[:8192].decode("latin-1")
    if "<xrdMeasurements" in head or "xrdml" in head[:2000].lower() and head.lstrip().startswith("<"):
        return "xrdml"
    if re.search(r"^\s*data_\S+", head, re.M) and ("_pd_" in raw.decode("latin-1")):
        return "cif"
    if re.search(r"^BANK\s+\d+", head, re.M):
        return "gsas"
    if re.search(r"^#.*\b(2th_deg|2th_rad|q_nm\^-1|q_A\^-1)\b", head, re.M):
        return "chi"
    return "xy"


def _text_lines(path: Path, raw: bytes) -> list[str]:
    """Decode (UTF-8, else Latin-1) and split into lines without their ends."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return text.splitlines()


def _float(path: Path, token: str, line: int, what: str = "value") -> float:
    """Parse one number (Fortran D exponents allowed); non-numeric or non-finite → PatternFileError."""
    try:
        v = float(token.replace("D", "E").replace("d", "e"))
    except ValueError:
        raise PatternFileError(path, f"{what} {token!r} is not a number", line) from None
    if not math.isfinite(v):
        raise PatternFileError(path, f"{what} {token!r} is not finite", line)
    return v


def _finish(path: Path, x: np.ndarray, y: np.ndarray, s: np.ndarray | None, lines: np.ndarray | None,
            wavelength: float | None, metadata: dict, *, what: str = "2θ") -> Pattern:
    """Check monotonicity and σ, reverse a decreasing scan, build the Pattern."""
    if x.size == 0:
        raise PatternFileError(path, "no data points")
    if x.size > 1:
        d = np.diff(x)
        if np.all(d < 0):
            x, y = x[::-1], y[::-1]
            s = s[::-1] if s is not None else None
            lines = lines[::-1] if lines is not None else None
            metadata["reversed"] = True
            d = -d[::-1]
        bad = np.flatnonzero(d <= 0)
        if bad.size:
            i = int(bad[0]) + 1
            ln = int(lines[i]) if lines is not None else None
            raise PatternFileError(path, f"{what} not strictly increasing: {x[i]:g} follows {x[i - 1]:g}", ln)
    if s is not None:
        neg = np.flatnonzero(~(s >= 0))
        if neg.size:
            i = int(neg[0])
            ln = int(lines[i]) if lines is not None else None
            raise PatternFileError(path, f"σ = {s[i]:g} is negative", ln)
        n_zero = int(np.count_nonzero(s == 0))
        if n_zero:
            metadata.setdefault("warnings", []).append(f"{n_zero} points have σ = 0 (infinite weight)")
    if wavelength is not None and not (wavelength > 0 and math.isfinite(wavelength)):
        raise PatternFileError(path, f"wavelength {wavelength!r} is not a positive number")
    metadata.setdefault("n_points", int(x.size))
    return Pattern(two_theta=np.ascontiguousarray(x, dtype=float), counts=np.ascontiguousarray(y, dtype=float),
                   sigma=None if s is None else np.ascontiguousarray(s, dtype=float),
                   wavelength=wavelength, metadata=metadata, source=str(path))


_WAVELENGTH_RE = re.compile(r"(?:wavelength|lambda|wave_length)\s*[:=]?\s*(" + _NUMBER + r")\s*([a-zA-Zµ\u00c5]*)",
                            re.I)


def _wavelength_from(text: str) -> float | None:
    """λ in Å from a header line such as ``Wavelength: 1.0332e-10 m`` or ``# wavelength = 0.41391 A``."""
    m = _WAVELENGTH_RE.search(text)
    if not m:
        return None
    v = float(m.group(1).replace("D", "E").replace("d", "e"))
    unit = m.group(2).lower()
    if unit == "m" or (not unit and v < 1e-6):
        return v * 1e10
    if unit == "nm":
        return v * 10.0
    if unit in ("pm",):
        return v / 100.0
    return v


# ----------------------------------------------------------------------------------------------------------
# .xy / .xye / generic columns
# ----------------------------------------------------------------------------------------------------------

def _columns(path: Path, lines: list[str], start: int = 0, *, allow_header: bool = True,
             ncols_allowed: tuple[int, ...] = (2, 3)) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Numeric rows from ``lines[start:]``: (values (n, ncol), file line numbers, header lines, comments).

    Non-numeric lines before the first numeric row are a header (when allowed); after it they are an error.
    """
    rows: list[list[float]] = []
    linenos: list[int] = []
    header: list[str] = []
    comments: list[str] = []
    ncol: int | None = None
    for i in range(start, len(lines)):
        stripped = lines[i].strip()
        if not stripped or stripped.startswith(_COMMENT_CHARS):
            if stripped:
                comments.append(stripped)
            continue
        tokens = stripped.replace(",", " ").replace(";", " ").split()
        try:  # fast path: plain decimal numbers (non-finite values are caught below, with their line)
            if "_" in stripped:
                raise ValueError
            vals = [float(t) for t in tokens]
            numeric = True
        except ValueError:
            numeric = all(re.fullmatch(_NUMBER, t) for t in tokens)
            vals = None
        if not rows and (not numeric or len(tokens) == 1) and allow_header:
            header.append(stripped)  # a title, column names, or a lone point count before the data
            continue
        ln = i + 1
        if ncol is None:
            ncol = len(tokens)
            if ncol not in ncols_allowed:
                raise PatternFileError(path, f"{ncol} columns; expected {' or '.join(map(str, ncols_allowed))}"
                                             " (2θ, intensity[, σ])", ln)
        if vals is None:
            vals = [_float(path, t, ln) for t in tokens]
        if len(vals) != ncol:
            raise PatternFileError(path, f"{len(vals)} columns where the data above have {ncol}", ln)
        rows.append(vals)
        linenos.append(i + 1)
    if not rows:
        raise PatternFileError(path, "no data lines (only header or comment lines)", len(lines) or 1)
    data = np.asarray(rows, dtype=float)
    bad = ~np.isfinite(data)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise PatternFileError(path, f"value {lines[linenos[r] - 1].replace(',', ' ').replace(';', ' ').split()[c]!r}"
                                     " is not finite", linenos[r])
    return data, np.asarray(linenos), header, comments


def _read_xy(path: Path, raw: bytes) -> Pattern:
    lines = _text_lines(path, raw)
    data, linenos, header, comments = _columns(path, lines)
    x, y = data[:, 0], data[:, 1]
    s = data[:, 2] if data.shape[1] == 3 else None
    meta: dict[str, Any] = {"format": "xye" if s is not None else "xy", "header": header, "comments": comments,
                            "sigma_from": "third column" if s is not None else None}
    wl = None
    for text in header + comments:
        wl = _wavelength_from(text)
        if wl is not None:
            meta["wavelength_from"] = text
            break
    return _finish(path, x, y, s, linenos, wl, meta)


# ----------------------------------------------------------------------------------------------------------
# .chi (Fit2D classic / pyFAI)
# ----------------------------------------------------------------------------------------------------------

_PYFAI_UNITS = {"2th_deg": "2th_deg", "2th_rad": "2th_rad", "q_nm^-1": "q_nm^-1", "q_a^-1": "q_A^-1",
                "r_mm": "r_mm", "d*2_a^-2": "d*2_A^-2", "chi_deg": "chi_deg"}


def _unit_from_label(label: str) -> str | None:
    """Radial unit of a Fit2D x-axis label (``2-Theta Angle (Degrees)``, ``Q (nm-1)``, ...)."""
    low = label.lower().replace(" ", "")
    if "2-theta" in low or "2theta" in low or "twotheta" in low or "2th" in low:
        return "2th_rad" if "rad" in low else "2th_deg"
    if low.startswith("q") or "q(" in low or "scatteringvector" in low:
        if "nm" in low:
            return "q_nm^-1"
        if "a-1" in low or "a^-1" in low or "å" in low or "angstrom" in low:
            return "q_A^-1"
        return "q_unknown"
    if "radial" in low or "mm" in low:
        return "r_mm"
    return None


def _read_chi(path: Path, raw: bytes) -> Pattern:
    lines = _text_lines(path, raw)
    meta: dict[str, Any] = {"format": "chi"}
    first = next((ln.strip() for ln in lines if ln.strip()), "")
    wavelength = None
    if first.startswith("#"):
        # pyFAI's commented header: the unit is in the column-name line, λ in "Wavelength: ... m".
        comments = [ln.strip() for ln in lines if ln.strip().startswith("#")]
        unit = None
        for c in comments:
            for tok in c.lstrip("#").split():
                u = _PYFAI_UNITS.get(tok.lower())
                if u:
                    unit = u
            if wavelength is None and re.search(r"wavelength", c, re.I):
                wavelength = _wavelength_from(c)
        data, linenos, header, _ = _columns(path, lines)
        meta.update(style="pyFAI", header=comments)
        unit_line = next((i + 1 for i, ln in enumerate(lines) if ln.lstrip().startswith("#") and unit
                          and unit.lower() in ln.lower()), 1)
    else:
        if len(lines) < 5:
            raise PatternFileError(path, "a Fit2D .chi file has 4 header lines (title, x label, y label, number "
                                         "of points) before the data", len(lines))
        meta.update(style="Fit2D", title=lines[0].strip(), x_label=lines[1].strip(), y_label=lines[2].strip())
        unit = _unit_from_label(lines[1])
        try:
            n_declared = int(lines[3].split()[0])
        except (ValueError, IndexError):
            raise PatternFileError(path, f"line 4 of a Fit2D .chi must be the number of points, not "
                                         f"{lines[3].strip()[:40]!r}", 4) from None
        data, linenos, _, _ = _columns(path, lines, 4, allow_header=False)
        if data.shape[0] != n_declared:
            raise PatternFileError(path, f"header declares {n_declared} points but {data.shape[0]} data lines "
                                         "follow", 4)
        unit_line = 2
        for text in lines[:4]:
            wavelength = wavelength or _wavelength_from(text)
    if unit is None:
        raise PatternFileError(path, "no radial unit found (expected 2th_deg, 2th_rad, q_nm^-1 or q_A^-1 in the "
                                     "header)", unit_line)
    meta["unit"] = unit
    x = data[:, 0].copy()
    if unit == "2th_rad":
        x = np.degrees(x)
    elif unit.startswith("q_"):
        if unit == "q_unknown":
            raise PatternFileError(path, "x axis is q in an unknown unit (nm⁻¹ or Å⁻¹?)", unit_line)
        if wavelength is None:
            raise PatternFileError(path, f"x axis is {unit} and the header gives no wavelength: cannot convert "
                                         "q to 2θ (integrate to 2th_deg, or add '# Wavelength: λ m')", unit_line)
        q_inv_angstrom = x / 10.0 if unit == "q_nm^-1" else x
        arg = q_inv_angstrom * wavelength / (4.0 * math.pi)
        if np.any(np.abs(arg) > 1):
            bad = int(np.flatnonzero(np.abs(arg) > 1)[0])
            raise PatternFileError(path, f"q = {data[bad, 0]:g} {unit[2:]} is beyond 4π/λ for λ = {wavelength:g} Å",
                                   int(linenos[bad]))
        x = np.degrees(2.0 * np.arcsin(arg))
        meta["converted_from"] = unit
    elif unit != "2th_deg":
        raise PatternFileError(path, f"x axis unit {unit} is not 2θ or q", unit_line)
    s = data[:, 2] if data.shape[1] == 3 else None
    meta["sigma_from"] = "third column" if s is not None else None
    return _finish(path, x, data[:, 1], s, linenos, wavelength, meta)


# ----------------------------------------------------------------------------------------------------------
# GSAS raw files
# ----------------------------------------------------------------------------------------------------------

def _fortran_f(field: str, decimals: int) -> float:
    """Value of a Fortran ``Fw.d`` input field: blanks ignored, no decimal point → scaled by 10⁻ᵈ."""
    t = field.strip().replace(" ", "")
    if not t:
        return 0.0
    v = float(t.replace("D", "E").replace("d", "e"))
    if "." not in t and "e" not in t.lower():
        v /= 10.0 ** decimals
    return v


def _fixed_fields(line: str, widths: tuple[int, ...], per_line: int) -> list[list[str]] | None:
    """Cut a record into ``per_line`` groups of fields of the given widths; None if it does not fit."""
    body = line.rstrip()
    size = sum(widths)
    if len(body) > size * per_line:
        return None
    # fixed-format writers right-justify every field, so a full group ends on a multiple of its width; a line
    # that does not (e.g. "20 21 26 29") is free format. Adjacent fields ("10   166") are normal here.
    if len(body) % size:
        return None
    groups = []
    for k in range(per_line):
        chunk = body[k * size:(k + 1) * size]
        if not chunk.strip():
            break
        fields, pos = [], 0
        for w in widths:
            fields.append(chunk[pos:pos + w])
            pos += w
        groups.append(fields)
    return groups


def _read_gsas(path: Path, raw: bytes) -> Pattern:
    lines = _text_lines(path, raw)
    banks = [i for i, ln in enumerate(lines) if ln.startswith("BANK")]
    if not banks:
        raise PatternFileError(path, "no 'BANK' record: not a GSAS raw data file", 1)
    meta: dict[str, Any] = {"format": "gsas", "title": lines[0].strip(), "n_banks": len(banks)}
    for ln in lines[1:banks[0]]:
        if ln.lower().startswith("inst") and ":" in ln:
            meta["instrument_parameter_file"] = ln.split(":", 1)[1].strip()
    b = banks[0]
    hdr_no = b + 1
    tokens = lines[b].split()
    if len(tokens) < 5:
        raise PatternFileError(path, "BANK record needs 'BANK n nchan nrec BINTYP ...'", hdr_no)
    try:
        bank, nchan, nrec = int(tokens[1]), int(tokens[2]), int(tokens[3])
    except ValueError:
        raise PatternFileError(path, "BANK record: bank number, nchan and nrec must be integers", hdr_no) from None
    bintyp = tokens[4].upper()
    types = {"STD", "ESD", "ALT", "FXYE", "FXY"}
    dtype = next((t.upper() for t in tokens[5:] if t.upper() in types), "STD")
    meta.update(bank=bank, bintyp=bintyp, data_type=dtype, nchan_declared=nchan)
    if nchan <= 0:
        raise PatternFileError(path, f"BANK record declares {nchan} points", hdr_no)
    # the data lines: up to the next BANK (or end), skipping comments
    end = banks[1] if len(banks) > 1 else len(lines)
    body = [(i + 1, lines[i]) for i in range(b + 1, end)
            if lines[i].strip() and not lines[i].lstrip().startswith("#")
            and not lines[i].startswith(("TIME_MAP", "Monitor")) and "\x1a" not in lines[i]]
    if not body:
        raise PatternFileError(path, f"bank {bank} has no data lines", hdr_no)
    coefs: list[float] = []
    if bintyp in ("CONST", "CONS"):
        if dtype in ("STD", "ESD") and len(tokens) < 7:
            raise PatternFileError(path, f"BANK record with {bintyp} needs start and step (centidegrees)", hdr_no)
        try:
            coefs = [float(t) for t in tokens[5:9] if t.upper() not in types]
        except ValueError:
            raise PatternFileError(path, f"BANK record: {bintyp} start/step are not numbers", hdr_no) from None
    elif bintyp == "RALF":
        if dtype not in ("ALT", "FXYE", "FXY"):
            raise PatternFileError(path, f"BINTYP RALF goes with ALT or FXYE data, not {dtype}", hdr_no)
    else:
        raise PatternFileError(path, f"BINTYP {bintyp!r} not read (constant-wavelength CONST/CONS or RALF only; "
                                     "time-of-flight banks are not powder 2θ scans)", hdr_no)

    xs: list[float] = []
    ys: list[float] = []
    ss: list[float] = []
    lns: list[int] = []
    ncounters: list[float] = []

    if dtype == "STD":
        for ln, text in body:
            groups = _fixed_fields(text, (2, 6), 10)
            parsed = None
            if groups is not None:
                try:
                    parsed = [(float(g[0]) if g[0].strip() else 1.0, float(g[1])) for g in groups]
                except ValueError:
                    parsed = None
            if parsed is None:  # free format: whitespace-separated counts, one counter each
                parsed = [(1.0, _float(path, t, ln, "count")) for t in text.split()]
            for n, v in parsed:
                ncounters.append(max(n, 1.0))
                ys.append(v)
                lns.append(ln)
    elif dtype == "ESD":
        for ln, text in body:
            groups = _fixed_fields(text, (8, 8), 5)
            parsed = None
            if groups is not None:
                try:
                    parsed = [(float(g[0]), float(g[1])) for g in groups]
                except ValueError:
                    parsed = None
            if parsed is None:
                toks = text.split()
                if len(toks) % 2:
                    raise PatternFileError(path, f"ESD record has {len(toks)} numbers; they come in (value, σ) "
                                                 "pairs", ln)
                parsed = [(_float(path, toks[k], ln), _float(path, toks[k + 1], ln, "σ"))
                          for k in range(0, len(toks), 2)]
            for v, e in parsed:
                ys.append(v)
                ss.append(e)
                lns.append(ln)
    elif dtype == "ALT":
        for ln, text in body:
            groups = _fixed_fields(text, (8, 7, 5), 4)
            if groups is None:
                raise PatternFileError(path, "ALT record longer than 4 × 20 columns", ln)
            for g in groups:
                try:
                    x32 = _fortran_f(g[0], 0)
                    v = _fortran_f(g[1], 4)
                    e = _fortran_f(g[2], 4)
                except ValueError:
                    raise PatternFileError(path, f"ALT field {''.join(g).strip()!r} is not (F8.0,F7.4,F5.4) "
                                                 "numbers", ln) from None
                if x32 == 0.0 and v == 0.0 and e == 0.0:
                    continue  # padding in the last record
                xs.append(x32 / 3200.0)
                ys.append(v)
                ss.append(e)
                lns.append(ln)
        meta["x_units_in_file"] = "centidegrees × 32 (GSAS manual, ALT records)"
    else:  # FXYE / FXY
        want = 3 if dtype == "FXYE" else 2
        for ln, text in body:
            toks = text.split()
            if len(toks) != want:
                raise PatternFileError(path, f"{dtype} line has {len(toks)} numbers; expected {want}", ln)
            xs.append(_float(path, toks[0], ln, "2θ") / 100.0)
            ys.append(_float(path, toks[1], ln))
            if dtype == "FXYE":
                ss.append(_float(path, toks[2], ln, "σ"))
            lns.append(ln)
        meta["x_units_in_file"] = "centidegrees"

    n = len(ys)
    if n < nchan:
        raise PatternFileError(path, f"bank {bank} declares {nchan} points but holds {n}", lns[-1] if lns else hdr_no)
    if n > nchan:
        extra = np.asarray(ys[nchan:])
        # fixed-format writers may fill the last record with blanks/zeros; anything else is a mismatch
        if dtype in ("STD", "ESD") and np.all(extra == 0) and lns[nchan] == lns[-1]:
            del ys[nchan:], lns[nchan:]
            del ncounters[nchan:]
            del ss[nchan:]
        else:
            raise PatternFileError(path, f"bank {bank} declares {nchan} points but holds {n}", lns[nchan])
    n_lines = len({ln for ln in lns})
    if nrec > 0 and n_lines != nrec:
        meta.setdefault("warnings", []).append(f"BANK record declares {nrec} records, the bank has {n_lines} lines")

    y = np.asarray(ys, dtype=float)
    if dtype in ("STD", "ESD"):
        start, step = coefs[0] / 100.0, coefs[1] / 100.0
        if step <= 0:
            raise PatternFileError(path, f"{bintyp} step {coefs[1]:g} centidegrees is not positive", hdr_no)
        x = start + step * np.arange(nchan)
        meta.update(start_centideg=coefs[0], step_centideg=coefs[1])
    else:
        x = np.asarray(xs, dtype=float)
    if dtype == "STD":
        nc = np.asarray(ncounters)
        s = np.sqrt(np.maximum(y, 1.0) / nc)
        meta["sigma_from"] = "counting statistics: σ = √(y/n counters), zero counts taken as 1"
        if np.any(nc != 1):
            meta["n_counters"] = nc.astype(int).tolist()
    elif dtype == "FXY":
        s = np.sqrt(np.maximum(y, 1.0))
        meta["sigma_from"] = "counting statistics: σ = √y, zero counts taken as 1"
    else:
        s = np.asarray(ss, dtype=float)
        meta["sigma_from"] = f"{dtype} σ column"
    x, y, s, lns_arr = _drop_unmeasured_tail(x, y, s, np.asarray(lns), meta)
    wl = _wavelength_from(lines[0])
    return _finish(path, x, y, s, lns_arr, wl, meta)


TAIL_MIN_COUNTS = 10.0
"""A run of exact zeros ending a GSAS bank is taken as unmeasured when the median of the 20 points before it is at
least this many counts (a Poisson draw of 0 at a mean ≥ 10 has probability ≤ e⁻¹⁰ ≈ 5e-5 per point)."""


def _drop_unmeasured_tail(x: np.ndarray, y: np.ndarray, s: np.ndarray, lns: np.ndarray, meta: dict) \
        -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Drop a run of zero intensities that ends a GSAS bank above a well-counted background.

    GSAS and GSAS-II give zero intensities no weight (GSAS-II ``G2pwd_fxye``: y ≤ 0 → w = 0); fixed-format
    writers fill the declared channels past the end of the measured scan with zeros (the GSAS-II exercise file
    FAP.XRA ends in two zeros after a background of ~80 counts). Counting statistics with "zero taken as 1" would
    give such points a weight of 1, i.e. residuals of ~80σ each, so they are removed and counted in
    ``metadata["trailing_zeros_dropped"]``. Zeros inside the scan, or after a background too low to tell a zero
    count from a missing point, are kept as counts.
    """
    nz = np.flatnonzero(y != 0)
    if nz.size == 0 or nz[-1] == y.size - 1:
        return x, y, s, lns
    last = int(nz[-1]) + 1
    before = y[max(0, last - 20):last]
    if np.median(before) < TAIL_MIN_COUNTS:
        return x, y, s, lns
    k = y.size - last
    meta["trailing_zeros_dropped"] = k
    meta.setdefault("warnings", []).append(
        f"{k} zero intensities ending the bank (after a median of {np.median(before):.0f} counts) taken as "
        "unmeasured channels and dropped")
    return x[:last], y[:last], s[:last], lns[:last]


# ----------------------------------------------------------------------------------------------------------
# PANalytical .xrdml
# ----------------------------------------------------------------------------------------------------------

def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(elem: ET.Element, name: str) -> ET.Element | None:
    for c in elem:
        if _local(c.tag) == name:
            return c
    return None


def _iter_local(elem: ET.Element, name: str):
    for e in elem.iter():
        if _local(e.tag) == name:
            yield e


def _numbers(path: Path, elem: ET.Element, what: str, lineno: int | None) -> np.ndarray:
    text = (elem.text or "").split()
    try:
        return np.asarray([float(t) for t in text], dtype=float)
    except ValueError:
        bad = next(t for t in text if not re.fullmatch(_NUMBER, t))
        raise PatternFileError(path, f"<{what}> holds {bad!r}, not a number", lineno) from None


def _read_xrdml(path: Path, raw: bytes) -> Pattern:
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise PatternFileError(path, f"not well-formed XML: {exc}", exc.position[0]) from None
    # line of every element, for the error messages: start tags in document order pair with root.iter()
    text = raw.decode("utf-8", errors="replace")
    text = re.sub(r"<!--.*?-->|<!\[CDATA\[.*?\]\]>", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    starts = [text.count("\n", 0, m.start()) + 1 for m in re.finditer(r"<[A-Za-z_]", text)]
    elements = list(root.iter())
    line_of = {id(e): ln for e, ln in zip(elements, starts)} if len(starts) == len(elements) else {}

    def line(elem: ET.Element) -> int | None:
        return line_of.get(id(elem))

    if _local(root.tag) != "xrdMeasurements":
        raise PatternFileError(path, f"root element <{_local(root.tag)}> is not <xrdMeasurements>: not XRDML", 1)
    ns = root.tag[1:].split("}")[0] if root.tag.startswith("{") else ""
    meta: dict[str, Any] = {"format": "xrdml", "namespace": ns}
    sample = _child(root, "sample")
    if sample is not None:
        for key in ("id", "name"):
            e = _child(sample, key)
            if e is not None and (e.text or "").strip():
                meta[f"sample_{key}"] = e.text.strip()
    meas = next(_iter_local(root, "xrdMeasurement"), None)
    if meas is None:
        raise PatternFileError(path, "no <xrdMeasurement> element", line(root))
    meta["measurement_type"] = meas.get("measurementType")
    wavelength = None
    used = _child(meas, "usedWavelength")
    if used is not None:
        meta["wavelength_intended"] = used.get("intended")
        for key in ("kAlpha1", "kAlpha2", "kBeta", "ratioKAlpha2KAlpha1"):
            e = _child(used, key)
            if e is not None and (e.text or "").strip():
                v = _float(path, e.text.strip(), line(e), key)
                unit = (e.get("unit") or "Angstrom").lower()
                if key != "ratioKAlpha2KAlpha1" and unit in ("nm", "nanometer"):
                    v *= 10.0
                meta[key] = v
        wavelength = meta.get("kAlpha1")
    scans = [s for s in _iter_local(meas, "scan")]
    if not scans:
        raise PatternFileError(path, "no <scan> element", line(meas))
    meta["n_scans"] = len(scans)
    scan = scans[0]
    meta["scan_axis"] = scan.get("scanAxis")
    header = _child(scan, "header")
    if header is not None:
        for key in ("startTimeStamp", "endTimeStamp"):
            e = _child(header, key)
            if e is not None and (e.text or "").strip():
                meta[key] = e.text.strip()
    dp = _child(scan, "dataPoints")
    if dp is None:
        raise PatternFileError(path, "scan has no <dataPoints>", line(scan))
    inten_el = _child(dp, "counts")
    if inten_el is None:
        inten_el = _child(dp, "intensities")
    if inten_el is None:
        raise PatternFileError(path, "dataPoints has neither <counts> nor <intensities>", line(dp))
    y = _numbers(path, inten_el, _local(inten_el.tag), line(inten_el))
    n = y.size
    if n == 0:
        raise PatternFileError(path, f"<{_local(inten_el.tag)}> is empty", line(inten_el))
    pos = next((p for p in dp if _local(p.tag) == "positions" and p.get("axis", "").lower() == "2theta"), None)
    if pos is None:
        raise PatternFileError(path, "no <positions axis=\"2Theta\">: not a 2θ scan", line(dp))
    lst = _child(pos, "listPositions")
    if lst is not None:
        x = _numbers(path, lst, "listPositions", line(lst))
        if x.size != n:
            raise PatternFileError(path, f"{x.size} listPositions for {n} intensities", line(lst))
    else:
        st, en = _child(pos, "startPosition"), _child(pos, "endPosition")
        if st is None or en is None:
            raise PatternFileError(path, "2Theta positions need startPosition/endPosition or listPositions",
                                   line(pos))
        a = _float(path, (st.text or "").strip(), line(st), "startPosition")
        b = _float(path, (en.text or "").strip(), line(en), "endPosition")
        x = np.linspace(a, b, n) if n > 1 else np.asarray([a])
    unit = (inten_el.get("unit") or "counts").lower()
    ct_el = _child(dp, "commonCountingTime")
    counting_time = None
    if ct_el is not None and (ct_el.text or "").strip():
        counting_time = _float(path, ct_el.text.strip(), line(ct_el), "commonCountingTime")
        meta["counting_time_s"] = counting_time
    if unit in ("counts/s", "cps", "counts per second"):
        if counting_time is None or counting_time <= 0:
            raise PatternFileError(path, "intensities in counts/s without a positive commonCountingTime",
                                   line(inten_el))
        y = y * counting_time
        meta["converted_from"] = "counts/s × commonCountingTime"
    if _child(dp, "beamAttenuationFactors") is not None:
        meta.setdefault("warnings", []).append("beamAttenuationFactors present: counts are as recorded")
    meta["intensity_element"] = _local(inten_el.tag)
    s = np.sqrt(np.maximum(y, 1.0))
    meta["sigma_from"] = "counting statistics: σ = √counts, zero counts taken as 1"
    return _finish(path, x, y, s, None, wavelength, meta)


# ----------------------------------------------------------------------------------------------------------
# CIF powder data (gemmi)
# ----------------------------------------------------------------------------------------------------------

_CIF_X = ("_pd_meas_2theta_scan", "_pd_proc_2theta_corrected")
_CIF_Y = ("_pd_meas_counts_total", "_pd_meas_intensity_total", "_pd_proc_intensity_total",
          "_pd_proc_intensity_net")
_SU_RE = re.compile(r"^([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?:\((\d+)\))?$")


def _value_su(token: str) -> tuple[float, float | None] | None:
    """``'1234.5(12)'`` → (1234.5, 1.2); ``'1234'`` → (1234, None); not a number → None."""
    m = _SU_RE.match(token)
    if not m:
        return None
    num, su = m.group(1), m.group(2)
    v = float(num)
    if su is None:
        return v, None
    mant = num.lower().split("e")[0]
    dec = len(mant.split(".")[1]) if "." in mant else 0
    exp = int(num.lower().split("e")[1]) if "e" in num.lower() else 0
    return v, int(su) * 10.0 ** (exp - dec)


def _tag_line(text_lines: list[str], tag: str) -> int | None:
    low = tag.lower()
    for i, ln in enumerate(text_lines):
        parts = ln.strip().lower().split()
        if parts and parts[0] == low:
            return i + 1
    return None


def _token_line(text_lines: list[str], start: int | None, token: str) -> int | None:
    if start is None:
        return None
    for i in range(start, len(text_lines)):
        if token in text_lines[i].split():
            return i + 1
    return None


def _read_cif(path: Path, raw: bytes) -> Pattern:
    import gemmi  # imported here: the text readers need no compiled extension

    try:
        doc = gemmi.cif.read_string(raw.decode("utf-8", errors="replace"))
    except Exception as exc:  # gemmi raises RuntimeError/ValueError with "line N" in the text
        msg = str(exc).strip().splitlines()[0]
        m = re.search(r"(?:line|:)\s*(\d+)", msg)
        msg = re.sub(r"^string:\d+(?::\d+)?(?:\(\d+\))?:\s*", "", msg)
        raise PatternFileError(path, f"CIF syntax: {msg}", int(m.group(1)) if m else None) from None
    text_lines = _text_lines(path, raw)
    chosen = None
    for block in doc:
        for ytag in _CIF_Y:
            col = block.find_values(ytag)
            if col and len(col) > 0:
                chosen = (block, ytag)
                break
        if chosen:
            break
    if chosen is None:
        raise PatternFileError(path, "no powder intensities (none of " + ", ".join(_CIF_Y) + "): not a pdCIF "
                                     "pattern", 1)
    block, ytag = chosen
    ycol = block.find_values(ytag)
    y_line = _tag_line(text_lines, ytag)
    meta: dict[str, Any] = {"format": "cif", "block": block.name, "intensity_tag": ytag}
    n = len(ycol)

    def column(tag: str) -> tuple[np.ndarray, np.ndarray | None, list[str]] | None:
        col = block.find_values(tag)
        if not col or len(col) == 0:
            return None
        if len(col) != n:
            raise PatternFileError(path, f"{tag} has {len(col)} values, {ytag} {n}", _tag_line(text_lines, tag))
        vals = np.empty(n)
        sus = np.full(n, np.nan)
        tokens = [col[i] for i in range(n)]
        start = _tag_line(text_lines, tag)
        for i, tok in enumerate(tokens):
            if tok in ("?", "."):
                vals[i] = np.nan
                continue
            parsed = _value_su(tok)
            if parsed is None:
                raise PatternFileError(path, f"{tag} value {tok!r} (point {i + 1}) is not a number",
                                       _token_line(text_lines, start, tok))
            vals[i] = parsed[0]
            if parsed[1] is not None:
                sus[i] = parsed[1]
        return vals, (sus if np.isfinite(sus).any() else None), tokens

    ydata = column(ytag)
    assert ydata is not None
    y, y_su, _ = ydata
    if np.isnan(y).any():
        i = int(np.flatnonzero(np.isnan(y))[0])
        raise PatternFileError(path, f"{ytag} point {i + 1} is unknown ('?' or '.')",
                               _token_line(text_lines, y_line, "?") or y_line)
    # the 2θ column of the intensities' own loop first (measured positions before corrected ones)
    xtag = next((t for t in _CIF_X if len(block.find([ytag, t])) == n), None)
    if xtag is None:
        xtag = next((t for t in _CIF_X if len(block.find_values(t)) == n), None)
    linenos = None
    if xtag is not None:
        xdata = column(xtag)
        assert xdata is not None
        x = xdata[0]
        if np.isnan(x).any():
            raise PatternFileError(path, f"{xtag} has unknown values ('?')", _tag_line(text_lines, xtag))
        meta["two_theta_tag"] = xtag
        # the data lines, one point a line in the usual layout: for error messages only
        first = _token_line(text_lines, _tag_line(text_lines, ytag), xdata[2][0])
        if (first is not None and first + n - 1 <= len(text_lines)
                and xdata[2][-1] in text_lines[first + n - 2].split()):  # one point a line: line numbers hold
            linenos = np.arange(first, first + n)
    else:
        prefix = "_pd_meas_2theta_range_" if ytag.startswith("_pd_meas") else "_pd_proc_2theta_range_"
        vals = {}
        for k in ("min", "max", "inc"):
            v = block.find_value(prefix + k)
            parsed = _value_su(v) if v else None
            if parsed is None:
                raise PatternFileError(path, f"no 2θ column and no {prefix}{k} for an implicit axis", y_line)
            vals[k] = parsed[0]
        if vals["inc"] <= 0:
            raise PatternFileError(path, f"{prefix}inc = {vals['inc']:g} is not positive",
                                   _tag_line(text_lines, prefix + "inc"))
        expected = int(round((vals["max"] - vals["min"]) / vals["inc"])) + 1
        if expected != n:
            raise PatternFileError(path, f"{prefix}min/max/inc give {expected} points but {ytag} has {n}",
                                   _tag_line(text_lines, prefix + "inc"))
        x = vals["min"] + vals["inc"] * np.arange(n)
        meta["two_theta_tag"] = f"{prefix}min/max/inc"

    sigma = None
    if y_su is not None and np.isfinite(y_su).all():
        sigma = y_su
        meta["sigma_from"] = f"{ytag} standard uncertainties"
    else:
        wdata = column("_pd_proc_ls_weight")
        if wdata is not None:
            w = wdata[0]
            sigma, interpretation = _sigma_from_weights(y, w)
            meta["sigma_from"] = "_pd_proc_ls_weight"
            meta["ls_weight_interpretation"] = interpretation
        elif ytag == "_pd_meas_counts_total":
            sigma = np.sqrt(np.maximum(y, 1.0))
            meta["sigma_from"] = "counting statistics: σ = √counts, zero counts taken as 1"
        else:
            meta["sigma_from"] = None
    wl = None
    lines_col = block.find(["_diffrn_radiation_wavelength", "?_diffrn_radiation_wavelength_wt"])
    if len(lines_col) > 1:  # a looped list of lines (Kα1, Kα2 with weights): all in metadata, the first as λ
        listed = []
        for row in lines_col:
            v = _value_su(row[0])
            w = _value_su(row[1]) if row.has(1) else None
            if v is not None:
                listed.append((v[0], w[0] if w is not None else None))
        meta["wavelengths"] = listed
    for tag in ("_diffrn_radiation_wavelength", "_pd_proc_wavelength"):
        for b in [block, *[bb for bb in doc if bb is not block]]:
            v = b.find_value(tag)
            if v is None:
                col = b.find_values(tag)  # a looped wavelength list: take the first
                v = col[0] if col and len(col) > 0 else None
            parsed = _value_su(v) if v else None
            if parsed is not None:
                wl = parsed[0]
                meta["wavelength_tag"] = tag
                break
        if wl is not None:
            break
    return _finish(path, x, y, sigma, linenos, wl, meta)


def _sigma_from_weights(y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, str]:
    """σ from ``_pd_proc_ls_weight``: 1/√w by the dictionary, or w itself when the file evidently holds σ.

    The test: over points with I > 0 and w > 0, the slope of log w against log I. With w = 1/σ² and counting
    statistics (σ² ∝ I) it is near −1; when the column holds σ ∝ √I it is near +½. A slope above −¼ (halfway)
    is taken as "the column holds σ". Zero weights (excluded points) give σ = inf.
    """
    ok = (y > 0) & (w > 0) & np.isfinite(w)
    slope = float("nan")
    if ok.sum() >= 10 and np.ptp(np.log(y[ok])) > 0:
        slope = float(np.polyfit(np.log(y[ok]), np.log(w[ok]), 1)[0])
    ratio_sqrt = float(np.median(w[ok] / np.sqrt(y[ok]))) if ok.any() else float("nan")
    ratio_inv = float(np.median(w[ok] * y[ok])) if ok.any() else float("nan")
    stats = f"log-log slope of w against I = {slope:.2f}, median w/√I = {ratio_sqrt:.3g}, median w·I = {ratio_inv:.3g}"
    if math.isfinite(slope) and slope > -0.25:
        sigma = np.where(w > 0, w, np.inf)
        return sigma, ("column holds σ, not 1/σ² (the pdCIF definition): w grows with I like √I; "
                       f"taken as σ = w ({stats})")
    with np.errstate(divide="ignore"):
        sigma = np.where(w > 0, 1.0 / np.sqrt(np.where(w > 0, w, 1.0)), np.inf)
    return sigma, f"w = 1/σ² (pdCIF definition): σ = 1/√w ({stats})"
