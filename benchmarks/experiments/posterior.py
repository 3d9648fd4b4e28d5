"""Views of the parametric fit's posterior that only studies of the Tmax estimator use.

Two approaches built on them were measured and not adopted (docs/accuracy.md): other summaries and
priors of the posterior (the median, the flat grid prior, an empirical-Bayes prior learned by EM;
``benchmarks/tmax_priors.py``) and Tmax from log evidence pooled over neighbouring voxels (local
likelihood; ``benchmarks/tmax_pooling.py``). The pipeline's fit is
:class:`strokeperf.deconvolution.parametric.ParametricDeconvolution`; :class:`PosteriorStudy` is that
same model (same candidates, likelihood and default prior) with these two views added.
"""

from __future__ import annotations

import numpy as np

from strokeperf.deconvolution.parametric import DEFAULT_CHUNK_SIZE, ParametricDeconvolution


class PosteriorStudy(ParametricDeconvolution):
    """:class:`~strokeperf.deconvolution.parametric.ParametricDeconvolution` with the per-candidate
    posterior (:meth:`posterior_weights`) and the per-Tmax-bin log evidence
    (:meth:`tmax_log_evidence`). Built and fitted as the parent class."""

    def tmax_log_evidence(self, curves, chunk_size: int = DEFAULT_CHUNK_SIZE):
        """Log posterior mass of every Tmax bin for each curve, up to a constant per curve.

        Returns ``(log_mass, empty)``: (N, B) float32 and the mask (N,) of curves without a fit
        (as in ``fit``), whose rows are all zero (uninformative). Bins are
        :data:`~strokeperf.deconvolution.parametric.TMAX_PRIOR_BIN_S` wide and their prior mean Tmax is ``tmax_bin_centres``; the
        prior is flat in Tmax and the other parameters (flow, offset, dispersion, MTT, shape) are
        summed out within each bin. Log masses of neighbouring voxels can be added (the spatial
        pooling studied in ``benchmarks/tmax_pooling.py``).
        """
        curves = self._check_curves(curves)
        out = np.empty((curves.shape[0], self._bin_starts.size), dtype=np.float32)
        no_fit = np.empty(curves.shape[0], dtype=bool)
        for start in range(0, curves.shape[0], chunk_size):
            c = np.asarray(curves[start:start + chunk_size], dtype=np.float32)
            score, proj, empty = self._log_weights(c, self.log_prior)
            empty |= ~(proj.max(axis=1) > 0)
            # Where a bin's mass underflows float32 its largest term stands in (within log(bin
            # size) of the true log mass, and far below the curve's best bins either way).
            bin_max = np.maximum.reduceat(score, self._bin_starts, axis=1)
            mass = np.add.reduceat(np.exp(score, out=score), self._bin_starts, axis=1)
            with np.errstate(divide="ignore"):
                log_mass = np.where(mass > 1e-30, np.log(mass), bin_max)
            log_mass[empty] = 0.0
            out[start:start + c.shape[0]] = log_mass
            no_fit[start:start + c.shape[0]] = empty
        return out, no_fit

    def posterior_weights(self, curves, log_prior=None) -> np.ndarray:
        """Posterior probability of every candidate (n, K) for curves (n, T), under ``log_prior``
        (K,; default the model's ``log_prior``); rows of curves without tracer are zero. Memory grows as
        n x K: pass chunks of about :data:`DEFAULT_CHUNK_SIZE` curves (for studies of the estimator,
        ``benchmarks/tmax_priors.py``)."""
        c = np.asarray(self._check_curves(curves), dtype=np.float32)
        prior = self.log_prior if log_prior is None else np.asarray(log_prior, dtype=np.float32)
        weights, _, total, empty, _ = self._weights(c, prior)
        weights /= total[:, None]
        weights[empty] = 0.0
        return weights
