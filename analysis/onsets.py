"""Onsets on ramp series: the detection temperature (first k·σ crossing) and the extrapolated onset.

**Detected onset** (`onset`, `OnsetDetector`). DESIGN.md, "Analysis methods / Derivatives": onset = first
temperature where the band amplitude exceeds k·σ of the noise for m consecutive points.  Defaults k = 3 (one-sided
false-alarm probability 0.13 % per point for Gaussian noise) and m = 3 (a run of three independent false alarms
≈ 2·10⁻⁹) — conventional detection-limit choices (IUPAC "3σ" limit of detection), not fitted to anything.  This is
the thermal-analysis "first deviation from the baseline" (ASTM E2550-17's onset for TG curves): it answers *when was
the change first seen*, so it moves with the size of the signal — a sample with twice the loading crosses k·σ
earlier for the same kinetics (issue 14: four blind samples with identical Zn–I kinetics gave 137–160 °C).

The reported onset is the temperature of the FIRST point of the run (where the signal first crossed), together
with its index. With ``refine=True`` the temperature is instead where the signal crosses k·σ, from a
least-squares line through the points around that crossing (``REFINE_BEFORE`` points before the run, the run,
``REFINE_AFTER`` after it; clamped to the window): a slowly rising band passes k·σ between acquisitions, and a
single noisy point decides which one first exceeds it, so the first-point temperature scatters by
~σ/(dS/dT) rounded up to the next cadence step (10.7 °C misses at a 5 °C THz cadence were seen), while the line
averages the noise of ~9 points and interpolates between them (on simulated THz ramps at a 5 °C cadence:
worst |measured − truth| 5.4 °C instead of 10 °C, rms 3.5 instead of 5.7 °C over 16 runs). Detection (whether and where there is an onset)
is unchanged; the index is still the run's first point. Truth definitions in tests use the same refinement on
the noise-free signal.  The signal is used as given: subtract any constant reference (e.g. the pre-ramp value of a band
amplitude) before calling.  NaN signals never count as exceeding and break a run.  `OnsetDetector` is the
streaming twin for live use: fed one point at a time, it reports the same onset (same temperature and index) as
`onset()` on the full series, exactly once, at the point that completes the run.

**Extrapolated onset** (`extrapolated_onset`). The thermal-analysis "extrapolated onset temperature" of a step
in an integral (conversion-like) curve — ISO 11358-1:2014 (thermogravimetry of polymers): the intersection of the
baseline before the step with the tangent to the curve at its point of maximum gradient; the DSC analogue is
ISO 11357-1 / ASTM E794 (baseline ∩ inflection tangent of the peak's leading edge).  Differentiating noisy in-situ
points would be hopeless, so the step is modelled (as Naya et al., "Logistic mixture model vs Arrhenius for
kinetic study of material degradation by dynamic thermogravimetric analysis", J. Chemometrics 20, 158 (2006),
model TG steps) by a logistic

    S(T) = b + A / (1 + exp(−(T − T_i)/w)),    A > 0,

fitted by weighted least squares (weights 1/σ²; b and A solved linearly for each (T_i, w), i.e. variable
projection, so the non-linear search is two-dimensional).  Its point of maximum gradient is T_i, the slope there
A/(4w), so the tangent meets the baseline b at

    T_on = T_i − 2w.

T_on depends on the shape of the rise only: multiplying the signal by a constant (a different loading, a
different calibration) multiplies b and A and leaves T_i, w and T_on unchanged: the signal and σ are divided by
the signal's largest magnitude before anything else (the fit then sees the same numbers up to rounding; bit for
bit for a power-of-two factor) and the search ends with Gauss–Newton steps until (T_i, w) stop moving, so a
scaled signal gives T_on to ~1e-13 °C (tests/test_onsets.py).  Its standard uncertainty comes from the
covariance of (b, A, T_i, w) (Gauss–Newton, analytic Jacobian): var(T_on) = var(T_i) + 4 var(w) − 4 cov(T_i, w),
multiplied by max(1, χ²_ν) when σ is given (a model that fits worse than the noise gets a larger uncertainty, the
usual crystallographic convention) or by χ²_ν when it is not (σ then estimated from the residuals).  The estimate
is a model definition: a first-order (Arrhenius) conversion on a ramp is not quite logistic, so T_on is not the
1 % conversion temperature (it is later: where the bulk of the step extrapolates back to the baseline), and it
depends a little on where the fitted data end — compare extrapolated onsets of runs with the same program.
Points that do not raise the temperature by more than ``HOLD_C`` over the last point used (holds, thermocouple
jitter at a plateau) are left out: in S(T) a hold is a vertical line the model cannot describe.  Reported as
NaN when there are fewer than ``MIN_POINTS`` points, when the fit finds no rise (A ≤ 0) or when the rise is not
significant (A < ``MIN_AMPLITUDE_SNR`` s.u.(A)).  When the fitted width reaches its lower bound (a step sharper
than the point spacing, which the data cannot resolve) the uncertainty is at least that spacing.

**Heating segments** (`heating_segments`). A multi-cycle program's series is split where the temperature turns:
a heating segment starts at the first point, or just after the lowest point of the cooling before it, and ends
just before the first point more than ``TURN_C`` below its running maximum (so a hold at the top stays in the
segment that reached it); a stretch that rises by no more than ``TURN_C`` is not one.  ``TURN_C`` = 2 °C is
well above the ≤ 0.5 °C scatter of mid-exposure temperature stamps at a hold and below a program's 5 °C
cadence steps.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["Onset", "onset", "OnsetDetector", "ExtrapolatedOnset", "extrapolated_onset", "heating_segments"]


class Onset(NamedTuple):
    """Onset temperature and the index of the first point of the run (both None if never reached)."""

    temperature: float | None
    index: int | None


def _exceeds(signal: float, sigma: float, k: float) -> bool:
    """True if signal > k·σ (False for NaN)."""
    return bool(signal > k * sigma)  # NaN compares False


REFINE_BEFORE, REFINE_AFTER = 3, 3
"""Points before the detection run and after it that the refined crossing's line is fitted through."""


