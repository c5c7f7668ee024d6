"""Crystal structures read from CIF files and their powder diffraction (reflections, peaks, patterns).

Where the numbers and formulas come from:

- CIF reading: gemmi's small-structure reader (``gemmi.make_small_structure_from_block``); the space group
  is taken from the file's symmetry operators when present (so non-standard settings such as Pnam work),
  else from its Hall or Hermann–Mauguin symbol. Every site is expanded with all operators and images closer
  than 0.01 Å are merged (special positions), keeping the file's site occupancy.
- X-ray form factors: IT92 nine-coefficient Gaussian fits, f(s) = Σ aᵢ exp(−bᵢ s²) + c with s = sinθ/λ
  (International Tables for Crystallography Vol. C, Table 6.1.1.4, Waasmaier-free IT92 set) as shipped by
  gemmi (``gemmi.Element(...).it92``; ionic entries via ``gemmi.IT92_get_exact`` when the CIF type symbol carries
  a charge, e.g. ``I1-``). Anomalous dispersion (f′, f″) is not included.
- Displacement: isotropic T = exp(−8π² U s²); anisotropic T = exp(−2π² Σ hᵢ hⱼ aᵢ* aⱼ* Uᵢⱼ) with the tensor
  rotated to every symmetry image (Trueblood et al., *Acta Cryst.* A52, 770 (1996)). B values are converted
  by gemmi (U = B/8π²). When a site has no displacement parameter at all, ``DEFAULT_UISO`` = 0.025 Å²
  (B ≈ 2.0 Å²) is used: a typical room-temperature value for heavy-atom inorganic solids, between the refined
  U_eq of δ-CsPbI3 at 293 K (0.028–0.035 Å², Stoumpos et al. 2013) and those of harder ionic solids.
- Multiplicity: size of the hkl orbit under the Laue group (the point group plus Friedel's law), counted
  directly on the enumerated reciprocal lattice.
- Integrated intensity (``peaks``/``pattern``): I = w_line · |F|² · m · LP(2θ), the Rietveld convention
  (Rietveld, *J. Appl. Cryst.* 2, 65 (1969)): with the pattern computed this way, a fitted scale s_p satisfies
  Hill & Howard, *J. Appl. Cryst.* 20, 467 (1987): W_p = s_p (ZMV)_p / Σ s_i (ZMV)_i, because the physical
  intensity is ∝ (W_p/ρ_p)·|F|²mLP/V_p² and ρ_p V_p² = (ZMV)_p. (Dividing the pattern by V² as well would make
  the weight fraction ∝ s·ZM/V instead; see tests/test_diffraction.py, cell-choice invariance test.)
- LP factors and peak shapes: :mod:`hotstage.analysis.profiles`; Cu Kα wavelengths: :mod:`hotstage.analysis.radiation`.
- Formula mass from gemmi's standard atomic weights (IUPAC); Z from ``_cell_formula_units_Z``, else from
  ``_chemical_formula_sum``, else the greatest common divisor of the cell contents.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import gemmi
import numpy as np
from numpy.typing import ArrayLike, NDArray

from .profiles import DEFAULT_CAGLIOTI, DEFAULT_WINDOW, caglioti_fwhm, lorentz_polarisation, \
    microstrain_fwhm, render_peaks, scherrer_fwhm, tch_combine
from .radiation import Radiation

DEFAULT_UISO: float = 0.025
"""Isotropic U (Å²) used when a CIF gives none for a site (see module docstring)."""
MERGE_TOLERANCE_ANGSTROM: float = 0.01
"""Symmetry images closer than this are the same atom (special positions)."""
_STRAIN_MARGIN: float = 0.05
"""Cached reflection lists extend 5 % further in d so strains up to ±5 % need no recomputation."""

_BUILTINS: dict[str, str] = {
    "CsPbI3-alpha": "CsPbI3_alpha.cif",
    "CsPbI3-beta": "CsPbI3_beta.cif",
    "CsPbI3-gamma": "CsPbI3_gamma.cif",
    "CsPbI3-delta": "CsPbI3_delta.cif",
    "CsI": "CsI.cif",
}


@dataclass(frozen=True)
class Site:
    """One asymmetric-unit site: element, charge, fractional position, occupancy and displacement (Å²)."""

    label: str
    element: str
    charge: int
    fract: tuple[float, float, float]
    occupancy: float
    uiso: float
    uaniso: tuple[float, float, float, float, float, float] | None = None  # U11 U22 U33 U12 U13 U23


@dataclass(frozen=True)
class ReflectionTable:
    """Symmetry-unique reflections sorted by 2θ; intensity is relative (strongest = 100), with m and LP."""

    h: NDArray[np.int64]
    k: NDArray[np.int64]
    l: NDArray[np.int64]
    d: NDArray[np.float64]
    two_theta: NDArray[np.float64]
    multiplicity: NDArray[np.int64]
    f_squared: NDArray[np.float64]
    intensity: NDArray[np.float64]

    def __len__(self) -> int:
        """Number of symmetry-unique reflections."""
        return int(self.d.size)


@functools.lru_cache(maxsize=None)
def _it92(element: str, charge: int) -> tuple[NDArray[np.float64], NDArray[np.float64], float]:
    """IT92 (a[4], b[4], c) for an element/ion, falling back to the neutral atom when the ion is not tabulated."""
    el = gemmi.Element(element)
    coef = None
    if charge:
        previous = gemmi.IT92_get_ignore_charge()
        try:
            gemmi.IT92_set_ignore_charge(False)
            coef = gemmi.IT92_get_exact(el, int(charge))
        finally:
            gemmi.IT92_set_ignore_charge(previous)
    if coef is None:
        coef = el.it92
    if coef is None:
        raise ValueError(f"no IT92 form factor for element {element!r}")
    c = coef.get_coefs()
    return np.array(c[0:4], dtype=float), np.array(c[4:8], dtype=float), float(c[8])


def form_factor(element: str, charge: int, s2: ArrayLike) -> NDArray[np.float64]:
    """IT92 X-ray form factor (electrons) at s² = (sinθ/λ)² in Å⁻²."""
    a, b, c = _it92(element, int(charge))
    s2 = np.asarray(s2, dtype=float)
    return (a[:, None] * np.exp(-b[:, None] * s2.ravel()[None, :])).sum(axis=0).reshape(s2.shape) + c


def _metric(cell: tuple[float, float, float, float, float, float]) -> NDArray[np.float64]:
    """Direct-space metric tensor G of a cell (a, b, c in Å, angles in degrees)."""
    a, b, c, al, be, ga = cell
    ca, cb, cg = (math.cos(math.radians(x)) for x in (al, be, ga))
    return np.array([[a * a, a * b * cg, a * c * cb], [a * b * cg, b * b, b * c * ca], [a * c * cb, b * c * ca, c * c]])


def _cif_text(block: gemmi.cif.Block, tag: str) -> str | None:
    """Single CIF value as text, None when absent or '?'/'.'."""
    v = block.find_value(tag)
    if v is None or v in ("?", "."):
        return None
    return gemmi.cif.as_string(v)


def _citation(block: gemmi.cif.Block) -> str:
    """Human-readable citation built from the block's _citation/_citation_author or _journal items."""
    authors = [gemmi.cif.as_string(x) for x in block.find_values("_citation_author_name")]
    if not authors:
        authors = [gemmi.cif.as_string(x) for x in block.find_values("_publ_author_name")]
    parts: list[str] = []
    def first(tag: str) -> str:
        col = block.find_values(tag)
        return gemmi.cif.as_string(col[0]) if len(col) and col[0] not in ("?", ".") else ""

    vals = [first("_citation_" + t) for t in ("journal_full", "journal_abbrev", "journal_volume", "page_first",
                                                 "year", "doi")]
    if any(vals):
        journal = vals[0] or vals[1]
        ref = journal
        if vals[2]:
            ref += f" {vals[2]}"
        if vals[3]:
            ref += f", {vals[3]}"
        if vals[4]:
            ref += f" ({vals[4]})"
        parts.append(ref.strip())
        if vals[5]:
            parts.append(f"doi:{vals[5]}")
    else:
        journal = _cif_text(block, "_journal_name_full") or ""
        for tag, fmt in (("_journal_volume", " {}"), ("_journal_page_first", ", {}"), ("_journal_year", " ({})")):
            v = _cif_text(block, tag)
            if v:
                journal += fmt.format(v)
        if journal:
            parts.append(journal.strip())
        doi = _cif_text(block, "_journal_paper_doi") or _cif_text(block, "_citation_doi")
        if doi:
            parts.append(f"doi:{doi}")
    text = ", ".join(p for p in parts if p)
    if authors:
        text = "; ".join(authors) + (", " + text if text else "")
    return text


