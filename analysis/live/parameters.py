"""Parameters of the live analysis: one frozen pydantic model, JSON-able, overridable by `key=value` strings.

`AnalysisParameters` has `extra="forbid"` (an unknown name is an error), strict types (a string is not a number, 1 is
not true) and every number finite and inside the range its field's description gives with the reason; an error is
ONE line, `ParameterError: KEY = VALUE: why`, so `--param thz_window_cm=-5` is refused before a run starts.

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
- `xrd_instrument`: the diffractometer as an `hotstage.analysis.instrument.Instrument` dict (`Instrument.to_dict`;
  a string is read as an instrument file path, e.g. a GSAS-II .instprm, at validation time), normally handed over
  from the rig TOML's `[xrd] instrument`. Given, it replaces `caglioti` (which must stay at its default) and
  `xrd_radiation`: the quantifier takes its radiation, widths and zero (`PhaseQuantifier(instrument=…)`); being
  a dict, it is written into the derived run's start document like every other parameter, so a replay uses the
  same instrument without the file.
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

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

__all__ = ["AnalysisParameters", "parse_overrides", "ParameterError"]


class ParameterError(ValueError):
    """An unknown parameter name or a value of the wrong kind (message names the key)."""


_RULE = "hotstage_rule"


def _num(**constraints: Any) -> Any:
    """A strict (no str, no bool), finite float field with `constraints` (ge/gt/le, description = the range's why)."""
    return Field(strict=True, allow_inf_nan=False, **constraints)


def _int(**constraints: Any) -> Any:
    """A strict integer field (2.5 and true are not integers)."""
    return Field(strict=True, **constraints)


Caglioti = Annotated[float, _num(ge=-10.0, le=10.0, description="Caglioti U, V, W in deg²: lab instruments give "
                                                                 "|U|, |V|, |W| < 0.1")]
BandCentre = Annotated[float, _num(gt=0.0, le=10000.0, description="band centres in cm⁻¹ of the far-IR/THz axis")]
PhaseName = Annotated[str, Field(strict=True, min_length=1)]


class _OneLineErrors(type(BaseModel)):  # type: ignore[misc]
    """Metaclass: constructing the model raises ParameterError with one line, not pydantic's multi-line
    ValidationError (a metaclass, not an `__init__` override, which pydantic would also run from model_validate)."""

    def __call__(cls, **data: Any) -> Any:
        try:
            return super().__call__(**data)
        except ValidationError as exc:
            raise ParameterError(one_line(exc)) from None


class AnalysisParameters(BaseModel, metaclass=_OneLineErrors):
    """Everything the live analysis depends on (see the module docstring for each default's origin)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, validate_default=True)

    # which raw keys hold what (raw-run contract, plans/insitu.py)
    temperature_key: str = Field("exposure_sample_temperature_mid", strict=True)
    """The sample temperature at mid-exposure (`hotstage.devices.stamp`), not the readback after the exposure."""
    fallback_temperature_key: str = Field("furnace_sample_temperature", strict=True)
    time_key: str = Field("clock_elapsed", strict=True)
    # XRD: whole-pattern phase quantification
    phases: tuple[PhaseName, ...] = Field(
        ("CsPbI3-delta", "CsPbI3-gamma", "CsPbI3-beta", "CsPbI3-alpha", "CsI"), min_length=1,
        description="phases offered to the whole-pattern fit: at least one")
    active_phases: tuple[PhaseName, ...] = Field(
        ("CsPbI3-gamma", "CsPbI3-beta", "CsPbI3-alpha"), description="photoactive phases, among `phases`")
    xrd_radiation: Literal["auto", "single", "cu_ka", "cu_ka1"] = Field(
        "auto", description="auto: the Cu Kα doublet if the wavelength is Cu Kα1")
    caglioti: tuple[Caglioti, ...] = Field(
        (0.01, -0.005, 0.005), min_length=3, max_length=3, description="Caglioti U, V, W in deg²: three numbers")
    xrd_instrument: dict[str, Any] | None = Field(
        None, description="the diffractometer (Instrument.to_dict, or an instrument file path); None: caglioti and "
                          "xrd_radiation")
    microstrain: float = _num(default=5e-4, ge=0.0, le=0.05,
                              description="fixed microstrain: 5 % is beyond any crystalline powder")
    background_order: int = _int(default=8, ge=0, le=30,
                                 description="Chebyshev background order: higher orders start to fit the peaks")
    halos: bool = Field(True, strict=True)
    active_threshold: float = _num(default=0.10, gt=0.0, le=1.0, description="a weight fraction")
    active_m: int = _int(default=3, ge=1, le=100, description="consecutive patterns above the threshold")
    # THz / far-IR second derivative and Zn–I bands
    thz_window_cm: float = _num(
        default=15.0, gt=0.0, le=200.0,
        description="Savitzky–Golay window in cm⁻¹: the Zn–I bands are ~10 cm⁻¹ wide")
    thz_polyorder: int = _int(default=3, ge=2, le=10,
                              description="a second derivative needs a polynomial of order >= 2")
    zni_bands_cm: tuple[BandCentre, ...] = Field((135.0, 275.0), min_length=1,
                                                 description="Zn–I band centres in cm⁻¹: at least one")
    band_half_width_cm: float = _num(
        default=0.0, ge=0.0, le=50.0,
        description="half-width in cm⁻¹ around a band centre (0: −d²A/dν² at the nearest axis point)")
    band_exclude_cm: float = _num(default=15.0, ge=0.0, le=200.0,
                                  description="cm⁻¹ excluded around each band from the noise estimate")
    edge_exclude_cm: float = _num(default=10.0, ge=0.0, le=200.0,
                                  description="cm⁻¹ excluded at each end of the axis from the noise estimate")
    zni_reference_spectra: int = _int(default=3, ge=1, le=100, description="spectra averaged into the reference")
    zni_k: float = _num(default=3.0, gt=0.0, le=100.0, description="detection level in σ (IUPAC: 3)")
    zni_m: int = _int(default=3, ge=1, le=100, description="consecutive spectra above the level")
    # PL
    pl_domain: Literal["wavelength", "energy"] = "wavelength"
    pl_two_gaussians: bool = Field(False, strict=True)
    pl_core: float = _num(default=0.3, gt=0.0, le=1.0,
                          description="fraction of the PL peak height above which the band core is fitted")
    pl_max_centre_su_nm: float = _num(default=0.5, gt=0.0, le=100.0, description="1σ of the fitted PL centre in nm")

    @field_validator("xrd_instrument", mode="before")
    @classmethod
    def _instrument(cls, value: Any) -> Any:
        """A path is read now (one line naming the file and line if it cannot be); a dict must be an Instrument."""
        from hotstage.analysis.instrument import Instrument, read_instrument

        if value is None:
            return None
        try:
            if isinstance(value, (str, Path)):
                return read_instrument(value).to_dict()
            if isinstance(value, Mapping):
                return Instrument.from_dict(dict(value)).to_dict()
        except (ValueError, TypeError, KeyError) as exc:
            raise PydanticCustomError(_RULE, "{message}", {"message": f"xrd_instrument: {exc}"}) from None
        raise PydanticCustomError(_RULE, "{message}", {
            "message": f"xrd_instrument = {value!r}: an Instrument dict or an instrument file path"})

    @model_validator(mode="after")
    def _instrument_replaces_caglioti(self) -> AnalysisParameters:
        if self.xrd_instrument is not None and tuple(self.caglioti) != type(self).model_fields["caglioti"].default:
            raise PydanticCustomError(_RULE, "{message}", {
                "message": f"caglioti = {list(self.caglioti)}: the widths come from xrd_instrument; give one of them"})
        return self

    @model_validator(mode="after")
    def _active_among_phases(self) -> AnalysisParameters:
        missing = [p for p in self.active_phases if p not in self.phases]
        if missing:
            raise PydanticCustomError(_RULE, "{message}", {
                "message": f"active_phases = {list(self.active_phases)!r}: {missing} are not among phases "
                           f"{list(self.phases)}"})
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (tuples as lists) for the derived run's start document."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AnalysisParameters:
        """Build from a (partial) dict, e.g. a stored derived run's parameters; unknown keys raise."""
        return cls().replace(**dict(d))

    def replace(self, **changes: Any) -> AnalysisParameters:
        """A copy with some parameters changed, validated again; unknown names raise ParameterError naming them."""
        unknown = sorted(set(changes) - set(type(self).model_fields))
        if unknown:
            raise ParameterError(f"unknown analysis parameter(s) {unknown}; known: {sorted(type(self).model_fields)}")
        return type(self)(**{**self.model_dump(), **changes})


def one_line(exc: ValidationError) -> str:
    """`KEY = VALUE: why (the range's reason)` for the first error, plus `(and N more)`."""
    errors = exc.errors(include_url=False)
    # an element that failed also makes its list "too short": not a second error
    errors = [e for e in errors if not (e["type"] == "too_short" and any(
        len(o["loc"]) > len(e["loc"]) and o["loc"][:len(e["loc"])] == e["loc"] for o in errors))]
    first = errors[0]
    key = str(first["loc"][0]) if first["loc"] else ""
    if first["type"] == _RULE:
        text = first["ctx"]["message"]
    elif first["type"] == "extra_forbidden":
        text = f"unknown analysis parameter {key!r}"
    else:
        value = first["input"]
        info = AnalysisParameters.model_fields.get(key)
        why = first["msg"]
        if info is not None and "ctx" in first and info.description and len(first["loc"]) == 1:
            why = f"{why} ({info.description})"
        elif "ctx" in first:  # an element of a list: the element's range
            element = {"caglioti": Caglioti, "zni_bands_cm": BandCentre}.get(key)
            description = next((m.description for m in getattr(element, "__metadata__", ())
                                if getattr(m, "description", None)), None)
            if description:
                why = f"{why} ({description})"
        where = key + "".join(f"[{p}]" for p in first["loc"][1:])
        text = f"{where} = {value!r}: {why}"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return text + more


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