def onset(temperatures: ArrayLike, signal: ArrayLike, noise_sigma: float | ArrayLike, k: float = 3.0,
          m: int = 3, *, refine: bool = False) -> Onset:
    """First temperature where `signal` > k·σ for `m` consecutive points (σ scalar or per point); with `refine`,
    the temperature where a local line through the signal crosses k·σ (module docstring)."""
    t = np.asarray(temperatures, dtype=np.float64)
    s = np.asarray(signal, dtype=np.float64)
    if t.shape != s.shape or t.ndim != 1:
        raise ValueError(f"temperatures and signal must be 1-D and of equal length; got {t.shape}, {s.shape}")
    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}")
    sig = np.broadcast_to(np.asarray(noise_sigma, dtype=np.float64), s.shape)
    with np.errstate(invalid="ignore"):
        above = s > k * sig
    if m == 1:
        hits = np.nonzero(above)[0]
    else:
        run = np.convolve(above.astype(np.int64), np.ones(m, dtype=np.int64), mode="valid")
        hits = np.nonzero(run == m)[0]
    if hits.size == 0:
        return Onset(None, None)
    i = int(hits[0])
    if refine:
        return Onset(refined_crossing(t, s, float(k * sig[i]), i, m), i)
    return Onset(float(t[i]), i)


def refined_crossing(t: np.ndarray, s: np.ndarray, level: float, first: int, m: int) -> float:
    """Temperature where a least-squares line through s(t) near the run starting at `first` equals `level`.

    Points ``first - REFINE_BEFORE`` … ``first + m - 1 + REFINE_AFTER`` (finite ones); the crossing is clamped
    to their temperature range. Falls back to t[first] when the line does not rise with temperature along the
    window's direction (fewer than 3 points, flat, or falling).
    """
    lo, hi = max(first - REFINE_BEFORE, 0), min(first + m + REFINE_AFTER, t.size)
    tw, sw = t[lo:hi], s[lo:hi]
    ok = np.isfinite(tw) & np.isfinite(sw)
    tw, sw = tw[ok], sw[ok]
    if tw.size < 3 or np.ptp(tw) <= 0:
        return float(t[first])
    slope, intercept = np.polyfit(tw, sw, 1)
    # the signal must grow along the series (heating: with T; cooling: against it)
    direction = np.sign(tw[-1] - tw[0])
    if not np.isfinite(slope) or slope * direction <= 0:
        return float(t[first])
    crossing = (level - intercept) / slope
    return float(np.clip(crossing, tw.min(), tw.max()))


