"""Figures of a derived run (PNG, matplotlib Agg): what a scientist looks at after an in-situ run.

`write_report(run, out_dir)` reads the derived run back from the catalog (plain Tiled client) and, through its
start document's ``derived_from``, the raw run (its ``xrd`` stream for the 2θ map, read with
`hotstage.acquisition.coordinates.read_stream` so the 2θ axis is a coordinate; its ``segments`` stream for the
program's heating / hold / cooling segments as they ran). It writes:

* ``xrd_map.png`` — intensity (log colour scale) vs 2θ and experiment time, every pattern in acquisition order
  on a continuous time axis with the sample temperature profile beside it (holds shaded), and the same patterns
  on a temperature axis in one panel per direction (heating, cooling; rows sorted by temperature, cell edges
  halfway between neighbouring temperatures).
* ``phase_fractions.png`` — weight fraction of each phase (≥ 1 wt % somewhere) vs experiment time with ±1 s.u.
  shaded bands, segments shaded (heating / hold / cooling) and the sample temperature on the panel above.
* ``thz_derivative.png`` — heat maps of −d²A/dν² referenced to the first spectra (static ZIF bands removed) vs
  wavenumber and temperature, heating and cooling apart (rows sorted by temperature), hold spectra vs time; the
  Zn–I bands at 135 and 275 cm⁻¹ marked and labelled; the Zn–I signal/σ vs time with the 3σ line.
* ``pl.png`` — sample temperature, integrated intensity (log axis; × where the band fit was not accepted;
  values ≤ 0 cannot be shown), centre and FWHM (accepted fits, ±1 s.u.) vs experiment time, segments shaded.

Each figure is built by a ``*_figure`` function returning the matplotlib Figure (tests inspect the axes).
Event direction: the raw run's ``segments`` stream (one event per finished segment: start time and duration
in experiment seconds, kind code ramp 0 / hold 1 / cool 2 — `hotstage.plans.insitu.SEGMENT_KIND_CODES`);
without it, `hotstage.analysis.derivatives.monotone_segments` on the furnace setpoint (1 °C tolerance).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hotstage.analysis.derivatives import monotone_segments

__all__ = ["write_report", "REPORT_FILES", "Segments", "xrd_map_figure", "phase_figure", "thz_figure",
           "pl_figure", "segments_of"]

REPORT_FILES = ("xrd_map.png", "phase_fractions.png", "thz_derivative.png", "pl.png")
MIN_FRACTION_SHOWN = 0.01
ZNI_BANDS_CM = (135.0, 275.0)
"""Zn–I stretching bands of the ZIF glass's Zn–I tetrahedra (the live THz analysis' bands, analysis.live)."""
HEATING, HOLD, COOLING = 1, 0, -1
KIND_CODE_DIRECTION = {0: HEATING, 1: HOLD, 2: COOLING}
DIRECTION_STYLE = {HEATING: ("heating", "#d62728", 0.08), HOLD: ("hold", "0.5", 0.18),
                   COOLING: ("cooling", "#1f77b4", 0.08)}


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (files only, no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


@dataclass(frozen=True)
class Segments:
    """The program's segments as they ran: start and end in experiment seconds, direction (+1, 0 hold, −1)."""

    start_s: np.ndarray
    end_s: np.ndarray
    direction: np.ndarray

    def of(self, t: np.ndarray) -> np.ndarray:
        """Direction of each time (the segment containing it; before the first: the first, after the last: the
        last). Ties at a boundary go to the later segment, so the event that ends a ramp at its target and
        starts the hold counts as the hold's."""
        idx = np.clip(np.searchsorted(self.start_s, np.asarray(t, dtype=float), side="right") - 1, 0,
                      len(self.start_s) - 1)
        return self.direction[idx]


def segments_of(raw: Any) -> Segments | None:
    """The raw run's `segments` stream as `Segments` (None when the run has none)."""
    if raw is None or "segments" not in raw:
        return None
    ds = raw["segments"].read()
    if "segment_start_s" not in ds or ds["segment_start_s"].size == 0:
        return None
    start = np.asarray(ds["segment_start_s"].values, dtype=float)
    order = np.argsort(start)
    end = start + np.asarray(ds["segment_duration_s"].values, dtype=float)
    codes = np.asarray(ds["segment_kind_code"].values).astype(int)
    direction = np.array([KIND_CODE_DIRECTION.get(int(c), HEATING) for c in codes])
    return Segments(start[order], end[order], direction[order])


