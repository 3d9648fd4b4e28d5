"""Noise-free tissue curves of the parametric method's own model, for the tests.

A curve is built on the model's fine time grid (``FINE_DT_S``) as the fit's candidates are, so a
test can give the fit a curve that lies exactly on its model (between grid points of the
dictionary): the AIF interpolated on the grid, convolved with a gamma residue (Mouridsen et al.
2006) convolved with an exponential dispersion kernel (Calamante et al. 2000), then delayed.
"""

from __future__ import annotations

import numpy as np

from strokeperf import kinetics
from strokeperf.deconvolution.parametric import FINE_DT_S


def model_curve(model, delay, mtt, dispersion, shape):
    """Unit-flow tissue curve at ``model.frame_times`` for one parameter set of
    ``model`` (a ``ParametricDeconvolution``): delay, MTT and dispersion in s, gamma shape."""
    t = model.frame_times
    tau = np.arange(0.0, t[-1] - t[0] + FINE_DT_S, FINE_DT_S)
    r = kinetics.residue(tau, mtt, shape)
    if dispersion > 0:
        h = np.exp(-tau / dispersion)
        h /= h.sum() * FINE_DT_S
        r = np.convolve(r, h)[: tau.size] * FINE_DT_S
    g = np.convolve(np.interp(t[0] + tau, t, model.aif), r)[: tau.size] * FINE_DT_S
    return np.interp(t - t[0] - delay, tau, g, left=0.0)
