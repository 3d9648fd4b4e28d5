"""AIF / VOF selection on a synthetic volume with known arteries, sinus and tissue."""

from __future__ import annotations

import numpy as np
import pytest

from strokeperf import kinetics
from strokeperf.aif import select_aif
from strokeperf.aif.venous import crossfit_venous_curve, scale_aif_by_vof, select_vof
from strokeperf.errors import DataError

T = np.arange(0.0, 60.0, 1.0)
FINE_DT = 0.05


def true_aif(t):
    t = np.asarray(t, dtype=float)
    return (kinetics.gamma_variate(t, 5.0, 3.0, 1.5, 300.0)
            + kinetics.gamma_variate(t, 15.0, 3.0, 3.0, 30.0))


def convolved(h_fn, scale=1.0):
    tf = np.arange(0.0, T[-1] + 2 * FINE_DT, FINE_DT)
    c = np.convolve(true_aif(tf), h_fn(tf))[: tf.size] * FINE_DT * scale
    return np.interp(T, tf, c)


def phantom(seed, with_arteries=True):
    """Volume with tissue, partial-volumed arteries (40-60 %) and a full-blood sinus.

    The sinus is the AIF delayed by 4 s and dispersed (beta 3 s): same area, later, and its peak
    is higher than the partial-volumed arteries'.
    """
    rng = np.random.default_rng(seed)
    shape = (20, 20, 6)
    brain = np.zeros(shape, bool)
    brain[2:18, 2:18, :] = True
    tissue = convolved(lambda t: kinetics.residue(t - 1.0, 4.0, 2.0),
                       kinetics.flow_rate_per_s(50.0))
    conc = np.zeros(shape + (T.size,))
    conc[brain] = tissue
    artery = np.zeros(shape, bool)
    if with_arteries:
        cells = rng.choice(np.flatnonzero(brain[:, :10]), 12, replace=False)  # left half
        artery.flat[cells] = True
        fractions = rng.uniform(0.4, 0.6, artery.sum())
        conc[artery] = fractions[:, None] * true_aif(T) + (1 - fractions[:, None]) * tissue
    sinus = np.zeros(shape, bool)
    sinus[8:11, 15:17, 2:4] = True
    vein = convolved(lambda t: kinetics.dispersion_kernel(t - 4.0, 3.0) * (t >= 4.0))
    conc[sinus] = vein
    conc[brain] += rng.normal(0.0, 3.0, (brain.sum(), T.size))
    return conc, brain, artery, sinus, vein


@pytest.mark.parametrize("seed", range(4))
def test_aif_picks_arteries_not_the_sinus(seed):
    conc, brain, artery, sinus, vein = phantom(seed)
    partial_peak = conc[artery].max(axis=1).max()
    assert vein.max() > partial_peak  # the trap: the sinus enhances more than any artery voxel
    aif = select_aif(conc, T, brain, n_voxels=6)
    assert len(aif.voxels) == 6
    assert all(artery[tuple(v)] for v in aif.voxels)
    assert aif.ttp_s == pytest.approx(9.5, abs=1.0)  # gamma variate: 5 s + alpha beta
    assert 5.0 <= aif.arrival_s < 9.0 and aif.complete
    assert 0.9 < aif.quality <= 1.0
    tf = np.arange(0.0, 30.0, 0.01)
    above = tf[true_aif(tf) >= 0.5 * true_aif(tf).max()]
    # Sampled at 1 s and mixed with some tissue: width within a frame of the true FWHM.
    assert aif.fwhm_s == pytest.approx(above[-1] - above[0], abs=1.0)


@pytest.mark.parametrize("seed", range(3))
def test_vof_picks_sinus_and_scaling_restores_amplitude(seed):
    conc, brain, artery, sinus, _ = phantom(seed)
    aif = select_aif(conc, T, brain, n_voxels=6)
    vof = select_vof(conc, T, brain, aif, n_voxels=6)
    assert vof is not None and all(sinus[tuple(v)] for v in vof.voxels)
    assert vof.complete and vof.ttp_s > aif.ttp_s
    scaled, factor = scale_aif_by_vof(aif, vof)
    # Selected arteries hold 40-60 % blood (plus a little tissue): factor 1.6-2.5, and the
    # scaled first pass matches the true AIF peak.
    assert 1.5 < factor < 2.6
    assert scaled.max() == pytest.approx(true_aif(T).max(), rel=0.1)


def test_scaling_rule_refuses_incomplete_or_smaller_vof():
    conc, brain, _, _, _ = phantom(0)
    aif = select_aif(conc, T, brain)
    vof = select_vof(conc, T, brain, aif)
    vof.complete = False
    assert scale_aif_by_vof(aif, vof)[1] == 1.0
    vof.complete = True
    vof.curve = 0.5 * np.asarray(aif.curve)  # a VOF with less area than the AIF is itself partial-volumed
    curve, factor = scale_aif_by_vof(aif, vof)
    assert factor == 1.0 and np.array_equal(curve, aif.curve)
    assert scale_aif_by_vof(aif, None)[1] == 1.0


