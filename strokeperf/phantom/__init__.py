"""Digital reference phantom: raw BIDS CT perfusion, DSC-MRI and DWI with known ground truth.

Every accuracy test of strokeperf is measured against this phantom, so the truth comes from the
model parameters on each output grid, never from the noisy images.

Model
-----
Anatomy (:mod:`.anatomy`)
    The ICBM 2009a MNI152 GM, WM and brain-mask maps shipped with nilearn (Fonov et al. 2011,
    NeuroImage 54:313); CSF = brain mask - GM - WM. A head is synthesised around the brain
    (extra-axial CSF, skull with cortical tables ~1500 HU and diploe ~750 HU, scalp, air at
    -1000 HU). Maps are resampled onto axial RAS grids whose world coordinates are MNI mm with
    partial-volume (voxel-footprint) averaging. Arteries (ICA, MCA M1/M2, ACA, basilar, PCA;
    radius 1-2 mm) and dural sinuses (superior sagittal, transverse, straight; radius 2.5-4 mm,
    between brain and skull) are tubes rasterised by sub-sampling.
Patient (:mod:`.lesion`)
    Normal GM CBF 60 mL/100g/min, CBV 4 mL/100g; WM 22 and 2 (Leenders et al. 1990, Brain 113:27);
    CSF 0. Each voxel is one compartment with CBF = sum_i f_i CBF_i, CBV = sum_i f_i CBV_i and
    MTT = CBV / CBF x 60 s. Normal tissue has a smooth random delay (0-1.5 s) and dispersion. The
    lesion is a graded middle cerebral artery territory (smooth perturbed ellipsoid in one
    hemisphere) whose severity raises Tmax linearly to ``max_tmax`` at its centre (12-16 s), lowers
    CBF through oligaemia, penumbra and core (Astrup et al. 1981, Stroke 12:723; Campbell et al.
    2011, Stroke 42:3435), raises CBV in the penumbra and lowers it in the core (Powers 1991, Ann
    Neurol 29:231; Wintermark et al. 2006, Stroke 37:979), and raises dispersion (Calamante et al.
    2006, Magn Reson Med 55:1180). Its size is calibrated to a target Tmax > 6 s volume.
Tracer kinetics (:mod:`.curves`)
    ``C(t) = flow_rate_per_s(CBF) * (AIF conv h_disp conv R)(t - delay)`` (Østergaard et al. 1996,
    Magn Reson Med 36:715) with the gamma residue ``R`` (Mouridsen et al. 2006, NeuroImage 33:570)
    and exponential dispersion ``h_disp`` (Calamante et al. 2000, Magn Reson Med 44:466) of
    :mod:`strokeperf.kinetics`, by FFT on a 0.1-s grid, then sampled at the frame times. The AIF
    is a gamma variate (Madsen 1992, Phys Med Biol 37:1597) plus a smaller, broader recirculation;
    the VOF is the AIF convolved with a venous transit-time density (same area). Arterial voxels
    mix the AIF (delay 0) with tissue by their vessel fraction; sinus voxels mix the VOF. True
    Tmax is the time of the maximum of the effective residue (Calamante et al. 2010, Stroke
    41:1169) on a 0.05-s grid.
Acquisition (:mod:`.acquisition`)
    CT: baseline HU + delta-HU + Gaussian noise, int16 HU. DSC: S0 exp(-TE dR2*) with Rician noise
    (Gudbjartsson & Patz 1995, Magn Reson Med 34:910). DWI: b = 0 and three orthogonal b-weighted
    volumes with per-compartment ADC (GM 800, WM 700, CSF 3000, lesion 420-590 x 1e-6 mm^2/s;
    Pierpaoli et al. 1996, Radiology 201:637), Rician noise, scanner-style trace ADC map. Optional
    irregular timing, head motion, slab coverage and a rigid DWI-to-perfusion displacement.

Output layout: see ``generate_dataset`` and the README of ``bids_examples``.
"""

from .config import PhantomConfig
from .generate import generate_dataset
from .truth import read_truth

__all__ = ["PhantomConfig", "generate_dataset", "read_truth"]