class OnsetDetector:
    """Streaming onset: feed (temperature, signal[, σ]) one at a time; reports the onset once (as `onset()`)."""

    def __init__(self, noise_sigma: float | None = None, k: float = 3.0, m: int = 3) -> None:
        """`noise_sigma` = default σ for points fed without one."""
        if m < 1:
            raise ValueError(f"m must be >= 1, got {m}")
        self.noise_sigma = noise_sigma
        self.k = float(k)
        self.m = int(m)
        self.reset()

    def reset(self) -> None:
        """Forget everything (new run)."""
        self.count = 0  # points seen
        self._run = 0  # current run length of exceeding points
        self._run_start: tuple[float, int] | None = None
        self.result: Onset | None = None  # the onset once found

    @property
    def found(self) -> bool:
        """True once the onset has been reported."""
        return self.result is not None

    def update(self, temperature: float, signal: float, noise_sigma: float | None = None) -> Onset | None:
        """Feed one point; returns the Onset at the point completing the run (once), else None."""
        i = self.count
        self.count += 1
        if self.result is not None:
            return None
        sigma = self.noise_sigma if noise_sigma is None else noise_sigma
        if sigma is None:
            raise ValueError("no noise_sigma given (neither here nor to the constructor)")
        if _exceeds(float(signal), float(sigma), self.k):
            if self._run == 0:
                self._run_start = (float(temperature), i)
            self._run += 1
            if self._run >= self.m:
                assert self._run_start is not None
                self.result = Onset(*self._run_start)
                return self.result
        else:
            self._run = 0
            self._run_start = None
        return None

    def onset(self) -> Onset:
        """The onset so far (Onset(None, None) if not reached yet)."""
        return self.result if self.result is not None else Onset(None, None)


# ---------------------------------------------------------------------------------------------- extrapolated onset
HOLD_C = 0.5
"""A point is used by `extrapolated_onset` only if it is this much hotter than the last point used (°C)."""
MIN_POINTS = 6
"""Fewest points a logistic (4 parameters) is fitted to."""
MIN_AMPLITUDE_SNR = 3.0
"""The fitted step must exceed this many standard uncertainties of its amplitude (IUPAC 3σ, as the detection)."""
TURN_C = 2.0
"""A heating segment ends once the temperature has fallen this far below the segment's maximum (°C)."""

_GRID_CENTRES = 41  # T_i grid over the data range extended by half its span on either side
_GRID_WIDTHS = 9  # w grid, geometric from the lower bound to the span


class ExtrapolatedOnset(NamedTuple):
    """Extrapolated onset `temperature` ± `su` (°C) and the fitted logistic (NaNs if none; `n` = points fitted)."""

    temperature: float
    su: float
    inflection: float
    width: float
    amplitude: float
    baseline: float
    chi2_reduced: float
    n: int


_NONE = ExtrapolatedOnset(*(math.nan,) * 7, 0)


