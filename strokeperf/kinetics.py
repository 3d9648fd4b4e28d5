"""Tracer-kinetic conventions shared by the digital phantom and the perfusion analysis.

Indicator-dilution theory for an intravascular tracer (Meier & Zierler 1954; Østergaard et al. 1996,
Magn Reson Med 36:715) relates the tissue concentration curve to the arterial input function (AIF)::

    C_tissue(t) = (rho / k_H) * CBF * (C_artery conv R)(t - delay)

with ``R`` the residue function (``R(0) = 1``, non-increasing), ``rho`` the brain tissue density and
``k_H`` the correction for the different haematocrit of large and small vessels (Rempp et al. 1994,
Radiology 193:637). The phantom generates curves with exactly these constants and the analysis inverts
them, so a perfect deconvolution returns the phantom's truth.

Units used throughout strokeperf:

- time in seconds; concentration in arbitrary units shared by AIF and tissue (delta-HU on CT,
  delta-R2* in 1/s on MRI);
- CBF in mL/100 g/min, CBV in mL/100 g, MTT, Tmax and TTP in seconds.
"""

from __future__ import annotations

import numpy as np
from scipy import special

#: Brain tissue density in g/mL (Rempp et al. 1994).
TISSUE_DENSITY_G_PER_ML = 1.04
#: Large-vessel haematocrit (Rempp et al. 1994).
HEMATOCRIT_LARGE_VESSEL = 0.45
#: Small-vessel (capillary) haematocrit (Rempp et al. 1994).
HEMATOCRIT_SMALL_VESSEL = 0.25
#: k_H = (1 - Hct_large) / (1 - Hct_small): plasma-volume correction for tissue vs artery.
HEMATOCRIT_FACTOR = (1.0 - HEMATOCRIT_LARGE_VESSEL) / (1.0 - HEMATOCRIT_SMALL_VESSEL)

#: Multiply a tissue/arterial area ratio (dimensionless) by this to get CBV in mL/100 g.
CBV_SCALE = HEMATOCRIT_FACTOR / TISSUE_DENSITY_G_PER_ML * 100.0
#: Multiply the peak of the scaled residue ``CBF * R(t)`` in 1/s by this to get CBF in mL/100 g/min.
CBF_SCALE = CBV_SCALE * 60.0

#: Shape parameter above which the gamma transit-time residue is treated as a box (plug flow).
BOX_SHAPE = np.inf


def flow_rate_per_s(cbf_ml_100g_min):
    """Convert CBF in mL/100 g/min to the rate constant ``rho/k_H * CBF`` in 1/s used in convolution."""
    return np.asarray(cbf_ml_100g_min, dtype=float) / CBF_SCALE


def area_ratio(cbv_ml_100g):
    """Convert CBV in mL/100 g to the ratio area(C_tissue) / area(C_artery)."""
    return np.asarray(cbv_ml_100g, dtype=float) / CBV_SCALE


def residue(t, mtt, shape=1.0):
    """Residue function of a gamma distribution of transit times.

    The transit-time density is a gamma distribution with mean ``mtt`` (s) and shape ``shape``
    (Mouridsen et al. 2006, NeuroImage 33:570); the residue is its survival function
    ``R(t) = Q(shape, shape * t / mtt)`` (regularised upper incomplete gamma function).
    ``shape = 1`` gives the exponential residue of a well-mixed compartment, large shapes approach a
    box (plug flow, all transit times equal to ``mtt``); ``shape = inf`` is the exact box.
    For every shape the area under ``R`` equals ``mtt`` (central volume theorem).

    Parameters
    ----------
    t : array_like
        Time since arrival in seconds; ``R = 0`` is not returned for ``t < 0`` -- it is 0 there.
    mtt : array_like
        Mean transit time in seconds, broadcast against ``t``.
    shape : float or array_like
        Gamma shape parameter (dimensionless), >= 1 for a residue whose maximum is at ``t = 0``.
    """
    t = np.asarray(t, dtype=float)
    mtt = np.asarray(mtt, dtype=float)
    shape = np.asarray(shape, dtype=float)
    t_pos = np.clip(t, 0.0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        finite = np.isfinite(shape)
        safe_shape = np.where(finite, shape, 1.0)
        gamma_r = special.gammaincc(safe_shape, safe_shape * t_pos / mtt)
        box_r = (t_pos < mtt).astype(float)
        r = np.where(finite, gamma_r, box_r)
    return np.where(t < 0, 0.0, r)


def gamma_variate(t, arrival, alpha, beta, peak=1.0):
    """Gamma-variate bolus shape (Thompson et al. 1964; Madsen 1992, Phys Med Biol 37:1597).

    ``g(t) = (t - arrival)^alpha * exp(-(t - arrival) / beta)`` for ``t > arrival``, scaled so that its
    maximum (at ``arrival + alpha * beta``) equals ``peak``. Times in seconds.
    """
    t = np.asarray(t, dtype=float)
    s = np.clip(t - arrival, 0.0, None)
    t_max = alpha * beta
    with np.errstate(divide="ignore", invalid="ignore"):
        log_g = alpha * np.log(np.where(s > 0, s / t_max, 1.0)) - (s - t_max) / beta
        g = np.where(s > 0, np.exp(log_g), 0.0)
    return peak * g


def dispersion_kernel(t, beta):
    """Exponential vascular transport function ``exp(-t/beta)/beta`` of unit area (1/s).

    Models dispersion of the bolus between the measured AIF and the tissue (Calamante et al. 2000,
    Magn Reson Med 44:466). ``beta`` in seconds, > 0; callers treat no dispersion as the identity.
    """
    t = np.asarray(t, dtype=float)
    beta = float(beta)
    if beta <= 0:
        raise ValueError("beta must be > 0; treat no dispersion as the identity instead")
    return np.where(t >= 0, np.exp(-np.clip(t, 0, None) / beta) / beta, 0.0)
