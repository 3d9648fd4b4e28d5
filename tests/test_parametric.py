"""Model-based deconvolution against analytic tracer-kinetic curves (strokeperf.kinetics)."""

from __future__ import annotations

import numpy as np
import pytest

from strokeperf import kinetics
from strokeperf.errors import DataError
from strokeperf.parametric import ParametricDeconvolution

T = np.arange(45) * 1.5
AIF = kinetics.gamma_variate(T, 6.0, 3.0, 1.5, peak=400.0)


def true_effective(delay, mtt, dispersion, shape, dt=0.01):
    """True Tmax (s) and peak of the effective residue h conv R (unit flow)."""
    tau = np.arange(0.0, 80.0, dt)
    r = kinetics.residue(tau, mtt, shape)
    if dispersion > 0:
        r = np.convolve(r, np.exp(-tau / dispersion) / dispersion)[: tau.size] * dt
    return delay + tau[np.argmax(r)], r.max()


@pytest.fixture(scope="module")
def model():
    return ParametricDeconvolution(AIF, T)


@pytest.mark.parametrize("delay, mtt, dispersion, shape", [
    (2.0, 5.0, 1.0, 2.0), (6.0, 6.0, 1.5, 2.0), (9.0, 10.0, 2.5, 3.0), (4.0, 12.0, 3.5, 1.0)])
def test_noise_free_curves_give_tmax_cbf_and_cbv(model, delay, mtt, dispersion, shape):
    flow = 0.008
    curve = flow * model.model_curve(delay, mtt, dispersion, shape)
    fit = model.fit(curve[None])
    tmax, peak = true_effective(delay, mtt, dispersion, shape)
    assert fit.tmax[0] == pytest.approx(tmax, abs=0.6)
    assert fit.residue_peak[0] == pytest.approx(flow * peak, rel=0.15)
    assert fit.cbv[0] == pytest.approx(kinetics.CBV_SCALE * flow * mtt, rel=0.05)


def test_cbf_does_not_depend_on_delay(model):
    curves = np.stack([0.01 * model.model_curve(d, 5.0, 1.0, 2.0) for d in (0.0, 6.0)])
    fit = model.fit(curves)
    assert fit.cbf[1] == pytest.approx(fit.cbf[0], rel=0.05)
    assert fit.tmax[1] - fit.tmax[0] == pytest.approx(6.0, abs=0.3)


def test_noisy_curves_are_unbiased_in_tmax_on_average(model):
    rng = np.random.default_rng(3)
    curve = 0.008 * model.model_curve(8.0, 8.0, 2.0, 2.0)
    tmax, _ = true_effective(8.0, 8.0, 2.0, 2.0)
    noisy = curve + rng.normal(0.0, 0.1 * curve.max(), (400, T.size))
    fit = model.fit(noisy)
    assert np.median(fit.tmax) == pytest.approx(tmax, abs=0.5)
    assert np.mean(np.abs(fit.tmax - tmax)) < 1.5


def test_irregular_frame_times_are_fitted_where_sampled():
    t = np.r_[np.arange(0, 30, 1.0), np.arange(30, 72, 3.0)]
    aif = kinetics.gamma_variate(t, 6.0, 3.0, 1.5, peak=400.0)
    model = ParametricDeconvolution(aif, t)
    fit = model.fit((0.01 * model.model_curve(7.0, 6.0, 1.5, 2.0))[None])
    assert fit.tmax[0] == pytest.approx(true_effective(7.0, 6.0, 1.5, 2.0)[0], abs=0.6)


def test_curves_without_tracer_give_zero(model):
    fit = model.fit(np.vstack([np.zeros(T.size), -np.ones(T.size)]))
    assert np.all(fit.cbf == 0) and np.all(fit.tmax == 0) and np.all(fit.cbv == 0)


def test_rejects_an_aif_without_area():
    with pytest.raises(DataError, match="no positive area"):
        ParametricDeconvolution(np.zeros(T.size), T)
