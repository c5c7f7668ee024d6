"""The live quantifier's pattern model: instrument and phases → design rows (columns and their derivatives).

y(2θ) = Σₖ bₖ Tₖ(t) + Σⱼ aⱼ Hⱼ(Q) + Σ_p s_p · pattern_p(2θ − z; ε_p, Y_p) (see `hotstage.analysis.phase_quant` for
the physics and sources). This module holds what the model *is*: the axis, the radiation (the instrument's when
there is one), one `PeakModel` per phase (instrumental Gaussian, Lorentzian, FCJ asymmetry, displacement), the
Chebyshev rows, the halo rows (`quant.halos`), and the current nonlinear parameters θ = (ε, Y, z, halo Q/FWHM).
It keeps every design row in one array `M` — linear columns, then ∂/∂ε, ∂/∂Y, ∂/∂z per phase, then ∂/∂Q, ∂/∂W
per halo — brought up to θ by `update_columns`, reading phase columns from sinθ tables (`quant.tables`).

Why the split from the solver: the solver (`quant.solver`) and the warm-start policy (`quant.warm`) only move θ and
ask for rows; which rows are stale (`current`) is tracked here so the normal equations (`quant.gram`) re-multiply
only what changed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from hotstage.analysis.crystal import Crystal
from hotstage.analysis.instrument import Instrument
from hotstage.analysis.profiles import DEFAULT_CAGLIOTI, SCHERRER_K, polarisation_coefficients
from hotstage.analysis.quant.config import QuantConfig
from hotstage.analysis.quant.halos import halo_columns
from hotstage.analysis.quant.tables import STRAIN_WINDOW, WIDTH_WINDOW, PeakModel, PhaseTable, phase_peaks, shifted_axis
from hotstage.analysis.radiation import Radiation

FloatArray = NDArray[np.float64]
Snapshot = tuple[FloatArray, FloatArray, float, FloatArray, FloatArray]

ANTICIPATE: float = 0.6
"""Warm fits re-render a phase's table with its reference strain/width this fraction of the validity window ahead of
the current value in the direction the value is drifting (thermal expansion, coarsening): the table then serves
(1 + ANTICIPATE) windows of drift instead of one. Accuracy is unchanged (the same validity test applies)."""
TABLE_CACHE: int = 3
"""Tables kept per phase (the current one among them), ≤ 0.4 MB each."""
HELD_ZERO_TOLERANCE = 0.002
"""deg: columns of phases held (not refined) follow zero-shift changes only beyond this (≪ any FWHM)."""
ABSENT_ZERO_TOLERANCE = 0.02
"""deg: the same for held phases at zero scale (on their NNLS bound: no part of the model). Their column only
decides whether NNLS releases them, through its overlap with the residual; a lag of 0.02° (a fifth of the
narrowest FWHM, ~0.1°) changes that overlap by a few per cent, and the column follows the zero once released."""


def radiation_of(wavelength: float | Radiation | None, instrument: Instrument | None,
                 caglioti: Sequence[float]) -> Radiation:
    """The quantifier's radiation: the instrument's when there is one (a `wavelength` given as well must agree:
    the same primary wavelength to 1 ppm, or the same Radiation), else `wavelength` (`Radiation.coerce`)."""
    if instrument is None:
        if wavelength is None:
            raise ValueError("give a wavelength (or Radiation) or an instrument")
        return Radiation.coerce(wavelength)
    if tuple(float(c) for c in caglioti) != tuple(DEFAULT_CAGLIOTI):
        raise ValueError("give the instrumental widths either as caglioti or as an instrument, not both")
    rad = instrument.radiation
    if wavelength is not None:
        same = (wavelength == rad if isinstance(wavelength, Radiation)
                else math.isclose(float(wavelength), rad.wavelength, rel_tol=1e-6))
        if not same:
            raise ValueError(f"wavelength {wavelength!r} differs from the instrument's radiation {rad!r}")
    return rad


class PatternModel:
    """Phases, axis and instrument rendered into design rows at the current θ (module doc)."""

    def __init__(self, phases: Sequence[Crystal], two_theta: FloatArray, wavelength: float | Radiation | None,
                 instrument: Instrument | None, cfg: QuantConfig) -> None:
        """Check the phases and axis (ValueError), build the peak models, background and halo rows."""
        self.phases = list(phases)
        if not self.phases:
            raise ValueError("at least one crystalline phase is needed")
        self.names = [c.name for c in self.phases]
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"phase names must be unique, got {self.names}")
        x = np.asarray(two_theta, dtype=np.float64)
        if x.ndim != 1 or x.size < 10 or np.any(np.diff(x) <= 0):
            raise ValueError("two_theta must be a strictly increasing 1-D array of at least 10 points")
        self.cfg = cfg
        self.two_theta = x
        self.instrument = instrument
        self.radiation = radiation_of(wavelength, instrument, cfg.caglioti)
        self.zero0 = 0.0 if instrument is None else float(instrument.zero)
        self.window = float(cfg.window)
        lam = self.radiation.wavelength
        self.width_bounds = (self.y_from_size(cfg.size_bounds_nm[1]), self.y_from_size(cfg.size_bounds_nm[0]))
        self.width_start = self.y_from_size(cfg.size_nm)
        np_ = len(self.phases)
        if isinstance(cfg.strain_start, Mapping):
            self.strain_start = np.array([float(cfg.strain_start.get(n, 0.0)) for n in self.names])
        else:
            self.strain_start = np.full(np_, float(cfg.strain_start))
        margin = cfg.zero_range + abs(self.zero0) + 1.0
        tt_max = min(float(x[-1]) * (1.0 + cfg.strain_search + 0.01) + margin + 2.0, 179.0)
        self.models = [PeakModel(phase_peaks(c, self.radiation, tt_max, cfg.min_relative_intensity), self.radiation,
                                 cfg.caglioti, float(cfg.microstrain), cfg.eta, instrument) for c in self.phases]
        self.norms = np.array([m.pk.norm for m in self.models])
        self.zmv_over_norm = np.array([c.zmv for c in self.phases]) / self.norms
        self.s_lo = math.sin(math.radians(max(float(x[0]) - margin, 0.05)) / 2.0)
        self.s_hi = math.sin(math.radians(min(float(x[-1]) + margin, 179.0)) / 2.0)
        t = 2.0 * (x - x[0]) / (x[-1] - x[0]) - 1.0
        self.bg = np.polynomial.chebyshev.chebvander(t, int(cfg.background_order)).T.copy()
        self.halos = bool(cfg.halos)
        self.halo_q0 = np.array(cfg.halo_q, dtype=float) if self.halos else np.zeros(0)
        self.halo_w0 = np.array(cfg.halo_fwhm_q, dtype=float) if self.halos else np.zeros(0)
        nb, nh = self.bg.shape[0], self.halo_q0.size
        self.nb, self.nh, self.np = nb, nh, np_
        self.off = nb + nh  # first phase row
        self.nl = nb + nh + np_
        self.nonneg = np.zeros(self.nl, dtype=bool)
        self.nonneg[nb:] = True
        self.dx = np.gradient(x)
        self.sin0 = np.sin(np.radians(x) * 0.5)
        self.cos0 = np.cos(np.radians(x) * 0.5)
        self.pol_ab = polarisation_coefficients(self.radiation)
        self.s, self.dsdz, self.pol = np.empty_like(x), np.empty_like(x), np.empty_like(x)
        nl = self.nl
        self.phase_row_sets = [np.array([self.off + p, nl + 3 * p, nl + 3 * p + 1, nl + 3 * p + 2], dtype=np.intp)
                               for p in range(np_)]
        self.halo_row_set = np.r_[np.arange(nb, nb + nh), np.arange(nl + 3 * np_, nl + 3 * np_ + 2 * nh)]
        self.reset()

    def y_from_size(self, d_nm: float) -> float:
        """Lorentzian coefficient Y (deg) of crystallites of size d (Scherrer, K·λ/d)."""
        return math.degrees(SCHERRER_K * self.radiation.wavelength / (10.0 * d_nm))

    def reset(self) -> None:
        """Back to the starting θ with no tables and zero rows (a cold start)."""
        n, np_, nh, nl = self.two_theta.size, self.np, self.nh, self.nl
        self.eps = self.strain_start.copy()
        self.wid = np.full(np_, self.width_start)
        self.zero = self.zero0
        self.hq = self.halo_q0.copy()
        self.hw = self.halo_w0.copy()
        self.tables: list[PhaseTable | None] = [None] * np_
        self.recent_tables: list[list[PhaseTable]] = [[] for _ in range(np_)]  # newest last, TABLE_CACHE each
        self.M = np.zeros((nl + 3 * np_ + 2 * nh, n))
        self.A = self.M[:nl]
        self.A[: self.nb] = self.bg
        self.dphase = self.M[nl:nl + 3 * np_].reshape(np_, 3, n)
        self.dhalo = self.M[nl + 3 * np_:].reshape(nh, 2, n)
        # rows whose Gram entries against each other are current (`quant.gram`); a rewritten row leaves the set
        self.current = np.zeros(self.M.shape[0], dtype=bool)
        self.col_version = 0  # counts row rewrites: cached model curves are of one version
        self.col_key: list[tuple | str | None] = [None] * np_
        self.active = np.ones(np_, dtype=bool)  # inactive phases have a zero column (forward selection)
        self.held: set[int] = set(range(np_))  # phases whose ε/Y were not refined in the last iteration
        self.halo_key: tuple | None = None
        self.halo_derivs = True  # whether halo derivative rows are kept current (set per refinement)
        self.s_key: float | None = None
        self.anticipate = False
        self.drift_eps = np.zeros(np_)
        self.drift_wid = np.zeros(np_)
        self.n_eval = 0

    # ------------------------------------------------------------------ θ
    def get(self) -> Snapshot:
        """Snapshot of the nonlinear parameters."""
        return (self.eps.copy(), self.wid.copy(), self.zero, self.hq.copy(), self.hw.copy())

    def set(self, snap: Snapshot) -> None:
        """Restore a snapshot of the nonlinear parameters."""
        self.eps, self.wid, self.zero, self.hq, self.hw = (snap[0].copy(), snap[1].copy(), snap[2],
                                                           snap[3].copy(), snap[4].copy())

    def bounds(self, kind: str, i: int) -> tuple[float, float]:
        """Lower and upper bound of a nonlinear parameter."""
        cfg = self.cfg
        if kind == "strain":
            return -cfg.strain_range, cfg.strain_range
        if kind == "width":
            return self.width_bounds
        if kind == "zero":
            return self.zero0 - cfg.zero_range, self.zero0 + cfg.zero_range
        if kind == "hq":
            q0 = float(self.halo_q0[i])
            return q0 - cfg.halo_q_bound, q0 + cfg.halo_q_bound
        w0 = float(self.halo_w0[i])
        return w0 * cfg.halo_fwhm_bounds[0], w0 * cfg.halo_fwhm_bounds[1]

    def value(self, kind: str, i: int) -> float:
        """Current value of a nonlinear parameter."""
        if kind == "strain":
            return float(self.eps[i])
        if kind == "width":
            return float(self.wid[i])
        if kind == "zero":
            return self.zero
        return float(self.hq[i] if kind == "hq" else self.hw[i])

    def apply(self, params: list[tuple[str, int]], shift: FloatArray, base: tuple) -> None:
        """Set θ = base + shift, clipped to the bounds."""
        self.set(base)
        for (kind, i), d in zip(params, shift.tolist()):
            lo, hi = self.bounds(kind, i)
            v = min(max(self.value(kind, i) + d, lo), hi)
            if kind == "strain":
                self.eps[i] = v
            elif kind == "width":
                self.wid[i] = v
            elif kind == "zero":
                self.zero = v
            elif kind == "hq":
                self.hq[i] = v
            else:
                self.hw[i] = v

    # ------------------------------------------------------------------ rows
    def axis_sin(self) -> tuple[FloatArray, FloatArray]:
        """sinθ and d(sinθ)/dz on the zero-corrected axis (cached per zero shift)."""
        if self.s_key != self.zero:
            shifted_axis(self.sin0, self.cos0, self.zero, *self.pol_ab, self.s, self.dsdz, self.pol)
            self.s_key = self.zero
        return self.s, self.dsdz

    def touch(self, rows: Sequence[int] | NDArray[np.intp]) -> None:
        """Mark rows of `M` as rewritten: their Gram entries are recomputed when next needed."""
        self.current[rows] = False
        self.col_version += 1

    def deriv_rows(self, params: list[tuple[str, int]]) -> list[int]:
        """Rows of `M` holding the derivatives the refined parameters need (zero: one per refined phase)."""
        nl, np_ = self.nl, self.np
        rows: list[int] = []
        zero_phases = sorted({i for kind, i in params if kind in ("strain", "width")})
        for kind, i in params:
            if kind == "strain":
                rows.append(nl + 3 * i)
            elif kind == "width":
                rows.append(nl + 3 * i + 1)
            elif kind == "zero":
                rows += [nl + 3 * p + 2 for p in zero_phases]
            elif kind == "hq":
                rows.append(nl + 3 * np_ + 2 * i)
            else:
                rows.append(nl + 3 * np_ + 2 * i + 1)
        return rows

    def table(self, p: int) -> PhaseTable:
        """The phase's table, re-rendered at the current (ε, Y) when they left its validity window (unless one of
        the phase's `TABLE_CACHE` most recent tables is valid there: widths jump back and forth at transitions)."""
        tab = self.tables[p]
        eps, wid = self.eps[p], self.wid[p]
        if tab is None or not tab.valid(eps, wid):
            tab = next((t for t in reversed(self.recent_tables[p]) if t.valid(eps, wid)), None)
            self.tables[p] = tab
        if tab is None:
            eps_ref, wid_ref = eps, wid
            if self.anticipate:  # warm: place the reference ahead of a steady drift so the table serves longer
                d_eps, d_wid = self.drift_eps[p], self.drift_wid[p]
                if 0.0 < abs(d_eps) <= 0.5 * STRAIN_WINDOW:
                    eps_ref = eps + math.copysign(ANTICIPATE * STRAIN_WINDOW, d_eps)
                if 0.0 < abs(d_wid) <= 0.5 * WIDTH_WINDOW:
                    wid_ref = wid / (1.0 - math.copysign(ANTICIPATE * WIDTH_WINDOW, d_wid))
            tab = PhaseTable(self.models[p], eps_ref, wid_ref, self.s_lo, self.s_hi, self.window)
            self.tables[p] = tab
            self.recent_tables[p] = (self.recent_tables[p] + [tab])[-TABLE_CACHE:]
        return tab

    def phase_column(self, p: int, strain: float, width: float, col: FloatArray,
                     derivs: tuple[FloatArray, FloatArray, FloatArray] | None = None) -> None:
        """Unit-scale column of phase p at (ε, Y, current z) into `col` and, on request, ∂/∂ε, ∂/∂Y, ∂/∂z into
        `derivs` (`PhaseTable.column`)."""
        s, dsdz = self.axis_sin()
        self.tables[p].column(s, self.pol, dsdz, strain, width, col, derivs)

    def update_columns(self, passive: NDArray[np.bool_] | None, derivs: bool = True) -> None:
        """Bring the design rows (phases, halos) and their derivatives up to the current θ; `passive` (the linear
        solution's free set, None before the first solve) tells which held phases are absent (zero scale)."""
        self.axis_sin()
        nb, off = self.nb, self.off
        changed = False
        for p in range(self.np):
            if not self.active[p]:
                if self.col_key[p] != "off":
                    self.A[off + p] = 0.0
                    self.dphase[p] = 0.0
                    self.col_key[p] = "off"
                    self.touch(self.phase_row_sets[p])
                continue
            key = (self.eps[p], self.wid[p], self.zero)
            old = self.col_key[p]
            held = p in self.held
            derivs_p = derivs and not held
            if isinstance(old, tuple) and old[:2] == key[:2] and (old[3] or not derivs_p) and (
                    old[2] == key[2] or (held and abs(old[2] - key[2]) < self._zero_tolerance(p, passive))):
                continue
            self.table(p)
            d = self.dphase[p]
            self.phase_column(p, self.eps[p], self.wid[p], self.A[off + p], (d[0], d[1], d[2]) if derivs_p else None)
            self.touch(self.phase_row_sets[p])
            self.col_key[p] = key + (derivs_p,)
            changed = True
        if self.nh:
            # derivative rows only when halo Q/FWHM may be refined (cold fits; warm with "halos" in `refine`)
            derivs_h = derivs and self.halo_derivs
            key = (tuple(self.hq), tuple(self.hw), self.zero, derivs_h)
            old = self.halo_key
            if (old is None or old[:2] != key[:2] or abs(old[2] - key[2]) >= HELD_ZERO_TOLERANCE
                    or (derivs_h and not old[3])):
                halo_columns(self.s, 4.0 * math.pi / self.radiation.wavelength, self.hq, self.hw,
                             self.A[nb:off], self.dhalo, derivs_h)
                self.touch(self.halo_row_set)
                self.halo_key = key
                changed = True
        self.n_eval += changed

    def _zero_tolerance(self, p: int, passive: NDArray[np.bool_] | None) -> float:
        """Zero-shift change a held phase's column may lag behind (larger when the phase is at zero scale)."""
        absent = passive is not None and not passive[self.off + p]
        return ABSENT_ZERO_TOLERANCE if absent else HELD_ZERO_TOLERANCE

    def set_column(self, p: int, eps: float, wid: float, col: FloatArray) -> None:
        """Adopt (ε, Y) and an already computed column for phase p (a scan's pick; derivatives on the next update)."""
        self.eps[p], self.wid[p] = eps, wid
        self.col_key[p] = None
        self.A[self.off + p] = col
        self.touch(self.phase_row_sets[p])

    def recentre(self) -> bool:
        """Drop tables whose width node is off-centre (re-rendered on the next update); True if any was."""
        any_ = False
        for p, tab in enumerate(self.tables):
            if tab is not None and not tab.centred(self.wid[p]):
                self.tables[p] = None
                self.recent_tables[p] = [t for t in self.recent_tables[p] if t.centred(self.wid[p])]
                self.col_key[p] = None
                any_ = True
        return any_

    def weight_fractions(self, c: FloatArray) -> FloatArray:
        """Hill–Howard weight fractions s_p(ZMV)_p / Σ sᵢ(ZMV)ᵢ of linear solution `c` (zeros when no phase)."""
        cs = c[self.off:self.nl]
        total = float(self.zmv_over_norm @ cs)
        return self.zmv_over_norm * cs / total if total > 0 else np.zeros_like(cs)

    # ------------------------------------------------------------------ exact model (baselines, checks)
    def strain_step(self, p: int) -> float:
        """Strain step moving the phase's strong peaks by about half their FWHM (grid spacing of the scan)."""
        model = self.models[p]
        tt, area, gauss, lor1 = model.geometry(self.eps[p])
        x = self.two_theta
        sel = (tt > x[0]) & (tt < x[-1]) & (area >= 0.05 * (area.max() if area.size else 0.0))
        if not sel.any():
            return 2e-3
        lor0 = model.lorentz_fixed(self.eps[p])
        fwhm = model.profile(gauss[sel], model.lorentz(self.wid[p], lor1[sel], None if lor0 is None else lor0[sel])
                             )[0]  # the strong peaks' widths only
        th = np.radians(tt[sel]) / 2.0
        return float(np.clip(np.min(0.5 * np.radians(fwhm) / (2.0 * np.tan(th))), 5e-5, 2e-3))

    def exact_phase_pattern(self, phase: int | str, strain: float, width: float, zero: float = 0.0) -> FloatArray:
        """Phase pattern in the Crystal.peaks scale convention (s = 1), rendered from scratch on `two_theta`."""
        p = self.names.index(phase) if isinstance(phase, str) else int(phase)
        m = self.models[p]
        return m.render(self.two_theta, strain, width, zero, self.window) * m.pk.norm

    def halo_shapes(self, q: Sequence[float] | None = None, fwhm: Sequence[float] | None = None,
                    zero: float = 0.0) -> FloatArray:
        """Unit-height Gaussian halos in Q on `two_theta` (rows), as used by the model."""
        q = self.halo_q0 if q is None else np.asarray(q, dtype=float)
        fw = self.halo_w0 if fwhm is None else np.asarray(fwhm, dtype=float)
        out = np.empty((q.size, self.two_theta.size))
        halo_columns(np.sin(np.radians(self.two_theta - zero) / 2.0), 4.0 * math.pi / self.radiation.wavelength,
                     q, fw, out, np.empty((0, 2, 0)), False)
        return out
