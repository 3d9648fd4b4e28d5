"""Ground truth of the phantom: masks and volumes from the model parameters (never the images).

Definitions (on each modality's grid; volumes = voxel count x voxel volume / 1000, in mL):

- tissue = GM + WM fraction >= 0.5 and not vessel;
- Tmax>N mask = tissue & true Tmax > N s (N = 4, 6, 8, 10);
- reference = tissue & true Tmax < 4 s; rCBF = CBF / mean(CBF over reference), rCBV likewise;
- CTP core = tissue & Tmax > 6 s & rCBF < 0.30; MRI core = tissue & ADC < 620 x 1e-6 mm^2/s on the
  DWI grid (the table's ``core_ml``); the ``core`` map on the DSC grid is the same ADC definition
  with the diffusion model evaluated on that grid;
- mismatch_ml = tmax6_ml - core_ml; mismatch_ratio = tmax6_ml / core_ml (``inf`` when the core is 0
  and Tmax>6 is not, ``n/a`` when both are 0); hir = tmax10_ml / tmax6_ml (``n/a`` when Tmax>6 is
  0); cbv_index = mean rCBV inside Tmax>6 (``n/a`` when empty); affected_side = the hemisphere
  holding more of Tmax>6 (``n/a`` when empty).

The column names are those of the group table of SPEC.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

#: Tissue: GM + WM partial-volume fraction at least this.
TISSUE_MIN_FRACTION = 0.5
#: Vessel mask: artery + sinus fraction at least this (a few percent of arterial blood already
#: dominates a voxel's curve: the arterial peak is ~20x the tissue peak).
VESSEL_MIN_FRACTION = 0.05
#: Tmax thresholds (s) of the volume table.
TMAX_THRESHOLDS_S = (4, 6, 8, 10)
#: Reference tissue: Tmax below this (s) (SPEC.md).
REFERENCE_TMAX_S = 4.0
#: CTP core: rCBF below this inside Tmax > 6 s (Campbell et al. 2011, Stroke 42:3435).
CORE_RCBF = 0.30
#: MRI core: ADC below this (1e-6 mm^2/s; Purushotham et al. 2015, Int J Stroke 10:348).
CORE_ADC = 620.0
CORE_DEFINITION = {"ctp": "rCBF<0.30", "dsc": "ADC<620"}

TRUTH_COLUMNS = ["participant_id", "session_id", "modality", "core_ml", "core_definition",
                 "tmax4_ml", "tmax6_ml", "tmax8_ml", "tmax10_ml", "mismatch_ml", "mismatch_ratio",
                 "hir", "cbv_index", "affected_side"]
NUMERIC_COLUMNS = ["core_ml", "tmax4_ml", "tmax6_ml", "tmax8_ml", "tmax10_ml", "mismatch_ml",
                   "mismatch_ratio", "hir", "cbv_index"]


def tissue_mask(gm: np.ndarray, wm: np.ndarray, vessel_fraction: np.ndarray):
    """Tissue mask and vessel mask from anatomical GM/WM fractions and the vessel fraction."""
    vessel = vessel_fraction >= VESSEL_MIN_FRACTION
    return ((gm + wm) >= TISSUE_MIN_FRACTION) & ~vessel, vessel


def perfusion_masks(cbf, cbv, tmax, tissue) -> dict:
    """rCBF, rCBV, reference and Tmax>N masks (dict of arrays) for a perfusion grid."""
    reference = tissue & (tmax < REFERENCE_TMAX_S)
    if not reference.any():
        raise ValueError("no reference tissue with Tmax < 4 s: the phantom is all lesion")
    ref_cbf = float(cbf[reference].mean())
    ref_cbv = float(cbv[reference].mean())
    out = {"reference": reference, "rcbf": cbf / ref_cbf, "rcbv": cbv / ref_cbv,
           "ref_cbf": ref_cbf, "ref_cbv": ref_cbv}
    for n in TMAX_THRESHOLDS_S:
        out[f"tmax{n}"] = tissue & (tmax > n)
    return out


def ctp_core(masks: dict) -> np.ndarray:
    """CTP core: tissue & Tmax > 6 s & rCBF < 0.30."""
    return masks["tmax6"] & (masks["rcbf"] < CORE_RCBF)


def mri_core(adc: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    """MRI core: tissue & ADC < 620 x 1e-6 mm^2/s."""
    return tissue & (adc > 0) & (adc < CORE_ADC)


def _number(value: float) -> str:
    return f"{value:.4f}"


def volume_row(participant_id: str, session_id: str, modality: str, masks: dict, core_ml: float,
               voxel_ml: float, x_mm: np.ndarray) -> dict:
    """One row of truth_volumes.tsv (strings, ``n/a`` and ``inf`` as in the group table).

    ``masks`` from :func:`perfusion_masks` on the perfusion grid; ``x_mm`` is the world x (MNI,
    + = right) of every voxel centre of that grid, shaped like the masks.
    """
    vol = {n: float(masks[f"tmax{n}"].sum() * voxel_ml) for n in TMAX_THRESHOLDS_S}
    tmax6 = masks["tmax6"]
    row = {"participant_id": participant_id, "session_id": session_id, "modality": modality,
           "core_ml": _number(core_ml), "core_definition": CORE_DEFINITION[modality]}
    for n in TMAX_THRESHOLDS_S:
        row[f"tmax{n}_ml"] = _number(vol[n])
    row["mismatch_ml"] = _number(vol[6] - core_ml)
    if core_ml > 0:
        row["mismatch_ratio"] = _number(vol[6] / core_ml)
    else:
        row["mismatch_ratio"] = "inf" if vol[6] > 0 else "n/a"
    row["hir"] = _number(vol[10] / vol[6]) if vol[6] > 0 else "n/a"
    row["cbv_index"] = _number(float(masks["rcbv"][tmax6].mean())) if tmax6.any() else "n/a"
    if tmax6.any():
        right = int((tmax6 & (x_mm > 0)).sum())
        left = int((tmax6 & (x_mm < 0)).sum())
        row["affected_side"] = "R" if right >= left else "L"
    else:
        row["affected_side"] = "n/a"
    return row


def read_truth(out_dir) -> pd.DataFrame:
    """Read ``OUT_DIR/truth/truth_volumes.tsv``: one row per participant, session and modality.

    Volume and ratio columns are floats (``n/a`` -> NaN, ``inf`` -> inf); ``participant_id``,
    ``session_id``, ``modality``, ``core_definition`` and ``affected_side`` stay strings with
    ``n/a`` kept as written.
    """
    path = Path(out_dir) / "truth" / "truth_volumes.tsv"
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    for column in NUMERIC_COLUMNS:
        table[column] = pd.to_numeric(table[column].replace("n/a", np.nan), errors="raise").astype(float)
    return table


def normal_tissue_means(bids_dir, derivatives_dir, participant_id: str,
                        modality: str) -> dict[str, tuple[float, float]]:
    """Mean CBF (mL/100 g/min) and CBV (mL/100 g) over normal tissue, ``{name: (truth, measured)}``.

    Normal tissue is the truth's reference region (tissue with true Tmax < ``REFERENCE_TMAX_S``)
    inside the pipeline's tissue mask. Truth maps come from ``BIDS_DIR/truth``, measured maps from
    the ``perf`` folder of ``participant_id`` (any session) in ``DERIVATIVES_DIR``.
    """
    import nibabel as nib

    def load(path: Path) -> np.ndarray:
        return np.asarray(nib.load(path).dataobj, dtype=float)

    truth_dir = Path(bids_dir) / "truth"
    perf = next((Path(derivatives_dir) / participant_id).rglob("perf"))

    def truth(name):
        return load(truth_dir / f"{participant_id}_mod-{modality}_{name}.nii.gz")

    def measured(name):
        return load(next(perf.glob(f"*_desc-{modality}{name}.nii.gz")))

    normal = (truth("tissue") > 0) & (truth("tmax") < REFERENCE_TMAX_S)
    normal &= measured("Tissue_mask") > 0
    return {name: (float(np.mean(truth(name)[normal])), float(np.mean(measured(f"_{name}")[normal])))
            for name in ("cbf", "cbv")}
