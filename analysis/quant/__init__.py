"""Internals of live quantitative phase analysis (`hotstage.analysis.phase_quant.PhaseQuantifier` is the facade):
`config` (settings), `model` (instrument + phases → design rows), `gram` (normal equations), `solver` (refinement,
cold search), `warm` (warm-start policy), `tables` (phase patterns in sinθ tables), `halos`, `linear` (bounded
linear least squares)."""
