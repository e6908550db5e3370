"""Attack traffic for the demo and the adversarial benchmark: evasion, extraction, benign shift.

Three kinds of traffic a monitor should tell apart (``docs/adversarial.md``):

* **evasion** (:func:`evasion`) — natural inputs pushed across the decision
  boundary of the deployed classifier by iterative gradient-sign steps on its
  decision function (basic iterative method, Kurakin et al. 2017; the gradient
  by central finite differences, so any scikit-learn classifier works). Each
  row stops once its predicted class changed (plus ``overshoot`` steps): the
  smallest perturbation that evades, which leaves it near the boundary and
  usually off the data manifold.
* **extraction** (:class:`ExtractionAttack`) — one client issuing synthetic
  probing queries to copy the model: Papernot et al.'s Jacobian-based dataset
  augmentation (``jbda``: a substitute softmax regression trained on the
  oracle's answers, new points ``x + λ·sign(∇ substitute)`` of every point so
  far, where the substitute is a softmax regression and the Jacobian that of its
  probability for the oracle's label; points already queried are not sent
  again), Tramèr et al.'s random-sign variant (``random-sign``), or a Gaussian
  random walk from the seeds (``walk``).
* **benign shift** (:func:`subpopulation_sample`) — the normal clients' traffic
  moves to a natural subpopulation (e.g. only wines with above-median alcohol),
  with the same measurement noise as the normal stream: data drift, but no
  attack.

Steps are in units of each feature's standard deviation (``scale``), so one
step size means the same thing for every feature.

The demo scenarios ``evasion``, ``extraction`` and ``benign-shift`` (registered
at the end of this module, which :mod:`streams.devstack.demo` imports) wrap them:
``driftwatch demo --scenario evasion:at=60`` etc.

>>> import numpy as np
>>> from sklearn.linear_model import LogisticRegression
>>> rng = np.random.default_rng(0)
>>> X = np.vstack([rng.normal(-1, 1, (200, 2)), rng.normal(1, 1, (200, 2))])
>>> clf = LogisticRegression().fit(X, [0] * 200 + [1] * 200)
>>> r = evasion(clf, X[:50], scale=np.ones(2), step=0.05)
>>> bool(r.flipped.mean() > 0.9), bool((clf.predict(r.X[r.flipped]) != clf.predict(X[:50][r.flipped])).all())
(True, True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from streams.devstack.models import DemoModel
from streams.devstack.scenarios import (
    Scenario,
    TickBatch,
    param,
    register_scenario,
    require_numeric_inputs,
    shift_inputs,
)

__all__ = [
    "BENIGN_SHIFTS",
    "EXTRACTION_STRATEGIES",
    "EvasionResult",
    "ExtractionAttack",
    "benign_shift_sample",
    "decision_gradient",
    "decision_scores",
    "evasion",
    "subpopulation_rows",
    "subpopulation_sample",
]

EXTRACTION_STRATEGIES = ("jbda", "random-sign", "walk")


# ============================================================================ evasion
def decision_scores(estimator: Any, X: np.ndarray) -> np.ndarray:
    """Per-class scores (n, k): ``decision_function`` if it has one, else log-probabilities."""
    X = np.asarray(X, dtype=np.float64)
    if hasattr(estimator, "decision_function"):
        s = np.asarray(estimator.decision_function(X), dtype=np.float64)
        if s.ndim == 1:  # binary: one score for class 1
            s = np.column_stack([-s / 2.0, s / 2.0])
        return s
    p = np.asarray(estimator.predict_proba(X), dtype=np.float64)
    return np.log(np.clip(p, 1e-12, 1.0))


def decision_gradient(estimator: Any, X: np.ndarray, toward: np.ndarray, away: np.ndarray, h: np.ndarray) -> np.ndarray:
    """∂(score[toward] − score[away]) / ∂x per row, by central differences of step ``h`` (per feature).

    One call of the estimator on ``2·n·d`` rows: vectorised over rows and features.
    """
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    eye = np.eye(d) * np.asarray(h, dtype=np.float64)[None, :]
    pts = np.concatenate([X[:, None, :] + eye[None], X[:, None, :] - eye[None]], axis=1).reshape(-1, d)
    s = decision_scores(estimator, pts).reshape(n, 2 * d, -1)
    obj = (
        np.take_along_axis(s, np.asarray(toward)[:, None, None], axis=2)
        - np.take_along_axis(s, np.asarray(away)[:, None, None], axis=2)
    )[:, :, 0]  # (n, 2d)
    return (obj[:, :d] - obj[:, d:]) / (2.0 * eye.diagonal()[None, :])


@dataclass(frozen=True)
class EvasionResult:
    """Perturbed rows, whether each one's predicted class changed, and after how many steps."""

    X: np.ndarray
    flipped: np.ndarray  # bool
    steps: np.ndarray  # int: steps taken


