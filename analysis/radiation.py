"""X-ray radiation descriptions for powder-pattern calculation (lab tube or synchrotron).

Where the numbers come from:

- Cu Kα1 = 1.540593 Å and Cu Kα2 = 1.544427 Å: Hölzer et al., *Phys. Rev. A* 56, 4554 (1997)
  (1.5405929(5) and 1.5444274(5) Å), the values tabulated in International Tables for Crystallography
  Vol. C, Table 4.2.2.1, and used by pymatgen's ``XRDCalculator`` (``"CuKa1"``).
- Kα2/Kα1 intensity ratio 0.5: the theoretical 2p3/2 : 2p1/2 occupancy ratio, the value most Rietveld
  programs use by default for a tube without a Kα2-stripping monochromator (Hölzer et al. measure
  0.49–0.51 for the integrated lines).
- ``synchrotron_polarisation`` = 0.95: fraction of the beam polarised perpendicular to the (vertical)
  scattering plane; third-generation bending-magnet/undulator beams are 0.93–0.99 linearly polarised in the
  orbit plane. With the detector arm in the vertical plane the polarisation factor is
  p + (1 − p) cos² 2θ (International Tables Vol. C, §6.2.2; Kahn et al., *J. Appl. Cryst.* 15, 330 (1982)).

The Lorentz–polarisation formulas themselves live in :mod:`hotstage.analysis.profiles`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CU_KA1_ANGSTROM: float = 1.540593
"""Cu Kα1 wavelength in Å (Hölzer et al. 1997)."""
CU_KA2_ANGSTROM: float = 1.544427
"""Cu Kα2 wavelength in Å (Hölzer et al. 1997)."""
CU_KA2_KA1_RATIO: float = 0.5
"""Intensity of Kα2 relative to Kα1 (2p3/2 : 2p1/2 occupancy ratio)."""
GRAPHITE_002_CU_TWO_THETA: float = 26.6
"""2θ of a graphite (002) monochromator for Cu Kα (d = 3.354 Å), the common diffracted-beam choice, deg."""


@dataclass(frozen=True)
class Radiation:
    """Wavelength lines with weights plus the polarisation state of the incident beam."""

    lines: tuple[tuple[float, float], ...]
    polarisation: Literal["lab", "synchrotron"] = "lab"
    monochromator_two_theta: float | None = None
    synchrotron_polarisation: float = 0.95

    def __post_init__(self) -> None:
        """Validate so that a bad wavelength fails here rather than deep inside a pattern calculation."""
        if not self.lines:
            raise ValueError("Radiation needs at least one (wavelength, weight) line")
        lines = tuple((float(w), float(r)) for w, r in self.lines)
        for w, r in lines:
            if not w > 0.0:
                raise ValueError(f"wavelength must be positive, got {w}")
            if r < 0.0:
                raise ValueError(f"line weight must be non-negative, got {r}")
        object.__setattr__(self, "lines", lines)
        if self.polarisation not in ("lab", "synchrotron"):
            raise ValueError(f"polarisation must be 'lab' or 'synchrotron', got {self.polarisation!r}")
        if self.polarisation == "synchrotron" and self.monochromator_two_theta is not None:
            raise ValueError("monochromator_two_theta applies to lab radiation only")
        if not 0.0 <= self.synchrotron_polarisation <= 1.0:
            raise ValueError("synchrotron_polarisation must be within [0, 1]")

    @property
    def wavelength(self) -> float:
        """Primary (first) line wavelength in Å, the one quoted for the measurement."""
        return self.lines[0][0]

    @classmethod
    def cu_ka1(cls, monochromator_two_theta: float | None = None) -> "Radiation":
        """Cu Kα1 only (Kα2 stripped by a primary monochromator), unpolarised lab tube."""
        return cls(((CU_KA1_ANGSTROM, 1.0),), "lab", monochromator_two_theta)

    @classmethod
    def cu_ka(cls, monochromator_two_theta: float | None = None,
              ka2_ratio: float = CU_KA2_KA1_RATIO) -> "Radiation":
        """Cu Kα1 + Kα2 doublet (weights 1 : ka2_ratio), unpolarised lab tube."""
        return cls(((CU_KA1_ANGSTROM, 1.0), (CU_KA2_ANGSTROM, ka2_ratio)), "lab", monochromator_two_theta)

    @classmethod
    def synchrotron(cls, wavelength: float, polarisation: float = 0.95) -> "Radiation":
        """Monochromatic synchrotron beam at `wavelength` Å, linearly polarised (fraction `polarisation`)."""
        return cls(((float(wavelength), 1.0),), "synchrotron", None, polarisation)

    @classmethod
    def coerce(cls, x: "float | Radiation") -> "Radiation":
        """Return `x` if it is a Radiation, else a single unpolarised lab line at wavelength `x` Å."""
        if isinstance(x, Radiation):
            return x
        return cls(((float(x), 1.0),), "lab")
