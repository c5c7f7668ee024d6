"""Temperature programs: segments, the nominal profile, TOML loading and validation against a rig's limits.

A program is a start temperature followed by segments — `Ramp` (heat at a rate), `Hold` (dwell), `Cool`
(cool at a rate); a second heating is just more segments. Programs are checked against `RigLimits`
before anything moves, and the error names the segment (index, kind) and the offending value.

TOML form (all temperatures °C, rates °C/min, holds in minutes)::

    start_C = 25
    [[segment]]
    kind = "ramp"
    to_C = 350
    rate_C_per_min = 10
    [[segment]]
    kind = "hold"
    minutes = 10
    [[segment]]
    kind = "cool"
    to_C = 25
    rate_C_per_min = 10
    overrun_min = 20          # optional: run at most 20 min past the nominal end waiting for the furnace

A ramp or cool ends when the furnace has reached `to_C` (within its tolerance) and the controller's setpoint ramp is
done, or `overrun_min` experiment minutes after its nominal end, whichever is first (default: max(10 min, 50 % of
the nominal segment time); see `hotstage.plans.insitu`).

Numbers: the demo program (25 → 350 °C at 10 °C/min, 10 min hold, cool at 10 °C/min) follows the
sintering protocol of Li et al., Nat. Commun. 14, 7612 (2023) (350 °C sintering, 10 °C/min). The Lake Shore
336 accepts ramp rates 0.1–100 K/min (manual, ch. 6, `RAMP` command), the default `RigLimits` rate bounds.
The default 400 °C ceiling is a typical hot-stage furnace limit and belongs to the rig configuration.

The classes are pydantic (v2) models: frozen, `extra="forbid"` (an unknown key is an error), every number strict
(a string or a bool is not a number) and finite (`inf` would switch a limit off), segments a union discriminated
by `kind`. The shape of a program (a ramp goes up, a cool goes down) is checked when it is built; the rig's limits
(`RigLimits`) by `validate(limits)`, the same model validator run with the limits as validation context. Every
error is ONE line (`ProgramError`, a ValueError): `SOURCE: segment 1 (hold): minutes = 'ten': why`.
`RigLimits` and `Cadence` are pydantic dataclasses (plans read them with `dataclasses.asdict`).
"""

from __future__ import annotations

import functools
import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError

__all__ = [
    "Cadence",
    "Cool",
    "Hold",
    "MAX_HOLD_MINUTES",
    "ProgramError",
    "Ramp",
    "RigLimits",
    "Segment",
    "TemperatureProgram",
]


class ProgramError(ValueError):
    """A temperature program (or cadence) that must not be run: says which segment, which value, why."""


MAX_HOLD_MINUTES = 7 * 24 * 60.0
"""Longest hold segment: a week. Longer is a unit slip (seconds for minutes) in a supervised furnace program."""
DEFAULT_OVERRUN_S = 600.0
DEFAULT_OVERRUN_FRACTION = 0.5
"""Without `overrun_min` a ramp/cool may run max(DEFAULT_OVERRUN_S, DEFAULT_OVERRUN_FRACTION × nominal time) past
its nominal end waiting for the furnace: natural cooling below ~55 °C is slower than 10 °C/min on a typical hot
stage (tau ~3 min), so a cool to near ambient needs minutes more than nominal; a furnace that has not arrived by
then will not (it is near ambient, or the heater cannot keep up) and the program goes on with a warning."""

_CONFIG = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
_DATACLASS_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)  # frozen: by the dataclass decorator
_RULE = "hotstage_rule"  # error type of the cross-field rules (their message is the whole text after the location)


def _number(**constraints: Any) -> Any:
    """A strict (no str, no bool), finite float field with `constraints` (gt=…, le=…, description=…)."""
    return Field(strict=True, allow_inf_nan=False, **constraints)


Temperature = Annotated[float, _number(
    ge=-273.15, le=2000.0, description="°C, above absolute zero and at most 2000 °C (beyond any hot stage); the "
                                       "rig's limits are checked by validate")]
Rate = Annotated[float, _number(gt=0, le=1000.0, description="°C/min, above 0; the rig's limits are checked by "
                                                              "validate, the Lake Shore 336 ramps 0.1–100 K/min")]


def _rule(message: str) -> PydanticCustomError:
    """A cross-field rule failed; `message` names the segment, the key and the value."""
    return PydanticCustomError(_RULE, "{message}", {"message": message})


