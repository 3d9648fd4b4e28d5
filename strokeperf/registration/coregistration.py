"""Rigid inter-scan coregistration (DWI b0 or ADC to the perfusion series) by mutual information.

:func:`coregister` returns the RAS world transform ``moving -> fixed`` (a DWI point ``x`` lies at
``T @ x`` in the perfusion scan), the direction in which masks are carried by
:func:`strokeperf.registration.resampling.resample_mask`.

Method: rigid registration maximising Mattes mutual information (Mattes et al. 2003, IEEE Trans Med
Imaging 22:120), which handles the different contrasts of DWI, ADC, CT and DSC, in a
multi-resolution scheme (ANTs: Avants et al. 2011, NeuroImage 54:2033).
"""

from __future__ import annotations

import numpy as np
from nibabel.affines import voxel_sizes
from scipy import ndimage

from strokeperf.brainmask import ball
from strokeperf.errors import DataError
from strokeperf.registration.ants import metric_sampling_rate, register_rigid, to_ants
from strokeperf.registration.resampling import centroid, head_mask, resample_image

#: Metric sample points of inter-scan coregistration (different contrasts: more samples).
COREGISTER_METRIC_POINTS = 40000
#: Schedule of inter-scan coregistration: four levels from 1/8 resolution capture rotations up to
#: 10-15 degrees and shifts of centimetres (ANTs' default rigid schedule with fewer iterations).
COREGISTER_SCHEDULE = ((8, 4, 2, 1), (4.0, 2.0, 1.0, 0.0), (500, 250, 100, 20))


def coregister(moving_image, moving_affine, fixed_image, fixed_affine, moving_mask=None,
               fixed_mask=None):
    """Rigid inter-scan registration by mutual information (e.g. DWI b0 or ADC -> perfusion).

    Mattes mutual information (Mattes et al. 2003) handles the different contrasts of DWI, ADC, CT
    and DSC. The registration starts from the translation that aligns the centroids of the two
    heads (or of the given brain masks), which removes differences of field of view and table
    position, then runs four resolution levels (:data:`COREGISTER_SCHEDULE`). The metric is
    evaluated in the fixed image's head (``fixed_mask`` dilated by 5 mm when given).

    Parameters
    ----------
    moving_image, fixed_image : (X, Y, Z) arrays
    moving_affine, fixed_affine : (4, 4) RAS affines
    moving_mask, fixed_mask : (X, Y, Z) bool, optional
        Brain masks; when given they define the starting centroids and the metric region.

    Returns
    -------
    transform : (4, 4) float
        RAS ``moving -> fixed`` world transform: moving point ``x`` lies at ``transform @ x``.
    resampled : (X', Y', Z') float32
        The moving image on the fixed grid (linear interpolation).
    """
    moving_image = np.asarray(moving_image, dtype=np.float32)
    fixed_image = np.asarray(fixed_image, dtype=np.float32)
    m_region = head_mask(moving_image) if moving_mask is None else np.asarray(moving_mask, bool)
    f_region = head_mask(fixed_image) if fixed_mask is None else np.asarray(fixed_mask, bool)
    if not m_region.any() or not f_region.any():
        raise DataError("coregistration: an image has no foreground")
    shift = centroid(m_region, moving_affine) - centroid(f_region, fixed_affine)
    initial = np.eye(4)
    initial[:3, 3] = shift  # fixed -> moving
    metric_region = f_region
    if fixed_mask is not None:
        vs = voxel_sizes(np.asarray(fixed_affine, float))
        metric_region = ndimage.binary_dilation(f_region, structure=ball(5.0, vs))
    fixed_to_moving = register_rigid(
        to_ants(fixed_image, fixed_affine), to_ants(moving_image, moving_affine),
        COREGISTER_SCHEDULE, fixed_mask=to_ants(metric_region.astype(np.float32), fixed_affine),
        initial=initial, sampling_rate=metric_sampling_rate(COREGISTER_METRIC_POINTS,
                                                            metric_region))
    resampled = resample_image(moving_image, moving_affine, fixed_to_moving, fixed_image.shape,
                               fixed_affine, order=1, mode="constant", cval=0.0)
    return np.linalg.inv(fixed_to_moving), resampled
