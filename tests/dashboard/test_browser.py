"""The running dashboard in a real headless Chromium (Debian's, driven by Playwright).

``driftwatch dashboard`` is started as a child process against the real InfluxDB of the
local stack, filled with synthetic results; every page is opened, must finish with its
charts drawn and without any exception element, and is saved as a screenshot under
``test-artifacts/dashboard/`` (git-ignored). No browser is downloaded.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from dashboard import browser, sample
from dashboard.config import PAGES
from streams.devstack.localstack import LocalStack, settings_env
from tests.dashboard.helpers import chromium, fresh_db, serving

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.slow]  # Chromium over every page: 20-40 s

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
# charts each page draws for the drifting model (see test_app.py for what they are)
CHARTS = {"overview": 2, "drift": 3, "quality": 2, "performance": 5, "adversarial": 2, "alerts": 1}


@pytest.fixture(scope="module")
def served(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``driftwatch dashboard`` on a free port, reading a freshly filled database."""
    from streams.settings import Settings

    with fresh_db(stack, "dashb") as conn:
        sample.write_records(
            conn,
            sample.sample_records(
                ["churn", "fraud", "ranker"],
                n_features=8,
                windows=96,
                drift_feature="f_001",
                quality_feature="f_002",
                false_alarms=False,
            ),
        )
        env = settings_env(Settings(influx_url=stack.influx_url, influx_db=conn.db))
        env.update(DRIFTWATCH_DASHBOARD_REFRESH_SECONDS="3", DRIFTWATCH_DASHBOARD_AUTH="none")
        env.pop("DRIFTWATCH_DASHBOARD_ACCESS", None)
        with serving(env, tmp_path_factory.mktemp("dashboard") / "dashboard.log") as base:
            yield base


@pytest.fixture(scope="module")
def page(served: str) -> Iterator[object]:
    with chromium() as p:
        yield p


def test_every_page_renders_without_exceptions(served: str, page) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for key, (_path, title, _icon, _url) in PAGES.items():
        page.goto(browser.page_url(served, key, "model=churn&range=24h"))
        browser.wait_page(page, title, CHARTS[key])
        browser.check_no_exception(page, key)
        assert page.locator("[data-testid=stVegaLiteChart]").count() >= CHARTS[key]
        assert not page.get_by_text("Page not found").count()
        shot = browser.screenshot(page, ARTIFACTS / f"{key}.png")
        assert shot.stat().st_size > 20_000


def test_drift_page_names_the_drifting_feature(served: str, page) -> None:
    page.goto(browser.page_url(served, "drift", "model=churn&range=24h"))
    browser.wait_page(page, "Data drift", CHARTS["drift"])
    text = page.locator("[data-testid=stMain]").inner_text()
    assert "Kolmogorov-Smirnov statistic" in text and "< threshold" in text
    assert re.search(r"Drifting features\s*1 / 8", text)


def test_sidebar_navigation_keeps_the_filters(served: str, page) -> None:
    page.goto(browser.page_url(served, "overview", "model=fraud&range=7d"))
    browser.wait_page(page, "Overview", CHARTS["overview"])
    for key, charts in (("quality", 2), ("alerts", 0), ("drift", 3)):  # fraud has no alert: no timeline
        browser.click_nav(page, PAGES[key][1])
        browser.wait_page(page, PAGES[key][1], charts)
        browser.check_no_exception(page, key)
        page.wait_for_function("() => location.search.includes('model=fraud')")
        assert "range=7d" in page.url
        main = page.locator("[data-testid=stMain]").inner_text()
        assert "fraud · last 7 days" in main


def test_auto_refresh_updates_the_time(served: str, page) -> None:
    page.goto(browser.page_url(served, "alerts", "model=churn&range=24h"))
    browser.wait_page(page, "Alerts", CHARTS["alerts"])

    def stamp() -> str:
        m = re.search(r"last updated (\d\d:\d\d:\d\d) UTC", page.locator("[data-testid=stMain]").inner_text())
        assert m, "no last-updated time on the page"
        return m.group(1)

    first = stamp()
    page.wait_for_function(
        "t => !document.querySelector('[data-testid=stMain]').innerText.includes('last updated ' + t)",
        arg=first,
        timeout=20_000,
    )
    assert stamp() != first
    browser.check_no_exception(page, "alerts after refresh")
