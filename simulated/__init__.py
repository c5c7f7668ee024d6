"""hotstage: simulated — sample physics, pattern/spectrum synthesis, instrument emulators, the simulated rig.

``SimulatedRig`` is exported lazily so that importing the physics does not import ophyd/pyvisa.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SimulatedRig", "SimWorld", "SimClock"]


def __getattr__(name: str) -> Any:
    """Lazy exports (PEP 562)."""
    if name == "SimulatedRig":
        from .rig import SimulatedRig

        return SimulatedRig
    if name == "SimWorld":
        from .world import SimWorld

        return SimWorld
    if name == "SimClock":
        from .clock import SimClock

        return SimClock
    raise AttributeError(f"module 'simulated' has no attribute {name!r}")