def _sites_with_adp(block: gemmi.cif.Block) -> set[str]:
    """Labels of sites for which the CIF gives any displacement parameter (U or B, iso or aniso)."""
    have: set[str] = set()
    for tag in ("_atom_site_U_iso_or_equiv", "_atom_site_B_iso_or_equiv"):
        t = block.find(["_atom_site_label", tag])
        for row in t:
            if row[1] not in ("?", "."):
                have.add(gemmi.cif.as_string(row[0]))
    for tag in ("_atom_site_aniso_U_11", "_atom_site_aniso_B_11"):
        t = block.find(["_atom_site_aniso_label", tag])
        for row in t:
            if row[1] not in ("?", "."):
                have.add(gemmi.cif.as_string(row[0]))
    return have


def _parse_formula(text: str) -> dict[str, float]:
    """Parse a CIF formula sum like 'Cs I3 Pb' into element counts."""
    out: dict[str, float] = {}
    for sym, n in re.findall(r"([A-Z][a-z]?)([0-9.]*)", text):
        out[sym] = out.get(sym, 0.0) + (float(n) if n else 1.0)
    return out


class Crystal:
    """A crystal structure (cell, space-group operators, sites) that computes its powder diffraction."""

    def __init__(self, name: str, cell: tuple[float, float, float, float, float, float], spacegroup: str,
                 sites: tuple[Site, ...], symops: tuple[str, ...], z: int, formula_mass: float,
                 citation: str = "") -> None:
        """Build from explicit data; usually use `from_cif` or `builtin`."""
        self.name = name
        self.cell = tuple(float(x) for x in cell)
        self.spacegroup = spacegroup
        self.sites = tuple(sites)
        self.symops = tuple(symops)
        self.z = int(z)
        self.formula_mass = float(formula_mass)
        self.citation = citation
        g = _metric(self.cell)  # type: ignore[arg-type]
        self._volume = float(math.sqrt(np.linalg.det(g)))
        self._gstar = np.linalg.inv(g)
        self._expand()
        self._hkl_cache: tuple[float, dict[str, NDArray]] | None = None
        self._line_cache: dict[tuple, tuple] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_cif(cls, path: str | Path, name: str | None = None, *, default_uiso: float = DEFAULT_UISO) -> "Crystal":
        """Read the first block with atom sites from a CIF; sites without ADPs get `default_uiso` (Å²)."""
        path = Path(path)
        doc = gemmi.cif.read(str(path))
        block = next((b for b in doc if b.find_value("_atom_site_fract_x") is not None
                      or len(b.find(["_atom_site_fract_x"]))), None)
        if block is None:
            raise ValueError(f"{path}: no _atom_site_fract_x in any data block")
        small = gemmi.make_small_structure_from_block(block)
        if small.symops:
            ops = gemmi.GroupOps([gemmi.Op(t) for t in small.symops])
            sg = gemmi.find_spacegroup_by_ops(ops)
            sg_name = sg.xhm() if sg is not None else (small.spacegroup_hm or "P 1")
        elif small.spacegroup is not None:
            sg_name = small.spacegroup.xhm()
            ops = small.spacegroup.operations()
        else:
            raise ValueError(f"{path}: no symmetry operators and no recognised space-group symbol")
        symops = tuple(op.triplet() for op in ops)
        with_adp = _sites_with_adp(block)
        sites = []
        for s in small.sites:
            if s.occ <= 0:
                continue
            aniso = None
            if s.aniso.nonzero():
                a = s.aniso
                aniso = (a.u11, a.u22, a.u33, a.u12, a.u13, a.u23)
            uiso = float(s.u_iso) if s.label in with_adp else float(default_uiso)
            sites.append(Site(s.label, s.element.name, int(s.charge), tuple(float(x) for x in s.fract.tolist()),
                              float(s.occ), uiso, aniso))
        cell = (small.cell.a, small.cell.b, small.cell.c, small.cell.alpha, small.cell.beta, small.cell.gamma)
        # cell contents -> Z and formula mass
        counts: dict[str, float] = {}
        tmp = cls(name or path.stem, cell, sg_name, tuple(sites), symops, 1, 1.0)
        for el, occ in zip(tmp._atom_element, tmp._atom_occ):
            counts[el] = counts.get(el, 0.0) + occ
        cell_mass = sum(gemmi.Element(el).weight * n for el, n in counts.items())
        z_text = _cif_text(block, "_cell_formula_units_Z")
        formula_text = _cif_text(block, "_chemical_formula_sum")
        if z_text is not None:
            z = int(round(float(z_text)))
        elif formula_text:
            f = _parse_formula(formula_text)
            el0 = max(f, key=lambda e: f[e])
            z = max(1, int(round(counts.get(el0, 0.0) / f[el0])))
        else:
            rounded = [int(round(n)) for n in counts.values()]
            z = functools.reduce(math.gcd, rounded) if all(abs(n - r) < 1e-6 for n, r in
                                                           zip(counts.values(), rounded)) else 1
            z = max(z, 1)
        name = name or _cif_text(block, "_chemical_name_common") or path.stem
        return cls(name, cell, sg_name, tuple(sites), symops, z, cell_mass / z, _citation(block))

    @classmethod
    def builtin(cls, name: str) -> "Crystal":
        """One of the phases shipped in analysis/data (case-insensitive name, see `builtin_names`)."""
        key = {k.lower(): k for k in _BUILTINS}.get(name.lower())
        if key is None:
            raise KeyError(f"unknown built-in phase {name!r}; choose from {cls.builtin_names()}")
        return _load_builtin(key)

    @staticmethod
    def builtin_names() -> tuple[str, ...]:
        """Names accepted by `builtin`."""
        return tuple(_BUILTINS)

    def __repr__(self) -> str:
        """Short description for logs."""
        a, b, c, al, be, ga = self.cell
        return (f"Crystal({self.name!r}, {self.spacegroup}, a={a:.4f} b={b:.4f} c={c:.4f} "
                f"α={al:g} β={be:g} γ={ga:g}, Z={self.z})")

    # ------------------------------------------------------------------ properties
    @property
    def volume(self) -> float:
        """Unit-cell volume in Å³."""
        return self._volume

    @property
    def zmv(self) -> float:
        """Z·M·V (formula units per cell × g/mol per formula unit × Å³) for Hill–Howard QPA."""
        return self.z * self.formula_mass * self._volume

    @property
    def density(self) -> float:
        """Calculated density in g/cm³ (Z·M / (N_A·V))."""
        return self.z * self.formula_mass / (0.602214076 * self._volume)

    # ------------------------------------------------------------------ symmetry expansion
    def _expand(self) -> None:
        """Expand sites to all unit-cell atoms, keeping each image's rotation for ADP transformation."""
        ops = [gemmi.Op(t) for t in self.symops]
        rots = np.array([np.array(op.rot, dtype=float) / op.DEN for op in ops])
        trans = np.array([np.array(op.tran, dtype=float) / op.DEN for op in ops])
        gdir = _metric(self.cell)
        astar = np.sqrt(np.diag(self._gstar))
        pos, occ, els, charges, uiso, beta = [], [], [], [], [], []
        for s in self.sites:
            f = np.array(s.fract)
            imgs = rots @ f + trans
            imgs -= np.floor(imgs + 1e-9)
            keep: list[int] = []
            for i, x in enumerate(imgs):
                dup = False
                for j in keep:
                    dx = x - imgs[j]
                    dx -= np.round(dx)
                    if math.sqrt(float(dx @ gdir @ dx)) < MERGE_TOLERANCE_ANGSTROM:
                        dup = True
                        break
                if not dup:
                    keep.append(i)
            if s.uaniso is not None:
                u11, u22, u33, u12, u13, u23 = s.uaniso
                u = np.array([[u11, u12, u13], [u12, u22, u23], [u13, u23, u33]])
                b0 = 2.0 * math.pi ** 2 * (astar[:, None] * u * astar[None, :])
            for i in keep:
                pos.append(imgs[i])
                occ.append(s.occupancy)
                els.append(s.element)
                charges.append(s.charge)
                if s.uaniso is not None:
                    r = rots[i]
                    beta.append(r @ b0 @ r.T)
                    uiso.append(np.nan)
                else:
                    beta.append(np.zeros((3, 3)))
                    uiso.append(s.uiso)
        self._atom_pos = np.array(pos).reshape(-1, 3)
        self._atom_occ = np.array(occ, dtype=float)
        self._atom_element = els
        self._atom_charge = charges
        self._atom_uiso = np.array(uiso, dtype=float)
        self._atom_beta = np.array(beta).reshape(-1, 3, 3)
        species = sorted(set(zip(els, charges)))
        self._species = species
        self._atom_species = np.array([species.index(sc) for sc in zip(els, charges)], dtype=int)
        laue = {tuple(np.rint(r).astype(int).ravel()) for r in rots}
        mats = [np.array(m).reshape(3, 3) for m in laue]
        mats += [-m for m in mats]
        uniq = {tuple(m.ravel()) for m in mats}
        self._laue = np.array([np.array(m).reshape(3, 3) for m in sorted(uniq)], dtype=np.int64)

    # ------------------------------------------------------------------ reflections
    def _unique_hkl(self, d_min: float) -> dict[str, NDArray]:
        """Symmetry-unique, non-absent hkl with d ≥ d_min: hkl, d, multiplicity, |F|² (cached, λ-independent)."""
        if self._hkl_cache is not None and self._hkl_cache[0] <= d_min:
            full = self._hkl_cache[1]
            sel = full["d"] >= d_min
            return {k: v[sel] for k, v in full.items()}
        a, b, c = self.cell[:3]
        hmax, kmax, lmax = (int(math.floor(x / d_min)) + 1 for x in (a, b, c))
        h, k, l = np.meshgrid(np.arange(-hmax, hmax + 1), np.arange(-kmax, kmax + 1), np.arange(-lmax, lmax + 1),
                              indexing="ij")
        hkl = np.stack([h.ravel(), k.ravel(), l.ravel()], axis=1)
        inv_d2 = np.einsum("ni,ij,nj->n", hkl, self._gstar, hkl)
        sel = (inv_d2 > 0) & (inv_d2 <= 1.0 / d_min ** 2 * (1 + 1e-12))
        hkl = hkl[sel]
        # canonical representative of each Laue orbit: max integer key over all images h·R
        images = np.einsum("ni,mij->mnj", hkl, self._laue)
        # every image has the same d, so |h| <= a/d_min etc. still holds: the box bounds the key
        nk, nl = 2 * kmax + 1, 2 * lmax + 1
        keys = ((images[..., 0] + hmax) * nk + (images[..., 1] + kmax)) * nl + (images[..., 2] + lmax)
        canon = keys.max(axis=0)
        _, first, counts = np.unique(canon, return_index=True, return_counts=True)
        # use the image with the max key as representative (prefers positive indices)
        best = keys.argmax(axis=0)[first]
        reps = images[best, first]
        mult = counts.astype(np.int64)
        inv_d2 = np.einsum("ni,ij,nj->n", reps, self._gstar, reps)
        d = 1.0 / np.sqrt(inv_d2)
        f2 = self._f_squared(reps, 0.25 * inv_d2)
        scale = max(float(np.max(f2)) if f2.size else 0.0, 1.0)
        present = f2 > 1e-9 * scale
        order = np.argsort(-d[present], kind="stable")
        full = {"hkl": reps[present][order], "d": d[present][order], "m": mult[present][order],
                "f2": f2[present][order]}
        self._hkl_cache = (d_min, full)
        return full

    def unique_reflections(self, d_min: float) -> dict[str, NDArray]:
        """Copies of the symmetry-unique, non-absent reflections with d ≥ d_min (Å) of the file's cell, sorted by
        decreasing d: ``hkl`` (n, 3), ``d`` (Å), ``m`` (multiplicity), ``f2`` (|F|², λ-independent) — for
        refinements that recompute d from a refined cell while keeping |F|²·m fixed."""
        return {k: v.copy() for k, v in self._unique_hkl(float(d_min)).items()}

    @property
    def laue_operators(self) -> NDArray[np.int64]:
        """Integer rotation matrices (k, 3, 3) of the Laue group acting on row vectors hkl (h' = h·R): the orbit of a
        reflection, e.g. for March–Dollase preferred-orientation averages."""
        return self._laue.copy()

    def _f_squared(self, hkl: NDArray, s2: NDArray) -> NDArray[np.float64]:
        """|F(hkl)|² with IT92 form factors, occupancies and displacement factors (no anomalous dispersion)."""
        out = np.empty(len(hkl))
        chunk = max(1, 2_000_000 // max(1, len(self._atom_occ)))
        fs = np.array([form_factor(el, ch, s2) for el, ch in self._species]).reshape(len(self._species), -1)
        iso = ~np.isnan(self._atom_uiso)
        for start in range(0, len(hkl), chunk):
            sl = slice(start, start + chunk)
            hh = hkl[sl].astype(float)
            phase = 2.0 * math.pi * hh @ self._atom_pos.T  # (n, atoms)
            t = np.empty_like(phase)
            if iso.any():
                t[:, iso] = np.exp(-8.0 * math.pi ** 2 * np.outer(s2[sl], self._atom_uiso[iso]))
            if (~iso).any():
                t[:, ~iso] = np.exp(-np.einsum("ni,aij,nj->na", hh, self._atom_beta[~iso], hh))
            amp = fs[self._atom_species][:, sl].T * self._atom_occ * t
            re = (amp * np.cos(phase)).sum(axis=1)
            im = (amp * np.sin(phase)).sum(axis=1)
            out[sl] = re * re + im * im
        return out

    def reflections(self, wavelength: float | Radiation, two_theta_max: float,
                    two_theta_min: float = 0.0) -> ReflectionTable:
        """Symmetry-unique reflections between the 2θ limits for the primary line, with relative intensities."""
        rad = Radiation.coerce(wavelength)
        lam = rad.wavelength
        d_min = lam / (2.0 * math.sin(math.radians(min(two_theta_max, 179.999)) / 2.0))
        data = self._unique_hkl(d_min)
        tt = np.degrees(2.0 * np.arcsin(np.clip(lam / (2.0 * data["d"]), -1, 1)))
        sel = (tt >= two_theta_min) & (tt <= two_theta_max)
        tt = tt[sel]
        f2 = data["f2"][sel]
        m = data["m"][sel]
        inten = f2 * m * lorentz_polarisation(tt, rad)
        if inten.size:
            inten = 100.0 * inten / inten.max()
        hkl = data["hkl"][sel]
        return ReflectionTable(hkl[:, 0].copy(), hkl[:, 1].copy(), hkl[:, 2].copy(), data["d"][sel], tt, m, f2, inten)

    # ------------------------------------------------------------------ peaks and patterns
    def _lines(self, rad: Radiation, two_theta_max: float) -> tuple:
        """Cached per-(radiation, 2θ limit) arrays: d0, |F|²·m, line wavelengths and weights."""
        key = (rad, round(float(two_theta_max), 6))
        hit = self._line_cache.get(key)
        if hit is not None:
            return hit
        lam_max = max(w for w, _ in rad.lines)
        s = math.sin(math.radians(min(two_theta_max, 179.999)) / 2.0)
        d_min = max(lam_max / (2.0 * s), lam_max / 2.0 * 1.000001) / (1.0 + _STRAIN_MARGIN)
        data = self._unique_hkl(d_min)
        lams = np.array([w for w, _ in rad.lines])
        weights = np.array([r for _, r in rad.lines])
        hit = (data["d"].copy(), data["f2"] * data["m"], lams, weights)
        if len(self._line_cache) > 32:
            self._line_cache.clear()
        self._line_cache[key] = hit
        return hit

    def peaks(self, radiation: float | Radiation, two_theta_max: float,
              strain: float = 0.0) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Peak centres (deg) and integrated intensities w·|F|²·m·LP for every line, flattened line after line."""
        rad = Radiation.coerce(radiation)
        tt, inten, _ = self._peak_arrays(rad, two_theta_max, strain)
        sel = tt <= two_theta_max
        return tt[sel], inten[sel]

    def _peak_arrays(self, rad: Radiation, two_theta_max: float,
                     strain: float) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """Unfiltered (2θ, intensity, wavelength) over all lines for a strained cell; NaN-free."""
        d0, f2m, lams, weights = self._lines(rad, two_theta_max)
        d = d0 * (1.0 + strain)
        arg = lams[:, None] / (2.0 * d[None, :])
        ok = arg < 1.0
        tt = np.degrees(2.0 * np.arcsin(arg[ok]))
        inten = (weights[:, None] * f2m[None, :])[ok] * lorentz_polarisation(tt, rad)
        lam_each = np.broadcast_to(lams[:, None], arg.shape)[ok]
        return tt, inten, lam_each

    def pattern(self, two_theta: ArrayLike, wavelength: float | Radiation, *, strain: float = 0.0,
                size_nm: float | None = None, microstrain: float = 0.0,
                caglioti: tuple[float, float, float] = DEFAULT_CAGLIOTI, eta: float | None = 0.5,
                zero_shift: float = 0.0, scale: float = 1.0, window: float = DEFAULT_WINDOW) -> NDArray[np.float64]:
        """Powder pattern on a sorted 2θ grid (deg): pseudo-Voigt peaks with areas scale·w·|F|²·m·LP.

        Widths: Caglioti and microstrain (Gaussian) with Scherrer size (Lorentzian) combined by TCH; `eta`
        fixes the Lorentzian fraction (None = TCH η). Peaks appear at 2θ + zero_shift.
        """
        x = np.asarray(two_theta, dtype=float)
        if x.size == 0:
            return np.zeros(0)
        rad = Radiation.coerce(wavelength)
        u, v, w = caglioti
        fw_c = caglioti_fwhm(np.array([x[-1]]), u, v, w)[0] if x.size else 0.0
        limit = float(x[-1]) - zero_shift + window * max(fw_c, 0.05) * 2.0 + 1.0
        limit = min(limit, 179.0)
        tt, inten, lams = self._peak_arrays(rad, limit, strain)
        if tt.size == 0:
            return np.zeros_like(x)
        fw_g = caglioti_fwhm(tt, u, v, w)
        if microstrain:
            fw_g = np.sqrt(fw_g * fw_g + microstrain_fwhm(microstrain, tt) ** 2)
        if size_nm is not None and np.isfinite(size_nm):
            fw_l = scherrer_fwhm(size_nm, 1.0, tt) * lams
        else:
            fw_l = np.zeros_like(tt)
        fwhm, eta_tch = tch_combine(fw_g, fw_l)
        fwhm = np.maximum(fwhm, 1e-6)
        e = eta_tch if eta is None else eta
        return render_peaks(x, tt + zero_shift, scale * inten, fwhm, e, window)


@functools.lru_cache(maxsize=None)
def _load_builtin(key: str) -> Crystal:
    """Load (once) a built-in phase from the package's data directory."""
    ref = resources.files(__package__).joinpath("data", _BUILTINS[key])
    with resources.as_file(ref) as p:
        return Crystal.from_cif(p, name=key)
