"""The neighbourhood prior of the parametric method: Tmax of voxels whose own curve leaves it
uncertain, under a prior taken from their neighbourhood where that reads as normal.

Empirical Bayes (Besag 1974, J R Stat Soc B 36:192; adaptive smoothing, Polzehl & Spokoiny 2006,
Probab Theory Relat Fields 135:335): the prior's mean and variance are the posterior of the
uninformative voxels' curves averaged over :data:`NEIGHBOURHOOD_FWHM_MM` (normalised convolution,
Knutsson & Westin 1993). Run by ``perfusion_maps`` through
:meth:`strokeperf.deconvolution.parametric.ParametricDeconvolution.second_pass`; measured in
``benchmarks/tmax_pooling.py --neighbourhood`` and docs/accuracy.md.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from strokeperf.timecurves import FWHM_PER_SIGMA

#: A voxel whose posterior SD of Tmax exceeds this, s, is uninformative: its curve alone cannot
#: tell apart neighbouring clinical thresholds (4/6/8/10 s, 2 s apart).
UNINFORMATIVE_TMAX_SD_S = 2.0
#: FWHM, mm, over which the curves of uninformative voxels are averaged into their prior.
NEIGHBOURHOOD_FWHM_MM = 15.0
#: The prior acts only where the averaged curves read Tmax below this, s: neighbourhoods that read
#: as normal, where Tmax varies little and a local average is unbiased (in a lesion Tmax changes
#: over a few mm, between core and penumbra, and an average there would move thresholds).
NEIGHBOURHOOD_NORMAL_TMAX_S = 6.0
#: Voxels reweighted at once by :func:`neighbourhood_prior` (a few float64 (n, bins) temporaries,
#: about 6 MB each at 85 bins).
REWEIGHT_BLOCK = 8192


def neighbourhood_prior(model, source, mask, tmax_bins, voxel_size_mm):
    """Tmax (s), and with it CBF and CBV, of uninformative voxels under a prior on Tmax taken from
    their neighbourhood.

    Empirical Bayes in the spirit of Besag (1974, J R Stat Soc B 36:192) and of adaptive smoothing
    (Polzehl & Spokoiny 2006, Probab Theory Relat Fields 135:335). At low contrast-to-noise (half
    the usual arterial contrast, or 20 HU noise) the posterior of a normal voxel's Tmax spreads over
    the whole delay range and its mean, pulled to the middle of the range, crosses 6 s: whole-brain
    phantoms then read Tmax > 4 s up to twice its true volume and Tmax > 6 s 14 % large. Voxels whose
    posterior SD of Tmax exceeds :data:`UNINFORMATIVE_TMAX_SD_S` get a Gaussian prior on Tmax: the
    posterior mean and variance of the curves of uninformative voxels averaged over
    :data:`NEIGHBOURHOOD_FWHM_MM` (normalised convolution among those voxels only, so that
    brighter, informative neighbours do not impose their timing). Only where the prior's mean is
    below :data:`NEIGHBOURHOOD_NORMAL_TMAX_S`; elsewhere, and where the averaged curve has no fit,
    the voxel keeps its own estimates.

    The voxel's own posterior comes from the fit (``fit(keep_sd_above=UNINFORMATIVE_TMAX_SD_S)``)
    as a mass and mean Tmax, flow and area per 0.5 s Tmax bin; the prior multiplies each bin's mass
    at the bin's mean Tmax, so no curve is fitted again. Every output is the posterior mean under
    the same (new) posterior: a spread-out posterior also reads the effective residue's peak low
    (on seed 104, normal voxels whose Tmax the prior moved below 4 s read CBF 14 mL/100 g/min on
    their own, truth 29), and a reference region of normal tissue that includes them must not.

    Parameters
    ----------
    model : strokeperf.deconvolution.parametric.ParametricDeconvolution
    source : ndarray (X, Y, Z, T)
        Concentration the prior is averaged from: the series before the session's spatial
        smoothing. In smoothed curves an uninformative voxel at a lesion's rim already holds some
        of its brighter, earlier normal neighbours' signal, and a prior from them pulled the rim
        early (whole-brain phantom seed 104: Tmax > 6 s -18 % against -10 %).
    mask : ndarray of bool (X, Y, Z)
        The fitted voxels; rows of ``tmax_bins`` count them in C order.
    tmax_bins : tuple
        The fit's ``tmax_bins`` (:class:`~strokeperf.deconvolution.parametric.ParametricFit`) of
        those voxels, kept above :data:`UNINFORMATIVE_TMAX_SD_S`.
    voxel_size_mm : sequence of 3 floats

    Returns
    -------
    rows : ndarray (n,) of the voxels (rows of ``mask``) the prior revised, and their posterior
    mean Tmax (s), effective residue peak (1/s) and area ratio, each (n,).
    """
    mask = np.asarray(mask, dtype=bool)
    rows, log_mass, bin_tmax, bin_flow, bin_volume = tmax_bins
    none = np.zeros(0)
    if rows.size == 0:
        return rows, none, none, none
    where = np.zeros(mask.shape, dtype=bool)
    where[tuple(a[rows] for a in np.nonzero(mask))] = True
    # ``where``'s voxels in C order are ``rows`` sorted (as the fit returns them: no copy then).
    if np.any(np.diff(rows) < 0):
        order = np.argsort(rows, kind="stable")
        rows, log_mass, bin_tmax = rows[order], log_mass[order], bin_tmax[order]
        bin_flow, bin_volume = bin_flow[order], bin_volume[order]
    wide, cell = neighbourhood_curves(source, where, voxel_size_mm, NEIGHBOURHOOD_FWHM_MM)
    prior_mean, prior_sd, no_fit = model.tmax_posterior(wide)
    prior_mean, prior_var, no_fit = prior_mean[cell], prior_sd[cell] ** 2, no_fit[cell]
    del wide
    use = np.flatnonzero(~no_fit & (prior_mean < NEIGHBOURHOOD_NORMAL_TMAX_S))
    tmax, flow, volume = np.empty(use.size), np.empty(use.size), np.empty(use.size)
    for start in range(0, use.size, REWEIGHT_BLOCK):
        part = slice(start, start + REWEIGHT_BLOCK)
        at = use[part]
        t = bin_tmax[at].astype(float)
        log_post = log_mass[at] - 0.5 * (t - prior_mean[at, None]) ** 2 / np.maximum(
            prior_var[at, None], 1e-3)
        post = np.exp(log_post - log_post.max(axis=1, keepdims=True))
        post /= post.sum(axis=1, keepdims=True)
        tmax[part] = np.einsum("nb,nb->n", post, t)
        flow[part] = np.einsum("nb,nb->n", post, bin_flow[at])
        volume[part] = np.einsum("nb,nb->n", post, bin_volume[at])
    return rows[use], tmax, flow, volume


def neighbourhood_curves(source, where, voxel_size_mm, fwhm_mm: float):
    """Curves of ``source`` (X, Y, Z, T) averaged over a Gaussian of ``fwhm_mm`` among the voxels
    of ``where`` only (normalised convolution, Knutsson & Westin 1993), on a grid of cells of up to
    a quarter of the FWHM (a Gaussian that wide hardly changes within a cell; 2 x 2 x 1 voxels of
    1.5 x 1.5 x 5 mm for 15 mm), which makes it about eight times faster than on the voxel grid.

    Returns the curves of the cells that hold voxels of ``where`` (C, T) and, for every voxel of
    ``where`` in C order, the index of its cell.
    """
    voxel = np.asarray(voxel_size_mm, dtype=float)[:3]
    factor = np.maximum(1, np.floor(fwhm_mm / (4.0 * voxel))).astype(int)
    shape = np.asarray(where.shape)
    cells = -(-shape // factor)                                       # ceiling division
    pad = [(0, int(c * f - n)) for c, f, n in zip(cells, factor, shape)]
    blocks = (cells[0], factor[0], cells[1], factor[1], cells[2], factor[2])
    weight = np.pad(where.astype(np.float32), pad).reshape(blocks).sum(axis=(1, 3, 5))
    sigma = fwhm_mm / FWHM_PER_SIGMA / (voxel * factor)
    norm = ndimage.gaussian_filter(weight, sigma, mode="constant")
    held = weight > 0
    inv_norm = 1.0 / norm[held]
    out = np.empty((int(held.sum()), source.shape[-1]), dtype=np.float32)
    frame = np.empty(where.shape, dtype=np.float32)
    for k in range(source.shape[-1]):
        np.multiply(source[..., k], where, out=frame, casting="unsafe")
        summed = np.pad(frame, pad).reshape(blocks).sum(axis=(1, 3, 5))
        out[:, k] = ndimage.gaussian_filter(summed, sigma, mode="constant")[held] * inv_norm
    # Cell index of every voxel of ``where``, numbered in the order of ``out``'s rows.
    number = np.full(weight.shape, -1, dtype=np.int64)
    number[held] = np.arange(out.shape[0])
    ijk = np.nonzero(where)
    cell = number[tuple(i // f for i, f in zip(ijk, factor))]
    return out, cell