class _OneLineErrors(type(BaseModel)):  # type: ignore[misc]
    """Metaclass: positional arguments in field order (`Ramp(350.0, 10.0)`), and a direct construction raises
    ProgramError with one line instead of pydantic's multi-line ValidationError (nested validation is not
    affected: pydantic does not call the metaclass for nested models)."""

    def __call__(cls, *args: Any, **data: Any) -> Any:
        names = list(cls.model_fields)
        if len(args) > len(names):
            raise TypeError(f"{cls.__name__} takes at most {len(names)} positional arguments, got {len(args)}")
        for name, value in zip(names, args):
            if name in data:
                raise TypeError(f"{cls.__name__}: {name} given twice")
            data[name] = value
        try:
            return super().__call__(**data)
        except ValidationError as exc:
            raise ProgramError(one_line(exc, cls)) from None


class _Model(BaseModel, metaclass=_OneLineErrors):
    model_config = _CONFIG


class _Moving(_Model):
    """What Ramp and Cool share: a target, a rate and how long past its nominal end the segment may run."""

    to_C: Temperature
    rate_C_per_min: Rate
    overrun_min: float | None = _number(
        default=None, gt=0, le=MAX_HOLD_MINUTES,
        description="experiment minutes the segment may run past its nominal end while the furnace has not reached "
                    "to_C; default max(10 min, 50 % of the nominal segment time)")

    def nominal_s(self, from_C: float) -> float:
        """Nominal experiment seconds from `from_C` to `to_C` at the programmed rate."""
        return abs(self.to_C - from_C) / self.rate_C_per_min * 60.0

    def overrun_s(self, from_C: float) -> float:
        """Experiment seconds the segment may run past its nominal end (`overrun_min`, else the default)."""
        if self.overrun_min is not None:
            return self.overrun_min * 60.0
        return max(DEFAULT_OVERRUN_S, DEFAULT_OVERRUN_FRACTION * self.nominal_s(from_C))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (goes into start metadata); `overrun_min` only when given."""
        d: dict[str, Any] = {"kind": self.kind, "to_C": self.to_C, "rate_C_per_min": self.rate_C_per_min}
        if self.overrun_min is not None:
            d["overrun_min"] = self.overrun_min
        return d


class Ramp(_Moving):
    """Heat to `to_C` at `rate_C_per_min` (°C/min); ends on the target or after `overrun_min` past nominal."""

    kind: Literal["ramp"] = "ramp"


class Hold(_Model):
    """Dwell at the current temperature for `minutes` (experiment time)."""

    minutes: float = _number(gt=0, le=MAX_HOLD_MINUTES,
                             description="experiment minutes, above 0 and at most a week; longer is a unit slip")
    kind: Literal["hold"] = "hold"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (goes into start metadata)."""
        return {"kind": self.kind, "minutes": self.minutes}


class Cool(_Moving):
    """Cool to `to_C` at `rate_C_per_min` (°C/min); the furnace may lag below its natural cooling rate, so the
    segment runs until the target is reached or `overrun_min` past its nominal end."""

    kind: Literal["cool"] = "cool"


Segment = Annotated[Union[Ramp, Hold, Cool], Field(discriminator="kind")]
_KINDS = ("ramp", "hold", "cool")
# keys `to_dict()` adds for readers of the metadata; accepted (if numbers, and ignored) so that from_dict(to_dict())
_DERIVED_KEYS = ("duration_s", "max_C")


