"""The simulated rig's diffractometer, calibrated as a real one is: a LaB6 standard measured, an instrument refined.

The simulated XRD detector draws through its own instrument (`SIMULATED_LAB_INSTRUMENT`, the rig's ground truth,
profile code independent of the analysis's). The live analysis must not read that truth: like on a real rig, it
uses an instrument *calibrated* from a standard. `CALIBRATION_FILE` is that calibration, made by this module's
`main` (`python -m hotstage.simulated.standard`): LaB6 (NIST SRM 660c cell) "measured" for `EXPOSURE_S` on the
rig's 2θ axis with seed `SEED`, refined by `hotstage.analysis.calibration.calibrate` from the lab default start
(which seeds the instrument from LaB6's single lines and keeps the better of the two whole-pattern fits).
A simulated rig without an `[xrd] instrument` file uses it (`RigConfig.xrd_instrument`); `hotstage demo` repeats
the calibration on a fresh measurement and measures with its result. tests/test_sim_calibration.py checks the file
is what the calibration gives.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from hotstage.analysis.calibration import Calibration
    from hotstage.analysis.instrument import Instrument

STANDARD = "LaB6"
"""The line-profile standard the simulated rig carries (NIST SRM 660c, `hotstage.analysis.standards`)."""
EXPOSURE_S: float = 60.0
"""Counting time of the standard (its strongest line then peaks near 1.2×10⁵ counts: a routine calibration scan)."""
SEED: int = 660
"""Noise seed of the shipped calibration's measurement."""
CALIBRATION_FILE = "simulated-lab-LaB6.instprm"
"""Shipped calibration of the simulated diffractometer, in `hotstage.simulated.data` (GSAS-II format)."""


def measure_standard(exposure_s: float = EXPOSURE_S, seed: int = SEED,
                     standard: str = STANDARD) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """2θ and Poisson counts of the standard on the simulated rig's XRD detector (its own instrument and axis)."""
    from hotstage.simulated.diffractometer import SIMULATED_LAB_INSTRUMENT
    from hotstage.simulated.synthesis import XRDSynthesizer

    synth = XRDSynthesizer(instrument=SIMULATED_LAB_INSTRUMENT)
    counts = synth.standard(standard, exposure_s, np.random.default_rng(seed))
    return synth.axis.copy(), counts


def calibrate_simulated_rig(exposure_s: float = EXPOSURE_S, seed: int = SEED) -> "Calibration":
    """Measure the standard and refine an instrument from the lab default (what a user does on a new rig)."""
    from hotstage.analysis.calibration import calibrate
    from hotstage.analysis.instrument import Instrument

    x, y = measure_standard(exposure_s, seed)
    return calibrate(x, y, STANDARD, Instrument.lab_default())


def calibrated_instrument() -> "Instrument":
    """The shipped calibration (`CALIBRATION_FILE`): the instrument a simulated rig's live analysis assumes."""
    from hotstage.analysis.instrument import read_instrument

    with resources.as_file(resources.files("hotstage.simulated.data") / CALIBRATION_FILE) as path:
        return read_instrument(path)


def main(argv: list[str] | None = None) -> int:
    """Re-make the shipped calibration file (`python -m hotstage.simulated.standard [OUT]`)."""
    from hotstage.analysis.instrument import write_instprm

    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else Path(__file__).with_name("data") / CALIBRATION_FILE
    cal = calibrate_simulated_rig()
    write_instprm(cal.instrument.replace(name=f"simulated rig, calibrated on {STANDARD} "
                                              f"({EXPOSURE_S:g} s, seed {SEED}), Rwp {cal.rwp:.4f}"), out)
    print(f"{out}: Rwp {cal.rwp:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
