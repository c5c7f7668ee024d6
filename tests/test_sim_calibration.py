"""The simulated rig's shipped LaB6 calibration (hotstage.simulated.standard) is what a calibration gives.

The live analysis of a simulated rig uses `simulated/data/simulated-lab-LaB6.instprm`, never the simulator's truth
(`SIMULATED_LAB_INSTRUMENT`). Here: re-measuring and re-calibrating (same exposure and seed) reproduces the file,
and the file describes the simulator's diffractometer over the rig's range as a calibration can (tolerances below).
"""

from __future__ import annotations

import numpy as np

from hotstage.acquisition.config import RigConfig
from hotstage.simulated.diffractometer import SIMULATED_LAB_INSTRUMENT
from hotstage.simulated.standard import calibrate_simulated_rig, calibrated_instrument

ANGLES = np.array([22.0, 30.0, 45.0, 60.0])
"""2θ across the part of the rig's XRD range (5–60°) that LaB6's lines cover, both ends included (its first line,
100, is at 21.4° for Cu Kα; 60° is the rig's last angle): below 21° the calibration extrapolates."""


def test_shipped_calibration_is_reproduced_and_close_to_the_simulators_instrument() -> None:
    """Re-made calibration: FWHM within 0.5 %, peak shift within 0.0005° of the file (same data, same fit).
    File vs truth: FWHM within 5 % at ANGLES (measured +1.2, +0.9, +0.3, −0.1 %; before the single-line seed and
    the bin term, on the engine before f8cbc3e: +3.4 % at 22°, +2.8 % at 60°, U 43 against the truth's 22), peak
    shift (zero + displacement) within 0.002° (measured 5e-4°), S/L and H/L within 0.005 of the truth's 0.02
    (measured 0.0204, 0.0204); χ² 6156.5 from the seed, 6155.2 from the lab default (one minimum)."""
    shipped = calibrated_instrument()
    again = calibrate_simulated_rig().instrument
    assert np.allclose(again.fwhm(ANGLES), shipped.fwhm(ANGLES), rtol=5e-3)
    assert np.allclose(again.shift(ANGLES), shipped.shift(ANGLES), atol=5e-4)
    truth = SIMULATED_LAB_INSTRUMENT
    rel = shipped.fwhm(ANGLES) / truth.fwhm(ANGLES) - 1.0
    assert np.all(np.abs(rel) <= 0.05), rel
    assert np.all(np.abs(shipped.shift(ANGLES) - truth.shift(ANGLES)) <= 0.002)
    assert abs(shipped.s_l - truth.s_l) <= 0.005 and abs(shipped.h_l - truth.h_l) <= 0.005
    assert shipped.radiation == truth.radiation


def test_a_simulated_rig_declares_the_shipped_calibration() -> None:
    """No `[xrd] instrument`: the simulated rig declares its calibration (raw runs carry it: rig.xrd_instrument)."""
    rig = RigConfig()
    assert rig.xrd_instrument == calibrated_instrument()
    assert rig.to_metadata()["xrd_instrument"] == calibrated_instrument().to_dict()
    assert rig.xrd_instrument != SIMULATED_LAB_INSTRUMENT
