"""Unit tests of what the drift page says about sensitive features (:mod:`dashboard.privacy`)."""

from __future__ import annotations

import doctest
import os
from pathlib import Path

import pytest
import yaml

from dashboard import privacy
from dashboard.privacy import WITHHELD_NOTE, publication
from detectors.spec import FeatureSpec

NOISED = FeatureSpec(name="income", kind="numeric", sensitive=True, dp_epsilon=0.5)
WITHHELD = FeatureSpec(name="postcode", kind="categorical", sensitive=True, dp_epsilon=None)
PLAIN = FeatureSpec(name="age", kind="numeric")


def test_doctests() -> None:
    assert doctest.testmod(privacy).failed == 0


@pytest.mark.parametrize(
    ("spec", "noised", "eps", "status", "note"),
    [
        (NOISED, False, None, "noised", "noised (differential privacy, ε = 0.5)"),  # config only (no point yet)
        (NOISED, True, 0.5, "noised", "noised (differential privacy, ε = 0.5)"),
        (NOISED, True, 2.0, "noised", "noised (differential privacy, ε = 2)"),  # what was published wins
        (None, True, 0.25, "noised", "noised (differential privacy, ε = 0.25)"),  # no config: the point says it
        (None, True, None, "noised", "noised (differential privacy, ε = ?)"),
        (WITHHELD, False, None, "withheld", WITHHELD_NOTE),
        (PLAIN, False, None, "plain", None),
        (None, False, None, "plain", None),
    ],
)
def test_publication(spec: FeatureSpec | None, noised: bool, eps: float | None, status: str, note: str | None) -> None:
    pub = publication(spec, noised=noised, epsilon=eps)
    assert pub.status == status and pub.note() == note


def test_feature_specs_from_the_monitor_config(tmp_path: Path) -> None:
    cfg = tmp_path / "monitors.yaml"
    cfg.write_text(
        yaml.safe_dump({"models": [{"model_id": "m", "features": [f.model_dump() for f in (NOISED, WITHHELD, PLAIN)]}]})
    )
    specs = privacy.feature_specs(cfg, "m")
    assert specs["income"].dp_epsilon == 0.5 and specs["postcode"].dp_epsilon is None and not specs["age"].sensitive
    assert privacy.feature_specs(cfg, "other") == {}
    # a changed file is read again (path + modification time)
    cfg.write_text(yaml.safe_dump({"models": [{"model_id": "m", "features": [PLAIN.model_dump()]}]}))
    st = cfg.stat()
    os.utime(cfg, (st.st_atime, st.st_mtime + 5))
    assert set(privacy.feature_specs(cfg, "m")) == {"age"}


def test_unreadable_config_costs_only_the_notes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert privacy.feature_specs(None, "m") == {}
    assert privacy.feature_specs(tmp_path / "missing.yaml", "m") == {}
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [{model_id: m}]\n")  # no features: invalid
    with caplog.at_level("WARNING", logger="dashboard.privacy"):
        assert privacy.feature_specs(bad, "m") == {}
    assert "cannot read the monitor config" in caplog.text