def evasion(
    estimator: Any,
    X: np.ndarray,
    *,
    scale: np.ndarray,
    step: float = 0.05,
    max_steps: int = 60,
    overshoot: int = 0,
    lo: np.ndarray | None = None,
    hi: np.ndarray | None = None,
    finish: Callable[[np.ndarray], np.ndarray] | None = None,
) -> EvasionResult:
    """Untargeted evasion by gradient-sign steps toward the runner-up class (see module docstring).

    ``scale``: per-feature step unit (e.g. the standard deviations); ``lo``/``hi`` clip
    to valid values; ``finish`` post-processes every step (e.g. rounding), so the
    result is what a client would actually send.
    """
    X = np.array(X, dtype=np.float64, copy=True)
    n = X.shape[0]
    scale = np.asarray(scale, dtype=np.float64)
    s0 = decision_scores(estimator, X)
    order = np.argsort(-s0, axis=1)
    start, target = order[:, 0], order[:, 1]
    steps = np.zeros(n, dtype=np.int64)
    flipped = np.zeros(n, dtype=bool)
    extra = np.zeros(n, dtype=np.int64)
    active = np.ones(n, dtype=bool)
    h = 1e-3 * scale
    for _ in range(int(max_steps)):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        g = decision_gradient(estimator, X[idx], target[idx], start[idx], h)
        Xi = X[idx] + step * scale[None, :] * np.sign(g)
        if lo is not None or hi is not None:
            Xi = np.clip(Xi, lo if lo is not None else -np.inf, hi if hi is not None else np.inf)
        if finish is not None:
            Xi = finish(Xi)
        X[idx] = Xi
        steps[idx] += 1
        now = decision_scores(estimator, Xi).argmax(axis=1) != start[idx]
        newly = now & ~flipped[idx]
        flipped[idx[newly]] = True
        extra[idx[now & ~newly]] += 1
        done = now & (extra[idx] >= overshoot)
        active[idx[done]] = False
    final = decision_scores(estimator, X).argmax(axis=1) != start
    return EvasionResult(X=X, flipped=final, steps=steps)


