"""Amorphous (glass) halo columns of the phase-quantification model: unit-height Gaussians in Q = 4π sinθ/λ.

H_j(Q) = exp(−4 ln2 ((Q − Q_j)/W_j)²) with centre Q_j and FWHM W_j (Å⁻¹), and its derivatives with respect to
Q_j and W_j for the Gauss–Newton step (analysis.phase_quant). One compiled pass over the axis per call (one exp
per point and halo) instead of six array temporaries per halo.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

_FOUR_LN2 = 4.0 * math.log(2.0)


@numba.njit(cache=True, nogil=True)
def halo_columns(s: FloatArray, q_per_s: float, centres: FloatArray, fwhms: FloatArray, out: FloatArray,
                 d: FloatArray, derivs: bool) -> None:
    """out[j] = H_j at Q = q_per_s·sinθ (sinθ = `s`); with `derivs` also d[j, 0] = ∂H_j/∂Q_j, d[j, 1] = ∂H_j/∂W_j."""
    for j in range(centres.size):
        qc, inv_w = centres[j], 1.0 / fwhms[j]
        for i in range(s.size):
            u = (q_per_s * s[i] - qc) * inv_w
            h = math.exp(-_FOUR_LN2 * u * u)
            out[j, i] = h
            if derivs:
                t = 2.0 * _FOUR_LN2 * u * inv_w * h
                d[j, 0, i] = t
                d[j, 1, i] = t * u


def warm_up() -> None:
    """Load the compiled kernel now (see `hotstage.analysis.profiles.warm_up`)."""
    x = np.linspace(0.1, 0.2, 8)
    for derivs in (False, True):
        halo_columns(x, 10.0, np.array([1.0]), np.array([0.5]), np.empty((1, 8)), np.empty((1, 2, 8)), derivs)
