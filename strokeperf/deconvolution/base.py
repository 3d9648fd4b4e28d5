"""The interface every deconvolution method follows, and the perfusion parameters of a fit.

Model / fit split (as dipy's ``TensorModel`` / ``TensorFit``): a :class:`PerfusionModel` holds
everything that depends only on the AIF and the frame times; ``fit(curves)`` returns a
:class:`PerfusionFit` whose properties are the perfusion parameters, in the conventions of
:mod:`strokeperf.kinetics` (CBF mL/100 g/min, CBV mL/100 g, MTT, Tmax and TTP in s). The clamps
that make the maps physical (:meth:`PerfusionFit.clamped_maps`) are defined here once for every
method.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from strokeperf import kinetics


def mean_transit_time(cbf, cbv) -> np.ndarray:
    """Mean transit time, s: ``60 CBV / CBF`` (central volume theorem; CBF in mL/100 g/min, CBV in
    mL/100 g); 0 where CBF <= 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(cbf > 0, 60.0 * cbv / cbf, 0.0)


class PerfusionFit:
    """Perfusion parameters of N tissue curves: what a method's ``fit`` returns.

    Attributes
    ----------
    model : PerfusionModel
        The model that made the fit.
    residue_peak : ndarray (N,)
        Peak of the flow-scaled residue in 1/s (unscaled CBF; OSIPI convention: CBF = peak x 6000);
        for a model with dispersion, of the effective residue.
    tmax : ndarray (N,)
        Time of that residue's maximum, s, relative to the AIF (negative: tissue leads the AIF).
    ttp : ndarray (N,) or None
        Time of the measured tissue curve's maximum from the first frame, s.
    area_ratio : ndarray (N,) or None
        area(measured tissue curve) / area(AIF) (unscaled model-free CBV; OSIPI convention:
        CBV = ratio x 100).
    """

    def __init__(self, model, residue_peak, tmax, ttp, area_ratio):
        self.model = model
        self.residue_peak = residue_peak
        self.tmax = tmax
        self.ttp = ttp
        self.area_ratio = area_ratio

    @property
    def cbv_area_ratio(self) -> np.ndarray:
        """The area ratio that CBV reports: the measured curve's (:attr:`area_ratio`); a method
        that fits a model may report its fitted curve's instead."""
        return self.area_ratio

    @property
    def cbf(self) -> np.ndarray:
        """Cerebral blood flow, mL/100 g/min (``CBF_SCALE * residue_peak``)."""
        return kinetics.CBF_SCALE * self.residue_peak

    @property
    def cbv(self) -> np.ndarray:
        """Cerebral blood volume, mL/100 g (``CBV_SCALE * cbv_area_ratio``)."""
        return kinetics.CBV_SCALE * self.cbv_area_ratio

    @property
    def mtt(self) -> np.ndarray:
        """Mean transit time, s (``60 CBV / CBF``, central volume theorem); 0 where CBF <= 0."""
        return mean_transit_time(self.cbf, self.cbv)

    def clamped_maps(self, duration_s: float) -> dict[str, np.ndarray]:
        """CBF, CBV, MTT and Tmax (keys ``cbf``, ``cbv``, ``mtt``, ``tmax``) with the clamps of the
        perfusion maps: CBF and CBV >= 0, CBF 0 where the curve has no positive area (its residue
        peak is noise), MTT from the clamped values and, like Tmax, in [0, ``duration_s``] (a
        tissue leading the AIF is Tmax 0)."""
        cbv = np.clip(self.cbv, 0, None)
        cbf = np.where(cbv > 0, np.clip(self.cbf, 0, None), 0.0)
        return {"cbf": cbf, "cbv": cbv,
                "mtt": np.clip(mean_transit_time(cbf, cbv), 0, duration_s),
                "tmax": np.clip(self.tmax, 0, duration_s)}


class PerfusionModel(ABC):
    """A deconvolution method built from the AIF and the frame times (``Method(aif, frame_times,
    **options)``), which fits tissue curves at those frame times.

    Attributes
    ----------
    frame_times : ndarray (T,)
        Seconds, strictly increasing.
    """

    frame_times: np.ndarray
    #: Whether :meth:`second_pass` should read the concentration before the session's spatial
    #: smoothing (``perfusion_maps(..., unsmoothed=...)``), so that callers load it only then.
    second_pass_reads_unsmoothed: bool = False

    @abstractmethod
    def fit(self, curves) -> PerfusionFit:
        """Fit tissue curves (N, T) at the model's frame times, baseline 0."""

    def second_pass(self, source, mask, voxel_size_mm):
        """A pass over the whole volume after the voxel-wise fits, for methods that revise some
        voxels from their neighbourhood; None for methods without one (the default).

        Parameters
        ----------
        source : ndarray (X, Y, Z, T)
            Concentration the neighbourhood is read from.
        mask : ndarray of bool (X, Y, Z)
            The fitted voxels.
        voxel_size_mm : sequence of 3 floats

        Returns
        -------
        None, or an object with ``fit(curves)``, used in place of the model's own ``fit`` for the
        curves of ``mask`` in C order, chunk by chunk, and ``revise()``, which returns the rows of
        ``mask`` it revised (n,) and their :class:`PerfusionFit` (TTP not revised).
        """
        return None
