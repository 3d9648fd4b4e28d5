"""Model-based deconvolution: Bayesian fit of delay, dispersion and transit time (default method).

Truncated-SVD deconvolution smooths the residue function, which shifts its maximum (Tmax) and biases
its peak (CBF) by an amount that depends on the transit time and the noise (Wu et al. 2003; Kudo et
al. 2013, Radiology 267:201). The clinical thresholds act on exactly these two quantities (Tmax > 6 s,
rCBF < 0.30), so strokeperf fits a tracer-kinetic model instead (parametric deconvolution: Mouridsen et
al. 2006, NeuroImage 33:570; Bayesian estimation: Boutelier et al. 2012, Med Image Anal 16:1304)::

    C(t) = F * (AIF conv h_beta conv R_(MTT, alpha))(t - delay)

- ``F`` flow rate in 1/s, ``delay`` in s (bolus arrival relative to the AIF),
- ``h_beta`` exponential vascular transport function with dispersion time ``beta`` s (Calamante et
  al. 2000, Magn Reson Med 44:466),
- ``R`` the residue of a gamma distribution of transit times with mean ``MTT`` s and shape ``alpha``
  (Mouridsen 2006; alpha = 1 exponential, large alpha approaches a box).

Estimation. ``F`` enters linearly, so for each candidate curve ``g`` of a dictionary of (delay,
dispersion, MTT, shape) values its least-squares flow is ``<c, g> / <g, g>`` and the residual falls by
``<c, g>^2 / <g, g>``: scoring all candidates is one matrix product per chunk of voxels, on the measured
(possibly irregular) frame times. With white Gaussian noise these scores give the posterior over
candidates, and each output is its posterior mean. The mean matters: when dispersion is large the
effective residue is flat-topped, many candidates fit almost equally well and the single best one
jumps between them; averaging over them reduces the Tmax error (measured on the phantom: mean absolute
error 2.1 s -> 1.4 s above Tmax 10 s).

Two refinements of the likelihood and the prior (measured with ``benchmarks/accuracy.py --quick`` and
whole-brain phantom sessions; figures in docs/accuracy.md):

- Baseline offset. The concentration is the signal minus the mean of the pre-bolus frames, so every
  frame carries the same error of that mean (SD ``sigma / sqrt(n_baseline)``, 0.8 HU for six frames
  of 2 HU): a correlated error the white-noise likelihood mistakes for a longer or shorter tail. The
  model has a constant ``b`` as a second linear nuisance parameter, ``C = F g + b``, removed by
  centring curves and candidates over the frames (profile likelihood of the linear parameters;
  e.g. Kay 1993, Fundamentals of Statistical Signal Processing, ch. 8). Tmax > 10 s of low-flow,
  dispersed lesion tissue was under-read by 0.3-0.7 s (median) without it.
- Prior flat in Tmax. A flat prior on the (delay, dispersion, MTT, shape) grid is not flat in Tmax:
  far fewer candidates have a Tmax near the lowest delays than in the middle of the range, so the
  posterior mean of early tissue is pulled late (+0.96 s median error at true Tmax 0-2 s). Every
  Tmax bin (``TMAX_PRIOR_BIN_S``) gets the same prior mass, which makes the implied prior on Tmax
  uniform (a reparametrised flat prior on the quantity reported; Jaynes 1968, IEEE Trans Syst Sci
  Cybern 4:227).
- Within a Tmax bin, the nuisance parameters follow a stated base measure, not the grid's spacing:
  uniform in dispersion over the grid's range (each dispersion carries the width of its trapezoid
  cell, :func:`dispersion_weights`), uniform in log MTT (the log-spaced grid) and equal over the
  shapes. With equal weight per grid point, the grid's spacing (0.75 s below 2.5 s, 1.5-2 s above)
  was itself a prior that favoured little dispersion, and the posterior of dispersed lesion tissue
  spread onto less dispersed, earlier-peaking candidates: whole-brain Tmax > 10 s read 16-26 % small
  on phantom seeds 21, 35 and 41; 6-11 % with the uniform base measure (docs/accuracy.md).

One step looks beyond the voxel: where a curve leaves its Tmax uncertain (posterior SD above 2 s)
and its neighbourhood reads as normal, Tmax, CBF and CBV are posterior means under a prior on Tmax
from that neighbourhood (:mod:`strokeperf.deconvolution.neighbourhood`, this method's
:meth:`~ParametricDeconvolution.second_pass`, which ``perfusion_maps`` runs when it is given the
voxel size, as the pipeline does).

Limits. At CT-like noise (2 HU per frame after smoothing) dispersion and residue shape are barely
identifiable from one voxel's curve, and Tmax, the position of the effective residue's maximum,
depends on them (a near-box residue has Tmax = delay without dispersion and delay + several s with
0.75 s of it). Even the fit given the tile phantom's own parameter grid as its candidates has a mean
absolute Tmax error of 1.1-1.6 s per true-Tmax bin there (``benchmarks/accuracy.py --oracle``).

Outputs, in the conventions of :mod:`strokeperf.deconvolution.base`:

- ``Tmax = delay + argmax(h_beta conv R)``, the time of the maximum of the effective residue (what Tmax
  means with dispersion: Calamante et al. 2010, Stroke 41:1169);
- ``CBF = CBF_SCALE * F max(h_beta conv R)``, the peak of the effective residue. ``F`` alone is not
  identifiable at clinical frame rates: a residue that decays within the first frame interval looks
  the same as a dispersed bolus with a higher flow (noise-free phantom curves: posterior mean of ``F``
  1.5-3 times the truth in normal tissue). The effective peak is what the data determine, the
  quantity SVD-based software reports as CBF, and on the phantom it gives rCBF core volumes within
  0-18 % of the truth where ``F`` gave +37-60 %;
- ``CBV = CBV_SCALE * F * MTT``, the area of the fitted curve (right also when the scan ends before the
  tissue curve returns to baseline), and ``MTT = 60 CBV / CBF``.
"""

