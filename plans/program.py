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

Numbers: the demo program (25 → 350 °C at 10 °C/min, 10 min hold, cool at 10 °C/min) follows the
sintering protocol of Li et al., Nat. Commun. 14, 7612 (2023) (350 °C sintering, 10 °C/min). The Lake Shore
336 accepts ramp rates 0.1–100 K/min (manual, ch. 6, `RAMP` command), the default `RigLimits` rate bounds.
The default 400 °C ceiling is a typical hot-stage furnace limit and belongs to the rig configuration.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

__all__ = [
    "Cadence",
    "Cool",
    "Hold",
    "ProgramError",
    "Ramp",
    "RigLimits",
    "Segment",
    "TemperatureProgram",
]


class ProgramError(ValueError):
    """A temperature program (or cadence) that must not be run: says which segment, which value, why."""


@dataclass(frozen=True)
class Ramp:
    """Heat to `to_C` at `rate_C_per_min` (°C/min)."""

    to_C: float
    rate_C_per_min: float

    kind = "ramp"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (goes into start metadata)."""
        return {"kind": self.kind, "to_C": float(self.to_C), "rate_C_per_min": float(self.rate_C_per_min)}


@dataclass(frozen=True)
class Hold:
    """Dwell at the current temperature for `minutes` (experiment time)."""

    minutes: float

    kind = "hold"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (goes into start metadata)."""
        return {"kind": self.kind, "minutes": float(self.minutes)}


@dataclass(frozen=True)
class Cool:
    """Cool to `to_C` at `rate_C_per_min` (°C/min); the furnace may lag below its natural cooling rate."""

    to_C: float
    rate_C_per_min: float

    kind = "cool"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (goes into start metadata)."""
        return {"kind": self.kind, "to_C": float(self.to_C), "rate_C_per_min": float(self.rate_C_per_min)}


Segment = Union[Ramp, Hold, Cool]
_KINDS: dict[str, type] = {"ramp": Ramp, "hold": Hold, "cool": Cool}
_FIELDS: dict[str, tuple[str, ...]] = {"ramp": ("to_C", "rate_C_per_min"), "hold": ("minutes",), "cool": ("to_C", "rate_C_per_min")}
# keys `to_dict()` adds for readers of the metadata; accepted (and ignored) so that from_dict(to_dict()) works
_DERIVED_KEYS = {"duration_s", "max_C"}


@dataclass(frozen=True)
class RigLimits:
    """What the furnace may be asked to do (°C and °C/min); a program is validated against it."""

    max_C: float = 400.0
    min_rate: float = 0.1
    max_rate: float = 100.0
    min_C: float = 0.0

    def __post_init__(self) -> None:
        for key in ("max_C", "min_rate", "max_rate", "min_C"):
            _number(getattr(self, key), f"rig limits: {key}")  # inf would switch the limit (and its guard) off
        if not (self.min_C < self.max_C) or not (0 < self.min_rate <= self.max_rate):
            raise ProgramError(f"inconsistent rig limits {self}")


@dataclass(frozen=True)
class Cadence:
    """When a modality is acquired: every `every_C` °C of temperature change and/or every `every_s` experiment seconds."""

    every_C: float | None = None
    every_s: float | None = None

    def __post_init__(self) -> None:
        if self.every_C is None and self.every_s is None:
            raise ProgramError("a cadence needs every_C (°C) or every_s (experiment seconds)")
        for key in ("every_C", "every_s"):
            value = getattr(self, key)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ProgramError(f"cadence {key} must be a positive number, got {value!r}")

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


MAX_HOLD_MINUTES = 7 * 24 * 60.0
"""Longest hold segment: a week. Longer is a unit slip (seconds for minutes) in a supervised furnace program."""


def _number(value: Any, where: str) -> float:
    """A finite float, or ProgramError naming where it came from (`WHERE = VALUE: must be a finite number`)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProgramError(f"{where} = {value!r}: must be a finite number")
    return float(value)


