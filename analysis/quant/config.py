"""Settings of live phase quantification in one frozen dataclass (what `PhaseQuantifier`'s keyword arguments set).

Why a dataclass: the quantifier is three parts — the pattern model (`quant.model`), the solver (`quant.solver`) and
the warm-start policy (`quant.warm`) — that read the same settings; one validated record passed to each replaces 27
loose constructor arguments copied onto one class. Defaults and their reasons are documented at
`hotstage.analysis.phase_quant` (module doc) and on the fields below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from hotstage.analysis.profiles import DEFAULT_CAGLIOTI

DEFAULT_HALO_Q: tuple[float, ...] = (1.09, 2.40, 3.49)
"""Glass halo centres, Å⁻¹ (ZIF glass F(Q) maxima, Gaillac et al. 2017; SOURCES.md)."""
DEFAULT_HALO_FWHM_Q: tuple[float, ...] = (0.45, 0.75, 0.9)
"""Starting halo FWHMs, Å⁻¹ (assumed: broad amorphous maxima)."""
TABLE_WINDOW: float = 20.0
"""Half-width, in FWHM, over which the phase tables render each peak (`render_peaks`; beyond it the Lorentzian tail's
area is a flat pedestal). 20, not the renderer's default 6: at 6 the pedestal holds 5 % of a Lorentzian's area and
its steps at ±6 FWHM (tens of counts beside a strong, broad line) are misfit a fit pays for with wrong fractions —
found when the simulator got its own profile code (exact Voigt tails, `hotstage.simulated.diffractometer`): pure
α at 350 °C came out 5.5 wt % low (β, δ soaking up the steps), within 0.7 wt % at 20 (0.3 % of the area left as
pedestal, steps 1/1601 of the height). Cold fits cost about the same (renders are a small part)."""
REFINABLE = frozenset({"strain", "width", "zero", "halos"})
"""What `QuantConfig.refine` may list."""


@dataclass(frozen=True)
class QuantConfig:
    """Model, solver and warm-start settings (units: strain dimensionless, angles deg, Q Å⁻¹, sizes nm).

    Model: `background_order` (Chebyshev), `halos` with starting `halo_q`/`halo_fwhm_q`, the fixed instrumental
    Gaussian `caglioti` (U, V, W) plus `microstrain`, a fixed η (`eta`, None: TCH), the starting `size_nm` (sets Y₀)
    and `strain_start` (one value or per phase name), `min_relative_intensity` of the reflections kept and the
    render `window` (FWHM). Solver: `refine` ⊆ {"strain", "width", "zero", "halos"}, the bounds (`strain_range`,
    `size_bounds_nm`, `zero_range`, `halo_q_bound`, `halo_fwhm_bounds` as factors), the cold `strain_search`, the
    significance gates (`min_significance` s.u., `min_fraction_strain`, `min_fraction_width`) and iteration caps.
    """

    background_order: int = 8
    halos: bool = True
    halo_q: tuple[float, ...] = DEFAULT_HALO_Q
    halo_fwhm_q: tuple[float, ...] = DEFAULT_HALO_FWHM_Q
    halo_q_bound: float = 0.1
    halo_fwhm_bounds: tuple[float, float] = (0.6, 1.5)
    refine: frozenset[str] = frozenset({"strain", "width", "zero"})
    caglioti: tuple[float, float, float] = DEFAULT_CAGLIOTI
    microstrain: float = 0.0
    eta: float | None = None
    size_nm: float = 50.0
    strain_start: float | Mapping[str, float] = field(default=0.0, hash=False)
    strain_range: float = 0.03
    strain_search: float = 0.015
    size_bounds_nm: tuple[float, float] = (2.0, 10_000.0)
    zero_range: float = 0.3
    min_relative_intensity: float = 1e-3
    window: float = TABLE_WINDOW
    min_significance: float = 5.0
    min_fraction_strain: float = 0.0
    min_fraction_width: float = 0.01
    max_iterations: int = 40
    warm_iterations: int = 20

    def __post_init__(self) -> None:
        """Normalise sequences to tuples/frozensets and refuse unknown refine options (ValueError)."""
        refine = frozenset(self.refine)
        unknown = refine - REFINABLE
        if unknown:
            raise ValueError(f"unknown refine options {sorted(unknown)}; choose from {sorted(REFINABLE)}")
        object.__setattr__(self, "refine", refine)
        object.__setattr__(self, "halo_q", tuple(float(v) for v in self.halo_q))
        object.__setattr__(self, "halo_fwhm_q", tuple(float(v) for v in self.halo_fwhm_q))
        object.__setattr__(self, "caglioti", tuple(float(v) for v in self.caglioti))
        object.__setattr__(self, "halo_fwhm_bounds", (float(self.halo_fwhm_bounds[0]),
                                                      float(self.halo_fwhm_bounds[1])))
        object.__setattr__(self, "size_bounds_nm", (float(self.size_bounds_nm[0]), float(self.size_bounds_nm[1])))