def _setpoint_directions(setpoint: np.ndarray) -> np.ndarray:
    """+1 heating, −1 cooling per point (from the setpoint's monotone runs; holds join the run before)."""
    out = np.ones(setpoint.size, dtype=int)
    for seg in monotone_segments(setpoint, tolerance_C=1.0):
        part = setpoint[seg]
        out[seg] = COOLING if part.size > 1 and part[-1] < part[0] else HEATING
    return out


def _directions(table: dict[str, np.ndarray], segments: Segments | None) -> np.ndarray:
    """Direction per row: from the segments by `clock_elapsed`, else from the setpoint."""
    if segments is not None and "clock_elapsed" in table:
        return segments.of(table["clock_elapsed"])
    return _setpoint_directions(np.asarray(table["furnace_setpoint"], dtype=float))


def _table(run: Any, stream: str) -> dict[str, np.ndarray]:
    """A stream's columns as numpy arrays (empty dict if the stream is absent)."""
    if run is None or stream not in run:
        return {}
    ds = run[stream].read()
    return {k: np.asarray(ds[k].values) for k in ds.data_vars}


def _shade_segments(ax: Any, segments: Segments | None, *, minutes: bool = True, label: bool = True) -> None:
    """Shade each segment (heating red, hold grey, cooling blue) across the axes' x range (time)."""
    if segments is None:
        return
    k = 60.0 if minutes else 1.0
    seen: set[int] = set()
    for a, b, d in zip(segments.start_s, segments.end_s, segments.direction):
        name, color, alpha = DIRECTION_STYLE[int(d)]
        ax.axvspan(a / k, b / k, color=color, alpha=alpha, lw=0,
                   label=f"{name} segment" if label and int(d) not in seen else None)
        seen.add(int(d))


def _edges(centres: np.ndarray, max_half: float | None = None) -> np.ndarray:
    """Cell edges for sorted centres: halfway between neighbours, the ends mirrored; strictly increasing."""
    c = np.asarray(centres, dtype=float)
    if c.size == 1:
        h = max_half or 0.5
        return np.array([c[0] - h, c[0] + h])
    mid = 0.5 * (c[1:] + c[:-1])
    e = np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])
    for i in range(1, e.size):  # equal temperatures: give the later row a sliver rather than a negative cell
        e[i] = max(e[i], e[i - 1] + 1e-6)
    return e


def _positive_norm(img: np.ndarray) -> Any:
    """Log colour scale from the 1st to the 99.9th percentile of the positive values."""
    from matplotlib.colors import LogNorm

    pos = img[np.isfinite(img) & (img > 0)]
    if pos.size == 0:
        return LogNorm(1.0, 10.0)
    lo, hi = np.percentile(pos, [1.0, 99.9])
    return LogNorm(max(lo, 1e-12), max(hi, lo * 1.001))


