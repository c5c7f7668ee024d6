"""Benchmark: Crystal.pattern for γ-CsPbI3 on a 5000-point Cu Kα grid, against a naive dense numpy baseline.

The baseline, measured in the same run, evaluates one area-normalised Gaussian per reflection line over the
whole grid (no windowing, one vectorised (n_peaks × n_points) array) and sums — the obvious numpy approach.
Our call does more work per peak (pseudo-Voigt, LP, widths, strain-dependent positions) but only inside
±6 FWHM windows. Run: ``python benchmarks/diffraction.py``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from hotstage.analysis.crystal import Crystal
from hotstage.analysis.profiles import caglioti_fwhm
from hotstage.analysis.radiation import Radiation


def _best_of(fn: Callable[[int], object], n: int, repeats: int = 5) -> float:
    """Best mean seconds per call over `repeats` batches of `n` calls (robust on a shared machine)."""
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def main() -> None:
    """Print the time per pattern, the ratio to the dense baseline and patterns per second."""
    x = np.linspace(5.0, 60.0, 5000)
    rad = Radiation.cu_ka()
    gamma = Crystal.builtin("CsPbI3-gamma")
    gamma.pattern(x, rad)  # warm the reflection cache (a one-off cost per crystal and radiation)
    centres, areas = gamma.peaks(rad, 60.0)
    fwhm = caglioti_fwhm(centres, 0.01, -0.005, 0.005)
    sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))

    def dense(_: int) -> np.ndarray:
        """Naive baseline: every Gaussian over the full grid."""
        z = (x[None, :] - centres[:, None]) / sigma[:, None]
        return (areas[:, None] / (sigma[:, None] * math.sqrt(2 * math.pi)) * np.exp(-0.5 * z * z)).sum(axis=0)

    def ours(i: int) -> np.ndarray:
        """Crystal.pattern with a changing strain (the live-refinement case: positions and widths recomputed)."""
        return gamma.pattern(x, rad, strain=1e-5 * (i % 100), size_nm=60.0)

    t_dense = _best_of(dense, 20)
    t_ours = _best_of(ours, 200)
    phases = [Crystal.builtin(n) for n in ("CsPbI3-alpha", "CsPbI3-beta", "CsPbI3-gamma", "CsPbI3-delta")]
    for p in phases:
        p.pattern(x, rad)

    def four(i: int) -> None:
        """One pattern of each of the four CsPbI3 phases."""
        for p in phases:
            p.pattern(x, rad, strain=1e-5 * (i % 100), size_nm=60.0)

    t_four = _best_of(four, 50)
    print(f"gamma-CsPbI3, 5000-point grid, Cu Ka doublet: {centres.size} peak lines")
    print(f"  dense numpy baseline (Gaussian per line, full grid): {t_dense * 1e3:8.3f} ms/pattern")
    print(f"  Crystal.pattern (windowed pseudo-Voigt, strain varied): {t_ours * 1e3:8.3f} ms/pattern")
    print(f"  ratio Crystal.pattern / baseline: {t_ours / t_dense:.3f}  (speed-up x{t_dense / t_ours:.1f})")
    print(f"  absolute: {1.0 / t_ours:8.0f} gamma patterns/s")
    print(f"  four CsPbI3 phases per evaluation: {t_four * 1e3:.3f} ms -> {4.0 / t_four:.0f} phase patterns/s "
          f"({1.0 / t_four:.0f} four-phase sets/s)")


if __name__ == "__main__":
    main()
