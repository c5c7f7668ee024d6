"""Built-in powder-diffraction calibration standards (NIST SRMs) as :class:`~hotstage.analysis.crystal.Crystal`.

A calibration refines the *instrument* against a pattern of a material whose cell is known far better than the
instrument: the standard's cell is fixed at its certified value, so every peak-position error is the instrument's
(zero, sample displacement) and every width is the instrument's (the SRMs are made free of size and strain
broadening to within their certificates).

Where the numbers come from (certificates as found through public copies; see ``analysis/data/SOURCES.md``,
section "Calibration standards", for the addresses):

- LaB6, NIST SRM 660c: a = 0.4156826(8) nm at 22.5 °C (certificate, certified value, k = 2 uncertainty
  0.000008 nm).
- Si, NIST SRM 640f: a = 0.5431144 nm at 22.5 °C (certificate, archived at NIST as 640f.pdf; the value
  as quoted by secondary sources that cite it).
- CeO2, NIST SRM 674b: a = 0.5411651 nm (certificate; same value in GSAS-II's and pyFAI's calibrant tables).
- α-Al2O3, NIST SRM 676a: a = 0.4759091 nm, c = 1.2991779 nm (certificate of 2008; GSAS-II's calibrant table);
  NIST revised the certificate in 2015 to a = 0.4759355 nm, c = 1.299231 nm (pyFAI ships both).
  The 2008 values are kept here (the values the project specified); the 55 ppm difference in a moves a
  Cu Kα reflection near 60° by ≈ 0.002°.

Atom positions and displacement parameters come from the literature named in each CIF's header.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

from .crystal import Crystal


@dataclass(frozen=True)
class Standard:
    """One built-in standard: name, SRM, certified cell (Å, degrees), temperature of the certified value, source."""

    name: str
    srm: str
    cell: tuple[float, float, float, float, float, float]
    temperature_c: float | None
    source: str
    filename: str

    def to_dict(self) -> dict:
        """JSON-able summary."""
        return {"name": self.name, "srm": self.srm, "cell": list(self.cell), "temperature_c": self.temperature_c,
                "source": self.source}


STANDARDS: dict[str, Standard] = {
    s.name: s for s in (
        Standard("LaB6", "NIST SRM 660c", (4.156826, 4.156826, 4.156826, 90.0, 90.0, 90.0), 22.5,
                 "NIST certificate SRM 660c: a = 0.4156826 nm ± 0.000008 nm (k = 2) at 22.5 °C", "LaB6.cif"),
        Standard("Si", "NIST SRM 640f", (5.431144, 5.431144, 5.431144, 90.0, 90.0, 90.0), 22.5,
                 "NIST certificate SRM 640f: a = 0.5431144 nm at 22.5 °C", "Si.cif"),
        Standard("CeO2", "NIST SRM 674b", (5.411651, 5.411651, 5.411651, 90.0, 90.0, 90.0), None,
                 "NIST certificate SRM 674b: a = 0.5411651 nm", "CeO2.cif"),
        Standard("Al2O3", "NIST SRM 676a", (4.759091, 4.759091, 12.991779, 90.0, 90.0, 120.0), None,
                 "NIST certificate SRM 676a (2008): a = 0.4759091 nm, c = 1.2991779 nm (hexagonal axes)",
                 "Al2O3.cif"),
    )
}
"""The built-in standards by name (see the module docstring for the certificates)."""


class UnknownStandardError(ValueError):
    """A standard name that is not built in (the message lists the choices)."""


def standard_names() -> tuple[str, ...]:
    """Names accepted by :func:`standard`."""
    return tuple(STANDARDS)


def lookup(name: str) -> Standard | None:
    """The :class:`Standard` for a case-insensitive name (also accepts the SRM, e.g. "660c" or "SRM 660c")."""
    key = name.strip().lower().replace(" ", "")
    for s in STANDARDS.values():
        srm = s.srm.lower().replace(" ", "")
        if key in (s.name.lower(), srm, srm.removeprefix("nist"), srm.removeprefix("nistsrm")):
            return s
    return None


def standard(name: str) -> Crystal:
    """The built-in standard `name` ("LaB6", "Si", "CeO2", "Al2O3"; case-insensitive) at its certified cell."""
    s = lookup(name)
    if s is None:
        raise UnknownStandardError(f"unknown standard {name!r}; choose from {', '.join(standard_names())}")
    return _load(s.name)


@functools.lru_cache(maxsize=None)
def _load(name: str) -> Crystal:
    """Read (once) a standard's CIF from the package data and check its cell against the certified value."""
    s = STANDARDS[name]
    ref = resources.files(__package__).joinpath("data", "standards", s.filename)
    with resources.as_file(ref) as p:
        crystal = Crystal.from_cif(p, name=s.name)
    if any(abs(x - y) > 1e-9 for x, y in zip(crystal.cell, s.cell)):
        raise RuntimeError(f"{s.filename}: cell {crystal.cell} differs from the certified {s.cell}")
    return crystal
