"""Speed and accuracy of live phase quantification (analysis.phase_quant) on a simulated ramp, single core.

Data: `XRDSynthesizer` restricted to the four CsPbI3 polymorphs (δ, γ, β, α — "4 crystalline phases + glass +
background"), default 5000-point Cu Kα axis, the default 40/60 sample ramped 25 → 350 → 25 °C at 10 °C/min,
`--patterns` patterns (2 s exposure each). Fitted sequentially, warm-started (the first fit is cold), with δ, γ, β,
α offered. Baseline: the same model fitted cold by `scipy.optimize.least_squares` over ALL parameters (Chebyshev
background, halo amplitudes/Q/FWHM, scales, strains, widths, zero shift; trust-region reflective with bounds,
2-point Jacobian, x_scale="jac") from a generic start (flat background at the median, scales giving the strongest
line of each phase a quarter of the observed peak height, zero strain, 50 nm), with phase patterns rendered from
scratch per evaluation (`PhaseQuantifier.exact_phase_pattern`). Accuracy = max |W_fit − W_true| over phases
(truth renormalised over the four phases). The warm rate is the median of `--repeats` passes over the ramp, each
with a new quantifier (one pass varies by ±10–25 % on a shared 2-core machine); like a live analysis, a pass keeps
the fitted numbers, not the fitted curves. The warm rate per second of the process's CPU time is printed as well
(the wall rate on a shared machine counts time other processes had the core). Run: `python benchmarks/phase_quant.py [--patterns N] [--baseline K]
[--repeats R]`.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy.optimize import least_squares  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hotstage.analysis.crystal import Crystal  # noqa: E402
from hotstage.analysis.phase_quant import PhaseQuantifier  # noqa: E402
from hotstage.simulated.sample import CompositeSample, ramp  # noqa: E402
from hotstage.simulated.synthesis import XRDSynthesizer  # noqa: E402

PHASES = ("CsPbI3-delta", "CsPbI3-gamma", "CsPbI3-beta", "CsPbI3-alpha")


def make_ramp(n: int, seed: int = 1) -> tuple[XRDSynthesizer, list[np.ndarray], list[dict[str, float]]]:
    """n patterns along 25 → 350 → 25 °C at 10 °C/min with their renormalised true weight fractions."""
    synth = XRDSynthesizer(phases={p: Crystal.builtin(p) for p in PHASES})
    rng = np.random.default_rng(seed)
    sample = CompositeSample()
    temps = np.concatenate([np.linspace(25.0, 350.0, n // 2 + 1)[1:], np.linspace(350.0, 25.0, n - n // 2 + 1)[1:]])
    patterns, truths = [], []
    for t in temps:
        ramp(sample, float(t), 10.0)
        patterns.append(synth(sample.state, 2.0, rng))
        tr = synth.last_truth
        total = sum(tr[f"wf_{p}"] for p in PHASES)
        truths.append({p: tr[f"wf_{p}"] / total for p in PHASES})
    return synth, patterns, truths


def max_error(wf: dict[str, float], truth: dict[str, float]) -> float:
    """Largest absolute weight-fraction error over the phases."""
    return max(abs(wf[p] - truth[p]) for p in PHASES)


def baseline_fit(q: PhaseQuantifier, y: np.ndarray) -> tuple[dict[str, float], int]:
    """Full least-squares fit of every parameter (linear ones included) from a generic start."""
    nb = q.background_basis.shape[0]
    bg_rows = q.background_basis
    crystals = q.phases
    zmv = np.array([c.zmv for c in crystals])
    y0 = q.width_start
    w = 1.0 / np.sqrt(np.maximum(y, 1.0))
    med = float(np.median(y))
    height = float(y.max() - med)
    unit = [q.exact_phase_pattern(i, 0.0, y0).max() for i in range(len(crystals))]
    # parameter vector: bg(nb) | halo amp(3) | halo q(3) | halo w(3) | log-free scales(4) | eps(4) | Y(4) | zero
    x0 = np.concatenate([[med], np.zeros(nb - 1), np.full(3, 0.1 * med), np.array([1.09, 2.40, 3.49]),
                         np.array([0.45, 0.75, 0.9]), [0.25 * height / u for u in unit], np.zeros(4),
                         np.full(4, y0), [0.0]])
    lo = np.concatenate([np.full(nb, -np.inf), np.zeros(3), np.array([0.99, 2.30, 3.39]), np.array([0.27, 0.45, 0.54]),
                         np.zeros(4), np.full(4, -0.03), np.full(4, q.width_bounds[0]), [-0.3]])
    hi = np.concatenate([np.full(nb, np.inf), np.full(3, np.inf), np.array([1.19, 2.50, 3.59]),
                         np.array([0.675, 1.125, 1.35]), np.full(4, np.inf), np.full(4, 0.03),
                         np.full(4, q.width_bounds[1]), [0.3]])
    x0 = np.clip(x0, lo + 1e-12, hi - 1e-12)

    def model(p: np.ndarray) -> np.ndarray:
        """Background + halos + Σ s·pattern(ε, Y, zero), phases rendered from scratch."""
        out = p[:nb] @ bg_rows
        out = out + p[nb:nb + 3] @ q.halo_shapes(p[nb + 3:nb + 6], p[nb + 6:nb + 9], p[-1])
        k = nb + 9
        for i in range(len(crystals)):
            if p[k + i] > 0.0:
                out = out + p[k + i] * q.exact_phase_pattern(i, p[k + 4 + i], p[k + 8 + i], p[-1])
        return out

    res = least_squares(lambda p: (model(p) - y) * w, x0, bounds=(lo, hi), x_scale="jac", method="trf",
                        max_nfev=60)
    s = res.x[nb + 9:nb + 13]
    wf = s * zmv / float(s @ zmv) if s @ zmv > 0 else np.zeros(4)
    return dict(zip(PHASES, map(float, wf))), int(res.nfev)


def warm_pass(crystals: list[Crystal], synth: XRDSynthesizer, patterns: list[np.ndarray]
              ) -> tuple[float, float, list[dict], float]:
    """One sequential pass with a new quantifier: cold first fit (ms), warm patterns/s, per pattern what the
    accuracy and the statistics need (a live analysis keeps no fitted curves either), and the warm patterns per
    second of this process's CPU time (on a shared machine the wall rate also counts time other processes ran)."""
    q = PhaseQuantifier(crystals, synth.axis, synth.radiation, caglioti=synth.caglioti, microstrain=synth.microstrain)
    kept = []
    t0 = time.perf_counter()
    r = q.fit(patterns[0])
    t1 = time.perf_counter()
    c1 = time.process_time()
    kept.append(_summary(r))
    for y in patterns[1:]:
        kept.append(_summary(q.fit(y)))
    t2 = time.perf_counter()
    c2 = time.process_time()
    return 1e3 * (t1 - t0), (len(patterns) - 1) / (t2 - t1), kept, (len(patterns) - 1) / max(c2 - c1, 1e-9)