def _logistic(z: np.ndarray) -> np.ndarray:
    """1/(1 + e^(−z)) without overflow."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def ramp_points(temperatures: ArrayLike, hold_C: float = HOLD_C) -> np.ndarray:
    """Boolean mask of the points that raise the temperature by more than `hold_C` over the last one kept
    (the first finite point is kept; NaN temperatures never are)."""
    t = np.asarray(temperatures, dtype=np.float64)
    keep = np.zeros(t.shape, dtype=bool)
    last = -math.inf
    for i, v in enumerate(t):
        if math.isfinite(v) and v > last + hold_C:
            keep[i] = True
            last = v
    return keep


class _Logistic:
    """Weighted least squares of y ≈ b + A·logistic((t − c)/w): (b, A) linear, (c, w) by search and Gauss–Newton."""

    def __init__(self, t: np.ndarray, y: np.ndarray, wt: np.ndarray) -> None:
        self.t, self.y, self.wt = t, y, wt
        self.yw = y * wt

    def linear(self, c: float, w: float) -> tuple[float, float, np.ndarray, np.ndarray]:
        """(b, A), the logistic g and the weighted residuals at (T_i, w) = (c, w)."""
        g = _logistic((self.t - c) / w)
        basis = np.column_stack([np.ones_like(g), g]) * self.wt[:, None]
        b, a = np.linalg.lstsq(basis, self.yw, rcond=None)[0]
        return float(b), float(a), g, basis @ np.array([b, a]) - self.yw

    def grid_start(self, centres: np.ndarray, widths: np.ndarray) -> tuple[float, float] | None:
        """The (c, w) of the grid with the lowest χ² among those with A > 0 (2×2 normal equations, vectorised)."""
        cc, ww = np.meshgrid(centres, widths, indexing="ij")
        g = _logistic((self.t[None, None, :] - cc[..., None]) / ww[..., None])
        q = self.wt ** 2
        s1, sg, sgg = q.sum(), (q * g).sum(-1), (q * g * g).sum(-1)
        sy, sgy = (q * self.y).sum(), (q * g * self.y).sum(-1)
        det = s1 * sgg - sg * sg
        with np.errstate(divide="ignore", invalid="ignore"):
            a = (s1 * sgy - sg * sy) / det
            b = (sy - a * sg) / s1
            cost = (q * self.y ** 2).sum() - b * sy - a * sgy
        cost = np.where((a > 0) & (det > 1e-12 * s1 * s1) & np.isfinite(cost), cost, np.inf)
        i, j = np.unravel_index(int(np.argmin(cost)), cost.shape)
        return None if not np.isfinite(cost[i, j]) else (float(centres[i]), float(widths[j]))

    def jacobian(self, a: float, c: float, w: float, g: np.ndarray) -> np.ndarray:
        """Jacobian of the weighted model in (b, A, T_i, w)."""
        dg = g * (1.0 - g)
        z = (self.t - c) / w
        return np.column_stack([np.ones_like(g), g, -a * dg / w, -a * dg * z / w]) * self.wt[:, None]

    def polish(self, c: float, w: float, w_min: float, w_max: float, steps: int = 50) -> tuple[float, float]:
        """Gauss–Newton steps until (T_i, w) stop moving (relative 1e-14), so that the result does not depend on
        where the bounded search stopped (a scaled signal gives the same T_on to ~1e-12 °C). A step that raises χ²
        beyond rounding is halved; the width stays within its bounds."""
        _, a, g, r = self.linear(c, w)
        cost = float(r @ r)
        for _ in range(steps):
            step = np.linalg.lstsq(self.jacobian(a, c, w, g), -r, rcond=None)[0]
            dc, dw = float(step[2]), float(step[3])
            for _half in range(40):
                c_new, w_new = c + dc, min(max(w + dw, w_min), w_max)
                _, a_new, g_new, r_new = self.linear(c_new, w_new)
                cost_new = float(r_new @ r_new)
                if cost_new <= cost * (1.0 + 1e-10):  # no increase beyond rounding
                    break
                dc, dw = 0.5 * dc, 0.5 * dw
            else:
                return c, w
            still = abs(c_new - c) <= 1e-14 * (abs(c) + w) and abs(w_new - w) <= 1e-14 * w
            c, w, a, g, r, cost = c_new, w_new, a_new, g_new, r_new, cost_new
            if still:
                break
        return c, w


def extrapolated_onset(temperatures: ArrayLike, signal: ArrayLike, noise_sigma: float | ArrayLike | None = None,
                       *, hold_C: float = HOLD_C, min_amplitude_snr: float = MIN_AMPLITUDE_SNR
                       ) -> ExtrapolatedOnset:
    """Extrapolated onset of a rising step in `signal` over a heating series (module docstring: logistic fit,
    T_on = T_i − 2w, baseline ∩ tangent at the point of maximum gradient), with its standard uncertainty.

    `noise_sigma`: σ per point or scalar (None: unknown, estimated from the residuals). Points with NaN
    temperature, signal or σ (or σ ≤ 0), and points not hotter than the last one used by `hold_C`, are left out.
    """
    t = np.asarray(temperatures, dtype=np.float64)
    s = np.asarray(signal, dtype=np.float64)
    if t.shape != s.shape or t.ndim != 1:
        raise ValueError(f"temperatures and signal must be 1-D and of equal length; got {t.shape}, {s.shape}")
    known = noise_sigma is not None
    sig = np.broadcast_to(np.asarray(1.0 if noise_sigma is None else noise_sigma, dtype=np.float64), s.shape)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(t) & np.isfinite(s) & np.isfinite(sig) & (sig > 0)
    idx = np.nonzero(ok)[0]
    idx = idx[ramp_points(t[idx], hold_C)]
    n = int(idx.size)
    if n < MIN_POINTS:
        return _NONE._replace(n=n)
    t, s, sig = t[idx], s[idx], sig[idx]
    scale = float(np.max(np.abs(s)))
    if not scale > 0:
        return _NONE._replace(n=n)
    model = _Logistic(t, s / scale, scale / sig)  # the fit sees the same numbers whatever the signal's size
    lo, hi = float(t.min()), float(t.max())
    span = hi - lo
    w_min, w_max = 0.5 * float(np.median(np.diff(t))), span
    start = model.grid_start(np.linspace(lo - 0.5 * span, hi + 0.5 * span, _GRID_CENTRES),
                             np.geomspace(w_min, w_max, _GRID_WIDTHS))
    if start is None:
        return _NONE._replace(n=n)
    from scipy.optimize import least_squares  # scipy is imported only when a fit is made

    bounds = ([lo - span, math.log(w_min)], [hi + span, math.log(w_max)])
    fit = least_squares(lambda p: model.linear(p[0], math.exp(p[1]))[3], [start[0], math.log(start[1])],
                        bounds=bounds, x_scale=[w_min, 1.0], method="trf")
    c, w = model.polish(float(fit.x[0]), math.exp(float(fit.x[1])), w_min, w_max)
    b, a, g, r = model.linear(c, w)
    if not a > 0:
        return _NONE._replace(n=n)
    chi2 = float(r @ r) / (n - 4)
    jac = model.jacobian(a, c, w, g)
    cov = np.linalg.pinv(jac.T @ jac) * (max(1.0, chi2) if known else chi2)
    grad = np.array([0.0, 0.0, 1.0, -2.0])
    var_on, var_a = float(grad @ cov @ grad), float(cov[1, 1])
    if not (var_on >= 0 and var_a >= 0) or a < min_amplitude_snr * math.sqrt(var_a):
        return _NONE._replace(n=n)
    su = math.sqrt(var_on)
    if w <= w_min * (1.0 + 1e-9):  # the step is sharper than the points can resolve
        su = max(su, 2.0 * w_min)
    return ExtrapolatedOnset(c - 2.0 * w, su, c, w, a * scale, b * scale, chi2, n)


# ---------------------------------------------------------------------------------------------- segments
def heating_segments(temperatures: ArrayLike, turn_C: float = TURN_C) -> list[slice]:
    """The heating segments of a temperature series in acquisition order (module docstring), as slices.

    A segment starts at the series' first point or just after the lowest point of the cooling before it (that
    point ends the cooling) and ends just before the first point more than `turn_C` below its running maximum
    (so a hold at the top belongs to it). A stretch that rises by no more than `turn_C` is not a heating segment:
    an isothermal or cooling-only series has none. NaN temperatures are skipped (they never start or end one).
    """
    t = np.asarray(temperatures, dtype=np.float64)
    if t.ndim != 1:
        raise ValueError(f"temperatures must be 1-D; got shape {t.shape}")
    if not 0 < turn_C < math.inf:
        raise ValueError(f"turn_C must be > 0 and finite; got {turn_C}")
    finite = np.flatnonzero(np.isfinite(t))
    segments: list[slice] = []
    if finite.size == 0:
        return segments
    start = i_max = i_min = int(finite[0])
    heating = True

    def close(stop: int) -> None:
        """Keep [start, stop) if it rose by more than turn_C."""
        if t[i_max] - float(np.nanmin(t[start:i_max + 1])) > turn_C:
            segments.append(slice(start, stop))

    for i in map(int, finite[1:]):
        if heating:
            if t[i] >= t[i_max]:
                i_max = i
            elif t[i] < t[i_max] - turn_C:  # fallen below the running maximum: the heating ended
                close(i)
                heating, i_min = False, i
        elif t[i] <= t[i_min]:
            i_min = i
        elif t[i] > t[i_min] + turn_C:  # risen above the running minimum: a new heating from there
            heating, start, i_max = True, i_min + 1, i
    if heating:
        close(int(t.size))
    return segments
