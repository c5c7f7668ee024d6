"""hotstage plans: temperature programs, in-situ ramps, step-and-hold, sintering arrays, safety wrappers."""

from .hold import step_and_hold
from .insitu import MODALITIES, ProgressInfo, insitu_ramp, poll_interval_s, settle
from .program import Cadence, Cool, Hold, ProgramError, Ramp, RigLimits, Segment, TemperatureProgram
from .safety import make_furnace_safe, safe_furnace_wrapper
from .sintering import pause_for_sample_change, sintering_array, sintering_program

__all__ = [
    "MODALITIES",
    "Cadence",
    "Cool",
    "Hold",
    "ProgramError",
    "ProgressInfo",
    "Ramp",
    "RigLimits",
    "Segment",
    "TemperatureProgram",
    "insitu_ramp",
    "make_furnace_safe",
    "pause_for_sample_change",
    "poll_interval_s",
    "safe_furnace_wrapper",
    "settle",
    "sintering_array",
    "sintering_program",
    "step_and_hold",
]
