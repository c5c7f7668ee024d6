"""Rig configuration: which instruments, where they are, the rig's limits and acquisition cadences.

A rig TOML (see README, "Running on a real rig") looks like::

    [rig]
    name = "lab-furnace-1"
    kind = "visa"                 # "simulated" (default) or "visa"
    visa_library = "@py"          # pyvisa backend: "@py" (pyvisa-py), "" (NI-VISA), "file.yaml@sim"
    time_scale = 240.0            # simulated rigs only: experiment seconds per wall second; a visa rig
                                  # refuses anything but 1 (RigConfigError naming the file and rig.time_scale)

    [limits]
    max_C = 400.0
    min_C = 0.0
    min_rate_C_per_min = 0.1
    max_rate_C_per_min = 50.0

    [furnace]
    resource = "TCPIP0::192.168.1.20::7777::SOCKET"
    output = 1
    control_input = "A"
    sample_input = "B"
    tolerance_C = 1.0
    settle_s = 30.0

    [xrd]
    resource = "TCPIP0::192.168.1.21::5025::SOCKET"
    exposure_s = 2.0
    instrument = "inst.instprm"   # optional: the diffractometer (GSAS-II .instprm, GSAS .prm, .json), relative
                                  # to this file; read now, used by the live XRD analysis (`RigConfig.xrd_instrument`)
    [thz]
    ...
    [pl]
    ...

    [cadence]                     # per modality: every_C (temperature change) or every_s (experiment seconds)
    xrd = { every_C = 5 }
    pl = { every_C = 5 }
    thz = { every_C = 10 }

The schema is a set of pydantic models (`extra="forbid"`, strict types, finite numbers): every key is known, every
number is finite and inside the physical range stated in its field's description, so no setting can switch a
safety limit off (`max_C = inf` is an error, not "no limit"). A bad file raises `RigConfigError` (a ValueError)
with ONE line, `FILE: KEY = VALUE: why`, before anything is opened or moved.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_type_hints

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator,
                      model_validator)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from hotstage.simulated.rig import DEFAULT_TIME_SCALE

MODALITIES = ("xrd", "thz", "pl")
INSTRUMENTS = ("furnace", *MODALITIES)
RIG_KEYS = ("name", "kind", "visa_library", "time_scale")
"""Keys of the `[rig]` table (they are top-level attributes of `RigConfig`)."""

Modality = Literal["xrd", "thz", "pl"]
InstrumentName = Literal["furnace", "xrd", "thz", "pl"]
Input336 = Literal["A", "B", "C", "D"]

_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)
_RULE = "hotstage_rule"  # error type of the cross-field rules below (their message already names the key)


class RigConfigError(ValueError):
    """A rig TOML that cannot be used; the message (one line) names the file, the key, the value and why."""


_NO_VALUE = object()


def _rule(why: str, key: str = "", value: Any = _NO_VALUE) -> PydanticCustomError:
    """A rule failed: `why`, about `key` (relative to the location checked; "" = the location itself) = `value`."""
    context: dict[str, Any] = {"why": why, "key": key}
    if value is not _NO_VALUE:
        context["value"] = value
    return PydanticCustomError(_RULE, "{why}", context)


class _OneLineErrors(type(BaseModel)):  # type: ignore[misc]
    """Metaclass: calling the class (direct construction) raises RigConfigError with one line, like from_dict.

    Not an `__init__` override: pydantic would call that for nested models too and nest the errors."""

    def __call__(cls, *args: Any, **data: Any) -> Any:
        try:
            return super().__call__(*args, **data)
        except ValidationError as exc:
            raise RigConfigError(one_line(exc, str(data.get("source") or f"<{cls.__name__}>"))) from None


class _Model(BaseModel, metaclass=_OneLineErrors):
    """Strict (a string is not a number), frozen, finite, no unknown keys."""

    model_config = _STRICT


class InstrumentConfig(_Model):
    """One instrument's address and acquisition settings."""

    resource: str = Field(
        "", description="VISA resource name (e.g. TCPIP0::host::7777::SOCKET); required for a visa rig")
    exposure_s: float = Field(
        1.0, gt=0, le=3600,
        description="detector integration in experiment seconds: above 0, at most 1 h (longer is a stuck setting, "
                    "not an in-situ measurement)")
    output: int = Field(1, ge=1, le=2, description="heater output: the Lake Shore 336 has two heater outputs, 1 and 2")
    control_input: Input336 = Field("A", description="sensor input of the control loop: the 336 has inputs A–D")
    sample_input: Input336 | None = Field("B", description="sensor input at the sample: the 336 has inputs A–D")
    tolerance_C: float = Field(
        1.0, gt=0, le=50,
        description="settled when within this many °C of the setpoint: above 0, at most 50 °C (wider is not "
                    "a temperature any more)")
    settle_s: float = Field(
        30.0, ge=0, le=3600, description="time the readback must stay within tolerance: 0 s to 1 h")
    instrument: str = Field(
        "", description="[xrd] only: instrument parameter file (GSAS-II .instprm, GSAS .prm, .json), relative to "
                        "the rig TOML")

    @field_validator("resource")
    @classmethod
    def _visa_resource_name(cls, value: str) -> str:
        """Empty, or a VISA resource name pyvisa can parse (a raw socket's port within 1–65535)."""
        if not value:
            return value
        from pyvisa import rname

        try:
            parsed = rname.parse_resource_name(value)
        except rname.InvalidResourceName as exc:
            raise _rule(f"not a VISA resource name ({exc})", value=value) from None
        port = getattr(parsed, "port", None)
        if port is not None and str(port).isdigit() and not 1 <= int(port) <= 65535:
            raise _rule(f"TCP port {port} is outside 1–65535", value=value)
        return value


