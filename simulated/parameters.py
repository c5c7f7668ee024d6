"""Physics parameters of the simulated (CsPbI3)x(agZIF-62)1-x composite, and the sample specification.

Every number used by `hotstage.simulated.sample` lives in `ModelParameters`, each field with its source:
- "paper" = Li et al., Nat. Commun. 14, 7612 (2023): (CsPbI3)x(agZIF-62)y composites (onsets, Tg, PL maxima).
- "Marronnier 2018" = A. Marronnier et al., ACS Nano 12, 3477 (2018): α→β 554 K (281 °C), β→γ 457 K (184 °C).
- "SOURCES.md" = analysis/data/SOURCES.md (reference temperatures of the structures, CsI expansion).
- "calibrated" = chosen so that the model reproduces the stated behaviour of the paper (see tests/test_physics.py);
  "assumed" = a plausible order of magnitude with no specific source; treat as a tunable.
A sample file (TOML) overrides any field: `[sample] name, cspbi3_wt_frac`, `[model] <field> = value`, top-level `seed`.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

__all__ = ["ModelParameters", "SampleSpec", "SampleConfigError", "load_sample"]


class SampleConfigError(ValueError):
    """A sample file or parameter set is invalid; the message names the file and the key."""


_RULE = "hotstage_rule"


def _param(upper: float, why: str, positive: bool = False) -> Any:
    """A strict (no str, no bool), finite, non-negative (or positive) number at most `upper`, `why` in its
    description. The upper bounds, by unit, are far beyond any calibrated value but below where the model's
    exponentials overflow or stop meaning anything: a value above one is a slip (units, exponent), not a tunable."""
    lower = {"gt": 0.0} if positive else {"ge": 0.0}
    return Annotated[float, Field(strict=True, allow_inf_nan=False, le=upper, description=why, **lower)]


PerKelvin = _param(1e-3, "1/K: thermal expansion of a solid is ~1e-5 1/K")
Celsius = _param(1500.0, "°C: above any hot stage (the Lake Shore 336 reads to 1500 K)")
PositiveCelsius = _param(1500.0, "K, above 0: above any hot stage (the Lake Shore 336 reads to 1500 K)", True)
KJPerMol = _param(1000.0, "kJ/mol: beyond the strongest chemical bonds")
MilliEV = _param(1000.0, "meV: 1 eV is beyond any Urbach or quenching energy here")
PerSecond = _param(1e20, "1/s (or nm²/s): beyond vibrational attempt frequencies (~1e13)")
Nanometres = _param(1e4, "nm: beyond the PL range and the crystallite sizes XRD resolves")
PositiveNanometres = _param(1e4, "nm, above 0: beyond the PL range and the crystallite sizes XRD resolves", True)
PositiveAvrami = _param(4.0, "JMAK exponents lie within 1–4", True)
PositiveSeconds = _param(3600.0, "s, above 0: relaxation and integration steps far shorter than an hour", True)
Factor = _param(1000.0, "a dimensionless factor")
PositiveFactor = _param(1000.0, "a dimensionless factor, above 0", True)
Fraction = _param(1.0, "a fraction within 0–1")


class _OneLineErrors(type(BaseModel)):  # type: ignore[misc]
    """Metaclass: constructing a model from Python raises SampleConfigError with one line (`<Class>: KEY = VALUE:
    why`) instead of pydantic's multi-line ValidationError; nested validation does not go through it."""

    def __call__(cls, **data: Any) -> Any:
        try:
            return super().__call__(**data)
        except ValidationError as exc:
            raise SampleConfigError(one_line(exc, f"<{cls.__name__}>")) from None


