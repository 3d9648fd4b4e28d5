"""The bridge to ANTs: numpy arrays and RAS affines to and from ANTs images and transforms, ITK's
thread count, the seeded metric sampling and the rigid registration core shared by motion correction
and coregistration.

Images are numpy arrays ``(X, Y, Z)`` with a 4x4 voxel-to-world affine in nibabel's RAS+ convention
(+x towards the patient's Right, +y Anterior, +z Superior, millimetres). ANTs/ITK works in LPS+
physical space (+x towards the patient's Left, +y Posterior), so every conversion goes through
:data:`RAS_TO_LPS` = diag(-1, -1, 1, 1); :func:`to_ants` / :func:`from_ants` and
:func:`transform_to_ras` / :func:`transform_from_ras` are the only places where that happens.

Rigid registration maximises Mattes mutual information (Mattes et al. 2003, IEEE Trans Med Imaging
22:120) in a multi-resolution scheme (ANTs: Avants et al. 2011, NeuroImage 54:2033).

ANTs is loaded only through :func:`import_ants`, which first fixes ITK's default thread count:
importing :mod:`strokeperf.registration` has no side effect.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np

from strokeperf.errors import DataError

#: RAS+ (nibabel) to LPS+ (ITK/ANTs) world coordinates; its own inverse.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Environment variable from which ITK reads its default thread count when the ANTs library loads.
ITK_THREADS_ENV = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"
#: ITK threads unless the user (or a scheduler, through the environment) chose otherwise:
#: multithreaded ITK sums the metric in a varying order, so two runs of the same data differ (up to
#: 0.007 mm / 0.05 mL measured), which breaks byte-identical reruns and equal cf/SLURM results;
#: sessions run in parallel processes instead.
ITK_THREADS = "1"
#: Histogram bins of the Mattes mutual information (the ANTs default; Mattes et al. 2003 use 50).
MI_BINS = 32
#: Random seed of the metric sampling, so that results are reproducible run to run.
ANTS_RANDOM_SEED = 20120101


def import_ants():
    """The ``ants`` module, loaded with ITK's default thread count set to :data:`ITK_THREADS`
    unless :data:`ITK_THREADS_ENV` is already set (ITK reads it once, when the library loads)."""
    os.environ.setdefault(ITK_THREADS_ENV, ITK_THREADS)
    import ants

    return ants


def to_ants(array, affine):
    """numpy array + RAS affine -> ``ants.ANTsImage`` (float32) at the same physical position.

    The LPS voxel-to-world matrix is ``RAS_TO_LPS @ affine``; its column norms are the spacing,
    the normalised columns the direction cosines and its last column the origin. Shears are not
    representable in ITK and raise :class:`DataError`.
    """
    ants = import_ants()
    data = np.asarray(array, dtype=np.float32)
    if data.ndim != 3:
        raise DataError(f"to_ants needs a 3D image, got shape {data.shape}")
    lps = RAS_TO_LPS @ np.asarray(affine, dtype=float)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    if np.any(spacing <= 0):
        raise DataError("the affine has a zero voxel size")
    direction = lps[:3, :3] / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise DataError("the affine has shears; ITK images need orthogonal axes")
    return ants.from_numpy(np.ascontiguousarray(data), origin=tuple(lps[:3, 3]),
                           spacing=tuple(spacing), direction=direction)


def from_ants(image):
    """``ants.ANTsImage`` -> (numpy array, 4x4 RAS affine); inverse of :func:`to_ants`."""
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(image.direction, dtype=float) @ np.diag(image.spacing)
    lps[:3, 3] = image.origin
    return image.numpy(), RAS_TO_LPS @ lps


def transform_to_ras(transform) -> np.ndarray:
    """An ANTs linear transform (object or ``.mat`` path) -> 4x4 matrix on RAS points.

    ITK maps ``p -> A (p - c) + c + t`` in LPS, with ``A`` the 3x3 matrix, ``t`` the translation and
    ``c`` the centre (fixed parameters); in RAS this is ``RAS_TO_LPS @ M_lps @ RAS_TO_LPS``.
    """
    ants = import_ants()
    if isinstance(transform, (str, os.PathLike)):
        transform = ants.read_transform(str(transform))
    params = np.asarray(transform.parameters, dtype=float)
    centre = np.asarray(transform.fixed_parameters, dtype=float)[:3]
    a = params[:9].reshape(3, 3)
    t = params[9:12]
    m = np.eye(4)
    m[:3, :3] = a
    m[:3, 3] = t + centre - a @ centre
    return RAS_TO_LPS @ m @ RAS_TO_LPS


def transform_from_ras(matrix):
    """4x4 matrix on RAS points -> ``ants.ANTsTransform`` (AffineTransform, LPS, centre 0)."""
    ants = import_ants()
    m = RAS_TO_LPS @ np.asarray(matrix, dtype=float) @ RAS_TO_LPS
    return ants.create_ants_transform(transform_type="AffineTransform", precision="double",
                                      dimension=3, matrix=m[:3, :3], translation=m[:3, 3],
                                      center=(0.0, 0.0, 0.0))


@contextlib.contextmanager
def seeded():
    """Fix ANTs' metric sampling seed for the duration of a call, restoring the previous seed."""
    ants = import_ants()
    old = ants.config._random_seed
    ants.config._random_seed = ANTS_RANDOM_SEED
    try:
        yield
    finally:
        ants.config._random_seed = old


def metric_sampling_rate(n_points: int, region) -> float:
    """Fraction of the metric region to sample for about ``n_points`` points (at most all)."""
    return float(min(1.0, n_points / max(int(np.count_nonzero(region)), 1)))


def register_rigid(fixed, moving, schedule, *, fixed_mask=None, initial=None,
                   sampling_rate: float = 1.0, kind: str = "Rigid") -> np.ndarray:
    """Register ``moving`` to ``fixed`` (ANTsImages); 4x4 RAS ``fixed -> moving`` matrix.

    ``initial`` is a 4x4 RAS ``fixed -> moving`` starting point (identity when None). The
    transform files ANTs writes go to a temporary directory removed on return.
    """
    ants = import_ants()
    shrink, sigmas, iterations = schedule
    with tempfile.TemporaryDirectory(prefix="strokeperf_reg_") as tmp:
        init_path = str(Path(tmp) / "init.mat")
        ants.write_transform(transform_from_ras(np.eye(4) if initial is None else initial),
                             init_path)
        with seeded():
            result = ants.registration(
                fixed, moving, type_of_transform=kind, initial_transform=[init_path],
                mask=fixed_mask, aff_metric="mattes", aff_sampling=MI_BINS,
                aff_random_sampling_rate=sampling_rate, aff_iterations=tuple(iterations),
                aff_shrink_factors=tuple(shrink), aff_smoothing_sigmas=tuple(sigmas),
                smoothing_in_mm=True, outprefix=str(Path(tmp) / "reg_"))
        # ANTs composes the initial transform into the output (it writes the total transform).
        return transform_to_ras(result["fwdtransforms"][-1])