def _summary(r) -> dict:
    """The parts of a QuantResult the benchmark reports."""
    return {"wf": r.weight_fractions, "it": r.n_iterations, "ev": r.n_evaluations, "conv": r.converged,
            "reseeded": r.reseeded}


def main(argv: list[str] | None = None) -> None:
    """Print warm patterns/s, cold-baseline patterns/s, their ratio and the accuracy of both."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--patterns", type=int, default=200)
    ap.add_argument("--baseline", type=int, default=5, help="patterns fitted by the full least-squares baseline")
    ap.add_argument("--repeats", type=int, default=5,
                    help="warm passes over the ramp, each with a new quantifier (the median is reported)")
    args = ap.parse_args(argv)
    synth, patterns, truths = make_ramp(args.patterns)
    crystals = [Crystal.builtin(p) for p in PHASES]
    q = PhaseQuantifier(crystals, synth.axis, synth.radiation, caglioti=synth.caglioti, microstrain=synth.microstrain)

    passes = [warm_pass(crystals, synth, patterns) for _ in range(max(args.repeats, 1))]
    rates = sorted(p[1] for p in passes)
    warm_rate = float(np.median(rates))
    cpu_rate = float(np.median([p[3] for p in passes]))
    first_ms, _, kept, _ = passes[0]  # every pass fits the same patterns the same way
    warm = kept[1:]
    errs = np.array([max_error(k["wf"], t) for k, t in zip(kept, truths)])
    print(f"patterns: {len(patterns)} x {synth.axis.size} points, phases offered: {', '.join(PHASES)}")
    print(f"warm sequential: {warm_rate:8.1f} patterns/s median of {len(rates)} passes (range {rates[0]:.0f}-"
          f"{rates[-1]:.0f}; {1e3 / warm_rate:.2f} ms each; first, cold: {first_ms:.0f} ms); mean iterations "
          f"{np.mean([k['it'] for k in warm]):.2f}, evaluations {np.mean([k['ev'] for k in warm]):.2f}, "
          f"not converged {sum(not k['conv'] for k in warm)}, re-scanned {sum(k['reseeded'] for k in warm)}")
    print(f"warm sequential per CPU second: {cpu_rate:8.1f} patterns/s median (process time; the wall rate above "
          f"is lower when other processes share the cores, load average {os.getloadavg()[0]:.1f})")
    print(f"warm accuracy: max |dW| = {100 * errs.max():.2f} wt % over all {len(patterns)} patterns "
          f"(mean {100 * errs.mean():.2f}, rms {100 * np.sqrt(np.mean(errs ** 2)):.2f})")

    idx = np.linspace(0, len(patterns) - 1, args.baseline).round().astype(int)
    # our own cold fit on the same subset, for reference
    t3 = time.perf_counter()
    ours_cold = [q.fit(patterns[i], warm_start=False) for i in idx]  # (q: a quantifier of its own)
    t4 = time.perf_counter()
    err_ours_cold = max(max_error(r.weight_fractions, truths[i]) for r, i in zip(ours_cold, idx))
    base, nfev = [], []
    t5 = time.perf_counter()
    for i in idx:
        wf, n = baseline_fit(q, patterns[i])
        base.append(wf)
        nfev.append(n)
    t6 = time.perf_counter()
    base_rate = len(idx) / (t6 - t5)
    err_base = max(max_error(wf, truths[i]) for wf, i in zip(base, idx))
    print(f"cold (this method) on {len(idx)} patterns: {len(idx) / (t4 - t3):8.2f} patterns/s, "
          f"max |dW| = {100 * err_ours_cold:.2f} wt %")
    print(f"cold full least-squares baseline on {len(idx)} patterns: {base_rate:8.3f} patterns/s "
          f"(mean {np.mean(nfev):.0f} function evaluations, capped at 60), max |dW| = {100 * err_base:.2f} wt %")
    print(f"ratio warm / baseline: {warm_rate / base_rate:.0f}x")


if __name__ == "__main__":
    main()