# ============================================================================ extraction
class ExtractionAttack:
    """One client's synthetic probing queries, produced on demand with :meth:`take`.

    ``oracle(X) -> labels`` is the deployed model (the attacker sees its answers);
    ``seeds`` are the few natural inputs the attacker starts from. ``jbda`` rounds
    augment every point so far (the set doubles each round; capped at
    ``max_set`` points by random subsampling, as Papernot et al.'s reservoir).
    """

    def __init__(
        self,
        oracle: Callable[[np.ndarray], np.ndarray],
        seeds: np.ndarray,
        *,
        scale: np.ndarray,
        strategy: str = "jbda",
        step: float = 0.1,
        rng: np.random.Generator | None = None,
        finish: Callable[[np.ndarray], np.ndarray] | None = None,
        max_set: int = 2048,
    ) -> None:
        if strategy not in EXTRACTION_STRATEGIES:
            raise ValueError(f"unknown extraction strategy {strategy!r}; known: {', '.join(EXTRACTION_STRATEGIES)}")
        self.oracle = oracle
        self.scale = np.asarray(scale, dtype=np.float64)
        self.strategy = strategy
        self.step = float(step)
        self.rng = rng or np.random.default_rng()
        self.finish = finish
        self.max_set = int(max_set)
        seeds = np.asarray(seeds, dtype=np.float64)
        self.S = seeds.copy()  # the attacker's substitute training set
        self.walkers = seeds.copy()
        self.pending = [seeds.copy()]  # queries not yet handed out
        self.sent = 0
        self._seen: set[bytes] = {r.tobytes() for r in np.ascontiguousarray(seeds, dtype=np.float64)}

    def _round(self) -> np.ndarray:
        S = self.S
        if self.strategy == "walk":
            noise = self.rng.normal(size=self.walkers.shape) / np.sqrt(self.walkers.shape[1])
            new = self._finish(self.walkers + self.step * self.scale * noise)
            self.walkers = new.copy()
            return new
        if self.strategy == "jbda":
            new = self._finish(S + self.step * self.scale * np.sign(self._substitute_gradient(S)))
            new = self._fresh(new)
        else:
            new = np.empty((0, S.shape[1]))
        if new.shape[0] == 0:  # random-sign, or every Jacobian step landed on a known point
            new = self._fresh(self._finish(S + self.step * self.scale * self.rng.choice([-1.0, 1.0], size=S.shape)))
        S = np.vstack([S, new])
        if S.shape[0] > self.max_set:
            S = S[self.rng.choice(S.shape[0], self.max_set, replace=False)]
        self.S = S
        return new

    def _finish(self, X: np.ndarray) -> np.ndarray:
        return self.finish(X) if self.finish is not None else X

    def _fresh(self, X: np.ndarray) -> np.ndarray:
        """Rows not queried before (an attacker learns nothing from asking twice)."""
        keys = [r.tobytes() for r in np.ascontiguousarray(X, dtype=np.float64)]
        keep = np.zeros(X.shape[0], dtype=bool)
        for i, k in enumerate(keys):
            if k not in self._seen:
                self._seen.add(k)
                keep[i] = True
        return X[keep]

    def _substitute_gradient(self, S: np.ndarray) -> np.ndarray:
        """Papernot's Jacobian: ∂ p_substitute(oracle label | x) / ∂x, for a softmax substitute.

        For a multinomial logistic regression ``p = softmax(W x + b)`` that is
        ``p_y (W_y − Σ_c p_c W_c)``: it varies with x, unlike the logit gradient ``W_y``.
        """
        y = np.asarray(self.oracle(S))
        classes, yi = np.unique(y, return_inverse=True)
        if classes.shape[0] < 2:
            return self.rng.normal(size=S.shape)
        mu = S.mean(axis=0)
        Zs = (S - mu) / self.scale
        W, b = _fit_softmax(Zs, yi, classes.shape[0])
        P = _softmax(Zs @ W.T + b)
        W = W / self.scale[None, :]  # ∂ logit / ∂ x in input units
        Py = P[np.arange(S.shape[0]), yi]
        return Py[:, None] * (W[yi] - P @ W)

    def take(self, k: int) -> np.ndarray:
        """The next ``k`` queries."""
        out, have = [], 0
        while have < k:
            if not self.pending:
                self.pending.append(self._round())
            head = self.pending[0]
            need = k - have
            out.append(head[:need])
            have += min(need, head.shape[0])
            if head.shape[0] > need:
                self.pending[0] = head[need:]
            else:
                self.pending.pop(0)
        self.sent += k
        return np.vstack(out) if out else np.empty((0, self.S.shape[1]))


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _fit_softmax(
    Z: np.ndarray, y: np.ndarray, k: int, iters: int = 200, lr: float = 0.5, l2: float = 1e-3
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression by full-batch gradient descent (the attacker's substitute).

    Small and dependency-free: the attacker refits it every augmentation round.
    """
    n, d = Z.shape
    W = np.zeros((k, d))
    b = np.zeros(k)
    Y = np.eye(k)[y]
    for _ in range(iters):
        G = (_softmax(Z @ W.T + b) - Y) / n
        W -= lr * (G.T @ Z + l2 * W)
        b -= lr * G.sum(axis=0)
    return W, b


# ============================================================================ benign shift
def subpopulation_rows(X: np.ndarray, column: int, quantile: float = 0.5, above: bool = True) -> np.ndarray:
    """Indices of the rows whose ``column`` is at or above (below) its ``quantile``."""
    col = np.asarray(X, dtype=np.float64)[:, column]
    q = np.quantile(col, quantile)
    idx = np.flatnonzero(col >= q if above else col <= q)
    if idx.size == 0:
        raise ValueError("the subpopulation is empty")
    return idx


def subpopulation_sample(
    model: DemoModel, rng: np.random.Generator, n: int, feature: str, quantile: float = 0.5, above: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` inputs (and their true targets) of a demo model's subpopulation, generated like its normal traffic.

    Same smoothed bootstrap as :meth:`streams.devstack.models.DemoModel.sample` (a row plus the
    model's jitter, discrete inputs kept, clipped and rounded), restricted to the rows
    of the subpopulation.
    """
    rows = subpopulation_rows(model.X, model.index(feature), quantile, above)
    idx = rows[rng.integers(0, rows.size, n)]
    X = model.X[idx] + rng.normal(0.0, 1.0, (n, model.n_inputs)) * (model.jitter * model.std)
    X[:, model.discrete] = model.X[idx][:, model.discrete]
    return model.finish_inputs(X), model.y[idx]


#: Benign shifts that must not raise an attack flag (``driftwatch bench adversarial``, tests):
#: kind -> what happens to the normal clients' traffic.
BENIGN_SHIFTS: dict[str, str] = {
    "demo-drift": "the demo's data drift (`driftwatch up`): the model's default drift inputs +1 std",
    "mean-shift": "three other inputs move by +1.5 std",
    "scale": "every input's spread around its mean grows by half (x1.5)",
    "toward-boundary": "every input moves 40% of the way from its predicted class's centroid toward the "
    "runner-up's: natural covariate shift toward the decision boundary",
    "new-segment": "a segment grows: 70% of the traffic is one cultivar / the top BMI quarter (prior shift)",
    "seasonal": "a slow seasonal cycle: three inputs swing by +-1.5 std over the shifted windows",
    "subpopulation": "the traffic moves to a natural subpopulation (above-median alcohol / BMI)",
    "unusual-client": "one heavy client (20% of the traffic) sends the new segment's mix (70% one cultivar / "
    "the top BMI quarter); everyone else is unchanged",
}

_MEAN_SHIFT_INPUTS = {"wine": ["malic_acid", "magnesium", "hue"], "diabetes": ["age", "s1", "s5"]}
_SEASONAL_INPUTS = {"wine": ["alcohol", "flavanoids", "proline"], "diabetes": ["bmi", "s3", "s6"]}
_SEGMENT_FEATURE = {"wine": "alcohol", "diabetes": "bmi"}


def _toward_boundary(model: DemoModel, X: np.ndarray, fraction: float) -> np.ndarray:
    """Move rows ``fraction`` of the way from their predicted class's centroid toward the runner-up's."""
    classes = np.asarray(model.classes, dtype=object)
    cent = np.stack([model.X[model.y == c].mean(axis=0) for c in classes])
    s = decision_scores(model.estimator, X)
    order = np.argsort(-s, axis=1)
    return model.finish_inputs(X + fraction * (cent[order[:, 1]] - cent[order[:, 0]]))


def benign_shift_sample(
    model: DemoModel, kind: str, rng: np.random.Generator, n: int, progress: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` inputs (and true targets) of the normal traffic under the benign shift ``kind``
    (:data:`BENIGN_SHIFTS`; ``progress`` in [0, 1]: how far into the shifted stretch, for
    ``seasonal``). ``unusual-client`` returns the unusual client's traffic (the others' is
    :meth:`~streams.devstack.models.DemoModel.sample`). Every kind is natural data — the model's own
    dataset, resampled with its noise — moved as a whole: data drift, no attack.
    """
    if kind not in BENIGN_SHIFTS:
        raise ValueError(f"unknown benign shift {kind!r}; known: {', '.join(BENIGN_SHIFTS)}")
    feature = _SEGMENT_FEATURE.get(model.model_id, model.inputs[0])
    if kind == "subpopulation":
        return subpopulation_sample(model, rng, n, feature, 0.5, True)
    if kind in ("new-segment", "unusual-client"):  # the segment is 70% of the (client's) traffic
        k = int(round(0.7 * n))
        if model.task == "classification":
            rows = np.flatnonzero(model.y == model.classes[1])
            idx = rows[rng.integers(0, rows.size, k)]
            Xs = model.X[idx] + rng.normal(0.0, 1.0, (k, model.n_inputs)) * (model.jitter * model.std)
            Xs[:, model.discrete] = model.X[idx][:, model.discrete]
            Xs, ys = model.finish_inputs(Xs), model.y[idx]
        else:
            Xs, ys = subpopulation_sample(model, rng, k, feature, 0.75, True)
        Xo, yo = model.sample(rng, n - k)
        perm = rng.permutation(n)
        return np.vstack([Xs, Xo])[perm], np.concatenate([np.asarray(ys, dtype=object), np.asarray(yo, dtype=object)])[
            perm
        ]
    X, y = model.sample(rng, n)
    if kind == "demo-drift":
        return shift_inputs(model, X, model.default_drift_features, 1.0), y
    if kind == "mean-shift":
        names = [f for f in _MEAN_SHIFT_INPUTS.get(model.model_id, model.inputs[:3]) if f in model.inputs]
        return shift_inputs(model, X, names, 1.5), y
    if kind == "scale":
        return shift_inputs(model, X, model.inputs, 0.0, 1.5), y
    if kind == "seasonal":
        names = [f for f in _SEASONAL_INPUTS.get(model.model_id, model.inputs[:3]) if f in model.inputs]
        return shift_inputs(model, X, names, 1.5 * np.sin(2 * np.pi * progress)), y
    if model.task != "classification":  # toward-boundary: classifiers only
        raise ValueError("toward-boundary needs a classifier")
    return _toward_boundary(model, X, 0.4), y


# ============================================================================ demo scenarios
def _n_extra(batch: TickBatch, share: float, rng: np.random.Generator) -> int:
    x = len(batch) * share
    return int(np.floor(x) + (rng.random() < x - np.floor(x)))


@register_scenario
class Evasion(Scenario):
    """Evasion attempts: natural inputs perturbed across the demo classifier's decision boundary."""

    name = "evasion"
    help = "a client sends inputs perturbed by gradient-sign steps until the model's prediction flips"
    share: float = param(0.1, "attack events per normal event")
    step: float = param(0.05, "step size in standard deviations per feature")
    max_steps: int = param(60, "give up on a row after this many steps")
    overshoot: int = param(0, "extra steps after the prediction flipped")
    source: str = param("evader-1", "the attacker's client id")

    def check(self, models: dict[str, DemoModel]) -> None:
        self.require(
            self.share >= 0 and self.step > 0 and self.max_steps >= 1 and self.overshoot >= 0,
            "share >= 0, step > 0, max_steps >= 1, overshoot >= 0",
        )

    def on_inputs(self, batch: TickBatch, rng: np.random.Generator) -> None:
        m = batch.model
        if m.task != "classification":
            return
        k = _n_extra(batch, self.share, rng)
        if k == 0 or len(batch) == 0:
            return
        start = batch.X[rng.integers(0, len(batch), k)]
        r = evasion(
            m.estimator,
            start,
            scale=m.std,
            step=self.step,
            max_steps=self.max_steps,
            overshoot=self.overshoot,
            lo=m.lo,
            hi=m.hi,
            finish=m.finish_inputs,
        )
        batch.extend(r.X, source_id=self.source)
        self.count(batch, "evasion_events", k)
        self.count(batch, "flipped", int(r.flipped.sum()))


@register_scenario
class Extraction(Scenario):
    """Model extraction: one client issues synthetic probing queries (PRADA's threat model)."""

    name = "extraction"
    help = "one client issues synthetic probing queries (Jacobian augmentation, random signs or a walk)"
    share: float = param(0.05, "attack queries per normal event")
    strategy: str = param("jbda", "jbda, random-sign or walk")
    step: float = param(0.1, "step size λ in standard deviations per feature")
    seeds: int = param(10, "natural inputs the attacker starts from")
    source: str = param("prober-1", "the attacker's client id")

    def check(self, models: dict[str, DemoModel]) -> None:
        self.require(
            self.strategy in EXTRACTION_STRATEGIES,
            f"unknown strategy {self.strategy!r}; known: {', '.join(EXTRACTION_STRATEGIES)}",
        )
        self.require(self.share >= 0 and self.step > 0 and self.seeds >= 1, "share >= 0, step > 0 and seeds >= 1")

    def setup(self, models: dict[str, DemoModel]) -> None:
        super().setup(models)
        self.attacks: dict[str, ExtractionAttack] = {}

    def on_inputs(self, batch: TickBatch, rng: np.random.Generator) -> None:
        m = batch.model
        k = _n_extra(batch, self.share, rng)
        if k == 0:
            return
        att = self.attacks.get(m.model_id)
        if att is None:
            seeds, _ = m.sample(rng, self.seeds)
            strategy = self.strategy if m.task == "classification" or self.strategy != "jbda" else "random-sign"
            oracle = m.estimator.predict
            att = self.attacks[m.model_id] = ExtractionAttack(
                oracle, seeds, scale=m.std, strategy=strategy, step=self.step, rng=rng, finish=m.finish_inputs
            )
        batch.extend(att.take(k), source_id=self.source)
        self.count(batch, "extraction_queries", k)


@register_scenario
class BenignShift(Scenario):
    """A benign-but-unusual shift: the normal clients' traffic moves to a natural subpopulation."""

    name = "benign-shift"
    help = "normal clients' inputs come from a subpopulation (e.g. above-median alcohol): drift, no attack"
    feature: str | None = param(None, "input defining the subpopulation (default: wine alcohol, diabetes bmi)")
    quantile: float = param(0.5, "cut-off quantile of that input")
    above: bool = param(True, "keep rows at or above the cut-off (else at or below)")
    share: float = param(1.0, "share of the normal events drawn from the subpopulation")
    DEFAULT_FEATURE: ClassVar[dict[str, str]] = {"wine": "alcohol", "diabetes": "bmi"}

    def check(self, models: dict[str, DemoModel]) -> None:
        self.require(0 < self.quantile < 1 and 0 <= self.share <= 1, "quantile in (0, 1) and share in [0, 1]")
        require_numeric_inputs(self, models, [self.feature] if self.feature is not None else [])

    def on_inputs(self, batch: TickBatch, rng: np.random.Generator) -> None:
        m = batch.model
        feature = self.feature or self.DEFAULT_FEATURE.get(m.model_id) or m.inputs[0]
        if feature not in m.inputs or len(batch) == 0:
            return
        replace = np.flatnonzero(rng.random(len(batch)) < self.share)
        if replace.size:
            X, y = subpopulation_sample(m, rng, replace.size, feature, self.quantile, self.above)
            batch.X[replace] = X
            batch.y_true[replace] = y
            self.count(batch, "shifted_events", int(replace.size))
