"""SVD deconvolution: standard, block-circulant (oSVD and cSVD) and Tikhonov.

Each method is a :class:`~strokeperf.deconvolution.base.PerfusionModel` that holds everything that
depends only on the AIF and the frame times (uniform grid, convolution matrix and its SVD, the
candidate regularisations); ``fit(curves)`` returns an :class:`SVDFit`.

- :class:`StandardSVD`, truncated SVD of the lower-triangular convolution matrix (Østergaard et
  al. 1996). Reference only: CBF depends on the tissue's delay to the AIF.
- :class:`CircularSVD`, block-circulant SVD with one global threshold (Wu et al. 2003).
- :class:`BlockCirculantSVD`, block-circulant SVD with a per-voxel threshold chosen by the
  oscillation index ("oSVD", Wu et al. 2003).
- :class:`TikhonovSVD`, block-circulant Tikhonov regularisation with a per-voxel parameter chosen
  by generalised cross-validation or the L-curve (Calamante et al. 2003; Sourbron et al. 2004).

Deconvolution returns the flow-scaled residue ``F R(t)`` in 1/s, so ``CBF = CBF_SCALE * max(F R)``
(mL/100 g/min), ``CBV = CBV_SCALE * area(C) / area(AIF)`` (mL/100 g), ``MTT = 60 CBV / CBF`` (s),
``Tmax`` = time of the residue's maximum (s, relative to the AIF, sub-frame by parabolic
interpolation), ``TTP`` = time of the tissue curve's maximum from the first frame (s).

All methods share one computation per chunk of voxels, in the singular basis of the convolution
matrix ``A = U S V^T``: project the curves ``b = U^T c``, weigh the components by per-voxel filter
factors ``phi`` (0/1 for truncation, ``s^2 / (s^2 + lambda^2)`` for Tikhonov; Hansen 1998, Rank-
deficient and discrete ill-posed problems, SIAM), synthesise ``r = V diag(phi / s) b``. Work arrays
are float32; the coefficients and the oSVD search are time-major (components x voxels), so that
reductions over time run over contiguous rows, and the synthesised residue is voxel-major for its
peak search (``argmax`` along rows). The residue itself is only materialised for the chunk in hand
and recomputed on request (:attr:`SVDFit.residue`).
"""

from __future__ import annotations

from abc import abstractmethod
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.linalg.blas import sgemm

from strokeperf.deconvolution.base import PerfusionFit, PerfusionModel
from strokeperf.errors import DataError
from strokeperf.timecurves import check_frame_times, parabolic_offset, resample_uniform

