"""Anatomy of the phantom: MNI152 tissue maps, a synthetic head, vessels, acquisition grids.

The brain comes from the ICBM 2009a nonlinear symmetric template shipped with nilearn (Fonov et al.
2011, NeuroImage 54:313): grey- and white-matter probability maps and the brain mask at 1 mm; CSF is
the brain mask minus GM minus WM. Around the brain a head is synthesised from the distance to the
brain mask: a thin extra-axial CSF layer, the skull (diploe between two cortical tables) and the scalp.

Everything is a function of world position in MNI mm. A :class:`Grid` maps its voxels to MNI mm, so
maps are sampled on any acquisition grid with partial-volume averaging: each channel is averaged over
the voxel footprint (a box filter of the voxel size) and read at the voxel centre. Tubular vessels
(arteries, dural sinuses) are thinner than the template voxels and are rasterised analytically by
sub-sampling each voxel near their centre lines.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from nibabel.affines import voxel_sizes
from scipy import interpolate, ndimage, spatial

# --- Head model (thicknesses in mm; HU from typical unenhanced CT values) ---------------------------
#: Extra-axial CSF layer between the brain mask and the inner table of the skull (mm).
EXTRA_AXIAL_CSF_MM = 2.0
#: Skull thickness (mm); adult calvarial thickness is about 5-10 mm.
SKULL_MM = 7.0
#: Scalp thickness (mm).
SCALP_MM = 5.0
#: CT numbers (HU) of the cortical tables and the diploe: bone spans roughly 700-2000 HU, the
#: cancellous diploe being the lower end.
SKULL_TABLE_HU = 1500.0
SKULL_DIPLOE_HU = 750.0

# --- Resampling -----------------------------------------------------------------------------------
#: Sub-sample spacing (mm) used to rasterise vessels inside a voxel.
VESSEL_SUBSAMPLE_MM = 0.5
#: Spacing (mm) of the points that represent a vessel centre line.
CENTRELINE_STEP_MM = 0.25
#: Margin (mm) around the brain in x and y, beyond the skull and scalp, in the field of view.
FOV_MARGIN_MM = 5.0
#: MNI z (mm) of the basal ganglia, the centre of a slab acquisition.
BASAL_GANGLIA_Z_MM = 5.0

# --- Vessels --------------------------------------------------------------------------------------
#: Artery centre lines: (name, radius mm, control points in MNI mm for the right side; mirrored for
#: the left unless on the midline). Plausible courses of the internal carotid artery, the M1 and M2
#: segments of the middle cerebral artery, the A1/A2 anterior cerebral artery, the basilar and the
#: posterior cerebral artery; radii 1-2 mm (adult luminal diameters 2-4 mm).
ARTERIES = (
    ("ica", 2.0, ((19, -1, -72), (18, 0, -52), (16, 3, -32), (14, 6, -18))),
    ("mca_m1", 1.5, ((14, 6, -18), (24, 6, -18), (34, 4, -14), (42, 2, -8))),
    ("mca_m2", 1.0, ((42, 2, -8), (41, -4, 3), (39, -12, 14))),
    ("aca_a1", 1.0, ((14, 6, -18), (8, 12, -14), (3, 18, -10))),
    ("aca_a2", 1.0, ((3, 18, -10), (3, 30, 0), (3, 36, 12), (3, 30, 28))),
    ("basilar", 1.5, ((0, -24, -72), (0, -21, -50), (0, -17, -26))),
    ("pca", 1.0, ((0, -17, -26), (8, -20, -21), (18, -30, -14), (24, -50, -7), (22, -70, 1))),
)
#: Radii (mm) of the superior sagittal (growing front to back), transverse and straight sinuses.
SSS_RADIUS_MM = (2.5, 4.0)
TRANSVERSE_RADIUS_MM = 3.5
STRAIGHT_RADIUS_MM = 2.5


@dataclass(frozen=True)
class Grid:
    """An acquisition grid: voxel indices -> scanner world (mm) -> MNI (mm).

    ``affine`` is the NIfTI affine (voxel -> scanner world, RAS mm). ``world_to_mni`` is the rigid
    map from that scanner world to MNI mm: the identity for the perfusion scans, whose world is MNI,
    and the head displacement for a DWI acquired in another position.
    """

    shape: tuple[int, int, int]
    affine: np.ndarray
    world_to_mni: np.ndarray

    @property
    def voxel_size(self) -> np.ndarray:
        """Voxel edge lengths in mm."""
        return voxel_sizes(self.affine)

    @property
    def voxel_volume_ml(self) -> float:
        """Voxel volume in mL."""
        return float(abs(np.linalg.det(self.affine[:3, :3])) / 1000.0)

    @property
    def voxel_to_mni(self) -> np.ndarray:
        return self.world_to_mni @ self.affine

    def mni_points(self, flat_index=None) -> np.ndarray:
        """MNI coordinates (N, 3) in mm of voxel centres (all voxels in C order, or ``flat_index``)."""
        if flat_index is None:
            flat_index = np.arange(int(np.prod(self.shape)))
        ijk = np.stack(np.unravel_index(flat_index, self.shape), axis=1).astype(float)
        m = self.voxel_to_mni
        return ijk @ m[:3, :3].T + m[:3, 3]

    def world_points(self, flat_index=None) -> np.ndarray:
        """Scanner-world coordinates (N, 3) in mm of voxel centres."""
        if flat_index is None:
            flat_index = np.arange(int(np.prod(self.shape)))
        ijk = np.stack(np.unravel_index(flat_index, self.shape), axis=1).astype(float)
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]


def rigid_matrix(rotation_deg=(0.0, 0.0, 0.0), shift_mm=(0.0, 0.0, 0.0), centre_mm=(0.0, 0.0, 0.0)):
    """4x4 rigid transform: rotate about x, then y, then z (degrees) around ``centre_mm``, then shift."""
    ax, ay, az = np.deg2rad(np.asarray(rotation_deg, dtype=float))
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    rot = rz @ ry @ rx
    centre = np.asarray(centre_mm, dtype=float)
    m = np.eye(4)
    m[:3, :3] = rot
    m[:3, 3] = centre - rot @ centre + np.asarray(shift_mm, dtype=float)
    return m


# --- Templates and head ---------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadModel:
    """1-mm maps on the MNI template grid. ``channels`` are fractions (0..1) except ``skull_hu``
    (skull fraction x HU); ``brain`` is the binary brain mask."""

    affine: np.ndarray
    channels: dict
    brain: np.ndarray

    @property
    def brain_bbox_mm(self) -> tuple[np.ndarray, np.ndarray]:
        idx = np.argwhere(self.brain)
        lo = self.affine[:3, :3] @ idx.min(axis=0) + self.affine[:3, 3]
        hi = self.affine[:3, :3] @ idx.max(axis=0) + self.affine[:3, 3]
        return lo, hi


@functools.lru_cache(maxsize=1)
def head_model() -> HeadModel:
    """Load the MNI152 2009a maps shipped with nilearn (no download) and synthesise the head.

    GM and WM are set to 0 outside the brain mask and rescaled where they sum above 1; CSF is the rest
    of the brain mask plus a thin extra-axial layer; skull and scalp are shells at fixed distances
    from the brain mask (Euclidean distance transform). The bottom of the template is left open
    (the head continues into the neck) so no skull closes the foramen magnum.
    """
    from nilearn import datasets

    gm_img = datasets.load_mni152_gm_template(resolution=1)
    wm_img = datasets.load_mni152_wm_template(resolution=1)
    mask_img = datasets.load_mni152_brain_mask(resolution=1)
    brain = np.asarray(mask_img.dataobj) > 0.5
    gm = np.asarray(gm_img.dataobj, dtype=np.float32) * brain
    wm = np.asarray(wm_img.dataobj, dtype=np.float32) * brain
    total = gm + wm
    over = total > 1
    gm[over] /= total[over]
    wm[over] /= total[over]
    csf_brain = np.clip(brain - gm - wm, 0, None).astype(np.float32)

    # open bottom: replicate the lowest slices so the distance transform sees no edge there
    pad = 20
    padded = np.concatenate([np.repeat(brain[:, :, :1], pad, axis=2), brain], axis=2)
    distance = ndimage.distance_transform_edt(~padded)[:, :, pad:].astype(np.float32)
    outside = ~brain
    shell = outside & (distance <= EXTRA_AXIAL_CSF_MM)
    skull = outside & (distance > EXTRA_AXIAL_CSF_MM) & (distance <= EXTRA_AXIAL_CSF_MM + SKULL_MM)
    scalp = outside & (distance > EXTRA_AXIAL_CSF_MM + SKULL_MM) & (
        distance <= EXTRA_AXIAL_CSF_MM + SKULL_MM + SCALP_MM)
    # diploe in the middle of the skull, cortical tables at its surfaces (quadratic profile)
    depth = (distance - EXTRA_AXIAL_CSF_MM - SKULL_MM / 2) / (SKULL_MM / 2)
    skull_hu = SKULL_DIPLOE_HU + (SKULL_TABLE_HU - SKULL_DIPLOE_HU) * np.clip(depth, -1, 1) ** 2
    channels = {
        "gm": gm,
        "wm": wm,
        "csf": csf_brain + shell.astype(np.float32),
        "skull": skull.astype(np.float32),
        "skull_hu": (skull * skull_hu).astype(np.float32),
        "scalp": scalp.astype(np.float32),
    }
    return HeadModel(affine=np.asarray(mask_img.affine, dtype=float), channels=channels, brain=brain)


def _box_kernel(width_vox: float) -> np.ndarray:
    """Weights of a centred box of ``width_vox`` template voxels (fractional ends), sum 1."""
    half = width_vox / 2.0
    n = int(math.ceil(half - 0.5))
    j = np.arange(-n, n + 1, dtype=float)
    w = np.clip(np.minimum(j + 0.5, half) - np.maximum(j - 0.5, -half), 0, None)
    return w / w.sum()


@functools.lru_cache(maxsize=3)
def _footprint_averaged(voxel_size: tuple) -> dict:
    """Head channels box-filtered to a voxel footprint of ``voxel_size`` mm (template axes)."""
    model = head_model()
    out = {}
    for name, channel in model.channels.items():
        data = channel
        for axis, width in enumerate(voxel_size):
            data = ndimage.correlate1d(data, _box_kernel(width), axis=axis, mode="constant")
        out[name] = data
    return out


def sample_anatomy(grid: Grid) -> dict:
    """Partial-volume fractions of the head channels on ``grid`` (dict of arrays of ``grid.shape``).

    Each channel is averaged over a box of the voxel size (area-weighted partial volume) and read at
    the voxel centre with trilinear interpolation. For grids rotated relative to MNI the box stays
    aligned with the template axes, a small approximation for the rotations used here (<= 30
    degrees). Returns ``gm``, ``wm``, ``csf``, ``skull``, ``skull_hu``, ``scalp`` and ``air``
    (1 minus the others).
    """
    model = head_model()
    averaged = _footprint_averaged(tuple(round(float(v), 6) for v in grid.voxel_size))
    to_template = np.linalg.inv(model.affine) @ grid.voxel_to_mni
    ijk = np.indices(grid.shape, dtype=np.float32).reshape(3, -1)
    coords = to_template[:3, :3] @ ijk + to_template[:3, 3:4]
    out = {}
    for name, data in averaged.items():
        values = ndimage.map_coordinates(data, coords, order=1, mode="constant", cval=0.0, prefilter=False)
        out[name] = values.reshape(grid.shape).astype(np.float32)
    matter = out["gm"] + out["wm"] + out["csf"] + out["skull"] + out["scalp"]
    out["air"] = np.clip(1.0 - matter, 0.0, 1.0)
    return out


# --- Grids ----------------------------------------------------------------------------------------


def head_box_mm() -> tuple[np.ndarray, np.ndarray]:
    """MNI bounding box (mm) of the brain, grown in x, y and the top by skull, scalp and a margin."""
    lo, hi = head_model().brain_bbox_mm
    grow = EXTRA_AXIAL_CSF_MM + SKULL_MM + SCALP_MM + FOV_MARGIN_MM
    lo = lo - np.array([grow, grow, 0.0])
    hi = hi + np.array([grow, grow, 0.0])
    return lo, hi


def axial_grid(voxel_size, z_range_mm=None, world_to_mni=None, margin_mm: float = 0.0) -> Grid:
    """Axial RAS grid whose field of view covers the head (no fixed matrix).

    ``z_range_mm`` (lo, hi) in world mm limits the slices (default: the whole brain). The grid is
    centred on the head box; for a DWI displaced by ``world_to_mni`` the box is mapped into that
    scanner world first and ``margin_mm`` added on every side.
    """
    voxel_size = np.asarray(voxel_size, dtype=float)
    lo, hi = head_box_mm()
    if world_to_mni is None:
        world_to_mni = np.eye(4)
    else:
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        inv = np.linalg.inv(world_to_mni)
        moved = corners @ inv[:3, :3].T + inv[:3, 3]
        lo, hi = moved.min(axis=0), moved.max(axis=0)
    lo = lo - margin_mm
    hi = hi + margin_mm
    if z_range_mm is not None:
        lo[2], hi[2] = z_range_mm
    shape = np.maximum(np.ceil((hi - lo) / voxel_size - 1e-9).astype(int), 1)
    centre = (lo + hi) / 2.0
    origin = centre - (shape - 1) / 2.0 * voxel_size
    affine = np.eye(4)
    affine[:3, :3] = np.diag(voxel_size)
    affine[:3, 3] = origin
    return Grid(shape=tuple(int(s) for s in shape), affine=affine, world_to_mni=np.asarray(world_to_mni, float))


def slab_z_range(slab_mm: float) -> tuple[float, float]:
    """z-range (mm) of a slab of ``slab_mm`` centred on the basal ganglia."""
    return BASAL_GANGLIA_Z_MM - slab_mm / 2.0, BASAL_GANGLIA_Z_MM + slab_mm / 2.0


# --- Vessels --------------------------------------------------------------------------------------


def _spline_curve(control_points, step_mm: float = CENTRELINE_STEP_MM) -> np.ndarray:
    """Points every ~``step_mm`` along a smooth cubic through the control points (chord-length)."""
    pts = np.asarray(control_points, dtype=float)
    chord = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    if len(pts) == 2:
        spline = interpolate.interp1d(chord, pts, axis=0)
    else:
        spline = interpolate.CubicSpline(chord, pts, axis=0, bc_type="natural")
    fine = np.linspace(0.0, chord[-1], max(int(chord[-1] / step_mm) * 4, 8))
    dense = spline(fine)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(dense, axis=0), axis=1))])
    samples = np.arange(0.0, arc[-1] + 1e-9, step_mm)
    return np.stack([np.interp(samples, arc, dense[:, k]) for k in range(3)], axis=1)


def artery_centrelines() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points (N, 3) in MNI mm, radius (N,) in mm and name index (N,) of every artery centre line."""
    points, radii, names = [], [], []
    for index, (name, radius, controls) in enumerate(ARTERIES):
        controls = np.asarray(controls, dtype=float)
        sides = [controls] if np.all(controls[:, 0] == 0) else [controls, controls * [-1, 1, 1]]
        for side in sides:
            curve = _spline_curve(side)
            points.append(curve)
            radii.append(np.full(len(curve), radius))
            names.append(np.full(len(curve), index))
    return np.concatenate(points), np.concatenate(radii), np.concatenate(names)


