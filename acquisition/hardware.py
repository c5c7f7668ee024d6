"""A real rig: the instruments named in a rig TOML, opened through pyvisa as ophyd devices.

It offers the same attributes as `simulated.SimulatedRig` (`furnace`, `xrd`, `thz`, `pl`, `clock`,
`resources`) so sessions and plans do not care which one they drive. Devices are built first (that opens
nothing), then each is connected (`connect()`: VISA session + `*IDN?` check), so a wrong address fails before
anything moves.

Time scale: a VISA rig runs in real time, and `RigConfig` refuses any `[rig] time_scale` but 1 for it. Emulators
served by `hotstage sim serve --time-scale K` in another process look like hardware here: their `*IDN?` answers
(`LSCI,MODEL336,...`, `HOTSTAGE-SIM,<MODEL>,...`) do not carry K and no VISA query reports it (only the serve
command's JSON line and its optional control socket do, neither of which a rig TOML names), so a mismatch cannot be
detected from this side: serve them at K = 1 (the default) for a visa rig. A faster emulator would move the plant K
times faster than the plan's clock (too few cadence points, holds K times too long in plant time).
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from hotstage.acquisition.config import MODALITIES, RigConfig
from hotstage.devices import ExperimentClock, FTIRSpectrometer, LakeShore336Furnace, PLSpectrometer, XRDDetector

DETECTOR_CLASSES = {"xrd": XRDDetector, "thz": FTIRSpectrometer, "pl": PLSpectrometer}


class HardwareRig:
    """Context manager that opens the configured instruments and closes them on exit."""

    truth_reader = None  # a real sample has no ground truth

    def __init__(self, config: RigConfig) -> None:
        self.config = config
        self.resources = {name: inst.resource for name, inst in config.instruments.items()}
        self.furnace: LakeShore336Furnace | None = None
        self.xrd: Any = None
        self.thz: Any = None
        self.pl: Any = None
        self.clock = ExperimentClock(name="clock")
        self._stack = ExitStack()

    def __enter__(self) -> HardwareRig:
        try:
            self._open()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _open(self) -> None:
        cfg = self.config
        f = cfg.instruments["furnace"]
        self.furnace = LakeShore336Furnace(
            f.resource,
            name="furnace",
            output=f.output,
            control_input=f.control_input,
            sample_input=f.sample_input,
            resource_manager=cfg.visa_library,
            tolerance=f.tolerance_C,
            settle_time=f.settle_s,
        )
        self._stack.callback(self.furnace.destroy)
        self.furnace.connect()
        for modality in MODALITIES:
            inst = cfg.instruments.get(modality)
            if inst is None:
                continue
            device = DETECTOR_CLASSES[modality](
                inst.resource, name=modality, resource_manager=cfg.visa_library, exposure=inst.exposure_s
            )
            self._stack.callback(device.destroy)
            device.connect()
            setattr(self, modality, device)
