"""Every page at 1,024 and 1,400 px in a real headless Chromium: nothing a reader needs is cut
or hidden (issue 18's screenshots: "Events / s (latest wi…", "Worst miss…", a "Ref…" button,
two models at the same rate drawn as one line).

``driftwatch dashboard`` serves a fresh database: ``churn`` (drifting) and two models,
``twin_a`` and ``twin_b``, whose windows are identical (same events per second, no invalid
events), so their throughput lines lie exactly on top of each other. Screenshots go to
``test-artifacts/dashboard/layout/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from dashboard import browser, sample
from dashboard import queries as Q
from dashboard.config import PAGES
from detectors import records as R
from detectors.records import Record
from streams.devstack.localstack import LocalStack, settings_env
from tests.dashboard.helpers import chromium, fresh_db, serving

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.slow]  # Chromium over every page: 20-40 s

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard" / "layout"
WIDTHS = (1024, 1400)
TWINS = ("twin_a", "twin_b")

# Text that is cut: an element (or one inside it) whose content is wider than its box while
# its overflow is not shown — Streamlit's ellipsis ("Worst miss…") and a clipping column alike.
_CUT = """(selector) => {
    const cut = [];
    for (const el of document.querySelectorAll(selector)) {
        if (!el.checkVisibility()) continue;
        for (const d of [el, ...el.querySelectorAll('*')]) {
            const st = getComputedStyle(d);
            const hides = st.overflowX !== 'visible' || st.textOverflow === 'ellipsis';
            if (hides && d.scrollWidth > d.clientWidth + 1) { cut.push(el.innerText.trim()); break; }
        }
    }
    return cut;
}"""
METRIC_LABEL = "[data-testid=stMetricLabel]"
BUTTON = "[data-testid=stMain] [data-testid=stButton]"
LINK = "[data-testid=stMain] [data-testid=stPageLink]"
SELECT = "[data-testid=stMain] [data-testid=stSelectbox]"


def _twins(end_ns: int, windows: int = 96, cadence_s: int = 300) -> list[Record]:
    """Two models with the same windows: 50 events/s, none invalid."""
    out = []
    for k in range(windows):
        t = end_ns - (windows - 1 - k) * cadence_s * 1_000_000_000
        for m in TWINS:
            out.append(
                Record(
                    R.WINDOW,
                    {R.T_MODEL: m, R.T_VERSION: "1"},
                    {
                        Q.F_N_EVENTS: 15_000,
                        Q.F_N_INVALID: 0,
                        Q.F_DURATION: float(cadence_s),
                        Q.F_EVENTS_PER_S: 50.0,
                        Q.F_WINDOW_START: t / 1e9 - cadence_s,
                        Q.F_CLOSED_AT: t / 1e9 + 1.0,
                    },
                    t,
                )
            )
    return out


@pytest.fixture(scope="module")
def served(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from streams.settings import Settings

    recs = list(
        sample.sample_records(
            ["churn"], n_features=8, windows=96, drift_feature="f_001", quality_feature="f_002", false_alarms=False
        )
    )
    recs += _twins(max(r.time_ns for r in recs))
    with fresh_db(stack, "layout") as conn:
        sample.write_records(conn, recs)
        env = settings_env(Settings(influx_url=stack.influx_url, influx_db=conn.db))
        env.update(DRIFTWATCH_DASHBOARD_REFRESH_SECONDS="0", DRIFTWATCH_DASHBOARD_AUTH="none")
        env.pop("DRIFTWATCH_DASHBOARD_ACCESS", None)
        with serving(env, tmp_path_factory.mktemp("layout") / "dashboard.log") as base:
            yield base


@pytest.fixture(scope="module", params=WIDTHS, ids=[f"{w}px" for w in WIDTHS])
def page(request: pytest.FixtureRequest, served: str) -> Iterator[object]:
    with chromium(width=request.param, height=900) as p:
        p.dw_width = request.param  # type: ignore[attr-defined]
        yield p


def _open(page, served: str, key: str, query: str = "model=churn&range=24h") -> None:
    page.goto(browser.page_url(served, key, query))
    browser.wait_page(page, PAGES[key][1], 0)
    browser.check_no_exception(page, key)


@pytest.mark.parametrize("key", list(PAGES))
def test_metric_labels_are_whole(served: str, page, key: str) -> None:
    """Fix: metrics sit in a row that wraps (ui.metric_row) instead of equal columns."""
    _open(page, served, key)
    labels = page.locator(METRIC_LABEL)
    assert labels.count() >= 1, key  # the page has its metrics
    assert page.evaluate(_CUT, METRIC_LABEL) == [], f"{key} at {page.dw_width} px"
    browser.screenshot(page, ARTIFACTS / f"{key}-{page.dw_width}.png")


@pytest.mark.parametrize("key", list(PAGES))
def test_refresh_button_and_links_are_whole(served: str, page, key: str) -> None:
    """Fix: the header is a wrapping row and the button is as wide as its label; links and the
    Overview's model picker sit in wrapping rows too ("perform…" and "diabetes (alerting" were cut)."""
    _open(page, served, key)
    assert page.get_by_role("button", name="Refresh now").count() == 1
    assert page.locator(LINK).count() >= 1
    for what in (BUTTON, LINK, SELECT):
        assert page.evaluate(_CUT, what) == [], f"{key} at {page.dw_width} px: {what}"


def _colour_pixels(png: bytes, rgb: tuple[int, int, int], tol: int = 40) -> int:
    import io

    from PIL import Image  # Pillow comes with Streamlit

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int((np.abs(img - np.array(rgb)).max(axis=2) <= tol).sum())


def test_identical_lines_are_both_visible_and_said(served: str, page) -> None:
    """Fix: with two or more series each has its own dash pattern (the first solid, drawn
    first), so a line drawn over another with the same values leaves it visible in its gaps;
    the chart's subtitle says which series lie on top of each other."""
    _open(page, served, "overview", "range=24h")
    chart = page.locator("[data-testid=stVegaLiteChart]").first
    chart.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    # the legend's own swatches are cut off: only the plotted lines count
    box = chart.bounding_box()
    shot = page.screenshot(clip={"x": box["x"], "y": box["y"], "width": box["width"] * 0.55, "height": box["height"]})
    (ARTIFACTS / f"twins-{page.dw_width}.png").parent.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"twins-{page.dw_width}.png").write_bytes(shot)
    # tableau10 in the sorted domain [churn, twin_a, twin_b]: blue, orange, red
    a, b = _colour_pixels(shot, (0xF5, 0x85, 0x18)), _colour_pixels(shot, (0xE4, 0x57, 0x56))
    assert a >= 30 and b >= 30, (a, b)
