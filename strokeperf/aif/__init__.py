"""Input functions: the arterial input function (AIF) that drives deconvolution and the venous
output function (VOF) that corrects its partial volume.

Modules
-------
:mod:`.arterial`
    The arterial rules on concentration curves (early, high, narrow, smooth; Rempp et al. 1994,
    Mouridsen et al. 2006), the CT AIF (:func:`~.arterial.select_ct_aif`), the
    :class:`~.arterial.InputFunction` record with its first-pass gamma-variate fit, and the AIF of
    a user's mask (:func:`~.arterial.read_aif_mask`, :func:`~.arterial.aif_from_mask`).
:mod:`.mr`
    DSC-MRI: the noise-floor rule of the magnitude signal (:func:`~.mr.classify_mr_voxels`) and the
    MR AIF, censored where arterial blood reaches the noise floor (:func:`~.mr.select_mr_aif`).
:mod:`.venous`
    The VOF, cross-fitted over even and odd frames (:func:`~.venous.select_vof`), and the scaling
    of the AIF to its area (:func:`~.venous.scale_aif_by_vof`).
:mod:`.reconstruction`
    The censored frames of a saturated DSC AIF filled from the tissue curves
    (:func:`~.reconstruction.reconstruct_censored_aif`).

:func:`select_aif` is the stage's entry point for automatic selection: the CT rules, or the MR
rules when given the DSC signal.
"""

from __future__ import annotations

from strokeperf.aif import arterial, mr


def select_aif(conc, frame_times, candidate_mask, n_voxels: int = arterial.AIF_N_VOXELS,
               exclude_mask=None, *, modality: str = "ct", signal=None,
               baseline_end: int | None = None,
               echo_time: float | None = None) -> arterial.InputFunction:
    """Select and average arterial voxels (see :mod:`strokeperf.aif.arterial` for the criteria).

    ``modality="mr"`` applies the DSC rules first (:func:`strokeperf.aif.mr.select_mr_aif`; needs
    ``signal``, ``baseline_end`` and ``echo_time``); ``"ct"`` (default) uses the rules alone
    (:func:`strokeperf.aif.arterial.select_ct_aif`).

    Parameters
    ----------
    conc : ndarray (X, Y, Z, T)
        Concentration, baseline 0 (denoised delta-HU or delta-R2*).
    frame_times : array_like (T,)
        Seconds.
    candidate_mask : ndarray of bool (X, Y, Z)
        Where to search (typically the brain); its mean curve is the tissue reference.
    n_voxels : int
        Voxels averaged.
    exclude_mask : ndarray of bool (X, Y, Z), optional
        Voxels never chosen (e.g. the hypoperfused hemisphere, bone edges).
    modality : "ct" or "mr"
    signal : ndarray (X, Y, Z, T), optional
        DSC magnitude series (``modality="mr"`` only).
    baseline_end : int, optional
        Frames ``[0, baseline_end)`` are pre-contrast (``modality="mr"`` only).
    echo_time : float, optional
        Echo time, s (``modality="mr"`` only).

    Raises
    ------
    DataError
        When no voxel passes the arterial criteria.
    """
    if modality == "mr":
        if signal is None or baseline_end is None or echo_time is None:
            raise ValueError("select_aif(modality='mr') needs the DSC signal, baseline_end and "
                             "echo_time")
        return mr.select_mr_aif(conc, frame_times, candidate_mask, signal, baseline_end,
                                echo_time, n_voxels=n_voxels, exclude_mask=exclude_mask)
    if modality != "ct":
        raise ValueError(f"modality must be 'ct' or 'mr', not {modality!r}")
    return arterial.select_ct_aif(conc, frame_times, candidate_mask, n_voxels, exclude_mask)
