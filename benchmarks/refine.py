"""Speed of the whole-pattern refinement (hotstage.analysis.refine.quantify) on a 60,000-point synchrotron pattern.

Data: `XRDSynthesizer` (pseudo-Voigt path) at λ = 0.41391 Å, 2θ 2–62° at 0.001° (60,000 points, no decimation),
Gaussian instrument FWHM ≈ 0.006°, β-CsPbI3 70 / δ-CsPbI3 30 wt %, 60 nm crystallites; β, δ and CsI offered.
Measured: cold fits (CIF cells, default start, elimination and all; median of `--cold`), and warm re-fits of fresh
noise draws from the previous result (`start=`). Baseline in the same run: one render of every offered phase on the
full grid (the unit of work of one model evaluation), so the ratios are comparable across machines. Targets
(issue 13, item 5): cold ≤ 2 s, warm ≥ 100 patterns/s. Run: `python benchmarks/refine.py [--warm N] [--cold N]`.

Measured (one core of a 2-core machine shared with four other jobs, load 5–7, so seconds vary ×2 between runs;
the ratios are the comparable numbers):

- before (commit e8b9c1b: one re-render per Jacobian column, scipy TRF on all 60,000 rows): baseline 5.2 ms,
  cold 7.0 s = 1343 baselines (87 evaluations), warm 774 ms = 1.3 patterns/s = 148 baselines.
- after (analytic profile derivatives, TRF on the p + 1-row compressed problem, tabulated Gaussian): see the
  package docstring of `hotstage.analysis.refine` for the numbers and what limits the warm rate.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hotstage.analysis.crystal import Crystal  # noqa: E402
from hotstage.analysis.instrument import SIGMA2_TO_FWHM2_DEG2, Instrument, render_instrument_peaks  # noqa: E402
from hotstage.analysis.radiation import Radiation  # noqa: E402
from hotstage.analysis.refine import quantify  # noqa: E402
from hotstage.analysis.refine.model import RENDER_WINDOW, PhaseModel  # noqa: E402
from hotstage.simulated.synthesis import XRDSynthesizer  # noqa: E402

LAMBDA = 0.41391
FWHM = 0.006
OFFERED = ("CsPbI3-beta", "CsPbI3-delta", "CsI")


def main() -> None:
    """Print the baseline, cold-fit time, warm rate and the ratios."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--warm", type=int, default=20)
    ap.add_argument("--cold", type=int, default=3)
    args = ap.parse_args()
    axis = np.round(np.arange(2.0, 62.0, 0.001), 6)
    rad = Radiation.synchrotron(LAMBDA)
    synth = XRDSynthesizer(axis, rad, caglioti=(0.0, 0.0, FWHM ** 2), microstrain=2e-4,
                           phases={n: Crystal.builtin(n) for n in OFFERED})
    state = SimpleNamespace(weight_fractions={"CsPbI3-beta": 0.7, "CsPbI3-delta": 0.3, "glass": 0.0},
                            crystallite_size_nm={"CsPbI3-beta": 60.0, "CsPbI3-delta": 60.0},
                            strain={"CsPbI3-beta": 0.0, "CsPbI3-delta": 0.0}, temperature_C=25.0, time_s=0.0)
    rng = np.random.default_rng(7)
    inst = Instrument(rad, w=FWHM ** 2 / SIGMA2_TO_FWHM2_DEG2, name="benchmark: Gaussian 0.006°")
    phases = [Crystal.builtin(n) for n in OFFERED]
    # baseline: one render of every offered phase on the full grid, with exact exp (the renderer as it was when the
    # baseline was defined, so ratios stay comparable with the "before" numbers of the module docstring)
    models = [PhaseModel(c, rad, float(axis[0]), float(axis[-1])) for c in phases]
    lines = [m.peaks(m.start(), inst)[:4] for m in models]

    def render_all() -> None:
        for c, a, fg, fl in lines:
            render_instrument_peaks(axis, c, a, fg, fl, inst, window=RENDER_WINDOW)

    render_all()
    t0 = time.perf_counter()
    reps = 5
    for _ in range(reps):
        render_all()
    base = (time.perf_counter() - t0) / reps
    y = synth(state, 1.0, rng)
    quantify(axis[:2000], y[:2000], phases[:1], inst, humps=0)  # compile/warm caches outside the timing
    cold_times = []
    cold = None
    for _ in range(max(args.cold, 1)):
        t0 = time.perf_counter()
        cold = quantify(axis, y, phases, inst, background_order=12, humps=0)
        cold_times.append(time.perf_counter() - t0)
    assert cold is not None
    t_cold = float(np.median(cold_times))
    warm_times, errs, evals = [], [], []
    prev = cold
    for _ in range(args.warm):
        y2 = synth(state, 1.0, rng)
        t0 = time.perf_counter()
        prev = quantify(axis, y2, phases, inst, background_order=12, humps=0, start=prev)
        warm_times.append(time.perf_counter() - t0)
        errs.append(abs(prev.weight_fractions.get("CsPbI3-beta", 0.0) - 0.7))
        evals.append(prev.n_evaluations)
    t_warm = float(np.median(warm_times))
    print(f"points: {axis.size}, phases offered: {len(OFFERED)}")
    print(f"baseline (render all offered phases once): {base * 1e3:.1f} ms")
    print(f"cold fit: median {t_cold:.2f} s of {len(cold_times)} = {t_cold / base:.0f} baselines (target ≤ 2 s); "
          f"evaluations {cold.n_evaluations}; weight fractions "
          f"{({k: round(v, 4) for k, v in cold.weight_fractions.items()})}; rejected {list(cold.rejected)}; "
          f"Rwp {cold.rwp:.4f}")
    print(f"warm re-fit: median {t_warm * 1e3:.0f} ms = {1.0 / t_warm:.1f} patterns/s = {t_warm / base:.1f} baselines "
          f"(target ≥ 100/s); evaluations median {float(np.median(evals)) if evals else math.nan:.0f}; "
          f"max |β − 0.70| over {args.warm}: {max(errs) if errs else math.nan:.4f}")


if __name__ == "__main__":
    main()
