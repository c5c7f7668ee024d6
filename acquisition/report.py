"""Figures of a derived run (PNG, matplotlib Agg): what a scientist looks at after an in-situ run.

`write_report(run, out_dir)` reads the derived run back from the catalog (plain Tiled client: stream tables and the
``thz_derivative`` descriptor configuration for the wavenumber axis) and writes:

* ``phase_fractions.png`` — weight fraction of each phase offered vs temperature, heating (filled circles, solid)
  and cooling (open circles, dashed) distinguished, ±1 s.u. bars; phases that never reach 1 wt % are left out.
* ``thz_derivative.png`` — heat map of −d²A/dν² (wavenumber × acquisition, labelled with temperature), referenced
  to the first spectra of the run (the static ZIF bands removed) so the Zn–I bands at 135 and 275 cm⁻¹ stand out;
  beside it the Zn–I signal in units of its noise σ vs temperature with the 3σ line.
* ``pl.png`` — PL centre, FWHM and integrated intensity vs temperature (heating/cooling as above).

Heating and cooling are split with `hotstage.analysis.derivatives.monotone_segments` on the furnace setpoint (holds stay
with the segment they follow; 1 °C tolerance for sensor jitter), so the split does not depend on noise.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from hotstage.analysis.derivatives import monotone_segments

__all__ = ["write_report", "REPORT_FILES"]

REPORT_FILES = ("phase_fractions.png", "thz_derivative.png", "pl.png")
MIN_FRACTION_SHOWN = 0.01


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (files only, no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _table(run: Any, stream: str) -> dict[str, np.ndarray]:
    """A derived stream's columns as numpy arrays (empty dict if the stream is absent)."""
    if stream not in run:
        return {}
    ds = run[stream].read()
    return {k: np.asarray(ds[k].values) for k in ds.data_vars}


def _directions(setpoint: np.ndarray) -> np.ndarray:
    """+1 heating, −1 cooling per point (from the setpoint's monotone runs; holds join the run before)."""
    out = np.ones(setpoint.size, dtype=int)
    for seg in monotone_segments(setpoint, tolerance_C=1.0):  # neighbouring runs share their turning point
        part = setpoint[seg]
        out[seg] = -1 if part.size > 1 and part[-1] < part[0] else 1
    return out


def _split_plot(ax: Any, t: np.ndarray, y: np.ndarray, direction: np.ndarray, color: Any, label: str,
                err: np.ndarray | None = None) -> None:
    """Plot heating (filled, solid) and cooling (open, dashed) points of one series."""
    for sign, style, face in ((1, "-", color), (-1, "--", "none")):
        m = direction == sign
        if not np.any(m):
            continue
        lab = f"{label} ({'heating' if sign > 0 else 'cooling'})"
        if err is not None:
            ax.errorbar(t[m], y[m], yerr=err[m], fmt="o" + style, color=color, mfc=face, ms=3.5, lw=1.0,
                        elinewidth=0.6, capsize=0, label=lab)
        else:
            ax.plot(t[m], y[m], "o" + style, color=color, mfc=face, ms=3.5, lw=1.0, label=lab)


