"""Rietveld-style fit figure (PNG) for the offline commands `hotstage calibrate` and `hotstage quantify`.

The layout crystallographers expect (GSAS-II, FullProf, TOPAS plots): observed intensities as points, the
calculated pattern as a line over them, the background as a thin line, one row of reflection tick marks per phase
(labelled, below the pattern) and the difference curve (observed − calculated) offset below the ticks on the same
intensity scale. matplotlib with the Agg backend (no display needed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

_TICK_COLOURS = ("tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


def plot_fit(path: str | Path, two_theta: ArrayLike, observed: ArrayLike, calculated: ArrayLike, *,
             background: ArrayLike | None = None, ticks: Mapping[str, ArrayLike] | None = None,
             title: str = "", subtitle: str = "", excluded: Sequence[tuple[float, float]] = (),
             wavelength: float | None = None) -> Path:
    """Write the fit figure to `path` (PNG) and return the path.

    `ticks` maps a phase label to its reflection positions (deg 2θ); rows are drawn in the given order.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    x = np.asarray(two_theta, dtype=float)
    yo = np.asarray(observed, dtype=float)
    yc = np.asarray(calculated, dtype=float)
    diff = yo - yc
    ticks = dict(ticks or {})
    top = float(max(yo.max(), yc.max()))
    low = float(min(yo.min(), yc.min(), 0.0))
    span = max(top - low, 1e-9)
    row = 0.045 * span
    tick_top = low - 0.02 * span
    diff_zero = tick_top - row * (len(ticks) + 0.5) - max(float(diff.max()), 0.0) - 0.02 * span

    fig, ax = plt.subplots(figsize=(10, 6), dpi=110)
    ax.plot(x, yo, "o", ms=2.2, mfc="none", mec="tab:blue", mew=0.6, label="observed")
    ax.plot(x, yc, "-", color="tab:red", lw=0.9, label="calculated")
    if background is not None:
        ax.plot(x, np.asarray(background, dtype=float), "-", color="0.5", lw=0.7, label="background")
    for k, (label, pos) in enumerate(ticks.items()):
        p = np.asarray(pos, dtype=float)
        p = p[(p >= x[0]) & (p <= x[-1])]
        y0 = tick_top - row * (k + 1)
        colour = _TICK_COLOURS[k % len(_TICK_COLOURS)]
        ax.vlines(p, y0, y0 + 0.7 * row, color=colour, lw=0.8)
        ax.text(x[-1], y0 + 0.35 * row, f" {label}", va="center", ha="left", fontsize=8, color=colour,
                clip_on=False)
    ax.plot(x, diff + diff_zero, "-", color="0.25", lw=0.7, label="observed − calculated")
    ax.axhline(diff_zero, color="0.6", lw=0.5)
    for lo, hi in excluded:
        ax.axvspan(lo, hi, color="0.85", zorder=0)
    ax.set_xlim(x[0], x[-1])
    ax.set_ylim(diff_zero + min(float(diff.min()), 0.0) - 0.03 * span, top + 0.05 * span)
    xl = "2θ (°)" + (f", λ = {wavelength:.5f} Å" if wavelength else "")
    ax.set_xlabel(xl)
    ax.set_ylabel("intensity (counts)")
    if title or subtitle:
        ax.set_title(title + ("\n" + subtitle if subtitle else ""), fontsize=10)
    ax.legend(loc="upper right", fontsize=8, frameon=False)
    fig.subplots_adjust(right=0.80)
    path = Path(path)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