def xrd_map_figure(xrd: Any, segments: Segments | None, title: str = "") -> Any:
    """2θ–time and 2θ–temperature intensity maps of the raw `xrd` stream (`read_stream` Dataset)."""
    plt = _pyplot()
    counts = xrd["xrd_counts"]
    tth = np.asarray(counts["two_theta"].values, dtype=float)
    img = np.asarray(counts.values, dtype=float)
    t_s = np.asarray(xrd["clock_elapsed"].values, dtype=float)
    temp = np.asarray(xrd["exposure_sample_temperature_mid"].values if "exposure_sample_temperature_mid" in xrd
                      else xrd["furnace_sample_temperature"].values, dtype=float)
    table = {"clock_elapsed": t_s, "furnace_setpoint": np.asarray(xrd["furnace_setpoint"].values, dtype=float)}
    direction = _directions(table, segments)
    norm = _positive_norm(img)
    fig = plt.figure(figsize=(16, 6.5), constrained_layout=True)
    gs = fig.add_gridspec(1, 4, width_ratios=[3, 1.1, 3, 3])
    ax_t = fig.add_subplot(gs[0])
    ax_p = fig.add_subplot(gs[1], sharey=ax_t)
    ax_h = fig.add_subplot(gs[2])
    ax_c = fig.add_subplot(gs[3], sharex=ax_h)
    # continuous time axis: each pattern's cell reaches at most one median acquisition step, so gaps (no
    # acquisition) stay blank instead of being filled by the neighbouring pattern
    t_min = t_s / 60.0
    step = np.median(np.diff(t_min)) if t_min.size > 1 else 1.0
    e = _edges(t_min)
    lower = np.maximum(e[:-1], t_min - step)
    upper = np.minimum(e[1:], t_min + step)
    tth_edges = _edges(tth)
    for i in range(t_min.size):
        mesh = ax_t.pcolormesh(tth_edges, [lower[i], upper[i]], img[i:i + 1], norm=norm, cmap="viridis",
                               shading="flat")
    ax_t.set_xlabel("2θ (°)")
    ax_t.set_ylabel("experiment time (min) ↑")
    ax_t.set_title("all patterns, acquisition order")
    ax_t.set_xlim(tth[0], tth[-1])
    # temperature profile beside it
    for d in (HEATING, HOLD, COOLING):
        m = direction == d
        if np.any(m):
            name, color, _ = DIRECTION_STYLE[d]
            ax_p.plot(temp[m], t_min[m], "o", color=color, ms=3.5, label=name)
    ax_p.plot(temp, t_min, "-", color="0.3", lw=0.8)
    if segments is not None:
        for a, b, d in zip(segments.start_s, segments.end_s, segments.direction):
            name, color, alpha = DIRECTION_STYLE[int(d)]
            ax_p.axhspan(a / 60, b / 60, color=color, alpha=alpha, lw=0)
            ax_t.axhline(a / 60, color="w", lw=0.5, ls=":")
            if int(d) == HOLD:
                ax_t.axhspan(a / 60, b / 60, color=color, alpha=alpha, lw=0)
                n_in = int(np.count_nonzero((t_s >= a) & (t_s < b)))
                ax_t.text(0.5, (a + b) / 120, f"hold: {n_in} pattern(s) in the hold", transform=ax_t.get_yaxis_transform(), ha="center",
                          va="center", fontsize=8, color="0.2")
                ax_p.text(0.03, (a + b) / 120, "hold", transform=ax_p.get_yaxis_transform(), va="center",
                          fontsize=8, color="0.2")
    ax_p.set_xlabel("sample T (°C)")
    ax_p.tick_params(labelleft=False)
    ax_p.legend(fontsize=7, loc="lower right")
    ax_p.grid(alpha=0.3)
    ax_p.set_title("temperature")
    # temperature axes, one per direction (holds in the heating panel would fold onto one temperature)
    for ax, d in ((ax_h, HEATING), (ax_c, COOLING)):
        m = direction == d
        name = DIRECTION_STYLE[d][0]
        if np.count_nonzero(m) == 0:
            ax.text(0.5, 0.5, f"no {name} patterns", ha="center", transform=ax.transAxes)
            ax.set_title(name)
            continue
        order = np.argsort(temp[m])
        ax.pcolormesh(tth_edges, _edges(temp[m][order]), img[m][order], norm=norm, cmap="viridis",
                      shading="flat")
        ax.set_xlabel("2θ (°)")
        ax.set_ylabel("sample temperature (°C) ↑")
        arrow = " (time runs ↓)" if d == COOLING else ""
        ax.set_title(f"{name}: {np.count_nonzero(m)} patterns vs temperature{arrow}")
        ax.set_xlim(tth[0], tth[-1])
    fig.colorbar(mesh, ax=[ax_h, ax_c], label="intensity (counts, log scale)")
    fig.suptitle(title)
    return fig


def _band(ax: Any, x: np.ndarray, y: np.ndarray, su: np.ndarray | None, color: Any, label: str,
          direction: np.ndarray) -> None:
    """A series vs time with a ±1 s.u. band; markers filled on heating, open on cooling, squares in holds.
    Line and band break where no point was taken for more than 3 median steps (e.g. a hold without cadence
    points), so nothing is drawn where nothing was measured."""
    line_y = np.asarray(y, dtype=float).copy()
    dx = np.diff(x)
    if dx.size > 1:
        gap = np.flatnonzero(dx > 3 * np.median(dx))
        x_l, line_y = np.insert(x, gap + 1, np.nan), np.insert(line_y, gap + 1, np.nan)
        su_l = None if su is None else np.insert(np.asarray(su, dtype=float), gap + 1, np.nan)
    else:
        x_l, su_l = x, su
    ax.plot(x_l, line_y, "-", color=color, lw=1.0, label=label)
    if su_l is not None:
        ok = np.isfinite(line_y) & np.isfinite(su_l)
        ax.fill_between(x_l, np.where(ok, line_y - su_l, np.nan), np.where(ok, line_y + su_l, np.nan), color=color,
                        alpha=0.25, lw=0)
    for d, marker, face in ((HEATING, "o", color), (COOLING, "o", "none"), (HOLD, "s", color)):
        m = direction == d
        if np.any(m):
            ax.plot(x[m], y[m], marker, color=color, mfc=face, ms=3.5, ls="none")