#: Oscillation index target of oSVD (Wu et al. 2003, Magn Reson Med 50:164, value for their
#: simulations; O = sum |f(k) - 2 f(k-1) + f(k-2)| / (L max f)).
OSCILLATION_INDEX_WU2003 = 0.095
#: Candidate truncation thresholds of oSVD, relative to the largest singular value. Wu et al. 2003
#: raise the threshold until the residue's oscillation index falls below the target; evaluating a
#: fixed ladder for all voxels at once is the vectorised form of that search (the lightest
#: candidate that passes is the one the search would stop at). The ladder spans the range reported
#: for SVD in CT and MRI (about 5-30 %, Wu et al. 2003; Kudo et al. 2009, Radiology 254:200) with
#: margin on both sides, in steps of about 1.5x (ratio of neighbouring thresholds); candidates that
#: keep the same number of components are evaluated once.
OSVD_THRESHOLDS = (0.01, 0.015, 0.025, 0.04, 0.06, 0.09, 0.13, 0.2, 0.3, 0.5)
#: Fixed global threshold of cSVD relative to the largest singular value: 10 %, inside the 5-30 %
#: range above (Wu et al. 2003 compare block-circulant SVD at fixed thresholds of this order).
CSVD_THRESHOLD = 0.1
#: Fixed threshold of standard (non-circulant) truncated SVD: 20 % of the largest singular value,
#: the value of Østergaard et al. 1996 (Magn Reson Med 36:715).
SSVD_THRESHOLD_OSTERGAARD1996 = 0.2
#: Tikhonov parameters evaluated per voxel, relative to the largest singular value: a geometric grid
#: 10 per decade (1.26x apart) from the lightest oSVD truncation (1 %, ``OSVD_THRESHOLDS``; a
#: filter factor of 1/2 at that singular value) to the largest singular value; the selected value is
#: refined between grid points by a parabola in log(lambda). Extending the grid lower lets both
#: criteria find spurious optima in the near-null components: measured on CT-like curves (2 HU),
#: a lower end of 1e-3 gave CBF CVs of 2-3 (GCV) and up to 1.3 (L-curve) against 0.4-0.7 and
#: 0.12-0.19 with 1e-2.
TIKHONOV_LAMBDAS = tuple(np.geomspace(1e-2, 1.0, 21))
#: Criteria for the Tikhonov parameter: generalised cross-validation (Golub, Heath & Wahba 1979,
#: Technometrics 21:215) and the corner of the L-curve (Hansen 1992, SIAM Rev 34:561; Hansen &
#: O'Leary 1993, SIAM J Sci Comput 14:1487), both compared for perfusion deconvolution by Sourbron
#: et al. 2004 (Magn Reson Med 52:209).
TIKHONOV_CRITERIA = ("gcv", "lcurve")
#: Default criterion: the L-curve. On the tile phantom (benchmarks/accuracy.py, docs/accuracy.md)
#: GCV picks a spuriously small lambda for a few per cent of noisy curves (a known failure of GCV
#: when its minimum is flat, Hansen 1998), which gives CBF CVs two to three times those of the
#: L-curve at the same noise.
TIKHONOV_DEFAULT_CRITERION = "lcurve"
#: Voxels per chunk: bounds the work memory (float32 coefficients and residues, 2T x chunk each,
#: 0.7 MB at 45 frames). Larger chunks spread the Python overhead of a chunk (some 50 numpy calls)
#: over more voxels; the oSVD search works in smaller blocks within a chunk (``OSVD_SEARCH_BLOCK``).
DEFAULT_CHUNK_SIZE = 2048
#: Voxels per block of the oSVD candidate search: its work arrays (float32 residue and second
#: difference, (4T - 2) x block, and their absolute values: 1.1 MB at 45 frames) are rewritten once
#: per candidate and must stay in the core's L2 cache, while each block costs some 40 numpy calls.
#: Measured single-threaded at 45 frames, the search alone costs 0.44-0.48 us per voxel in blocks of
#: 820 to 1400 voxels, 0.50-0.52 us in blocks of 683 and 0.64-0.71 us in blocks of 2048; blocks of
#: 1024 cost 0.64 us: with a power of two the columns that BLAS accumulates alias in the L1 cache.
#: Whole fits (chunks of 2048) with blocks of at most 880, 1040, 1200 or 1360 voxels ran 4-6 %
#: faster than with three blocks of 683.
OSVD_SEARCH_BLOCK = 1040
#: Relative tolerance under which frame intervals count as uniform (no resampling).
UNIFORM_RTOL = 1e-3


def _is_uniform(t: np.ndarray) -> bool:
    d = np.diff(t)
    return bool(np.all(np.abs(d - d[0]) <= UNIFORM_RTOL * d[0]))


def _trapezoid_uniform(y, dt):
    """Trapezoid area (last axis) of uniformly sampled curves."""
    return dt * (y.sum(axis=-1) - 0.5 * (y[..., 0] + y[..., -1]))


def convolution_matrix(aif, dt: float, circulant: bool) -> np.ndarray:
    """Discrete convolution matrix of a uniformly sampled AIF (concentration x s).

    ``A @ r`` with the flow-scaled residue ``r`` sampled on the grid (1/s) gives the tissue curve.

    The integral ``(AIF conv R)(t_i)`` uses the piecewise-linear AIF with a piecewise-constant
    residue held over each interval: lag ``k`` weighs ``dt (a[k] + a[k-1]) / 2`` (``a[-1] = 0``),
    which avoids the flow underestimation of the rectangle rule at the residue's first sample
    (discretisations of this integral compared by Sourbron et al. 2007, Phys Med Biol 52:429). The
    error is first order in ``dt``. Measured against the rectangle rule and the symmetric
    linear-linear kernel over delays 0-14 s, MTT 3-12 s, dispersion 0-2.5 s, exponential to box
    residues and 2 HU noise: median Tmax error +0.76 s vs +1.28 s / +1.26 s.

    Parameters
    ----------
    aif : ndarray, shape (T,)
    dt : float
        Grid step in seconds.
    circulant : bool
        False: lower-triangular ``T x T`` Toeplitz matrix (Østergaard et al. 1996). True: the AIF
        zero-padded to ``L = 2T`` samples in an ``L x L`` circulant matrix (Wu et al. 2003), for
        which a delayed tissue curve is an exact circular shift of the residue.
    """
    aif = np.asarray(aif, dtype=float)
    n = 2 * aif.size if circulant else aif.size
    padded = np.zeros(n)
    padded[: aif.size] = aif
    kernel = 0.5 * (padded + np.concatenate([[0.0], padded[:-1]])) * dt
    lag = np.arange(n)[:, None] - np.arange(n)[None, :]
    if circulant:
        return kernel[lag % n]
    return np.where(lag >= 0, kernel[np.clip(lag, 0, None)], 0.0)


