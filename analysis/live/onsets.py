"""The `summary` of a derived run: onsets and extrema computed at the raw run's stop from the derived series.

Definitions (each computed with `hotstage.analysis.onsets.onset`: detected at the first run of m consecutive points above
the threshold, in acquisition order, and reported as the temperature where a local least-squares line through the
signal crosses the threshold (``refine=True``, see `hotstage.analysis.onsets`); NaN when never reached):

* **Active-phase onset** (``active_onset_C``): first temperature at which the summed Hill–Howard weight fraction of
  the active phases (γ + β + α-CsPbI3 by default, normalised over the crystalline phases offered to the fit)
  exceeds ``active_threshold`` (10 wt %) for ``active_m`` (3) consecutive XRD patterns.
  (`onset(T, active_fraction, noise_sigma=1, k=active_threshold, m=active_m, refine=True)`.)
* **Zn–I onset** (``zni_onset_C``): first temperature at which the Zn–I signal — the sum over the Zn–I bands
  (135, 275 cm⁻¹) of −d²A/dν² at the band centres on the derivative referenced to the mean of the first
  ``zni_reference_spectra`` (3) spectra — exceeds ``zni_k`` (3) times its noise σ (from the band-free regions of
  the same referenced derivative, × √(number of bands)) for ``zni_m`` (3) consecutive THz spectra. The signal is
  unbiased (zero mean without a band, see `hotstage.analysis.live.parameters`), which the k·σ test assumes.
* **PL maximum** (``pl_max_C``, ``pl_max_intensity``): temperature of the PL spectrum with the largest integrated
  intensity over the whole run.  Per heating segment (issue 14: the old "up to the overall maximum" spanned
  every segment before it, so a two-cycle program reported the PL maximum at the end of the first cooling):
  ``pl_max_heating<i>_C`` (i = 1 … `MAX_HEATING_SEGMENTS`) is the same over the i-th heating segment of the PL
  events, NaN when the run has fewer; ``pl_max_heating_C`` = ``pl_max_heating1_C`` (the first heating);
  ``n_heating_segments`` counts them.  A heating segment (`heating_segments`) is a run of events whose
  temperature rises: it starts at the first event or just after the lowest point of the cooling before it
  (that point ends the cooling) and ends when the temperature has fallen more than `HEATING_TOLERANCE_C` (2 °C:
  well above the ≤ 0.5 °C scatter of mid-exposure stamps) below its running maximum, so a hold at the top
  belongs to it; a segment that rises by less than that tolerance (a hold-only or cooling-only run) is not one.

Temperatures are the analysis temperature of each event (``temperature``: the sample thermocouple by default).
Memory: only a few floats per event are kept (``array('d')``: 8 bytes each), never the spectra.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping
from typing import Any

import numpy as np

from hotstage.analysis.onsets import onset

from .parameters import AnalysisParameters

__all__ = ["SummaryBuilder", "SUMMARY_KEYS", "heating_segments", "MAX_HEATING_SEGMENTS", "HEATING_TOLERANCE_C"]

NAN = float("nan")
MAX_HEATING_SEGMENTS = 4  # per-segment PL maxima reported (pl_max_heating1_C …)
HEATING_TOLERANCE_C = 2.0  # a fall of more than this below the running maximum ends a heating segment
SUMMARY_KEYS = (
    "active_onset_C", "zni_onset_C", "pl_max_C", "pl_max_heating_C", "pl_max_intensity", "max_active_fraction",
    "max_temperature_C", "n_phase_fractions", "n_thz_derivative", "n_pl_fit", "errors",
    *(f"pl_max_heating{i}_C" for i in range(1, MAX_HEATING_SEGMENTS + 1)), "n_heating_segments",
)


class SummaryBuilder:
    """Collects the per-event scalars the summary needs and computes the summary at the raw stop."""

    def __init__(self, params: AnalysisParameters) -> None:
        """Empty series for one derived run."""
        self.params = params
        self.xrd_t, self.active = array("d"), array("d")
        self.thz_t, self.zni, self.zni_sigma = array("d"), array("d"), array("d")
        self.pl_t, self.pl_ii = array("d"), array("d")
        self.last_fractions: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.errors = 0

    def add(self, stream: str, temperature: float, data: Mapping[str, Any], error: bool) -> None:
        """Record the scalars of one derived event."""
        self.counts[stream] = self.counts.get(stream, 0) + 1
        self.errors += int(error)
        t = float(temperature)
        if stream == "phase_fractions":
            self.xrd_t.append(t)
            self.active.append(float(data.get("active_fraction", NAN)))
            if not error:
                self.last_fractions = {k[3:]: float(v) for k, v in data.items() if k.startswith("wf_") and
                                       not k.startswith("wf_su_")}
        elif stream == "thz_derivative":
            self.thz_t.append(t)
            self.zni.append(float(data.get("zni_signal", NAN)))
            self.zni_sigma.append(float(data.get("zni_sigma", NAN)))
        elif stream == "pl_fit":
            self.pl_t.append(t)
            self.pl_ii.append(float(data.get("integrated_intensity", NAN)))

    def data_keys(self) -> dict[str, dict[str, Any]]:
        """Data keys of the one summary event."""
        keys: dict[str, dict[str, Any]] = {}
        for k in SUMMARY_KEYS:
            integer = k.startswith("n_") or k == "errors"
            keys[k] = {"dtype": "integer" if integer else "number", "shape": [], "source": "analysis://summary"}
            if k.endswith("_C"):
                keys[k]["units"] = "degC"
        for p in self.params.phases:
            keys[f"final_wf_{p}"] = {"dtype": "number", "shape": [], "source": "analysis://summary"}
        return keys

    def compute(self) -> dict[str, Any]:
        """The summary event's data (module docstring for the definitions)."""
        p = self.params
        out: dict[str, Any] = {}
        xt, act = np.asarray(self.xrd_t), np.asarray(self.active)
        out["active_onset_C"] = _temp(onset(xt, act, 1.0, k=p.active_threshold, m=p.active_m, refine=True).temperature) \
            if xt.size else NAN
        tt, z, zs = np.asarray(self.thz_t), np.asarray(self.zni), np.asarray(self.zni_sigma)
        out["zni_onset_C"] = _temp(onset(tt, z, zs, k=p.zni_k, m=p.zni_m, refine=True).temperature) if tt.size else NAN
        pt, ii = np.asarray(self.pl_t), np.asarray(self.pl_ii)
        out["pl_max_C"], out["pl_max_intensity"] = _argmax(pt, ii)
        segments = heating_segments(pt)
        for i in range(1, MAX_HEATING_SEGMENTS + 1):
            a, b = segments[i - 1] if i <= len(segments) else (0, 0)
            out[f"pl_max_heating{i}_C"] = _argmax(pt[a:b], ii[a:b])[0] if b > a else NAN
        out["pl_max_heating_C"] = out["pl_max_heating1_C"]
        out["n_heating_segments"] = len(segments)
        out["max_active_fraction"] = float(np.nanmax(act)) if act.size and np.any(np.isfinite(act)) else NAN
        allt = np.concatenate([xt, tt, pt])
        out["max_temperature_C"] = float(np.nanmax(allt)) if allt.size and np.any(np.isfinite(allt)) else NAN
        for s in ("phase_fractions", "thz_derivative", "pl_fit"):
            out[f"n_{s}"] = int(self.counts.get(s, 0))
        out["errors"] = int(self.errors)
        for ph in p.phases:
            out[f"final_wf_{ph}"] = float(self.last_fractions.get(ph, NAN))
        return out


