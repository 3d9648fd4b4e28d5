"""CTP core and Tmax lesion masks on synthetic maps with a known truth (strokeperf.lesions)."""

from __future__ import annotations

import numpy as np
import pytest

from strokeperf import lesions

VOXEL_MM = (1.5, 1.5, 5.0)


def _lesion(seed: int, noise_cv: float = 0.25):
    """A slab of tissue (120 x 120 x 12 voxels of 1.5 x 1.5 x 5 mm) with a cylindrical core of true
    rCBF 0.15 (radius 12 mm) inside a hypoperfused disc whose rCBF jumps to 0.38 at the core edge and
    rises to 0.6 at its rim (radius 45 mm), as in the digital phantom; normal tissue 1.0. CSF (rCBF
    0) fills a column next to the core. Multiplicative noise of ``noise_cv``."""
    shape = (120, 120, 12)
    x, y = np.meshgrid(np.arange(shape[0]) * VOXEL_MM[0], np.arange(shape[1]) * VOXEL_MM[1],
                       indexing="ij")
    r = np.hypot(x - 90.0, y - 90.0)
    rcbf = np.where(r < 12.0, 0.15, np.where(r < 45.0, 0.38 + 0.22 * (r - 12.0) / 33.0, 1.0))
    tissue = np.ones(shape, dtype=bool)
    csf = np.hypot(x - 90.0, y - 70.0) < 4.0
    tissue[csf] = False
    rcbf = np.repeat(rcbf[:, :, None], shape[2], axis=2)
    rcbf[~tissue] = 0.0
    truth_core = (np.repeat((r < 12.0)[:, :, None], shape[2], axis=2)) & tissue
    hypoperfused = np.repeat((r < 45.0)[:, :, None], shape[2], axis=2) & tissue
    rng = np.random.default_rng(seed)
    noisy = rcbf * (1.0 + noise_cv * rng.standard_normal(shape))
    return noisy.astype(np.float32), hypoperfused, tissue, truth_core


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_smoothed_rcbf_core_follows_the_truth_where_the_raw_threshold_overcalls(seed):
    rcbf, hypoperfused, tissue, truth = _lesion(seed)
    true_ml = lesions.volume_ml(truth, VOXEL_MM)
    raw = lesions.volume_ml(lesions.ctp_core(rcbf, hypoperfused, VOXEL_MM, fwhm_mm=0.0), VOXEL_MM)
    smoothed = lesions.volume_ml(lesions.ctp_core(rcbf, hypoperfused, VOXEL_MM, tissue=tissue),
                                 VOXEL_MM)
    # Per-voxel noise of 25 % turns penumbra just above 0.30 into core: the volume is biased up.
    assert raw > 1.2 * true_ml, (raw, true_ml)
    assert abs(smoothed - true_ml) < 0.10 * true_ml, (smoothed, true_ml)


def test_csf_next_to_the_core_is_not_averaged_in():
    """CSF (rCBF 0, outside the tissue mask) must neither lower the rCBF of the tissue beside it nor
    become core; without noise the smoothed core is the true core up to one voxel of edge."""
    rcbf, hypoperfused, tissue, truth = _lesion(0, noise_cv=0.0)
    smoothed = lesions.smooth_within(rcbf, tissue, lesions.CORE_RCBF_FWHM_MM, VOXEL_MM)
    beside_csf = tissue & ~truth & (rcbf > 0.5)
    assert np.all(smoothed[beside_csf] > 0.45)
    core = lesions.ctp_core(rcbf, hypoperfused, VOXEL_MM, tissue=tissue)
    assert not np.any(core & ~tissue)
    assert abs(int(core.sum()) - int(truth.sum())) < 0.1 * truth.sum()


def test_core_smoothing_needs_the_tissue_mask():
    rcbf, hypoperfused, _, _ = _lesion(0)
    with pytest.raises(ValueError, match="tissue mask"):
        lesions.ctp_core(rcbf, hypoperfused, VOXEL_MM)


def test_core_smoothing_option_is_validated_and_recorded(tmp_path):
    from strokeperf.config import ConfigError, load_parameters

    assert load_parameters().core_rcbf_fwhm_mm == lesions.CORE_RCBF_FWHM_MM
    config = tmp_path / "run.toml"
    config.write_text("core_rcbf_fwhm_mm = 0.0\n")
    assert load_parameters(config).to_dict()["core_rcbf_fwhm_mm"] == 0.0
    assert load_parameters(config, core_rcbf_fwhm_mm=3.0).core_rcbf_fwhm_mm == 3.0
    with pytest.raises(ConfigError, match="core_rcbf_fwhm_mm must be >= 0"):
        load_parameters(core_rcbf_fwhm_mm=-1.0).validate()


def _maps():
    """40 x 40 x 4 voxels of 2 x 2 x 5 mm: normal tissue (CBF 50, CBV 4, Tmax 1 s), a 10 x 10
    lesion block of Tmax 8 s (CBF 20) with a 4 x 4 centre of Tmax 12 s (CBF 10), a CSF column and
    one vessel voxel (CBV 20)."""
    shape = (40, 40, 4)
    affine = np.diag([2.0, 2.0, 5.0, 1.0])
    cbf, cbv, tmax = np.full(shape, 50.0), np.full(shape, 4.0), np.full(shape, 1.0)
    lesion = np.zeros(shape, bool)
    lesion[5:15, 5:15] = True
    centre = np.zeros(shape, bool)
    centre[8:12, 8:12] = True
    cbf[lesion], tmax[lesion] = 20.0, 8.0
    cbf[centre], tmax[centre] = 10.0, 12.0
    csf = np.zeros(shape, bool)
    csf[30:32, 30:32] = True
    cbv[25, 25, :] = 20.0
    return cbf, cbv, tmax, np.ones(shape, bool), csf, affine, lesion, centre


def test_hypoperfusion_finds_reference_relative_maps_and_tmax_lesions():
    cbf, cbv, tmax, brain, csf, affine, lesion, centre = _maps()
    found = lesions.hypoperfusion(cbf, cbv, tmax, brain, csf, affine, (4.0, 6.0, 10.0),
                                  min_cluster_ml=0.1, vessel_cbv=10.0)
    np.testing.assert_allclose(found.voxel_size, [2.0, 2.0, 5.0])
    # CSF and the vessel with its in-plane neighbours (3 x 3 per slice) are not tissue.
    assert found.tissue.sum() == brain.sum() - csf.sum() - 9 * 4
    assert not found.reference[lesion].any() and found.reference[~lesion & found.tissue].all()
    np.testing.assert_allclose(found.rcbf[lesion & ~centre], 0.4, rtol=1e-6)
    np.testing.assert_allclose(found.rcbf[centre], 0.2, rtol=1e-6)
    np.testing.assert_allclose(found.rcbv[found.reference], 1.0, rtol=1e-6)
    np.testing.assert_array_equal(found.tmax_masks[6.0], lesion)
    np.testing.assert_array_equal(found.tmax_masks[10.0], centre)
    assert found.hypoperfused is found.tmax_masks[6.0]


def test_hypoperfusion_without_normal_tissue_is_refused():
    cbf, cbv, tmax, brain, csf, affine, *_ = _maps()
    with pytest.raises(ValueError, match="reference tissue is empty"):
        lesions.hypoperfusion(cbf, cbv, np.full_like(tmax, 7.0), brain, csf, affine)
