"""Does one source stand out from the rest of its window? ("someone is probing" vs "the inputs moved")

A population-wide change of the inputs — data drift, a season, a new segment,
traffic pushed toward the decision boundary — moves every client's traffic
alike, so it raises the window's low-margin and off-manifold rates against the
reference (which is what the population tests of
:mod:`detectors.adversarial.outlier` / :mod:`~detectors.adversarial.margin`
measure) but not one client's rate against the others'. An attacker's queries
come from its own client id, so its rate stands out from the rest of the window
*whatever the drift*: the rest of the window is a baseline that moves with the
inputs.

Per source with at least ``min_events`` scored events, the number ``k_j`` of
its ``n_j`` events beyond the calibrated per-event threshold is tested against
the rest of the window with the one-sided Fisher exact test (hypergeometric
tail ``P(X ≥ k_j)``, ``X ~ Hypergeom(N, K, n_j)``: the window's ``N`` events and
``K`` exceedances): exact when the window's events are exchangeable across
sources, which any drift that hits all clients alike keeps. A source also needs
its rate to exceed the rest's by at least ``min_excess`` (an effect-size floor:
benign clients do differ a little in what they send, e.g. one cultivar only).
The component's p-value is the Bonferroni minimum over the tested sources.
Events without a source id count in the rest but are never tested.

>>> import numpy as np
>>> src = np.array(["a"] * 50 + ["b"] * 200 + ["c"] * 250, dtype=object)
>>> exceed = np.r_[np.ones(40, bool), np.zeros(10, bool), np.random.default_rng(0).random(450) < 0.2]
>>> r = source_contrast("low_margin", src, exceed)
>>> r.source, r.p_value < 1e-10, [round(x, 2) for x in (r.rate, r.rest_rate)]
('a', True, [0.8, 0.2])
>>> source_contrast("low_margin", src, np.random.default_rng(1).random(500) < 0.3).p_value > 0.01
True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from detectors.frame import TextGroups

__all__ = ["ContrastResult", "source_contrast"]


@dataclass(frozen=True)
class ContrastResult:
    """One component's source contrast in a window: the most suspicious source and the window p-value."""

    name: str
    n_tested: int  # sources with at least min_events scored events
    p_value: float  # Bonferroni over the tested sources (1.0 when none)
    source: str | None = None  # the source with the smallest p-value (None: none tested)
    n: int = 0  # its scored events
    rate: float = float("nan")  # its exceedance rate
    rest_rate: float = float("nan")  # the rest of the window's rate
    # per tested source: name -> (rate, rest rate, p-value before Bonferroni), for the source records
    per_source: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    @property
    def excess(self) -> float:
        """The suspect's rate minus the rest of the window's."""
        return self.rate - self.rest_rate


def source_contrast(
    name: str,
    sources: np.ndarray | None,
    exceed: np.ndarray,
    *,
    min_events: int = 10,
    min_excess: float = 0.25,
    groups: TextGroups | None = None,
) -> ContrastResult:
    """Test every source's exceedance count against the rest of the window (see module docstring).

    ``sources``: client id per event (object; None = unknown); ``exceed``: bool per event
    (the per-event score beyond its calibrated threshold). Vectorised over sources.
    ``groups``: the rows of ``sources`` grouped by source, when the caller has them (one sort
    of the window's sources shared by every test; :meth:`detectors.frame.Frame.text_groups`).
    """
    exceed = np.asarray(exceed, dtype=bool)
    if sources is None or exceed.size == 0:
        return ContrastResult(name, 0, 1.0)
    sources = np.asarray(sources, dtype=object)
    if sources.shape[0] != exceed.shape[0]:
        raise ValueError(f"{name}: {sources.shape[0]} source ids for {exceed.shape[0]} scored events")
    if groups is None:
        groups = TextGroups.of(sources)
    elif groups.row.shape[0] != exceed.shape[0]:
        raise ValueError(f"{name}: source groups of {groups.row.shape[0]} rows for {exceed.shape[0]} scored events")
    known, names, inv = groups.unique()
    if not known.any():
        return ContrastResult(name, 0, 1.0)
    N, K = int(exceed.size), int(exceed.sum())
    n = np.bincount(inv, minlength=names.size)
    k = np.bincount(inv, weights=exceed[known], minlength=names.size).astype(np.int64)
    test = (n >= min_events) & (n < N)  # a source alone in its window has no rest to compare with
    if not test.any():
        return ContrastResult(name, 0, 1.0)
    names, n, k = names[test], n[test], k[test]
    rate = k / n
    rest = (K - k) / (N - n)
    p = np.where((k > 0) & (rate - rest >= min_excess), stats.hypergeom.sf(k - 1, N, K, n), 1.0)
    i = int(np.argmin(p))
    per = {str(s): (float(a), float(b), float(c)) for s, a, b, c in zip(names, rate, rest, p)}
    return ContrastResult(
        name,
        int(names.size),
        float(min(1.0, names.size * p[i])),
        str(names[i]),
        int(n[i]),
        float(rate[i]),
        float(rest[i]),
        per,
    )