def _one_line_dataclass(cls: type) -> type:
    """Make a pydantic dataclass raise ProgramError (one line) instead of ValidationError when constructed."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            init(self, *args, **kwargs)
        except ValidationError as exc:
            raise ProgramError(f"{cls.__name__}: {one_line(exc, cls)}") from None

    cls.__init__ = __init__  # type: ignore[method-assign]
    return cls


@_one_line_dataclass
@dataclass(frozen=True, config=_DATACLASS_CONFIG)
class RigLimits:
    """What the furnace may be asked to do (°C and °C/min); a program is validated against it.

    The ranges are those of the rig TOML (`hotstage.acquisition.config.LimitsConfig`): an infinite limit would
    switch the check (and the over-temperature guard built on it) off."""

    max_C: float = _number(default=400.0, gt=-196, le=1200, description="highest temperature a program may ask for")
    min_rate: float = _number(default=0.1, ge=0.1, le=100, description="°C/min: the 336 RAMP accepts 0.1–100")
    max_rate: float = _number(default=100.0, ge=0.1, le=100, description="°C/min: the 336 RAMP accepts 0.1–100")
    min_C: float = _number(default=0.0, ge=-196, lt=1200, description="lowest temperature a program may ask for")

    @model_validator(mode="after")
    def _consistent(self) -> RigLimits:
        if not self.min_C < self.max_C:
            raise _rule(f"max_C = {self.max_C!r} must be above min_C = {self.min_C!r}")
        if not self.min_rate <= self.max_rate:
            raise _rule(f"max_rate = {self.max_rate!r} must not be below min_rate = {self.min_rate!r}")
        return self


@_one_line_dataclass
@dataclass(frozen=True, config=_DATACLASS_CONFIG)
class Cadence:
    """When a modality is acquired: every `every_C` °C of temperature change and/or every `every_s` experiment seconds."""

    every_C: float | None = _number(default=None, gt=0, le=100,
                                    description="acquire every N °C of temperature change: above 0, at most 100 °C")
    every_s: float | None = _number(default=None, gt=0, le=86400,
                                    description="acquire every N experiment seconds: above 0, at most a day")

    @model_validator(mode="after")
    def _a_criterion(self) -> Cadence:
        if self.every_C is None and self.every_s is None:
            raise _rule("a cadence needs every_C (°C) or every_s (experiment seconds)")
        return self

    @classmethod
    def every_degrees(cls, step_C: float) -> Cadence:
        """Acquire whenever the furnace temperature has moved `step_C` °C since the last acquisition."""
        return cls(every_C=step_C)

    @classmethod
    def every_seconds(cls, seconds: float) -> Cadence:
        """Acquire every `seconds` of experiment time."""
        return cls(every_s=seconds)

    def due(self, temperature_C: float, time_s: float, last_C: float | None, last_s: float | None) -> bool:
        """True when an acquisition is due (always due before the first one)."""
        if last_C is None or last_s is None:
            return True
        if self.every_C is not None and abs(temperature_C - last_C) >= self.every_C:
            return True
        return self.every_s is not None and time_s - last_s >= self.every_s

    def advance(
        self, temperature_C: float, time_s: float, last_C: float | None, last_s: float | None
    ) -> tuple[float, float]:
        """New (anchor °C, anchor s) after an acquisition that was due at (temperature_C, time_s).

        Anchors move on a grid — by whole `every_C` / `every_s` steps from the previous anchor, in the direction
        of travel — so lateness of one poll does not accumulate: a 25 → 80 °C ramp at every 5 °C gives the
        acquisitions at the first polls past 25, 30, …, 80 °C. The first acquisition (or the criterion that did
        not fire) anchors at the actual values.
        """
        if last_C is None or last_s is None:
            return temperature_C, time_s
        new_C, new_s = temperature_C, time_s
        moved = temperature_C - last_C
        if self.every_C is not None and abs(moved) >= self.every_C:
            new_C = last_C + math.copysign(self.every_C * math.floor(abs(moved) / self.every_C), moved)
        elapsed = time_s - last_s
        if self.every_s is not None and elapsed >= self.every_s:
            new_s = last_s + self.every_s * math.floor(elapsed / self.every_s)
        return new_C, new_s

    def to_dict(self) -> dict[str, float]:
        """JSON-able form, the same keys as the rig TOML `[cadence]` table."""
        return {k: float(v) for k, v in (("every_C", self.every_C), ("every_s", self.every_s)) if v is not None}


class TemperatureProgram(_Model):
    """A start temperature (°C) and a sequence of segments; the nominal profile is piecewise linear.

    Built directly (`TemperatureProgram(25.0, (Ramp(350.0, 10.0), Hold(10.0)))`) or from the TOML/metadata form
    (`from_dict`, `from_toml`); either way the shape is checked (a ramp goes up, a cool goes down)."""

    start_C: Temperature
    segments: tuple[Segment, ...] = Field(min_length=1, description="[[segment]] tables: ramp, hold or cool")
    name: str = Field("", strict=True, description="a name for the program, stored with the run")

    @model_validator(mode="before")
    @classmethod
    def _toml_form(cls, data: Any) -> Any:
        """`[[segment]]` (TOML) or `segments` (metadata); the keys to_dict adds for readers are checked and dropped."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "segment" in data:
            if "segments" in data:
                raise _rule("give either [[segment]] or 'segments', not both")
            data["segments"] = data.pop("segment")
        for key in _DERIVED_KEYS:
            if key in data:
                value = data.pop(key)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise _rule(f"{key} = {value!r}: must be a finite number")
        if isinstance(data.get("segments"), list):
            data["segments"] = tuple(data["segments"])  # TOML arrays are lists
        return data

    @model_validator(mode="after")
    def _shape_and_limits(self, info: ValidationInfo) -> TemperatureProgram:
        """A ramp goes up and a cool goes down; with `context={"limits": RigLimits}` also within the rig's limits."""
        limits: RigLimits | None = (info.context or {}).get("limits")
        if limits is not None and not limits.min_C <= self.start_C <= limits.max_C:
            raise _rule(f"start_C = {self.start_C} °C is outside the rig limits [{limits.min_C}, {limits.max_C}] °C")
        temp = self.start_C
        for i, seg in enumerate(self.segments):
            where = f"segment {i} ({seg.kind})"
            if isinstance(seg, Hold):
                continue
            if isinstance(seg, Ramp) and seg.to_C <= temp:
                raise _rule(f"{where}: to_C = {seg.to_C} °C does not go up from {temp} °C (use a cool segment)")
            if isinstance(seg, Cool) and seg.to_C >= temp:
                raise _rule(f"{where}: to_C = {seg.to_C} °C does not go down from {temp} °C (use a ramp segment)")
            if limits is not None:
                rate = seg.rate_C_per_min
                if not limits.min_rate <= rate <= limits.max_rate:
                    raise _rule(f"{where}: rate_C_per_min = {rate} is outside the rig limits "
                                f"[{limits.min_rate}, {limits.max_rate}] °C/min")
                if seg.to_C > limits.max_C:
                    raise _rule(f"{where}: to_C = {seg.to_C} °C is above the rig maximum {limits.max_C} °C")
                if seg.to_C < limits.min_C:
                    raise _rule(f"{where}: to_C = {seg.to_C} °C is below the rig minimum {limits.min_C} °C")
            temp = seg.to_C
        return self

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def demo(cls) -> TemperatureProgram:
        """25 → 350 °C at 10 °C/min, hold 10 min, cool to 25 °C at 10 °C/min (Li et al. 2023 sintering)."""
        return cls(25.0, (Ramp(350.0, 10.0), Hold(10.0), Cool(25.0, 10.0)), name="demo")

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "program") -> TemperatureProgram:
        """Build from the TOML/metadata form; any bad key or value raises ProgramError `SOURCE: KEY = VALUE: why`."""
        if not isinstance(d, dict):
            raise ProgramError(f"{source}: expected a table, got {type(d).__name__}")
        try:
            return cls.model_validate(d)
        except ValidationError as exc:
            raise ProgramError(f"{source}: {one_line(exc, cls)}") from None

    @classmethod
    def from_toml(cls, path: str | Path) -> TemperatureProgram:
        """Load a program TOML file; errors name the file and the key."""
        path = Path(path)
        try:
            with path.open("rb") as f:
                data = tomllib.load(f)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ProgramError(f"{path}: not valid TOML: {err}") from err
        except OSError as err:
            raise ProgramError(f"{path}: cannot read: {err}") from err
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for start metadata `program` (includes `duration_s` and `max_C` for readers)."""
        d: dict[str, Any] = {
            "start_C": self.start_C,
            "segments": [s.to_dict() for s in self.segments],
            "duration_s": self.duration_s,
            "max_C": self.max_temperature,
        }
        if self.name:
            d["name"] = self.name
        return d

    # -- the nominal profile ---------------------------------------------------------------------
    def breakpoints(self) -> list[tuple[float, float]]:
        """(time s, temperature °C) at the start and at the end of every segment of the nominal profile."""
        t, temp = 0.0, float(self.start_C)
        points = [(t, temp)]
        for seg in self.segments:
            if isinstance(seg, Hold):
                t += seg.minutes * 60.0
            else:
                t += abs(seg.to_C - temp) / seg.rate_C_per_min * 60.0
                temp = float(seg.to_C)
            points.append((t, temp))
        return points

    @property
    def duration_s(self) -> float:
        """Nominal duration in experiment seconds."""
        return self.breakpoints()[-1][0]

    @property
    def max_temperature(self) -> float:
        """Highest nominal temperature (°C)."""
        return max(temp for _, temp in self.breakpoints())

    @property
    def min_temperature(self) -> float:
        """Lowest nominal temperature (°C)."""
        return min(temp for _, temp in self.breakpoints())

    @property
    def final_C(self) -> float:
        """Nominal temperature at the end of the program (°C)."""
        return self.breakpoints()[-1][1]

    def temperature_at(self, t_s: float) -> float:
        """Nominal temperature (°C) at `t_s` experiment seconds after the start (clamped at both ends)."""
        points = self.breakpoints()
        if t_s <= 0:
            return points[0][1]
        for (t0, y0), (t1, y1) in zip(points, points[1:]):
            if t_s <= t1:
                return y1 if t1 == t0 else y0 + (y1 - y0) * (t_s - t0) / (t1 - t0)
        return points[-1][1]

    def segment_start_temperatures(self) -> list[float]:
        """Nominal temperature at the start of each segment."""
        return [temp for _, temp in self.breakpoints()[:-1]]

    # -- validation ------------------------------------------------------------------------------
    def validate(self, limits: RigLimits | None = None) -> TemperatureProgram:  # type: ignore[override]
        """Check against the rig's `limits` (the model validator with the limits as context); ProgramError naming
        the first offending segment (index, kind) and value, else self. Without limits only the shape (checked
        on construction already)."""
        try:
            type(self).model_validate(self.model_dump(), context={"limits": limits})
        except ValidationError as exc:
            raise ProgramError(one_line(exc, type(self))) from None
        return self


# -- one-line errors --------------------------------------------------------------------------------
_ALLOWED = {"program": "start_C, name, [[segment]]", "ramp": "to_C, rate_C_per_min, overrun_min",
            "hold": "minutes", "cool": "to_C, rate_C_per_min, overrun_min"}
_FIELD_OWNER: dict[str, Any] = {"ramp": Ramp, "hold": Hold, "cool": Cool}


def one_line(exc: ValidationError, model: Any = None) -> str:
    """`segment 1 (hold): minutes = 'ten': why` for the first error of validating `model` (the class), plus
    `(and N more)`; no source prefix."""
    errors = exc.errors(include_url=False)
    if len(errors) > 1:  # a segment that failed also makes the tuple "too short": not a second error
        errors = [e for e in errors if not (e["type"] == "too_short" and e["loc"] == ("segments",))] or errors
    # a misspelled key is what the user typed: say that before the "missing" it causes
    errors.sort(key=lambda e: e["type"] not in ("extra_forbidden", "unexpected_keyword_argument"))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return _text(errors[0], model) + more


def _text(error: Any, model: Any) -> str:
    loc = list(error["loc"])
    kind, where, owner = "program", "", model
    if loc[:1] == ["segments"] and len(loc) >= 2:
        where = f"segment {loc[1]}"
        if len(loc) >= 3:
            kind, owner = str(loc[2]), _FIELD_OWNER.get(str(loc[2]))
            where += f" ({kind})"
        loc = loc[3:]
    elif loc[:1] == ["segments"]:
        loc = []
    key = ".".join(str(p) for p in loc)
    kind_of = error["type"]
    if kind_of == _RULE:
        text = error["ctx"]["message"]
    elif kind_of in ("too_short", "missing") and error["loc"] == ("segments",):
        text = "a program needs at least one [[segment]]"
    elif kind_of == "missing":
        text = f"missing key {key!r}"
    elif kind_of in ("extra_forbidden", "unexpected_keyword_argument"):
        text = f"unknown key {key!r} (allowed: {_ALLOWED[kind]})"
    elif kind_of == "union_tag_invalid":
        text = f"kind = {error['input'].get('kind')!r}: must be one of {', '.join(_KINDS)}"
    elif kind_of == "union_tag_not_found":
        text = f"missing key 'kind' (one of {', '.join(_KINDS)})"
    elif kind_of in ("model_attributes_type", "model_type", "dict_type"):
        text = f"must be a table, got {error['input']!r}"
    else:
        info = getattr(owner, "__pydantic_fields__", {}).get(key) if key else None
        why = error["msg"]
        if info is not None and "ctx" in error:
            description = info.description or next(
                (m.description for m in info.metadata if getattr(m, "description", None)), None)
            if description:
                why = f"{why} ({description})"
        text = f"{key} = {error['input']!r}: {why}" if key else why
    return f"{where}: {text}" if where else text