from __future__ import annotations

import functools

import numpy as np

from strokeperf import kinetics
from strokeperf.deconvolution.base import PerfusionFit, PerfusionModel
from strokeperf.deconvolution.neighbourhood import UNINFORMATIVE_TMAX_SD_S, neighbourhood_prior
from strokeperf.errors import DataError
from strokeperf.timecurves import check_frame_times, parabolic_offset, time_to_peak

#: Candidate delays, s: from tissue slightly ahead of the AIF (the AIF is sampled in a large artery
#: downstream of some territories' branch points) to beyond the 10 s Tmax limit of clinical interest.
DELAY_RANGE_S = (-2.0, 24.0)
#: Step of the delay grid, s (the posterior mean falls between grid points).
DELAY_STEP_S = 0.5
#: Candidate mean transit times, s: log-spaced over 1-24 s (normal grey matter 3-5 s, ischemic tissue
#: up to about 20 s; Ostergaard et al. 1996; Wintermark et al. 2006).
MTT_RANGE_S = (1.0, 24.0)
MTT_STEPS = 14
#: Candidate dispersion times of the exponential transport function, s: 0-7 s covers normal tissue and
#: collateral flow (Calamante et al. 2000, 2006). The posterior mean is pulled towards the middle of the
#: grid, so the largest dispersions of collateral-fed tissue (4-5 s) must lie inside it, not at its
#: edge: a grid too short biases Tmax of severely hypoperfused tissue low (measured: -1.4 s above Tmax
#: 10 s with a 3 s maximum; whole-brain Tmax > 10 s volume of phantom seed 21 -25 % with 5 s, -22 %
#: with 7 s, tile phantom unchanged; both with equal prior weight per grid point, before the
#: prior uniform in dispersion, :func:`dispersion_weights`).
DISPERSIONS_S = (0.0, 0.75, 1.5, 2.5, 3.5, 5.0, 7.0)
#: Candidate residue shapes: exponential (1), gamma (3) and near-box (12) transit-time distributions,
#: the range of the Kudo et al. 2013 digital phantom (exponential to box).
RESIDUE_SHAPES = (1.0, 3.0, 12.0)
#: Step of the fine time grid on which the model curves are built, s.
FINE_DT_S = 0.1
#: Parameters of the model (flow, baseline offset, delay, dispersion, MTT, shape): degrees of freedom
#: of the residual.
N_MODEL_PARAMETERS = 6
#: Width of the Tmax bins over which the prior is made flat, s: the delay step, so that each bin holds
#: the candidates of about one delay.
TMAX_PRIOR_BIN_S = DELAY_STEP_S
#: Smallest noise variance assumed, as a fraction of the curve's mean energy per frame: keeps the
#: posterior from collapsing onto one grid point when the model matches a noise-free curve.
NOISE_FLOOR = 1e-6
#: Floor of the log posterior weights before exponentiation (see :meth:`_weights`).
LOG_WEIGHT_FLOOR = np.float32(-80.0)
#: Voxels per chunk. The fit makes about twenty passes over a chunk x dictionary-size float32 score
#: matrix; at 64 voxels it is 4 MB and stays in cache, at 1024 (64 MB) every pass goes to memory and
#: the fit ran at half the speed (3,600 against 7,600 voxels/s, 45 frames, 15,582 candidates).
DEFAULT_CHUNK_SIZE = 64