class LimitsConfig(_Model):
    """What the furnace may be asked to do; programs are validated against it before anything moves."""

    max_C: float = Field(
        400.0, gt=-196, le=1200,
        description="highest temperature a program may ask for, and max_C + 10 °C trips the over-temperature "
                    "guard: at most 1200 °C (the Lake Shore 336 reads to 1500 K, hot stages top out at "
                    "~1000–1200 °C)")
    min_C: float = Field(
        0.0, ge=-196, lt=1200,
        description="lowest temperature a program may ask for: not below -196 °C (a liquid-nitrogen-cooled stage)")
    min_rate_C_per_min: float = Field(
        0.1, ge=0.1, le=100, description="the Lake Shore 336 RAMP command accepts 0.1–100 K/min")
    max_rate_C_per_min: float = Field(
        50.0, ge=0.1, le=100, description="the Lake Shore 336 RAMP command accepts 0.1–100 K/min")

    @model_validator(mode="after")
    def _consistent(self) -> LimitsConfig:
        if not self.max_C > self.min_C:
            raise _rule(f"must be above min_C = {self.min_C!r}", "max_C", self.max_C)
        if not self.max_rate_C_per_min >= self.min_rate_C_per_min:
            raise _rule(f"must not be below min_rate_C_per_min = {self.min_rate_C_per_min!r}", "max_rate_C_per_min",
                        self.max_rate_C_per_min)
        return self


class CadenceEntry(TypedDict, total=False):
    """`{ every_C = N }` or `{ every_s = N }`: exactly one of the two."""

    __pydantic_config__ = _STRICT  # type: ignore[misc]

    every_C: Annotated[float, Field(
        gt=0, le=100, description="acquire every N °C of temperature change: above 0, at most 100 °C (coarser "
                                  "misses every phase transition of a ramp)")]
    every_s: Annotated[float, Field(
        gt=0, le=86400, description="acquire every N experiment seconds: above 0, at most a day")]


def _one_criterion(entry: dict[str, float]) -> dict[str, float]:
    if len(entry) != 1:
        raise _rule("give exactly one of { every_C = N } or { every_s = N }", value=entry)
    return entry


Cadence = Annotated[CadenceEntry, AfterValidator(_one_criterion)]


def _default_cadence() -> dict[str, dict[str, float]]:
    return {"xrd": {"every_C": 5.0}, "pl": {"every_C": 5.0}, "thz": {"every_C": 10.0}}


