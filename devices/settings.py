"""Device settings as ophyd configuration signals: checked on every put, described with units (and choices).

A driver's tuning values (the furnace's settle tolerance and time, a detector's ``*OPC?`` margin, what the heater
does at the end of a plan) live in soft signals of kind ``config`` rather than in plain attributes, so that
``read_configuration()`` reports them and every event descriptor of a run records them (``configuration``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from ophyd import Signal

__all__ = ["SettingSignal", "ChoiceSignal", "finite", "positive", "non_negative"]


class SettingSignal(Signal):
    """A soft signal holding one setting; ``check(value)`` validates (and may convert) every put.

    ``check`` raises ValueError with a reason; the error raised here names the signal and the value.
    """

    def __init__(self, *, units: str | None = None, check: Callable[[Any], Any] | None = None, **kwargs: Any) -> None:
        """Store units (for describe()) and the check; the initial ``value`` is checked too."""
        self._units = units
        self._check = check
        if check is not None and kwargs.get("value") is not None:
            kwargs["value"] = check(kwargs["value"])
        super().__init__(**kwargs)

    def put(self, value: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Check, then store the value."""
        if self._check is not None:
            try:
                value = self._check(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{self.name}: {value!r} rejected: {exc}") from None
        super().put(value, **kwargs)

    @property
    def source_name(self) -> str:
        """``setting://<name>``: a value held by the driver, not read from the instrument."""
        return f"setting://{self.name}"

    def describe(self) -> dict[str, dict[str, Any]]:
        """Signal.describe() plus units when known."""
        desc = super().describe()
        if self._units is not None:
            desc[self.name]["units"] = self._units
        return desc


class ChoiceSignal(SettingSignal):
    """A string setting limited to ``choices``; describe() lists them (event-model ``choices``)."""

    def __init__(self, *, choices: Sequence[str], **kwargs: Any) -> None:
        """Accept only one of ``choices`` (compared after str().strip().lower())."""
        allowed = tuple(str(c) for c in choices)

        def check(value: Any) -> str:
            text = str(value).strip().lower()
            if text not in allowed:
                raise ValueError(f"must be one of {', '.join(allowed)}")
            return text

        self.choices = allowed
        super().__init__(check=check, **kwargs)

    def describe(self) -> dict[str, dict[str, Any]]:
        """String data key with its choices."""
        desc = super().describe()
        desc[self.name]["choices"] = list(self.choices)
        return desc


def finite(value: Any) -> float:
    """A finite float."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("must be finite")
    return number


def positive(value: Any) -> float:
    """A finite float > 0."""
    number = finite(value)
    if number <= 0:
        raise ValueError("must be > 0")
    return number


def non_negative(value: Any) -> float:
    """A finite float >= 0."""
    number = finite(value)
    if number < 0:
        raise ValueError("must be >= 0")
    return number