class _SVDDeconvolution(PerfusionModel):
    """Shared model of the SVD-based methods: AIF checks, uniform grid, matrix, SVD, fit loop.

    Subclasses set ``circulant``, call ``_setup_basis(K)`` with the number of singular components
    they can use at most, and implement ``_choose(coef)`` (per-voxel filter factors applied to the
    projected curves, and the per-voxel regularisation parameter) and ``_filtered(coef, param)``
    (the same filter from a stored parameter, to recompute a residue).
    """

    circulant = True

    def __init__(self, aif, frame_times, dt: float | None = None):
        aif = np.asarray(aif, dtype=float)
        t = check_frame_times(frame_times, aif.size)
        if aif.ndim != 1 or aif.size < 4:
            raise DataError(f"the AIF must be one curve of at least 4 frames, got shape {aif.shape}")
        if not np.all(np.isfinite(aif)):
            raise DataError("the AIF contains NaN or infinite values")
        self.frame_times = t
        self.uniform = _is_uniform(t) and dt is None
        if self.uniform:
            self.dt = float(np.mean(np.diff(t)))
            aif_u = aif
            self.times = t - t[0]
        else:
            aif_u, tu = resample_uniform(aif, t, dt)
            self.dt = float(tu[1] - tu[0])
            self.times = tu - t[0]
        self.n_times = aif_u.size
        self.aif = aif_u
        self.aif_area = float(_trapezoid_uniform(aif_u, self.dt))
        if not self.aif_area > 0:
            raise DataError("the AIF has no positive area; it is not an enhancing arterial curve")
        self.matrix = convolution_matrix(aif_u, self.dt, self.circulant)
        self.n_padded = self.matrix.shape[0]
        u, s, vt = np.linalg.svd(self.matrix)
        self.singular_values = s
        self._u, self._vt = u, vt

    def _setup_basis(self, n_components: int):
        """Projection (K, T) and synthesis (L, K) matrices of the first K singular components."""
        k = int(n_components)
        s = self.singular_values
        self.n_components = k
        self._project = np.ascontiguousarray(self._u[: self.n_times, :k].T, dtype=np.float32)
        self._synth64 = self._vt[:k].T / s[None, :k]                          # (L time, K)
        self._synth = np.ascontiguousarray(self._synth64, dtype=np.float32)

    # -- fitting -------------------------------------------------------------------------------
    def _uniform_curves(self, curves: np.ndarray) -> np.ndarray:
        if self.uniform:
            return np.ascontiguousarray(curves, dtype=np.float32)
        out, _ = resample_uniform(np.asarray(curves, dtype=np.float32), self.frame_times, self.dt)
        return np.ascontiguousarray(out)

    @abstractmethod
    def _choose(self, coef: np.ndarray):
        """Filtered coefficients (K', n) float32 and the regularisation (n,) of projected curves
        ``coef`` (K, n)."""

    @abstractmethod
    def _filtered(self, coef: np.ndarray, param: np.ndarray) -> np.ndarray:
        """Filtered coefficients of ``coef`` (K, n) for stored per-voxel regularisations."""

    def _peak(self, r: np.ndarray):
        """Peak value (1/s) and sub-frame lag (frames) of voxel-major residues ``r`` (n, L)."""
        n, L = r.shape
        flat = r.ravel()
        start = np.arange(n) * L
        # First index of the maximum: np.argmax along contiguous rows, 2x faster than finding it
        # by reductions over the rows of a time-major array.
        k = np.argmax(r, axis=1)
        peak = flat[start + k]
        # argmax stops at a NaN; NaN residues (NaN curves) keep the last index, as before.
        k[np.isnan(peak)] = L - 1
        if self.circulant:
            prev, nxt = flat[start + (k - 1) % L], flat[start + (k + 1) % L]
            off = parabolic_offset(prev, peak, nxt)
            # Indices in the padded half are negative lags (tissue earlier than the AIF).
            lag = np.where(k >= self.n_times, k - L, k) + off
        else:
            prev, nxt = flat[start + np.maximum(k - 1, 0)], flat[start + np.minimum(k + 1, L - 1)]
            off = np.where((k == 0) | (k == L - 1), 0.0, parabolic_offset(prev, peak, nxt))
            lag = k + off
        return peak.astype(float), lag

    def fit(self, curves, chunk_size: int = DEFAULT_CHUNK_SIZE,
            workers: int = 1) -> "SVDFit":
        """Deconvolve tissue curves.

        Parameters
        ----------
        curves : array_like, shape (N, T)
            Tissue concentration curves at the model's frame times, baseline 0. Kept by reference
            in the fit to recompute residues on request; do not modify it afterwards.
        chunk_size : int
            Voxels processed at once (bounds the work memory to O(workers x chunk_size x T)).
        workers : int
            Threads deconvolving chunks concurrently; keep BLAS itself at one thread
            (``threadpoolctl``), as :func:`strokeperf.deconvolution.perfusion_maps` does. Numpy releases the GIL in its
            loops but scipy's BLAS wrappers (the oSVD search) do not, and a chunk makes over 100
            calls, each handing the GIL over: on 2 virtual cores 2 workers ran oSVD at 0.9-1.1x
            the speed of one.

        Returns
        -------
        SVDFit
        """
        curves = np.asarray(curves)
        if curves.ndim != 2 or curves.shape[1] != self.frame_times.size:
            raise DataError(
                f"curves must be (N, {self.frame_times.size}), got shape {curves.shape}"
            )
        chunk_size = max(int(chunk_size), 1)
        n = curves.shape[0]
        out = tuple(np.empty(n) for _ in range(5))    # peak, tmax, ttp, ratio, regularisation
        starts = range(0, n, chunk_size)
        if workers > 1 and n > chunk_size:
            with ThreadPoolExecutor(max_workers=int(workers)) as pool:
                list(pool.map(lambda s: self._fit_chunk(curves, slice(s, s + chunk_size), out),
                              starts))
        else:
            for start in starts:
                self._fit_chunk(curves, slice(start, start + chunk_size), out)
        peak, tmax, ttp, ratio, param = out
        return SVDFit(self, peak, tmax, ttp, ratio, param, curves=curves,
                                chunk_size=chunk_size)

    def _fit_chunk(self, curves, part: slice, out):
        """Deconvolve ``curves[part]`` into the output arrays ``out`` (peak, tmax, ttp, ratio,
        regularisation)."""
        nt, dt = self.n_times, self.dt
        c = self._uniform_curves(curves[part])
        # TTP and area first, while the curves are in cache (the oSVD search evicts them).
        # TTP on the uniform grid in frames x dt: timecurves.time_to_peak on that grid gives the
        # same parabola but differs in the last bits for most dt (it scales by time differences).
        flat, start = c.ravel(), np.arange(c.shape[0]) * nt
        kc = np.argmax(c, axis=1)
        ck = flat[start + kc]
        off_c = parabolic_offset(flat[start + np.maximum(kc - 1, 0)], ck,
                                 flat[start + np.minimum(kc + 1, nt - 1)])
        off_c = np.where((kc == 0) | (kc == nt - 1), 0.0, off_c)
        out[2][part] = (kc + off_c) * dt
        out[3][part] = _trapezoid_uniform(c, dt) / self.aif_area
        coef = self._project @ c.T                                       # (K, n)
        filtered, out[4][part] = self._choose(coef)
        # Residues voxel-major (n, L), the transpose of synth @ filtered, for the peak search.
        out[0][part], lag = self._peak(filtered.T @ self._synth[:, : filtered.shape[0]].T)
        out[1][part] = lag * dt

    def residue(self, curves, regularisation, chunk_size: int = DEFAULT_CHUNK_SIZE):
        """Flow-scaled residues ``F R(t)`` (N, T_uniform) in 1/s for stored per-voxel parameters."""
        curves = np.asarray(curves)
        out = np.empty((curves.shape[0], self.n_times), dtype=np.float32)
        for start in range(0, curves.shape[0], chunk_size):
            part = slice(start, start + chunk_size)
            coef = self._project @ self._uniform_curves(curves[part]).T
            filtered = self._filtered(coef, np.asarray(regularisation)[part])
            out[part] = (self._synth[:, : filtered.shape[0]] @ filtered)[: self.n_times].T
        return out

    def _rank_of(self, threshold) -> np.ndarray:
        """Number of singular values >= threshold x the largest (vectorised over thresholds)."""
        s = self.singular_values
        return np.searchsorted(-s, -np.asarray(threshold) * s[0], side="right")


