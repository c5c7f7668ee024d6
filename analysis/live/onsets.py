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
  intensity over the whole run (``pl_max_heating_C``: the same over the first heating part only, i.e. up to the
  maximum temperature reached).

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

__all__ = ["SummaryBuilder", "SUMMARY_KEYS"]

NAN = float("nan")
SUMMARY_KEYS = (
    "active_onset_C", "zni_onset_C", "pl_max_C", "pl_max_heating_C", "pl_max_intensity", "max_active_fraction",
    "max_temperature_C", "n_phase_fractions", "n_thz_derivative", "n_pl_fit", "errors",
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
        if pt.size:
            turn = int(np.argmax(pt)) + 1  # first heating part: up to the highest temperature reached
            out["pl_max_heating_C"] = _argmax(pt[:turn], ii[:turn])[0]
        else:
            out["pl_max_heating_C"] = NAN
        out["max_active_fraction"] = float(np.nanmax(act)) if act.size and np.any(np.isfinite(act)) else NAN
        allt = np.concatenate([xt, tt, pt])
        out["max_temperature_C"] = float(np.nanmax(allt)) if allt.size and np.any(np.isfinite(allt)) else NAN
        for s in ("phase_fractions", "thz_derivative", "pl_fit"):
            out[f"n_{s}"] = int(self.counts.get(s, 0))
        out["errors"] = int(self.errors)
        for ph in p.phases:
            out[f"final_wf_{ph}"] = float(self.last_fractions.get(ph, NAN))
        return out


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