def _phase_figure(plt: Any, pf: dict[str, np.ndarray], title: str, path: Path) -> None:
    """Weight fractions vs temperature."""
    fig, ax = plt.subplots(figsize=(10, 5), constrained_layout=True)
    t = pf["temperature"]
    direction = _directions(pf["furnace_setpoint"])
    phases = [k[3:] for k in pf if k.startswith("wf_") and not k.startswith("wf_su_")]
    colors = plt.get_cmap("tab10")
    for i, p in enumerate(phases):
        w = pf[f"wf_{p}"]
        if not np.any(np.nan_to_num(w) >= MIN_FRACTION_SHOWN):
            continue
        _split_plot(ax, t, 100 * w, direction, colors(i), p, 100 * pf.get(f"wf_su_{p}", np.zeros_like(w)))
    ax.set_xlabel("sample temperature (°C)")
    ax.set_ylabel("weight fraction of the crystalline phases (wt %)")
    ax.set_ylim(-2, 102)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _thz_figure(plt: Any, thz: dict[str, np.ndarray], axis: np.ndarray, n_ref: int, title: str,
                path: Path) -> None:
    """Heat map of the referenced −d²A/dν² and the Zn–I signal/σ vs temperature."""
    d2 = thz["d2_absorbance"]
    t = thz["temperature"]
    ref = np.nanmean(d2[:max(1, min(n_ref, len(d2)))], axis=0)
    img = -(d2 - ref)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 5), constrained_layout=True,
                                  gridspec_kw={"width_ratios": [3, 2]})
    finite = img[np.isfinite(img)]
    lim = float(np.percentile(np.abs(finite), 99.5)) if finite.size else 1.0
    n = len(t)
    mesh = ax.pcolormesh(axis, np.arange(n), img, cmap="RdBu_r", vmin=-lim, vmax=lim, shading="nearest")
    ticks = np.linspace(0, n - 1, min(n, 10)).round().astype(int) if n else []
    ax.set_yticks(ticks)
    ax.set_yticklabels([f"{t[i]:.0f}" for i in ticks])
    for c in (135.0, 275.0):
        ax.axvline(c, color="k", lw=0.6, ls=":")
    ax.set_xlabel("wavenumber (cm⁻¹)")
    ax.set_ylabel("acquisition order ↑ (labels: sample temperature, °C)")
    ax.set_title("−d²A/dν² relative to the first spectra")
    fig.colorbar(mesh, ax=ax, label="−Δ d²A/dν² (cm²)")
    direction = _directions(thz["furnace_setpoint"])
    snr = thz.get("zni_snr")
    if snr is not None:
        _split_plot(ax2, t, snr, direction, "C3", "Zn–I signal / σ")
        ax2.axhline(3.0, color="k", lw=0.8, ls=":", label="3σ")
    ax2.set_xlabel("sample temperature (°C)")
    ax2.set_ylabel("Zn–I band amplitude / noise σ")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pl_figure(plt: Any, pl: dict[str, np.ndarray], title: str, path: Path) -> None:
    """PL centre, FWHM and integrated intensity vs temperature."""
    fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True, constrained_layout=True)
    t = pl["temperature"]
    direction = _directions(pl["furnace_setpoint"])
    _split_plot(axes[0], t, pl["centre_nm"], direction, "C0", "centre", pl.get("centre_nm_su"))
    axes[0].set_ylabel("centre (nm)")
    _split_plot(axes[1], t, pl["fwhm_nm"], direction, "C1", "FWHM", pl.get("fwhm_nm_su"))
    axes[1].set_ylabel("FWHM (nm)")
    _split_plot(axes[2], t, pl["integrated_intensity"], direction, "C2", "integrated intensity")
    axes[2].set_ylabel("integrated intensity (counts·nm)")
    axes[2].set_xlabel("sample temperature (°C)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(run: Any, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write the report figures of a derived run into `out_dir` (created); returns the files written."""
    start = run.metadata.get("start", {})
    if "derived_from" not in start:
        raise ValueError(f"run {start.get('uid')} is not a derived run")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    sample = (start.get("sample") or {}).get("name", "")
    title = f"{sample}  —  raw run {str(start['derived_from'])[:8]}, derived {str(start['uid'])[:8]}"
    written: list[Path] = []
    pf = _table(run, "phase_fractions")
    if pf and pf["temperature"].size:
        _phase_figure(plt, pf, title, out / REPORT_FILES[0])
        written.append(out / REPORT_FILES[0])
    thz = _table(run, "thz_derivative")
    if thz and thz["temperature"].size:
        conf = run["thz_derivative"].metadata.get("configuration", {}).get("thz_derivative", {})
        axis = np.asarray(conf.get("data", {}).get("wavenumber", np.arange(thz["d2_absorbance"].shape[1])),
                          dtype=float)
        n_ref = int((start.get("parameters") or {}).get("zni_reference_spectra", 3))
        _thz_figure(plt, thz, axis, n_ref, title, out / REPORT_FILES[1])
        written.append(out / REPORT_FILES[1])
    pl = _table(run, "pl_fit")
    if pl and pl["temperature"].size:
        _pl_figure(plt, pl, title, out / REPORT_FILES[2])
        written.append(out / REPORT_FILES[2])
    return written