def _temperature_panel(ax: Any, x: np.ndarray, temp: np.ndarray, segments: Segments | None) -> None:
    """Sample temperature vs experiment time with the segments shaded (the heating/hold/cooling key)."""
    _shade_segments(ax, segments)
    ax.plot(x, temp, "k.-", lw=0.8, ms=3, label="sample T at mid-exposure")
    ax.set_ylabel("sample T (°C)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def phase_figure(pf: dict[str, np.ndarray], segments: Segments | None, title: str = "") -> Any:
    """Weight fractions (±1 s.u. bands) vs experiment time, segments shaded, temperature above."""
    plt = _pyplot()
    fig, (ax_t, ax) = plt.subplots(2, 1, figsize=(11, 7), sharex=True, constrained_layout=True,
                                   gridspec_kw={"height_ratios": [1, 3]})
    x = pf["clock_elapsed"] / 60.0
    direction = _directions(pf, segments)
    _temperature_panel(ax_t, x, pf["temperature"], segments)
    _shade_segments(ax, segments, label=False)
    phases = [k[3:] for k in pf if k.startswith("wf_") and not k.startswith("wf_su_")]
    colors = plt.get_cmap("tab10")
    for i, p in enumerate(sorted(phases)):
        w = pf[f"wf_{p}"]
        if not np.any(np.nan_to_num(w) >= MIN_FRACTION_SHOWN):
            continue
        su = pf.get(f"wf_su_{p}")
        _band(ax, x, 100 * w, None if su is None else 100 * su, colors(i), p, direction)
    ax.set_xlabel("experiment time (min)  —  filled ●: heating, open ○: cooling, ■: hold; bands ±1 s.u.")
    ax.set_ylabel("weight fraction of the crystalline phases (wt %)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.suptitle(title)
    return fig


def thz_figure(thz: dict[str, np.ndarray], axis: np.ndarray, n_ref: int, segments: Segments | None,
               title: str = "") -> Any:
    """−d²A/dν² heat maps vs temperature (heating, cooling) and vs time (holds); Zn–I signal/σ vs time."""
    plt = _pyplot()
    d2 = np.asarray(thz["d2_absorbance"], dtype=float)
    temp = np.asarray(thz["temperature"], dtype=float)
    x_min = thz["clock_elapsed"] / 60.0
    ref = np.nanmean(d2[:max(1, min(n_ref, len(d2)))], axis=0)
    img = -(d2 - ref)
    direction = _directions(thz, segments)
    finite = img[np.isfinite(img)]
    lim = float(np.percentile(np.abs(finite), 99.5)) if finite.size else 1.0
    has_hold = bool(np.any(direction == HOLD))
    panels = [(HEATING, "heating"), (COOLING, "cooling")] + ([(HOLD, "hold")] if has_hold else [])
    fig = plt.figure(figsize=(6 + 4.5 * len(panels), 6.5), constrained_layout=True)
    gs = fig.add_gridspec(2, len(panels) + 1, height_ratios=[3, 1.2], width_ratios=[3] * len(panels) + [3])
    mesh = None
    for j, (d, name) in enumerate(panels):
        ax = fig.add_subplot(gs[:, j] if j == 0 else gs[:, j])
        m = direction == d
        ax.set_title(f"{name}: {np.count_nonzero(m)} spectra")
        if not np.any(m):
            ax.text(0.5, 0.5, f"no {name} spectra", ha="center", transform=ax.transAxes)
            continue
        if d == HOLD:
            y, ylabel = x_min[m], "experiment time (min) ↑ (hold)"
        else:
            y, ylabel = temp[m], "sample temperature (°C) ↑"
        order = np.argsort(y, kind="stable")
        mesh = ax.pcolormesh(_edges(axis), _edges(y[order]), img[m][order], cmap="RdBu_r", vmin=-lim, vmax=lim,
                             shading="flat")
        for c in ZNI_BANDS_CM:
            ax.axvline(c, color="k", lw=0.7, ls=":")
            ax.text(c, 1.0, f" Zn–I {c:.0f}", transform=ax.get_xaxis_transform(), rotation=90, va="top",
                    ha="right", fontsize=8)
        ax.set_xlabel("wavenumber (cm⁻¹)")
        ax.set_ylabel(ylabel)
    if mesh is not None:
        fig.colorbar(mesh, ax=fig.axes, label="−Δ d²A/dν² vs first spectra (cm²)", location="left", shrink=0.8)
    ax_tp = fig.add_subplot(gs[0, -1])
    _temperature_panel(ax_tp, x_min, temp, segments)
    ax2 = fig.add_subplot(gs[1, -1], sharex=ax_tp)
    _shade_segments(ax2, segments, label=False)
    snr = thz.get("zni_snr")
    if snr is not None:
        _band(ax2, x_min, snr, None, "C3", "Zn–I signal / σ", direction)
        ax2.axhline(3.0, color="k", lw=0.8, ls=":", label="3σ")
    ax2.set_xlabel("experiment time (min)")
    ax2.set_ylabel("Zn–I / σ")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7)
    fig.suptitle(title + "\n−d²A/dν² relative to the first spectra (static ZIF bands removed)")
    return fig


def pl_figure(pl: dict[str, np.ndarray], segments: Segments | None, title: str = "") -> Any:
    """Temperature, integrated intensity (log), centre and FWHM vs experiment time; segments shaded."""
    plt = _pyplot()
    fig, axes = plt.subplots(4, 1, figsize=(9, 10), sharex=True, constrained_layout=True,
                             gridspec_kw={"height_ratios": [1, 2, 1.5, 1.5]})
    x = pl["clock_elapsed"] / 60.0
    direction = _directions(pl, segments)
    _temperature_panel(axes[0], x, pl["temperature"], segments)
    ok = np.asarray(pl.get("fit_success", np.ones(x.size)), dtype=bool)
    inten = np.asarray(pl["integrated_intensity"], dtype=float)
    pos = np.isfinite(inten) & (inten > 0)
    _shade_segments(axes[1], segments, label=False)
    _band(axes[1], x[pos], inten[pos], None, "C2", "integrated intensity", direction[pos])
    bad = pos & ~ok
    if np.any(bad):
        axes[1].plot(x[bad], inten[bad], "x", color="k", ms=5, label="band fit not accepted")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("integrated intensity\n(counts·nm, log)")
    for ax, key, color, label in ((axes[2], "centre_nm", "C0", "centre (nm)"), (axes[3], "fwhm_nm", "C1",
                                                                               "FWHM (nm)")):
        _shade_segments(ax, segments, label=False)
        su = pl.get(f"{key}_su")
        _band(ax, x[ok], pl[key][ok], None if su is None else su[ok], color, label, direction[ok])
        ax.set_ylabel(label + "\n(accepted fits)")
    for ax in axes[1:]:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="best")
    axes[-1].set_xlabel("experiment time (min)  —  filled ●: heating, open ○: cooling, ■: hold")
    fig.suptitle(title)
    return fig


