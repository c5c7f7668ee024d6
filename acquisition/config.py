"""Rig configuration: which instruments, where they are, the rig's limits and acquisition cadences.

A rig TOML (see README, "Running on a real rig") looks like::

    [rig]
    name = "lab-furnace-1"
    kind = "visa"                 # "simulated" (default) or "visa"
    visa_library = "@py"          # pyvisa backend: "@py" (pyvisa-py), "" (NI-VISA), "file.yaml@sim"
    time_scale = 240.0            # simulated rigs only: experiment seconds per wall second

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
    [thz]
    ...
    [pl]
    ...

    [cadence]                     # per modality: every_C (temperature change) or every_s (experiment seconds)
    xrd = { every_C = 5 }
    pl = { every_C = 5 }
    thz = { every_C = 10 }

Unknown sections or keys are rejected with an error naming the file and the key, before anything moves.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulated.rig import DEFAULT_TIME_SCALE

MODALITIES = ("xrd", "thz", "pl")


class RigConfigError(ValueError):
    """A rig TOML that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class InstrumentConfig:
    """One instrument's address and acquisition settings."""

    resource: str = ""
    exposure_s: float = 1.0
    output: int = 1
    control_input: str = "A"
    sample_input: str | None = "B"
    tolerance_C: float = 1.0
    settle_s: float = 30.0


@dataclass(frozen=True)
class LimitsConfig:
    """What the furnace may be asked to do; programs are validated against it before anything moves."""

    max_C: float = 400.0
    min_C: float = 0.0
    min_rate_C_per_min: float = 0.1
    max_rate_C_per_min: float = 50.0


@dataclass(frozen=True)
class RigConfig:
    """Everything a session needs to know about the rig."""

    name: str = "simulated-rig"
    kind: str = "simulated"
    visa_library: str = "@py"
    time_scale: float = DEFAULT_TIME_SCALE
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    instruments: dict[str, InstrumentConfig] = field(default_factory=dict)
    cadence: dict[str, dict[str, float]] = field(
        default_factory=lambda: {"xrd": {"every_C": 5.0}, "pl": {"every_C": 5.0}, "thz": {"every_C": 10.0}}
    )
    source: str = "<defaults>"

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
            "limits": vars(self.limits),
            "instruments": {k: {"resource": v.resource, "exposure_s": v.exposure_s} for k, v in self.instruments.items()},
            "config_file": self.source,
        }

    @classmethod
    def from_toml(cls, path: str | Path) -> RigConfig:
        """Read a rig TOML, rejecting unknown keys and bad values with the file and key named."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise RigConfigError(f"{path}: rig file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise RigConfigError(f"{path}: not valid TOML: {exc}") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> RigConfig:
        """Build from parsed TOML; see the module docstring for the layout."""
        allowed = {"rig", "limits", "furnace", "cadence", *MODALITIES}
        _reject_unknown(data, allowed, source, "")
        rig = dict(data.get("rig", {}))
        _reject_unknown(rig, {"name", "kind", "visa_library", "time_scale"}, source, "rig.")
        kind = rig.get("kind", "simulated")
        if kind not in ("simulated", "visa"):
            raise RigConfigError(f"{source}: rig.kind must be 'simulated' or 'visa', got {kind!r}")
        limits_d = dict(data.get("limits", {}))
        _reject_unknown(limits_d, set(LimitsConfig.__dataclass_fields__), source, "limits.")
        limits = LimitsConfig(**{k: _number(v, source, f"limits.{k}") for k, v in limits_d.items()})
        if limits.max_C <= limits.min_C or limits.max_rate_C_per_min < limits.min_rate_C_per_min:
            raise RigConfigError(f"{source}: limits are inconsistent: {limits}")
        instruments = {}
        for name in ("furnace", *MODALITIES):
            if name in data:
                section = dict(data[name])
                _reject_unknown(section, set(InstrumentConfig.__dataclass_fields__), source, f"{name}.")
                instruments[name] = InstrumentConfig(**section)
                if kind == "visa" and not instruments[name].resource:
                    raise RigConfigError(f"{source}: {name}.resource is required for a visa rig")
        if kind == "visa" and "furnace" not in instruments:
            raise RigConfigError(f"{source}: a visa rig needs a [furnace] section with a resource")
        cadence = dict(cls().cadence)
        for name, spec in data.get("cadence", {}).items():
            if name not in MODALITIES:
                raise RigConfigError(f"{source}: cadence.{name}: unknown modality (use {', '.join(MODALITIES)})")
            if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in ("every_C", "every_s"):
                raise RigConfigError(f"{source}: cadence.{name} must be {{ every_C = N }} or {{ every_s = N }}")
            key, value = next(iter(spec.items()))
            if _number(value, source, f"cadence.{name}.{key}") <= 0:
                raise RigConfigError(f"{source}: cadence.{name}.{key} must be > 0, got {value}")
            cadence[name] = {key: float(value)}
        time_scale = _number(rig.get("time_scale", DEFAULT_TIME_SCALE), source, "rig.time_scale")
        if time_scale <= 0:
            raise RigConfigError(f"{source}: rig.time_scale must be > 0, got {time_scale}")
        return cls(
            name=str(rig.get("name", "simulated-rig" if kind == "simulated" else "rig")),
            kind=kind,
            visa_library=str(rig.get("visa_library", "@py")),
            time_scale=time_scale,
            limits=limits,
            instruments=instruments,
            cadence=cadence,
            source=source,
        )


def _reject_unknown(section: dict[str, Any], allowed: set[str], source: str, prefix: str) -> None:
    """Raise naming the first key that the schema does not know."""
    for key in section:
        if key not in allowed:
            raise RigConfigError(f"{source}: unknown key {prefix}{key!r} (allowed: {', '.join(sorted(allowed))})")


def _number(value: Any, source: str, key: str) -> float:
    """A TOML number as float, or an error naming the key."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RigConfigError(f"{source}: {key} must be a number, got {value!r}")
    return float(value)
