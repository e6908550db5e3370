"""Secrets never reach the dashboard's log output (issue 8, part 6).

The dashboard process installs the worker's log redaction (:mod:`dashboard.logs`) for every
secret in its settings. First the mechanism in this process: records from any logger —
Streamlit's own, which do not propagate to the root logger, included — carry ``***``
instead of the dashboard password or the InfluxDB password, in the message, its arguments
and a traceback. Then the real thing: ``driftwatch dashboard`` at DEBUG with a password,
a wrong and a right login typed into the form in Chromium, pages opened; its whole log
output must contain DEBUG lines and neither secret.
"""

from __future__ import annotations

import io
import logging
import uuid
from pathlib import Path

import httpx
import pytest

from dashboard import browser, logs, sample
from dashboard import queries as Q
from streams.devstack.localstack import LocalStack, free_port, settings_env
from streams.settings import Settings


def _secret(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex}"


def test_setup_redacts_the_settings_secrets_in_every_logger(caplog: pytest.LogCaptureFixture) -> None:
    password, influx_pw = _secret("dash"), _secret("influx")
    n = logs.setup(Settings(dashboard_password=password, influx_username="u", influx_password=influx_pw))
    assert n >= 2
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    st_log = logging.getLogger("streamlit.fake_component")  # like Streamlit's loggers: own handler, no propagation
    st_log.addHandler(handler)
    st_log.propagate = False
    st_log.setLevel(logging.DEBUG)
    try:
        st_log.debug("widget state: password=%s", password)
        st_log.debug(f"influx url http://u:{influx_pw}@influx:8086")
        try:
            raise RuntimeError(f"login failed with {password!r}")
        except RuntimeError:
            st_log.exception("boom")
    finally:
        st_log.removeHandler(handler)
    text = out.getvalue()
    assert text.count("***") >= 3 and "DEBUG streamlit.fake_component" in text
    assert password not in text and influx_pw not in text
    # the dashboard's own loggers log at the configured level, redacted too (to stderr in the
    # dashboard process: see the next test; here pytest's handlers on the root logger catch them)
    logs.setup(Settings(dashboard_password=password, log_level="DEBUG"))
    assert logging.getLogger("dashboard").level == logging.DEBUG
    logging.getLogger("dashboard.queries").debug("query with %s", password)
    assert "query with ***" in caplog.text and password not in caplog.text
    logs.setup(Settings(log_level="INFO"))  # leave the level as the other tests expect it


@pytest.mark.integration
@pytest.mark.browser
@pytest.mark.slow  # a dashboard server at DEBUG (~10 s)
def test_dashboard_password_never_appears_in_the_dashboard_log_at_debug(stack: LocalStack, tmp_path: Path) -> None:
    password, influx_pw = _secret("dash"), _secret("influx")
    db = f"dashlog{uuid.uuid4().hex[:8]}"
    conn = Q.Conn(stack.influx_url, db, *stack.influx_auth)
    sample.write_records(conn, sample.sample_records(["churn"], n_features=4, windows=12, false_alarms=False))
    # the dashboard reads with a read-only InfluxDB user (least privilege), sent on every query
    reader = f"reader{uuid.uuid4().hex[:6]}"
    for q in (f"CREATE USER \"{reader}\" WITH PASSWORD '{influx_pw}'", f'GRANT READ ON "{db}" TO "{reader}"'):
        r = httpx.post(f"{stack.influx_url}/query", data={"q": q}, auth=stack.influx_auth, timeout=30)
        assert r.status_code == 200 and "error" not in r.text, r.text
    env = settings_env(
        Settings(
            influx_url=stack.influx_url,
            influx_db=db,
            influx_username=reader,
            influx_password=influx_pw,
            dashboard_password=password,
            log_level="DEBUG",
            state_dir=tmp_path / "state",
        )
    )
    env.update(DRIFTWATCH_DASHBOARD_REFRESH_SECONDS="0", DRIFTWATCH_DASHBOARD_AUTH="password")
    env.pop("DRIFTWATCH_DASHBOARD_ACCESS", None)
    assert "DRIFTWATCH_DASHBOARD_PASSWORD" not in env and env["DRIFTWATCH_LOG_LEVEL"] == "DEBUG"
    assert Path(env["DRIFTWATCH_DASHBOARD_PASSWORD_FILE"]).read_text() == password  # a file, never the value
    log = tmp_path / "dashboard.log"
    try:
        browser.chromium_path()
        with browser.serve_dashboard(env, free_port(), log) as base, browser.chromium() as page:
            page.goto(browser.page_url(base, "overview", "model=churn&range=24h"))
            pw = page.locator("input[type=password]")
            pw.wait_for(timeout=60_000)
            for attempt in ("wrong-" + password[::-1], password):
                pw.fill(attempt)
                page.get_by_role("button", name="Log in").click()
                if attempt != password:
                    page.get_by_text("Wrong user or password").wait_for(timeout=60_000)
            browser.wait_page(page, "Overview", 2)
            browser.click_nav(page, "Data drift")
            browser.wait_page(page, "Data drift", 3)
            browser.check_no_exception(page, "drift")
    except browser.BrowserError as e:
        pytest.fail(str(e), pytrace=False)
    finally:
        httpx.post(f"{stack.influx_url}/query", data={"q": f'DROP DATABASE "{db}"'}, timeout=30, auth=stack.influx_auth)
        httpx.post(f"{stack.influx_url}/query", data={"q": f'DROP USER "{reader}"'}, timeout=30, auth=stack.influx_auth)
    text = log.read_text(errors="replace")
    # the log really is at DEBUG: Streamlit's debug lines and the dashboard's own query lines
    assert "DEBUG dashboard.queries: InfluxDB" in text, text[-3000:]
    assert "Runtime state:" in text  # a DEBUG line of Streamlit's (its format has no level names)
    assert "failed login" in text and "logged in with the shared password" in text
    assert password not in text and password[::-1] not in text
    assert influx_pw not in text
