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

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hotstage.analysis import profiles
from hotstage.analysis.radiation import Radiation
from hotstage.simulated.sample import CRYSTALLINE_PHASES, SampleState

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
                 window: float = 6.0) -> None:
        """Cache each phase's peak list; `halos` = (Q Å⁻¹, FWHM Å⁻¹, relative height); background (const,
        linear over the range, low-angle air scatter) in counts/s; `peak_counts_per_s` = strongest line of pure δ;
        peaks weaker than `min_relative_intensity` × the phase's strongest are dropped (invisible under noise)."""
        from hotstage.analysis.crystal import Crystal

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
        # background and halo shapes do not depend on the state: precompute
        tt = self.axis
        b0, b1, b_air = self.background
        self._background = b0 + b1 * (tt - tt[0]) / max(tt[-1] - tt[0], 1e-12) + b_air * np.exp(-(tt - tt[0]) / 6.0)
        q = 4.0 * math.pi * np.sin(np.radians(tt) / 2.0) / self.radiation.wavelength
        self._halo_shape = sum(h * np.exp(-4.0 * math.log(2.0) * ((q - q0) / w) ** 2) for q0, w, h in self.halos)
        # overall scale: pure δ at zero strain, 30 nm, gives `peak_counts_per_s` at its strongest line
        self._k = 1.0
        ref = self._phase_rate("CsPbI3-delta", self.scale_factor("CsPbI3-delta", 1.0), 0.0, 30.0) if "CsPbI3-delta" in self._peaks else None
        self._k = float(peak_counts_per_s / ref.max()) if ref is not None and ref.max() > 0 else 1.0
        self.last_truth: dict[str, float] = {}

    def _lp(self, two_theta: FloatArray) -> FloatArray:
        """Lorentz–polarisation factor of this radiation."""
        return profiles.lorentz_polarisation(two_theta, self.radiation)

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
        return profiles.render_peaks(self.axis, *self._phase_peaks(name, scale, strain, size_nm), window=self.window)

    def scale_factor(self, phase: str, weight_fraction: float) -> float:
        """Rietveld scale factor used for `phase` at `weight_fraction` (inverse Hill–Howard, s ∝ W/ZMV)."""
        return weight_fraction / self._peaks[phase].zmv

    def expected(self, state: SampleState, exposure_s: float = 1.0) -> FloatArray:
        """Noise-free expected counts for `state` (also fills `last_truth`)."""
        rate = self._background.copy()
        truth: dict[str, float] = {"exposure_s": float(exposure_s), "wavelength_A": self.radiation.wavelength,
                                   "zero_shift_deg": self.zero_shift, "temperature_C": state.temperature_C,
                                   "time_s": state.time_s, "intensity_constant": self._k}
        parts = []
        for name in self._peaks:
            wf = state.weight_fractions.get(name, 0.0)
            s = self.scale_factor(name, wf)
            truth[f"wf_{name}"] = wf
            truth[f"scale_{name}"] = s
            truth[f"strain_{name}"] = state.strain.get(name, 0.0)
            truth[f"size_{name}_nm"] = state.crystallite_size_nm.get(name, math.nan)
            if wf > 1e-6:
                parts.append(self._phase_peaks(name, s, state.strain.get(name, 0.0),
                                               state.crystallite_size_nm.get(name)))
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
    """PL counts: rate × intensity × (Gaussian + Urbach tail) + dark counts, Poisson noise."""

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
        peak = self.counts_per_s * pl.intensity
        self.last_truth = {"centre_nm": pl.centre_nm, "fwhm_nm": pl.fwhm_nm, "urbach_meV": pl.urbach_meV,
                           "intensity": pl.intensity, "peak_counts_per_s": peak,
                           "dark_counts_per_s": self.dark_counts_per_s, "exposure_s": float(exposure_s),
                           "temperature_C": state.temperature_C, "time_s": state.time_s}
        shape = pl_shape(self.axis, pl.centre_nm, pl.fwhm_nm, pl.urbach_meV)
        return (peak * shape + self.dark_counts_per_s) * float(exposure_s)

    def __call__(self, state: SampleState, exposure_s: float, rng: np.random.Generator) -> FloatArray:
        """One spectrum: Poisson counts over `self.axis` (nm)."""
        return _poisson(rng, self.expected(state, exposure_s))
