"""hotstage devices: ophyd devices for the furnace controller, spectrometers, XRD detector and clock.

Transport is pyvisa (``hotstage.devices.visa``); nothing here imports ``simulated``. Constructing a device opens
nothing: ``connect()`` does (``connect(mock=True)``: in-memory instruments, ``hotstage.devices.mock``).
"""

from .clock import ExperimentClock
from .lakeshore import (
    END_OF_PLAN_CHOICES,
    FurnaceSetCancelled,
    FurnaceSetStatus,
    FurnaceSettleTimeout,
    LakeShore336Furnace,
    celsius_to_kelvin,
    kelvin_to_celsius,
)
from .spectrometers import (
    AcquisitionError,
    ArraySignal,
    FTIRSpectrometer,
    PLSpectrometer,
    ScpiArrayDetector,
    XRDDetector,
)
from .visa import (
    InstrumentConnectionError,
    InstrumentError,
    InstrumentIdentityError,
    InstrumentReplyError,
    NotConnectedError,
    VisaInstrument,
    VisaSignal,
    VisaSignalRO,
    open_instrument,
)

__all__ = [
    "END_OF_PLAN_CHOICES",
    "AcquisitionError",
    "ArraySignal",
    "ExperimentClock",
    "FTIRSpectrometer",
    "FurnaceSetCancelled",
    "FurnaceSetStatus",
    "FurnaceSettleTimeout",
    "InstrumentConnectionError",
    "InstrumentError",
    "InstrumentIdentityError",
    "InstrumentReplyError",
    "LakeShore336Furnace",
    "NotConnectedError",
    "PLSpectrometer",
    "ScpiArrayDetector",
    "VisaInstrument",
    "VisaSignal",
    "VisaSignalRO",
    "XRDDetector",
    "celsius_to_kelvin",
    "kelvin_to_celsius",
    "open_instrument",
]
