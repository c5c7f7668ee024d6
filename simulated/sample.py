"""Simulated (CsPbI3)x(agZIF-62)1-x composite whose phases evolve with its temperature history.

Model (all numbers in `hotstage.simulated.parameters.ModelParameters`, with sources there; behaviour pinned to
Li et al., Nat. Commun. 14, 7612 (2023) by tests/test_physics.py):
- CsPbI3-derived mass (fraction x of the composite) is split into δ, black (γ/β/α), CsI and poorly crystalline;
  the glass (agZIF-62) is the remaining 1 − x.
- Interface coverage a(x) = r/(r + κ), r = (1 − x)/x (glass per perovskite ∝ interfacial area per crystallite).
  It lowers the δ↔black equilibrium T_eq(x) = T_bulk − ΔT_int·a(x) and protects a fraction a(x) of the black
  crystallites from reverting to δ on cooling (kinetic trapping by interfacial stabilisation).
- δ→black (T > T_eq) and black→δ (T < T_eq) follow JMAK kinetics in the additive (reduced-time) form:
  θ = ∫k(T)dt, surviving parent ∝ exp(−θⁿ), k = A·exp(−Ea/RT)·(1 − exp(−|T − T_eq|/w)); each is restarted
  (θ = 0, new nucleation) when the driving direction changes.  CsI + poorly crystalline material recrystallise
  (JMAK, never restarted) into whichever CsPbI3 phase is favoured.
- The black polymorph relaxes quickly to γ/β/α by temperature (Marronnier 2018: 184 °C, 281 °C).
- Tg(x) = Tg0 − slope·x; alloy layer L = √(∫D dt), D Arrhenius ×(1 + E) above Tg; Zn–I progress first order
  Arrhenius (from ~110 °C); non-stoichiometric (PL-quenching) fraction grows only above Tg; crystallite sizes
  coarsen as d² += K dt.  All these are irreversible, so they persist on cooling.  Zn–I density = progress ×
  4x(1 − x) (assumed: contact probability of a random two-phase mixture, 1 at x = 0.5).
- PL intensity = active fraction × passivation(alloy) × (1 − quench) × absorption(x) × interfacial factor(x) ×
  thermal quenching (normalised to 1 at 25 °C); centre shifts linearly with x; Urbach energy grows with quench.
  The band moves with the temperature (issue 14, item 5; numbers and sources in ModelParameters): its photon
  energy rises linearly, E(T) = E(25 °C) + dE/dT·(T − 25 °C) (blue shift on heating, as CsPbI3 nanocrystals do),
  and its FWHM in energy grows with the LO-phonon (Fröhlich) term, Γ(T) = Γ(25 °C) + γ_LO·[n(T) − n(25 °C)],
  n = 1/(exp(E_LO/kT) − 1) (Wright et al., Nat. Commun. 7, 11755 (2016)); `pl_centre_nm`/`pl_fwhm_nm` are the
  25 °C values.  Defaults: 708.8 → 686.7 nm and 36 → 59 nm (89 → 156 meV) at 250 °C for x = 0.4.  Both follow
  the temperature reversibly.  `intensity` stays the integrated emission: the synthesizer lowers the peak as
  the band widens (`PLParameters.fwhm_25C_nm`).
Within one `advance(dt, T)` the temperature is constant, every process is integrated exactly over each
sub-step, and sub-steps only couple the processes, so results hardly depend on how a history is sliced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from hotstage.simulated.parameters import ModelParameters, SampleSpec

__all__ = ["PHASES", "CRYSTALLINE_PHASES", "PLParameters", "SampleState", "CompositeSample", "ramp", "hold",
           "thermal_band"]

R_J_MOL_K = 8.314462618  # gas constant (CODATA)
K_B_MEV_K = 0.08617333262  # Boltzmann constant, meV/K (CODATA)
ZERO_C_K = 273.15
ROOM_C = 25.0

PHASES: tuple[str, ...] = ("CsPbI3-delta", "CsPbI3-gamma", "CsPbI3-beta", "CsPbI3-alpha", "CsI",
                           "poorly_crystalline", "glass")
CRYSTALLINE_PHASES: tuple[str, ...] = ("CsPbI3-delta", "CsPbI3-gamma", "CsPbI3-beta", "CsPbI3-alpha", "CsI")
BLACK_PHASES: tuple[str, ...] = ("CsPbI3-gamma", "CsPbI3-beta", "CsPbI3-alpha")


@dataclass(frozen=True)
class PLParameters:
    """Photoluminescence of the active phase: Gaussian centre/width, Urbach tail energy, relative intensity."""

    centre_nm: float
    fwhm_nm: float
    urbach_meV: float
    intensity: float  # integrated emission relative to the reference sample at 25 °C
    fwhm_25C_nm: float = math.nan  # the band's FWHM at 25 °C (peak height ∝ intensity × fwhm_25C_nm / fwhm_nm)


@dataclass(frozen=True)
class SampleState:
    """Immutable snapshot of the sample (what an ideal measurement would see)."""

    time_s: float
    temperature_C: float
    cspbi3_wt_frac: float
    weight_fractions: Mapping[str, float]
    crystallite_size_nm: Mapping[str, float]
    strain: Mapping[str, float]
    tg_C: float
    t_eq_C: float
    alloy_thickness_nm: float
    zni_density: float
    zni_progress: float
    quench_fraction: float
    pl: PLParameters

    @property
    def active_fraction_of_cspbi3(self) -> float:
        """Black (γ+β+α) share of the CsPbI3-derived mass."""
        if self.cspbi3_wt_frac <= 0.0:
            return 0.0
        return sum(self.weight_fractions[p] for p in BLACK_PHASES) / self.cspbi3_wt_frac

    def fraction_of_cspbi3(self, phase: str) -> float:
        """A phase's share of the CsPbI3-derived mass (0 for a glass-only sample)."""
        if self.cspbi3_wt_frac <= 0.0:
            return 0.0
        return self.weight_fractions[phase] / self.cspbi3_wt_frac

    def truth(self) -> dict[str, float]:
        """Flat JSON-able ground truth."""
        out: dict[str, float] = {"time_s": self.time_s, "temperature_C": self.temperature_C,
                                 "cspbi3_wt_frac": self.cspbi3_wt_frac}
        for p, w in self.weight_fractions.items():
            out[f"wf_{p}"] = w
        if self.cspbi3_wt_frac > 0.0:
            for p in PHASES[:-1]:
                out[f"frac_{p}_of_cspbi3"] = self.fraction_of_cspbi3(p)
        for p, d in self.crystallite_size_nm.items():
            out[f"size_{p}_nm"] = d
        for p, e in self.strain.items():
            out[f"strain_{p}"] = e
        out.update(active_fraction_of_cspbi3=self.active_fraction_of_cspbi3, tg_C=self.tg_C, t_eq_C=self.t_eq_C,
                   alloy_nm=self.alloy_thickness_nm, zni_density=self.zni_density, zni_progress=self.zni_progress,
                   quench_fraction=self.quench_fraction, pl_centre_nm=self.pl.centre_nm,
                   pl_fwhm_nm=self.pl.fwhm_nm, pl_urbach_meV=self.pl.urbach_meV, pl_intensity=self.pl.intensity)
        return {k: float(v) for k, v in out.items()}


