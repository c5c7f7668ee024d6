"""PL fit speed: fits per second of 1101-point simulated PL spectra, as ratios against a baseline in the same run.

Baseline: `scipy.optimize.curve_fit` of a Gaussian + constant background from a naive start (the spectrum's
maximum and the axis centre), the fit a user would write by hand. Figures: hotstage's `fit_gaussian`,
`urbach_energy`, `fit_two_gaussians` and `fit_pl` (all of them: what the live `pl_fit` stream runs per event).
Run: `python benchmarks/pl_fit.py [--seconds S]`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.optimize import curve_fit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hotstage.analysis.pl_fit import fit_gaussian, fit_pl, fit_two_gaussians, urbach_energy  # noqa: E402
from hotstage.simulated.parameters import SampleSpec  # noqa: E402
from hotstage.simulated.sample import CompositeSample, ramp  # noqa: E402
from hotstage.simulated.synthesis import PLSynthesizer  # noqa: E402


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of fn over about `seconds` of wall time (after one warm-up call)."""
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - t0)


def gaussian(x: np.ndarray, a: float, c: float, s: float, b: float) -> np.ndarray:
    """Gaussian peak on a constant background (the baseline's model)."""
    return a * np.exp(-0.5 * ((x - c) / s) ** 2) + b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="wall seconds per figure")
    args = parser.parse_args()
    sample = CompositeSample(SampleSpec.default())
    ramp(sample, 275.0, 10.0, 5.0)
    syn = PLSynthesizer()
    lam = syn.axis
    y = syn(sample.state, 1.0, np.random.default_rng(3))
    p0 = (float(y.max()), float(lam.mean()), 20.0, 0.0)
    base = rate(lambda: curve_fit(gaussian, lam, y, p0=p0, maxfev=10000), args.seconds)
    print(f"baseline scipy curve_fit Gaussian (naive start): {base:9.1f} fits/s  (1.00x)")
    for name, fn in (("fit_gaussian", fit_gaussian), ("urbach_energy", urbach_energy),
                     ("fit_two_gaussians", fit_two_gaussians), ("fit_pl", fit_pl)):
        r = rate(lambda fn=fn: fn(lam, y), args.seconds)
        print(f"{name:18}: {r:9.1f} fits/s  ({r / base:5.2f}x the baseline)")


if __name__ == "__main__":
    main()