class RigConfig(_Model):
    """Everything a session needs to know about the rig."""

    name: str = Field("simulated-rig", min_length=1, description="the rig's name, stored with every run")
    kind: Literal["simulated", "visa"] = Field("simulated", description="simulated emulators or VISA instruments")
    visa_library: str = Field("@py", description="pyvisa backend: @py (pyvisa-py), '' (NI-VISA), file.yaml@sim")
    time_scale: float = Field(
        DEFAULT_TIME_SCALE, gt=0, le=10000,
        description="experiment seconds per wall second: simulated rigs above 0 and at most 10000 (a 1-h program "
                    "in 0.36 s; faster, the rig's polling cannot keep a cadence); a visa rig runs in real time: 1")
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    instruments: dict[InstrumentName, InstrumentConfig] = Field(default_factory=dict)
    cadence: dict[Modality, Cadence] = Field(default_factory=_default_cadence)
    source: str = "<defaults>"
    _xrd_instrument: Any = PrivateAttr(default=None)  # hotstage.analysis.instrument.Instrument | None

    @model_validator(mode="before")
    @classmethod
    def _visa_runs_in_real_time(cls, data: Any) -> Any:
        """A visa rig without a time_scale runs at 1 (the simulated default 240 does not apply to hardware)."""
        if isinstance(data, dict) and data.get("kind") == "visa" and "time_scale" not in data:
            data = {**data, "time_scale": 1.0}
        return data

    @model_validator(mode="after")
    def _visa_rules(self) -> RigConfig:
        if self.kind != "visa":
            return self
        if self.time_scale != 1.0:
            raise _rule("a visa rig runs in real time (instruments cannot run faster than the clock; emulators from "
                        "`hotstage sim serve` must run at --time-scale 1 for it): give 1 or leave it out",
                        "rig.time_scale", self.time_scale)
        for name in INSTRUMENTS:
            inst = self.instruments.get(name)
            if inst is None:
                raise _rule(f"a visa rig needs a [{name}] section with a resource", name)
            if not inst.resource:
                raise _rule("required for a visa rig", f"{name}.resource")
        return self

    @model_validator(mode="after")
    def _xrd_instrument_file(self) -> RigConfig:
        """Read `[xrd] instrument` now: a missing or bad file is one line before anything is opened or moved."""
        from hotstage.analysis.instrument import InstrumentFileError, read_instrument

        for name, inst in self.instruments.items():
            if inst.instrument and name != "xrd":
                raise _rule("only the [xrd] section takes an instrument file", f"{name}.instrument", inst.instrument)
        xrd = self.instruments.get("xrd")
        instrument = None
        if xrd is not None and xrd.instrument:
            try:
                instrument = read_instrument(xrd.instrument)
            except InstrumentFileError as exc:
                raise _rule(str(exc), "xrd.instrument", xrd.instrument) from None
        if instrument is None and self.simulated:
            from hotstage.simulated.standard import calibrated_instrument

            instrument = calibrated_instrument()  # read once here, not on every access
        self._xrd_instrument = instrument
        return self

    @property
    def xrd_instrument(self) -> Any:
        """The diffractometer the live XRD analysis assumes (`AnalysisParameters.xrd_instrument`): the one read
        from `[xrd] instrument`; for a simulated rig without one, the simulated diffractometer's shipped
        calibration (`hotstage.simulated.standard`: refined from a LaB6 measurement, not the simulator's truth);
        None for a visa rig without one (the quantifier's lab default)."""
        return self._xrd_instrument

    @property
    def simulated(self) -> bool:
        """True when the session should start the simulated rig instead of talking to instruments."""
        return self.kind == "simulated"

    def to_metadata(self) -> dict[str, Any]:
        """The `rig` entry of a run's start metadata."""
        return {
            "name": self.name,
            "kind": self.kind,
            "time_scale": self.time_scale if self.simulated else 1.0,
            "limits": self.limits.model_dump(),
            "instruments": {k: {"resource": v.resource, "exposure_s": v.exposure_s} for k, v in self.instruments.items()},
            "config_file": self.source,
            "xrd_instrument": None if self.xrd_instrument is None else self.xrd_instrument.to_dict(),
        }

    @classmethod
    def from_toml(cls, path: str | Path) -> RigConfig:
        """Read a rig TOML, rejecting unknown keys and bad values in one line naming the file and the key."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            raise RigConfigError(f"{path}: rig file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise RigConfigError(f"{path}: cannot read the rig file: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise RigConfigError(f"{path}: not valid TOML: {exc}") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> RigConfig:
        """Build from parsed TOML (see the module docstring for the layout); RigConfigError on any bad key."""
        if not isinstance(data, dict):
            raise RigConfigError(f"{source}: expected a table, got {data!r}")
        sections = ("rig", "limits", *INSTRUMENTS, "cadence")
        for key, value in data.items():
            if key not in sections:
                raise RigConfigError(f"{source}: {key}: unknown section (allowed: {', '.join(sections)})")
            if not isinstance(value, dict):
                raise RigConfigError(f"{source}: {key} = {_show(value)}: must be a table ([{key}])")
        rig = data.get("rig", {})
        for key in rig:
            if key not in RIG_KEYS:
                raise RigConfigError(f"{source}: rig.{key}: unknown key (allowed: {', '.join(RIG_KEYS)})")
        payload: dict[str, Any] = dict(rig)
        if "name" not in rig:
            payload["name"] = "rig" if rig.get("kind") == "visa" else "simulated-rig"
        if "limits" in data:
            payload["limits"] = data["limits"]
        payload["instruments"] = {name: data[name] for name in INSTRUMENTS if name in data}
        xrd = payload["instruments"].get("xrd", {})
        if isinstance(xrd.get("instrument"), str) and xrd["instrument"]:
            # relative to the rig TOML (to the working directory for a dict without a file)
            where = Path(source).resolve().parent if source != "<dict>" else Path.cwd()
            payload["instruments"]["xrd"] = {**xrd, "instrument": str(where / Path(xrd["instrument"]).expanduser())}
        payload["cadence"] = {**_default_cadence(), **data.get("cadence", {})}
        payload["source"] = source
        try:
            return cls.model_validate(payload)
        except ValidationError as exc:
            raise RigConfigError(one_line(exc, source)) from None


# -- one-line errors --------------------------------------------------------------------------------
def one_line(exc: ValidationError, source: str) -> str:
    """`SOURCE: KEY = VALUE: why` for the first error (keys as written in the rig TOML), plus `(and N more)`."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = _toml_loc(first["loc"])
    key = ".".join(loc)
    if first["type"] == _RULE:
        ctx = first.get("ctx", {})
        key = ".".join(p for p in (key, ctx.get("key", "")) if p)
        text = f"{key} = {_show(ctx['value'])}: {ctx['why']}" if "value" in ctx else f"{key}: {ctx['why']}"
    elif first["type"] == "missing":
        text = f"{key}: required"
    elif first["type"] == "extra_forbidden" or "[key]" in first["loc"]:
        text = f"{key}: unknown key{_allowed(loc)}"
    else:
        why = first["msg"]
        description = _description(loc)
        if description and "ctx" in first:
            why = f"{why} ({description})"
        text = f"{key} = {_show(first['input'])}: {why}"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{source}: {text}{more}"


