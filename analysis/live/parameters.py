"""Parameters of the live analysis: one frozen dataclass, JSON-able, overridable by `key=value` strings.

Every number a derived run depends on lives here and is written into the derived run's start document
(`analyses[*].parameters`), so a replay with the same parameters reproduces the numbers. Where the defaults
come from:

- Phases offered to the whole-pattern fit: the crystalline phases of the (CsPbI3)x(agZIF-62)y composites
  (DESIGN.md, "The simulated sample": δ, γ, β, α-CsPbI3 and CsI); γ, β and α are the photoactive ("black")
  phases whose summed weight fraction defines the active-phase onset.
- Instrument function (Caglioti U, V, W; fixed microstrain; radiation lines): a property of the diffractometer,
  calibrated once on a line-profile standard (e.g. NIST SRM 660 LaB6), not of the sample, so it is an analysis
  parameter, not something read per pattern. Defaults: `hotstage.analysis.profiles.DEFAULT_CAGLIOTI` (small lab values),
  microstrain 5·10⁻⁴ (a typical instrumental/sample broadening of a lab powder diffractometer), and the Cu Kα1+Kα2
  doublet of a lab tube without a primary monochromator when the detector reports the Cu Kα1 wavelength
  (`xrd_radiation = "auto"`; the 2θ axis and the wavelength themselves are read from the raw descriptor).
- Active-phase onset threshold 10 wt % for m = 3 consecutive patterns: well above the ±3 wt % accuracy of the
  fit (tests/test_phase_quant.py), so three patterns above it are not noise; m = 3 as in `hotstage.analysis.onsets`.
- THz second derivative: Savitzky–Golay, cubic, 15 cm⁻¹ window (`hotstage.analysis.derivatives` defaults; about 1.5× the
  ~10 cm⁻¹ width of the Zn–I bands, which keeps ~half their curvature and averages the noise down), bands at 135
  and 275 cm⁻¹ (DESIGN.md / Li et al. 2023), amplitude = −d²A/dν² AT the band centre (DESIGN: "at the band";
  `band_half_width_cm` = 0 takes the nearest axis point). Not the maximum over ±2 cm⁻¹ used before: the
  maximum of 5 noisy derivative points is biased upwards by the noise even where there is no band (+0.95σ per
  band, +1.35 `zni_sigma` for the two-band sum), which lifted the whole Zn–I series and advanced the Zn–I onset
  by 5–6 °C on average (rms error ~7 °C, 13–14 % of runs outside ±10 °C of the truth onset, over 128 noise
  draws of each of three simulated ramps); the value at the centre is unbiased, its noise is exactly the σ
  estimated below, and the same draws give a mean error of +1 °C, rms 3.6–4.2 °C, ≤ 2 % outside ±10 °C. A band
  a little off its nominal centre gives a smaller, still unbiased, amplitude.
  Reference = mean second derivative of the first `zni_reference_spectra` = 3 spectra of the run (before the
  bands have grown: on the simulated 10 °C/min ramps from 100 °C the third is ≤ 0.35 `zni_sigma` above the
  first); the band amplitudes are taken on the referenced derivative, which removes the static ZIF bands they
  sit on. More reference spectra average the reference's noise (σ/√n, common to every later point) but the
  gain was small in the same draws (5 or 6 spectra: rms −0.4 °C) while the 5th/6th spectrum, at ~120–125 °C,
  already carries 0.5–1 `zni_sigma` of Zn–I growth.
  Noise σ = 1.4826·MAD of the referenced derivative outside ±15 cm⁻¹ of the Zn–I bands and 10 cm⁻¹ from the ends
  of the axis ("band-free regions": once the static bands are referenced away only the Zn–I bands remain).
  Onset: k = 3, m = 3 (`hotstage.analysis.onsets`, IUPAC 3σ detection limit).
- PL: single-Gaussian fit of the band core in wavelength (`hotstage.analysis.pl_fit.fit_pl` defaults). `fit_success` = 1
  only when the band was fitted AND its centre is located to `pl_max_centre_su_nm` = 0.5 nm (1σ): near the
  active-phase onset the band is a few counts high, the fit converges with σ ≈ 1 nm and is off by up to 3 nm
  (simulated, 30 noise draws per temperature); at σ ≤ 0.5 nm the worst error was 0.7 nm. Values are stored
  either way, so nothing is hidden; `fit_success` says which centres to trust.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["AnalysisParameters", "parse_overrides", "ParameterError"]


class ParameterError(ValueError):
    """An unknown parameter name or a value of the wrong kind (message names the key)."""


@dataclass(frozen=True)
class _Range:
    """Allowed interval of a numeric parameter (open or closed at each end) and why."""

    lo: float
    hi: float
    why: str
    lo_open: bool = False

    def check(self, key: str, value: float) -> None:
        """ParameterError `KEY = VALUE: must be within …` unless lo ≤ (or <) value ≤ hi."""
        if not (value > self.lo if self.lo_open else value >= self.lo) or not value <= self.hi:
            interval = f"{'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}]"
            raise ParameterError(f"{key} = {value!r}: must be within {interval} ({self.why})")


RANGES: dict[str, _Range] = {
    "caglioti": _Range(-10.0, 10.0, "Caglioti U, V, W in deg²: lab instruments give |U|, |V|, |W| < 0.1"),
    "microstrain": _Range(0.0, 0.05, "fixed microstrain: 5 % is beyond any crystalline powder"),
    "background_order": _Range(0, 30, "Chebyshev background order: higher orders start to fit the peaks"),
    "active_threshold": _Range(0.0, 1.0, "a weight fraction", lo_open=True),
    "active_m": _Range(1, 100, "consecutive patterns above the threshold"),
    "thz_window_cm": _Range(0.0, 200.0, "Savitzky–Golay window in cm⁻¹: the Zn–I bands are ~10 cm⁻¹ wide",
                            lo_open=True),
    "thz_polyorder": _Range(2, 10, "a second derivative needs a polynomial of order >= 2"),
    "zni_bands_cm": _Range(0.0, 10000.0, "band centres in cm⁻¹ of the far-IR/THz axis", lo_open=True),
    "band_half_width_cm": _Range(0.0, 50.0, "half-width in cm⁻¹ around a band centre (0: the nearest point)"),
    "band_exclude_cm": _Range(0.0, 200.0, "cm⁻¹ excluded around each band from the noise estimate"),
    "edge_exclude_cm": _Range(0.0, 200.0, "cm⁻¹ excluded at each end of the axis from the noise estimate"),
    "zni_reference_spectra": _Range(1, 100, "spectra averaged into the reference"),
    "zni_k": _Range(0.0, 100.0, "detection level in σ (IUPAC: 3)", lo_open=True),
    "zni_m": _Range(1, 100, "consecutive spectra above the level"),
    "pl_core": _Range(0.0, 1.0, "fraction of the PL peak height above which the band core is fitted", lo_open=True),
    "pl_max_centre_su_nm": _Range(0.0, 100.0, "1σ of the fitted PL centre in nm", lo_open=True),
}
"""The allowed range of every numeric parameter (all numbers must also be finite)."""


@dataclass(frozen=True)
class AnalysisParameters:
    """Everything the live analysis depends on (see the module docstring for each default's origin)."""

    # which raw keys hold what (raw-run contract, plans/insitu.py)
    temperature_key: str = "furnace_sample_temperature"
    fallback_temperature_key: str = "furnace_temperature"
    time_key: str = "clock_elapsed"
    # XRD: whole-pattern phase quantification
    phases: tuple[str, ...] = ("CsPbI3-delta", "CsPbI3-gamma", "CsPbI3-beta", "CsPbI3-alpha", "CsI")
    active_phases: tuple[str, ...] = ("CsPbI3-gamma", "CsPbI3-beta", "CsPbI3-alpha")
    xrd_radiation: str = "auto"  # "auto" (Cu Kα doublet if the wavelength is Cu Kα1), "single", "cu_ka", "cu_ka1"
    caglioti: tuple[float, float, float] = (0.01, -0.005, 0.005)
    microstrain: float = 5e-4
    background_order: int = 8
    halos: bool = True
    active_threshold: float = 0.10
    active_m: int = 3
    # THz / far-IR second derivative and Zn–I bands
    thz_window_cm: float = 15.0
    thz_polyorder: int = 3
    zni_bands_cm: tuple[float, ...] = (135.0, 275.0)
    band_half_width_cm: float = 0.0  # 0: −d²A/dν² at the nearest axis point to the band centre
    band_exclude_cm: float = 15.0
    edge_exclude_cm: float = 10.0
    zni_reference_spectra: int = 3
    zni_k: float = 3.0
    zni_m: int = 3
    # PL
    pl_domain: str = "wavelength"
    pl_two_gaussians: bool = False
    pl_core: float = 0.3
    pl_max_centre_su_nm: float = 0.5

    def __post_init__(self) -> None:
        """Coerce lists (from JSON/TOML) to tuples; check types, finiteness and ranges (ParameterError, one line)."""
        for f in ("phases", "active_phases", "zni_bands_cm", "caglioti"):
            value = getattr(self, f)
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
                raise ParameterError(f"{f} = {value!r}: must be a list")
            object.__setattr__(self, f, tuple(value))
        for f in ("phases", "active_phases"):
            if not all(isinstance(v, str) and v for v in getattr(self, f)):
                raise ParameterError(f"{f} = {list(getattr(self, f))!r}: must be a list of phase names")
        if not self.phases:
            raise ParameterError("phases = []: the fit needs at least one phase")
        for f in ("caglioti", "zni_bands_cm"):
            values = getattr(self, f)
            if not all(_is_number(v) for v in values):
                raise ParameterError(f"{f} = {list(values)!r}: must be a list of finite numbers")
            object.__setattr__(self, f, tuple(float(v) for v in values))
            for v in values:
                RANGES[f].check(f, float(v))
        if len(self.caglioti) != 3:
            raise ParameterError(f"caglioti = {list(self.caglioti)!r}: must be three numbers (U, V, W)")
        if not self.zni_bands_cm:
            raise ParameterError("zni_bands_cm = []: give at least one band centre")
        for f in dataclasses.fields(self):
            default = f.default
            value = getattr(self, f.name)
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ParameterError(f"{f.name} = {value!r}: must be true or false")
            elif isinstance(default, int):
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ParameterError(f"{f.name} = {value!r}: must be an integer")
            elif isinstance(default, float):
                if not _is_number(value):
                    raise ParameterError(f"{f.name} = {value!r}: must be a finite number")
                object.__setattr__(self, f.name, float(value))
            elif isinstance(default, str) and not isinstance(value, str):
                raise ParameterError(f"{f.name} = {value!r}: must be a string")
            if f.name in RANGES and not isinstance(default, tuple):
                RANGES[f.name].check(f.name, getattr(self, f.name))
        missing = [p for p in self.active_phases if p not in self.phases]
        if missing:
            raise ParameterError(f"active_phases {missing} are not among phases {list(self.phases)}")
        if self.xrd_radiation not in ("auto", "single", "cu_ka", "cu_ka1"):
            raise ParameterError(f"xrd_radiation must be auto, single, cu_ka or cu_ka1, got {self.xrd_radiation!r}")
        if self.pl_domain not in ("wavelength", "energy"):
            raise ParameterError(f"pl_domain must be wavelength or energy, got {self.pl_domain!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (tuples as lists) for the derived run's start document."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AnalysisParameters:
        """Build from a (partial) dict, e.g. a stored derived run's parameters; unknown keys raise."""
        return cls().replace(**dict(d))

    def replace(self, **changes: Any) -> AnalysisParameters:
        """A copy with some parameters changed; unknown names raise ParameterError naming them."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ParameterError(f"unknown analysis parameter(s) {unknown}; known: {sorted(names)}")
        return dataclasses.replace(self, **changes)  # __post_init__ checks types and ranges


def _is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """`["active_threshold=0.2", "phases=[\\"CsI\\"]"]` → dict; values are JSON, else plain strings."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ParameterError(f"--param expects key=value, got {item!r}")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out