def _raw_run(run: Any, start: dict[str, Any], raw: Any | None) -> Any | None:
    """The raw run the derived run was made from: `raw` if given, else looked up beside it in the catalog."""
    if raw is not None:
        return raw
    parent = getattr(run, "parent", None)
    try:
        return parent[start["derived_from"]] if parent is not None else None
    except KeyError:
        return None


def write_report(run: Any, out_dir: str | os.PathLike[str], *, raw: Any | None = None) -> list[Path]:
    """Write the report figures of a derived run into `out_dir` (created); returns the files written.

    `raw` is the raw run (default: the catalog entry named by the derived start's ``derived_from``); without
    it the XRD map is left out and heating/cooling come from the setpoint."""
    from hotstage.acquisition.coordinates import read_stream

    start = run.metadata.get("start", {})
    if "derived_from" not in start:
        raise ValueError(f"run {start.get('uid')} is not a derived run")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    raw = _raw_run(run, start, raw)
    segments = segments_of(raw)
    sample = (start.get("sample") or {}).get("name", "")
    title = f"{sample}  —  raw run {str(start['derived_from'])[:8]}, derived {str(start['uid'])[:8]}"
    figures: list[tuple[str, Any]] = []
    if raw is not None and "xrd" in raw:
        xrd = read_stream(raw, "xrd")
        if xrd.sizes.get("time", 0):
            figures.append((REPORT_FILES[0], xrd_map_figure(xrd, segments, title)))
    pf = _table(run, "phase_fractions")
    if pf and pf["temperature"].size:
        figures.append((REPORT_FILES[1], phase_figure(pf, segments, title)))
    thz = _table(run, "thz_derivative")
    if thz and thz["temperature"].size:
        conf = run["thz_derivative"].metadata.get("configuration", {}).get("thz_derivative", {})
        axis = np.asarray(conf.get("data", {}).get("wavenumber", np.arange(thz["d2_absorbance"].shape[1])),
                          dtype=float)
        n_ref = int((start.get("parameters") or {}).get("zni_reference_spectra", 3))
        figures.append((REPORT_FILES[2], thz_figure(thz, axis, n_ref, segments, title)))
    pl = _table(run, "pl_fit")
    if pl and pl["temperature"].size:
        figures.append((REPORT_FILES[3], pl_figure(pl, segments, title)))
    written: list[Path] = []
    for name, fig in figures:
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(out / name)
    return written
