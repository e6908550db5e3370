"""Helpers to serve the dashboard with ``driftwatch dashboard`` and drive Debian's Chromium.

Used by the browser test and by ``driftwatch bench dashboard`` (Playwright is a test
dependency, imported only when a browser is started). No browser is ever
downloaded: Playwright launches ``/usr/bin/chromium`` (``apt-get install chromium``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from detectors.errors import ServiceError
from streams.lifetime import die_with_parent

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IDLE = "[data-testid=stApp][data-test-script-state=notRunning]"
CHART = "[data-testid=stVegaLiteChart]"
EXCEPTION = "[data-testid=stException]"


class BrowserError(ServiceError):
    """Chromium or the dashboard server is missing or did not come up."""


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise BrowserError(
            "Debian's chromium is not installed: `apt-get install -y chromium` (no browser is downloaded)"
        )
    return path


@contextlib.contextmanager
def serve_dashboard(env: dict[str, str], port: int, log: Path, timeout: float = 60.0) -> Iterator[str]:
    """Run ``driftwatch dashboard`` on 127.0.0.1:``port``; yield its base URL; stop it."""
    env = {**env, "DRIFTWATCH_DASHBOARD_PORT": str(port), "DRIFTWATCH_DASHBOARD_ADDRESS": "127.0.0.1"}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "dashboard"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise BrowserError(f"`driftwatch dashboard` exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/_stcore/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise BrowserError(
                    f"the dashboard did not answer on {base} in {timeout:.0f} s:\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.2)
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


@contextlib.contextmanager
def chromium(width: int = 1400, height: int = 1000) -> Iterator[object]:
    """A Playwright page in headless Debian Chromium."""
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        try:
            ctx = browser.new_context(viewport={"width": width, "height": height})
            yield ctx.new_page()
        finally:
            browser.close()


# The page is "loaded" when its content is on screen, not at DOMContentLoaded: Streamlit
# builds the page from websocket messages after the HTML loaded. So: the script has finished
# (the app's "running" state is gone), the page's title is shown, no element is still a
# skeleton or spinner, at least ``n`` charts exist and EVERY visible chart on the page has
# drawn (a Vega canvas/svg with a size), and every visible dataframe has drawn its grid (a
# canvas). Elements the user cannot see (an inactive tab, a collapsed expander) are not waited for.
_READY = """([title, n]) => {
    const app = document.querySelector('[data-testid=stApp]');
    if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
    const main = document.querySelector('[data-testid=stMain]');
    if (!main) return false;
    const h1 = [...main.querySelectorAll('h1')].map(h => h.textContent);
    if (!h1.some(t => t.includes(title))) return false;
    if (main.querySelector('[data-testid=stSkeleton], [data-testid=stSpinner]')) return false;
    const sized = e => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
    const shown = e => e.checkVisibility();
    const charts = [...main.querySelectorAll('[data-testid=stVegaLiteChart]')];
    if (charts.length < n) return false;
    if (!charts.filter(shown).every(c => [...c.querySelectorAll('canvas, svg')].some(sized))) return false;
    const frames = [...main.querySelectorAll('[data-testid=stDataFrame]')].filter(shown);
    return frames.every(f => [...f.querySelectorAll('canvas')].some(sized));
}"""


def page_url(base: str, key: str, query: str = "") -> str:
    """The URL of a dashboard page (the overview is the root)."""
    from dashboard.config import PAGES

    path = "" if key == "overview" else PAGES[key][3]
    return f"{base}/{path}{'?' + query.lstrip('?') if query else ''}"


def wait_page(page: Any, title: str, charts: int = 0, timeout_ms: float = 60_000) -> None:
    """Wait until the page titled ``title`` ran to the end and its content is drawn: at least
    ``charts`` charts, every chart and every dataframe on the page (see ``_READY``)."""
    page.wait_for_function(_READY, arg=[title, charts], timeout=timeout_ms)


def check_no_exception(page: Any, what: str = "") -> None:
    """Raise when Streamlit shows an exception (``stException``) anywhere on the page."""
    exc = page.locator(EXCEPTION)
    if exc.count():
        raise AssertionError(f"{what}: the page shows an exception:\n{exc.first.inner_text()[:2000]}")


def click_nav(page: Any, title: str) -> None:
    """Click a page in the sidebar navigation (in-app navigation, no reload)."""
    page.locator("[data-testid=stSidebarNav] a", has_text=title).first.click()


def screenshot(page: Any, path: Path, max_height: int = 9000) -> Path:
    """A screenshot of the whole page: the viewport grows to the main area's height first
    (Streamlit scrolls inside a container, so a plain full-page shot stops at the fold)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size or {"width": 1400, "height": 1000}
    height = page.evaluate("""() => Math.max(...['[data-testid=stMain]', '[data-testid=stAppViewContainer]',
        '[data-testid=stMainBlockContainer]'].map(s => document.querySelector(s)).filter(Boolean)
        .map(e => e.scrollHeight), document.body.scrollHeight)""")
    page.set_viewport_size({"width": size["width"], "height": min(max_height, max(size["height"], int(height) + 40))})
    page.wait_for_timeout(400)  # charts re-layout to the new size
    page.screenshot(path=str(path))
    page.set_viewport_size(size)
    return path
