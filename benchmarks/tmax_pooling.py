"""Experiment: Tmax from spatially pooled evidence (local likelihood), against the per-voxel fit.

Runs one whole-brain phantom session through the command line (``benchmarks/pipeline.py``, motion
correction off), then recomputes its Tmax map by pooled evidence from the pipeline's own
intermediate files and prints the Tmax > 4/6/8/10 s volumes (the pipeline's lesion rules: tissue
mask, 1 mL clusters) of the truth, of the default per-voxel fit and of pooling::

    python benchmarks/tmax_pooling.py --seed 21
    python benchmarks/tmax_pooling.py --seed 81 --phantom noise_hu=20
    python benchmarks/tmax_pooling.py --seed 11 --voxel-size 3 3 6

Why it was tried. Smoothing concentration curves before the fit averages curves whose boluses
arrive at different times; on whole-brain phantoms the Tmax > 10 s volume read 16-48 % small after
5 mm smoothing (seeds 21, 33, 35, 36, 41), and 3 mm smoothing removed that bias but not enough noise
(20 HU per frame: Tmax > 6 s 5.5 times the truth).

Method. Local likelihood (Tibshirani & Hastie 1987, J Am Stat Assoc 82:559; spatially, Polzehl &
Spokoiny 2006, Probab Theory Relat Fields 135:335): each voxel's posterior over Tmax adds the log
evidence of its neighbours for every Tmax bin (``experiments.posterior.PosteriorStudy``),
weighted by a Gaussian kernel; neighbours share Tmax and nothing else (each keeps its own flow,
dispersion, MTT and shape). For Gaussian noise and neighbours sharing every parameter, adding
log-likelihoods equals fitting their average curve.

- Widths: curves smoothed at ``DATA_FRACTION`` of the session's 5 mm FWHM, evidence pooled over
  ``POOL_FRACTION`` of it; they add in quadrature to the FWHM (3 and 4 mm), so as much noise is
  averaged as by the single smoothing.
- Weights: log-likelihoods of independent data add, so the pooled log evidence is the kernel-weighted
  mean of the neighbours' times the number of independent measurements it stands for
  (:func:`effective_count`: the reciprocal variance of the kernel-weighted mean of unit-variance
  noise with the data smoothing's correlation; at the mask's edge scaled by the truncated kernel's
  own count, Kish 1965).
- Estimate: the posterior mean of Tmax over the bins (prior flat in Tmax).

Also compared (``--bilateral``): curves averaged over the same 5 mm Gaussian, but each neighbour
weighted down by a test of whether its curve differs from the voxel's beyond noise, in the spirit of
TIPS bilateral filtering (Mendrik et al. 2011, Phys Med Biol 56:3857): on 3 mm-smoothed guide
curves ``g``, ``z = (T d2 / (2 s2) - T) / sqrt(2 T)`` standardises the mean squared difference
``d2`` of the two curves against its chi-square law for equal curves with noise variance ``s2``
(the median frame-difference estimate over the brain), and the weight is ``exp(-max(z, 0)^2 / 2)``.

Also compared (``--shape``): curves averaged over the same 5 mm Gaussian as shapes, each neighbour
normalised by its amplitude first (:func:`shape_series`), so that a low-flow, late voxel is not
outweighed by its brighter, earlier neighbours.

Result (docs/accuracy.md, measured 2026-12-04): at 10 HU on the 1.5 x 1.5 x 5 mm grid, Tmax > 10 s
moved towards the truth on 13 of 14 lesioned seeds (21: -25 % -> -11 %, 41: -26 % -> -15 %), but at
20 HU Tmax > 6 s read +38 % (per-voxel fit +2 %), and on the 3 x 3 x 6 mm test grid 3.0 times the
truth (per-voxel fit +1 %). Adding log evidence is an incoherent combination: each neighbour fits
its own flow to its own noise, which loses more the lower the per-voxel signal-to-noise ratio. Not
adopted. The bilateral average gained less (seed 21 -25 % -> -20 %, 41 -26 % -> -23 %) and also
lost at 20 HU (Tmax > 6 s +14 %): at 10 HU the test cannot tell low-flow curves 1-2 s apart, and
at 20 HU it drops neighbours that noise made look different.

Also compared (``--spatial-prior [FIELD_SD ...]``, measured 2026-12-05): a spatial prior only for
the voxels whose own curve does not determine Tmax (:func:`spatial_prior_tmax`), aimed at the large
cores whose Tmax > 10 s the per-voxel fit over-reads (seeds 12 and 16). Tmax > 10 s moved towards
the truth on 8 of 9 seeds at 10 HU (16: +140 % -> +16 %, 21: -11 % -> -3 %) but seed 12 went from
+49 % to +78 %, and at 20 HU Tmax > 6 s read +12 % (per-voxel fit +5 %): averaging among
uninformative voxels moves the lesion's rim, where Tmax rises towards the centre, later. Not
adopted (docs/accuracy.md). With ``--prior-below 6`` (the prior only where it reads as normal) it
changes nothing at 10 HU and removes most of the noise-driven over-read at low contrast (seed 104,
``--phantom aif_peak_hu=150.0``: Tmax > 6 s +14 % -> -9 %, Tmax > 4 s +108 % -> +13 %). Adopted
as the default method's ``deconvolution.neighbourhood`` (2026-12-05; the per-voxel fit in the
pipeline's ``tmax.nii`` now includes it). ``--neighbourhood`` recomputes the default fit without
and with it from the kept session and times both.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage
from threadpoolctl import threadpool_limits

from strokeperf import lesions
from strokeperf.cli.cache import finished_step_file
from strokeperf.concentration import denoise
from strokeperf.timecurves import FWHM_PER_SIGMA, noise_sd
from experiments.posterior import PosteriorStudy
from strokeperf.deconvolution import perfusion_maps
from strokeperf.deconvolution.neighbourhood import NEIGHBOURHOOD_FWHM_MM, UNINFORMATIVE_TMAX_SD_S
from strokeperf.deconvolution.parametric import DEFAULT_CHUNK_SIZE, ParametricDeconvolution

#: Fraction of the smoothing FWHM applied to the curves, and fraction over which the evidence is
#: pooled; 0.6^2 + 0.8^2 = 1, so the total noise averaging equals that of the full FWHM.
DATA_FRACTION = 0.6
POOL_FRACTION = 0.8
#: Curves whose evidence is computed at once (bounds the (n, T) copy of the masked curves).
EVIDENCE_BLOCK = 65536


def pooling_widths(fwhm_mm: float) -> tuple[float, float]:
    """``(data_fwhm_mm, pool_fwhm_mm)`` for a session smoothing FWHM ``fwhm_mm`` (mm)."""
    return DATA_FRACTION * fwhm_mm, POOL_FRACTION * fwhm_mm


def _impulse_response(sigma_vox: np.ndarray, radius: np.ndarray) -> np.ndarray:
    impulse = np.zeros(tuple(2 * radius + 1))
    impulse[tuple(radius)] = 1.0
    return ndimage.gaussian_filter(impulse, sigma_vox, mode="constant")


def effective_count(voxel_size_mm, data_fwhm_mm: float, pool_fwhm_mm: float) -> float:
    """Independent measurements that the pooling kernel's weighted mean stands for, inside the mask.

    ``1 / sum_ij w_i w_j rho_ij``: ``w`` the pooling kernel (sum 1), ``rho`` the correlation of white
    noise after the data smoothing (its kernel's autocorrelation, 1 at lag 0). Without data
    smoothing this is Kish's ``1 / sum w^2``.
    """
    voxel = np.asarray(voxel_size_mm, dtype=float)[:3]
    sigma_data = data_fwhm_mm / FWHM_PER_SIGMA / voxel
    sigma_pool = pool_fwhm_mm / FWHM_PER_SIGMA / voxel
    radius = np.ceil(4 * (sigma_data + sigma_pool)).astype(int) + 1
    smoothing = _impulse_response(sigma_data, radius)
    rho = ndimage.correlate(smoothing, smoothing, mode="constant")
    rho /= rho.max()
    weights = _impulse_response(sigma_pool, radius)
    weights /= weights.sum()
    return float(1.0 / np.sum(weights * ndimage.convolve(weights, rho, mode="constant")))


def pool_log_evidence(log_evidence: np.ndarray, mask, voxel_size_mm, data_fwhm_mm: float,
                      pool_fwhm_mm: float, informative=None) -> np.ndarray:
    """Pool per-voxel log evidence (N, B; rows in ``np.flatnonzero(mask)`` order) over neighbours.

    Returns the pooled log evidence (N, B), float32, computed in place of ``log_evidence``.
    ``informative`` (N,; default all) marks the voxels whose evidence is pooled: voxels without
    tracer carry none and would only dilute their neighbours'. Every voxel counts for at least one
    measurement (its own).
    """
    mask = np.asarray(mask, dtype=bool)
    voxel = np.asarray(voxel_size_mm, dtype=float)[:3]
    if pool_fwhm_mm <= 0:
        return log_evidence
    index = np.flatnonzero(mask)
    keep = np.zeros(mask.shape, dtype=np.float32)
    keep.reshape(-1)[index] = 1.0 if informative is None else np.asarray(informative, np.float32)
    sigma = pool_fwhm_mm / FWHM_PER_SIGMA / voxel
    radius = np.ceil(4 * sigma).astype(int) + 1
    kernel = _impulse_response(sigma, radius).astype(np.float32)
    sum_w = ndimage.gaussian_filter(keep, sigma, mode="constant").reshape(-1)[index]
    sum_w2 = ndimage.convolve(keep, kernel * kernel, mode="constant").reshape(-1)[index]
    independent = 1.0 / np.sum(kernel.astype(float) ** 2)
    correlation = effective_count(voxel, data_fwhm_mm, pool_fwhm_mm) / independent
    with np.errstate(divide="ignore", invalid="ignore"):
        count = np.where(sum_w2 > 0, correlation * sum_w * sum_w / sum_w2, 1.0)
        # pooled = count * (weighted mean) = count * (K * (keep L)) / sum_w
        factor = np.where(sum_w > 0, np.maximum(count, 1.0) / sum_w, 0.0).astype(np.float32)
    volume = np.zeros(mask.shape, dtype=np.float32)
    flat = volume.reshape(-1)
    for b in range(log_evidence.shape[1]):
        flat[index] = log_evidence[:, b]
        volume *= keep
        pooled = ndimage.gaussian_filter(volume, sigma, mode="constant").reshape(-1)[index]
        log_evidence[:, b] = pooled * factor
    return log_evidence


def pooled_tmax(series, mask, aif, frame_times, voxel_size_mm, fwhm_mm: float,
                chunk_size: int = DEFAULT_CHUNK_SIZE) -> np.ndarray:
    """Tmax map by pooled evidence (module docstring), s, float32 (X, Y, Z); 0 outside ``mask``
    and where a curve has no tracer, clipped to [0, scan duration] like the per-voxel maps.

    ``series`` (X, Y, Z, T) is the concentration smoothed at ``pooling_widths(fwhm_mm)[0]``
    (:func:`tmax_series`), ``fwhm_mm`` the session's smoothing FWHM; ``aif`` and ``frame_times``
    as for :class:`PosteriorStudy`. Memory: N x B float32 (N voxels in the mask, B about
    60-100 Tmax bins) beyond the series.
    """
    mask = np.asarray(mask, dtype=bool)
    times = np.asarray(frame_times, dtype=float)
    data_fwhm, pool_fwhm = pooling_widths(fwhm_mm)
    model = PosteriorStudy(aif, times)
    flat = np.asarray(series).reshape(-1, times.size)
    index = np.flatnonzero(mask)
    evidence = np.empty((index.size, model.tmax_bin_centres.size), dtype=np.float32)
    empty = np.empty(index.size, dtype=bool)
    # Small products per chunk: BLAS threads cost more than they save (as in perfusion_maps).
    with threadpool_limits(limits=1, user_api="blas"):
        for start in range(0, index.size, EVIDENCE_BLOCK):
            part = slice(start, start + EVIDENCE_BLOCK)
            evidence[part], empty[part] = model.tmax_log_evidence(flat[index[part]], chunk_size)
    evidence = pool_log_evidence(evidence, mask, voxel_size_mm, data_fwhm, pool_fwhm,
                                 informative=~empty)
    tmax = np.empty(index.size, dtype=np.float32)
    centres = model.tmax_bin_centres.astype(np.float32)
    for start in range(0, index.size, EVIDENCE_BLOCK):
        e = evidence[start:start + EVIDENCE_BLOCK]
        e -= e.max(axis=1, keepdims=True)
        np.exp(e, out=e)
        tmax[start:start + e.shape[0]] = (e @ centres) / e.sum(axis=1)
    tmax[empty] = 0.0
    out = np.zeros(mask.shape, dtype=np.float32)
    out[mask] = np.clip(tmax, 0.0, times[-1] - times[0])
    return out


def spatial_prior_tmax(conc, series, mask, aif, frame_times, voxel_size_mm,
                       field_sd_s=(0.0,), below_s=None) -> dict[float, np.ndarray]:
    """Tmax map (s) with a spatial prior for uninformative voxels (``--spatial-prior``).

    Empirical Bayes in the spirit of Besag (1974, J R Stat Soc B 36:192) and adaptive smoothing
    (Polzehl & Spokoiny 2006): voxels whose own posterior SD of Tmax exceeds
    :data:`UNINFORMATIVE_TMAX_SD_S` (``series``, the session's smoothed curves) get a Gaussian prior
    on Tmax, the posterior mean and variance of the raw curves ``conc`` averaged over
    :data:`NEIGHBOURHOOD_FWHM_MM` among the uninformative voxels only (normalised convolution, so
    that brighter, informative neighbours do not impose their timing); their Tmax is the posterior
    mean of their own curve under that prior, whose variance is widened by ``field_sd_s`` (s,
    the true Tmax's assumed spread within the averaging kernel). Informative voxels keep the
    per-voxel fit. With ``below_s`` (s) the prior acts only where its mean is below it, i.e. in
    neighbourhoods that read as normal, where Tmax hardly varies and a local average is unbiased.
    Returns one map per field SD.
    """
    times = np.asarray(frame_times, dtype=float)
    model = ParametricDeconvolution(aif, times)
    with threadpool_limits(limits=1, user_api="blas"):
        return _spatial_prior_tmax(model, conc, series, mask, times, voxel_size_mm, field_sd_s,
                                   below_s)


def _spatial_prior_tmax(model, conc, series, mask, times, voxel_size_mm, field_sd_s, below_s):
    mean, sd, _ = model.tmax_posterior(series[mask])
    uninformative = np.zeros(mask.shape, dtype=bool)
    uninformative[mask] = sd > UNINFORMATIVE_TMAX_SD_S
    wide = denoise(conc, uninformative, voxel_size_mm, NEIGHBOURHOOD_FWHM_MM)[uninformative]
    prior_mean, prior_sd, _ = model.tmax_posterior(wide)
    maps = {}
    for field_sd in field_sd_s:
        own, _, _ = model.tmax_posterior(series[uninformative], prior_mean,
                                         prior_sd ** 2 + field_sd ** 2)
        out = np.zeros(mask.shape, dtype=np.float32)
        out[mask] = mean
        if below_s is not None:
            own = np.where(prior_mean < below_s, own, mean[uninformative[mask]])
        out[uninformative] = own
        maps[field_sd] = np.clip(out, 0.0, times[-1] - times[0])
    return maps


def tmax_series(conc, mask, voxel_size_mm, fwhm_mm: float) -> np.ndarray:
    """The concentration series (X, Y, Z, T) that :func:`pooled_tmax` expects: smoothed within
    ``mask`` at the data width of the session's smoothing FWHM ``fwhm_mm``."""
    return denoise(conc, mask, voxel_size_mm, pooling_widths(fwhm_mm)[0])


def _shifted(a: np.ndarray, offset) -> np.ndarray:
    """``a`` moved by ``offset`` voxels along its first three axes, zero-filled (no wrap-around)."""
    out = np.zeros_like(a)
    src, dst = [], []
    for k, n in zip(offset, a.shape[:3]):
        src.append(slice(max(-k, 0), n - max(k, 0)))
        dst.append(slice(max(k, 0), n - max(-k, 0)))
    out[tuple(dst)] = a[tuple(src)]
    return out


def bilateral_series(conc, mask, voxel_size_mm, fwhm_mm: float) -> np.ndarray:
    """Curves (X, Y, Z, T) averaged over a Gaussian of ``fwhm_mm`` within ``mask``, each neighbour
    weighted by the similarity test of the module docstring (guide: ``DATA_FRACTION`` x FWHM)."""
    mask = np.asarray(mask, dtype=bool)
    guide = denoise(conc, mask, voxel_size_mm, DATA_FRACTION * fwhm_mm)
    raw = np.where(mask[..., None], conc, 0).astype(np.float32)
    n_frames = conc.shape[-1]
    noise_var = float(np.median(noise_sd(guide[mask][::50], axis=-1))) ** 2
    sigma = fwhm_mm / FWHM_PER_SIGMA / np.asarray(voxel_size_mm, dtype=float)[:3]
    radius = np.ceil(3 * sigma).astype(int)
    inside = mask.astype(np.float32)
    total = np.zeros_like(raw)
    weight_sum = np.zeros(mask.shape, dtype=np.float32)
    for offset in np.ndindex(*(2 * radius + 1)):
        offset = tuple(int(o - r) for o, r in zip(offset, radius))
        spatial = float(np.exp(-0.5 * np.sum((np.asarray(offset) / sigma) ** 2)))
        if spatial < 0.01:
            continue
        d2 = np.mean((guide - _shifted(guide, offset)) ** 2, axis=-1)
        z = (n_frames * d2 / (2 * noise_var) - n_frames) / np.sqrt(2 * n_frames)
        weight = spatial * np.exp(-0.5 * np.maximum(z, 0.0) ** 2) * _shifted(inside, offset)
        total += weight[..., None] * _shifted(raw, offset)
        weight_sum += weight
    out = np.zeros_like(raw)
    ok = mask & (weight_sum > 0)
    out[ok] = total[ok] / weight_sum[ok][:, None]
    return out


def shape_series(conc, mask, voxel_size_mm, fwhm_mm: float, frame_times, aif,
                 amplitude: str = "peak", floor_fraction: float = 0.1) -> np.ndarray:
    """Curves (X, Y, Z, T) averaged over a Gaussian of ``fwhm_mm`` within ``mask`` as shapes:
    ``out(x) = a(x) * sum_j w_j u_j c_j / sum_j w_j u_j a_j`` with ``u = 1 / max(a, floor)``.

    ``a`` is each voxel's amplitude in the ordinary smoothed series (``"peak"``: its maximum,
    ``"area"``: its area, ``"cbf"``: its cSVD CBF), ``floor`` is ``floor_fraction`` of the brain's
    median amplitude. Neighbours above the floor enter with equal weight on their shape, whatever
    their flow, so a low-flow late voxel is no longer outweighed by its earlier, brighter
    neighbours; neighbours without tracer (below the floor) add little. With equal amplitudes this
    is the ordinary average.
    """
    mask = np.asarray(mask, dtype=bool)
    times = np.asarray(frame_times, dtype=float)
    smooth = denoise(conc, mask, voxel_size_mm, fwhm_mm)
    if amplitude == "area":
        amp = np.trapezoid(smooth, times, axis=-1)
    elif amplitude == "peak":
        amp = smooth.max(axis=-1)
    elif amplitude == "cbf":
        amp = perfusion_maps(smooth, mask, aif, times, method="csvd")["cbf"]
    else:
        raise ValueError(f"unknown amplitude {amplitude!r}")
    del smooth
    amp = np.where(mask, np.maximum(amp, 0.0), 0.0)
    u = (1.0 / np.maximum(amp, floor_fraction * float(np.median(amp[mask])))).astype(np.float32)
    out = denoise(np.asarray(conc, dtype=np.float32) * u[..., None], mask, voxel_size_mm, fwhm_mm)
    weight = denoise((amp * u)[..., None].astype(np.float32), mask, voxel_size_mm, fwhm_mm)[..., 0]
    out *= np.where(weight > 0, amp / np.maximum(weight, 1e-12), 0.0).astype(np.float32)[..., None]
    return out


def step_file(work: Path, name: str) -> Path:
    """A kept session's intermediate image, from this code's pipeline cache or, failing that,
    another code's (the "current fit" column then shows this code's Tmax)."""
    return finished_step_file(work, name, any_code=True)


def _load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seed", type=int, default=21)
    p.add_argument("--phantom", nargs="+", default=[], metavar="FIELD=VALUE")
    p.add_argument("--voxel-size", type=float, nargs=3, default=None)
    p.add_argument("--fwhm", type=float, default=5.0, help="session smoothing FWHM, mm (default 5)")
    p.add_argument("--keep", type=Path, help="keep the dataset, outputs and work directory here")
    p.add_argument("--bilateral", action="store_true",
                   help="also Tmax from the bilateral (similarity-weighted) average (+40 s)")
    p.add_argument("--shape", nargs="*", default=None, metavar="AMP:FLOOR",
                   help="also Tmax from curves averaged as shapes (shape_series), AMP one of\n"
                        "peak, area, cbf, FLOOR a fraction of the median (default peak:0.1)")
    p.add_argument("--no-pool", action="store_true", help="skip the pooled-evidence Tmax")
    p.add_argument("--spatial-prior", nargs="*", type=float, default=None, metavar="FIELD_SD",
                   help="also Tmax with a spatial prior for uninformative voxels, one map per\n"
                        "field SD in s (default 0; spatial_prior_tmax, +10-20 s)")
    p.add_argument("--prior-below", type=float, default=None, metavar="S",
                   help="with --spatial-prior: use the prior only where its mean Tmax is below S s")
    p.add_argument("--neighbourhood", action="store_true",
                   help="also the default fit without and with its neighbourhood prior, timed\n"
                        "(deconvolution.neighbourhood; +30 s)")
    args = p.parse_args(argv)
    if args.keep:
        return _compare(args, args.keep)
    with tempfile.TemporaryDirectory(prefix="strokeperf_pooling_") as tmp:
        return _compare(args, Path(tmp))


def _compare(args, root: Path) -> int:
    command = [sys.executable, str(Path(__file__).with_name("pipeline.py")), "--seed",
               str(args.seed), "--keep", str(root)]
    if args.phantom:
        command += ["--phantom", *args.phantom]
    if args.voxel_size:
        command += ["--voxel-size", *map(str, args.voxel_size)]
    command += ["--", "--no-motion-correction", "--denoise-fwhm", str(args.fwhm)]
    # A kept directory with a finished run is reused, also one of other code (its cache is keyed
    # on the code): its inputs stay valid, its maps may not, so the current per-voxel fit is then
    # recomputed ("current fit").
    reused = (root / "out" / "group_perfusion.tsv").exists()
    if not reused:
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)

    work = root / "work"
    image = nib.load(step_file(work, "delta_hu.nii"))
    voxel = np.asarray(image.header.get_zooms()[:3], dtype=float)
    brain = _load(step_file(work, "brain_mask.nii")) > 0
    tissue = lesions.tissue_mask(brain, _load(step_file(work, "csf_mask.nii")) > 0,
                                 _load(step_file(work, "cbv.nii")),
                                 vessel_cbv=lesions.VESSEL_CBV_ML_100G)
    record = json.loads(step_file(work, "input_functions.json").read_text())
    aif, times = np.asarray(record["aif_scaled"]), np.asarray(record["frame_times_s"])
    conc = np.asarray(image.dataobj)
    maps = {"per-voxel fit": _load(step_file(work, "tmax.nii"))}
    if not args.no_pool:
        started = time.perf_counter()
        series = tmax_series(conc, brain, voxel, args.fwhm)
        maps["pooled"] = pooled_tmax(series, brain, aif, times, voxel, args.fwhm)
        seconds = time.perf_counter() - started
        del series
    # The session's own smoothed series, for the fits below that start from it.
    smoothed = (denoise(conc, brain, voxel, args.fwhm)
                if reused or args.spatial_prior is not None or args.neighbourhood else None)
    if reused:
        maps["current fit"] = perfusion_maps(smoothed, brain, aif, times, method="parametric",
                                             voxel_size_mm=voxel, unsmoothed=conc)["tmax"]
    if args.bilateral:
        averaged = bilateral_series(conc, brain, voxel, args.fwhm)
        maps["bilateral"] = perfusion_maps(averaged, brain, aif, times, method="parametric")["tmax"]
    if args.shape is not None:
        for spec in args.shape or ["peak:0.1"]:
            amp, floor = spec.split(":")
            averaged = shape_series(conc, brain, voxel, args.fwhm, times, aif, amp, float(floor))
            maps[spec] = perfusion_maps(averaged, brain, aif, times, method="parametric")["tmax"]
    if args.spatial_prior is not None:
        found = spatial_prior_tmax(conc, smoothed, brain, aif, times, voxel,
                                   args.spatial_prior or (0.0,), args.prior_below)
        where = "" if args.prior_below is None else f" <{args.prior_below:g}"
        maps.update({f"spatial prior {sd:g} s{where}": m for sd, m in found.items()})
    timing = ""
    if args.neighbourhood:
        for name, size in (("no neighbourhood prior", None), ("neighbourhood prior", voxel)):
            started = time.perf_counter()
            maps[name] = perfusion_maps(smoothed, brain, aif, times, method="parametric",
                                        voxel_size_mm=size, unsmoothed=conc)["tmax"]
            timing += f"; {name} {time.perf_counter() - started:.1f} s"
    del smoothed
    truth = pd.read_csv(root / "bids" / "truth" / "truth_volumes.tsv", sep="\t").iloc[0]
    table = pd.read_csv(root / "out" / "group_perfusion.tsv", sep="\t").iloc[0]
    pooled = "" if args.no_pool else f"; pooled Tmax of {brain.sum():,} voxels in {seconds:.1f} s"
    print(f"seed {args.seed} {' '.join(args.phantom)} voxel {voxel.round(2).tolist()} mm{pooled}"
          f"{timing}\n")
    print(f"{'volume':<10}{'truth mL':>10}{'pipeline':>10}" + "".join(f"{k:>22}" for k in maps))
    thresholds = lesions.TMAX_THRESHOLDS_S
    found = {k: lesions.tmax_lesions(m, tissue, voxel, thresholds, lesions.MIN_CLUSTER_ML)
             for k, m in maps.items()}
    for threshold in thresholds:
        column = f"tmax{threshold:g}_ml"
        want = float(truth[column])
        cells = ""
        for k in maps:
            got = lesions.volume_ml(found[k][threshold], voxel)
            rel = f"{100 * (got - want) / want:+.0f} %" if want > 0 else "-"
            cells += f"{got:>12.1f} ({rel:>6})"
        print(f"{column:<10}{want:>10.1f}{float(table[column]):>10.1f}{cells}")
    print("\n(the 'pipeline' column is the group table; 'per-voxel fit' recomputes it from the "
          "same Tmax map and must match)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
