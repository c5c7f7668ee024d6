"""Synthesis speed of the simulated instruments, each figure a ratio against baselines measured in the same run.

Baselines: (1) numpy Poisson sampling of a 5000-point array (the floor: noise alone); (2) a naive XRD pattern
built with `Crystal.pattern` per phase on every call (no per-synthesizer peak cache, default window).
Run: `python benchmarks/synthesis.py [--seconds S]`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hotstage.analysis.crystal import Crystal  # noqa: E402
from hotstage.simulated.sample import CRYSTALLINE_PHASES, CompositeSample, hold, ramp  # noqa: E402
from hotstage.simulated.synthesis import PLSynthesizer, THzSynthesizer, XRDSynthesizer  # noqa: E402


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of fn over about `seconds` of wall time (after one warm-up call)."""
    fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        el = time.perf_counter() - t0
        if el >= seconds:
            return n / el


def main(argv: list[str] | None = None) -> None:
    """Print patterns/s for XRD (default state and a mixed-phase state), THz and PL, with ratios."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=1.0, help="wall time per measurement")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    default = CompositeSample().state
    s = CompositeSample()
    ramp(s, 250.0, 10.0, 5.0)
    hold(s, 60.0)
    mixed = s.state  # δ + γ + β + glass
    xrd, thz, pl = XRDSynthesizer(), THzSynthesizer(), PLSynthesizer()
    crystals = {p: Crystal.builtin(p) for p in CRYSTALLINE_PHASES}
    lam = np.full(5000, 500.0)

    def naive() -> np.ndarray:
        y = np.zeros_like(xrd.axis)
        for p, c in crystals.items():
            w = default.weight_fractions[p]
            if w > 1e-6:
                y += c.pattern(xrd.axis, xrd.radiation, strain=default.strain[p],
                               size_nm=default.crystallite_size_nm[p], microstrain=xrd.microstrain,
                               caglioti=xrd.caglioti, eta=None, scale=w / c.zmv)
        return rng.poisson(np.maximum(y, 0.0)).astype(np.float64)

    base_poisson = rate(lambda: rng.poisson(lam).astype(np.float64), args.seconds)
    base_naive = rate(naive, args.seconds)
    r_default = rate(lambda: xrd(default, 1.0, rng), args.seconds)
    r_mixed = rate(lambda: xrd(mixed, 1.0, rng), args.seconds)
    r_thz = rate(lambda: thz(default, 1.0, rng), args.seconds)
    r_pl = rate(lambda: pl(default, 1.0, rng), args.seconds)
    print(f"baseline numpy Poisson, 5000 points     : {base_poisson:10.0f} /s")
    print(f"baseline naive XRD (Crystal.pattern)    : {base_naive:10.0f} /s")
    print(f"XRD 5000 pts, default (as-milled) state : {r_default:10.0f} /s  ({1e3 / r_default:.2f} ms)  "
          f"= {r_default / base_poisson:.3f} x Poisson, {r_default / base_naive:.2f} x naive")
    print(f"XRD 5000 pts, mixed δ+γ+β state         : {r_mixed:10.0f} /s  ({1e3 / r_mixed:.2f} ms)  "
          f"= {r_mixed / base_poisson:.3f} x Poisson")
    print(f"THz {thz.axis.size} pts                          : {r_thz:10.0f} /s  = {r_thz / base_poisson:.2f} x Poisson")
    print(f"PL  {pl.axis.size} pts                         : {r_pl:10.0f} /s  = {r_pl / base_poisson:.2f} x Poisson")
    n, t0 = 0, time.perf_counter()
    s = CompositeSample()
    while n < 4500:
        s.advance(1.0, 25.0 + 0.0722 * n)
        n += 1
    r_advance = n / (time.perf_counter() - t0)
    print(f"sample.advance (1 s steps)              : {r_advance:10.0f} /s  = {r_advance / base_poisson:.2f} x Poisson"
          f"  (a 4500 s ramp in {4500 / r_advance:.3f} s)")


if __name__ == "__main__":
    main()