class _TruncatedSVD(_SVDDeconvolution):
    """Truncated SVD at one global threshold (shared by :class:`StandardSVD`, cSVD)."""

    def _fixed(self, threshold: float):
        if not 0 < threshold < 1:
            raise DataError(f"SVD threshold must be in (0, 1), got {threshold}")
        self.threshold = float(threshold)
        rank = int(self._rank_of(threshold))
        if rank < 1:
            raise DataError(f"SVD threshold {threshold} keeps no singular component")
        self._setup_basis(rank)

    def _choose(self, coef):
        return coef, np.full(coef.shape[1], self.threshold)

    def _filtered(self, coef, param):
        keep = np.arange(coef.shape[0])[:, None] < self._rank_of(param)[None, :]
        return coef * keep


class StandardSVD(_TruncatedSVD):
    """Standard truncated SVD deconvolution (Østergaard et al. 1996, Magn Reson Med 36:715).

    The lower-triangular (causal, non-circulant) convolution matrix of :func:`convolution_matrix`
    is inverted keeping the singular values above ``threshold`` x the largest. The truncation acts
    differently on a delayed residue than on an undelayed one, so CBF falls with the tissue's delay
    to the AIF (Wu et al. 2003); kept as the reference method, not for clinical maps. A tissue
    leading the AIF cannot be represented (Tmax >= 0).

    Parameters
    ----------
    aif, frame_times : array_like, shape (T,)
        AIF (baseline 0, units of the tissue curves) and frame times in seconds.
    threshold : float
        Relative truncation threshold, default ``SSVD_THRESHOLD_OSTERGAARD1996`` (0.2).
    dt : float, optional
        Grid step (s) for irregular timing; default as :func:`resample_uniform`.
    """

    circulant = False

    def __init__(self, aif, frame_times, threshold: float = SSVD_THRESHOLD_OSTERGAARD1996,
                 dt: float | None = None):
        super().__init__(aif, frame_times, dt)
        self._fixed(threshold)