@dataclass(frozen=True)
class TemperatureProgram:
    """A start temperature (°C) and a sequence of segments; the nominal profile is piecewise linear."""

    start_C: float
    segments: tuple[Segment, ...]
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", tuple(self.segments))

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def demo(cls) -> TemperatureProgram:
        """25 → 350 °C at 10 °C/min, hold 10 min, cool to 25 °C at 10 °C/min (Li et al. 2023 sintering)."""
        return cls(25.0, (Ramp(350.0, 10.0), Hold(10.0), Cool(25.0, 10.0)), name="demo")

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "program") -> TemperatureProgram:
        """Build from the TOML/metadata form; unknown or missing keys raise ProgramError naming source and key."""
        if not isinstance(d, dict):
            raise ProgramError(f"{source}: expected a table, got {type(d).__name__}")
        allowed = {"start_C", "segment", "segments", "name"} | _DERIVED_KEYS
        for key in d:
            if key not in allowed:
                raise ProgramError(f"{source}: unknown key {key!r} (allowed: start_C, name, [[segment]])")
        for key in _DERIVED_KEYS & set(d):
            _number(d[key], f"{source}: {key}")  # ignored, but not any value
        if "start_C" not in d:
            raise ProgramError(f"{source}: missing key 'start_C'")
        start = _number(d["start_C"], f"{source}: start_C")
        raw = d.get("segment", d.get("segments"))
        if "segment" in d and "segments" in d:
            raise ProgramError(f"{source}: give either [[segment]] or 'segments', not both")
        if not isinstance(raw, list) or not raw:
            raise ProgramError(f"{source}: a program needs at least one [[segment]]")
        segments: list[Segment] = []
        for i, entry in enumerate(raw):
            if not isinstance(entry, dict):
                raise ProgramError(f"{source}: segment {i} must be a table, got {entry!r}")
            kind = entry.get("kind")
            if not isinstance(kind, str) or kind not in _KINDS:
                raise ProgramError(f"{source}: segment {i}: kind = {kind!r}: must be one of {', '.join(_KINDS)}")
            fields = _FIELDS[kind]
            for key in entry:
                if key != "kind" and key not in fields:
                    raise ProgramError(f"{source}: segment {i} ({kind}): unknown key {key!r} (allowed: {', '.join(fields)})")
            values = {}
            for key in fields:
                if key not in entry:
                    raise ProgramError(f"{source}: segment {i} ({kind}): missing key {key!r}")
                values[key] = _number(entry[key], f"{source}: segment {i} ({kind}): {key}")
            segments.append(_KINDS[kind](**values))
        name = d.get("name", "")
        if not isinstance(name, str):
            raise ProgramError(f"{source}: name must be a string, got {name!r}")
        return cls(start, tuple(segments), name=name)

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
            "start_C": float(self.start_C),
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
    def validate(self, limits: RigLimits | None = None) -> TemperatureProgram:
        """Raise ProgramError naming the first offending segment (index, kind) and value; returns self when fine."""
        if not self.segments:
            raise ProgramError("program has no segments")
        start = _number(self.start_C, "start_C")
        if limits is not None and not (limits.min_C <= start <= limits.max_C):
            raise ProgramError(f"start_C = {start} °C is outside the rig limits [{limits.min_C}, {limits.max_C}] °C")
        temp = start
        for i, seg in enumerate(self.segments):
            where = f"segment {i} ({getattr(seg, 'kind', type(seg).__name__)})"
            if isinstance(seg, Hold):
                minutes = _number(seg.minutes, f"{where}: minutes")
                if not 0 < minutes <= MAX_HOLD_MINUTES:
                    raise ProgramError(f"{where}: minutes = {minutes} must be > 0 and at most {MAX_HOLD_MINUTES:g} "
                                       f"(a week)")
                continue
            if not isinstance(seg, (Ramp, Cool)):
                raise ProgramError(f"{where}: not a Ramp, Hold or Cool segment: {seg!r}")
            to_C = _number(seg.to_C, f"{where}: to_C")
            rate = _number(seg.rate_C_per_min, f"{where}: rate_C_per_min")
            if rate <= 0:
                raise ProgramError(f"{where}: rate_C_per_min = {rate} must be > 0")
            if isinstance(seg, Ramp) and to_C <= temp:
                raise ProgramError(f"{where}: to_C = {to_C} °C does not go up from {temp} °C (use a cool segment)")
            if isinstance(seg, Cool) and to_C >= temp:
                raise ProgramError(f"{where}: to_C = {to_C} °C does not go down from {temp} °C (use a ramp segment)")
            if limits is not None:
                if not (limits.min_rate <= rate <= limits.max_rate):
                    raise ProgramError(
                        f"{where}: rate_C_per_min = {rate} is outside the rig limits [{limits.min_rate}, {limits.max_rate}] °C/min"
                    )
                if to_C > limits.max_C:
                    raise ProgramError(f"{where}: to_C = {to_C} °C is above the rig maximum {limits.max_C} °C")
                if to_C < limits.min_C:
                    raise ProgramError(f"{where}: to_C = {to_C} °C is below the rig minimum {limits.min_C} °C")
            temp = to_C
        return self
