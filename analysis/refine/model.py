"""Whole-pattern model of a measured powder pattern: phases, background, amorphous humps, all rendered through an
`Instrument` (the shared input of every refinement).

Where the formulas come from:

- Reflections: the symmetry-unique hkl with |F|²·m fixed from the CIF structure (`Crystal.unique_reflections`); d
  from the refined cell's reciprocal metric, 1/d² = hᵀG*h. The cell refines within the constraints of the crystal
  system of the space group (gemmi): cubic a; tetragonal and hexagonal/trigonal (hexagonal axes) a, c;
  rhombohedral axes a, α; orthorhombic a, b, c; monoclinic a, b, c and the one non-90° angle; triclinic all six.
- Integrated intensity s·w_line·|F|²·m·LP(2θ)·P_MD: the Rietveld convention of `hotstage.analysis.crystal` (so the
  Hill & Howard weight fraction is W_p ∝ s_p·(ZMV)_p), LP of the instrument's radiation
  (`hotstage.analysis.profiles.lorentz_polarisation`).
- Sample broadening: crystallite size as a Lorentzian FWHM K·λ/(L·cosθ) (Scherrer, K = 0.9, Langford & Wilson,
  J. Appl. Cryst. 11, 102 (1978)); microstrain as a GAUSSIAN FWHM 4ε·tanθ (Stokes & Wilson 1944). Gaussian was
  chosen because it is the convention of `hotstage.analysis.profiles` and of the simulator, and because a
  Lorentzian strain term would be nearly degenerate with the Lorentzian size term over a short 2θ range (1/cosθ and
  tanθ differ little below 30° 2θ), while the Gaussian one is separable from the size term by its shape.
  Sample and instrument widths combine as Gaussian FWHMs in quadrature and Lorentzian FWHMs added, then TCH
  (Thompson, Cox & Hastings, J. Appl. Cryst. 20, 79 (1987)) inside `render_instrument_peaks`.
- Preferred orientation: March–Dollase, P(α) = (r² cos²α + sin²α / r)^(−3/2) averaged over the reflection's
  Laue orbit (Dollase, J. Appl. Cryst. 19, 267 (1986)); r = 1 is random.
- Instrument: peak positions 2θ_B + instrument.shift(2θ_B), widths fwhm_gauss/fwhm_lorentz and the FCJ
  asymmetry, all via `hotstage.analysis.instrument.render_instrument_peaks`.
- Background: Chebyshev polynomials T_0 … T_n of t = 2(2θ − 2θ_min)/(2θ_max − 2θ_min) − 1 over the fitted range.
- Amorphous humps (glass halos, capillary, air scatter): Gaussians in 2θ whose centre and FWHM refine within
  bounds (amplitudes are linear, ≥ 0).

Sample-width bound (why a phase cannot become background): the largest sample FWHM a phase may take at the middle
of the fitted range is `max_sample_fwhm` = span / (4·(background_order + 1)), capped at 2°. A Chebyshev series of
order n has n + 1 extrema over the span, so it can itself build bumps of width ≈ span/(n + 1); peaks a quarter of
that width are features the background cannot make, and a "phase" broader than that would be fitting background.
The size bound follows from it (L_min = Kλ/(FWHM_max·cosθ_mid)) and the strain bound from 4ε·tanθ_max = FWHM_max.
Humps are at least twice `max_sample_fwhm` wide so that they cannot turn into Bragg peaks either.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gemmi
import numpy as np
from numpy.typing import NDArray

from hotstage.analysis.crystal import Crystal
from hotstage.analysis.profiles import SCHERRER_K, lorentz_polarisation

if TYPE_CHECKING:
    from hotstage.analysis.instrument import Instrument

FloatArray = NDArray[np.float64]
LN2 = math.log(2.0)

CELL_NAMES = ("a", "b", "c", "alpha", "beta", "gamma")
INSTRUMENT_PARAMETERS = ("zero", "u", "v", "w", "x", "y", "s_l", "h_l", "displacement_um")
"""Instrument fields `refine_instrument` may name (the `Instrument` dataclass's numeric profile fields)."""
MAX_SAMPLE_FWHM_CAP = 2.0
"""Absolute cap (deg) on the sample FWHM a phase may take, whatever the background order."""
MIN_RELATIVE_INTENSITY = 1e-4
"""Reflections weaker than this fraction of the phase's strongest in the fitted range are not rendered: below
1 count where the strongest has 10⁴, and 1e-4 of a phase's intensity spread over its weak high-angle reflections
is far below what weight fractions resolve (the 60,000-point δ-CsPbI3 pattern: 1,478 of 7,917 reflections, 5×
faster renders)."""
RENDER_WINDOW = 15.0
"""Half-width (FWHM) over which each peak is evaluated (beyond it the Lorentzian tail is a flat pedestal of the
missing area, `profiles.render_peaks`): 15 puts the truncation at 1/901 of a Lorentzian's height; the renderer's
default 6 (1/145) biased refined cells by ~1e-4 against patterns drawn with full tails."""
DERIVATIVE_WINDOW = 6.0
"""Half-width (FWHM) of each peak in the Jacobian (`PhaseModel.render_derivatives`): beyond 6 FWHM a Lorentzian's
centre and width derivatives are below 1/(2u³) ≈ 0.2 % and 1/(4u²) ≈ 0.7 % of their scale, so a Jacobian that
omits them steers the Gauss–Newton steps the same, while the residual (rendered to `RENDER_WINDOW`) decides where
the fit ends; 2.5× fewer points than the render window."""
RENDER_POINTS_PER_FWHM = 20
"""Sampling of the narrowest peak below which a phase is rendered on the full grid (see `PhaseModel.render`)."""
CELL_RANGE = 0.03
"""Cell lengths refine within ±3 % of the CIF values, angles within ±3°."""


def _render_peaks(x: FloatArray, centres: FloatArray, areas: FloatArray, fg: FloatArray, fl: FloatArray,
                  instrument: "Instrument") -> FloatArray:
    """Instrument-convolved peaks (the shared renderer of `hotstage.analysis.instrument`), the Gaussian from the
    renderer's exp table (within 2e-6 of the peak height, `profiles._EXP_TABLE`; 1.7× faster renders of a
    60,000-point pattern, and far below the counting noise of any peak)."""
    from hotstage.analysis.instrument import render_instrument_peaks

    return render_instrument_peaks(x, centres, areas, fg, fl, instrument, window=RENDER_WINDOW, fast_exp=True)


def crystal_system(crystal: Crystal) -> str:
    """'cubic', 'tetragonal', 'hexagonal', 'trigonal', 'rhombohedral' (trigonal on rhombohedral axes),
    'orthorhombic', 'monoclinic' or 'triclinic' from gemmi's space group (triclinic when unknown)."""
    sg = gemmi.find_spacegroup_by_name(crystal.spacegroup)
    system = sg.crystal_system_str() if sg is not None else "triclinic"
    if system == "trigonal":
        a, b, c, al, be, ga = crystal.cell
        if abs(ga - 120.0) > 1e-3 and abs(al - 90.0) > 1e-3:
            return "rhombohedral"
    return system


def free_cell_parameters(crystal: Crystal) -> tuple[str, ...]:
    """Names of the independent cell parameters of the crystal's system (see module docstring)."""
    system = crystal_system(crystal)
    if system == "cubic":
        return ("a",)
    if system in ("tetragonal", "hexagonal", "trigonal"):
        return ("a", "c")
    if system == "rhombohedral":
        return ("a", "alpha")
    if system == "orthorhombic":
        return ("a", "b", "c")
    if system == "monoclinic":
        angles = [n for n, v in zip(CELL_NAMES[3:], crystal.cell[3:]) if abs(v - 90.0) > 1e-6]
        return ("a", "b", "c", angles[0] if angles else "beta")
    return CELL_NAMES


def expand_cell(system: str, reference: tuple[float, ...], names: Sequence[str], values: Sequence[float]) \
        -> tuple[float, float, float, float, float, float]:
    """Full (a, b, c, α, β, γ) from the free parameter values under the system's constraints."""
    cell = dict(zip(CELL_NAMES, reference))
    cell.update(dict(zip(names, (float(v) for v in values))))
    if system == "cubic":
        cell["b"] = cell["c"] = cell["a"]
    elif system in ("tetragonal", "hexagonal", "trigonal"):
        cell["b"] = cell["a"]
    elif system == "rhombohedral":
        cell["b"] = cell["c"] = cell["a"]
        cell["beta"] = cell["gamma"] = cell["alpha"]
    return tuple(cell[n] for n in CELL_NAMES)  # type: ignore[return-value]


def reciprocal_metric(cell: Sequence[float]) -> FloatArray:
    """G* = G⁻¹ of a cell (a, b, c in Å, angles in degrees)."""
    a, b, c, al, be, ga = cell
    ca, cb, cg = (math.cos(math.radians(v)) for v in (al, be, ga))
    g = np.array([[a * a, a * b * cg, a * c * cb], [a * b * cg, b * b, b * c * ca], [a * c * cb, b * c * ca, c * c]])
    return np.linalg.inv(g)


def cell_volume(cell: Sequence[float]) -> float:
    """Unit-cell volume (Å³)."""
    a, b, c, al, be, ga = cell
    ca, cb, cg = (math.cos(math.radians(v)) for v in (al, be, ga))
    return a * b * c * math.sqrt(max(1.0 - ca * ca - cb * cb - cg * cg + 2.0 * ca * cb * cg, 0.0))


def max_sample_fwhm(span: float, background_order: int) -> float:
    """Largest sample FWHM (deg) a phase may take: span/(4·(order + 1)), capped (module docstring)."""
    return min(span / (4.0 * (max(int(background_order), 0) + 1)), MAX_SAMPLE_FWHM_CAP)


@dataclass
class PhaseModel:
    """One crystalline phase: fixed |F|²·m per reflection, refinable cell, size, microstrain, March–Dollase r.

    Parameter block (in this order): the free cell parameters, ``inv_size`` (1/L in nm⁻¹, Lorentzian
    Scherrer width), ``strain`` (ε, Gaussian 4ε·tanθ), then ``po`` (March r) when a preferred-orientation direction
    is given.
    """

    crystal: Crystal
    radiation: Any
    two_theta_min: float
    two_theta_max: float
    po_direction: tuple[int, int, int] | None = None
    name: str = ""
    system: str = field(init=False)
    cell_names: tuple[str, ...] = field(init=False)
    decoy_factor: float = field(default=1.0, init=False)
    """Cell lengths are multiplied by this when rendering (1 = the real phase; ≠ 1 makes the significance test's
    decoy: the same phase, as flexible, with its reflections where they are not)."""

    def __post_init__(self) -> None:
        """Enumerate the reflections once, 5 % beyond the range in d so refined cells need no recomputation."""
        self.name = self.name or self.crystal.name
        self.system = crystal_system(self.crystal)
        self.cell_names = free_cell_parameters(self.crystal)
        lams = np.array([w for w, _ in self.radiation.lines])
        self._lams = lams
        self._weights = np.array([r for _, r in self.radiation.lines])
        s = math.sin(math.radians(min(self.two_theta_max + 1.0, 179.0)) / 2.0)
        d_min = float(lams.max()) / (2.0 * s) / (1.0 + CELL_RANGE + 0.02)
        table = self.crystal.unique_reflections(d_min)
        hkl = table["hkl"].astype(float)
        f2m = table["f2"] * table["m"]
        # drop reflections weaker than MIN_RELATIVE_INTENSITY of the strongest in range (at the CIF cell, first line)
        arg = lams[0] / (2.0 * table["d"])
        tt = np.degrees(2.0 * np.arcsin(np.clip(arg, 0.0, 1.0)))
        inside = (arg < 1.0) & (tt >= self.two_theta_min - 1.0) & (tt <= self.two_theta_max + 1.0)
        inten = np.where(inside, f2m * lorentz_polarisation(np.clip(tt, 1e-3, 179.0), self.radiation), 0.0)
        keep = inten >= MIN_RELATIVE_INTENSITY * inten.max() if inten.size and inten.max() > 0 else inten >= 0
        keep |= ~inside & (arg < 1.0 + CELL_RANGE + 0.02)  # reflections that a refined cell may bring in: keep
        self.hkl = hkl[keep]
        self._f2m = f2m[keep]
        h, k, l_ = self.hkl.T
        self._hkl_quadratic = np.column_stack([h * h, k * k, l_ * l_, 2 * h * k, 2 * h * l_, 2 * k * l_])
        self._po_cos2: FloatArray | None = None
        self._geo_cache: tuple | None = None
        self._inst_cache: tuple | None = None
        if self.po_direction is not None:
            self._prepare_po(self.po_direction)

    # ------------------------------------------------------------------ parameters
    @property
    def parameter_names(self) -> tuple[str, ...]:
        """Names of this phase's nonlinear parameters, in vector order."""
        return self.cell_names + ("inv_size", "strain") + (("po",) if self.po_direction is not None else ())

    def start(self, size_nm: float = 200.0, strain: float = 1e-4) -> FloatArray:
        """Starting vector: the CIF cell, `size_nm`, `strain`, random orientation."""
        ref = dict(zip(CELL_NAMES, self.crystal.cell))
        vals = [ref[n] for n in self.cell_names] + [1.0 / size_nm, strain]
        if self.po_direction is not None:
            vals.append(1.0)
        return np.array(vals, dtype=float)

    def bounds(self, max_fwhm: float) -> tuple[FloatArray, FloatArray]:
        """(lower, upper) per parameter: cell ±CELL_RANGE, size and strain from the sample-width bound."""
        ref = dict(zip(CELL_NAMES, self.crystal.cell))
        lo, hi = [], []
        for n in self.cell_names:
            v = ref[n]
            if n in ("a", "b", "c"):
                lo.append(v * (1 - CELL_RANGE))
                hi.append(v * (1 + CELL_RANGE))
            else:
                lo.append(v - 3.0)
                hi.append(v + 3.0)
        mid = 0.5 * (self.two_theta_min + self.two_theta_max)
        lam = float(self._lams[0])
        fw = math.radians(max_fwhm)
        inv_size_max = fw * math.cos(math.radians(mid) / 2.0) / (SCHERRER_K * lam / 10.0)  # 1/nm
        strain_max = fw / (4.0 * math.tan(math.radians(self.two_theta_max) / 2.0))
        lo += [0.0, 0.0]
        hi += [inv_size_max, strain_max]
        if self.po_direction is not None:
            lo.append(0.3)
            hi.append(3.0)
        return np.array(lo), np.array(hi)

    def cell(self, params: Sequence[float]) -> tuple[float, float, float, float, float, float]:
        """Full cell from a parameter block."""
        return expand_cell(self.system, self.crystal.cell, self.cell_names, params[:len(self.cell_names)])

    def zmv(self, params: Sequence[float]) -> float:
        """Z·M·V with the refined cell volume (Hill & Howard)."""
        return self.crystal.z * self.crystal.formula_mass * cell_volume(self.cell(params))

    # ------------------------------------------------------------------ preferred orientation
    def _prepare_po(self, direction: tuple[int, int, int]) -> None:
        """cos² of the angle between each orbit member of every reflection and the PO direction (reciprocal h₀)."""
        ops = self.crystal.laue_operators.astype(float)
        gstar = reciprocal_metric(self.crystal.cell)
        h0 = np.array(direction, dtype=float)
        n0 = math.sqrt(float(h0 @ gstar @ h0))
        images = np.einsum("ni,mij->nmj", self.hkl, ops)  # (n, k, 3) orbit with repeats (harmless for averages)
        dots = np.einsum("nmi,ij,j->nm", images, gstar, h0)
        norms = np.sqrt(np.einsum("nmi,ij,nmj->nm", images, gstar, images))
        self._po_cos2 = np.clip((dots / (norms * n0)) ** 2, 0.0, 1.0)

    @property
    def po_branch_starts(self) -> tuple[float, ...]:
        """Starts of March r on either side of 1 when r = 1 is a stationary point of every reflection's factor
        (else ()).

        dP/dr at r = 1 is −(3/2)(3cos²α − 1); averaged over a reflection's orbit it vanishes whenever the orbit's
        mean cos²α is 1/3, which holds for every reflection of a cubic phase (the cubic point groups make ⟨h hᵀ⟩ ∝ I
        over an orbit), so the random-orientation start is a stationary point: the fit never leaves it, and
        platelets (r < 1) and needles (r > 1) are two branches that agree to second order in ln r. Any smooth
        re-parametrisation keeps the zero slope (chain rule), so the way out is a start off 1 on each branch,
        kept by χ² (`quantify`). ±0.22 in ln r (0.8, 1.25): where the second-order term already moves a strong
        reflection by several % (r = 0.8: P(0°) = 1.95, P(90°) = 0.72), so the two branches' third-order
        difference decides between them, while staying inside the [0.3, 3] bounds and well short of strong texture."""
        if self._po_cos2 is None:
            return ()
        slope = np.mean(3.0 * self._po_cos2 - 1.0, axis=1)
        return (0.8, 1.25) if np.all(np.abs(slope) < 1e-9) else ()

    def _po_factor(self, r: float) -> FloatArray:
        """March–Dollase factor per reflection, averaged over its Laue orbit."""
        c2 = self._po_cos2
        assert c2 is not None
        return np.mean((r * r * c2 + (1.0 - c2) / r) ** -1.5, axis=1)

    # ------------------------------------------------------------------ peaks
    def peaks(self, params: Sequence[float], instrument: "Instrument", blur: float = 0.0) \
            -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, NDArray[np.intp]]:
        """(observed centres, areas at unit scale, Gaussian FWHM, Lorentzian FWHM, reflection index) for all lines.

        `blur` adds a Gaussian FWHM of blur × the instrument FWHM in quadrature (a continuation aid: broad peaks
        first, so a start several FWHM off still converges)."""
        centres, areas, fg, fl, keys = self._lines(params, instrument, blur)
        return centres, areas, fg, fl, keys % self.hkl.shape[0]

    def _lines(self, params: Sequence[float], instrument: "Instrument", blur: float = 0.0,
               keys: NDArray[np.intp] | None = None) \
            -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, NDArray[np.intp]]:
        """`peaks` with each line's key (line index × n_reflections + reflection index) instead of the reflection
        index; `keys` given: exactly those lines (the same peaks at perturbed parameters, for derivatives)."""
        p = np.asarray(params, dtype=float)
        ncell = len(self.cell_names)
        cell = self.cell(p)
        if self.decoy_factor != 1.0:
            cell = tuple(v * self.decoy_factor for v in cell[:3]) + tuple(cell[3:])
        geo = self._geometry(cell, keys)
        keys, tt, ref, lam, areas, cos_th, tan_th = geo
        if self.po_direction is not None:
            areas = areas * self._po_factor(float(p[ncell + 2]))[ref]
        inv_size, strain = float(p[ncell]), float(p[ncell + 1])
        ifl, ifg, shift, ifw = self._instrument_terms(geo, instrument, blur > 0.0)
        fl = ifl + np.degrees(SCHERRER_K * lam * inv_size / 10.0 / cos_th)
        sg = np.degrees(4.0 * abs(strain) * tan_th)
        fg2 = ifg * ifg + sg * sg
        if blur > 0.0:
            fg2 = fg2 + (blur * ifw) ** 2
        fg = np.sqrt(fg2)
        centres = tt + shift
        return centres, areas, fg, fl, keys

    def _geometry(self, cell: tuple[float, ...], keys: NDArray[np.intp] | None) -> tuple:
        """(keys, 2θ, reflection index, λ, areas without March–Dollase, cosθ, tanθ) of the lines at `cell`; the
        last result is kept (a Jacobian perturbs size, strain, March r and the instrument at the same cell)."""
        hit = self._geo_cache
        if hit is not None and hit[0] == cell and (hit[1] is keys or (keys is not None and keys is hit[2][0])):
            return hit[2]
        from_keys = keys
        gstar = reciprocal_metric(cell)
        # 1/d² = hᵀG*h as one product with the precomputed (h², k², l², 2hk, 2hl, 2kl)
        inv_d2 = self._hkl_quadratic @ np.array([gstar[0, 0], gstar[1, 1], gstar[2, 2], gstar[0, 1], gstar[0, 2],
                                                 gstar[1, 2]])
        half_d = 0.5 * np.sqrt(np.maximum(inv_d2, 0.0))  # 1/(2d)
        arg = (self._lams[:, None] * half_d[None, :]).ravel()  # line-major: key = line · n_refl + reflection
        nref = self.hkl.shape[0]
        if keys is None:
            ok = np.flatnonzero(arg < 1.0)
            tt = np.degrees(2.0 * np.arcsin(arg[ok]))
            margin = 1.0
            sel = (tt > self.two_theta_min - margin) & (tt < self.two_theta_max + margin)
            keys, tt = ok[sel], tt[sel]
        else:
            tt = np.degrees(2.0 * np.arcsin(np.minimum(arg[keys], 1.0 - 1e-15)))
        ref = keys % nref
        line = keys // nref
        lam = self._lams[line]
        areas = self._weights[line] * self._f2m[ref] * lorentz_polarisation(tt, self.radiation)
        th = np.radians(tt) / 2.0
        geo = (keys, tt, ref, lam, areas, np.cos(th), np.tan(th))
        self._geo_cache = (cell, from_keys, geo)
        return geo

    def _instrument_terms(self, geo: tuple, instrument: "Instrument", total: bool) \
            -> tuple[FloatArray, FloatArray, FloatArray, FloatArray | None]:
        """Instrument Lorentzian and Gaussian FWHM, shift (and total FWHM when `total`) at the lines of `geo`;
        the last result is kept."""
        hit = self._inst_cache
        if hit is not None and hit[0] is geo and hit[1] == instrument and (hit[2][3] is not None or not total):
            return hit[2]
        tt = geo[1]
        out = (instrument.fwhm_lorentz(tt), instrument.fwhm_gauss(tt), instrument.shift(tt),
               instrument.fwhm(tt) if total else None)
        self._inst_cache = (geo, instrument, out)
        return out

    def _grid_step(self, x: FloatArray, fg: FloatArray, fl: FloatArray) -> int:
        """Every how many points of x this phase is evaluated (see `render`)."""
        step = (float(x[-1]) - float(x[0])) / max(x.size - 1, 1)
        narrowest = float(np.min(np.maximum(fg, fl)))
        s = int(narrowest / (RENDER_POINTS_PER_FWHM * step)) if step > 0 else 1
        return s if s >= 2 and x.size > 4 * s else 1

    def render_derivatives(self, x: FloatArray, params: Sequence[float], instrument: "Instrument",
                           perturbed: Sequence[tuple[FloatArray, "Instrument", float]], blur: float = 0.0) \
            -> FloatArray:
        """∂render/∂θ_j on x, one column per (parameter block, instrument, step h) of `perturbed` (θ + h·e_j).

        Each peak's centre, FWHM, η and ln(area) are differenced at the line level (cheap: no rendering); the
        profile's own derivatives are analytic (`profiles.render_peak_derivatives`), so all columns cost about
        two renders. The FCJ kernel is held at θ (its weights and offsets change slowly with 2θ and FWHM)."""
        from hotstage.analysis.instrument import fcj_kernel
        from hotstage.analysis.profiles import render_peak_derivatives, tch_combine

        m = len(perturbed)
        centres, areas, fg, fl, keys = self._lines(params, instrument, blur)
        if centres.size == 0 or m == 0:
            return np.zeros((x.size, m))
        fw, eta = tch_combine(fg, fl)
        fw = np.maximum(fw, 1e-6)
        dc = np.empty((centres.size, m))
        dw = np.empty((centres.size, m))
        de = np.empty((centres.size, m))
        da = np.empty((centres.size, m))
        safe = np.where(areas > 0, areas, 1.0)
        for j, (block, inst_j, h) in enumerate(perturbed):
            c2, a2, g2, l2, _ = self._lines(block, inst_j, blur, keys)
            fw2, eta2 = tch_combine(g2, l2)
            dc[:, j] = (c2 - centres) / h
            dw[:, j] = (np.maximum(fw2, 1e-6) - fw) / h
            de[:, j] = (eta2 - eta) / h
            da[:, j] = np.where(areas > 0, (a2 - areas) / (h * safe), 0.0)
        s = self._grid_step(x, fg, fl)
        xs = x[np.unique(np.r_[np.arange(0, x.size, s), x.size - 1])] if s > 1 else x
        if instrument.symmetric:
            out = render_peak_derivatives(xs, centres, areas, fw, eta, dc, dw, de, da, window=DERIVATIVE_WINDOW)
        else:
            off, wts = fcj_kernel(centres, instrument.s_l, instrument.h_l, fw)
            keep = wts > 0
            rows = np.nonzero(keep)[0]
            out = render_peak_derivatives(xs, (centres[:, None] + off)[keep], (areas[:, None] * wts)[keep],
                                          fw[rows], eta[rows], dc, dw, de, da, row=rows,
                                          window=DERIVATIVE_WINDOW)
        if s > 1:
            out = np.column_stack([np.interp(x, xs, out[:, j]) for j in range(m)])
        return out

    def render(self, x: FloatArray, params: Sequence[float], instrument: "Instrument", blur: float = 0.0) \
            -> FloatArray:
        """This phase's pattern at unit scale on the sorted grid x."""
        centres, areas, fg, fl, _ = self.peaks(params, instrument, blur)
        if centres.size == 0:
            return np.zeros_like(x)
        # broad peaks (a decoy or a phase at its width bound: FWHM hundreds of steps) are evaluated on every s-th
        # point and interpolated linearly, s such that the narrowest peak keeps ≥ RENDER_POINTS_PER_FWHM points
        # (peak-top interpolation error ≤ (π²/8)·ln2·4/RENDER_POINTS_PER_FWHM² ≈ 0.2 %)
        s = self._grid_step(x, fg, fl)
        if s > 1:
            idx = np.unique(np.r_[np.arange(0, x.size, s), x.size - 1])
            coarse = _render_peaks(x[idx], centres, areas, fg, fl, instrument)
            return np.interp(x, x[idx], coarse)
        return _render_peaks(x, centres, areas, fg, fl, instrument)


def chebyshev_basis(x: FloatArray, order: int, lo: float, hi: float) -> FloatArray:
    """Columns T_0 … T_order of t = 2(x − lo)/(hi − lo) − 1, shape (n, order + 1)."""
    t = 2.0 * (np.asarray(x, dtype=float) - lo) / max(hi - lo, 1e-12) - 1.0
    out = np.empty((t.size, order + 1))
    out[:, 0] = 1.0
    if order >= 1:
        out[:, 1] = t
    for k in range(2, order + 1):
        out[:, k] = 2.0 * t * out[:, k - 1] - out[:, k - 2]
    return out


def hump(x: FloatArray, centre: float, fwhm: float) -> FloatArray:
    """Unit-height Gaussian hump in 2θ."""
    u = (np.asarray(x, dtype=float) - centre) / fwhm
    return np.exp(-4.0 * LN2 * u * u)
