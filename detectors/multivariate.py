"""Multivariate data drift: joint shifts that no single feature shows.

Per-feature tests miss a change in how features move *together* (a broken
correlation, a rotation, a new cluster whose marginals look familiar). Two
detectors look at whole rows:

* :class:`MMDDrift` — maximum mean discrepancy (Gretton et al. 2012) with a
  Gaussian RBF kernel whose bandwidth is the median heuristic on the
  reference, and a permutation test. The unbiased MMD² estimator and the
  median heuristic are those of alibi-detect's ``MMDDrift``; the p-value is
  the standard permutation p-value ``(1 + #{perm >= obs}) / (1 + P)``
  (alibi-detect reports ``#{perm >= obs} / P``, which can be 0). All ``P``
  permutations cost one matrix product ``K @ A`` (``A`` the n×P matrix of
  permuted group indicators), and both samples are subsampled to
  ``max_ref`` / ``max_test`` rows so the cost per window is bounded.
* :class:`PCADrift` — reconstruction error after PCA (NannyML's "data
  reconstruction" drift): fit the principal components that explain
  ``variance`` of the standardised reference; a joint change pushes rows off
  that subspace and raises the mean reconstruction error (a collapse lowers it).
  The components are fitted on one half of the reference and the error's
  sampling distribution is measured on the other half (out-of-sample, so the
  threshold is not optimistic); the window's mean error is compared with it by
  Welch's t-test (two-sided) — the p-value is ``scipy.stats.ttest_ind``'s.

Rows are encoded by :class:`RowEncoder`: numeric features standardised with the
reference's mean and standard deviation, missing values put at the reference
mean (0 after scaling; data quality reports them), categorical features one-hot
over the reference's most frequent categories (rest "other").

Engines: alibi-detect's ``MMDDrift`` needs TensorFlow or PyTorch (and KeOps
needs PyTorch), which driftwatch does not install, and alibi-detect has no PCA
detector. So both detectors here are native numpy/scipy; ``engine="alibi"``
for MMD uses alibi-detect only when one of those backends is importable and
otherwise raises :class:`EngineUnavailable`. Tests check the native MMD against
an independent computation (scikit-learn's RBF kernel and a naive permutation
loop) and PCA against scikit-learn's PCA and scipy's t-test.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> cov = [[1, 0.9], [0.9, 1]]
>>> ref = rng.multivariate_normal([0, 0], cov, 500)
>>> flipped = rng.multivariate_normal([0, 0], [[1, -0.9], [-0.9, 1]], 500)  # same marginals
>>> MMDDrift(ref, n_permutations=100, seed=0).test(flipped).drift
True
>>> PCADrift(ref, seed=0).test(flipped).drift
True
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from detectors.errors import EngineUnavailable  # re-exported: raised when alibi's MMD cannot run
from detectors.frame import Frame
from detectors.values import not_none

__all__ = [
    "EngineUnavailable",
    "MMDDrift",
    "MultivariateResult",
    "PCADrift",
    "RowEncoder",
    "median_sigma",
    "mmd2_unbiased",
    "rbf_kernel",
]

MULTIVARIATE_FEATURE = "__multivariate__"
"""``feature`` tag value of multivariate drift records."""


@dataclass(frozen=True, slots=True)
class MultivariateResult:
    """Verdict of a multivariate test on one window.

    ``statistic`` is MMD² (mmd) or the window's mean reconstruction error (pca);
    ``threshold`` is the statistic's critical value at ``p_val`` (the
    permutation quantile for MMD, the two-sided bound nearest to the statistic
    for PCA); ``reference_value`` the statistic's expectation under no drift.
    """

    detector: str
    statistic: float
    p_value: float
    threshold: float
    p_val: float
    drift: bool
    n_ref: int
    n_window: int
    reference_value: float
    engine: str = "native"


# -- encoding ------------------------------------------------------------------------------


class RowEncoder:
    """Turn a :class:`Frame`'s features into standardised rows (see module docstring)."""

    def __init__(
        self,
        numeric: Sequence[str],
        categorical: Sequence[str] = (),
        max_categories: int = 10,
    ) -> None:
        self.numeric = list(numeric)
        self.categorical = list(categorical)
        self.max_categories = int(max_categories)
        self.mean = np.zeros(len(self.numeric))
        self.scale = np.ones(len(self.numeric))
        self.categories: dict[str, np.ndarray] = {}
        if not self.numeric and not self.categorical:
            raise ValueError("multivariate drift needs at least one feature")

    def fit(self, frame: Frame) -> RowEncoder:
        """Learn means, scales and categories from the reference frame."""
        for j, name in enumerate(self.numeric):
            col = np.asarray(frame.numeric.get(name, np.full(len(frame), np.nan)), dtype=np.float64)
            ok = col[~np.isnan(col)]
            if ok.size:
                self.mean[j] = ok.mean()
                sd = ok.std()
                self.scale[j] = sd if sd > 0 else 1.0
        for name in self.categorical:
            cats = frame.categorical.get(name)
            if cats is None:
                self.categories[name] = np.empty(0, dtype=object)
                continue
            present = cats[not_none(cats)]
            vals, counts = np.unique(present.astype(str), return_counts=True)
            order = np.lexsort((vals, -counts))[: self.max_categories]
            self.categories[name] = vals[order]
        return self

    @property
    def width(self) -> int:
        return len(self.numeric) + sum(len(c) + 1 for c in self.categories.values())

    def transform(self, frame: Frame) -> np.ndarray:
        """Rows of ``frame`` as a float matrix (n, width); missing values at the reference mean."""
        n = len(frame)
        parts = []
        if self.numeric:
            x = np.column_stack(
                [np.asarray(frame.numeric.get(k, np.full(n, np.nan)), dtype=np.float64) for k in self.numeric]
            ).reshape(n, len(self.numeric))
            z = (x - self.mean) / self.scale
            parts.append(np.where(np.isnan(z), 0.0, z))
        for name in self.categorical:
            cats = self.categories.get(name, np.empty(0, dtype=object))
            col = frame.categorical.get(name)
            onehot = np.zeros((n, cats.shape[0] + 1))
            if col is not None and n:
                s = np.array(["" if v is None else str(v) for v in col], dtype=object)
                known = np.zeros(n, dtype=bool)
                for i, c in enumerate(cats):  # at most max_categories columns, vectorised over rows
                    hit = s == c
                    onehot[:, i] = hit
                    known |= hit
                present = np.array([v is not None for v in col], dtype=bool)
                onehot[:, -1] = present & ~known
            # scaled so that one category changing moves a row by distance 1
            parts.append(onehot / np.sqrt(2.0))
        return np.hstack(parts) if parts else np.zeros((n, 0))


