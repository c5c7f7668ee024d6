"""hotstage devices: ophyd devices for the furnace controller, spectrometers, XRD detector and clock.

Transport is pyvisa (``hotstage.devices.visa``); nothing here imports ``simulated``.
"""

from .clock import ExperimentClock
from .lakeshore import (
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
    VisaInstrument,
    VisaSignal,
    VisaSignalRO,
    open_instrument,
)

__all__ = [
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