HC_EV_NM = 1239.841984  # h·c in eV·nm (CODATA 2018)


def _bose(e_meV: float, temperature_C: float) -> float:
    """Bose–Einstein occupation 1/(exp(E/kT) − 1) of a phonon of energy E at temperature T."""
    return 1.0 / math.expm1(e_meV / (K_B_MEV_K * max(temperature_C + ZERO_C_K, 1.0)))


def thermal_band(centre_25C_nm: float, fwhm_25C_nm: float, temperature_C: float, gap_slope_meV_K: float,
                 lo_phonon_meV: float, lo_coupling_meV: float) -> tuple[float, float]:
    """(centre, FWHM) in nm at `temperature_C` of a band given at 25 °C: linear shift of its photon energy and
    LO-phonon broadening of its FWHM in energy (module docstring); the FWHM in eV is the difference of the
    photon energies at the half-maximum wavelengths c ∓ w/2 (as `analysis.pl_fit` reports it)."""
    e25 = HC_EV_NM / centre_25C_nm
    gamma25 = HC_EV_NM / (centre_25C_nm - fwhm_25C_nm / 2.0) - HC_EV_NM / (centre_25C_nm + fwhm_25C_nm / 2.0)
    e = e25 + 1e-3 * gap_slope_meV_K * (temperature_C - ROOM_C)
    gamma = gamma25 + 1e-3 * lo_coupling_meV * (_bose(lo_phonon_meV, temperature_C) - _bose(lo_phonon_meV, ROOM_C))
    c = HC_EV_NM / e
    if gamma <= 0.0:
        return c, 0.0
    # HC/(c − w/2) − HC/(c + w/2) = Γ  ⇔  (Γ/4)·w² + HC·w − Γ·c² = 0
    w = (math.sqrt(HC_EV_NM ** 2 + gamma * gamma * c * c) - HC_EV_NM) / (gamma / 2.0)
    return c, w


