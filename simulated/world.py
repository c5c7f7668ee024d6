"""The simulated world behind the emulators: one clock, one furnace plant, one sample, three synthesizers.

Everything is advanced lazily: whenever an emulator asks (a Lake Shore query, an acquisition), the world
integrates the furnace plant (``hotstage.simulated.thermal``, fixed 0.2 s steps) from where it was to the clock's
present reading and feeds the sample (``hotstage.simulated.sample.CompositeSample``) the *sample* temperature
(input B, lagging the control sensor) averaged over each sample step (1 simulated s by default; the
kinetics sub-step internally, so the slicing hardly matters). Queries come from the asyncio thread and
acquisitions from executor threads, so every access happens under one re-entrant lock.

Acquisitions: an instrument that integrates from t0 for T seconds returns data for the sample state at
the middle of the window, t0 + T/2. The world keeps a short history of immutable ``SampleState``
snapshots (one per sample step, the last ``history_s`` simulated seconds) so the mid-window state is
available even though the world has already been advanced to the end of the window. Beside each snapshot it keeps
the plant's temperatures, and it remembers each instrument's last exposure window, so the ground truth can be
read *at mid-exposure* (``truth(at_s=...)``, ``exposure_mid``): the truth stream describes the moment the data
describe, not the moment someone asked.
"""

from __future__ import annotations

import bisect
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .clock import SimClock
from .parameters import SampleSpec, load_sample
from .sample import CompositeSample, SampleState
from .thermal import FurnacePlant, ThermalParameters

__all__ = ["SimWorld", "coerce_spec", "MODALITIES"]

MODALITIES = ("xrd", "thz", "pl")
"""Instrument names of the world's synthesizers."""


def coerce_spec(sample: SampleSpec | str | Path | None) -> SampleSpec:
    """None -> default composite; SampleSpec as is; a path -> the sample TOML it names."""
    if sample is None:
        return SampleSpec.default()
    if isinstance(sample, SampleSpec):
        return sample
    if isinstance(sample, (str, Path)):
        return load_sample(sample)
    raise TypeError(f"sample must be None, a SampleSpec or a path to a sample TOML, got {type(sample).__name__}")


def _axis_of(synth: Any, names: tuple[str, ...]) -> np.ndarray:
    """The spectral axis a synthesizer was built on (first attribute of ``names`` that exists)."""
    for n in names:
        v = getattr(synth, n, None)
        if v is not None:
            return np.asarray(v, dtype=np.float64)
    raise AttributeError(f"{type(synth).__name__} exposes none of {names}")