class _Model(BaseModel, metaclass=_OneLineErrors):
    """No unknown keys, every assignment validated too (the models are not frozen: tests tune parameters)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelParameters(_Model):
    """All physics parameters of the simulated composite (units in the field names)."""

    # --- as-milled composition, fractions of the CsPbI3-derived mass (assumed; paper: milled powder is mostly δ
    #     with CsI and poorly crystalline material) ---
    milled_frac_csi: Fraction = 0.04  # assumed: weak CsI (110) reflection in the milled powder
    milled_frac_poorly_crystalline: Fraction = 0.10  # assumed: amorphous/PbI2-rich fraction from ball milling

    # --- δ ↔ black (γ/β/α) equilibrium temperature T_eq(x) = T_bulk − ΔT_int · a(x) ---
    t_delta_black_bulk_C: Celsius = 305.0  # paper / DESIGN: pure CsPbI3 δ→α above ~281–320 °C (midpoint-high)
    interface_shift_C: Celsius = 185.0  # calibrated: 40/60 black-phase onset ≈ 150 °C at 10 °C/min (paper)
    interface_kappa: PositiveFactor = 0.118  # calibrated: coverage a(x) = r/(r+κ), r=(1−x)/x; gives γ+δ at x=0.85

    # --- black polymorph sequence (displacive, fast); Marronnier 2018 ---
    t_gamma_beta_C: Celsius = 184.0  # Marronnier 2018 (457 K); DESIGN: β ~184–260 °C on cooling
    t_beta_alpha_C: Celsius = 281.0  # Marronnier 2018 (554 K); DESIGN: α above ~281–320 °C
    polymorph_width_C: PositiveCelsius = 3.0  # assumed: smoothing of the displacive transitions (K)
    polymorph_tau_s: PositiveSeconds = 10.0  # assumed: relaxation time of the displacive transitions (s)

    # --- δ → black (heating, T > T_eq): JMAK with Arrhenius rate k = A exp(−Ea/RT)(1 − exp(−ΔT/w)) ---
    forward_avrami_n: PositiveAvrami = 2.0  # assumed: 2D growth / site-saturated nucleation (JMAK n = 2)
    forward_prefactor_per_s: PerSecond = 7.0e7  # calibrated: onset ≈ 150 °C for 40/60, mostly α at 350 °C for x=1
    forward_ea_kJ_mol: KJPerMol = 80.0  # calibrated: reconstructive δ→black transition, order 10^2 kJ/mol
    forward_dT_width_C: PositiveCelsius = 8.0  # calibrated: driving force saturates within ~10 K of superheating

    # --- black → δ (cooling, T < T_eq): JMAK; only the fraction not stabilised by glass contact reverts ---
    reverse_avrami_n: PositiveAvrami = 2.0  # assumed
    reverse_prefactor_per_s: PerSecond = 2.0  # calibrated: pure CsPbI3 back to δ within minutes at RT (paper)
    reverse_ea_kJ_mol: KJPerMol = 12.0  # calibrated: low barrier (moisture-assisted reversion at ambient)
    reverse_dT_width_C: PositiveCelsius = 40.0  # assumed: driving force saturates with ~40 K undercooling
    reverse_interface_suppression: Factor = 1.5  # calibrated: rate × exp(−s·a(x)); "more so for smaller x"

    # --- recrystallisation of CsI + poorly crystalline into the favoured CsPbI3 phase (JMAK) ---
    recryst_avrami_n: PositiveAvrami = 1.5  # assumed: diffusion-controlled growth
    recryst_prefactor_per_s: PerSecond = 3.0e6  # calibrated: DSC endotherm 110–190 °C (paper); complete by ~300 °C
    recryst_ea_kJ_mol: KJPerMol = 80.0  # assumed

    # --- glass transition (paper: Tg(agZIF-62) ≈ 290 °C, falling with CsPbI3 loading) ---
    tg_glass_C: Celsius = 290.0  # paper
    tg_slope_C: Celsius = 95.0  # calibrated: Tg(x) = Tg0 − slope·x; puts PL maxima at 225/275/300 °C (paper)
    tg_width_C: PositiveCelsius = 6.0  # assumed: width of the viscous-flow switch-on above Tg

    # --- interfacial alloy layer L = sqrt(∫ D dt), D Arrhenius, enhanced above Tg (paper: up to ~10 nm at 350 °C) ---
    alloy_D0_nm2_per_s: PerSecond = 2.6e4  # calibrated: L ≈ 10 nm after 10 °C/min to 350 °C + 10 min (x = 0.4)
    alloy_ea_kJ_mol: KJPerMol = 75.0  # assumed: interdiffusion in a solid glass
    alloy_glass_enhancement: Factor = 8.0  # assumed: D ×(1+8) above Tg (viscous flow)

    # --- Zn–I bonds (paper: appear from ~110 °C, grow with T, persist on cooling); first-order progress y ---
    zni_prefactor_per_s: PerSecond = 4.2e4  # calibrated: y ≈ 1 % at 110 °C on a 10 °C/min ramp
    zni_ea_kJ_mol: KJPerMol = 64.0  # calibrated: y ≈ 0.5 by ~200 °C (end of the DSC endotherm)

    # --- non-stoichiometric (quenching) regions, grow above Tg (paper) ---
    quench_prefactor_per_s: PerSecond = 4.0e-3  # calibrated: PL maxima 10–15 K above Tg(x) for 10-min sintering
    quench_ea_kJ_mol: KJPerMol = 0.0  # calibrated: the switch-on above Tg (viscous flow) sets the T dependence
    quench_offset_C: Celsius = 25.0  # calibrated: with the above, PL maxima at 225/275/300 °C for x = 0.85/0.25/0.01
    quench_width_C: PositiveCelsius = 3.0  # assumed: sharpness of the quenching switch-on

    # --- crystallite sizes: d² growth d(d²)/dt = K0 exp(−Ea/RT)(1 + enhancement above Tg) ---
    size_delta_milled_nm: Nanometres = 25.0  # assumed: ball-milled crystallites, tens of nm
    size_csi_milled_nm: Nanometres = 20.0  # assumed
    size_black_nucleus_nm: PositiveNanometres = 15.0  # assumed: size of newly formed black crystallites
    coarsening_K0_nm2_per_s: PerSecond = 6.0e6  # calibrated: black crystallites ~60–80 nm after 350 °C + 10 min
    coarsening_ea_kJ_mol: KJPerMol = 80.0  # assumed
    coarsening_glass_enhancement: Factor = 4.0  # assumed: viscous glass speeds coarsening above Tg

    # --- thermal expansion (linear, 1/K) and reference temperatures of the built-in structures (SOURCES.md) ---
    cte_black_per_K: PerKelvin = 4.0e-5  # DESIGN: ~4×10⁻⁵ K⁻¹ for the black phases
    cte_delta_per_K: PerKelvin = 3.0e-5  # assumed: δ-CsPbI3, stiffer edge-sharing chains, below the black phases
    cte_csi_per_K: PerKelvin = 4.8e-5  # SOURCES.md: 48–50×10⁻⁶ K⁻¹ (handbook, unchecked)
    tref_alpha_C: Celsius = 360.85  # SOURCES.md: α at 634 K
    tref_beta_C: Celsius = 236.85  # SOURCES.md: β at 510 K
    tref_gamma_C: Celsius = 25.0  # SOURCES.md: γ at RT
    tref_delta_C: Celsius = 19.85  # SOURCES.md: δ at 293 K
    tref_csi_C: Celsius = 25.0  # SOURCES.md: CsI a = 4.5667 Å at ~25 °C

    # --- PL (paper: ~710 nm, shifting with loading; Urbach 15–25 meV; max PLQY at x = 0.05, 275 °C) ---
    pl_centre_nm: Nanometres = 704.0  # calibrated: ~705–716 nm over x = 0–1 (paper: ~710 nm)
    pl_centre_slope_nm: Nanometres = 12.0  # assumed: red shift with loading (larger, less confined crystallites)
    pl_fwhm_nm: Nanometres = 36.0  # assumed: ~90 meV, typical RT CsPbI3 emission
    pl_urbach_meV: MilliEV = 16.0  # paper: Urbach energy 15–25 meV (low end: ordered material)
    pl_urbach_disorder_meV: MilliEV = 8.0  # assumed: added by non-stoichiometric regions (keeps U ≤ 25 meV)
    pl_unpassivated: Fraction = 0.15  # assumed: relative PL of bare (unpassivated) black crystallites
    pl_passivation_nm: PositiveNanometres = 2.0  # assumed: alloy thickness at which passivation saturates (1/e)
    pl_absorption_x: PositiveFactor = 0.03  # calibrated: absorption ∝ 1 − exp(−x/x_a); with the next gives max at x≈0.05
    pl_interface_decay_x: PositiveFactor = 0.5  # calibrated: interfacial enhancement exp(−x/x_i)
    pl_thermal_ea_meV: MilliEV = 60.0  # assumed: thermal quenching activation (order of exciton binding)
    pl_thermal_c: Factor = 3.0  # assumed: thermal quenching prefactor
    # thermal shift and broadening of the band (pl_centre_nm and pl_fwhm_nm above are the 25 °C values):
    # E(T) = E(25 °C) + slope·(T − 25 °C); FWHM(T) = FWHM(25 °C) + γ_LO·[n(T) − n(25 °C)], n = 1/(exp(E_LO/kT) − 1)
    pl_gap_slope_meV_K: Factor = 0.25  # literature: blue shift on heating for CsPbI3 nanocrystals (Yi et al., Nanoscale Adv. 2020, doi:10.1039/D0NA00545B); 0.35 meV/K for CsSnI3 (Yu et al., J. Appl. Phys. 110, 063526 (2011)); 0.25 assumed within that range
    pl_lo_phonon_meV: PositiveFactor = 11.5  # literature: E_LO of lead-iodide perovskites (Wright et al., Nat. Commun. 7, 11755 (2016))
    pl_lo_coupling_meV: MilliEV = 40.0  # literature: Fröhlich γ_LO ≈ 40 meV for lead iodides (Wright et al. 2016)

    # --- integration ---
    max_substep_s: PositiveSeconds = 2.0  # internal sub-step of advance(); results change < 1e-3 below ~5 s

    @model_validator(mode="after")
    def _milled_fractions(self) -> ModelParameters:
        if self.milled_frac_csi + self.milled_frac_poorly_crystalline > 1.0:
            raise PydanticCustomError(_RULE, "{message}", {
                "message": "[model] milled_frac_csi + milled_frac_poorly_crystalline exceeds 1"})
        return self


class SampleSpec(_Model):
    """What is simulated: a name, the CsPbI3 weight fraction x, the physics parameters and an RNG seed."""

    name: str = Field(strict=True, min_length=1, pattern=r"\S", description="the sample's name (not blank), stored with every run")
    cspbi3_wt_frac: float = Field(strict=True, allow_inf_nan=False, ge=0.0, le=1.0,
                                  description="CsPbI3 weight fraction x of (CsPbI3)x(agZIF-62)1-x: within 0–1")
    model: ModelParameters = Field(default_factory=ModelParameters,
                                   description="physics parameters of the simulator (units in the names)")
    seed: int = Field(0, strict=True, ge=0, description="seed of the simulator's random numbers: >= 0")

    @classmethod
    def default(cls) -> SampleSpec:
        """The paper's reference composite (CsPbI3)0.4(agZIF-62)0.6."""
        return cls(name="(CsPbI3)0.4(agZIF-62)0.6", cspbi3_wt_frac=0.4)

    @classmethod
    def composite(cls, x: float, **model_overrides: float) -> SampleSpec:
        """A composite of CsPbI3 weight fraction x with default physics (plus overrides)."""
        y = 1.0 - x
        return cls(name=f"(CsPbI3){x:g}(agZIF-62){y:g}", cspbi3_wt_frac=x, model=ModelParameters(**model_overrides))

    @classmethod
    def from_toml(cls, path: str | Path) -> SampleSpec:
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
    def from_mapping(cls, doc: dict[str, Any], source: str = "<mapping>") -> SampleSpec:
        """Build a spec from a parsed TOML document (same schema as from_toml); one-line SampleConfigError."""
        if not isinstance(doc, dict):
            raise SampleConfigError(f"{source}: expected a table, got {doc!r}")
        for section in ("sample", "model"):
            if section in doc and not isinstance(doc[section], dict):
                raise SampleConfigError(f"{source}: {section!r} must be a table ([{section}])")
        sample = doc.get("sample", {})
        for key in sample:
            if key not in ("name", "cspbi3_wt_frac"):
                raise SampleConfigError(f"{source}: unknown key [sample] {key!r} (allowed: name, cspbi3_wt_frac)")
        data = {key: value for key, value in doc.items() if key != "sample"}
        data["name"] = sample.get("name", cls.default().name)
        data["cspbi3_wt_frac"] = sample.get("cspbi3_wt_frac", cls.default().cspbi3_wt_frac)
        x = data["cspbi3_wt_frac"]
        if "name" not in sample and "cspbi3_wt_frac" in sample and isinstance(x, (int, float)) and not isinstance(x, bool):
            data["name"] = f"(CsPbI3){x:g}(agZIF-62){1.0 - x:g}"
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise SampleConfigError(one_line(exc, source)) from None


def one_line(exc: ValidationError, source: str) -> str:
    """`SOURCE: [model] KEY = VALUE: why (the range's reason)` for the first error, plus `(and N more)`."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = [str(p) for p in first["loc"]]
    section = {"name": "[sample] ", "cspbi3_wt_frac": "[sample] ", "model": "[model] "}.get(loc[0], "") if loc else ""
    key = loc[-1] if loc else ""
    owner: Any = ModelParameters if loc[:1] == ["model"] or source == "<ModelParameters>" else SampleSpec
    if first["type"] == _RULE:
        text = first["ctx"]["message"]
    elif first["type"] == "extra_forbidden":
        text = (f"unknown key {section}{key!r}" if section else
                f"unknown key or section {key!r} (allowed: [sample], [model], seed)")
    else:
        why = first["msg"]
        info = owner.model_fields.get(key)
        if info is not None and "ctx" in first and info.description:
            why = f"{why} ({info.description})"
        text = f"{section}{key} = {first['input']!r}: {why}"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{source}: {text}{more}"


def load_sample(path: str | Path) -> SampleSpec:
    """Read a sample TOML file (alias of SampleSpec.from_toml)."""
    return SampleSpec.from_toml(path)