def _toml_loc(loc: tuple[Any, ...]) -> list[str]:
    """Model location → the key as written in the rig TOML (`time_scale` → `rig.time_scale`, …)."""
    parts = [str(p) for p in loc if p != "[key]" and not str(p).startswith("function-")]
    if parts and parts[0] == "instruments":
        parts = parts[1:]
    elif parts and parts[0] in RIG_KEYS:
        parts = ["rig", *parts]
    return parts


def _allowed(loc: list[str]) -> str:
    """` (allowed: …)` for an unknown key at `loc`."""
    section = loc[0] if len(loc) > 1 else ""
    if loc == ["cadence", loc[-1]]:
        names: tuple[str, ...] = MODALITIES
    elif section == "limits":
        names = tuple(LimitsConfig.model_fields)
    elif section in INSTRUMENTS:
        names = tuple(InstrumentConfig.model_fields)
    elif section == "cadence":
        names = ("every_C", "every_s")
    else:
        return ""
    return f" (allowed: {', '.join(names)})"


def _description(loc: list[str]) -> str | None:
    """The description (the range and why) of the field at a TOML location."""
    if len(loc) == 2 and loc[0] == "limits":
        info = LimitsConfig.model_fields.get(loc[1])
    elif len(loc) == 2 and loc[0] in INSTRUMENTS:
        info = InstrumentConfig.model_fields.get(loc[1])
    elif len(loc) == 2 and loc[0] == "rig":
        info = RigConfig.model_fields.get(loc[1])
    elif len(loc) == 3 and loc[0] == "cadence":
        return _annotated_description(get_type_hints(CadenceEntry, include_extras=True).get(loc[2]))
    else:
        return None
    return info.description if info is not None else None


def _annotated_description(annotation: Any) -> str | None:
    for meta in getattr(annotation, "__metadata__", ()):
        if getattr(meta, "description", None):
            return meta.description
    return None


def _show(value: Any) -> str:
    """A value as it would be written in TOML (inf and nan as written, strings quoted)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return repr(value)
