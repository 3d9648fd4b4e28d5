"""Deconvolution stage: perfusion maps (CBF, CBV, MTT, Tmax, TTP) from concentration curves and
the arterial input function (AIF).

Each tissue curve is the AIF convolved with the tissue's flow-scaled residue function
(:mod:`strokeperf.kinetics`: ``C(t) = F (AIF conv R)(t - delay)``); deconvolution recovers the
residue, or the parameters of a model of it, voxel by voxel. Every method follows one interface
(:mod:`~strokeperf.deconvolution.base`, the model / fit split of dipy): ``METHODS[name](aif,
frame_times, **options)`` builds a model from what depends only on the AIF and the frame times,
its ``fit(curves)`` returns a :class:`~strokeperf.deconvolution.base.PerfusionFit` whose properties
are the perfusion parameters, and a method may add a second pass over the whole volume
(``second_pass``). :func:`perfusion_maps` runs a method over a 4D series in chunks of voxels and
clamps the maps.

Modules:

- :mod:`~strokeperf.deconvolution.base`: the model interface, the fit's parameters and the clamps.
- :mod:`~strokeperf.deconvolution.parametric`: ``"parametric"``, the Bayesian fit of delay,
  dispersion, transit time and residue shape (Mouridsen et al. 2006; Boutelier et al. 2012); the
  pipeline's default (``config.Parameters.deconvolution``).
- :mod:`~strokeperf.deconvolution.neighbourhood`: the parametric method's second pass, a prior on
  the Tmax of voxels whose curve leaves it uncertain, from their neighbourhood.
- :mod:`~strokeperf.deconvolution.svd`: the SVD family, ``"ssvd"`` (standard truncated SVD,
  Østergaard et al. 1996), ``"csvd"`` and ``"bcsvd"`` (block-circulant SVD with a global or an
  oscillation-index threshold, Wu et al. 2003) and ``"tikhonov"`` (Calamante et al. 2003;
  Sourbron et al. 2004), selected with ``--deconvolution``.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from strokeperf.deconvolution.parametric import ParametricDeconvolution
from strokeperf.deconvolution.svd import (DEFAULT_CHUNK_SIZE, BlockCirculantSVD, CircularSVD,
                                          StandardSVD, TikhonovSVD)
from strokeperf.errors import DataError
from strokeperf.timecurves import series_and_mask

#: Deconvolution methods by name: ``METHODS[name](aif, frame_times, **options).fit(curves)``.
METHODS = {
    "ssvd": StandardSVD,
    "csvd": CircularSVD,
    "bcsvd": BlockCirculantSVD,
    "tikhonov": TikhonovSVD,
    "parametric": ParametricDeconvolution,
}
#: Names of the perfusion maps, in the order the pipeline writes them.
MAP_NAMES = ("cbf", "cbv", "mtt", "tmax", "ttp")


def perfusion_maps(conc, mask, aif_curve, frame_times, method: str = "bcsvd",
                   chunk_size: int = DEFAULT_CHUNK_SIZE, voxel_size_mm=None, unsmoothed=None,
                   **options) -> dict[str, np.ndarray]:
    """CBF, CBV, MTT, Tmax and TTP maps of a 4D concentration series.

    Parameters
    ----------
    conc : ndarray, shape (X, Y, Z, T)
        Concentration (delta-HU or delta-R2*), baseline 0.
    mask : ndarray of bool, shape (X, Y, Z)
        Voxels to analyse; maps are 0 outside.
    aif_curve : array_like, shape (T,)
        Arterial input function (same units as ``conc``).
    frame_times : array_like, shape (T,)
        Seconds.
    method : str
        A key of :data:`METHODS`. The default here is ``"bcsvd"``
        (:class:`~strokeperf.deconvolution.svd.BlockCirculantSVD`); the pipeline passes its own
        default, ``"parametric"`` (``config.Parameters.deconvolution``).
    chunk_size : int
        Voxels handed to the method's ``fit`` at once; memory stays O(chunk_size x T).
    voxel_size_mm : sequence of 3 floats, optional
        Runs the method's second pass, if it has one (``second_pass``): with ``parametric``,
        voxels whose curve alone leaves Tmax uncertain are estimated (Tmax, CBF, CBV) under a
        prior on Tmax from their neighbourhood where that reads as normal
        (:mod:`strokeperf.deconvolution.neighbourhood`). Without it every voxel is on its own.
    unsmoothed : ndarray, shape (X, Y, Z, T), optional
        ``conc`` before the session's spatial smoothing, for that second pass (default ``conc``).
    **options
        Passed to the method (e.g. ``threshold=0.1`` or ``oscillation_index=0.095``).

    Returns
    -------
    dict of float32 (X, Y, Z) arrays: ``cbf`` (mL/100 g/min), ``cbv`` (mL/100 g), ``mtt`` (s),
    ``tmax`` (s), ``ttp`` (s). Non-physical values are clamped
    (:meth:`~strokeperf.deconvolution.base.PerfusionFit.clamped_maps`): CBF and CBV >= 0 (CBF 0
    where the curve has no positive area), MTT in [0, scan duration], Tmax in [0, scan duration]
    (a tissue leading the AIF is Tmax 0).
    """
    conc, mask = series_and_mask(conc, mask, "perfusion maps need")
    if method not in METHODS:
        raise DataError(f"unknown deconvolution method {method!r}; choose from {sorted(METHODS)}")
    # The products here are small (2T x 2T by 2T x chunk): OpenBLAS threads cost more than they
    # save, 10x on 2 cores (7.5 s vs 0.76 s for a whole-brain session), and oversubscribe the cores
    # when sessions run in parallel processes.
    with threadpool_limits(limits=1, user_api="blas"):
        return _perfusion_maps(conc, mask, aif_curve, frame_times, method, chunk_size,
                               voxel_size_mm, unsmoothed, **options)


def _perfusion_maps(conc, mask, aif_curve, frame_times, method, chunk_size, voxel_size_mm,
                    unsmoothed, **options):
    model = METHODS[method](aif_curve, frame_times, **options)
    duration = float(np.asarray(frame_times, dtype=float)[-1] - np.asarray(frame_times)[0])
    flat = conc.reshape(-1, conc.shape[-1])
    index = np.flatnonzero(mask)
    values = {name: np.zeros(index.size, dtype=np.float32) for name in MAP_NAMES}
    second_pass = None
    if voxel_size_mm is not None:
        second_pass = model.second_pass(conc if unsmoothed is None else unsmoothed, mask,
                                        voxel_size_mm)
    fit_curves = model.fit if second_pass is None else second_pass.fit
    for start in range(0, index.size, chunk_size):
        sel = index[start:start + chunk_size]
        fit = fit_curves(flat[sel])                 # each method blocks its own work for speed
        part = slice(start, start + sel.size)
        for name, value in fit.clamped_maps(duration).items():
            values[name][part] = value
        values["ttp"][part] = fit.ttp
    if second_pass is not None:
        rows, fit = second_pass.revise()            # TTP is the measured curve's: not revised
        for name, value in fit.clamped_maps(duration).items():
            values[name][rows] = value
    maps = {}
    for name in MAP_NAMES:
        image = np.zeros(mask.shape, dtype=np.float32)
        image[mask] = values[name]
        maps[name] = image
    return maps
