"""AIF / VOF selection on a synthetic volume with known arteries, sinus and tissue."""

from __future__ import annotations

import numpy as np
import pytest

from strokeperf import kinetics
from strokeperf.aif import scale_aif_by_vof, select_aif, select_vof
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