def _surface_rays(origin, directions, lateral_x=(0.0,), max_mm: float = 130.0, step: float = 0.5):
    """Distance (mm) from ``origin`` to the outer edge of the brain mask along each direction.

    The mask is read at x offsets ``lateral_x`` and combined (OR) so the interhemispheric fissure
    does not pull a midline surface inwards.
    """
    model = head_model()
    inv = np.linalg.inv(model.affine)
    r = np.arange(0.0, max_mm, step)
    inside = np.zeros((len(directions), len(r)), dtype=bool)
    for dx in lateral_x:
        pts = origin[None, None, :] + directions[:, None, :] * r[None, :, None] + np.array([dx, 0, 0])
        ijk = pts @ inv[:3, :3].T + inv[:3, 3]
        values = ndimage.map_coordinates(model.brain.astype(np.float32), ijk.reshape(-1, 3).T, order=0,
                                         mode="constant", cval=0.0)
        inside |= values.reshape(inside.shape) > 0.5
    last = np.where(inside.any(axis=1), len(r) - 1 - np.argmax(inside[:, ::-1], axis=1), 0)
    return r[last]


@functools.lru_cache(maxsize=1)
def sinus_centrelines() -> tuple[np.ndarray, np.ndarray]:
    """Points (N, 3) in MNI mm and radius (N,) in mm of the dural venous sinuses.

    The superior sagittal sinus follows the midline brain surface from the frontal pole over the
    vertex to the occipital confluence, lying just outside the brain (between brain and skull); the
    transverse sinuses run laterally from the confluence along the posterior brain surface, sloping
    down; the straight sinus joins the vein of Galen to the confluence.
    """
    # superior sagittal sinus: rays in the midsagittal plane from a central point
    origin = np.array([0.0, -18.0, 8.0])
    theta = np.deg2rad(np.arange(20.0, 196.0, 1.0))
    dirs = np.stack([np.zeros_like(theta), np.cos(theta), np.sin(theta)], axis=1)
    rho = ndimage.gaussian_filter1d(_surface_rays(origin, dirs, lateral_x=(-2.0, 0.0, 2.0)), 4.0, mode="nearest")
    radius = np.linspace(*SSS_RADIUS_MM, len(theta))
    coarse = origin + dirs * (rho + radius + 0.5)[:, None]
    sss = _spline_curve(coarse[::5])
    sss_r = np.interp(np.linspace(0, 1, len(sss)), np.linspace(0, 1, len(radius)), radius)
    confluence = sss[-1]

    # transverse sinuses: rays in a plane through the confluence, sloping down laterally
    origin_t = np.array([0.0, confluence[1] + 60.0, confluence[2]])
    phi = np.deg2rad(np.arange(-70.0, 71.0, 2.0))
    dirs_t = np.stack([np.sin(phi), -np.cos(phi), -0.35 * np.abs(np.sin(phi))], axis=1)
    dirs_t /= np.linalg.norm(dirs_t, axis=1, keepdims=True)
    rho_t = ndimage.gaussian_filter1d(_surface_rays(origin_t, dirs_t), 2.0, mode="nearest")
    transverse = _spline_curve((origin_t + dirs_t * (rho_t + TRANSVERSE_RADIUS_MM + 0.5)[:, None])[::3])

    straight = _spline_curve([(0.0, -42.0, 2.0), confluence])
    points = np.concatenate([sss, transverse, straight])
    radii = np.concatenate([sss_r, np.full(len(transverse), TRANSVERSE_RADIUS_MM),
                            np.full(len(straight), STRAIGHT_RADIUS_MM)])
    return points, radii


