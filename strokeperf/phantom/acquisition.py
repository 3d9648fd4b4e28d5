"""Acquisition models: frame timing, CT and MR signal, noise, head motion, diffusion.

- CT perfusion: HU(t) = baseline anatomy HU + delta-HU, delta-HU proportional to the iodine
  concentration (linear attenuation); Gaussian image noise; int16 HU.
- DSC-MRI: gradient-echo signal S(t) = S0 exp(-TE dR2*(t)) with dR2* proportional to the
  concentration (Rosen et al. 1990, Magn Reson Med 14:249); magnitude images with Rician noise
  (Gudbjartsson & Patz 1995, Magn Reson Med 34:910).
- DWI: S = S0 exp(-b ADC) per compartment (Stejskal & Tanner 1965, J Chem Phys 42:288), three
  orthogonal directions of an isotropic medium, Rician noise; the scanner's ADC map is the trace
  ADC from the noisy images.
- Head motion: rigid displacement of whole frames, applied to the noise-free frame before the noise
  (the head moves, the scanner noise does not).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from . import anatomy

# --- CT numbers (HU) of unenhanced tissue: typical values GM 35-45, WM 25-35, CSF 0-15, blood ~40 --
GM_HU = 40.0
WM_HU = 30.0
CSF_HU = 5.0
BLOOD_HU = 40.0
SCALP_HU = 30.0
AIR_HU = -1000.0
#: Representable range of int16 CT images (HU).
HU_RANGE = (-1024, 3071)

# --- MR baseline signal (arbitrary units) ---------------------------------------------------------
#: T2*-weighted gradient-echo EPI: CSF brightest, then GM, then WM; no signal from bone or air.
DSC_S0 = {"gm": 1000.0, "wm": 800.0, "csf": 1500.0, "blood": 900.0, "scalp": 500.0}
#: T2-weighted spin-echo EPI (b = 0): long-T2 CSF brightest.
DWI_S0 = {"gm": 1000.0, "wm": 850.0, "csf": 1800.0, "scalp": 400.0}
#: The MR noise SD is the grey-matter baseline divided by the SNR.
GM_REFERENCE_S0 = 1000.0

# --- Diffusion (ADC in 1e-6 mm^2/s) ---------------------------------------------------------------
#: Normal adult brain: GM ~800, WM ~700 (Pierpaoli et al. 1996, Radiology 201:637); CSF ~3000
#: (free water at body temperature); scalp soft tissue ~1000.
ADC = {"gm": 800.0, "wm": 700.0, "csf": 3000.0, "scalp": 1000.0}
#: ADC of the diffusion lesion (the core territory): from 590 at its edge to 420 at its centre,
#: inside the 400-600 range of acute infarcts and below the ADC < 620 core threshold
#: (Purushotham et al. 2015, Int J Stroke 10:348).
LESION_ADC = (590.0, 420.0)
#: Voxels with b = 0 signal below this fraction of the GM baseline get ADC 0 (no tissue signal).
ADC_MASK_FRACTION = 0.15
#: Echo and repetition time (s) written in the DWI sidecar.
DWI_ECHO_TIME_S = 0.08
DWI_REPETITION_TIME_S = 6.0

# --- Timing ---------------------------------------------------------------------------------------
#: Irregular schedule: (until this fraction of the duration, frame interval in s).
IRREGULAR_SCHEDULE = ((0.45, 1.0), (0.7, 2.0), (1.0, 3.0))


def frame_times(frame_interval_s: float, duration_s: float, irregular: bool = False) -> np.ndarray:
    """Frame onset times (s) from 0 to ``duration_s``.

    Regular: every ``frame_interval_s``. Irregular: 1-s frames during the first 45 % of the scan
    (the first pass), 2-s frames to 70 %, then 3-s frames (``frame_interval_s`` is then unused).
    """
    if not irregular:
        n = int(np.floor(duration_s / frame_interval_s + 1e-9)) + 1
        return np.arange(n) * float(frame_interval_s)
    times = [0.0]
    while True:
        fraction = times[-1] / duration_s
        step = next((step for limit, step in IRREGULAR_SCHEDULE if fraction < limit - 1e-9),
                    IRREGULAR_SCHEDULE[-1][1])
        if times[-1] + step > duration_s + 1e-9:
            break
        times.append(times[-1] + step)
    return np.asarray(times)


def motion(rng: np.random.Generator, n_frames: int, max_mm: float, max_deg: float, fraction: float,
           centre_mm) -> tuple[np.ndarray, list]:
    """Random rigid head displacements: (n_frames, 4, 4) matrices and their parameters.

    ``round(fraction * (n_frames - 1))`` frames, never the first (the reference position), get
    translations uniform in [-max_mm, max_mm] and rotations uniform in [-max_deg, max_deg] per axis
    about ``centre_mm``. A matrix maps a point of the head at the reference position (world mm) to
    where it is in that frame.
    """
    matrices = np.tile(np.eye(4), (n_frames, 1, 1))
    params = [{"frame": k, "displaced": False, "translation_mm": [0.0, 0.0, 0.0],
               "rotation_deg": [0.0, 0.0, 0.0]} for k in range(n_frames)]
    n_moved = int(round(fraction * (n_frames - 1)))
    translations = rng.uniform(-1.0, 1.0, (n_frames, 3)) * max_mm
    rotations = rng.uniform(-1.0, 1.0, (n_frames, 3)) * max_deg
    moved = np.sort(rng.permutation(np.arange(1, n_frames))[:n_moved]) if n_moved else np.array([], int)
    if max_mm == 0 and max_deg == 0:
        moved = np.array([], int)
    for k in moved:
        matrices[k] = anatomy.rigid_matrix(rotations[k], translations[k], centre_mm)
        params[k] = {"frame": int(k), "displaced": True, "translation_mm": translations[k].round(6).tolist(),
                     "rotation_deg": rotations[k].round(6).tolist()}
    for k in range(n_frames):
        params[k]["matrix"] = matrices[k].round(9).tolist()
    return matrices, params


def move_volume(volume: np.ndarray, affine: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Resample a 3D volume so the head it shows is displaced by ``matrix`` (world mm, trilinear)."""
    if np.allclose(matrix, np.eye(4)):
        return volume
    source = np.linalg.inv(affine) @ np.linalg.inv(matrix) @ affine
    return ndimage.affine_transform(volume, source[:3, :3], source[:3, 3], order=1, mode="nearest")


