"""Bolus timing, CT/DSC concentration, masked denoising and uniform resampling."""

from __future__ import annotations

import numpy as np
import pytest

from strokeperf import kinetics
from strokeperf.concentration import (
    ct_concentration,
    denoise,
    detect_bolus,
    dsc_concentration,
    require_bolus,
)
from strokeperf.errors import DataError
from strokeperf.timecurves import resample_uniform

IRREGULAR = np.concatenate([np.arange(0.0, 30.0, 1.0), np.arange(30.0, 70.0, 2.5)])


def brain_curve(t, arrival, rng, noise=0.3, baseline=35.0, rise=20.0):
    """Whole-brain mean HU curve: baseline, gamma-variate first pass, small recirculation."""
    clean = (baseline + kinetics.gamma_variate(t, arrival, 3.0, 2.0, rise)
             + kinetics.gamma_variate(t, arrival + 12.0, 3.0, 3.0, 0.15 * rise))
    return clean + rng.normal(0.0, noise, t.size)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("times", [np.arange(0.0, 50.0, 1.0), IRREGULAR], ids=["uniform", "irreg"])
def test_captured_bolus(seed, times):
    rng = np.random.default_rng(seed)
    arrival = rng.uniform(4.0, 10.0)
    timing = detect_bolus(brain_curve(times, arrival, rng), times)
    assert timing.captured and timing.reason == ""
    # Baseline frames all precede the arrival; at least 2 of them.
    assert timing.baseline_end >= 2
    assert times[timing.baseline_end - 1] <= arrival
    assert arrival <= timing.arrival_s <= arrival + 3.0
    assert timing.peak_s == pytest.approx(arrival + 6.0, abs=1.5)


@pytest.mark.parametrize("seed", range(3))
def test_flat_curve_is_not_captured(seed):
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, 45.0, 1.0)
    timing = detect_bolus(35.0 + rng.normal(0.0, 0.5, t.size), t)
    assert not timing.captured
    assert "no contrast enhancement" in timing.reason


def test_bolus_already_arriving():
    rng = np.random.default_rng(1)
    t = np.arange(0.0, 45.0, 1.0)
    timing = detect_bolus(brain_curve(t, -0.5, rng), t)
    assert not timing.captured
    assert "already arriving" in timing.reason


def test_peak_not_captured():
    rng = np.random.default_rng(2)
    t = np.arange(0.0, 16.0, 1.0)
    timing = detect_bolus(brain_curve(t, 8.0, rng), t)  # peak due at 14 s, still rising
    assert not timing.captured
    assert "still rising" in timing.reason


def test_require_bolus_message():
    t = np.arange(0.0, 45.0, 1.0)
    with pytest.raises(DataError, match=r"^bolus not captured: no contrast enhancement"):
        require_bolus(np.full(t.size, 40.0), t)
    rng = np.random.default_rng(0)
    assert require_bolus(brain_curve(t, 6.0, rng), t).captured


def test_ct_concentration_subtracts_baseline():
    rng = np.random.default_rng(0)
    t = np.arange(0.0, 20.0, 1.0)
    base = rng.uniform(20, 40, (3, 4, 2))
    enhancement = kinetics.gamma_variate(t, 5.0, 3.0, 1.5, 30.0)
    hu = (base[..., None] + enhancement).astype(np.int16)
    mask = np.ones((3, 4, 2), bool)
    mask[0] = False
    delta = ct_concentration(hu, t, baseline_end=5, mask=mask)
    assert delta.dtype == np.float32 and delta.shape == hu.shape
    assert np.all(delta[0] == 0)
    expected = hu[1:].astype(float) - hu[1:, ..., :5].mean(axis=-1, keepdims=True)
    np.testing.assert_allclose(delta[1:], expected, atol=1e-4)
    with pytest.raises(DataError, match="baseline"):
        ct_concentration(hu, t, baseline_end=0)


def test_dsc_concentration_inverts_signal_model():
    te = 0.03
    t = np.arange(0.0, 40.0, 1.5)
    dr2 = kinetics.gamma_variate(t, 8.0, 3.0, 1.5, 40.0)  # 1/s
    signal = 500.0 * np.exp(-te * dr2)
    series = np.stack([signal, np.zeros_like(signal), np.where(t > 10, 0.0, signal)])
    out = dsc_concentration(series, te, baseline_end=5)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0], dr2, atol=1e-3)
    assert np.all(out[1] == 0)  # background (S0 = 0)
    assert np.all(np.isfinite(out[2])) and out[2].max() > 100  # zero signal: large, finite
    with pytest.raises(DataError, match="echo time"):
        dsc_concentration(series, 0.0, 5)


def test_denoise_reduces_noise_without_bleeding():
    rng = np.random.default_rng(4)
    shape = (40, 40, 10)
    mask = np.zeros(shape, bool)
    mask[5:35, 5:35, 2:8] = True
    conc = np.where(mask[..., None], 20.0, 1000.0) + rng.normal(0.0, 10.0, shape + (3,))
    out = denoise(conc.astype(np.float32), mask, (1.5, 1.5, 5.0), fwhm_mm=5.0)
    assert out.dtype == np.float32 and np.all(out[~mask] == 0)
    # Edge voxels see the 1000 HU outside the mask only through the mask: no bleed.
    assert np.abs(out[mask].mean() - 20.0) < 0.5
    assert np.abs(out[5, 5:35, 2:8].mean() - 20.0) < 1.0
    assert out[mask].std() < 10.0 / 3.0


def test_resample_uniform_linear_exact():
    t = np.array([0.0, 1.0, 2.0, 4.0, 7.0, 10.0, 10.5])
    curves = np.stack([3.0 * t + 1.0, -t])
    out, tu = resample_uniform(curves, t)
    assert tu[0] == 0.0 and tu[-1] <= t[-1] and np.allclose(np.diff(tu), 0.5)
    np.testing.assert_allclose(out, np.stack([3.0 * tu + 1.0, -tu]))
    out2, tu2 = resample_uniform(curves, t, dt=3.0)
    np.testing.assert_allclose(tu2, [0.0, 3.0, 6.0, 9.0])
    with pytest.raises(DataError, match="not strictly increasing"):
        resample_uniform(curves, t[::-1])
