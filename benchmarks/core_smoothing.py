"""The CTP core's volume against the phantom's truth for several widths of the rCBF smoothing.

The core is rCBF < 0.30 inside Tmax > 6 s, thresholded on rCBF smoothed within tissue
(``strokeperf.lesions.CORE_RCBF_FWHM_MM``). Nothing upstream depends on that width, so the core can
be recomputed from a finished session's derivatives (the rCBF map, the Tmax > 6 s mask and the
tissue mask) for every width at once. Sessions come from ``benchmarks/pipeline.py --keep DIR``::

    for s in 7 8 21; do python benchmarks/pipeline.py --seed $s --keep kept/$s; done
    python benchmarks/core_smoothing.py kept/7 kept/8 kept/21
    python benchmarks/core_smoothing.py kept/* --widths 5 4 3 0

Prints, per session, the truth and the core volume (mL, error in %) for each width, then per width
the mean, mean absolute and root-mean-square relative error over the sessions with a core.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np

from strokeperf import lesions


def _load(folder: Path, pattern: str) -> nib.Nifti1Image:
    found = sorted(folder.glob(pattern))
    if not found:
        raise SystemExit(f"{folder}: no file matches {pattern} (is this a --keep folder?)")
    return nib.load(found[0])


def _image(folder: Path, pattern: str) -> np.ndarray:
    return np.asarray(_load(folder, pattern).dataobj)


def core_volumes(kept: Path, widths_mm) -> tuple[float, dict[float, float]]:
    """Truth core volume (mL) and the core volume for each rCBF smoothing width (mL)."""
    perf = next(kept.glob("out/sub-*/perf"), None)
    if perf is None:
        raise SystemExit(f"{kept}: no out/sub-*/perf folder (is this a --keep folder?)")
    rcbf_image = _load(perf, "*_desc-ctp_rcbf.nii.gz")
    voxel = rcbf_image.header.get_zooms()[:3]
    rcbf = np.asarray(rcbf_image.dataobj, dtype=np.float32)
    tissue = _image(perf, "*_desc-ctpTissue_mask.nii.gz") > 0
    hypoperfused = _image(perf, "*_desc-ctpTmax6_mask.nii.gz") > 0
    truth = _image(kept / "bids" / "truth", "*_core.nii.gz") > 0
    volumes = {w: lesions.volume_ml(lesions.ctp_core(rcbf, hypoperfused, voxel, tissue=tissue,
                                                     fwhm_mm=w), voxel)
               for w in widths_mm}
    return lesions.volume_ml(truth, voxel), volumes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("kept", type=Path, nargs="+", help="folders written by pipeline.py --keep")
    p.add_argument("--widths", type=float, nargs="+", default=[5.0, 4.0, 3.0, 2.0, 0.0],
                   metavar="MM", help="FWHM of the rCBF smoothing, mm (0 = none)")
    args = p.parse_args(argv)
    errors = {w: [] for w in args.widths}
    for kept in args.kept:
        truth, volumes = core_volumes(kept, args.widths)
        cells = []
        for w, v in volumes.items():
            rel = 100.0 * (v / truth - 1.0) if truth > 0 else float("nan")
            if truth > 0:
                errors[w].append(rel)
            cells.append(f"{w:g} mm {v:5.1f} ({rel:+4.0f} %)")
        print(f"{kept.name:12s} truth {truth:5.1f} mL | " + " | ".join(cells))
    print()
    for w, e in errors.items():
        if e:
            e = np.asarray(e)
            print(f"{w:g} mm: mean {e.mean():+5.1f} %, mean absolute {np.abs(e).mean():4.1f} %, "
                  f"RMS {np.sqrt(np.mean(e * e)):4.1f} % over {e.size} sessions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