# -- MMD -----------------------------------------------------------------------------------


def _sq_dists(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xx = np.einsum("ij,ij->i", x, x)
    yy = np.einsum("ij,ij->i", y, y)
    d = xx[:, None] + yy[None, :] - 2.0 * (x @ y.T)
    return np.maximum(d, 0.0)


def median_sigma(x: np.ndarray, y: np.ndarray | None = None) -> float:
    """Median-heuristic bandwidth: ``sqrt(median(||a-b||²) / 2)`` over distinct pairs.

    Matches alibi-detect's ``sigma_median`` on the pooled sample (the
    ``n`` zeros of the diagonal are skipped).
    """
    z = x if y is None else np.vstack([x, y])
    d = _sq_dists(z, z)
    n = z.shape[0]
    flat = np.sort(d, axis=None)
    n_median = n + (d.size - n) // 2 - 1
    sigma = float(np.sqrt(0.5 * flat[n_median]))
    return sigma if sigma > 0 else 1.0


def rbf_kernel(x: np.ndarray, y: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian RBF kernel ``exp(-||x - y||² / (2 sigma²))``."""
    return np.exp(-_sq_dists(x, y) / (2.0 * sigma * sigma))


def mmd2_unbiased(k_full: np.ndarray, n: int) -> float:
    """Unbiased MMD² from the pooled kernel matrix (first ``n`` rows reference, rest test)."""
    m = k_full.shape[0] - n
    kxx = k_full[:n, :n]
    kyy = k_full[n:, n:]
    kxy = k_full[:n, n:]
    sxx = kxx.sum() - np.trace(kxx)
    syy = kyy.sum() - np.trace(kyy)
    return float(sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2.0 * kxy.mean())


def _permuted_mmd2(k_full: np.ndarray, n: int, perms: np.ndarray) -> np.ndarray:
    """Unbiased MMD² under each permutation (rows of ``perms``), vectorised via one matmul."""
    big_n = k_full.shape[0]
    m = big_n - n
    k = k_full.copy()
    np.fill_diagonal(k, 0.0)
    a = np.zeros((big_n, perms.shape[0]))
    a[perms[:, :n].T, np.arange(perms.shape[0])[None, :]] = 1.0  # 1 where a row lands in "reference"
    ka = k @ a
    sxx = np.einsum("ij,ij->j", a, ka)  # a' K a
    row = k.sum(axis=1)
    total = row.sum()
    ar = row @ a  # a' K 1
    sxy = ar - sxx  # a' K (1 - a)
    syy = total - 2.0 * ar + sxx  # (1-a)' K (1-a)
    return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2.0 * sxy / (n * m)


class MMDDrift:
    """MMD two-sample test of a window against the reference (see module docstring).

    ``x_ref``: encoded reference rows (n, d). ``p_val``: test level.
    ``n_permutations``: permutations for the p-value. ``max_ref``/``max_test``:
    rows kept (uniformly subsampled, seeded) to bound cost at
    O((max_ref + max_test)² · n_permutations). ``sigma``: kernel bandwidth
    (default: median heuristic on the kept reference rows).
    """

    def __init__(
        self,
        x_ref: np.ndarray,
        *,
        p_val: float = 0.05,
        n_permutations: int = 200,
        max_ref: int = 500,
        max_test: int = 500,
        sigma: float | None = None,
        seed: int | None = 0,
        engine: str = "native",
    ) -> None:
        x_ref = np.asarray(x_ref, dtype=np.float64)
        if x_ref.ndim != 2 or x_ref.shape[0] < 4:
            raise ValueError(f"x_ref must be (n >= 4, d), got shape {x_ref.shape}")
        if np.isnan(x_ref).any():
            raise ValueError("x_ref holds NaN: encode rows with RowEncoder first")
        if not 0 < p_val < 1:
            raise ValueError("p_val must be in (0, 1)")
        if n_permutations < 10:
            raise ValueError("n_permutations must be >= 10")
        if engine == "alibi":
            _require_alibi_mmd_backend()
        elif engine != "native":
            raise ValueError(f"engine must be 'native' or 'alibi', got {engine!r}")
        self.engine = engine
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.p_val = float(p_val)
        self.n_permutations = int(n_permutations)
        self.max_test = int(max_test)
        if x_ref.shape[0] > max_ref:
            x_ref = x_ref[self.rng.choice(x_ref.shape[0], max_ref, replace=False)]
        self.x_ref = x_ref
        self.sigma = float(sigma) if sigma is not None else median_sigma(x_ref)

    def test(self, x: np.ndarray) -> MultivariateResult:
        """Test one window's encoded rows (m, d)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.x_ref.shape[1]:
            raise ValueError(f"window rows must be (m, {self.x_ref.shape[1]}), got {x.shape}")
        if x.shape[0] < 4:
            raise ValueError("the window needs at least 4 rows for MMD")
        if x.shape[0] > self.max_test:
            x = x[self.rng.choice(x.shape[0], self.max_test, replace=False)]
        if self.engine == "alibi":
            return self._test_alibi(x)
        n = self.x_ref.shape[0]
        z = np.vstack([self.x_ref, x])
        k = rbf_kernel(z, z, self.sigma)
        mmd2 = mmd2_unbiased(k, n)
        perms = np.argsort(self.rng.random((self.n_permutations, z.shape[0])), axis=1)
        null = _permuted_mmd2(k, n, perms)
        p = (1.0 + np.sum(null >= mmd2)) / (1.0 + self.n_permutations)
        thr = float(np.quantile(null, 1 - self.p_val))
        return MultivariateResult(
            detector="mmd",
            statistic=mmd2,
            p_value=float(p),
            threshold=thr,
            p_val=self.p_val,
            drift=bool(p < self.p_val),
            n_ref=n,
            n_window=int(x.shape[0]),
            reference_value=float(np.mean(null)),
            engine="native",
        )

    def _test_alibi(self, x: np.ndarray) -> MultivariateResult:  # pragma: no cover - needs TF/torch
        from alibi_detect.cd import MMDDrift as AlibiMMD

        backend = "pytorch" if importlib.util.find_spec("torch") else "tensorflow"
        det = AlibiMMD(
            self.x_ref.astype(np.float32),
            backend=backend,
            p_val=self.p_val,
            n_permutations=self.n_permutations,
        )
        out = det.predict(x.astype(np.float32))["data"]
        return MultivariateResult(
            detector="mmd",
            statistic=float(out["distance"]),
            p_value=float(out["p_val"]),
            threshold=float(out["distance_threshold"]),
            p_val=self.p_val,
            drift=bool(out["is_drift"]),
            n_ref=self.x_ref.shape[0],
            n_window=int(x.shape[0]),
            reference_value=float("nan"),
            engine="alibi",
        )


def _require_alibi_mmd_backend() -> None:
    if importlib.util.find_spec("torch") is None and importlib.util.find_spec("tensorflow") is None:
        raise EngineUnavailable(
            "alibi-detect's MMDDrift needs PyTorch or TensorFlow, which driftwatch does not install; "
            "use engine='native' (numpy MMD, same estimator and kernel)"
        )


# -- PCA reconstruction --------------------------------------------------------------------


class PCADrift:
    """PCA reconstruction-error drift (see module docstring).

    ``variance``: share of the reference's variance the kept components explain
    (NannyML's default 0.65). ``p_val``: two-sided test level. The
    reference's rows are split in two halves at random (``seed``): components
    from the first, the error's sampling distribution from the second.
    """

    def __init__(self, x_ref: np.ndarray, *, variance: float = 0.65, p_val: float = 0.05, seed: int | None = 0) -> None:
        x_ref = np.asarray(x_ref, dtype=np.float64)
        if x_ref.ndim != 2 or x_ref.shape[0] < 20:
            raise ValueError(f"x_ref must be (n >= 20, d), got shape {x_ref.shape}")
        if np.isnan(x_ref).any():
            raise ValueError("x_ref holds NaN: encode rows with RowEncoder first")
        if not 0 < variance <= 1:
            raise ValueError("variance must be in (0, 1]")
        if not 0 < p_val < 1:
            raise ValueError("p_val must be in (0, 1)")
        self.p_val = float(p_val)
        self.variance = float(variance)
        rng = np.random.default_rng(seed)
        idx = rng.permutation(x_ref.shape[0])
        half = x_ref.shape[0] // 2
        fit, cal = x_ref[idx[:half]], x_ref[idx[half:]]
        self.center = fit.mean(axis=0)
        _, s, vt = np.linalg.svd(fit - self.center, full_matrices=False)
        explained = s * s / max(float(np.sum(s * s)), 1e-300)
        k = int(np.searchsorted(np.cumsum(explained), self.variance - 1e-12) + 1)
        self.n_components = min(k, vt.shape[0])
        self.components = vt[: self.n_components]
        self.explained = float(np.sum(explained[: self.n_components]))
        self.cal_errors = self.errors(cal)
        self.n_ref = int(cal.shape[0])

    def errors(self, x: np.ndarray) -> np.ndarray:
        """Euclidean reconstruction error of each row."""
        c = np.asarray(x, dtype=np.float64) - self.center
        rec = (c @ self.components.T) @ self.components
        return np.sqrt(np.sum((c - rec) ** 2, axis=1))

    def test(self, x: np.ndarray) -> MultivariateResult:
        """Test one window's encoded rows (m, d)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.center.shape[0]:
            raise ValueError(f"window rows must be (m, {self.center.shape[0]}), got {x.shape}")
        if x.shape[0] < 2:
            raise ValueError("the window needs at least 2 rows for PCA drift")
        e = self.errors(x)
        res = stats.ttest_ind(e, self.cal_errors, equal_var=False)
        mean_ref = float(self.cal_errors.mean())
        # the two-sided critical mean error on the side of the observed one
        se = float(np.sqrt(e.var(ddof=1) / e.shape[0] + self.cal_errors.var(ddof=1) / self.n_ref))
        dof = float(res.df) if hasattr(res, "df") else e.shape[0] + self.n_ref - 2
        crit = float(stats.t.ppf(1 - self.p_val / 2, dof)) * se
        stat = float(e.mean())
        thr = mean_ref + crit if stat >= mean_ref else mean_ref - crit
        p = float(res.pvalue) if np.isfinite(res.pvalue) else 1.0
        return MultivariateResult(
            detector="pca",
            statistic=stat,
            p_value=p,
            threshold=thr,
            p_val=self.p_val,
            drift=bool(p < self.p_val),
            n_ref=self.n_ref,
            n_window=int(x.shape[0]),
            reference_value=mean_ref,
            engine="native",
        )
