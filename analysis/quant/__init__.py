"""Internals of live quantitative phase analysis (tables of phase patterns, bounded linear least squares)."""
