"""Patient model: normal perfusion, smooth random delay/dispersion fields and the graded lesion.

Everything here is a function of MNI position (mm), so one patient (one seed) looks the same on every
acquisition grid. Normal values, per 100 g of tissue::

    grey matter   CBF 60 mL/100g/min, CBV 4 mL/100g   (MTT 4 s)
    white matter  CBF 22 mL/100g/min, CBV 2 mL/100g   (MTT 5.5 s)

within the ranges measured with PET (Leenders et al. 1990, Brain 113:27) and commonly used in
perfusion phantoms. The lesion is a middle cerebral artery territory hypoperfusion with a severity
field ``s`` in [0, 1] (0 outside, 1 at its centre): Tmax rises with ``s`` from its normal value
to ``max_tmax`` (see :func:`target_tmax`) (Olivot et al. 2009, Stroke 40:469 for the Tmax > 6 s critical hypoperfusion
threshold); CBF falls through oligaemia (~80-100 % of normal), penumbra (~35-70 %) and core
(< 25 %; Astrup et al. 1981, Stroke 12:723; relative CBF < 30 % core, Campbell et al. 2011, Stroke
42:3435); CBV is preserved or raised by autoregulatory vasodilation in the penumbra and falls in the
core (Powers 1991, Ann Neurol 29:231; Wintermark et al. 2006, Stroke 37:979); bolus dispersion grows
with severity, as collateral flow lengthens the path to the tissue (Calamante et al. 2006, Magn Reson
Med 55:1180).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from . import anatomy, curves

# --- Normal perfusion (Leenders et al. 1990, Brain 113:27) ----------------------------------------
GM_CBF_ML_100G_MIN = 60.0
GM_CBV_ML_100G = 4.0
WM_CBF_ML_100G_MIN = 22.0
WM_CBV_ML_100G = 2.0

# --- Lesion geometry (MNI mm) ---------------------------------------------------------------------
#: Centre of the MCA-territory lesion (x for the right hemisphere; insula / frontoparietal
#: operculum, the core of the MCA territory) and its random jitter (SD, mm).
LESION_CENTRE_MM = (36.0, -12.0, 14.0)
LESION_CENTRE_JITTER_MM = (3.0, 6.0, 5.0)
#: Relative semi-axes (lateral, antero-posterior, cranio-caudal) of the territory ellipsoid.
LESION_AXES = (0.55, 1.0, 0.8)
#: Maximal random tilt (degrees) of the ellipsoid about each axis.
LESION_TILT_DEG = 15.0
#: Low-frequency shape perturbation: number of terms, amplitude of each, angular frequency range.
PERTURB_TERMS = 6
PERTURB_AMPLITUDE = 0.1
PERTURB_FREQUENCY = (1.0, 2.5)
#: Width (mm) over which the lesion fades out towards the midline.
MIDLINE_TAPER_MM = 4.0
#: Artery centre-line points with severity above this are occluded (not drawn).
OCCLUSION_SEVERITY = 0.0

# --- Severity -> physiology -----------------------------------------------------------------------
#: Relative CBF (fraction of the voxel's normal) at the severity knots of the Tmax 4 and 6 s
#: crossings and the core boundary; oligaemia 80-100 %, penumbra 35-70 %, core < 25 % (Astrup 1981).
CBF_OLIGAEMIA = (1.0, 0.9, 0.75)
CBF_PENUMBRA = (0.75, 0.40)
CBF_CORE = (0.20, 0.05)
#: Penumbral CBF never drops below this fraction of the normal mean, core CBF never exceeds this
#: fraction: a margin around the rCBF < 0.30 core threshold (Campbell et al. 2011).
PENUMBRA_MIN_RCBF = 0.38
CORE_MAX_RCBF = 0.22
#: Relative CBV: raised in oligaemia and penumbra (autoregulatory vasodilation, Powers 1991),
#: reduced in the core (Wintermark et al. 2006).
CBV_OLIGAEMIA = (1.0, 1.1)
CBV_PENUMBRA = (1.1, 1.25)
CBV_CORE = (0.65, 0.35)
#: Severity margin of the core boundary above the Tmax 6 s crossing, so the core lies in Tmax > 6.
CORE_MARGIN = 0.03

# --- Random ranges (drawn from the seed when an option is None) -----------------------------------
LESION_VOLUME_RANGE_ML = (30.0, 150.0)
CORE_FRACTION_RANGE = (0.15, 0.5)
MAX_TMAX_RANGE_S = (12.0, 16.0)
#: Range of the Tmax profile exponent (see target_tmax): hypoperfusion intensity ratios
#: (Tmax>10 / Tmax>6) of about 0.1-0.55, spanning good to poor collaterals (Olivot et al. 2014,
#: Stroke 45:1018).
TMAX_EXPONENT_RANGE = (1.0, 3.5)
LESION_DISPERSION_RANGE_S = (2.0, 4.0)
#: Wavelength range (mm) of the smooth random delay and dispersion fields of normal tissue.
FIELD_WAVELENGTH_MM = (60.0, 160.0)
#: Resolution (mm) of the grid used to calibrate the lesion size.
CALIBRATION_MM = 2


@dataclass(frozen=True)
class SmoothField:
    """Smooth random field in [0, 1]: ``0.5 + 0.5 * sum_k a_k sin(w_k . x + phi_k) / sum_k |a_k|``."""

    wavevectors: np.ndarray  # (K, 3) rad/mm
    phases: np.ndarray
    amplitudes: np.ndarray

    def __call__(self, points_mm: np.ndarray) -> np.ndarray:
        arg = points_mm @ self.wavevectors.T + self.phases
        total = np.sin(arg) @ self.amplitudes
        return 0.5 + 0.5 * total / np.abs(self.amplitudes).sum()

    @classmethod
    def random(cls, rng: np.random.Generator, n_terms: int = 6, wavelength_mm=FIELD_WAVELENGTH_MM):
        direction = rng.normal(size=(n_terms, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        k = 2 * np.pi / rng.uniform(*wavelength_mm, size=n_terms)
        return cls(direction * k[:, None], rng.uniform(0, 2 * np.pi, n_terms), rng.uniform(0.5, 1.0, n_terms))


@dataclass(frozen=True)
class Lesion:
    """A graded MCA-territory lesion: smooth, low-frequency perturbed ellipsoid in one hemisphere.

    ``severity(points)`` is ``1 - r`` clipped to [0, 1], ``r`` the perturbed ellipsoidal radius
    (0 at the centre, 1 at the edge), faded to 0 at the midline. ``s4``, ``s6`` and ``s_core`` are
    the severities of the nominal Tmax 4 s and 6 s crossings and of the core boundary.
    """

    side: str
    centre_mm: np.ndarray
    rotation: np.ndarray
    radii_mm: np.ndarray
    perturb_k: np.ndarray
    perturb_phase: np.ndarray
    perturb_amp: np.ndarray
    max_tmax_s: float
    tmax_exponent: float
    dispersion_s: float
    s4: float
    s6: float
    s_core: float

    def radius(self, points_mm: np.ndarray) -> np.ndarray:
        """Perturbed ellipsoidal radius: 0 at the centre, 1 on the lesion boundary."""
        rel = (np.asarray(points_mm, dtype=float) - self.centre_mm) @ self.rotation
        scaled = rel / self.radii_mm
        rho = np.linalg.norm(scaled, axis=-1)
        unit = scaled / np.maximum(rho, 1e-9)[..., None]
        bump = np.sin(unit @ self.perturb_k.T + self.perturb_phase) @ self.perturb_amp
        return rho / (1.0 + bump)

    def severity(self, points_mm: np.ndarray, radius: np.ndarray | None = None) -> np.ndarray:
        r = self.radius(points_mm) if radius is None else radius
        sign = 1.0 if self.side == "R" else -1.0
        return np.clip(1.0 - r, 0.0, 1.0) * np.clip(sign * points_mm[..., 0] / MIDLINE_TAPER_MM, 0.0, 1.0)

    def scaled(self, factor: float) -> "Lesion":
        return Lesion(**{**self.__dict__, "radii_mm": self.radii_mm * factor})

    def to_dict(self) -> dict:
        return {
            "side": self.side,
            "centre_mm": self.centre_mm.round(3).tolist(),
            "semi_axes_mm": self.radii_mm.round(3).tolist(),
            "rotation": self.rotation.round(6).tolist(),
            "max_tmax_s": self.max_tmax_s,
            "tmax_exponent": self.tmax_exponent,
            "dispersion_at_centre_s": self.dispersion_s,
            "severity_tmax4": self.s4,
            "severity_tmax6": self.s6,
            "severity_core": self.s_core,
        }


@dataclass(frozen=True)
class Patient:
    """One patient drawn from a seed: fields of normal tissue, the lesion (or None), references."""

    delay_field: SmoothField
    dispersion_field: SmoothField
    lesion: Lesion | None
    normal_delay_s: float
    delay_offset_s: float
    normal_dispersion_s: float
    dispersion_s: float
    ref_cbf: float  # mean normal CBF (mL/100g/min) of brain tissue: the reference of rCBF
    calibration: dict

    def normal_delay(self, points_mm):
        """Delay (s) of normal tissue relative to the AIF: offset + smooth field in [0, range]."""
        return self.delay_offset_s + self.normal_delay_s * self.delay_field(points_mm)

    def severity(self, points_mm):
        if self.lesion is None:
            return np.zeros(len(points_mm))
        return self.lesion.severity(points_mm)

    def tissue(self, points_mm, gm, wm):
        """Per-voxel model parameters at ``points_mm`` for GM/WM fractions ``gm``, ``wm``.

        Returns a dict of arrays: ``cbf`` (mL/100g/min), ``cbv`` (mL/100g), ``beta`` (dispersion
        time constant, s), the same three without the lesion (``cbf_normal``, ``cbv_normal``,
        ``beta_normal``), ``normal_delay`` (s) and ``severity``.
        """
        gm = np.asarray(gm, dtype=float)
        wm = np.asarray(wm, dtype=float)
        cbf_n = gm * GM_CBF_ML_100G_MIN + wm * WM_CBF_ML_100G_MIN
        cbv_n = gm * GM_CBV_ML_100G + wm * WM_CBV_ML_100G
        s = self.severity(points_mm)
        beta_n = self.dispersion_s + self.normal_dispersion_s * self.dispersion_field(points_mm)
        cbf, cbv, beta = cbf_n, cbv_n, beta_n
        if self.lesion is not None:
            les = self.lesion
            m_cbf, m_cbv = relative_perfusion(s, les.s4, les.s6, les.s_core)
            cbf = cbf_n * m_cbf
            core = (s >= les.s_core) if les.s_core < 1.0 else np.zeros(s.shape, dtype=bool)
            penumbra = (s > 0) & ~core
            floor = np.minimum(PENUMBRA_MIN_RCBF * self.ref_cbf, cbf_n)
            cbf = np.where(penumbra, np.maximum(cbf, floor), cbf)
            cbf = np.where(core, np.minimum(cbf, CORE_MAX_RCBF * self.ref_cbf), cbf)
            cbv = cbv_n * m_cbv
            beta = beta_n + s * les.dispersion_s
        return {"cbf": cbf, "cbv": cbv, "beta": beta, "cbf_normal": cbf_n, "cbv_normal": cbv_n,
                "beta_normal": beta_n, "normal_delay": self.normal_delay(points_mm), "severity": s}


def normal_tmax(params: dict, residue_shape: float) -> np.ndarray:
    """Tmax (s) each voxel would have without the lesion: normal delay + peak of its normal
    effective residue (normal MTT and dispersion)."""
    cbf_n = params["cbf_normal"]
    mtt_n = curves.quantize(np.where(cbf_n > 0, params["cbv_normal"] / np.where(cbf_n > 0, cbf_n, 1.0) * 60.0,
                                     curves.PARAMETER_QUANTUM_S))
    offset = curves.effective_residue_peak(np.maximum(mtt_n, curves.PARAMETER_QUANTUM_S),
                                           curves.quantize(params["beta_normal"]), residue_shape)
    return params["normal_delay"] + offset


def relative_perfusion(s, s4, s6, s_core):
    """Relative CBF and CBV (fractions of the voxel's normal values) as functions of severity."""
    s = np.asarray(s, dtype=float)
    cbf = np.where(
        s < s4, np.interp(s, [0, s4], CBF_OLIGAEMIA[:2]),
        np.where(s < s6, np.interp(s, [s4, s6], CBF_OLIGAEMIA[1:]),
                 np.where(s < s_core, np.interp(s, [s6, s_core], CBF_PENUMBRA),
                          np.interp(s, [s_core, 1.0], CBF_CORE))))
    cbv = np.where(
        s < s6, np.interp(s, [0, s6], CBV_OLIGAEMIA),
        np.where(s < s_core, np.interp(s, [s6, s_core], CBV_PENUMBRA), np.interp(s, [s_core, 1.0], CBV_CORE)))
    return cbf, cbv


def target_tmax(normal_tmax, s, max_tmax, exponent=1.0):
    """Tmax (s) at severity ``s``: ``normal + (1 - (1 - s) ** exponent) * (max_tmax - normal)``.

    Exponent 1 is a linear rise from the voxel's normal Tmax at the lesion edge to ``max_tmax`` at
    its centre; larger exponents rise steeply at the edge and leave more tissue with very long Tmax
    (poor collaterals, a high Tmax>10 / Tmax>6 ratio).
    """
    rise = 1.0 - (1.0 - np.asarray(s)) ** exponent
    return normal_tmax + rise * np.clip(max_tmax - normal_tmax, 0.0, None)


def severity_at(fraction, exponent):
    """Severity at which ``target_tmax`` has covered ``fraction`` of its rise (inverse of the rise)."""
    return 1.0 - (1.0 - fraction) ** (1.0 / exponent)


@functools.lru_cache(maxsize=1)
def _calibration_grid():
    """Tissue voxels (GM + WM >= 0.5) of the template averaged to a coarse MNI grid: points, gm, wm."""
    model = anatomy.head_model()
    f = CALIBRATION_MM

    def block(a):
        sx, sy, sz = (n // f * f for n in a.shape)
        a = a[:sx, :sy, :sz]
        return a.reshape(sx // f, f, sy // f, f, sz // f, f).mean(axis=(1, 3, 5))

    gm, wm = block(model.channels["gm"]), block(model.channels["wm"])
    keep = np.flatnonzero((gm + wm).ravel() >= 0.5)
    ijk = np.stack(np.unravel_index(keep, gm.shape), axis=1) * f + (f - 1) / 2.0
    points = ijk @ model.affine[:3, :3].T + model.affine[:3, 3]
    return points, gm.ravel()[keep], wm.ravel()[keep], float(f ** 3 / 1000.0)


def draw_patient(config, rng: np.random.Generator) -> Patient:
    """Draw the patient of ``config`` (a PhantomConfig) from ``rng``; size the lesion to the target.

    The lesion radii are scaled by bisection so that the tissue volume (GM + WM >= 0.5, 2-mm MNI
    grid) with nominal Tmax > 6 s matches ``lesion_volume_ml``; the core boundary is the severity
    quantile that leaves ``core_fraction`` of that volume above it.
    """
    points, gm, wm, voxel_ml = _calibration_grid()
    delay_field = SmoothField.random(rng)
    dispersion_field = SmoothField.random(rng)
    ref_cbf = float(np.mean(gm * GM_CBF_ML_100G_MIN + wm * WM_CBF_ML_100G_MIN))
    common = dict(delay_field=delay_field, dispersion_field=dispersion_field,
                  normal_delay_s=float(config.normal_delay_s), delay_offset_s=float(config.delay_offset_s),
                  normal_dispersion_s=float(config.normal_dispersion_s), dispersion_s=float(config.dispersion_s),
                  ref_cbf=ref_cbf)

    # draw everything from the stream in a fixed order, whether or not an option overrides it
    side = "R" if rng.random() < 0.5 else "L"
    volume = rng.uniform(*LESION_VOLUME_RANGE_ML)
    core_fraction = rng.uniform(*CORE_FRACTION_RANGE)
    max_tmax = rng.uniform(*MAX_TMAX_RANGE_S)
    dispersion = rng.uniform(*LESION_DISPERSION_RANGE_S)
    exponent = rng.uniform(*TMAX_EXPONENT_RANGE)
    jitter = rng.normal(size=3) * LESION_CENTRE_JITTER_MM
    axes = np.asarray(LESION_AXES) * rng.uniform(0.85, 1.15, 3)
    tilt = rng.uniform(-LESION_TILT_DEG, LESION_TILT_DEG, 3)
    k_dir = rng.normal(size=(PERTURB_TERMS, 3))
    k = k_dir / np.linalg.norm(k_dir, axis=1, keepdims=True) * rng.uniform(*PERTURB_FREQUENCY, (PERTURB_TERMS, 1))
    phase = rng.uniform(0, 2 * np.pi, PERTURB_TERMS)
    amp = rng.uniform(-PERTURB_AMPLITUDE, PERTURB_AMPLITUDE, PERTURB_TERMS)
    if not config.lesion:
        return Patient(lesion=None, calibration={}, **common)

    side = config.lesion_side or side
    volume = config.lesion_volume_ml if config.lesion_volume_ml is not None else volume
    core_fraction = config.core_fraction if config.core_fraction is not None else core_fraction
    max_tmax = config.max_tmax_s if config.max_tmax_s is not None else max_tmax
    dispersion = config.lesion_dispersion_s if config.lesion_dispersion_s is not None else dispersion
    exponent = config.tmax_exponent if config.tmax_exponent is not None else exponent

    sign = 1.0 if side == "R" else -1.0
    centre = np.asarray(LESION_CENTRE_MM) * [sign, 1, 1] + jitter
    # mirroring across x negates the rotations about y and z
    rotation = anatomy.rigid_matrix(tilt * [1, sign, sign])[:3, :3]
    base = Lesion(side=side, centre_mm=centre, rotation=rotation, radii_mm=axes, perturb_k=k * [sign, 1, 1],
                  perturb_phase=phase, perturb_amp=amp, max_tmax_s=float(max_tmax), tmax_exponent=float(exponent),
                  dispersion_s=float(dispersion), s4=0.0, s6=0.0, s_core=1.0)

    # exact normal Tmax of each calibration voxel; the knots use its median
    healthy = Patient(lesion=None, calibration={}, **common)
    t_normal = normal_tmax(healthy.tissue(points, gm, wm), config.residue_shape)
    nominal = float(np.median(t_normal))
    s4 = float(np.clip(severity_at((4.0 - nominal) / (max_tmax - nominal), exponent), 0.02, 0.9))
    s6 = float(np.clip(severity_at((6.0 - nominal) / (max_tmax - nominal), exponent), s4 + 0.02, 0.92))

    radius = base.radius(points)  # radii scale by a factor: the radius scales by its inverse

    def tmax6(scale):
        s = base.severity(points, radius / scale)
        return s, target_tmax(t_normal, s, max_tmax, exponent) > 6.0

    lo, hi = 1.0, 250.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if tmax6(mid)[1].sum() * voxel_ml < volume:
            lo = mid
        else:
            hi = mid
    scale = hi
    s, in6 = tmax6(scale)
    achieved = float(in6.sum() * voxel_ml)
    s_core = float(np.quantile(s[in6], 1.0 - core_fraction)) if in6.any() and core_fraction > 0 else 1.0
    s_core = float(np.clip(s_core, s6 + CORE_MARGIN, 1.0))
    lesion = Lesion(**{**base.scaled(scale).__dict__, "s4": s4, "s6": s6, "s_core": s_core})
    calibration = {"target_tmax6_ml": float(volume), "calibrated_tmax6_ml": achieved,
                   "target_core_fraction": float(core_fraction),
                   "calibrated_core_ml": float(((s >= s_core) & in6).sum() * voxel_ml),
                   "median_normal_tmax_s": nominal}
    return Patient(lesion=lesion, calibration=calibration, **common)