def _sigmoid(z: float) -> float:
    """Numerically safe logistic function."""
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _arrhenius(prefactor: float, ea_kJ_mol: float, temperature_C: float) -> float:
    """A·exp(−Ea/RT)."""
    return prefactor * math.exp(-ea_kJ_mol * 1e3 / (R_J_MOL_K * (temperature_C + ZERO_C_K)))


class CompositeSample:
    """The composite under a simulated clock: call advance(dt, T) as the furnace history unfolds."""

    def __init__(self, spec: SampleSpec | None = None, *, temperature_C: float = ROOM_C) -> None:
        """Start as milled (mostly δ with CsI and poorly crystalline material) at time 0."""
        self.spec = spec if spec is not None else SampleSpec.default()
        p = self.spec.model
        self.p: ModelParameters = p
        x = self.spec.cspbi3_wt_frac
        self.x = x
        r = (1.0 - x) / x if x > 0.0 else math.inf
        self.coverage = 1.0 if math.isinf(r) else r / (r + p.interface_kappa)  # a(x)
        self.t_eq_C = p.t_delta_black_bulk_C - p.interface_shift_C * self.coverage
        self.tg_C = p.tg_glass_C - p.tg_slope_C * x
        self.time_s = 0.0
        self.temperature_C = float(temperature_C)
        # fractions of the CsPbI3-derived mass
        self.f_csi = p.milled_frac_csi
        self.f_pc = p.milled_frac_poorly_crystalline
        self.f_delta = 1.0 - self.f_csi - self.f_pc
        self.f_black = {ph: 0.0 for ph in BLACK_PHASES}
        # JMAK reduced variables (θⁿ accumulated) and episode bookkeeping
        self._fwd_theta = 0.0
        self._rev_theta = 0.0
        self._rc_theta = 0.0
        self._direction = 0  # +1 forward (δ→black) episode, −1 reverse, 0 none yet
        self._revertible = 0.0
        # irreversible interfacial quantities
        self._alloy_sq_nm2 = 0.0
        self.zni_progress = 0.0
        self.quench = 0.0
        # crystallite sizes (squared, nm²)
        self._d2_delta = p.size_delta_milled_nm ** 2
        self._d2_black = p.size_black_nucleus_nm ** 2
        self._d2_csi = p.size_csi_milled_nm ** 2
        self._state_cache: SampleState | None = None

    # ------------------------------------------------------------------ kinetics
    def advance(self, dt_s: float, temperature_C: float) -> None:
        """Evolve the sample for dt_s seconds at temperature_C (held constant over the interval)."""
        if dt_s < 0.0 or not math.isfinite(dt_s):
            raise ValueError(f"dt_s must be finite and >= 0, got {dt_s!r}")
        if not math.isfinite(temperature_C):
            raise ValueError(f"temperature_C must be finite, got {temperature_C!r}")
        self.temperature_C = float(temperature_C)
        self._state_cache = None
        if dt_s == 0.0:
            return
        p, T = self.p, float(temperature_C)
        n_sub = max(1, math.ceil(dt_s / p.max_substep_s - 1e-9))
        h = dt_s / n_sub
        # temperature-dependent rates, constant over this call
        dT = T - self.t_eq_C
        forward = dT > 0.0
        if forward:
            k_main = _arrhenius(p.forward_prefactor_per_s, p.forward_ea_kJ_mol, T) * -math.expm1(-dT / p.forward_dT_width_C)
            n_main = p.forward_avrami_n
        else:
            k_main = (_arrhenius(p.reverse_prefactor_per_s, p.reverse_ea_kJ_mol, T)
                      * -math.expm1(dT / p.reverse_dT_width_C)
                      * math.exp(-p.reverse_interface_suppression * self.coverage))
            n_main = p.reverse_avrami_n
        direction = 1 if forward else -1
        if direction != self._direction:  # new episode: new nucleation, restart the JMAK clock
            self._direction = direction
            self._fwd_theta = 0.0
            self._rev_theta = 0.0
            if not forward:
                self._revertible = (1.0 - self.coverage) * sum(self.f_black.values())
        k_rc = _arrhenius(p.recryst_prefactor_per_s, p.recryst_ea_kJ_mol, T)
        above_tg = _sigmoid((T - self.tg_C) / p.tg_width_C)
        d_alloy = _arrhenius(p.alloy_D0_nm2_per_s, p.alloy_ea_kJ_mol, T) * (1.0 + p.alloy_glass_enhancement * above_tg)
        k_zni = _arrhenius(p.zni_prefactor_per_s, p.zni_ea_kJ_mol, T)
        k_q = _arrhenius(p.quench_prefactor_per_s, p.quench_ea_kJ_mol, T) * _sigmoid(
            (T - self.tg_C - p.quench_offset_C) / p.quench_width_C)
        k_coarse = _arrhenius(p.coarsening_K0_nm2_per_s, p.coarsening_ea_kJ_mol, T) * (
            1.0 + p.coarsening_glass_enhancement * above_tg)
        s_ba = _sigmoid((T - p.t_beta_alpha_C) / p.polymorph_width_C)
        s_gb = _sigmoid((T - p.t_gamma_beta_C) / p.polymorph_width_C)
        eq_share = {"CsPbI3-gamma": 1.0 - s_gb, "CsPbI3-beta": s_gb * (1.0 - s_ba), "CsPbI3-alpha": s_gb * s_ba}
        relax = math.exp(-h / p.polymorph_tau_s)
        d2_nuc = p.size_black_nucleus_nm ** 2
        # irreversible scalar processes: exact over the whole interval
        self._alloy_sq_nm2 += d_alloy * dt_s
        self.zni_progress = 1.0 - (1.0 - self.zni_progress) * math.exp(-k_zni * dt_s)
        self.quench = 1.0 - (1.0 - self.quench) * math.exp(-k_q * dt_s)
        self._d2_csi += k_coarse * dt_s
        for _ in range(n_sub):
            # recrystallisation of CsI + poorly crystalline into the favoured phase
            th0 = self._rc_theta
            self._rc_theta = th0 + k_rc * h
            pool = self.f_csi + self.f_pc
            if pool > 0.0:
                surv = math.exp(-(self._rc_theta ** p.recryst_avrami_n - th0 ** p.recryst_avrami_n))
                made = pool * (1.0 - surv)
                self.f_csi *= surv
                self.f_pc *= surv
            else:
                made = 0.0
            # δ ↔ black
            black = sum(self.f_black.values())
            if forward:
                th0 = self._fwd_theta
                self._fwd_theta = th0 + k_main * h
                conv = self.f_delta * -math.expm1(-(self._fwd_theta ** n_main - th0 ** n_main))
                self.f_delta -= conv
                gained = conv + made
                if gained > 0.0:
                    self._d2_black = (black * self._d2_black + gained * d2_nuc) / (black + gained)
                for ph in BLACK_PHASES:
                    self.f_black[ph] += gained * eq_share[ph]
            else:
                th0 = self._rev_theta
                self._rev_theta = th0 + k_main * h
                conv = self._revertible * -math.expm1(-(self._rev_theta ** n_main - th0 ** n_main))
                conv = min(conv, black)
                self._revertible -= conv
                if black > 0.0:
                    keep = (black - conv) / black
                    for ph in BLACK_PHASES:
                        self.f_black[ph] *= keep
                gained = conv + made
                if gained > 0.0:
                    self._d2_delta = (self.f_delta * self._d2_delta + conv * self._d2_black + made * d2_nuc) / (
                        self.f_delta + gained)
                self.f_delta += gained
            # fast displacive relaxation of the black polymorphs toward the equilibrium shares
            black = sum(self.f_black.values())
            for ph in BLACK_PHASES:
                target = eq_share[ph] * black
                self.f_black[ph] = target + (self.f_black[ph] - target) * relax
            self._d2_delta += k_coarse * h
            self._d2_black += k_coarse * h
        self.time_s += dt_s

    # ------------------------------------------------------------------ observables
    def _pl(self, active: float) -> PLParameters:
        """PL from the active fraction, alloy passivation, quenching regions and temperature."""
        p, x = self.p, self.x
        alloy = math.sqrt(self._alloy_sq_nm2)
        passivation = p.pl_unpassivated + (1.0 - p.pl_unpassivated) * -math.expm1(-alloy / p.pl_passivation_nm)
        absorption = -math.expm1(-x / p.pl_absorption_x)
        interface = math.exp(-x / p.pl_interface_decay_x)
        tk, rk = self.temperature_C + ZERO_C_K, ROOM_C + ZERO_C_K
        thermal = (1.0 + p.pl_thermal_c * math.exp(-p.pl_thermal_ea_meV / (K_B_MEV_K * rk))) / (
            1.0 + p.pl_thermal_c * math.exp(-p.pl_thermal_ea_meV / (K_B_MEV_K * max(tk, 1.0))))
        intensity = active * passivation * (1.0 - self.quench) * absorption * interface * thermal
        centre_25 = p.pl_centre_nm + p.pl_centre_slope_nm * x
        centre, fwhm = thermal_band(centre_25, p.pl_fwhm_nm, self.temperature_C, p.pl_gap_slope_meV_K,
                                    p.pl_lo_phonon_meV, p.pl_lo_coupling_meV)
        return PLParameters(centre_nm=centre, fwhm_nm=fwhm,
                            urbach_meV=p.pl_urbach_meV + p.pl_urbach_disorder_meV * self.quench,
                            intensity=intensity, fwhm_25C_nm=p.pl_fwhm_nm)

    def _strains(self) -> dict[str, float]:
        """Isotropic lattice strain per crystalline phase from linear thermal expansion."""
        p, T = self.p, self.temperature_C
        return {"CsPbI3-delta": p.cte_delta_per_K * (T - p.tref_delta_C),
                "CsPbI3-gamma": p.cte_black_per_K * (T - p.tref_gamma_C),
                "CsPbI3-beta": p.cte_black_per_K * (T - p.tref_beta_C),
                "CsPbI3-alpha": p.cte_black_per_K * (T - p.tref_alpha_C),
                "CsI": p.cte_csi_per_K * (T - p.tref_csi_C)}

    @property
    def state(self) -> SampleState:
        """Immutable snapshot of the current state (cached until the next advance)."""
        if self._state_cache is not None:
            return self._state_cache
        x = self.x
        wf = {"CsPbI3-delta": x * self.f_delta, **{ph: x * v for ph, v in self.f_black.items()},
              "CsI": x * self.f_csi, "poorly_crystalline": x * self.f_pc, "glass": 1.0 - x}
        wf = {ph: max(0.0, wf[ph]) for ph in PHASES}
        total = sum(wf.values())
        wf = {ph: v / total for ph, v in wf.items()}
        d_black = math.sqrt(self._d2_black)
        sizes = {"CsPbI3-delta": math.sqrt(self._d2_delta), "CsPbI3-gamma": d_black, "CsPbI3-beta": d_black,
                 "CsPbI3-alpha": d_black, "CsI": math.sqrt(self._d2_csi)}
        active = sum(self.f_black.values())
        self._state_cache = SampleState(
            time_s=self.time_s, temperature_C=self.temperature_C, cspbi3_wt_frac=x,
            weight_fractions=MappingProxyType(wf), crystallite_size_nm=MappingProxyType(sizes),
            strain=MappingProxyType(self._strains()), tg_C=self.tg_C, t_eq_C=self.t_eq_C,
            alloy_thickness_nm=math.sqrt(self._alloy_sq_nm2),
            zni_density=self.zni_progress * 4.0 * x * (1.0 - x), zni_progress=self.zni_progress,
            quench_fraction=self.quench, pl=self._pl(active if x > 0.0 else 0.0))
        return self._state_cache

    def truth(self) -> dict[str, float]:
        """Flat JSON-able ground truth of the current state."""
        return self.state.truth()


def ramp(sample: CompositeSample, to_C: float, rate_C_per_min: float, dt_s: float = 1.0) -> None:
    """Drive the sample linearly from its current temperature to to_C (midpoint temperature per step)."""
    start = sample.temperature_C
    span = to_C - start
    if span == 0.0:
        return
    duration = abs(span) / rate_C_per_min * 60.0
    n = max(1, math.ceil(duration / dt_s - 1e-9))
    h = duration / n
    for i in range(n):
        sample.advance(h, start + span * (i + 0.5) / n)
    sample.temperature_C = float(to_C)
    sample._state_cache = None


def hold(sample: CompositeSample, duration_s: float, dt_s: float = 1.0) -> None:
    """Keep the sample at its current temperature for duration_s."""
    n = max(1, math.ceil(duration_s / dt_s - 1e-9))
    for _ in range(n):
        sample.advance(duration_s / n, sample.temperature_C)