def tube_fraction(grid: Grid, points: np.ndarray, radii: np.ndarray,
                  subsample_mm: float = VESSEL_SUBSAMPLE_MM, chunk: int = 4096) -> np.ndarray:
    """Fraction of each voxel inside tubes of radius ``radii`` (mm) around ``points`` (MNI mm).

    Voxels whose centre lies within reach of a centre line are sub-sampled on a regular
    ``subsample_mm`` lattice of their footprint; a sub-sample is inside when its distance to the
    nearest centre-line point is below that point's radius.
    """
    out = np.zeros(int(np.prod(grid.shape)), dtype=np.float32)
    if len(points) == 0:
        return out.reshape(grid.shape)
    tree = spatial.cKDTree(points)
    voxel = grid.voxel_size
    reach = float(radii.max() + 0.5 * np.linalg.norm(voxel) + CENTRELINE_STEP_MM)
    dist, _ = tree.query(grid.mni_points(), distance_upper_bound=reach, workers=2)
    candidates = np.flatnonzero(np.isfinite(dist))
    n_sub = np.maximum(np.ceil(voxel / subsample_mm).astype(int), 1)
    offsets = np.stack(np.meshgrid(*[(np.arange(n) + 0.5) / n - 0.5 for n in n_sub], indexing="ij"),
                       axis=-1).reshape(-1, 3)
    m = grid.voxel_to_mni
    for start in range(0, len(candidates), chunk):
        idx = candidates[start:start + chunk]
        ijk = np.stack(np.unravel_index(idx, grid.shape), axis=1).astype(float)
        sub = (ijk[:, None, :] + offsets[None, :, :]).reshape(-1, 3)
        xyz = sub @ m[:3, :3].T + m[:3, 3]
        d, nearest = tree.query(xyz, distance_upper_bound=float(radii.max()), workers=2)
        hit = np.isfinite(d)
        inside = np.zeros(len(xyz), dtype=bool)
        inside[hit] = d[hit] < radii[nearest[hit]]
        inside = inside.reshape(len(idx), len(offsets))
        out[idx] = inside.mean(axis=1)
    return out.reshape(grid.shape)
