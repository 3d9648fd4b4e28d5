"""Benchmark of the registration stage: motion correction of a 45-frame whole-brain CT perfusion
series (120 x 144 x 30 voxels of 1.5 x 1.5 x 5 mm, 40 % of frames displaced by up to 2 mm / 2
degrees, contrast passing), censoring of its resampling errors, and template normalisation (affine +
SyN to ICBM152 2009a, 2 mm) per session; wall time, accuracy against the known motion and peak
memory (resource.getrusage).

    python benchmarks/registration.py [--frames 45] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MB (ru_maxrss is in kB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=45)
    parser.add_argument("--threads", type=int, default=None,
                        help="ITK threads (default: strokeperf's, 1, for reproducible results)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "tests" / "unit"))
    import numpy as np

    from strokeperf.registration import ants as reg_ants
    from strokeperf.registration import motion as reg_motion
    from strokeperf.registration import resampling, template
    from test_registration import (CT_HU, brain_mask, ct_series, head_image, random_motions,
                                   rigid_matrix)

    if args.threads:
        os.environ[reg_ants.ITK_THREADS_ENV] = str(args.threads)
    reg_ants.import_ants()  # ITK reads its thread count now
    print(f"cores {os.cpu_count()}, ITK threads {os.environ.get(reg_ants.ITK_THREADS_ENV)}")
    shape, vs = (120, 144, 30), (1.5, 1.5, 5.0)
    rng = np.random.default_rng(0)
    params, motions = random_motions(args.frames, rng, mm=2.0, deg=2.0, fraction=0.4)
    t0 = time.perf_counter()
    series, affine = ct_series(shape, vs, motions)
    print(f"synthetic series {shape + (args.frames,)} generated in {time.perf_counter() - t0:.1f} s;"
          f" peak RSS {peak_rss_mb():.0f} MB")

    t0 = time.perf_counter()
    mc = reg_motion.motion_correct(series, affine, reference=0)
    elapsed = time.perf_counter() - t0
    points = resampling.world_points(brain_mask(shape, affine), affine)
    err = [reg_motion.mean_displacement(np.linalg.inv(a) @ b, points)
           for a, b in zip(mc.transforms, motions)]
    print(f"motion correction: {elapsed:.1f} s ({elapsed / args.frames:.2f} s/frame); "
          f"max |param error| {np.abs(mc.params - params)[:, :3].max():.2f} mm, "
          f"{np.abs(mc.params - params)[:, 3:].max():.2f} deg; brain displacement error mean "
          f"{np.mean(err):.3f} max {np.max(err):.3f} mm; {int(mc.excluded.sum())} frames flagged; "
          f"peak RSS {peak_rss_mb():.0f} MB")

    keep = ~mc.excluded
    corrected = mc.corrected[..., keep]
    t0 = time.perf_counter()
    censoring = reg_motion.censor_resampling_errors(corrected, mc.transforms[keep], affine,
                                                    np.arange(args.frames)[keep] * 1.5)
    elapsed = time.perf_counter() - t0
    brain = brain_mask(shape, affine)
    print(f"censoring of resampling errors: {elapsed:.1f} s; noise SD {censoring.noise_sd:.1f} HU; "
          f"{censoring.per_frame.sum()} voxel-frames censored, "
          f"{np.mean(censoring.counts[brain] > 0):.1%} of brain voxels in at least one frame; "
          f"peak RSS {peak_rss_mb():.0f} MB")

    motion = rigid_matrix([6.0, -8.0, 4.0, 8.0, -5.0, 10.0]) @ np.diag([1.08, 0.94, 1.05, 1])
    img = head_image(shape, affine, CT_HU, motion)
    brain = brain_mask(shape, affine, motion)
    t0 = time.perf_counter()
    transforms, _ = template.normalise_to_template(img, affine, brain)
    elapsed = time.perf_counter() - t0
    _, t_brain, _ = template.load_template()
    covered = template.warp_mask_to_template(np.ones(shape, bool), affine, transforms)
    warped = template.warp_mask_to_template(brain, affine, transforms)
    target = t_brain & covered
    print(f"normalisation to ICBM152 2009a (affine + SyN): {elapsed:.1f} s per session; brain Dice "
          f"{template.dice(warped, target):.3f}; peak RSS {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