class BlockCirculantSVD(_TruncatedSVD):
    """Deconvolution by block-circulant truncated SVD (Wu et al. 2003, Magn Reson Med 50:164).

    The AIF is zero-padded to ``L = 2 T`` samples and arranged in a circulant matrix
    (:func:`convolution_matrix`), which makes the estimate insensitive to the tissue's arrival
    delay relative to the AIF (circular shifts are exact). Small singular values are truncated
    either

    - per voxel, by oscillation index ("oSVD"): the smallest candidate threshold of ``thresholds``
      whose residue has an oscillation index below ``oscillation_index`` (Wu et al. 2003). All
      candidates are evaluated for a block of voxels at once by adding singular components to the
      residue and its second difference (both linear in the components) and reducing over time;
      only the chosen residue is synthesised in full; or
    - globally, at a fixed fraction ``threshold`` of the largest singular value ("cSVD").

    Irregular frame times are first resampled to a uniform grid (:func:`resample_uniform`).

    Parameters
    ----------
    aif : array_like, shape (T,)
        Arterial input function, same units as the tissue curves, baseline 0.
    frame_times : array_like, shape (T,)
        Seconds, strictly increasing.
    oscillation_index : float
        oSVD target (Wu et al. 2003: 0.095). Ignored when ``threshold`` is given.
    threshold : float, optional
        Fixed truncation relative to the largest singular value (e.g. 0.1); disables oSVD.
    dt : float, optional
        Grid step (s) for irregular timing; default as :func:`resample_uniform`.
    thresholds : sequence of float
        oSVD candidate thresholds (default ``OSVD_THRESHOLDS``).

    Examples
    --------
    >>> import numpy as np
    >>> from strokeperf import kinetics
    >>> t = np.arange(60.0)
    >>> aif = kinetics.gamma_variate(t, 5.0, 3.0, 1.5, peak=300.0)
    >>> model = BlockCirculantSVD(aif, t)
    >>> fit = model.fit(np.zeros((2, 60)))
    >>> fit.cbf.shape
    (2,)
    """

    #: Voxels per block of the oSVD search (:data:`OSVD_SEARCH_BLOCK`).
    search_block = OSVD_SEARCH_BLOCK

    def __init__(self, aif, frame_times, oscillation_index: float = OSCILLATION_INDEX_WU2003,
                 threshold: float | None = None, dt: float | None = None,
                 thresholds=OSVD_THRESHOLDS):
        super().__init__(aif, frame_times, dt)
        self.oscillation_index = float(oscillation_index)
        if threshold is not None:
            self._fixed(threshold)
            self.candidate_thresholds = np.array([self.threshold])
            self.candidate_ranks = np.array([self.n_components])
            return
        self.threshold = None
        if not oscillation_index > 0:
            raise DataError(f"oscillation index must be > 0, got {oscillation_index}")
        thr = np.array(sorted(thresholds, reverse=True), dtype=float)   # heaviest truncation first
        if thr.size == 0 or np.any((thr <= 0) | (thr >= 1)):
            raise DataError(f"oSVD thresholds must be in (0, 1), got {tuple(thresholds)}")
        ranks = self._rank_of(thr)
        # One candidate per distinct rank: the lightest threshold giving it (the one reported).
        keep = (ranks > 0) & np.append(ranks[1:] != ranks[:-1], True)
        if not np.any(keep):
            raise DataError("no oSVD candidate threshold keeps a singular component")
        self.candidate_thresholds = thr[keep]
        self.candidate_ranks = ranks[keep]
        self._setup_basis(self.candidate_ranks[-1])
        L = self.n_padded
        second = self._synth64[2:] - 2.0 * self._synth64[1:-1] + self._synth64[:-2]
        both = np.concatenate([self._synth64, second], axis=0).T             # (K, 2L - 2)
        bounds = np.concatenate([[0], self.candidate_ranks])
        # Per candidate, the block of components it adds, Fortran-ordered for in-place BLAS
        # accumulation (sgemm with beta = 1) into the (voxels x 2L-2) Fortran work array, which
        # is the (2L-2 x voxels) time-major array in memory.
        self._blocks = [np.asfortranarray(both[a:b], dtype=np.float32)
                        for a, b in zip(bounds[:-1], bounds[1:])]
        self._limit = np.float32(self.oscillation_index * L)
        # Component numbers and ranks in int16: the (K x voxels) comparison that masks the
        # components beyond each voxel's rank is 6x faster than in int64.
        self._component_order = np.arange(self.n_components, dtype=np.int16)[:, None]
        self._ranks16 = self.candidate_ranks.astype(np.int16)

    def _choose(self, coef):
        if self.threshold is not None:
            return super()._choose(coef)
        L, n = self.n_padded, coef.shape[1]
        n_cand = self.candidate_ranks.size
        block = min(n, self.search_block)
        # Peak and oscillation sum of candidates 1.. (candidate 0, the heaviest truncation, is the
        # fallback for voxels oscillating throughout and needs neither).
        peak = np.empty((n_cand - 1, n), dtype=np.float32)
        osc = np.empty((n_cand - 1, n), dtype=np.float32)
        # Work arrays of one block, reused by the next: the (voxels x 2L-2) Fortran array that BLAS
        # accumulates into is the (2L-2 x voxels) time-major array of the residue and its second
        # difference; and the absolute second differences.
        work_memory = np.empty(block * (2 * L - 2), dtype=np.float32)
        absolute_memory = np.empty(block * (L - 2), dtype=np.float32)
        for first in range(0, n, block):
            part = slice(first, first + block)
            # Contiguous, so that part_coef[start:rank].T is a Fortran array BLAS takes as is.
            part_coef = np.ascontiguousarray(coef[:, part])
            m = part_coef.shape[1]
            work = work_memory[: m * (2 * L - 2)].reshape((m, 2 * L - 2), order="F")
            residue, second = work.T[:L], work.T[L:]
            absolute = absolute_memory[: m * (L - 2)].reshape(L - 2, m)
            start = 0
            for k, (rank, components) in enumerate(zip(self.candidate_ranks, self._blocks)):
                # work (+)= coef[start:rank].T @ components, in place (beta 0: the first candidate
                # overwrites the previous block's values).
                sgemm(1.0, part_coef[start:rank].T, components, beta=float(k > 0), c=work,
                      overwrite_c=1)
                start = rank
                if k > 0:
                    np.maximum.reduce(residue, axis=0, out=peak[k - 1, part])
                    np.add.reduce(np.abs(second, out=absolute), axis=0, out=osc[k - 1, part])
        # Lightest candidate whose oscillation index is within the target (Wu et al. 2003), else 0.
        ok = osc <= self._limit * np.maximum(peak, 0)
        index = (ok * np.arange(1, n_cand, dtype=np.int16)[:, None]).max(axis=0, initial=0)
        keep = self._component_order < self._ranks16[index]
        # In place: coef is the chunk's own projection (_fit_chunk).
        return np.multiply(coef, keep, out=coef), self.candidate_thresholds[index]


