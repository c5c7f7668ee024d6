"""The `summary` of a derived run: onsets and extrema computed at the raw run's stop from the derived series.

Every onset is reported twice, per heating segment (`hotstage.analysis.onsets`):

* ``*_onset_detected_C``: the detection temperature — the first run of m consecutive points above the threshold,
  in acquisition order, reported where a local least-squares line through the signal crosses the threshold
  (`onset(..., refine=True)`). It says when the change was first SEEN, so it moves with the size of the signal
  (a sample with more Zn–I-forming interface crosses k·σ earlier for the same kinetics).
* ``*_onset_extrapolated_C`` ± ``*_onset_extrapolated_su_C``: the extrapolated onset (ISO 11358-1 style:
  baseline ∩ tangent at the point of maximum gradient of a logistic fitted to the segment's rise,
  `extrapolated_onset`), which depends only on the shape of the rise, not on its size, so samples with the same
  kinetics and different loadings agree within the uncertainties. NaN when nothing was detected in the segment
  (no fit to noise) or the fit finds no significant rise.

Definitions of the signals:

* **Active phase** (``active_onset_*``): the summed Hill–Howard weight fraction of the active phases (γ + β +
  α-CsPbI3 by default, normalised over the crystalline phases offered to the fit). Detected where it exceeds
  ``active_threshold`` (10 wt %) for ``active_m`` (3) consecutive XRD patterns
  (`onset(T, active_fraction, noise_sigma=1, k=active_threshold, m=active_m, refine=True)`); the extrapolated
  onset is fitted without weights (σ from the residuals: the fractions' s.u.s ignore correlations and
  vanish for absent phases).
* **Zn–I** (``zni_onset_*``): the Zn–I signal — the sum over the Zn–I bands (135, 275 cm⁻¹) of −d²A/dν² at the
  band centres on the derivative referenced to the mean of the first ``zni_reference_spectra`` (3) spectra —
  detected where it exceeds ``zni_k`` (3) times its noise σ (from the band-free regions of the same referenced
  derivative, × √(number of bands)) for ``zni_m`` (3) consecutive THz spectra. The signal is unbiased (zero mean
  without a band, see `hotstage.analysis.live.parameters`), which the k·σ test assumes; in a heating segment that
  does not start with the run (a second cycle) the signal is referenced again to the mean of the segment's first
  ``zni_reference_spectra`` values (the Zn–I formed in earlier cycles stays), which are then not tested. The
  extrapolated onset is weighted by ``zni_sigma``.
* **PL maximum** (``pl_max_C``, ``pl_max_intensity``): temperature of the PL spectrum with the largest integrated
  intensity over the whole run.  Per heating segment (issue 14: the old "up to the overall maximum" spanned
  every segment before it, so a two-cycle program reported the PL maximum at the end of the first cooling):
  ``pl_max_heating<i>_C`` (i = 1 … `MAX_HEATING_SEGMENTS`) is the same over the i-th heating segment, NaN when
  the run has fewer; ``pl_max_heating_C`` = ``pl_max_heating1_C`` (the first heating).

Heating segments (`hotstage.analysis.onsets.heating_segments`, ``HEATING_TOLERANCE_C`` = 2 °C) are found per
stream on the events' furnace setpoints (the program: clean turns, the same for every modality), or on their
temperatures when an event has no setpoint (a run recorded without one).  Not on all events' temperatures
together: the sample temperatures at mid-exposure of a 10 s XRD frame and of a 1 s PL spectrum taken at one
cadence point differ by up to ~2.5 °C at 10 °C/min, which looks like a turn.  A segment starts at the first event
or just after the lowest point of the cooling before it and ends when the series has fallen more than 2 °C below
its running maximum, so a hold at the top belongs to it; a stretch that rises by less (a hold-only or cooling-only
run) is not one.  ``n_heating_segments`` is the largest count over the streams.  The first heating segment's
onsets carry the names above; those of segments i = 2 … `MAX_HEATING_SEGMENTS` the suffix ``_heating<i>``
(``zni_onset_extrapolated_heating2_C``, ``zni_onset_extrapolated_su_heating2_C``, …), NaN when the run has fewer.
A run without any heating segment has its onsets computed over all its events, as before segments existed.

Temperatures are the analysis temperature of each event (``temperature``: the sample temperature at mid-exposure by
default). Memory: only a few floats per event are kept (``array('d')``: 8 bytes each), never the spectra.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping
from typing import Any

import numpy as np

from hotstage.analysis.onsets import TURN_C, extrapolated_onset, heating_segments, onset

from .parameters import AnalysisParameters

__all__ = ["SummaryBuilder", "SUMMARY_KEYS", "ONSET_KEYS", "heating_segments", "MAX_HEATING_SEGMENTS",
           "HEATING_TOLERANCE_C"]

NAN = float("nan")
MAX_HEATING_SEGMENTS = 4  # heating segments reported one by one (pl_max_heating1_C …, *_heating2_C …)
HEATING_TOLERANCE_C = TURN_C  # a fall of more than this below the running maximum ends a heating segment
ONSET_KEYS = (
    "active_onset_detected_C", "active_onset_extrapolated_C", "active_onset_extrapolated_su_C",
    "zni_onset_detected_C", "zni_onset_extrapolated_C", "zni_onset_extrapolated_su_C",
)
"""Onset keys of the first heating segment; segment i ≥ 2 has them with ``_heating<i>`` before ``_C``."""
SUMMARY_KEYS = (
    *ONSET_KEYS,
    *(f"{k[:-2]}_heating{i}_C" for i in range(2, MAX_HEATING_SEGMENTS + 1) for k in ONSET_KEYS),
    "pl_max_C", "pl_max_heating_C", "pl_max_intensity", "max_active_fraction",
    "max_temperature_C", "n_phase_fractions", "n_thz_derivative", "n_pl_fit", "errors",
    *(f"pl_max_heating{i}_C" for i in range(1, MAX_HEATING_SEGMENTS + 1)), "n_heating_segments",
)


class SummaryBuilder:
    """Collects the per-event scalars the summary needs and computes the summary at the raw stop."""

    def __init__(self, params: AnalysisParameters) -> None:
        """Empty series for one derived run."""
        self.params = params
        self.xrd_t, self.active, self.xrd_sp = array("d"), array("d"), array("d")
        self.thz_t, self.zni, self.zni_sigma, self.thz_sp = array("d"), array("d"), array("d"), array("d")
        self.pl_t, self.pl_ii, self.pl_sp = array("d"), array("d"), array("d")
        self.last_fractions: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.errors = 0

    def add(self, stream: str, temperature: float, data: Mapping[str, Any], error: bool) -> None:
        """Record the scalars of one derived event (its furnace setpoint too, for the heating segments)."""
        self.counts[stream] = self.counts.get(stream, 0) + 1
        self.errors += int(error)
        t = float(temperature)
        setpoint = float(data.get("furnace_setpoint", NAN))
        if stream == "phase_fractions":
            self.xrd_t.append(t)
            self.xrd_sp.append(setpoint)
            self.active.append(float(data.get("active_fraction", NAN)))
            if not error:
                self.last_fractions = {k[3:]: float(v) for k, v in data.items() if k.startswith("wf_") and
                                       not k.startswith("wf_su_")}
        elif stream == "thz_derivative":
            self.thz_t.append(t)
            self.thz_sp.append(setpoint)
            self.zni.append(float(data.get("zni_signal", NAN)))
            self.zni_sigma.append(float(data.get("zni_sigma", NAN)))
        elif stream == "pl_fit":
            self.pl_t.append(t)
            self.pl_sp.append(setpoint)
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
        tt, z, zs = np.asarray(self.thz_t), np.asarray(self.zni), np.asarray(self.zni_sigma)
        pt, ii = np.asarray(self.pl_t), np.asarray(self.pl_ii)
        xseg, tseg, pseg = _segments(xt, self.xrd_sp), _segments(tt, self.thz_sp), _segments(pt, self.pl_sp)
        for i in range(1, MAX_HEATING_SEGMENTS + 1):
            out[f"pl_max_heating{i}_C"] = _argmax(pt[pseg[i - 1]], ii[pseg[i - 1]])[0] if i <= len(pseg) else NAN
            x, th = _segment(xseg, i, xt.size), _segment(tseg, i, tt.size)
            onsets = _onsets("active", xt[x], act[x], None, threshold=p.active_threshold, m=p.active_m,
                             unit_sigma=True)
            zd = z[th].copy()
            if (th.start or 0) > 0:  # a later cycle: reference the signal to the segment's first spectra
                first = np.flatnonzero(np.isfinite(zd))[:p.zni_reference_spectra]
                if first.size:
                    zd = zd - float(np.mean(zd[first]))
                    zd[first] = NAN
            onsets.update(_onsets("zni", tt[th], zd, zs[th], threshold=p.zni_k, m=p.zni_m, fit_signal=z[th]))
            out.update({k if i == 1 else f"{k[:-2]}_heating{i}_C": v for k, v in onsets.items()})
        out["pl_max_heating_C"] = out["pl_max_heating1_C"]
        out["n_heating_segments"] = max(len(xseg), len(tseg), len(pseg))
        out["pl_max_C"], out["pl_max_intensity"] = _argmax(pt, ii)
        out["max_active_fraction"] = float(np.nanmax(act)) if act.size and np.any(np.isfinite(act)) else NAN
        allt = np.concatenate([xt, tt, pt])
        out["max_temperature_C"] = float(np.nanmax(allt)) if allt.size and np.any(np.isfinite(allt)) else NAN
        for s in ("phase_fractions", "thz_derivative", "pl_fit"):
            out[f"n_{s}"] = int(self.counts.get(s, 0))
        out["errors"] = int(self.errors)
        for ph in p.phases:
            out[f"final_wf_{ph}"] = float(self.last_fractions.get(ph, NAN))
        return out


def _segments(temperature: np.ndarray, setpoint: array) -> list[slice]:
    """Heating segments of one stream: of its furnace setpoints when every event has one, else of its
    temperatures (module docstring)."""
    sp = np.asarray(setpoint, dtype=np.float64)
    series = sp if sp.size and np.all(np.isfinite(sp)) else temperature
    return heating_segments(series, HEATING_TOLERANCE_C)


def _segment(segments: list[slice], i: int, n: int) -> slice:
    """The i-th (1-based) heating segment; without any, the first is the whole series (as before segments
    existed) and the others are empty."""
    if i <= len(segments):
        return segments[i - 1]
    return slice(0, n if i == 1 and not segments else 0)


def _onsets(name: str, t: np.ndarray, signal: np.ndarray, sigma: np.ndarray | None, *, threshold: float, m: int,
            unit_sigma: bool = False, fit_signal: np.ndarray | None = None) -> dict[str, float]:
    """``<name>_onset_detected_C`` and the extrapolated onset with its s.u. (NaN unless something was detected).

    Detection: `signal` > threshold·σ (σ = 1 with `unit_sigma`: an absolute threshold) for m points; the fit is made
    to `fit_signal` (default `signal`) with σ as weights (None: unweighted)."""
    keys = (f"{name}_onset_detected_C", f"{name}_onset_extrapolated_C", f"{name}_onset_extrapolated_su_C")
    if not t.size:
        return dict.fromkeys(keys, NAN)
    det_sigma = 1.0 if unit_sigma or sigma is None else sigma
    detected = onset(t, signal, det_sigma, k=threshold, m=m, refine=True).temperature
    if detected is None:
        return dict.fromkeys(keys, NAN)
    ext = extrapolated_onset(t, signal if fit_signal is None else fit_signal, sigma)
    return dict(zip(keys, (float(detected), ext.temperature, ext.su)))


def _argmax(t: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    """(temperature, value) at the largest finite value, NaNs if none."""
    ok = np.isfinite(v) & np.isfinite(t)
    if not np.any(ok):
        return NAN, NAN
    i = int(np.nanargmax(np.where(ok, v, -math.inf)))
    return float(t[i]), float(v[i])
