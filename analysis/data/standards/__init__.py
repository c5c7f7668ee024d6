"""Certified-cell CIFs of the built-in calibration standards (hotstage.analysis.standards); data only."""
