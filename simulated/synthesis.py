"""Synthesis of XRD patterns, THz/far-IR absorbance and PL spectra from a `SampleState`, with counting noise.

Each synthesizer is called as ``synth(state, exposure_s, rng) -> np.ndarray`` (float64, on ``synth.axis``) and
leaves the ground truth it used in ``synth.last_truth`` (a flat dict of floats, JSON-able).

Where the numbers come from:
- XRD: phase patterns from `hotstage.analysis.crystal.Crystal.builtin` (structures in analysis/data, see
  analysis/data/SOURCES.md); Rietveld scale factors from weight fractions by the inverse of Hill & Howard,
  J. Appl. Cryst. 20, 467 (1987): s_p ∝ W_p/(ZMV)_p; lattice strain shifts peaks (sinθ' = sinθ/(1+ε)), Scherrer
  and Caglioti widths from `hotstage.analysis.profiles`.  Glass halos of agZIF-62 placed in Q (wavelength-independent) at
  Q ≈ 1.09, 2.40 and 3.49 Å⁻¹ (Gaillac et al., Nature Mater. 16, 1149 (2017), ZIF-4 glass F(Q) maxima, SOURCES.md;
  DESIGN: halos near 15° and 35° 2θ Cu Kα); halo widths, background and count rates are assumed lab-like values.
  With an ``instrument`` (:class:`hotstage.analysis.instrument.Instrument`), the crystalline phases are drawn through
  the simulator's own diffractometer (:mod:`hotstage.simulated.diffractometer`: exact Voigts, axial divergence
  integrated over the geometry, Kα1/Kα2, zero and displacement, counts integrated over each bin) instead of the
  analysis's pseudo-Voigt code; without one, the pseudo-Voigt path above is unchanged.
- THz/far-IR: Zn–N stretch ~300 cm⁻¹ and imidazolate ring deformation ~670 cm⁻¹ (DESIGN / paper); Zn–I bands at
  ~135 and ~275 cm⁻¹ scaled by the Zn–I density (paper: weak, seen in the second derivative).  The weaker ZIF
  bands (~170, ~230, ~430, ~600 cm⁻¹), all widths, the baseline and the noise level are assumed.
- PL: Gaussian at the state's centre/FWHM with an exponential Urbach tail on the low-energy side, joined where the
  logarithmic slopes match (Urbach, Phys. Rev. 92, 1324 (1953)); count rate and dark counts are assumed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hotstage.analysis import profiles
from hotstage.analysis.radiation import Radiation
from hotstage.simulated.sample import CRYSTALLINE_PHASES, SampleState

if TYPE_CHECKING:
    from hotstage.analysis.instrument import Instrument

__all__ = ["XRDSynthesizer", "THzSynthesizer", "PLSynthesizer", "Band", "HC_EV_NM"]

HC_EV_NM = 1239.84198  # h·c in eV·nm (CODATA)
FloatArray = NDArray[np.float64]


def _poisson(rng: np.random.Generator, mean: FloatArray) -> FloatArray:
    """Poisson counts as float64."""
    return rng.poisson(np.maximum(mean, 0.0)).astype(np.float64)


# ---------------------------------------------------------------------------------------------- XRD
@dataclass(frozen=True)
class _PhasePeaks:
    """Cached unstrained peak list of one phase: sinθ per line-peak, wavelength, integrated intensity."""

    sin_theta: FloatArray
    wavelength: FloatArray
    intensity: FloatArray
    zmv: float
    lp: FloatArray


PSEUDO_VOIGT_WINDOW: float = 20.0
"""Half-width (FWHM) of each peak of the pseudo-Voigt path (`profiles.render_peaks`; the Lorentzian tail beyond it
is a flat pedestal). Was 6, the renderer's default: its pedestal steps at ±6 FWHM (tens of counts beside a strong
broad line) are not physics, and an analysis rendering the same way matched them by construction; at 20 they are
1/1601 of the peak height (see `hotstage.analysis.phase_quant.TABLE_WINDOW`)."""


class XRDSynthesizer:
    """Powder XRD counts: Σ Hill–Howard-scaled phase patterns + glass halos + background, Poisson noise."""

    def __init__(self, two_theta: ArrayLike | None = None, radiation: Radiation | float | None = None, *,
                 caglioti: tuple[float, float, float] = profiles.DEFAULT_CAGLIOTI, microstrain: float = 5e-4,
                 zero_shift: float = 0.0, peak_counts_per_s: float = 2000.0,
                 halo_counts_per_s: float = 150.0,
                 halos: Sequence[tuple[float, float, float]] = ((1.09, 0.45, 1.0), (2.40, 0.75, 0.6),
                                                               (3.49, 0.9, 0.25)),
                 background: tuple[float, float, float] = (30.0, 10.0, 120.0),
                 phases: Mapping[str, object] | None = None, min_relative_intensity: float = 1e-3,
                 window: float = PSEUDO_VOIGT_WINDOW, instrument: "Instrument | None" = None) -> None:
        """Cache each phase's peak list; `halos` = (Q Å⁻¹, FWHM Å⁻¹, relative height); background (const,
        linear over the range, low-angle air scatter) in counts/s; `peak_counts_per_s` = strongest line of pure δ;
        peaks weaker than `min_relative_intensity` × the phase's strongest are dropped (invisible under noise).

        `instrument`: draw the phases through :class:`~hotstage.simulated.diffractometer.Diffractometer` with this
        instrument (its radiation, widths, asymmetry, zero and displacement; `caglioti` and `zero_shift` must then
        stay at their defaults and `radiation` be None or the instrument's). None: the pseudo-Voigt path."""
        from hotstage.analysis.crystal import Crystal

        self.instrument = instrument
        if instrument is not None:
            self._init_instrument(two_theta, radiation, caglioti, zero_shift, microstrain, peak_counts_per_s,
                                  halo_counts_per_s, halos, background, phases, min_relative_intensity)
            return

        self.axis: FloatArray = (np.linspace(5.0, 60.0, 5000) if two_theta is None
                                 else np.asarray(two_theta, dtype=np.float64))
        self.radiation = Radiation.cu_ka() if radiation is None else Radiation.coerce(radiation)
        self.caglioti = tuple(float(c) for c in caglioti)
        self.microstrain = float(microstrain)
        self.zero_shift = float(zero_shift)
        self.halos = tuple(tuple(float(v) for v in h) for h in halos)
        self.background = tuple(float(b) for b in background)
        self.halo_counts_per_s = float(halo_counts_per_s)
        self.window = float(window)  # peaks evaluated within ±window·FWHM (area kept exact by render_peaks)
        self.crystals = dict(phases) if phases is not None else {p: Crystal.builtin(p) for p in CRYSTALLINE_PHASES}
        tt_max = min(float(self.axis[-1]) + 3.0, 179.0)
        self._peaks: dict[str, _PhasePeaks] = {}
        rad = self.radiation
        for name, crystal in self.crystals.items():
            sins, wls, areas = [], [], []
            for wl, weight in rad.lines:  # one line at a time so each peak knows its wavelength
                line = Radiation(((wl, weight),), rad.polarisation, rad.monochromator_two_theta,
                                 rad.synchrotron_polarisation)
                c, a = crystal.peaks(line, tt_max, strain=0.0)
                sins.append(np.sin(np.radians(np.asarray(c, dtype=np.float64)) / 2.0))
                wls.append(np.full(len(c), wl))
                areas.append(np.asarray(a, dtype=np.float64))
            sin_t, wl_a, area = np.concatenate(sins), np.concatenate(wls), np.concatenate(areas)
            keep = area > min_relative_intensity * area.max() if area.size else area > 0.0
            sin_t = sin_t[keep]
            self._peaks[name] = _PhasePeaks(sin_t, wl_a[keep], area[keep], float(crystal.zmv),
                                            self._lp(np.degrees(2.0 * np.arcsin(sin_t))))
        profiles.warm_up()  # the compiled peak kernel is loaded now, not on the first pattern of a real-time run
        self._precompute_background_and_halos()
        # overall scale: pure δ at zero strain, 30 nm, gives `peak_counts_per_s` at its strongest line
        self._k = 1.0
        ref = self._phase_rate("CsPbI3-delta", self.scale_factor("CsPbI3-delta", 1.0), 0.0, 30.0) if "CsPbI3-delta" in self._peaks else None
        self._k = float(peak_counts_per_s / ref.max()) if ref is not None and ref.max() > 0 else 1.0
        self.last_truth: dict[str, float] = {}

    def _precompute_background_and_halos(self) -> None:
        """Background and halo shapes on the axis (they do not depend on the sample state): both paths use them."""
        tt = self.axis
        b0, b1, b_air = self.background
        self._background = b0 + b1 * (tt - tt[0]) / max(tt[-1] - tt[0], 1e-12) + b_air * np.exp(-(tt - tt[0]) / 6.0)
        q = 4.0 * math.pi * np.sin(np.radians(tt) / 2.0) / self.radiation.wavelength
        self._halo_shape = sum(h * np.exp(-4.0 * math.log(2.0) * ((q - q0) / w) ** 2) for q0, w, h in self.halos)

    def _lp(self, two_theta: FloatArray) -> FloatArray:
        """Lorentz–polarisation factor of this radiation."""
        return profiles.lorentz_polarisation(two_theta, self.radiation)

    # ------------------------------------------------------------------ instrument path
    shape_size_rtol: float = 1e-2
    """Instrument path: profile tables are built at crystallite sizes on a geometric ladder of this ratio (the nearest
    rung is drawn: the size's Lorentzian width is within ±0.5 % of the state's), so a growing size rebuilds a phase's
    tables about once per 1 % of growth, and the same state always draws the same pattern whatever came before."""
    shape_strain_tol: float = 1e-3
    """Instrument path: … and at lattice strains on a ladder of this step (peaks are always placed at the exact
    strain; only the angle at which widths and asymmetry are evaluated is the rung's, within 0.05 % in d)."""
    shape_cache_size: int = 16
    """Instrument path: tables kept per synthesizer (least recently used dropped)."""

    def _init_instrument(self, two_theta: ArrayLike | None, radiation: Radiation | float | None,
                         caglioti: tuple[float, float, float], zero_shift: float, microstrain: float,
                         peak_counts_per_s: float, halo_counts_per_s: float,
                         halos: Sequence[tuple[float, float, float]], background: tuple[float, float, float],
                         phases: Mapping[str, object] | None, min_relative_intensity: float) -> None:
        """The instrument path of `__init__`: reflection lists (d, |F|²m) per phase, the diffractometer, the same
        halos and background as the pseudo-Voigt path, and the intensity constant from this instrument."""
        from hotstage.analysis.crystal import Crystal
        from hotstage.simulated.diffractometer import Diffractometer

        ins = self.instrument
        assert ins is not None
        if radiation is not None and Radiation.coerce(radiation) != ins.radiation:
            raise ValueError("XRDSynthesizer: give the radiation through the instrument, not both")
        if tuple(float(c) for c in caglioti) != tuple(profiles.DEFAULT_CAGLIOTI) or zero_shift != 0.0:
            raise ValueError("XRDSynthesizer: with an instrument, widths and zero come from the instrument "
                             "(leave caglioti and zero_shift at their defaults)")
        self.axis = (np.linspace(5.0, 60.0, 5000) if two_theta is None
                     else np.asarray(two_theta, dtype=np.float64))
        self.radiation = ins.radiation
        self.caglioti = tuple(float(c) for c in caglioti)
        self.microstrain = float(microstrain)
        self.zero_shift = float(ins.zero)
        self.halos = tuple(tuple(float(v) for v in h) for h in halos)
        self.background = tuple(float(b) for b in background)
        self.halo_counts_per_s = float(halo_counts_per_s)
        self.window = 6.0
        self.crystals = dict(phases) if phases is not None else {p: Crystal.builtin(p) for p in CRYSTALLINE_PHASES}
        self.diffractometer = Diffractometer(ins, self.axis)
        lam_min = min(w for w, _ in ins.radiation.lines)
        lam1 = ins.radiation.wavelength
        tt_max = min(float(self.axis[-1]) + 3.0, 179.0)
        d_min = lam_min / (2.0 * math.sin(math.radians(tt_max) / 2.0)) / 1.05  # room for strains up to 5 %
        tt_list = math.degrees(2.0 * math.asin(min(lam1 / (2.0 * d_min), 0.99999)))
        self._reflections: dict[str, tuple[FloatArray, FloatArray, float]] = {}
        for name, crystal in self.crystals.items():
            r = crystal.reflections(lam1, tt_list)
            d = np.asarray(r.d, dtype=np.float64)
            f2m = np.asarray(r.f_squared, dtype=np.float64) * np.asarray(r.multiplicity, dtype=np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                tt = np.degrees(2.0 * np.arcsin(np.minimum(lam1 / (2.0 * d), 1.0)))
                rel = f2m * profiles.lorentz_polarisation(np.clip(tt, 1e-3, 179.0), ins.radiation)
            keep = rel > min_relative_intensity * rel.max() if rel.size else rel > 0.0
            self._reflections[name] = (d[keep], f2m[keep], float(crystal.zmv))
        self._prepared: dict[tuple, object] = {}
        self._standards: dict[int, object] = {}
        self._precompute_background_and_halos()
        self._k = 1.0
        if "CsPbI3-delta" in self._reflections:
            ref = self._phase_rate("CsPbI3-delta", self.scale_factor("CsPbI3-delta", 1.0), 0.0, 30.0)
            self._k = float(peak_counts_per_s / ref.max()) if ref.max() > 0 else 1.0
        self.last_truth = {}

    def _prepared_phase(self, name: str, strain: float, size_nm: float | None) -> object:
        """The phase's profile tables at the ladder rungs nearest to `strain` and `size_nm` (cached, LRU)."""
        size = None if size_nm is None or not math.isfinite(size_nm) or size_nm <= 0 else float(size_nm)
        eps_rung = round(strain / self.shape_strain_tol)
        size_rung = None if size is None else round(math.log(size) / math.log1p(self.shape_size_rtol))
        key = (name, eps_rung, size_rung)
        prep = self._prepared.pop(key, None)
        if prep is None:
            d, f2m, _ = self._reflections[name]
            size_at = None if size_rung is None else math.exp(size_rung * math.log1p(self.shape_size_rtol))
            prep = self.diffractometer.prepare(d, f2m, size_nm=size_at, microstrain=self.microstrain,
                                               strain=eps_rung * self.shape_strain_tol)
            while len(self._prepared) >= self.shape_cache_size:
                self._prepared.pop(next(iter(self._prepared)))
        self._prepared[key] = prep  # (re)inserted last: most recently used
        return prep

    def standard(self, crystal: "object | str" = "LaB6", exposure_s: float = 1.0,
                 rng: np.random.Generator | None = None, *, peak_counts_per_s: float | None = None,
                 background_counts_per_s: float = 20.0) -> FloatArray:
        """A pure calibration standard "measured" on this rig: Poisson counts (noise-free expected counts when
        `rng` is None) of `crystal` (a Crystal, or a built-in standard's name from
        :mod:`hotstage.analysis.standards`) with no size or strain broadening, on a flat background of
        `background_counts_per_s`; its strongest line peaks at `peak_counts_per_s` (default: the δ reference
        rate `intensity_constant` was set from, 2000 counts/s). Drawn through this synthesizer's instrument; a
        synthesizer without one uses an instrument with its Caglioti widths, radiation and zero (Gaussian only,
        no asymmetry). Fills `last_truth`."""
        from hotstage.analysis.instrument import SIGMA2_TO_FWHM2_DEG2, Instrument
        from hotstage.analysis.standards import standard as builtin_standard
        from hotstage.simulated.diffractometer import Diffractometer

        cryst = builtin_standard(crystal) if isinstance(crystal, str) else crystal
        if self.instrument is not None:
            dif = self.diffractometer
        else:
            if not hasattr(self, "_standard_diffractometer"):
                u, v, w = (c / SIGMA2_TO_FWHM2_DEG2 for c in self.caglioti)
                ins = Instrument(self.radiation, zero=self.zero_shift, u=u, v=v, w=w,
                                 name="pseudo-Voigt path's Caglioti widths")
                self._standard_diffractometer = Diffractometer(ins, self.axis)
                self._standards = {}
            dif = self._standard_diffractometer
        key = id(cryst)
        hit = self._standards.get(key)
        if hit is None:
            lam1 = dif.radiation.wavelength
            tt_max = min(float(self.axis[-1]) + 3.0, 179.0)
            r = cryst.reflections(lam1, tt_max)  # type: ignore[attr-defined]
            f2m = np.asarray(r.f_squared, dtype=np.float64) * np.asarray(r.multiplicity, dtype=np.float64)
            prep = dif.prepare(np.asarray(r.d, dtype=np.float64), f2m)
            unit = dif.counts([(prep, 1.0, None)])
            hit = (cryst, prep, float(unit.max()))
            self._standards[key] = hit
        _, prep, unit_max = hit
        rate_peak = 2000.0 if peak_counts_per_s is None else float(peak_counts_per_s)
        scale = rate_peak / unit_max if unit_max > 0 else 0.0
        mean = (dif.counts([(prep, scale, None)]) + float(background_counts_per_s)) * float(exposure_s)
        a, b, c, al, be, ga = cryst.cell  # type: ignore[attr-defined]
        self.last_truth = {"exposure_s": float(exposure_s), "wavelength_A": dif.radiation.wavelength,
                           "zero_shift_deg": float(dif.instrument.zero), "cell_a_A": a, "cell_b_A": b,
                           "cell_c_A": c, "cell_alpha_deg": al, "cell_beta_deg": be, "cell_gamma_deg": ga,
                           "standard_scale": scale, "background_counts_per_s": float(background_counts_per_s),
                           "displacement_um": float(dif.instrument.displacement_um)}
        return mean if rng is None else _poisson(rng, mean)

    def _phase_peaks(self, name: str, scale: float, strain: float,
                     size_nm: float | None) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """Centres (deg), areas (counts/s·deg), FWHM (deg) and η of one phase's peaks."""
        pk = self._peaks[name]
        s = pk.sin_theta / (1.0 + strain)
        ok = s < 1.0
        theta = np.arcsin(s[ok])
        tt = np.degrees(2.0 * theta) + self.zero_shift
        wl = pk.wavelength[ok]
        # same convention as Crystal.peaks(strain=ε): w|F|²m fixed, LP re-evaluated at the shifted angle
        if strain != 0.0:
            lp_ratio = self._lp(tt - self.zero_shift) / pk.lp[ok]
        else:
            lp_ratio = 1.0
        area = pk.intensity[ok] * lp_ratio * scale * self._k
        u, v, w = self.caglioti
        t = np.tan(theta)
        g = np.sqrt(np.maximum(u * t * t + v * t + w, 0.0))
        g = np.hypot(g, np.degrees(4.0 * self.microstrain * t))
        if size_nm is None or not math.isfinite(size_nm):
            lor = np.zeros_like(g)
        else:
            lor = np.degrees(profiles.SCHERRER_K * wl / (10.0 * size_nm * np.cos(theta)))
        fwhm, eta = profiles.tch_combine(g, lor)
        return tt, area, fwhm, eta

    def _phase_rate(self, name: str, scale: float, strain: float, size_nm: float | None) -> FloatArray:
        """Counts/s of one phase with Rietveld scale `scale`, isotropic strain and crystallite size."""
        if self.instrument is not None:
            prep = self._prepared_phase(name, strain, size_nm)
            return self.diffractometer.counts([(prep, scale * self._k, strain)])  # type: ignore[list-item]
        return profiles.render_peaks(self.axis, *self._phase_peaks(name, scale, strain, size_nm), window=self.window)

    def scale_factor(self, phase: str, weight_fraction: float) -> float:
        """Rietveld scale factor used for `phase` at `weight_fraction` (inverse Hill–Howard, s ∝ W/ZMV)."""
        if self.instrument is not None:
            return weight_fraction / self._reflections[phase][2]
        return weight_fraction / self._peaks[phase].zmv

    def expected(self, state: SampleState, exposure_s: float = 1.0) -> FloatArray:
        """Noise-free expected counts for `state` (also fills `last_truth`)."""
        rate = self._background.copy()
        truth: dict[str, float] = {"exposure_s": float(exposure_s), "wavelength_A": self.radiation.wavelength,
                                   "zero_shift_deg": self.zero_shift, "temperature_C": state.temperature_C,
                                   "time_s": state.time_s, "intensity_constant": self._k}
        parts = []
        items = []
        for name in (self._peaks if self.instrument is None else self._reflections):
            wf = state.weight_fractions.get(name, 0.0)
            s = self.scale_factor(name, wf)
            truth[f"wf_{name}"] = wf
            truth[f"scale_{name}"] = s
            truth[f"strain_{name}"] = state.strain.get(name, 0.0)
            truth[f"size_{name}_nm"] = state.crystallite_size_nm.get(name, math.nan)
            if wf > 1e-6 and self.instrument is not None:
                eps = state.strain.get(name, 0.0)
                items.append((self._prepared_phase(name, eps, state.crystallite_size_nm.get(name)), s * self._k, eps))
            elif wf > 1e-6:
                parts.append(self._phase_peaks(name, s, state.strain.get(name, 0.0),
                                               state.crystallite_size_nm.get(name)))
        if items:
            rate += self.diffractometer.counts(items)
        if parts:  # one vectorised render for all phases
            rate += profiles.render_peaks(self.axis, *(np.concatenate(c) for c in zip(*parts)), window=self.window)
        glass = state.weight_fractions.get("glass", 0.0)
        rate += self.halo_counts_per_s * glass * self._halo_shape
        truth["wf_glass"] = glass
        truth["halo_counts_per_s"] = self.halo_counts_per_s * glass
        truth.update(background_const=self.background[0], background_linear=self.background[1],
                     background_air=self.background[2])
        self.last_truth = truth
        return rate * float(exposure_s)

    def __call__(self, state: SampleState, exposure_s: float, rng: np.random.Generator) -> FloatArray:
        """One pattern: Poisson counts over `self.axis` (2θ, deg) for `exposure_s` seconds."""
        return _poisson(rng, self.expected(state, exposure_s))


# ---------------------------------------------------------------------------------------------- THz
@dataclass(frozen=True)
class Band:
    """A Gaussian absorption band: centre and FWHM (cm⁻¹) and peak absorbance per unit of its driver."""

    centre: float
    fwhm: float
    amplitude: float


ZIF_BANDS: tuple[Band, ...] = (
    Band(300.0, 45.0, 1.00),  # Zn–N stretch (DESIGN / paper ~300 cm⁻¹)
    Band(670.0, 30.0, 0.60),  # imidazolate ring deformation (DESIGN / paper ~670 cm⁻¹)
    Band(170.0, 35.0, 0.15),  # assumed: Zn–N4 bending / collective lattice mode
    Band(230.0, 30.0, 0.08),  # assumed
    Band(430.0, 40.0, 0.06),  # assumed
    Band(600.0, 25.0, 0.10),  # assumed: weaker ring mode
)
"""agZIF-62 bands, amplitudes per unit glass weight fraction (absorbance)."""

ZNI_BANDS: tuple[Band, ...] = (
    Band(135.0, 10.0, 0.012),  # Zn–I (paper: ~135 cm⁻¹)
    Band(275.0, 10.0, 0.010),  # Zn–I (paper: ~275 cm⁻¹), on the shoulder of Zn–N
)
"""Zn–I bands, amplitudes per unit Zn–I density (weak: ≲ 2 % of the Zn–N band for 40/60)."""


class THzSynthesizer:
    """Far-IR absorbance: ZIF bands ∝ glass fraction + Zn–I bands ∝ Zn–I density + sloping baseline + noise."""

    def __init__(self, wavenumber: ArrayLike | None = None, *, zif_bands: Sequence[Band] = ZIF_BANDS,
                 zni_bands: Sequence[Band] = ZNI_BANDS, baseline: tuple[float, float] = (0.05, 0.15),
                 noise_per_sqrt_s: float = 4e-4) -> None:
        """`baseline` = (offset, rise over 700 cm⁻¹) absorbance; `noise_per_sqrt_s` = σ at 1 s exposure."""
        self.axis: FloatArray = (np.arange(50.0, 700.0 + 0.5, 1.0) if wavenumber is None
                                 else np.asarray(wavenumber, dtype=np.float64))
        self.zif_bands = tuple(zif_bands)
        self.zni_bands = tuple(zni_bands)
        self.baseline = (float(baseline[0]), float(baseline[1]))
        self.noise_per_sqrt_s = float(noise_per_sqrt_s)
        self._zif = self._bands(self.zif_bands)
        self._zni = self._bands(self.zni_bands)
        self._base = self.baseline[0] + self.baseline[1] * self.axis / 700.0
        self.last_truth: dict[str, float] = {}

    def _bands(self, bands: Sequence[Band]) -> FloatArray:
        """Sum of Gaussian bands on the axis."""
        out = np.zeros_like(self.axis)
        for b in bands:
            out += b.amplitude * np.exp(-4.0 * math.log(2.0) * ((self.axis - b.centre) / b.fwhm) ** 2)
        return out

    def expected(self, state: SampleState, exposure_s: float = 1.0) -> FloatArray:
        """Noise-free absorbance for `state` (also fills `last_truth`)."""
        glass = state.weight_fractions.get("glass", 0.0)
        z = state.zni_density
        self.last_truth = {"wf_glass": glass, "zni_density": z, "temperature_C": state.temperature_C,
                           "time_s": state.time_s, "exposure_s": float(exposure_s),
                           "noise_sigma": self.noise_per_sqrt_s / math.sqrt(max(exposure_s, 1e-12))}
        for b in self.zni_bands:
            self.last_truth[f"zni_{b.centre:g}_amplitude"] = b.amplitude * z
        for b in self.zif_bands:
            self.last_truth[f"zif_{b.centre:g}_amplitude"] = b.amplitude * glass
        return self._base + glass * self._zif + z * self._zni

    def __call__(self, state: SampleState, exposure_s: float, rng: np.random.Generator) -> FloatArray:
        """One spectrum: absorbance over `self.axis` (cm⁻¹) with Gaussian noise σ ∝ 1/√exposure."""
        mean = self.expected(state, exposure_s)
        return mean + rng.normal(0.0, self.last_truth["noise_sigma"], mean.shape)


# ---------------------------------------------------------------------------------------------- PL
def pl_shape(wavelength_nm: FloatArray, centre_nm: float, fwhm_nm: float, urbach_meV: float) -> FloatArray:
    """Peak-normalised Gaussian (in λ) with an exponential Urbach tail on the low-energy (long-λ) side."""
    s = fwhm_nm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    lam = np.asarray(wavelength_nm, dtype=np.float64)
    g = np.exp(-0.5 * ((lam - centre_nm) / s) ** 2)
    eu = urbach_meV * 1e-3
    if eu <= 0.0:
        return g
    # join point λj > λc where d ln g/dλ = d ln tail/dλ:  (λ − λc)/s² = hc/(λ² E_U)
    lj = centre_nm + s
    for _ in range(50):
        lj = centre_nm + s * s * HC_EV_NM / (lj * lj * eu)
    ej = HC_EV_NM / lj
    gj = math.exp(-0.5 * ((lj - centre_nm) / s) ** 2)
    tail = gj * np.exp((HC_EV_NM / lam - ej) / eu)
    return np.where(lam > lj, tail, g)


class PLSynthesizer:
    """PL counts: rate × intensity × (25 °C FWHM / FWHM) × (Gaussian + Urbach tail) + dark counts, Poisson noise;
    `last_truth` holds the band's true centre and FWHM (nm, and eV/meV) at the state's temperature."""

    def __init__(self, wavelength_nm: ArrayLike | None = None, *, counts_per_s: float = 5.0e4,
                 dark_counts_per_s: float = 2.0) -> None:
        """`counts_per_s` = peak count rate at state intensity 1."""
        self.axis: FloatArray = (np.linspace(600.0, 820.0, 1101) if wavelength_nm is None
                                 else np.asarray(wavelength_nm, dtype=np.float64))
        self.counts_per_s = float(counts_per_s)
        self.dark_counts_per_s = float(dark_counts_per_s)
        self.last_truth: dict[str, float] = {}

    def expected(self, state: SampleState, exposure_s: float = 1.0) -> FloatArray:
        """Noise-free expected counts for `state` (also fills `last_truth`)."""
        pl = state.pl
        # intensity is the integrated emission: a band broadened on heating is lower (area kept, Gaussian ∝ h·w)
        widen = pl.fwhm_25C_nm / pl.fwhm_nm if math.isfinite(pl.fwhm_25C_nm) and pl.fwhm_nm > 0.0 else 1.0
        peak = self.counts_per_s * pl.intensity * widen
        self.last_truth = {"centre_nm": pl.centre_nm, "fwhm_nm": pl.fwhm_nm, "urbach_meV": pl.urbach_meV,
                           "centre_eV": HC_EV_NM / pl.centre_nm,
                           "fwhm_meV": 1e3 * (HC_EV_NM / (pl.centre_nm - pl.fwhm_nm / 2.0)
                                              - HC_EV_NM / (pl.centre_nm + pl.fwhm_nm / 2.0)),
                           "intensity": pl.intensity, "peak_counts_per_s": peak,
                           "dark_counts_per_s": self.dark_counts_per_s, "exposure_s": float(exposure_s),
                           "temperature_C": state.temperature_C, "time_s": state.time_s}
        shape = pl_shape(self.axis, pl.centre_nm, pl.fwhm_nm, pl.urbach_meV)
        return (peak * shape + self.dark_counts_per_s) * float(exposure_s)

    def __call__(self, state: SampleState, exposure_s: float, rng: np.random.Generator) -> FloatArray:
        """One spectrum: Poisson counts over `self.axis` (nm)."""
        return _poisson(rng, self.expected(state, exposure_s))
