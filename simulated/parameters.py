"""Physics parameters of the simulated (CsPbI3)x(agZIF-62)1-x composite, and the sample specification.

Every number used by `hotstage.simulated.sample` lives in `ModelParameters`, each field with its source:
- "paper" = Li et al., Nat. Commun. 14, 7612 (2023): (CsPbI3)x(agZIF-62)y composites (onsets, Tg, PL maxima).
- "Marronnier 2018" = A. Marronnier et al., ACS Nano 12, 3477 (2018): α→β 554 K (281 °C), β→γ 457 K (184 °C).
- "SOURCES.md" = /work/shared/data/cif/SOURCES.md (reference temperatures of the structures, CsI expansion).
- "calibrated" = chosen so that the model reproduces the stated behaviour of the paper (see tests/test_physics.py);
  "assumed" = a plausible order of magnitude with no specific source; treat as a tunable.
A sample file (TOML) overrides any field: `[sample] name, cspbi3_wt_frac`, `[model] <field> = value`, top-level `seed`.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ModelParameters", "SampleSpec", "SampleConfigError", "load_sample"]


class SampleConfigError(ValueError):
    """A sample file or parameter set is invalid; the message names the file and the key."""


@dataclass
class ModelParameters:
    """All physics parameters of the simulated composite (units in the field names)."""

    # --- as-milled composition, fractions of the CsPbI3-derived mass (assumed; paper: milled powder is mostly δ
    #     with CsI and poorly crystalline material) ---
    milled_frac_csi: float = 0.04  # assumed: weak CsI (110) reflection in the milled powder
    milled_frac_poorly_crystalline: float = 0.10  # assumed: amorphous/PbI2-rich fraction from ball milling

    # --- δ ↔ black (γ/β/α) equilibrium temperature T_eq(x) = T_bulk − ΔT_int · a(x) ---
    t_delta_black_bulk_C: float = 305.0  # paper / DESIGN: pure CsPbI3 δ→α above ~281–320 °C (midpoint-high)
    interface_shift_C: float = 185.0  # calibrated: 40/60 black-phase onset ≈ 150 °C at 10 °C/min (paper)
    interface_kappa: float = 0.118  # calibrated: coverage a(x) = r/(r+κ), r=(1−x)/x; gives γ+δ at x=0.85

    # --- black polymorph sequence (displacive, fast); Marronnier 2018 ---
    t_gamma_beta_C: float = 184.0  # Marronnier 2018 (457 K); DESIGN: β ~184–260 °C on cooling
    t_beta_alpha_C: float = 281.0  # Marronnier 2018 (554 K); DESIGN: α above ~281–320 °C
    polymorph_width_C: float = 3.0  # assumed: smoothing of the displacive transitions (K)
    polymorph_tau_s: float = 10.0  # assumed: relaxation time of the displacive transitions (s)

    # --- δ → black (heating, T > T_eq): JMAK with Arrhenius rate k = A exp(−Ea/RT)(1 − exp(−ΔT/w)) ---
    forward_avrami_n: float = 2.0  # assumed: 2D growth / site-saturated nucleation (JMAK n = 2)
    forward_prefactor_per_s: float = 7.0e7  # calibrated: onset ≈ 150 °C for 40/60, mostly α at 350 °C for x=1
    forward_ea_kJ_mol: float = 80.0  # calibrated: reconstructive δ→black transition, order 10^2 kJ/mol
    forward_dT_width_C: float = 8.0  # calibrated: driving force saturates within ~10 K of superheating

    # --- black → δ (cooling, T < T_eq): JMAK; only the fraction not stabilised by glass contact reverts ---
    reverse_avrami_n: float = 2.0  # assumed
    reverse_prefactor_per_s: float = 2.0  # calibrated: pure CsPbI3 back to δ within minutes at RT (paper)
    reverse_ea_kJ_mol: float = 12.0  # calibrated: low barrier (moisture-assisted reversion at ambient)
    reverse_dT_width_C: float = 40.0  # assumed: driving force saturates with ~40 K undercooling
    reverse_interface_suppression: float = 1.5  # calibrated: rate × exp(−s·a(x)); "more so for smaller x"

    # --- recrystallisation of CsI + poorly crystalline into the favoured CsPbI3 phase (JMAK) ---
    recryst_avrami_n: float = 1.5  # assumed: diffusion-controlled growth
    recryst_prefactor_per_s: float = 3.0e6  # calibrated: DSC endotherm 110–190 °C (paper); complete by ~300 °C
    recryst_ea_kJ_mol: float = 80.0  # assumed

    # --- glass transition (paper: Tg(agZIF-62) ≈ 290 °C, falling with CsPbI3 loading) ---
    tg_glass_C: float = 290.0  # paper
    tg_slope_C: float = 95.0  # calibrated: Tg(x) = Tg0 − slope·x; puts PL maxima at 225/275/300 °C (paper)
    tg_width_C: float = 6.0  # assumed: width of the viscous-flow switch-on above Tg

    # --- interfacial alloy layer L = sqrt(∫ D dt), D Arrhenius, enhanced above Tg (paper: up to ~10 nm at 350 °C) ---
    alloy_D0_nm2_per_s: float = 2.6e4  # calibrated: L ≈ 10 nm after 10 °C/min to 350 °C + 10 min (x = 0.4)
    alloy_ea_kJ_mol: float = 75.0  # assumed: interdiffusion in a solid glass
    alloy_glass_enhancement: float = 8.0  # assumed: D ×(1+8) above Tg (viscous flow)

    # --- Zn–I bonds (paper: appear from ~110 °C, grow with T, persist on cooling); first-order progress y ---
    zni_prefactor_per_s: float = 4.2e4  # calibrated: y ≈ 1 % at 110 °C on a 10 °C/min ramp
    zni_ea_kJ_mol: float = 64.0  # calibrated: y ≈ 0.5 by ~200 °C (end of the DSC endotherm)

    # --- non-stoichiometric (quenching) regions, grow above Tg (paper) ---
    quench_prefactor_per_s: float = 4.0e-3  # calibrated: PL maxima 10–15 K above Tg(x) for 10-min sintering
    quench_ea_kJ_mol: float = 0.0  # calibrated: the switch-on above Tg (viscous flow) sets the T dependence
    quench_offset_C: float = 25.0  # calibrated: with the above, PL maxima at 225/275/300 °C for x = 0.85/0.25/0.01
    quench_width_C: float = 3.0  # assumed: sharpness of the quenching switch-on

    # --- crystallite sizes: d² growth d(d²)/dt = K0 exp(−Ea/RT)(1 + enhancement above Tg) ---
    size_delta_milled_nm: float = 25.0  # assumed: ball-milled crystallites, tens of nm
    size_csi_milled_nm: float = 20.0  # assumed
    size_black_nucleus_nm: float = 15.0  # assumed: size of newly formed black crystallites
    coarsening_K0_nm2_per_s: float = 6.0e6  # calibrated: black crystallites ~60–80 nm after 350 °C + 10 min
    coarsening_ea_kJ_mol: float = 80.0  # assumed
    coarsening_glass_enhancement: float = 4.0  # assumed: viscous glass speeds coarsening above Tg

    # --- thermal expansion (linear, 1/K) and reference temperatures of the built-in structures (SOURCES.md) ---
    cte_black_per_K: float = 4.0e-5  # DESIGN: ~4×10⁻⁵ K⁻¹ for the black phases
    cte_delta_per_K: float = 3.0e-5  # assumed: δ-CsPbI3, stiffer edge-sharing chains, below the black phases
    cte_csi_per_K: float = 4.8e-5  # SOURCES.md: 48–50×10⁻⁶ K⁻¹ (handbook, unchecked)
    tref_alpha_C: float = 360.85  # SOURCES.md: α at 634 K
    tref_beta_C: float = 236.85  # SOURCES.md: β at 510 K
    tref_gamma_C: float = 25.0  # SOURCES.md: γ at RT
    tref_delta_C: float = 19.85  # SOURCES.md: δ at 293 K
    tref_csi_C: float = 25.0  # SOURCES.md: CsI a = 4.5667 Å at ~25 °C

    # --- PL (paper: ~710 nm, shifting with loading; Urbach 15–25 meV; max PLQY at x = 0.05, 275 °C) ---
    pl_centre_nm: float = 704.0  # calibrated: ~705–716 nm over x = 0–1 (paper: ~710 nm)
    pl_centre_slope_nm: float = 12.0  # assumed: red shift with loading (larger, less confined crystallites)
    pl_fwhm_nm: float = 36.0  # assumed: ~90 meV, typical RT CsPbI3 emission
    pl_urbach_meV: float = 16.0  # paper: Urbach energy 15–25 meV (low end: ordered material)
    pl_urbach_disorder_meV: float = 8.0  # assumed: added by non-stoichiometric regions (keeps U ≤ 25 meV)
    pl_unpassivated: float = 0.15  # assumed: relative PL of bare (unpassivated) black crystallites
    pl_passivation_nm: float = 2.0  # assumed: alloy thickness at which passivation saturates (1/e)
    pl_absorption_x: float = 0.03  # calibrated: absorption ∝ 1 − exp(−x/x_a); with the next gives max at x≈0.05
    pl_interface_decay_x: float = 0.5  # calibrated: interfacial enhancement exp(−x/x_i)
    pl_thermal_ea_meV: float = 60.0  # assumed: thermal quenching activation (order of exciton binding)
    pl_thermal_c: float = 3.0  # assumed: thermal quenching prefactor

    # --- integration ---
    max_substep_s: float = 2.0  # internal sub-step of advance(); results change < 1e-3 below ~5 s

    def __post_init__(self) -> None:
        """Reject non-finite or negative values (every parameter here is a non-negative physical quantity)."""
        validate_parameters(self)


# Upper bounds by unit (the field name's suffix), each far beyond any calibrated value but below where the model's
# exponentials overflow or stop meaning anything: a value above one is a slip (units, exponent), not a tunable.
_UPPER_BOUNDS: tuple[tuple[str, float, str], ...] = (
    ("_per_K", 1e-3, "thermal expansion of a solid is ~1e-5 1/K"),
    ("_C", 1500.0, "°C: above any hot stage (the Lake Shore 336 reads to 1500 K)"),
    ("_kJ_mol", 1000.0, "kJ/mol: beyond the strongest chemical bonds"),
    ("_meV", 1000.0, "meV: 1 eV is beyond any Urbach or quenching energy here"),
    ("_per_s", 1e20, "1/s (or nm²/s): beyond vibrational attempt frequencies (~1e13)"),
    ("_nm", 1e4, "nm: beyond the PL range and the crystallite sizes XRD resolves"),
    ("_avrami_n", 4.0, "JMAK exponents lie within 1–4"),
    ("_s", 3600.0, "s: relaxation and integration steps far shorter than an hour"),
    ("", 1000.0, "a dimensionless factor"),
)


def _upper_bound(name: str) -> tuple[float, str]:
    """The largest sensible value of a parameter (by its unit suffix) and why."""
    for suffix, bound, why in _UPPER_BOUNDS:
        if name.endswith(suffix):
            return bound, why
    raise AssertionError("unreachable: the last suffix matches every name")


def validate_parameters(p: ModelParameters, source: str = "<ModelParameters>") -> None:
    """Raise SampleConfigError for non-finite or out-of-range parameter values."""
    for f in dataclasses.fields(p):
        v = getattr(p, f.name)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise SampleConfigError(f"{source}: [model] {f.name} = {v!r}: must be a finite number")
        if v < 0.0:
            raise SampleConfigError(f"{source}: [model] {f.name} = {v!r}: must be >= 0")
        bound, why = _upper_bound(f.name)
        if v > bound:
            raise SampleConfigError(f"{source}: [model] {f.name} = {v!r}: must be at most {bound:g} ({why})")
    positive = ("forward_avrami_n", "reverse_avrami_n", "recryst_avrami_n", "polymorph_tau_s",
                "max_substep_s", "polymorph_width_C", "tg_width_C", "quench_width_C", "pl_passivation_nm",
                "pl_absorption_x", "pl_interface_decay_x", "interface_kappa", "forward_dT_width_C",
                "reverse_dT_width_C", "size_black_nucleus_nm")
    for name in positive:
        if getattr(p, name) <= 0.0:
            raise SampleConfigError(f"{source}: [model] {name} = {getattr(p, name)!r}: must be > 0")
    for name in ("milled_frac_csi", "milled_frac_poorly_crystalline", "pl_unpassivated"):
        if getattr(p, name) > 1.0:
            raise SampleConfigError(f"{source}: [model] {name} = {getattr(p, name)!r}: must be within 0–1")
    if p.milled_frac_csi + p.milled_frac_poorly_crystalline > 1.0:
        raise SampleConfigError(f"{source}: [model] milled_frac_csi + milled_frac_poorly_crystalline exceeds 1")


@dataclass
class SampleSpec:
    """What is simulated: a name, the CsPbI3 weight fraction x, the physics parameters and an RNG seed."""

    name: str
    cspbi3_wt_frac: float
    model: ModelParameters = field(default_factory=ModelParameters)
    seed: int = 0

    def __post_init__(self) -> None:
        """Validate the composition (0 ≤ x ≤ 1)."""
        x = self.cspbi3_wt_frac
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0.0 <= x <= 1.0:
            raise SampleConfigError(f"<SampleSpec>: [sample] cspbi3_wt_frac must be within 0–1, got {x!r}")
        self.cspbi3_wt_frac = float(x)

    @classmethod
    def default(cls) -> "SampleSpec":
        """The paper's reference composite (CsPbI3)0.4(agZIF-62)0.6."""
        return cls(name="(CsPbI3)0.4(agZIF-62)0.6", cspbi3_wt_frac=0.4)

    @classmethod
    def composite(cls, x: float, **model_overrides: float) -> "SampleSpec":
        """A composite of CsPbI3 weight fraction x with default physics (plus overrides)."""
        y = 1.0 - x
        return cls(name=f"(CsPbI3){x:g}(agZIF-62){y:g}", cspbi3_wt_frac=x,
                   model=ModelParameters(**model_overrides))

    @classmethod
    def from_toml(cls, path: str | Path) -> "SampleSpec":
        """Read a sample file: `[sample] name, cspbi3_wt_frac`, `[model] <ModelParameters field>`, top-level `seed`."""
        path = Path(path)
        src = str(path)
        try:
            with path.open("rb") as fh:
                doc = tomllib.load(fh)
        except OSError as exc:
            raise SampleConfigError(f"{src}: cannot read sample file ({exc})") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SampleConfigError(f"{src}: invalid TOML ({exc})") from exc
        return cls.from_mapping(doc, source=src)

    @classmethod
    def from_mapping(cls, doc: dict[str, Any], source: str = "<mapping>") -> "SampleSpec":
        """Build a spec from a parsed TOML document (same schema as from_toml)."""
        for key in doc:
            if key not in ("sample", "model", "seed"):
                raise SampleConfigError(f"{source}: unknown key or section {key!r} (allowed: [sample], [model], seed)")
        sample = doc.get("sample", {})
        model = doc.get("model", {})
        for sec_name, sec in (("sample", sample), ("model", model)):
            if not isinstance(sec, dict):
                raise SampleConfigError(f"{source}: {sec_name!r} must be a table ([{sec_name}])")
        for key in sample:
            if key not in ("name", "cspbi3_wt_frac"):
                raise SampleConfigError(f"{source}: unknown key [sample] {key!r} (allowed: name, cspbi3_wt_frac)")
        default = cls.default()
        name = sample.get("name", default.name)
        if not isinstance(name, str) or not name.strip():
            raise SampleConfigError(f"{source}: [sample] name = {name!r}: must be a non-empty string")
        x = sample.get("cspbi3_wt_frac", default.cspbi3_wt_frac)
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0.0 <= x <= 1.0:
            raise SampleConfigError(f"{source}: [sample] cspbi3_wt_frac = {x!r}: must be a number within 0–1")
        if "cspbi3_wt_frac" in sample and "name" not in sample:
            name = f"(CsPbI3){x:g}(agZIF-62){1.0 - x:g}"
        seed = doc.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise SampleConfigError(f"{source}: seed = {seed!r}: must be a non-negative integer")
        fields = {f.name for f in dataclasses.fields(ModelParameters)}
        kwargs: dict[str, float] = {}
        for key, value in model.items():
            if key not in fields:
                raise SampleConfigError(f"{source}: unknown key [model] {key!r}")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SampleConfigError(f"{source}: [model] {key} = {value!r}: must be a number")
            kwargs[key] = float(value)
        try:
            params = ModelParameters(**kwargs)
        except SampleConfigError as exc:
            raise SampleConfigError(str(exc).replace("<ModelParameters>", source)) from None
        return cls(name=name, cspbi3_wt_frac=float(x), model=params, seed=seed)


def load_sample(path: str | Path) -> SampleSpec:
    """Read a sample TOML file (alias of SampleSpec.from_toml)."""
    return SampleSpec.from_toml(path)