def gaussian_noise(rng: np.random.Generator, shape, sd: float) -> np.ndarray:
    """Zero-mean Gaussian noise (float32) of standard deviation ``sd``; zeros when ``sd == 0``."""
    if sd == 0:
        return np.zeros(shape, dtype=np.float32)
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(sd)


def rician(rng: np.random.Generator, signal: np.ndarray, sd: float) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise of SD ``sd`` per channel (Rician)."""
    if sd == 0 or not np.isfinite(sd):
        return signal.astype(np.float32)
    real = signal + rng.standard_normal(signal.shape, dtype=np.float32) * np.float32(sd)
    imag = rng.standard_normal(signal.shape, dtype=np.float32) * np.float32(sd)
    return np.sqrt(real * real + imag * imag)


def ct_baseline_hu(anat: dict, keep: np.ndarray) -> np.ndarray:
    """Unenhanced HU of each voxel: partial-volume mix of the anatomy (scaled by ``keep``, the
    fraction not taken by vessels) plus blood in the vessels."""
    hu = (anat["gm"] * GM_HU + anat["wm"] * WM_HU + anat["csf"] * CSF_HU + anat["skull_hu"]
          + anat["scalp"] * SCALP_HU + anat["air"] * AIR_HU)
    return hu * keep + (1.0 - keep) * BLOOD_HU


def dsc_baseline(anat: dict) -> np.ndarray:
    """T2*-weighted baseline signal S0 of the non-vessel part of each voxel (unscaled)."""
    return sum(anat[name] * DSC_S0[name] for name in ("gm", "wm", "csf", "scalp"))


def diffusion_model(anat: dict, severity: np.ndarray, s_core: float, b_value: float):
    """Noise-free b = 0 signal, b-weighted signal and apparent ADC (1e-6 mm^2/s) of each voxel.

    Each compartment decays with its own ADC; the voxel's ADC is what a perfect scanner would
    measure, ``ln(S0 / Sb) / b``. GM and WM in the core territory (severity >= ``s_core``) take the
    lesion ADC, falling linearly with severity from LESION_ADC[0] to LESION_ADC[1]. Voxels whose
    b = 0 signal is below ADC_MASK_FRACTION of the GM baseline get ADC 0.
    """
    b = b_value * 1e-6  # s/mm^2 x (1e-6 mm^2/s)
    lesion = np.zeros_like(severity, dtype=bool) if s_core >= 1 else severity >= s_core
    depth = np.clip((severity - s_core) / max(1.0 - s_core, 1e-6), 0.0, 1.0)
    lesion_adc = LESION_ADC[0] + (LESION_ADC[1] - LESION_ADC[0]) * depth
    s0 = np.zeros(severity.shape, dtype=float)
    sb = np.zeros(severity.shape, dtype=float)
    for name in ("gm", "wm", "csf", "scalp"):
        adc = np.where(lesion, lesion_adc, ADC[name]) if name in ("gm", "wm") else ADC[name]
        s0 += anat[name] * DWI_S0[name]
        sb += anat[name] * DWI_S0[name] * np.exp(-b * adc)
    valid = s0 >= ADC_MASK_FRACTION * GM_REFERENCE_S0
    with np.errstate(divide="ignore", invalid="ignore"):
        adc = np.where(valid, np.log(s0 / np.where(valid, sb, 1.0)) / b, 0.0)
    return s0, sb, adc


def scanner_adc(dwi: np.ndarray, bvals: np.ndarray) -> np.ndarray:
    """Trace ADC (1e-6 mm^2/s) from a DWI series: mean of ln(S0 / S_i) / b over the diffusion
    directions, 0 where the b = 0 signal is below ADC_MASK_FRACTION of the GM baseline."""
    bvals = np.asarray(bvals, dtype=float)
    s0 = dwi[..., bvals == 0].mean(axis=-1)
    weighted = bvals > 0
    valid = s0 >= ADC_MASK_FRACTION * GM_REFERENCE_S0
    s0_safe = np.where(valid, s0, 1.0)
    total = np.zeros(s0.shape, dtype=float)
    for k in np.flatnonzero(weighted):
        sk = np.clip(dwi[..., k], 1e-3, None)
        total += np.log(s0_safe / sk) / (bvals[k] * 1e-6)
    return np.where(valid, total / weighted.sum(), 0.0)
