"""Options of the digital reference phantom (one dataclass, documented with units)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

#: Perfusion and diffusion modalities the phantom can write.
MODALITIES = ("ctp", "dsc", "dwi")

#: Default in-plane x in-plane x slice voxel size in mm per modality. 5-mm CTP source slices with
#: ~1.5-mm pixels and ~1.8-mm EPI pixels are common clinical choices.
DEFAULT_VOXEL_SIZE_MM = {
    "ctp": (1.5, 1.5, 5.0),
    "dsc": (1.8, 1.8, 5.0),
    "dwi": (1.8, 1.8, 5.0),
}
#: Default frame interval (s) and scan duration (s) per perfusion modality: CTP 1.5 s x 45 frames
#: (66 s), DSC TR 1.5 s x 50 frames (73.5 s).
DEFAULT_FRAME_INTERVAL_S = {"ctp": 1.5, "dsc": 1.5}
DEFAULT_DURATION_S = {"ctp": 66.0, "dsc": 73.5}


@dataclass
class PhantomConfig:
    """Every option of the phantom. ``None`` means "drawn from the seed" unless stated otherwise.

    The same seed with the same options gives byte-identical output.

    Acquisition
    -----------
    seed : int
        Seed of every random choice (lesion shape, delays, AIF, noise, motion).
    voxel_size_mm : (x, y, z) in mm or None
        Voxel size of every modality's grid; None uses the modality defaults
        (CTP 1.5 x 1.5 x 5, DSC and DWI 1.8 x 1.8 x 5). The field of view always covers the head.
    slab_mm : float or None
        z-coverage of the perfusion series in mm, centred on the basal ganglia; None = whole brain.
    frame_interval_s, duration_s : float or None
        Frame interval and scan duration in s for CTP and DSC; None uses the modality defaults
        (CTP 1.5 s / 66 s, DSC 1.5 s / 73.5 s).
    irregular : bool
        Irregular sampling (1-s frames for the first 45 % of the duration, then 2-s, then 3-s
        frames; ``frame_interval_s`` is then unused) written as BIDS ``VolumeTiming`` instead of
        ``RepetitionTime``.
    noise_hu : float
        CT noise SD in HU per voxel and frame (Gaussian); 0 = noise-free (still rounded to int16 HU).
        The default 10 HU is the order of magnitude of 5-mm, 80-kVp brain CTP source images (cf.
        the noise study of Juluru et al. 2013, AJNR 34:1506). Quantum noise scales with
        1 / sqrt(voxel volume): lower it for coarse grids.
    snr : float
        MR signal-to-noise ratio of the grey-matter baseline (Rician noise); ``inf`` = noise-free.
    echo_time_s : float
        DSC gradient-echo echo time in s.
    b_value : float
        DWI b-value in s/mm^2 (b = 0 plus three orthogonal directions at this b).
    adc_units : str
        Units of the scanner ADC map: ``"1e-6 mm^2/s"`` (int16) or ``"mm^2/s"`` (float32).
    dwi_rotation_deg, dwi_shift_mm : (x, y, z)
        Rigid head displacement between the DWI and the perfusion scans (rotations about the world
        x, y, z axes through the world origin in degrees, then a shift in mm).
    motion_mm, motion_deg, motion_fraction : float
        Head motion in the perfusion series: this fraction of frames (never the first) is displaced
        by a random rigid transform with translations up to ``motion_mm`` mm and rotations up to
        ``motion_deg`` degrees per axis.

    Tracer kinetics
    ---------------
    bolus_arrival_s : float or None
        Arrival time of the arterial bolus after the first frame (s); None = uniform 5-12 s.
    aif_peak_hu : float or None
        Peak of the CT arterial input function in delta-HU; None = uniform 300-500.
    dsc_gm_peak_r2s : float or None
        Peak delta-R2* (1/s) of normal grey matter in DSC; None = uniform 15-20.
    residue_shape : float
        Gamma shape of the transit-time distribution (1 = exponential residue, ``inf`` = box).
    delay_offset_s : float
        Global tissue delay (s) added to every tissue voxel relative to the AIF.
    normal_delay_s : float
        Range (s) of the smooth random delay field of normal tissue (0 .. this value).
    normal_dispersion_s : float
        Range (s) of the smooth random dispersion time constant of normal tissue.
    dispersion_s : float
        Global extra dispersion time constant (s) added everywhere in tissue.
    venous_transit_s : float or None
        Mean transit time (s) from the AIF to the venous output function; None = uniform 5-8 s.
    venous_peak_boost : float
        Factor on the venous output function (1 = mass conservation). Values > 1 make the sinus
        enhance more than partial-volumed arteries (a test of AIF selection).

    Lesion
    ------
    lesion : bool
        False gives a lesion-free case.
    lesion_side : "L", "R" or None
        Hemisphere of the middle cerebral artery territory lesion; None = random.
    lesion_volume_ml : float or None
        Target Tmax > 6 s volume in mL (approximate); None = uniform 30-150 mL.
    core_fraction : float or None
        Target core volume as a fraction of the Tmax > 6 s volume (approximate, <= 0.6);
        None = uniform 0.15-0.5.
    max_tmax_s : float or None
        Tmax at the centre of the lesion (s); None = uniform 12-16 s.
    lesion_dispersion_s : float or None
        Extra dispersion time constant (s) at the centre of the lesion (collateral flow);
        None = uniform 2-4 s.
    tmax_exponent : float or None
        Shape of the Tmax rise with lesion severity s (rise ~ 1 - (1 - s) ** exponent): 1 linear,
        larger values steep at the edge with more very long Tmax (poor collaterals, high
        Tmax>10 / Tmax>6 ratio); None = uniform 1-3.5.

    Clinical
    --------
    age : float or None
        Age in years for participants.tsv; None = uniform 45-90.
    nihss : int or None
        NIH stroke scale for participants.tsv; None = drawn from the lesion size.
    """

    seed: int = 0
    voxel_size_mm: tuple[float, float, float] | None = None
    slab_mm: float | None = None
    frame_interval_s: float | None = None
    duration_s: float | None = None
    irregular: bool = False
    noise_hu: float = 10.0
    snr: float = 50.0
    echo_time_s: float = 0.030
    b_value: float = 1000.0
    adc_units: str = "1e-6 mm^2/s"
    dwi_rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    dwi_shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    motion_mm: float = 0.0
    motion_deg: float = 0.0
    motion_fraction: float = 0.0
    bolus_arrival_s: float | None = None
    aif_peak_hu: float | None = None
    dsc_gm_peak_r2s: float | None = None
    residue_shape: float = 2.5
    delay_offset_s: float = 0.0
    normal_delay_s: float = 1.5
    normal_dispersion_s: float = 0.6
    dispersion_s: float = 0.0
    venous_transit_s: float | None = None
    venous_peak_boost: float = 1.0
    lesion: bool = True
    lesion_side: str | None = None
    lesion_volume_ml: float | None = None
    core_fraction: float | None = None
    max_tmax_s: float | None = None
    lesion_dispersion_s: float | None = None
    tmax_exponent: float | None = None
    age: float | None = None
    nihss: int | None = None

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ValueError with a one-line message naming the first invalid option."""

        def need(ok, message):
            if not ok:
                raise ValueError(message)

        need(isinstance(self.seed, int) and self.seed >= 0, "seed must be a non-negative integer")
        if self.voxel_size_mm is not None:
            need(len(self.voxel_size_mm) == 3 and all(v > 0 for v in self.voxel_size_mm),
                 "voxel_size_mm must be three positive numbers (mm)")
        need(self.slab_mm is None or self.slab_mm > 0, "slab_mm must be > 0 mm")
        need(self.frame_interval_s is None or self.frame_interval_s > 0, "frame_interval_s must be > 0 s")
        need(self.duration_s is None or self.duration_s >= 20, "duration_s must be >= 20 s")
        need(self.noise_hu >= 0, "noise_hu must be >= 0 HU")
        need(self.snr > 0, "snr must be > 0 (inf for noise-free)")
        need(0 < self.echo_time_s < 0.2, "echo_time_s must be in (0, 0.2) s")
        need(self.b_value > 0, "b_value must be > 0 s/mm^2")
        need(self.adc_units in ("1e-6 mm^2/s", "mm^2/s"), "adc_units must be '1e-6 mm^2/s' or 'mm^2/s'")
        need(len(self.dwi_rotation_deg) == 3 and len(self.dwi_shift_mm) == 3,
             "dwi_rotation_deg and dwi_shift_mm take three numbers")
        need(all(abs(a) <= 30 for a in self.dwi_rotation_deg), "dwi_rotation_deg must be within +-30 degrees")
        need(all(abs(a) <= 30 for a in self.dwi_shift_mm), "dwi_shift_mm must be within +-30 mm")
        need(self.motion_mm >= 0 and self.motion_deg >= 0, "motion_mm and motion_deg must be >= 0")
        need(0 <= self.motion_fraction <= 1, "motion_fraction must be in [0, 1]")
        need(self.bolus_arrival_s is None or 0 <= self.bolus_arrival_s <= 30, "bolus_arrival_s must be in [0, 30] s")
        need(self.aif_peak_hu is None or self.aif_peak_hu > 0, "aif_peak_hu must be > 0")
        need(self.dsc_gm_peak_r2s is None or self.dsc_gm_peak_r2s > 0, "dsc_gm_peak_r2s must be > 0 1/s")
        need(self.residue_shape >= 1 or math.isinf(self.residue_shape), "residue_shape must be >= 1 (or inf)")
        need(self.delay_offset_s >= 0 and self.normal_delay_s >= 0, "delays must be >= 0 s")
        need(self.normal_dispersion_s >= 0 and self.dispersion_s >= 0, "dispersion must be >= 0 s")
        need(self.venous_transit_s is None or self.venous_transit_s > 0, "venous_transit_s must be > 0 s")
        need(self.venous_peak_boost > 0, "venous_peak_boost must be > 0")
        need(self.lesion_side in (None, "L", "R"), "lesion_side must be 'L' or 'R'")
        need(self.lesion_volume_ml is None or self.lesion_volume_ml > 0, "lesion_volume_ml must be > 0 mL")
        need(self.core_fraction is None or 0 <= self.core_fraction <= 0.6, "core_fraction must be in [0, 0.6]")
        need(self.max_tmax_s is None or 6 < self.max_tmax_s <= 30, "max_tmax_s must be in (6, 30] s")
        need(self.lesion_dispersion_s is None or self.lesion_dispersion_s >= 0, "lesion_dispersion_s must be >= 0 s")
        need(self.tmax_exponent is None or 0.5 <= self.tmax_exponent <= 8, "tmax_exponent must be in [0.5, 8]")
        need(self.age is None or 0 < self.age < 120, "age must be in (0, 120) years")
        need(self.nihss is None or 0 <= self.nihss <= 42, "nihss must be in [0, 42]")

    def voxel_size(self, modality: str) -> tuple[float, float, float]:
        """Voxel size in mm of a modality's grid."""
        if self.voxel_size_mm is not None:
            return tuple(float(v) for v in self.voxel_size_mm)
        return DEFAULT_VOXEL_SIZE_MM[modality]

    def to_dict(self) -> dict:
        """JSON-ready copy of the options (``inf`` written as the string ``"inf"``)."""
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, tuple):
                value = list(value)
            if isinstance(value, float) and math.isinf(value):
                value = "inf"
            out[field.name] = value
        return out
