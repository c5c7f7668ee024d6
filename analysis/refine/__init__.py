"""Rietveld-style whole-pattern refinement of MEASURED powder patterns (issue 13), the instrument as shared input.

Modules (each small, formulas and sources in its docstring):

- `model`: phase models (hkl and |F|²·m fixed from the CIF; cell refined within the crystal system; Lorentzian
  Scherrer size; Gaussian microstrain; March–Dollase), Chebyshev background, amorphous humps; the sample-width
  bound that keeps a phase from turning into background; rendering through
  `hotstage.analysis.instrument.render_instrument_peaks`.
- `solver`: variable projection (linear: scales, hump amplitudes ≥ 0, background; nonlinear: trust-region
  Gauss–Newton with per-component finite-difference Kaufman Jacobians), serial-correlation helpers.
- `significance`: backward elimination with F-tests at `alpha` on an effective number of points N_eff (from the
  residuals' integrated autocorrelation time: Bérar–Lelann over all lags), plus a decoy test: a phase must beat
  a copy of itself with its cell scaled by 0.95/1.05 (lines in the wrong places soak up misfit equally well).
- `quantify`: the public `quantify()` and `RefineResult` / `PhaseResult`.

Public API::

    quantify(two_theta, counts, phases, instrument, *, sigma=None, background_order=12, humps=1, excluded=(),
             preferred_orientation={}, alpha=1e-3, refine_instrument=(), fix_cell=False, start=None,
             max_nfev=60) -> RefineResult

`RefineResult`: ``phases`` {name: PhaseResult(weight_fraction, weight_fraction_su, scale, cell, cell_su, size_nm,
size_nm_su, microstrain, microstrain_su, preferred_orientation, significant, f_statistic, p_value)}, ``rejected``
{name: reason}, ``rwp``, ``rexp``, ``gof`` (χ²/(N−P)), ``chi2``, ``n_points``, ``n_parameters``, ``two_theta``,
``counts``, ``curve``, ``background`` (Chebyshev + humps), ``phase_curves``, ``instrument`` (refined copy),
``warnings``, ``reflections`` {name: (2θ, hkl)} for tick marks, ``humps`` [(amplitude, centre, fwhm)],
``durbin_watson``, ``n_effective``, ``parameters`` (raw refined vector per phase, for warm starts),
``weight_fractions``, ``to_dict()``.

For calibration (helper "calibrate"):

- ``quantify(x, y, [standard], start_instrument, refine_instrument=("zero", "u", "v", "w", "x", "y", "s_l",
  "h_l"), fix_cell=True, alpha=1.0 - 1e-12)``: refines the named `Instrument` fields (any of
  `model.INSTRUMENT_PARAMETERS`: zero, u, v, w, x, y, s_l, h_l, displacement_um) with the standard's cell fixed
  at its certified value; the refined instrument is ``result.instrument`` (an `Instrument.replace` copy).
  Widths ≥ 0 (V free), zero within ±1°, displacement within ±5 mm. Sample broadening of the standard still refines
  (size/strain ≥ 0): a standard is expected to sit at zero.
- ``result.reflection_residuals(name)``: per reflection (primary line) the calculated 2θ, hkl, the intensity
  misfit Σ(obs − calc)/Σ peak over ±1 instrument FWHM, and observed − calculated position and FWHM (deg) from
  local one-parameter least squares of the residual on the peak's derivatives.


- `significance` also has an evidence test (its step 6): a phase that passes the F and decoy tests must lower χ²
  on the points near its lines where its fitted intensity outweighs the other phases' together; a phase without
  such points is "not distinguishable (all reflections overlap …)".

Measured (tests/test_refine.py): the published β-CsPbI3 profile (510 K, 11-BM LaB6 file, five phases offered).
By default the sharp pass stops at 60 evaluations (`max_nfev`; the blurred first pass has a fixed 15). Run to
convergence (`max_nfev=1000`), it converges (scipy xtol) after 676 evaluations at χ² 17,564 with all five phases; elimination then rejects CsI
(F = 3.7, p = 0.005), δ (no better than its decoy, p = 0.02), γ (F = 1.8, p = 0.10) and α, which passed the F-test
(F = 21.8) and its decoys but has no evidence of its own (its 632 own points: p = 0.043); β 100 wt %, χ² 19,413,
Rwp 0.136; 867 evaluations, 8 min on a 2-core machine shared with four other jobs. At the default cap of 60 (what
the test runs, ~30 s) the fit stops early (χ² 21,767 → 19,419 after elimination) with the same outcome and α/γ/CsI
at zero scale; an
earlier Levenberg–Marquardt run that reached χ² 16,949 (Rwp 0.128) kept α 3 % and γ 8 % without the evidence test.

Speed (measured with the former cap of 60 sharp evaluations, not re-measured; benchmarks/refine.py: 60,000
points, β/δ/CsI offered, one core of a 2-core machine shared with four other
jobs, old and new code run back to back): cold 7.0 s → 2.3–3.0 s, warm 886 ms → 200 ms (1.1 → 5 patterns/s);
evaluations cold 87 → 67, warm 10 → 4. Where it went: the Jacobian is one compiled pass of analytic profile
derivatives per phase instead of one re-render per parameter; the trust-region solver sees the problem compressed
to p + 1 rows (no 60,000 × p SVD per iteration, same steps); the Gaussian is tabulated; the significance F-tests
re-solve the linear part from the normal equations. The issue's targets (cold ≤ 2 s, warm ≥ 100 patterns/s) are not
met on this machine: the cold fit's remaining work is ~67 evaluations, 45 % of them the two decoy refinements of
δ (15 evaluations each, kept as they are: a cheaper decoy is a weaker test); a warm fit is 4 evaluations and ~3
Jacobian passes, and one Gauss–Newton step alone (one render of β + δ at 60 nm, 14 ms, plus one derivative pass,
29 ms: every peak's ±15 / ±6 FWHM window at 0.001° steps) costs more than the 10 ms that 100 patterns/s allows.
Reaching it needs a cheaper renderer (e.g. Lorentzian tails on a coarse grid with cubic interpolation) and a
one-step warm update.
"""

from .model import INSTRUMENT_PARAMETERS, PhaseModel, crystal_system, free_cell_parameters, max_sample_fwhm
from .quantify import PhaseResult, RefineInputError, RefineResult, quantify

__all__ = ["quantify", "RefineResult", "PhaseResult", "RefineInputError", "PhaseModel", "INSTRUMENT_PARAMETERS",
           "crystal_system", "free_cell_parameters", "max_sample_fwhm"]