class CircularSVD(BlockCirculantSVD):
    """Block-circulant SVD with one global truncation threshold ("cSVD", Wu et al. 2003, Magn
    Reson Med 50:164): delay-insensitive like oSVD, without the per-voxel search.

    Parameters
    ----------
    aif, frame_times : array_like, shape (T,)
    threshold : float
        Relative truncation threshold, default ``CSVD_THRESHOLD`` (0.1).
    dt : float, optional
        Grid step (s) for irregular timing.
    """

    def __init__(self, aif, frame_times, threshold: float = CSVD_THRESHOLD,
                 dt: float | None = None):
        super().__init__(aif, frame_times, threshold=threshold, dt=dt)


class TikhonovSVD(_SVDDeconvolution):
    """Block-circulant Tikhonov deconvolution with a per-voxel, data-driven parameter.

    Zeroth-order Tikhonov regularisation minimises ``||A r - c||^2 + lambda^2 ||r||^2``; in the SVD
    of the block-circulant matrix (Wu et al. 2003) its solution weighs the components by the filter
    factors ``s^2 / (s^2 + lambda^2)`` (Hansen 1998, Rank-deficient and discrete ill-posed
    problems, SIAM).
    Applied to bolus tracking by Calamante et al. 2003 (Magn Reson Med 50:1237, L-curve) and
    Sourbron et al. 2004 (Magn Reson Med 52:209, choice of the parameter) and 2007 (Phys Med Biol
    52:429). ``lambda`` is chosen per voxel by

    - ``"gcv"``: the minimum of generalised cross-validation (Golub, Heath & Wahba 1979,
      Technometrics 21:215) ``G = ||A r - c||^2 / trace(I - A A#)^2``; or
    - ``"lcurve"``: the point of largest curvature of ``(log ||A r - c||, log ||r||)``
      (Hansen 1992, SIAM Rev 34:561; Hansen & O'Leary 1993).

    Both norms are sums over components of ``b_i^2 = (u_i . c)^2`` with weights that depend only on
    ``lambda``, so the criterion for a whole grid of ``lambda`` (``TIKHONOV_LAMBDAS``) and a chunk
    of voxels is one matrix product; the grid minimum (or maximum) is refined by a parabola in
    ``log lambda``.

    Parameters
    ----------
    aif, frame_times : array_like, shape (T,)
        AIF (baseline 0) and frame times in seconds.
    criterion : {"lcurve", "gcv"}
        Default ``TIKHONOV_DEFAULT_CRITERION`` ("lcurve").
    lambdas : sequence of float
        Grid of ``lambda`` relative to the largest singular value, increasing and geometric.
    dt : float, optional
        Grid step (s) for irregular timing.
    """

    def __init__(self, aif, frame_times, criterion: str = TIKHONOV_DEFAULT_CRITERION,
                 lambdas=TIKHONOV_LAMBDAS,
                 dt: float | None = None):
        super().__init__(aif, frame_times, dt)
        if criterion not in TIKHONOV_CRITERIA:
            raise DataError(f"Tikhonov criterion must be one of {TIKHONOV_CRITERIA}, "
                            f"got {criterion!r}")
        grid = np.asarray(lambdas, dtype=float)
        ratios = grid[1:] / grid[:-1]
        if grid.size < 3 or np.any(grid <= 0) or not np.allclose(ratios, ratios[0], rtol=1e-6) \
                or ratios[0] <= 1:
            raise DataError("Tikhonov lambdas must be >= 3 positive values on an increasing "
                            "geometric grid")
        self.criterion = criterion
        self.lambdas = grid
        self._log_step = float(np.log(ratios[0]))
        self._setup_basis(self.n_padded)
        s = self.singular_values
        lam = grid[:, None] * s[0]
        phi = s[None, :] ** 2 / (s[None, :] ** 2 + lam**2)                   # (m, L) filters
        # Residual weights (1 - phi)^2 and solution weights (phi / s)^2, applied to b^2.
        weights = np.concatenate([(1.0 - phi) ** 2, (phi / s[None, :]) ** 2], axis=0)
        self._weights_t = np.ascontiguousarray(weights.T, dtype=np.float32)  # (L, 2m)
        self._trace = (1.0 - phi).sum(axis=1)                                # (m,)

    def _choose(self, coef):
        m = self.lambdas.size
        sq = (coef * coef).T                                    # (n, L) view, Fortran order
        norms = np.maximum(sq @ self._weights_t, np.finfo(np.float32).tiny).astype(float)
        log_res = 0.5 * np.log(norms[:, :m])
        if self.criterion == "gcv":
            score = -(2.0 * log_res - 2.0 * np.log(self._trace)[None, :])   # maximise -log G
        else:
            log_sol = 0.5 * np.log(norms[:, m:])
            x1, y1 = np.gradient(log_res, axis=1), np.gradient(log_sol, axis=1)
            x2, y2 = np.gradient(x1, axis=1), np.gradient(y1, axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                score = (x1 * y2 - x2 * y1) / (x1**2 + y1**2) ** 1.5
            score = np.where(np.isfinite(score), score, -np.inf)
            score[:, [0, -1]] = -np.inf      # one-sided differences: no corner at the grid ends
        j = np.argmax(score, axis=1)
        i = np.arange(j.size)
        inner = (j > 0) & (j < m - 1)
        jp, jn = np.clip(j - 1, 0, m - 1), np.clip(j + 1, 0, m - 1)
        off = np.where(inner, parabolic_offset(score[i, jp], score[i, j], score[i, jn]), 0.0)
        off = np.where(np.isfinite(off), off, 0.0)
        lam_rel = self.lambdas[j] * np.exp(off * self._log_step)
        return self._filtered(coef, lam_rel), lam_rel

    def _filtered(self, coef, param):
        s = self.singular_values[:, None].astype(np.float32)
        lam = (np.asarray(param, dtype=np.float32) * s[0])[None, :]
        return coef * (s * s / (s * s + lam * lam))


class SVDFit(PerfusionFit):
    """Result of an SVD model's ``fit`` for N curves: the perfusion parameters of
    :class:`~strokeperf.deconvolution.base.PerfusionFit`, CBV from the measured curve's area.

    Attributes
    ----------
    regularisation : ndarray (N,)
        Per-voxel regularisation, relative to the largest singular value: the truncation
        threshold (truncated SVD) or ``lambda`` (Tikhonov).
    """

    def __init__(self, model, residue_peak, tmax, ttp, area_ratio, regularisation,
                 curves=None, chunk_size: int = DEFAULT_CHUNK_SIZE):
        super().__init__(model, residue_peak, tmax, ttp, area_ratio)
        self.regularisation = regularisation
        self._residue_inputs = (curves, chunk_size)      # to recompute the residue on request
        self._residue = None

    @property
    def residue(self) -> np.ndarray:
        """Flow-scaled residue ``F R(t)`` (N, T_uniform) float32 in 1/s on ``model.times``.

        Recomputed from the curves on first access (the fit itself only keeps its peak and time).
        """
        if self._residue is None:
            curves, chunk_size = self._residue_inputs
            self._residue = self.model.residue(curves, self.regularisation, chunk_size)
        return self._residue