def heating_segments(temperature: Any, tol_C: float = HEATING_TOLERANCE_C) -> list[tuple[int, int]]:
    """(start, stop) index ranges (stop exclusive) of the heating segments of a temperature series in acquisition
    order (module docstring); NaN temperatures are skipped."""
    t = np.asarray(temperature, dtype=np.float64)
    segments: list[tuple[int, int]] = []
    finite = np.flatnonzero(np.isfinite(t))
    if finite.size == 0:
        return segments
    start = i_max = i_min = int(finite[0])
    heating = True

    def close(stop: int) -> None:
        if t[i_max] - float(np.nanmin(t[start:i_max + 1])) > tol_C:  # it did rise
            segments.append((start, stop))
    for i in finite[1:]:
        i = int(i)
        if heating:
            if t[i] >= t[i_max]:
                i_max = i
            elif t[i] < t[i_max] - tol_C:  # fallen below the running maximum: the heating ended
                close(i)
                heating, i_min = False, i
        else:
            if t[i] <= t[i_min]:
                i_min = i
            elif t[i] > t[i_min] + tol_C:  # risen above the running minimum: a new heating from there
                heating, start, i_max = True, i_min + 1, i
    if heating:
        close(int(t.size))
    return segments


def _temp(t: float | None) -> float:
    """None → NaN."""
    return NAN if t is None else float(t)


def _argmax(t: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    """(temperature, value) at the largest finite value, NaNs if none."""
    ok = np.isfinite(v) & np.isfinite(t)
    if not np.any(ok):
        return NAN, NAN
    i = int(np.nanargmax(np.where(ok, v, -math.inf)))
    return float(t[i]), float(v[i])