class ParametricDeconvolution(PerfusionModel):
    """Dictionary maximum-likelihood fit of the tracer-kinetic model (see module docstring).

    Everything that depends on the AIF and the frame times (the fine-grid model curves, their samples at
    the frame times for every candidate, their norms and Tmax) is built once here; :meth:`fit` only
    multiplies and searches.

    Parameters
    ----------
    aif : array_like (T,)
        Arterial input function at the frame times, baseline 0 (delta-HU or delta-R2*).
    frame_times : array_like (T,)
        Frame onsets in s, strictly increasing (irregular sampling is used as it is).
    delays, mtts, dispersions, shapes : sequences, optional
        Candidate grids (defaults: the module constants).
    dispersion_mass : sequence, optional
        Prior mass of each dispersion within a Tmax bin (default :func:`dispersion_weights`,
        uniform over the grid's range); equal masses weight the grid points alike (a grid that
        is the population's own list of values, as in ``benchmarks/accuracy.py --oracle``).

    Attributes
    ----------
    candidate_tmax : ndarray (K,)
        Tmax of every candidate (delay + time of the effective residue's maximum), s, float32.
    candidate_dispersion : ndarray (K,)
        Dispersion time of every candidate, s (same order).
    log_prior : ndarray (K,)
        The log prior weight of every candidate, float32: flat in Tmax, and within a Tmax bin
        shared by dispersion mass (module docstring).
    tmax_bin_centres : ndarray (B,)
        Prior mean Tmax of each :data:`TMAX_PRIOR_BIN_S` bin, s, increasing.

    Examples
    --------
    A tissue bolus arriving 6 s after the arterial one and wider (Tmax s, CBF mL/100 g/min, CBV
    mL/100 g):

    >>> import numpy as np
    >>> from strokeperf import kinetics
    >>> t = np.arange(45) * 1.5
    >>> aif = kinetics.gamma_variate(t, 6.0, 3.0, 1.5, peak=400.0)
    >>> model = ParametricDeconvolution(aif, t)
    >>> curve = kinetics.gamma_variate(t, 12.0, 3.0, 2.5, peak=12.0)
    >>> fit = model.fit(curve[None])
    >>> round(float(fit.tmax[0]), 1), round(float(fit.cbf[0]), 1), round(float(fit.cbv[0]), 2)
    (7.1, 28.7, 3.49)
    """

    #: The neighbourhood prior reads the unsmoothed concentration (:mod:`.neighbourhood`).
    second_pass_reads_unsmoothed = True

    def __init__(self, aif, frame_times, delays=None, mtts=None, dispersions=DISPERSIONS_S,
                 shapes=RESIDUE_SHAPES, dispersion_mass=None):
        aif = np.asarray(aif, dtype=float)
        t = check_frame_times(frame_times, aif.size)
        if not np.all(np.isfinite(aif)):
            raise DataError("the AIF contains NaN or infinite values")
        if not np.trapezoid(aif, t) > 0:
            raise DataError("the AIF has no positive area; it is not an enhancing arterial curve")
        self.frame_times = t
        self.aif = aif
        # Degrees of freedom of the residual, for the noise variance of every fit.
        self._n_free = max(t.size - N_MODEL_PARAMETERS, 1)
        self.aif_area = float(np.trapezoid(aif, t))
        duration = float(t[-1] - t[0])
        if delays is None:
            hi = min(DELAY_RANGE_S[1], duration - 2.0 * DELAY_STEP_S)
            delays = np.arange(DELAY_RANGE_S[0], hi + 1e-9, DELAY_STEP_S)
        if mtts is None:
            mtts = np.geomspace(*MTT_RANGE_S, MTT_STEPS)
        self.delays = np.asarray(delays, dtype=float)
        self.dispersion, self.mtt_grid, self.shape = _combos(dispersions, mtts, shapes).T

        # Fine grid of times since the first frame; the model is needed up to the last frame.
        tau = np.arange(0.0, duration + FINE_DT_S, FINE_DT_S)
        aif_fine = np.interp(t[0] + tau, t, aif)
        kernels = _effective_residues(tau.size, tuple(map(float, dispersions)),
                                      tuple(map(float, mtts)), tuple(map(float, shapes)))
        # (combos, n_tau), read-only
        n_fft = int(2 ** np.ceil(np.log2(2 * tau.size)))
        response = np.fft.irfft(np.fft.rfft(kernels, n_fft) * np.fft.rfft(aif_fine, n_fft),
                                n_fft)[:, : tau.size] * FINE_DT_S          # AIF conv kernel, unit flow
        # Tmax of each kernel: time of its maximum on the fine grid, refined by a parabola.
        k = np.argmax(kernels, axis=1)
        rows = np.arange(kernels.shape[0])
        off = parabolic_offset(kernels[rows, np.maximum(k - 1, 0)], kernels[rows, k],
                                kernels[rows, np.minimum(k + 1, tau.size - 1)])
        off = np.where(k == 0, 0.0, off)
        self.kernel_peak_s = (k + off) * FINE_DT_S
        self.kernel_peak_value = kernels.max(axis=1)                    # max of h conv R (<= 1)
        # Sample every (combo, delay) candidate at the frame times.
        when = (t - t[0])[None, :] - self.delays[:, None]                # (delays, T)
        pos = np.clip(when / FINE_DT_S, 0.0, tau.size - 1.0)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, tau.size - 1)
        frac = pos - lo
        atoms = response[:, lo] * (1.0 - frac) + response[:, hi] * frac  # (combos, delays, T)
        atoms[:, when < 0] = 0.0
        self.n_combos, self.n_delays = atoms.shape[:2]
        # Tmax, MTT and effective-residue peak of every candidate, for posterior means.
        tmax_atoms = (self.kernel_peak_s[:, None] + self.delays[None, :]).reshape(-1).astype(np.float32)
        mtt_atoms = np.repeat(self.mtt_grid, self.n_delays)
        peak_atoms = np.repeat(self.kernel_peak_value, self.n_delays)
        # Candidates sorted by Tmax bin, so that per-bin sums over a score matrix are contiguous
        # (np.add.reduceat) for the posterior per Tmax bin (:meth:`_tmax_bins`).
        bins = tmax_bins(tmax_atoms, TMAX_PRIOR_BIN_S)
        order = np.argsort(bins, kind="stable")
        bins = bins[order]
        self._bin_starts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
        self.candidate_tmax = tmax_atoms[order]
        # Combos run dispersion-major (:func:`_combos`): each candidate's dispersion grid index.
        dispersion_index = np.repeat(np.arange(len(dispersions)),
                                     self.n_combos // len(dispersions) * self.n_delays)[order]
        self.candidate_dispersion = np.asarray(dispersions, dtype=float)[dispersion_index]
        mtt_atoms, peak_atoms = mtt_atoms[order], peak_atoms[order]
        atoms = atoms.reshape(-1, t.size)[order].astype(np.float32)
        # The baseline offset is profiled out by centring curves and candidates over the frames.
        self._atom_means = atoms.mean(axis=1)[None, :]                   # (1, K), >= 0
        centred = atoms - self._atom_means.T
        norm2 = np.einsum("kt,kt->k", centred, centred, dtype=np.float64)
        self._inv_norm2 = np.where(norm2 > 0, 1.0 / np.maximum(norm2, 1e-30), 0.0).astype(np.float32)
        self._atoms_t = np.ascontiguousarray(centred.T)                 # (T, K)
        self._unit_atoms_t = None                                       # for explained_energy
        # Candidate Tmax centred on a typical value, and its square, for :meth:`_tmax_moments`
        # (centred so that the second moment does not cancel in float32).
        self._tmax_centre = float(np.median(self.candidate_tmax))
        offset = self.candidate_tmax - np.float32(self._tmax_centre)
        # Every per-curve sum over the candidates in one matrix product each (a pass over the
        # chunk's weights is the fit's unit of cost): the posterior mass and the first two Tmax
        # moments; and the flow-weighted peak and MTT. The flow is the projection times
        # 1 / <g, g>, folded here into each candidate's peak and MTT (also for :meth:`_tmax_bins`).
        self._moment_atoms = np.ascontiguousarray(
            np.stack([np.ones_like(offset), offset, offset * offset], axis=1), dtype=np.float32)
        self._peak_per_projection = (self._inv_norm2 * peak_atoms).astype(np.float32)
        self._mtt_per_projection = (self._inv_norm2 * mtt_atoms).astype(np.float32)
        self._flow_atoms = np.ascontiguousarray(
            np.stack([self._peak_per_projection, self._mtt_per_projection], axis=1))
        # Base measure over the nuisance parameters: uniform in dispersion (trapezoid cells).
        mass = (dispersion_weights(dispersions) if dispersion_mass is None
                else np.asarray(dispersion_mass, dtype=float))
        if mass.shape != (len(dispersions),) or not np.all(mass > 0):
            raise ValueError("dispersion_mass needs one positive weight per dispersion")
        base = mass[dispersion_index]
        self.log_prior = tmax_flat_log_prior(self.candidate_tmax, TMAX_PRIOR_BIN_S,
                                              base).astype(np.float32)
        # Prior mean Tmax within each bin (the base measure's weighted mean).
        self.tmax_bin_centres = (np.add.reduceat(base * self.candidate_tmax, self._bin_starts)
                                 / np.add.reduceat(base, self._bin_starts))

    def _log_weights(self, c: np.ndarray, log_prior: np.ndarray):
        """Log posterior weight of every candidate for a chunk of curves (n, T), up to a constant
        per curve (the largest is 0 under any prior but the default, and within -log(K) of 0
        under the default one).

        Returns ``log_weights`` (n, K), the projections ``<c, g_k>`` clipped at 0 (n, K) and a mask
        (n,) of the curves without tracer (air, CSF, a non-physical dip).

        Gaussian noise: candidate k's log-likelihood exceeds the best one's by
        ``-(score_best - score_k) / (2 sigma^2)``, with ``score_k = <c,g_k>^2/<g_k,g_k>`` the fall in
        residual it achieves (curve and candidate centred over the frames, which profiles out the
        baseline offset; flow at its least-squares value constrained to be >= 0, so a candidate
        the curve projects negatively on fits with zero flow); the log prior is added.
        The noise variance is the residual of the best candidate per degree of freedom, floored so
        that a curve the model matches exactly does not collapse the posterior onto one grid point.
        """
        mean_c = c.mean(axis=1, keepdims=True)
        c = c - mean_c
        proj = c @ self._atoms_t                                        # (n, K) <c, g>
        # Tracer present: a positive projection of the raw curve on some candidate (the raw
        # projection is the centred one plus T mean(c) mean(g)); a curve without (air, CSF, a
        # non-physical dip) has no fit, as the offset would otherwise read a dip as a late bolus.
        raw = proj + (c.shape[1] * mean_c) * self._atom_means
        empty = ~(raw.max(axis=1) > 0)
        del raw
        np.maximum(proj, 0.0, out=proj)                                 # non-negative flow
        score = proj * proj
        score *= self._inv_norm2
        best = score.max(axis=1)
        energy = np.einsum("nt,nt->n", c, c)
        sigma2 = np.maximum((energy - best) / self._n_free, NOISE_FLOOR * energy / c.shape[1]) + 1e-12
        score -= best[:, None]
        score *= (0.5 / sigma2)[:, None]
        score += log_prior
        if log_prior is not self.log_prior:
            # Another prior can be far below 0 everywhere. The default one is at least -log(K)
            # (:func:`tmax_flat_log_prior`; about -7 in practice) and the best-fitting candidate's
            # score is 0, so the largest log weight stays far above LOG_WEIGHT_FLOOR as it is.
            score -= score.max(axis=1, keepdims=True)
        return score, proj, empty

    def _weights(self, c: np.ndarray, log_prior: np.ndarray):
        """Unnormalised posterior weights of every candidate for a chunk of curves (n, T).

        Returns ``weights`` (n, K; those of :meth:`_log_weights` restricted to candidates with a
        positive flow), the projections ``<c, g_k>`` clipped at 0 (n, K; the least-squares flow
        is ``F = <c, g_k> / <g_k, g_k>``), the weights' sum per curve (n,; 1 where there is no
        fit), a mask (n,) of the curves without a fit (no tracer or no positive projection on any
        candidate) and the weights' sums against :attr:`_moment_atoms` (n, 3: mass, first and
        second moment of the centred Tmax).
        """
        score, proj, empty = self._log_weights(c, log_prior)
        # Below -80 a weight is under 2e-35 of the best and changes no posterior mean; clamping
        # keeps exp out of float32's subnormal range, where it and every later product on the
        # weights run several times slower.
        np.maximum(score, LOG_WEIGHT_FLOOR, out=score)
        weights = np.exp(score, out=score)                              # in place: (n, K)
        weights *= proj > 0
        moments = weights @ self._moment_atoms                          # (n, 3)
        total = moments[:, 0].copy()
        empty |= total <= 0
        total[empty] = 1.0
        return weights, proj, total, empty, moments

    def _posterior_means(self, c: np.ndarray, keep_sd_above=None):
        """Posterior means of peak flow (1/s), Tmax (s) and volume for a chunk of curves (n, T).

        Returns ``flow`` = F max(h conv R) (1/s), ``tmax`` (s), ``volume`` = F MTT (the area ratio
        of the fitted curve, dimensionless), the posterior SD of Tmax (s) and, with
        ``keep_sd_above`` (s), the rows whose SD exceeds it with their :meth:`_tmax_bins`
        (else None); the weights are those of :meth:`_weights` under the default prior.
        """
        weights, proj, total, empty, moments = self._weights(c, self.log_prior)
        tmax, tmax_sd = self._tmax_moments(moments, total)
        kept = None
        if keep_sd_above is not None:
            rows = np.flatnonzero((tmax_sd > keep_sd_above) & ~empty)
            kept = (rows, *self._tmax_bins(weights[rows], proj[rows]))
        # CBV: area of the fitted curve, F * MTT; CBF: peak of the effective residue, F max(h conv R).
        proj *= weights                                                 # weighted <c, g>, in place
        sums = proj @ self._flow_atoms                                  # (n, 2): F peak, F MTT
        flow = sums[:, 0] / total
        volume = sums[:, 1] / total
        flow[empty] = tmax[empty] = volume[empty] = tmax_sd[empty] = 0.0
        return flow, tmax, volume, tmax_sd, kept

    def _tmax_bins(self, weights: np.ndarray, proj: np.ndarray):
        """The posterior per Tmax bin, from unnormalised candidate weights (n, K) and the
        projections ``<c, g_k>`` (n, K; as :meth:`_weights` returns them): the log of each bin's share of the posterior
        mass, and its posterior mean Tmax (s), effective residue peak (1/s) and fitted area ratio
        (each (n, B), float32). A bin whose mass underflows float32 gets the log of the smallest
        normal float32 (the data exclude it), its prior mean Tmax, and flow and area 0."""
        mass = np.add.reduceat(weights, self._bin_starts, axis=1)
        tiny = np.finfo(np.float32).tiny
        held = mass > tiny
        inv = np.where(held, 1.0 / np.where(held, mass, 1.0), 0.0)
        weighted_proj = weights * proj

        def bin_mean(values):
            return np.add.reduceat(values, self._bin_starts, axis=1) * inv

        bin_tmax = np.where(held, bin_mean(weights * self.candidate_tmax),
                            self.tmax_bin_centres[None, :].astype(np.float32))
        log_mass = np.log(np.maximum(mass, tiny) / mass.sum(axis=1, keepdims=True))
        return (log_mass.astype(np.float32), bin_tmax.astype(np.float32),
                bin_mean(weighted_proj * self._peak_per_projection).astype(np.float32),
                bin_mean(weighted_proj * self._mtt_per_projection).astype(np.float32))

    def _tmax_moments(self, moments: np.ndarray, total: np.ndarray):
        """Posterior mean and SD of Tmax (s) from the weights' sums against
        :attr:`_moment_atoms` (n, 3) and their total (n,)."""
        m1 = moments[:, 1] / total
        m2 = moments[:, 2] / total
        return m1 + self._tmax_centre, np.sqrt(np.maximum(m2 - m1 * m1, 0.0))

    def tmax_posterior(self, curves, prior_mean=None, prior_var=None,
                       chunk_size: int = DEFAULT_CHUNK_SIZE):
        """Posterior mean and SD of Tmax (s) of ``curves`` (N, T), and the mask (N,) of curves
        without a fit (mean and SD 0 there).

        Under the default prior (flat in Tmax), times a Gaussian in Tmax per curve when
        ``prior_mean`` and ``prior_var`` (N,; s and s^2) are given (:func:`neighbourhood_prior`).
        """
        curves = self._check_curves(curves)
        n = curves.shape[0]
        mean, sd, no_fit = np.zeros(n), np.zeros(n), np.zeros(n, dtype=bool)
        t = self.candidate_tmax[None, :]
        for start in range(0, n, chunk_size):
            part = slice(start, min(start + chunk_size, n))
            c = np.asarray(curves[part], dtype=np.float32)
            log_prior = self.log_prior
            if prior_mean is not None:
                m = np.asarray(prior_mean[part], dtype=np.float32)[:, None]
                v = np.maximum(np.asarray(prior_var[part], dtype=np.float32), 1e-3)[:, None]
                log_prior = log_prior[None, :] - 0.5 * (t - m) ** 2 / v
            _, _, total, empty, moments = self._weights(c, log_prior)
            mean[part], sd[part] = self._tmax_moments(moments, total)
            mean[part][empty] = sd[part][empty] = 0.0
            no_fit[part] = empty
        return mean, sd, no_fit

    def _check_curves(self, curves) -> np.ndarray:
        """``curves`` as an (N, T) array at the model's frame times, or :class:`DataError`."""
        curves = np.asarray(curves)
        if curves.ndim != 2 or curves.shape[1] != self.frame_times.size:
            raise DataError(f"curves must be (N, {self.frame_times.size}), got {curves.shape}")
        return curves

    def explained_energy(self, curves, chunk_size: int = DEFAULT_CHUNK_SIZE) -> np.ndarray:
        """Energy (sum of squares over the frames, baseline offset removed) of each curve (N, T)
        that its best-fitting candidate explains, ``max_k <c, g_k>^2 / <g_k, g_k>`` with
        non-negative flow; the residual energy of the best fit is the curve's centred energy minus
        this (used to compare input functions: :mod:`strokeperf.aif.reconstruction`)."""
        curves = self._check_curves(curves)
        if self._unit_atoms_t is None:
            # With unit-norm candidates the best score is the square of the largest projection:
            # one matrix product and one maximum per chunk.
            self._unit_atoms_t = self._atoms_t * np.sqrt(self._inv_norm2)
        out = np.empty(curves.shape[0])
        for start in range(0, curves.shape[0], chunk_size):
            c = np.asarray(curves[start:start + chunk_size], dtype=np.float32)
            c = c - c.mean(axis=1, keepdims=True)
            best = np.maximum((c @ self._unit_atoms_t).max(axis=1), 0.0)
            out[start:start + c.shape[0]] = best.astype(np.float64) ** 2
        return out

    def fit(self, curves, chunk_size: int = DEFAULT_CHUNK_SIZE,
            keep_sd_above=None) -> "ParametricFit":
        """Fit tissue curves (N, T) at the model's frame times; returns a :class:`ParametricFit`.

        With ``keep_sd_above`` (s) the fit also keeps the per-Tmax-bin posterior of the curves
        whose posterior SD of Tmax exceeds it (:attr:`ParametricFit.tmax_bins`), so that a prior
        on their Tmax can be applied later without fitting them again
        (:func:`~strokeperf.deconvolution.neighbourhood.neighbourhood_prior`).
        """
        curves = self._check_curves(curves)
        n = curves.shape[0]
        flow, tmax, volume, tmax_sd = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
        kept = []
        for start in range(0, n, chunk_size):
            c = np.asarray(curves[start:start + chunk_size], dtype=np.float32)
            part = slice(start, start + c.shape[0])
            flow[part], tmax[part], volume[part], tmax_sd[part], bins = self._posterior_means(
                c, keep_sd_above)
            if bins is not None:
                kept.append((bins[0] + start, *bins[1:]))
        data = np.asarray(curves, dtype=np.float64)
        area = np.trapezoid(data, self.frame_times, axis=1)
        tmax_bins = None
        if keep_sd_above is not None:
            b = self._bin_starts.size
            tmax_bins = (np.concatenate([k[0] for k in kept]) if kept else np.zeros(0, int),
                         *(np.concatenate([k[i] for k in kept]) if kept
                           else np.zeros((0, b), np.float32) for i in (1, 2, 3, 4)))
        return ParametricFit(self, flow, tmax, volume, area / self.aif_area,
                             time_to_peak(data, self.frame_times), tmax_sd, tmax_bins)

    def second_pass(self, source, mask, voxel_size_mm) -> "NeighbourhoodPass":
        """The neighbourhood prior on the Tmax of uninformative voxels (:class:`NeighbourhoodPass`,
        :mod:`strokeperf.deconvolution.neighbourhood`); ``source`` is the concentration before the
        session's spatial smoothing."""
        return NeighbourhoodPass(self, source, mask, voxel_size_mm)


class NeighbourhoodPass:
    """The parametric method's second pass over a volume (:meth:`ParametricDeconvolution.second_pass`).

    :meth:`fit` fits the curves of ``mask`` chunk by chunk, in C order, and keeps the per-Tmax-bin
    posterior of the voxels whose posterior SD of Tmax exceeds
    :data:`~strokeperf.deconvolution.neighbourhood.UNINFORMATIVE_TMAX_SD_S`; :meth:`revise` gives
    those voxels' posterior means under the prior on Tmax from their neighbourhood
    (:func:`~strokeperf.deconvolution.neighbourhood.neighbourhood_prior`), without fitting them
    again.
    """

    def __init__(self, model: ParametricDeconvolution, source, mask, voxel_size_mm):
        self.model = model
        self.source = source
        self.mask = mask
        self.voxel_size_mm = voxel_size_mm
        self._kept = []
        self._fitted = 0

    def fit(self, curves) -> "ParametricFit":
        """:meth:`ParametricDeconvolution.fit` of the next curves (N, T) of the mask."""
        fit = self.model.fit(curves, keep_sd_above=UNINFORMATIVE_TMAX_SD_S)
        self._kept.append((fit.tmax_bins[0] + self._fitted, *fit.tmax_bins[1:]))
        self._fitted += len(curves)
        return fit

    def revise(self) -> tuple[np.ndarray, "ParametricFit"]:
        """The rows of the mask (n,) that the neighbourhood prior revised and their fit: posterior
        means of Tmax, effective residue peak and fitted area ratio (no TTP or measured area)."""
        bins = tuple(np.concatenate([k[i] for k in self._kept]) for i in range(5))
        rows, tmax, peak, area = neighbourhood_prior(self.model, self.source, self.mask, bins,
                                                     self.voxel_size_mm)
        return rows, ParametricFit(self.model, peak, tmax, area, None, None)


def _combos(dispersions, mtts, shapes) -> np.ndarray:
    """Every (dispersion, MTT, shape) combination of the grids, (C, 3), dispersion-major."""
    return np.array([(b, m, a) for b in dispersions for m in mtts for a in shapes], dtype=float)


@functools.lru_cache(maxsize=8)
def _effective_residues(n_tau: int, dispersions: tuple, mtts: tuple, shapes: tuple) -> np.ndarray:
    """Effective residues ``h_beta conv R`` (unit flow) of every (dispersion, MTT, shape)
    combination, in the order of :func:`_combos`, on ``n_tau`` steps of ``FINE_DT_S``;
    read-only. They do not depend on the AIF, so they are cached: the MR AIF
    reconstruction builds about 450 models on one grid per session."""
    tau = np.arange(n_tau) * FINE_DT_S
    dispersion, mtt, shape = _combos(dispersions, mtts, shapes).T
    r = kinetics.residue(tau[None, :], mtt[:, None], shape[:, None])
    out = r.copy()
    dispersed = dispersion > 0
    if dispersed.any():
        n_fft = int(2 ** np.ceil(np.log2(2 * tau.size)))
        h = np.exp(-tau[None, :] / dispersion[dispersed, None]) / dispersion[dispersed, None]
        h /= h.sum(axis=1, keepdims=True) * FINE_DT_S                # unit area on the grid
        conv = np.fft.irfft(np.fft.rfft(r[dispersed], n_fft) * np.fft.rfft(h, n_fft), n_fft)
        out[dispersed] = conv[:, : tau.size] * FINE_DT_S
    out.flags.writeable = False
    return out


def tmax_bins(tmax_s, bin_s: float) -> np.ndarray:
    """Index of the ``bin_s``-wide Tmax bin of each candidate, counted from the smallest Tmax."""
    tmax_s = np.asarray(tmax_s, dtype=float)
    if not bin_s > 0:
        raise ValueError("bin_s must be > 0")
    return np.floor((tmax_s - tmax_s.min()) / bin_s).astype(np.int64)


def tmax_flat_log_prior(tmax_s, bin_s: float, base) -> np.ndarray:
    """Log prior weight of each candidate that makes the implied prior on Tmax uniform.

    Candidates are grouped into Tmax bins of ``bin_s`` seconds; each gets ``log(base / sum of base
    in its bin)`` (``base`` positive; all equal gives ``-log(count in its bin)``), so every bin
    carries the same total prior mass whatever the number of (delay, dispersion, MTT, shape)
    combinations that land in it (Jaynes 1968: a prior flat in the reported quantity), shared
    within the bin as ``base`` says.
    """
    bins = tmax_bins(tmax_s, bin_s)
    base = np.asarray(base, dtype=float)
    if base.shape != bins.shape or not np.all(base > 0):
        raise ValueError("base must hold one positive weight per candidate")
    return np.log(base) - np.log(np.bincount(bins, weights=base)[bins])


def dispersion_weights(dispersions_s) -> np.ndarray:
    """Prior mass of each grid dispersion (s) for a prior uniform over the grid's range: the width
    of its trapezoid cell (half the gap to each neighbour; the end points get half a gap). A grid
    of one dispersion gets weight 1."""
    grid = np.asarray(dispersions_s, dtype=float)
    if grid.ndim != 1 or grid.size == 0 or np.any(np.diff(grid) <= 0):
        raise ValueError("dispersions must be a non-empty, strictly increasing sequence")
    if grid.size == 1:
        return np.ones(1)
    mid = 0.5 * (grid[1:] + grid[:-1])
    return np.r_[mid, grid[-1]] - np.r_[grid[0], mid]


class ParametricFit(PerfusionFit):
    """Result of :meth:`ParametricDeconvolution.fit`: the perfusion parameters of
    :class:`~strokeperf.deconvolution.base.PerfusionFit` as posterior means.

    ``residue_peak`` is the posterior mean of the effective residue's peak ``F max(h conv R)`` in
    1/s, ``tmax`` the posterior mean time of that maximum (s, relative to the AIF), ``ttp`` the time
    of the measured curve's maximum from the first frame (s), ``area_ratio`` the area ratio of the
    measured curve (model-free, for comparison). CBV is the area of the fitted curve, right also
    when the scan ends before the tissue curve has returned to baseline.

    Attributes
    ----------
    model_area_ratio : ndarray (N,)
        Posterior mean of ``F MTT``, the area ratio of the fitted curve (dimensionless), which
        CBV reports.
    tmax_sd : ndarray (N,)
        Posterior SD of Tmax, s: how far the curve alone determines its Tmax.
    tmax_bins : tuple or None
        With ``fit(keep_sd_above=...)``: ``(rows, log_mass, bin_tmax, bin_flow, bin_volume)``, the
        rows (n,) whose posterior SD of Tmax exceeds it, and per Tmax bin (n, B) their log
        posterior mass and posterior mean Tmax (s), effective residue peak (1/s) and area ratio.
    """

    def __init__(self, model, flow, tmax, model_area_ratio, area_ratio, ttp, tmax_sd=None,
                 tmax_bins=None):
        super().__init__(model, flow, tmax, ttp, area_ratio)
        self.model_area_ratio = model_area_ratio
        self.tmax_sd = tmax_sd
        self.tmax_bins = tmax_bins

    @property
    def cbv_area_ratio(self) -> np.ndarray:
        """The fitted curve's area ratio (:attr:`model_area_ratio`)."""
        return self.model_area_ratio