def test_exclude_mask_is_respected():
    conc, brain, artery, _, _ = phantom(1)
    # Without its arteries the volume holds only tissue and the (late) sinus: no arterial input.
    with pytest.raises(DataError, match="no usable arterial input function"):
        select_aif(conc, T, brain, exclude_mask=artery)
    aif = select_aif(conc, T, brain, n_voxels=4, exclude_mask=artery & (np.arange(20) < 5)[:, None, None])
    assert all(artery[tuple(v)] and v[0] >= 5 for v in aif.voxels)


def test_no_arterial_candidate_raises():
    conc, brain, _, sinus, _ = phantom(2, with_arteries=False)
    with pytest.raises(DataError, match="no usable arterial input function"):
        select_aif(conc, T, brain & ~sinus)
    with pytest.raises(DataError, match="search mask is empty"):
        select_aif(conc, T, np.zeros(brain.shape, bool))


def ct_series(seed, baseline_end, noise_hu=10.0):
    """``phantom(seed)`` as a CT scanner sees it: a 40 HU baseline, white noise of ``noise_hu`` per
    voxel and frame, and a sinus of 288 pure-blood voxels, converted back to delta-HU with the
    series baseline ``[0, baseline_end)`` as the pipeline does.

    The sinus is a fifth of this small brain, so it dominates the mean curve the arterial rules
    compare with; the AIF tests exclude it (in a head it is a few hundred voxels in a million)."""
    from strokeperf.concentration import ct_concentration

    conc, brain, artery, _, vein = phantom(seed)
    sinus = np.zeros(brain.shape, bool)
    sinus[3:15, 12:18, 2:6] = True
    sinus &= ~artery
    tissue = conc[brain & ~artery & ~sinus].mean(axis=0)  # no noise: rebuilt below
    clean = np.where(brain[..., None], tissue, 0.0)
    clean[artery] = conc[artery]
    clean[sinus] = vein
    rng = np.random.default_rng(100 + seed)
    hu = 40.0 + clean + rng.normal(0.0, noise_hu, clean.shape)
    return ct_concentration(hu, T, baseline_end), brain, artery, sinus, vein


@pytest.mark.parametrize("seed", range(4))
def test_vof_area_is_free_of_the_winners_curse(seed):
    # Ranking 288 equally pure sinus voxels by their noisy areas and averaging the top 8 picked
    # those whose baseline noise lifted the whole curve: +17 to +18 % area here (4 baseline
    # frames), which scaled the AIF up and every CBF and CBV down as much.
    conc, brain, artery, sinus, vein = ct_series(seed, baseline_end=4)
    aif = select_aif(conc, T, brain, exclude_mask=sinus)  # see ct_series
    assert all(artery[tuple(v)] for v in aif.voxels)
    vof = select_vof(conc, T, brain, aif)
    assert all(sinus[tuple(v)] for v in vof.voxels)
    true_area = np.trapezoid(vein, T)
    assert np.trapezoid(vof.curve, T) == pytest.approx(true_area, rel=0.04)


def test_crossfit_venous_curve_averages_the_largest_curves_on_the_other_frames():
    rng = np.random.default_rng(0)
    shape = kinetics.gamma_variate(T, 8.0, 3.0, 2.0, 100.0)
    scale = rng.uniform(0.2, 1.0, 50)
    scale[[3, 17, 40]] = 1.5                        # three clearly largest curves
    curves = scale[:, None] * shape + 7.0           # a constant offset: removed by the baselines
    curve, chosen = crossfit_venous_curve(curves, T, baseline_end=6, n_voxels=3)
    np.testing.assert_allclose(curve, 1.5 * shape - 1.5 * shape[:6].mean(), atol=1e-9)
    assert sorted(chosen) == [3, 17, 40]
    with pytest.raises(ValueError, match="2 pre-contrast frames"):
        crossfit_venous_curve(curves, T, baseline_end=1, n_voxels=3)


@pytest.mark.parametrize("seed", range(3))
def test_aif_is_baselined_on_its_own_pre_contrast_frames(seed):
    # The series baseline [0, 7) ends where the tissue rises; the arteries (arrival 5 s) have
    # already risen to 15-20 HU at 6 s, which lowered their whole curve by about 2.5 HU.
    conc, brain, artery, sinus, _ = ct_series(seed, baseline_end=7, noise_hu=3.0)
    aif = select_aif(conc, T, brain, exclude_mask=sinus)  # see ct_series
    assert all(artery[tuple(v)] for v in aif.voxels)
    raw = conc[tuple(aif.voxels.T)].mean(axis=0)
    assert raw[:5].mean() < -1.5                    # the bias the rebaseline removes
    assert abs(aif.curve[:5].mean()) < 1.0
    assert abs(aif.curve[45:].mean() - true_aif(T[45:]).mean() * 0.5) < 1.5
