"""What the drift page says about a sensitive feature's distribution plot.

Features declared ``sensitive`` in the monitor config (``FeatureSpec.sensitive``)
publish their histograms with Laplace noise at ``dp_epsilon`` (differential
privacy), or not at all when ``dp_epsilon`` is null (:mod:`detectors.histograms`,
``docs/reliability.md``). The page must say which, next to the plot.

Two sources, each for what it can tell:

- the stored histogram points: a noised histogram carries ``noised=1`` and its
  ``epsilon`` (what was actually published, whatever the config says now);
- the monitor config the worker runs with (``DRIFTWATCH_MONITORS``, the same
  setting and file as the worker's): a withheld histogram leaves no point at all,
  so only the config can say "withheld" rather than "nothing written yet".

The config is read once per file version (path + modification time); a config
that cannot be read costs only the "withheld" note (the page says no histogram is
stored, as for any feature without one).

>>> spec = FeatureSpec(name="income", kind="numeric", sensitive=True, dp_epsilon=0.5)
>>> publication(spec).note()
'noised (differential privacy, ε = 0.5)'
>>> publication(spec.model_copy(update={"dp_epsilon": None})).note()
'withheld: sensitive feature, no histogram published'
>>> publication(None, noised=True, epsilon=2.0).note()
'noised (differential privacy, ε = 2)'
>>> publication(None).note() is None
True
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dashboard.config import monitor_model
from detectors.spec import FeatureSpec

log = logging.getLogger(__name__)

Status = Literal["plain", "noised", "withheld"]

NOISED_NOTE = "noised (differential privacy, ε = {eps})"
WITHHELD_NOTE = "withheld: sensitive feature, no histogram published"


@dataclass(frozen=True)
class Publication:
    """How a feature's histograms are published: ``plain``, ``noised`` (at ``epsilon``)
    or ``withheld``; ``source`` says what told us (``histogram``, ``config`` or ``none``)."""

    status: Status
    epsilon: float | None = None
    source: str = "none"

    def note(self) -> str | None:
        """The words the page shows next to the distribution plot (None for a plain feature)."""
        if self.status == "withheld":
            return WITHHELD_NOTE
        if self.status == "noised":
            eps = "?" if self.epsilon is None else f"{self.epsilon:g}"
            return NOISED_NOTE.format(eps=eps)
        return None


def publication(spec: FeatureSpec | None, *, noised: bool = False, epsilon: float | None = None) -> Publication:
    """Combine the stored histogram's fields (``noised``, ``epsilon``) with the feature's
    config (``spec``, None when the dashboard cannot read it or the model is not in it).

    The stored point wins for a histogram that exists (it is what was published); the
    config tells a withheld feature, and the ε of a noised one before its first window.
    """
    if noised:
        eps = epsilon if epsilon is not None else (spec.dp_epsilon if spec is not None else None)
        return Publication("noised", eps, "histogram")
    if spec is not None and spec.sensitive:
        if spec.dp_epsilon is None:
            return Publication("withheld", None, "config")
        return Publication("noised", spec.dp_epsilon, "config")
    return Publication("plain", None, "histogram" if spec is None else "config")


def feature_specs(path: Path | str | None, model: str) -> dict[str, FeatureSpec]:
    """The model's features by name from the monitor config at ``path`` ({} when the file
    cannot be read or validated, or the model is not in it; logged once per file version)."""
    m = monitor_model(path, model)
    return {f.name: f for f in m.features} if m is not None else {}
