"""Per-modality analysers: one raw event (+ its descriptor) in, one derived event's data out.

Each analyser is built from the raw stream's *descriptor* — the axes (2θ, wavenumber, wavelength) and the X-ray
wavelength are read from the descriptor's ``configuration`` and the array key from its ``data_keys`` (found by
their ``dims``), never from the instrument or the simulator — and is then fed that stream's events in order.
They are pure numerics on top of `hotstage.analysis.phase_quant`, `hotstage.analysis.derivatives` and `hotstage.analysis.pl_fit`; the
bookkeeping common to every derived event (temperatures, raw seq_num, error flag) is added by
`hotstage.analysis.live.run.DerivedRun`.

Streams (DESIGN.md, "Contracts a user relies on / Derived run"):

* ``phase_fractions`` (from ``xrd``): per phase p offered, ``wf_<p>`` (Hill–Howard weight fraction over the
  crystalline phases offered) and ``wf_su_<p>``, ``strain_<p>`` / ``strain_su_<p>`` (refined isotropic lattice
  strain relative to the reference structure; s.u. 0 and ``refined_<p>`` = 0 when the phase was too weak to
  refine and was held), ``size_nm_<p>`` (apparent Scherrer size); ``active_fraction`` (Σ wf over the active
  phases) with ``active_fraction_su`` (√Σ s.u.², correlations ignored), ``rwp``, ``gof``, ``zero_shift``,
  ``halo_fraction``, ``cold`` (1 for a cold start), ``converged``.
* ``thz_derivative`` (from ``thz``): ``d2_absorbance`` (−free sign: the Savitzky–Golay second derivative
  d²A/dν² on the raw wavenumber axis, an array; the axis is in the descriptor configuration ``wavenumber``),
  ``band_<c>`` (−d²A/dν² at the centre of band c, raw), ``zni_<c>`` (the same on the referenced derivative,
  i.e. the growth of band c since the reference spectra), ``d2_sigma`` (noise σ of the referenced derivative
  from its band-free regions), ``zni_signal`` = Σ_c zni_<c>, ``zni_sigma`` = σ·√(number of bands) (independent
  noise at bands more than a window apart), ``zni_snr`` = zni_signal / zni_sigma. Referenced values are NaN for
  the first ``zni_reference_spectra`` spectra, which make up the reference. The amplitude is the value at the
  band centre (``band_half_width_cm`` = 0), not a maximum over a window: a maximum of noisy points is biased
  upwards, so ``zni_signal`` would sit above 0 without any band and its σ would not be ``zni_sigma``
  (analysis.live.parameters).
* ``pl_fit`` (from ``pl``): ``centre_nm``, ``fwhm_nm``, ``area`` (counts·nm) with ``*_su``, ``integrated_intensity``
  (∫(counts − background) dλ, computed even when the band fit fails), ``urbach_meV`` (+ s.u.), ``chi2_red``,
  ``significance`` (matched-filter z of the band, `hotstage.analysis.pl_fit`) and ``fit_success``: 1 only when
  `fit_pl` ACCEPTED the band — significant at the look-elsewhere threshold for a 10⁻³ false-positive rate per
  spectrum, FWHM within 8–120 nm, centre inside the spectrum and located to ``pl_max_centre_su_nm``. Centre,
  width and area are stored either way (NaN when no significant band was found); ``fit_success`` says which to
  trust.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from hotstage.analysis.crystal import Crystal
from hotstage.analysis.derivatives import band_amplitude, noise_sigma, spectral_derivative
from hotstage.analysis.instrument import Instrument
from hotstage.analysis.phase_quant import PhaseQuantifier
from hotstage.analysis.pl_fit import Acceptance, fit_pl, integrated_intensity
from hotstage.analysis.radiation import CU_KA1_ANGSTROM, Radiation

from .parameters import AnalysisParameters

__all__ = ["StreamAnalyser", "XRDAnalyser", "THzAnalyser", "PLAnalyser", "DEFAULT_ANALYSERS", "find_array"]

NAN = float("nan")
CU_KA1_TOLERANCE = 1e-4  # Å: a reported wavelength this close to Cu Kα1 is taken to be a Cu tube


def _number(units: str | None = None, source: str = "analysis") -> dict[str, Any]:
    """A scalar float data key."""
    key: dict[str, Any] = {"dtype": "number", "shape": [], "source": source}
    if units:
        key["units"] = units
    return key


def _integer(source: str = "analysis") -> dict[str, Any]:
    """A scalar integer data key."""
    return {"dtype": "integer", "shape": [], "source": source}


def find_array(descriptor: Mapping[str, Any], dim: str) -> tuple[str, np.ndarray, dict[str, Any]]:
    """(data key, axis array, axis data key) of the array measured along `dim` and its configuration axis.

    The measured array is the event data key whose ``dims`` is ``[dim]``; the axis is the configuration
    entry with the same dims in the configuration of any object of the descriptor.
    """
    data_key = next((k for k, v in descriptor["data_keys"].items() if list(v.get("dims") or ()) == [dim]), None)
    if data_key is None:
        raise ValueError(f"descriptor {descriptor.get('name')!r} has no data key with dims [{dim!r}]")
    for obj in (descriptor.get("configuration") or {}).values():
        for k, v in (obj.get("data_keys") or {}).items():
            if list(v.get("dims") or ()) == [dim] and k in obj.get("data", {}):
                return data_key, np.asarray(obj["data"][k], dtype=np.float64), v
    raise ValueError(f"descriptor {descriptor.get('name')!r} has no configuration axis with dims [{dim!r}]")


def _configuration_value(descriptor: Mapping[str, Any], suffix: str) -> Any:
    """The configuration value whose key ends with `suffix` (e.g. ``_wavelength``), or None."""
    for obj in (descriptor.get("configuration") or {}).values():
        for k, v in (obj.get("data") or {}).items():
            if k.endswith(suffix):
                return v
    return None


class StreamAnalyser:
    """Base: turns the events of one raw stream into the data of one derived stream."""

    raw_stream: ClassVar[str] = ""
    stream: ClassVar[str] = ""
    analysis: ClassVar[str] = ""

    def __init__(self, params: AnalysisParameters, descriptor: Mapping[str, Any]) -> None:
        """Read what the analysis needs from the raw descriptor."""
        self.params = params

    def data_keys(self) -> dict[str, dict[str, Any]]:
        """Data keys of the derived stream (the analysis' own; the common ones are added by DerivedRun)."""
        raise NotImplementedError

    def configuration(self) -> dict[str, Any]:
        """Configuration of the derived stream's descriptor (e.g. its axis); empty by default."""
        return {}

    def process(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Derived data of one raw event's data."""
        raise NotImplementedError

    def failed(self) -> dict[str, Any]:
        """Derived data for an event whose analysis raised: NaN everywhere (arrays of NaN)."""
        out: dict[str, Any] = {}
        for key, spec in self.data_keys().items():
            if spec["dtype"] == "array":
                out[key] = np.full(spec["shape"], NAN)
            elif spec["dtype"] == "integer":
                out[key] = 0
            else:
                out[key] = NAN
        return out

    def recover(self) -> None:
        """Called after a failed event: drop state that may be inconsistent (default: nothing)."""


class XRDAnalyser(StreamAnalyser):
    """Sequential whole-pattern phase quantification, warm-started from the previous pattern of the run."""

    raw_stream = "xrd"
    stream = "phase_fractions"
    analysis = "hotstage.analysis.phase_quant.PhaseQuantifier"

    def __init__(self, params: AnalysisParameters, descriptor: Mapping[str, Any]) -> None:
        """Axis from the configuration (dims two_theta), wavelength from ``*_wavelength``; quantifier built here."""
        super().__init__(params, descriptor)
        self.key, self.two_theta, _ = find_array(descriptor, "two_theta")
        wavelength = _configuration_value(descriptor, "_wavelength")
        if wavelength is None:
            raise ValueError(f"descriptor {descriptor.get('name')!r} records no X-ray wavelength (*_wavelength)")
        self.wavelength = float(wavelength)
        self.instrument = None if params.xrd_instrument is None else Instrument.from_dict(params.xrd_instrument)
        if self.instrument is None:
            self.radiation = self._radiation(self.wavelength)
        else:  # the instrument's radiation, which must be what the detector reports
            self.radiation = self.instrument.radiation
            if not math.isclose(self.wavelength, self.radiation.wavelength, rel_tol=1e-4):
                raise ValueError(f"the detector reports λ = {self.wavelength:g} Å but the instrument "
                                 f"({self.instrument.name or 'xrd_instrument'}) has {self.radiation.wavelength:g} Å")
        self.phases = list(params.phases)
        widths: dict[str, Any] = ({"caglioti": params.caglioti} if self.instrument is None
                                  else {"instrument": self.instrument})
        self.quantifier = PhaseQuantifier(
            [Crystal.builtin(n) for n in self.phases], self.two_theta,
            self.radiation if self.instrument is None else None, microstrain=params.microstrain,
            background_order=params.background_order, halos=params.halos, **widths,
        )

    def _radiation(self, wavelength: float) -> Radiation:
        """Radiation lines for the reported (primary) wavelength, per `xrd_radiation` (parameters docstring)."""
        mode = self.params.xrd_radiation
        is_cu = abs(wavelength - CU_KA1_ANGSTROM) < CU_KA1_TOLERANCE
        if mode == "cu_ka" or (mode == "auto" and is_cu):
            return Radiation.cu_ka()
        if mode == "cu_ka1":
            return Radiation.cu_ka1()
        if mode == "auto":
            return Radiation.synchrotron(wavelength)
        return Radiation.coerce(wavelength)

    def data_keys(self) -> dict[str, dict[str, Any]]:
        """Per-phase weight fractions, strains, sizes (+ s.u.), active fraction, fit statistics."""
        src = "analysis://phase_quant"
        keys: dict[str, dict[str, Any]] = {}
        for p in self.phases:
            keys[f"wf_{p}"] = _number(None, src)
            keys[f"wf_su_{p}"] = _number(None, src)
            keys[f"strain_{p}"] = _number(None, src)
            keys[f"strain_su_{p}"] = _number(None, src)
            keys[f"size_nm_{p}"] = _number("nm", src)
            keys[f"refined_{p}"] = _integer(src)
        keys.update(active_fraction=_number(None, src), active_fraction_su=_number(None, src),
                    rwp=_number(None, src), gof=_number(None, src), zero_shift=_number("deg", src),
                    halo_fraction=_number(None, src), cold=_integer(src), converged=_integer(src))
        return keys

    def process(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """One pattern: warm-started fit (cold for the first pattern or after a failure)."""
        r = self.quantifier.fit(np.asarray(data[self.key], dtype=np.float64), warm_start=True)
        out: dict[str, Any] = {}
        for p in self.phases:
            out[f"wf_{p}"] = float(r.weight_fractions[p])
            out[f"wf_su_{p}"] = float(r.weight_fraction_su[p])
            out[f"strain_{p}"] = float(r.strain[p])
            out[f"strain_su_{p}"] = float(r.strain_su[p])
            out[f"size_nm_{p}"] = float(r.size_nm[p])
            out[f"refined_{p}"] = int(bool(r.refined[p]))
        active = self.params.active_phases
        out["active_fraction"] = float(sum(r.weight_fractions[p] for p in active))
        out["active_fraction_su"] = float(math.sqrt(sum(r.weight_fraction_su[p] ** 2 for p in active)))
        out.update(rwp=float(r.rwp), gof=float(r.gof), zero_shift=float(r.zero_shift),
                   halo_fraction=float(r.halo_fraction), cold=int(r.cold), converged=int(r.converged))
        return out

    def recover(self) -> None:
        """A failed fit may leave the quantifier half-updated: start the next pattern cold."""
        self.quantifier.reset()


class THzAnalyser(StreamAnalyser):
    """Savitzky–Golay second derivative, Zn–I band amplitudes on the referenced derivative, noise σ."""

    raw_stream = "thz"
    stream = "thz_derivative"
    analysis = "hotstage.analysis.derivatives.spectral_derivative"

    def __init__(self, params: AnalysisParameters, descriptor: Mapping[str, Any]) -> None:
        """Axis (dims wavenumber) from the configuration; band-free regions fixed from the parameters."""
        super().__init__(params, descriptor)
        self.key, self.wavenumber, self.axis_key = find_array(descriptor, "wavenumber")
        lo, hi = float(self.wavenumber.min()), float(self.wavenumber.max())
        e = params.edge_exclude_cm
        self.include = [(lo + e, hi - e)]
        self.exclude = [(c - params.band_exclude_cm, c + params.band_exclude_cm) for c in params.zni_bands_cm]
        self.bands = list(params.zni_bands_cm)
        self._ref_sum: np.ndarray | None = None
        self._ref_n = 0

    def _band(self, c: float) -> str:
        """Key suffix of a band centre (135.0 → '135')."""
        return f"{c:g}".replace(".", "p")

    def data_keys(self) -> dict[str, dict[str, Any]]:
        """The derivative array, raw and referenced band amplitudes, σ, the Zn–I signal and its S/N."""
        src = "analysis://derivatives"
        n = int(self.wavenumber.size)
        keys: dict[str, dict[str, Any]] = {
            "d2_absorbance": {"dtype": "array", "dtype_numpy": "<f8", "shape": [n], "dims": ["wavenumber"],
                              "units": "cm^2", "source": src},
        }
        for c in self.bands:
            keys[f"band_{self._band(c)}"] = _number("cm^2", src)
            keys[f"zni_{self._band(c)}"] = _number("cm^2", src)
        keys.update(d2_sigma=_number("cm^2", src), zni_signal=_number("cm^2", src),
                    zni_sigma=_number("cm^2", src), zni_snr=_number(None, src))
        return keys

    def configuration(self) -> dict[str, Any]:
        """The wavenumber axis of `d2_absorbance` (as the raw stream records its own axis)."""
        axis_key = {"dtype": "array", "dtype_numpy": "<f8", "shape": [int(self.wavenumber.size)],
                    "dims": ["wavenumber"], "units": self.axis_key.get("units", "cm^-1"), "source": "raw descriptor"}
        return {"thz_derivative": {"data": {"wavenumber": self.wavenumber.tolist()},
                                   "timestamps": {"wavenumber": 0.0},
                                   "data_keys": {"wavenumber": axis_key}}}

    def process(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """One spectrum: d²A/dν², band amplitudes, and (after the reference) the referenced Zn–I signal."""
        p = self.params
        a = np.asarray(data[self.key], dtype=np.float64)
        d2 = spectral_derivative(self.wavenumber, a, order=2, window=p.thz_window_cm, polyorder=p.thz_polyorder)
        out: dict[str, Any] = {"d2_absorbance": d2}
        for c in self.bands:
            out[f"band_{self._band(c)}"] = float(band_amplitude(self.wavenumber, d2, c, p.band_half_width_cm))
        if self._ref_n < p.zni_reference_spectra:  # this spectrum is part of the reference
            self._ref_sum = d2.copy() if self._ref_sum is None else self._ref_sum + d2
            self._ref_n += 1
            for c in self.bands:
                out[f"zni_{self._band(c)}"] = NAN
            out.update(d2_sigma=NAN, zni_signal=NAN, zni_sigma=NAN, zni_snr=NAN)
            return out
        assert self._ref_sum is not None
        ref = d2 - self._ref_sum / self._ref_n
        total = 0.0
        for c in self.bands:
            v = float(band_amplitude(self.wavenumber, ref, c, p.band_half_width_cm))
            out[f"zni_{self._band(c)}"] = v
            total += v
        sigma = float(noise_sigma(ref, self.wavenumber, exclude=self.exclude, include=self.include))
        zs = sigma * math.sqrt(len(self.bands))
        out.update(d2_sigma=sigma, zni_signal=total, zni_sigma=zs, zni_snr=total / zs if zs > 0 else NAN)
        return out


class PLAnalyser(StreamAnalyser):
    """Gaussian fit of the PL band, integrated intensity and Urbach energy (analysis.pl_fit.fit_pl)."""

    raw_stream = "pl"
    stream = "pl_fit"
    analysis = "hotstage.analysis.pl_fit.fit_pl"

    def __init__(self, params: AnalysisParameters, descriptor: Mapping[str, Any]) -> None:
        """Axis (dims wavelength) from the configuration."""
        super().__init__(params, descriptor)
        self.key, self.wavelength, _ = find_array(descriptor, "wavelength")

    def data_keys(self) -> dict[str, dict[str, Any]]:
        """Band centre, width, area (+ s.u.), integrated intensity, Urbach energy, fit quality."""
        src = "analysis://pl_fit"
        return {
            "centre_nm": _number("nm", src), "centre_nm_su": _number("nm", src),
            "fwhm_nm": _number("nm", src), "fwhm_nm_su": _number("nm", src),
            "area": _number("counts nm", src), "area_su": _number("counts nm", src),
            "integrated_intensity": _number("counts nm", src),
            "urbach_meV": _number("meV", src), "urbach_meV_su": _number("meV", src),
            "chi2_red": _number(None, src), "significance": _number(None, src), "fit_success": _integer(src),
        }

    def process(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """One spectrum: fit_pl (NaN band values when no band is found) + integrated intensity."""
        p = self.params
        y = np.asarray(data[self.key], dtype=np.float64)
        fit = fit_pl(self.wavelength, y, domain=p.pl_domain, two=p.pl_two_gaussians, core=p.pl_core,  # type: ignore[arg-type]
                     acceptance=Acceptance(max_centre_su_nm=p.pl_max_centre_su_nm))
        return {
            "centre_nm": float(fit.centre_nm), "centre_nm_su": float(fit.centre_nm_su),
            "fwhm_nm": float(fit.fwhm_nm), "fwhm_nm_su": float(fit.fwhm_nm_su),
            "area": float(fit.area), "area_su": float(fit.area_su),
            "integrated_intensity": float(integrated_intensity(self.wavelength, y)),
            "urbach_meV": float(fit.urbach_meV), "urbach_meV_su": float(fit.urbach_meV_su),
            "chi2_red": float(fit.chi2_red), "significance": float(fit.significance),
            # only an accepted band is a result: significant, physical width, located (pl_fit "Acceptance")
            "fit_success": int(bool(fit.success) and fit.accepted),
        }


DEFAULT_ANALYSERS: dict[str, type[StreamAnalyser]] = {
    XRDAnalyser.raw_stream: XRDAnalyser,
    THzAnalyser.raw_stream: THzAnalyser,
    PLAnalyser.raw_stream: PLAnalyser,
}
"""Raw stream name → analyser class (the `truth` stream is never analysed)."""
