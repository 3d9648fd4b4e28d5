"""Reconstruction of a saturated (censored) DSC AIF from tissue curves, on synthetic data with a
known arterial curve: tissue curves generated with the true AIF, the AIF then censored at a level
well below its peak, as the noise floor does to arterial blood at the bolus peak."""

from __future__ import annotations

import numpy as np
import pytest

from strokeperf import kinetics
from strokeperf.aif.reconstruction import reconstruct_censored_aif, sample_tissue
from strokeperf.errors import DataError
from strokeperf.deconvolution.parametric import ParametricDeconvolution
from parametric_curves import model_curve

T = np.arange(50) * 1.5                      # s, a DSC protocol
LEVEL = 90.0                                 # 1/s, where the arterial signal reaches the floor


def true_aif(t=T):
    """First pass (arrival 9 s, alpha 2.5, beta 1.8 s, peak 380 1/s) plus a broad recirculation."""
    return (kinetics.gamma_variate(t, 9.0, 2.5, 1.8, 380.0)
            + kinetics.gamma_variate(t, 19.0, 2.0, 4.0, 55.0))


@pytest.fixture(scope="module")
def tissue():
    """600 noisy tissue curves (delta-R2* peaks 8-20 1/s, noise SD 0.3) with delays 0-8 s,
    dispersion 0-3 s, MTT 2-12 s and residue shapes 1-12, made with the true AIF."""
    rng = np.random.default_rng(3)
    model = ParametricDeconvolution(true_aif(), T)
    curves = []
    for _ in range(600):
        delay, disp = rng.uniform(0, 8), rng.choice([0.0, 1.0, 3.0])
        mtt, shape = rng.uniform(2, 12), rng.choice([1.0, 3.0, 12.0])
        unit = model_curve(model, delay=delay, mtt=mtt, dispersion=disp, shape=shape)
        curve = unit * rng.uniform(8, 20) / unit.max()
        curves.append(curve + rng.normal(0, 0.3, T.size))
    return np.array(curves, dtype=np.float32)


def censored(curve):
    fraction = (curve >= LEVEL).astype(float)
    return np.minimum(curve, LEVEL), fraction


@pytest.fixture(scope="module")
def reconstructed(tissue):
    measured, fraction = censored(true_aif())
    return reconstruct_censored_aif(measured, fraction, LEVEL, T, tissue)


def test_reconstruction_restores_tissue_tmax_that_the_censored_aif_shortens(tissue, reconstructed):
    curves, result = tissue, reconstructed
    measured, fraction = censored(true_aif())
    assert fraction.sum() >= 5                                    # a real saturation
    reference = ParametricDeconvolution(true_aif(), T).fit(curves).tmax
    recon = ParametricDeconvolution(result.curve, T).fit(curves).tmax
    flat = ParametricDeconvolution(measured, T).fit(curves).tmax
    above = reference > 6.0
    # The censored AIF reads Tmax short; the reconstruction agrees with the true AIF's reading.
    assert np.median(flat - reference) < -0.5
    assert abs(np.median(recon - reference)) < 0.3
    assert abs((recon > 6.0).sum() / above.sum() - 1) < 0.10
    # The filled peak is arterial-sized: the area within 25 % of the truth (censored: -45 %).
    area = np.trapezoid(result.curve, T) / np.trapezoid(true_aif(), T)
    assert np.trapezoid(measured, T) / np.trapezoid(true_aif(), T) < 0.6
    assert 0.75 < area < 1.25
    assert result.log_likelihood_gain > 0 and result.first_pass["peak"] > LEVEL


def test_uncensored_samples_are_kept_and_the_result_is_reproducible(tissue, reconstructed):
    measured, fraction = censored(true_aif())
    a = reconstructed
    b = reconstruct_censored_aif(measured, fraction, LEVEL, T, tissue)
    np.testing.assert_array_equal(a.curve, b.curve)
    np.testing.assert_array_equal(a.curve[fraction == 0], measured[fraction == 0])
    assert np.all(a.curve >= measured)


def test_partly_censored_frame_is_raised_by_its_censored_share_only(tissue):
    curves = tissue
    measured, fraction = censored(true_aif())
    first = int(np.flatnonzero(fraction)[0])
    fraction[first] = 0.25                     # two of eight voxels at the level in that frame
    result = reconstruct_censored_aif(measured, fraction, LEVEL, T, curves)
    g = kinetics.gamma_variate(T[first], result.first_pass["arrival_s"],
                               result.first_pass["alpha"], result.first_pass["beta_s"],
                               result.first_pass["peak"])
    assert result.curve[first] == pytest.approx(measured[first] + 0.25 * max(g - LEVEL, 0.0))


def test_nothing_censored_returns_the_curve_unchanged(tissue):
    curves = tissue
    curve = 0.2 * true_aif()                   # peak 76 < LEVEL
    result = reconstruct_censored_aif(curve, np.zeros(T.size), LEVEL, T, curves)
    np.testing.assert_array_equal(result.curve, curve)
    assert result.first_pass == {} and result.log_likelihood_gain == 0.0


def test_censored_from_the_first_frame_is_an_error(tissue):
    curves = tissue
    with pytest.raises(DataError, match="first frame"):
        reconstruct_censored_aif(np.full(T.size, LEVEL), np.ones(T.size), LEVEL, T, curves)


def test_tissue_sample_is_a_fixed_subset_of_the_mask():
    conc = np.arange(5 * 6 * 7 * 4, dtype=np.float32).reshape(5, 6, 7, 4)
    mask = np.zeros((5, 6, 7), dtype=bool)
    mask[1:4, 2:5, 3:6] = True                 # 27 voxels
    all_curves = sample_tissue(conc, mask, n=100)
    assert all_curves.shape == (27, 4)
    some = sample_tissue(conc, mask, n=10)
    assert some.shape == (10, 4)
    np.testing.assert_array_equal(some, sample_tissue(conc, mask, n=10))
    with pytest.raises(DataError, match="empty brain mask"):
        sample_tissue(conc, np.zeros_like(mask))
