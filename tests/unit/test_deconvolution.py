"""Deconvolution methods against analytic ground truth (strokeperf.kinetics).

The OSIPI DSC test curves are in test_osipi.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from strokeperf import kinetics
from strokeperf.deconvolution import METHODS, perfusion_maps
from strokeperf.deconvolution.svd import (OSCILLATION_INDEX_WU2003, OSVD_THRESHOLDS,
                                          BlockCirculantSVD, StandardSVD, TikhonovSVD,
                                          convolution_matrix)
from strokeperf.errors import DataError
from strokeperf.testing import FINE_DT_S, aif_curve, tissue_curves

#: Method variants under test: name -> (METHODS key, options).
VARIANTS = {name: (name, {}) for name in METHODS}
VARIANTS["tikhonov-gcv"] = ("tikhonov", {"criterion": "gcv"})
CIRCULANT = ["csvd", "bcsvd", "tikhonov", "tikhonov-gcv"]
#: Methods whose regularisation adapts to the curve (light for noise-free curves).
ADAPTIVE = ["bcsvd", "tikhonov", "tikhonov-gcv"]


def make_model(variant, aif, times):
    name, options = VARIANTS[variant]
    return METHODS[name](aif, times, **options)


def tissue_curve(frame_times, cbf, mtt, delay, shape=1.0, dispersion=0.0):
    """One noise-free tissue curve and its true Tmax, s (:func:`strokeperf.testing.tissue_curves`:
    the residue delayed by ``delay`` and dispersed by an exponential kernel; Tmax is its argmax)."""
    curves, tmax = tissue_curves(frame_times, cbf, mtt, delay, shape, dispersion)
    return curves[0], float(tmax[0])


UNIFORM = np.arange(0.0, 90.0, 1.0)
# Irregular CT protocol: 1 s during the first pass, then 2 s and 3 s (VolumeTiming).
IRREGULAR = np.concatenate([np.arange(0.0, 40.0, 1.0), np.arange(40.0, 60.0, 2.0),
                            np.arange(60.0, 91.0, 3.0)])


@pytest.mark.parametrize("variant", ADAPTIVE)
@pytest.mark.parametrize("times", [UNIFORM, IRREGULAR], ids=["uniform", "irregular"])
@pytest.mark.parametrize("shape", [1.0, 3.0])
def test_noise_free_recovery(variant, times, shape):
    # Truncating the SVD low-passes the residue: its peak is lowered and moved later, the more so
    # for short MTT and sharp (exponential) residues (Wu et al. 2003). Tolerances: CBV is an area
    # ratio and must be exact to 2 %; CBF within 22 % for an exponential residue with MTT >= 4 s
    # (its step at t = 0 cannot be resolved by a band-limited AIF), 12 % for the smoother gamma
    # residue; Tmax within 1.5 s of the truth, and delay differences within 0.35 s.
    mtts = [4.0, 8.0]
    delays = [0.0, 3.3, 7.6]
    cases = [(m, d) for m in mtts for d in delays]
    curves, tmax_true = zip(*(tissue_curve(times, 50.0, m, d, shape) for m, d in cases))
    fit = make_model(variant, aif_curve(times), times).fit(np.array(curves))
    cbv_true = np.array([50.0 * m / 60.0 for m, _ in cases])
    np.testing.assert_allclose(fit.cbv, cbv_true, rtol=0.02)
    rtol = 0.22 if shape == 1.0 else 0.12
    np.testing.assert_allclose(fit.cbf, 50.0, rtol=rtol)
    np.testing.assert_allclose(fit.mtt, [m for m, _ in cases], rtol=rtol / (1 - rtol) + 0.02)
    assert np.all(np.abs(fit.tmax - np.array(tmax_true)) < 1.5)
    tmax = fit.tmax.reshape(len(mtts), len(delays))
    np.testing.assert_allclose(tmax - tmax[:, :1], np.tile(delays, (len(mtts), 1)), atol=0.35)


def test_dispersed_tmax_matches_truth():
    # With dispersion the residue peak is smooth; the regularised estimate lands within a frame.
    curves, truth = zip(*(tissue_curve(UNIFORM, 40.0, 5.0, d, 1.0, 2.0) for d in (0.0, 5.5, 9.0)))
    fit = BlockCirculantSVD(aif_curve(UNIFORM), UNIFORM).fit(np.array(curves))
    np.testing.assert_allclose(fit.tmax, truth, atol=1.0)


@pytest.mark.parametrize("variant", CIRCULANT)
@pytest.mark.parametrize("shape", [1.0, 3.0])
def test_cbf_is_delay_insensitive(variant, shape):
    # Block-circulant matrices turn a delay into a circular shift of the residue (Wu et al. 2003).
    c0, _ = tissue_curve(UNIFORM, 45.0, 5.0, 0.0, shape)
    c6, _ = tissue_curve(UNIFORM, 45.0, 5.0, 6.0, shape)
    fit = make_model(variant, aif_curve(UNIFORM), UNIFORM).fit(np.array([c0, c6]))
    assert fit.cbf[1] == pytest.approx(fit.cbf[0], rel=0.03)
    assert fit.tmax[1] - fit.tmax[0] == pytest.approx(6.0, abs=0.3)


def test_standard_svd_is_delay_sensitive():
    # The reference method's known flaw (Wu et al. 2003): truncating the causal matrix flattens a
    # delayed residue more, so CBF falls with delay, while the circulant estimate does not.
    times = UNIFORM
    (c0, t0), (c8, t8) = (tissue_curve(times, 50.0, 4.0, d, 3.0) for d in (0.0, 7.6))
    fit = StandardSVD(aif_curve(times), times).fit(np.array([c0, c8]))
    assert fit.cbf[0] == pytest.approx(50.0, rel=0.12)
    assert fit.cbf[1] < 0.9 * fit.cbf[0]
    assert fit.tmax[0] == pytest.approx(t0, abs=0.5)
    assert abs(fit.tmax[1] - t8) < 3.0
    np.testing.assert_allclose(fit.cbv, 50.0 * 4.0 / 60.0, rtol=0.02)
    # The same fixed truncation on the block-circulant matrix (cSVD) keeps CBF.
    circulant = make_model("csvd", aif_curve(times), times).fit(np.array([c0, c8]))
    assert circulant.cbf[1] == pytest.approx(circulant.cbf[0], rel=0.03)


def test_discrete_convolution_converges_to_the_analytic_curve():
    # The matrix that every method inverts, applied to the sampled analytic residue, approaches the
    # analytic tissue curve (fine-grid convolution) at first order in the frame interval: the
    # piecewise-constant residue holds each sample for one interval.
    for shape, mtt, delay in ((1.0, 4.0, 0.0), (3.0, 8.0, 5.0), (20.0, 6.0, 2.0)):
        errors = []
        for dt in (1.0, 0.5, 0.25):
            t = np.arange(0.0, 90.0, dt)
            curve, _ = tissue_curve(t, 40.0, mtt, delay, shape)
            residue = kinetics.flow_rate_per_s(40.0) * kinetics.residue(t - delay, mtt, shape)
            sampled = {}
            for circulant in (False, True):
                a = convolution_matrix(aif_curve(t), dt, circulant)
                r = np.zeros(a.shape[0])
                r[: t.size] = residue
                sampled[circulant] = (a @ r)[: t.size]
            model, causal = sampled[True], sampled[False]
            np.testing.assert_allclose(model, causal, rtol=0, atol=1e-12)
            errors.append(np.max(np.abs(model - curve)) / curve.max())
        assert errors[0] < 0.15
        assert errors[1] < 0.6 * errors[0] and errors[2] < 0.6 * errors[1]


@pytest.mark.parametrize("variant", ["ssvd", "csvd"])
def test_truncated_svd_equals_the_pseudo_inverse(variant):
    # The filtered-SVD path (projection, truncation, synthesis, recomputed residue) against numpy's
    # truncated pseudo-inverse of the same matrix.
    t = np.arange(0.0, 40.0, 1.0)
    model = make_model(variant, aif_curve(t), t)
    curves = np.array([tissue_curve(t, 30.0, 6.0, d, 3.0, 1.0)[0] for d in (0.0, 4.0)])
    fit = model.fit(curves)
    pad = np.zeros((curves.shape[0], model.n_padded))
    pad[:, : t.size] = curves
    expected = (np.linalg.pinv(model.matrix, rcond=model.threshold) @ pad.T).T
    np.testing.assert_allclose(fit.residue, expected[:, : t.size], atol=1e-5 * expected.max())
    np.testing.assert_allclose(fit.residue_peak, expected.max(axis=1), rtol=1e-4)


def test_osvd_picks_the_threshold_of_the_direct_search():
    # oSVD (Wu et al. 2003) as written: for each candidate threshold, the truncated pseudo-inverse
    # of the block-circulant matrix (float64), the residue's oscillation index
    # sum |r(k) - 2 r(k-1) + r(k-2)| / (L max r); the lightest threshold within the target, the
    # heaviest if none is. The blocked float32 search must pick the same threshold for every curve
    # away from a float32 tie, whatever the blocks, chunks and threads.
    rng = np.random.default_rng(21)
    t = np.arange(0.0, 45.0, 1.0)
    model = BlockCirculantSVD(aif_curve(t), t)
    clean = [tissue_curve(t, cbf, mtt, delay, 3.0, 1.0)[0]
             for cbf in (10.0, 50.0) for mtt in (3.0, 9.0) for delay in (0.0, 6.0)]
    curves = np.concatenate([np.repeat(clean, 50, axis=0), np.zeros((120, t.size))])
    sigma = rng.choice([0.3, 2.0, 6.0, 20.0], size=(curves.shape[0], 1))
    curves = curves + sigma * rng.normal(0.0, 1.0, curves.shape)
    curves[-20:] = 0.0                                    # no tracer: every candidate is flat

    limit = OSCILLATION_INDEX_WU2003 * model.n_padded
    u, s, vt = np.linalg.svd(model.matrix)
    coef = curves @ u[: t.size]                           # (n, L), the padded half is zero
    lightest_first = sorted(OSVD_THRESHOLDS)
    chosen = np.full(curves.shape[0], np.nan)
    residue_peak = np.full(curves.shape[0], np.nan)
    near_tie = np.zeros(curves.shape[0], dtype=bool)
    for threshold in lightest_first:
        rank = int(np.sum(s >= threshold * s[0]))
        r = (coef[:, :rank] / s[:rank]) @ vt[:rank]        # (n, L) truncated residues
        oscillation = np.abs(r[:, 2:] - 2.0 * r[:, 1:-1] + r[:, :-2]).sum(axis=1)
        bound = limit * np.maximum(r.max(axis=1), 0.0)
        passes = oscillation <= bound
        near_tie |= np.abs(oscillation - bound) < 1e-3 * bound
        new = np.isnan(chosen) & (passes | (threshold == lightest_first[-1]))
        chosen[new], residue_peak[new] = threshold, r.max(axis=1)[new]
    assert near_tie.mean() < 0.02

    with threadpool_limits(limits=1, user_api="blas"):
        model.search_block = 97       # several search blocks per chunk, the last one partial
        fits = [model.fit(curves), model.fit(curves, chunk_size=150, workers=2)]
    for fit in fits:
        np.testing.assert_array_equal(fit.regularisation[~near_tie], chosen[~near_tie])
        np.testing.assert_allclose(fit.residue_peak[~near_tie], residue_peak[~near_tie],
                                   rtol=1e-4, atol=1e-6 * residue_peak.max())
    # The curves span the ladder, from the lightest threshold (clean and empty curves) to the
    # fallback on the heaviest (noise only).
    assert len(np.unique(chosen)) >= 8 and chosen.max() == lightest_first[-1]
    assert np.all(chosen[-20:] == lightest_first[0])


@pytest.mark.parametrize("criterion", ["lcurve", "gcv"])
def test_tikhonov_equals_the_regularised_normal_equations(criterion):
    # Filter factors s^2/(s^2+lambda^2) in the SVD basis == (A'A + lambda^2 I)^-1 A'c.
    t = np.arange(0.0, 40.0, 1.0)
    rng = np.random.default_rng(11)
    model = TikhonovSVD(aif_curve(t), t, criterion=criterion)
    clean, _ = tissue_curve(t, 30.0, 6.0, 3.0, 3.0, 1.0)
    curves = clean[None] + rng.normal(0.0, 1.0, (3, t.size))
    fit = model.fit(curves)
    a = model.matrix
    for curve, lam_rel, residue in zip(curves, fit.regularisation, fit.residue):
        lam = lam_rel * model.singular_values[0]
        c = np.zeros(model.n_padded)
        c[: t.size] = curve
        r = np.linalg.solve(a.T @ a + lam**2 * np.eye(a.shape[0]), a.T @ c)
        np.testing.assert_allclose(residue, r[: t.size], atol=1e-4 * np.abs(r).max())


@pytest.mark.parametrize("criterion", ["lcurve", "gcv"])
def test_tikhonov_parameter_follows_the_noise(criterion):
    rng = np.random.default_rng(5)
    t = np.arange(0.0, 50.0, 1.0)
    model = TikhonovSVD(aif_curve(t), t, criterion=criterion)
    clean, truth = tissue_curve(t, 40.0, 5.0, 2.0, 3.0, 1.0)
    # Noise-free: the lightest regularisation of the grid (nothing to suppress).
    assert model.fit(clean[None]).regularisation[0] < 0.02
    medians = []
    for sigma in (0.25, 1.0, 4.0):
        fit = model.fit(clean[None] + rng.normal(0.0, sigma, (2000, t.size)))
        medians.append(np.median(fit.regularisation))
        if sigma > 1.0:
            continue  # tissue peak / noise about 2: CBF is regularised down, only lambda is tested
        assert np.median(fit.cbf) == pytest.approx(40.0, rel=0.3)
        assert abs(np.median(fit.tmax) - truth) < 1.5
        if criterion == "lcurve":
            assert np.std(fit.cbf) / np.mean(fit.cbf) < 0.35
    # More noise, heavier regularisation: a 16x larger noise SD raises lambda at least 3x.
    assert medians[0] < medians[1] < medians[2]
    assert medians[2] > 3 * medians[0]
    # Both criteria are invariant to the scale of the data (b -> k b scales G and shifts the
    # log-log L-curve), so lambda is too, and CBF scales with the data.
    curves = clean[None] + rng.normal(0.0, 1.0, (50, t.size))
    a, b = model.fit(curves), model.fit(7.0 * curves)
    np.testing.assert_allclose(b.regularisation, a.regularisation, rtol=1e-3)
    np.testing.assert_allclose(b.cbf, 7.0 * a.cbf, rtol=1e-3)


def test_tissue_leading_the_aif_gives_negative_tmax():
    # An AIF from a delayed artery: tissue arrives 3 s before it; the circulant wraps that lag.
    t = UNIFORM
    late_aif = aif_curve(t, arrival_s=7.0)
    tf = np.arange(0.0, t[-1] + 2 * FINE_DT_S, FINE_DT_S)
    h = kinetics.residue(tf, 5.0, 3.0)
    c = kinetics.flow_rate_per_s(40.0) * np.convolve(aif_curve(tf, arrival_s=4.0), h)[: tf.size]
    fit = BlockCirculantSVD(late_aif, t).fit(np.interp(t, tf, c * FINE_DT_S)[None])
    assert -4.5 < fit.tmax[0] < -1.5


def test_osvd_with_noise_over_many_realisations():
    rng = np.random.default_rng(7)
    t = np.arange(0.0, 45.0, 1.0)
    model = BlockCirculantSVD(aif_curve(t), t)
    for delay in (1.0, 7.0):
        clean, truth = tissue_curve(t, 40.0, 5.0, delay, 3.0, 1.0)
        for sigma in (1.0, 3.0):  # delta-HU noise after spatial smoothing
            fit = model.fit(clean[None] + rng.normal(0.0, sigma, (3000, t.size)))
            assert np.median(fit.cbf) == pytest.approx(40.0, rel=0.2)
            assert abs(np.median(fit.tmax) - truth) < 1.2
            # CBV is a linear area ratio: unbiased, with the SD that the noise propagates to.
            weights = np.full(t.size, 1.0)
            weights[[0, -1]] = 0.5
            sd = kinetics.CBV_SCALE * sigma * np.sqrt(np.sum(weights**2)) / model.aif_area
            clean_cbv = model.fit(clean[None]).cbv[0]
            assert abs(np.mean(fit.cbv) - clean_cbv) < 4 * sd / np.sqrt(fit.cbv.size)
            assert np.std(fit.cbv) == pytest.approx(sd, rel=0.1)
    # Noisier curves get heavier truncation (the point of the oscillation index).
    clean, _ = tissue_curve(t, 40.0, 5.0, 2.0, 3.0)
    quiet = model.fit(clean[None] + rng.normal(0.0, 0.3, (500, t.size)))
    loud = model.fit(clean[None] + rng.normal(0.0, 4.0, (500, t.size)))
    assert np.median(loud.regularisation) > np.median(quiet.regularisation)


@pytest.mark.parametrize("variant", ["ssvd", "csvd", "bcsvd", "tikhonov", "tikhonov-gcv"])
def test_chunks_and_threads_do_not_change_the_result(variant):
    rng = np.random.default_rng(3)
    t = np.arange(0.0, 45.0, 1.0)
    clean, _ = tissue_curve(t, 40.0, 5.0, 2.0)
    curves = clean[None] + rng.normal(0.0, 2.0, (301, t.size))
    model = make_model(variant, aif_curve(t), t)
    with threadpool_limits(limits=1, user_api="blas"):
        a = model.fit(curves, chunk_size=301)
        b = model.fit(curves, chunk_size=64)
        c = model.fit(curves, chunk_size=50, workers=2)
    # float32 products blocked differently per chunk size differ in the last bits.
    for other in (b, c):
        np.testing.assert_allclose(other.cbf, a.cbf, rtol=1e-4)
        np.testing.assert_allclose(other.tmax, a.tmax, atol=1e-4)
        np.testing.assert_allclose(other.regularisation, a.regularisation, rtol=1e-4)


def test_residue_is_recomputed_consistently():
    # The residue is not kept by the fit; recomputed on request it peaks where the fit says.
    t = np.arange(0.0, 45.0, 1.0)
    rng = np.random.default_rng(9)
    clean, _ = tissue_curve(t, 40.0, 5.0, 3.0, 3.0, 1.0)
    curves = clean[None] + rng.normal(0.0, 1.0, (40, t.size))
    for variant in ("bcsvd", "tikhonov"):
        fit = make_model(variant, aif_curve(t), t).fit(curves)
        r = fit.residue
        assert r.shape == (40, t.size) and r.dtype == np.float32
        ahead = fit.tmax >= 0  # the peak lies in the positive-lag half that ``residue`` holds
        np.testing.assert_allclose(r.max(axis=1)[ahead], fit.residue_peak[ahead], rtol=1e-5)
        assert np.all(np.abs(np.argmax(r, axis=1)[ahead] - fit.tmax[ahead]) <= 0.5 + 1e-6)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_perfusion_maps_volume(variant):
    t = np.arange(0.0, 60.0, 1.0)
    shape = (6, 5, 4)
    mask = np.zeros(shape, dtype=bool)
    mask[1:5, 1:4, :] = True
    late = np.zeros(shape, dtype=bool)
    late[3:5, 1:4, :] = True  # "hypoperfused": delay 9 s, MTT 8 s, CBF 20
    normal, _ = tissue_curve(t, 50.0, 4.0, 0.5, 3.0, 1.0)
    delayed, truth_late = tissue_curve(t, 20.0, 8.0, 9.0, 3.0, 1.0)
    conc = np.zeros(shape + (t.size,), dtype=np.float32)
    conc[mask & ~late] = normal
    conc[late] = delayed
    conc[0, 0, 0] = 500.0  # outside the mask: must not appear anywhere
    conc[1, 1, 0] = -normal  # non-physical curve inside the mask: clamped
    name, options = VARIANTS[variant]
    maps = perfusion_maps(conc, mask, aif_curve(t), t, method=name, chunk_size=7, **options)
    assert set(maps) == {"cbf", "cbv", "mtt", "tmax", "ttp"}
    for image in maps.values():
        assert image.shape == shape and image.dtype == np.float32
        assert np.all(image[~mask] == 0)
        assert np.all(image >= 0)
    assert maps["cbf"][1, 1, 0] == 0 and maps["cbv"][1, 1, 0] == 0
    # Tmax > 6 s exactly in the delayed region (the non-physical curve's Tmax is noise: left out).
    physical = np.ones(shape, dtype=bool)
    physical[1, 1, 0] = False
    np.testing.assert_array_equal((maps["tmax"] > 6.0)[physical], late[physical])
    assert np.median(maps["tmax"][late]) == pytest.approx(truth_late, abs=1.0)
    assert np.median(maps["cbf"][late]) == pytest.approx(20.0, rel=0.15)
    assert np.median(maps["ttp"][late]) > np.median(maps["ttp"][mask & ~late]) + 8.0


def test_bad_arguments_raise_data_error():
    t = np.arange(0.0, 30.0, 1.0)
    model = BlockCirculantSVD(aif_curve(t), t)
    with pytest.raises(DataError, match=r"curves must be \(N, 30\)"):
        model.fit(np.zeros((4, 29)))
    with pytest.raises(DataError, match="no positive area"):
        BlockCirculantSVD(np.zeros(30), t)
    with pytest.raises(DataError, match="Tikhonov criterion"):
        TikhonovSVD(aif_curve(t), t, criterion="discrepancy")
    with pytest.raises(DataError, match="geometric grid"):
        TikhonovSVD(aif_curve(t), t, lambdas=[0.01, 0.02, 0.05])
    with pytest.raises(DataError, match=r"threshold must be in \(0, 1\)"):
        StandardSVD(aif_curve(t), t, threshold=1.5)
    with pytest.raises(DataError, match="oSVD thresholds"):
        BlockCirculantSVD(aif_curve(t), t, thresholds=(0.1, 0.0))
    with pytest.raises(DataError, match="unknown deconvolution method"):
        perfusion_maps(np.zeros((2, 2, 2, 30)), np.ones((2, 2, 2), bool), aif_curve(t), t,
                       method="magic")