class SimWorld:
    """Clock + furnace plant + composite sample + XRD/THz/PL synthesizers, advanced lazily under a lock."""

    def __init__(
        self,
        spec: SampleSpec | str | Path | None = None,
        time_scale: float = 300.0,
        seed: int | None = None,
        *,
        thermal: ThermalParameters | None = None,
        clock: SimClock | None = None,
        sample_step_s: float = 1.0,
        history_s: float = 7200.0,
        synthesizers: dict[str, Any] | None = None,
    ) -> None:
        """Build the world; ``seed`` None uses the sample spec's seed; ``synthesizers`` overrides defaults."""
        self.spec = coerce_spec(spec)
        self.clock = clock if clock is not None else SimClock(time_scale)
        self.seed = int(self.spec.seed if seed is None else seed)
        self.plant = FurnacePlant(thermal, time_s=self.clock.now())
        self.t0 = self.plant.time_s
        self.sample = CompositeSample(self.spec, temperature_C=self.plant.sample_C)
        self.sample_step_s = float(sample_step_s)
        self.history_s = float(history_s)
        self.lock = threading.RLock()
        self._hist_t: deque[float] = deque()
        self._hist_state: deque[SampleState] = deque()
        self._hist_plant: deque[tuple[float, float, float]] = deque()
        """(control sensor A, sample B, heater block) °C beside each snapshot: the truth at a past moment."""
        self._windows: dict[str, tuple[float, float]] = {}
        """Instrument → (start, exposure) of its last acquisition, simulated s."""
        self._record()
        if synthesizers is None:
            synthesizers = self._default_synthesizers()
        self.synthesizers: dict[str, Any] = dict(synthesizers)
        children = np.random.SeedSequence(self.seed).spawn(len(MODALITIES))
        self._rngs = {m: np.random.default_rng(s) for m, s in zip(MODALITIES, children)}
        self._rng_locks = {m: threading.Lock() for m in MODALITIES}

    @staticmethod
    def _default_synthesizers() -> dict[str, Any]:
        """XRD, THz and PL synthesizers on their default axes (simulated.synthesis); XRD drawn through the rig's
        own diffractometer (`SIMULATED_LAB_INSTRUMENT`: Cu Kα doublet, asymmetry, widths unlike the analysis's
        defaults), which the analysis knows only through a calibration (`hotstage.simulated.standard`)."""
        from .diffractometer import SIMULATED_LAB_INSTRUMENT
        from .synthesis import PLSynthesizer, THzSynthesizer, XRDSynthesizer

        return {"xrd": XRDSynthesizer(instrument=SIMULATED_LAB_INSTRUMENT), "thz": THzSynthesizer(),
                "pl": PLSynthesizer()}

    # --------------------------------------------------------------------------------- time
    @property
    def time_scale(self) -> float:
        """Simulated seconds per wall second."""
        return self.clock.time_scale

    def now(self) -> float:
        """Simulated time now (s)."""
        return self.clock.now()

    def _record(self) -> None:
        """Append the present sample state to the history and drop what is older than history_s."""
        t = self.plant.time_s
        self._hist_t.append(t)
        self._hist_state.append(self.sample.state)
        self._hist_plant.append((self.plant.sensor_C, self.plant.sample_C, self.plant.heater_C))
        while len(self._hist_t) > 2 and self._hist_t[0] < t - self.history_s:
            self._hist_t.popleft()
            self._hist_state.popleft()
            self._hist_plant.popleft()

    def _advance_locked(self, t_s: float) -> None:
        """Integrate plant and sample up to ``t_s`` (caller holds the lock)."""
        plant = self.plant
        while True:
            before = plant.time_s
            t_mean = plant.advance_to(min(t_s, before + self.sample_step_s))
            if plant.time_s <= before:
                return
            self.sample.advance(plant.time_s - before, t_mean)
            self._record()

    def advance(self, t_s: float | None = None) -> None:
        """Bring the world to simulated time ``t_s`` (default: now)."""
        with self.lock:
            self._advance_locked(self.clock.now() if t_s is None else t_s)

    def load_sample(self, spec: SampleSpec | str | Path) -> None:
        """Put a fresh sample in the furnace (a new pellet: history restarts), at the furnace's sample temperature."""
        with self.lock:
            self._advance_locked(self.clock.now())
            self.spec = coerce_spec(spec)
            self.sample = CompositeSample(self.spec, temperature_C=self.plant.sample_C)
            self._hist_t.clear()
            self._hist_state.clear()
            self._hist_plant.clear()
            self._record()

    @contextmanager
    def furnace(self) -> Iterator[FurnacePlant]:
        """Hold the lock with the world advanced to now and lend the furnace plant (Lake Shore server)."""
        with self.lock:
            self._advance_locked(self.clock.now())
            yield self.plant

    # ---------------------------------------------------------------------------- sample state
    def state_at(self, t_s: float) -> SampleState:
        """Sample state at simulated time ``t_s`` (latest snapshot not after it; advances if needed)."""
        with self.lock:
            if t_s > self.plant.time_s:
                self._advance_locked(t_s)
            times = self._hist_t
            i = bisect.bisect_right(times, t_s) - 1
            return self._hist_state[max(0, i)]

    def axis(self, modality: str) -> np.ndarray:
        """Spectral axis of one modality: 2θ (deg), wavenumber (cm⁻¹) or wavelength (nm)."""
        return _axis_of(self.synthesizers[modality], ("axis", "two_theta", "wavenumber", "wavelength_nm"))

    def xrd_wavelength(self) -> float:
        """Primary X-ray wavelength of the XRD synthesizer (Å)."""
        synth = self.synthesizers["xrd"]
        rad = getattr(synth, "radiation", None)
        if rad is not None and hasattr(rad, "wavelength"):
            return float(rad.wavelength)
        return float(getattr(synth, "wavelength"))

    def acquire(self, modality: str, t_start_s: float, exposure_s: float) -> np.ndarray:
        """Synthesize one acquisition integrated over [t_start, t_start + exposure] (mid-window state)."""
        state = self.state_at(t_start_s + 0.5 * exposure_s)
        with self.lock:
            self._windows[modality] = (float(t_start_s), float(exposure_s))
        with self._rng_locks[modality]:
            data = self.synthesizers[modality](state, float(exposure_s), self._rngs[modality])
        return np.ascontiguousarray(data, dtype="<f8")

    # ---------------------------------------------------------------------------------- truth
    def exposure_mid(self, modality: str) -> float | None:
        """Simulated time at the middle of ``modality``'s last exposure (None before its first)."""
        with self.lock:
            window = self._windows.get(modality)
        return None if window is None else window[0] + 0.5 * window[1]

    def _plant_at(self, t_s: float) -> tuple[float, float, float]:
        """(sensor A, sample B, heater) °C at ``t_s``, linear between the snapshots around it (caller holds the lock)."""
        times = self._hist_t
        i = bisect.bisect_right(times, t_s) - 1
        if i < 0:
            return self._hist_plant[0]
        if i >= len(times) - 1:
            return self._hist_plant[-1]
        t0, t1 = times[i], times[i + 1]
        f = (t_s - t0) / (t1 - t0) if t1 > t0 else 0.0
        a, b = self._hist_plant[i], self._hist_plant[i + 1]
        return tuple(x + f * (y - x) for x, y in zip(a, b))  # type: ignore[return-value]

    def truth(self, at_s: float | None = None) -> dict[str, float]:
        """Ground truth now (or at simulated time ``at_s`` in the kept history): the sample's truth plus
        furnace/sample temperatures and simulated time. The controller's settings (setpoint, output, range) are
        always the present ones."""
        with self.lock:
            self._advance_locked(self.clock.now())
            lp = self.plant.loop(1)
            if at_s is None:
                t = self.plant.time_s
                out = dict(self.sample.truth())
                sensor, sample, heater = self.plant.sensor_C, self.plant.sample_C, self.plant.heater_C
            else:
                t = min(float(at_s), self.plant.time_s)
                out = dict(self.state_at(t).truth())
                sensor, sample, heater = self._plant_at(t)
            out.update(
                sim_time_s=t - self.t0,
                furnace_C=sensor,
                sample_C=sample,
                heater_block_C=heater,
                setpoint_C=lp.setpoint_C,
                target_setpoint_C=lp.target_C,
                heater_output_percent=lp.output_percent,
                heater_range=float(lp.heater_range),
                heater_power_W=self.plant.heater_power_W(),
                time_scale=self.time_scale,
            )
        return {k: float(v) for k, v in out.items()}
