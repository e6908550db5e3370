"""The dashboard under attack: logout, revocation, forged widget values, guessing (issue 15).

The session attacks run against ``driftwatch dashboard`` served as a child process, with
a raw websocket client (:mod:`tests.dashboard.wsclient`: Streamlit's own BackMsg/ForwardMsg
protobufs, sent as an attacker would) and, in test_browser_security.py, through Chromium.
Guessing and timing run the real login form under Streamlit's AppTest.
"""

from __future__ import annotations

import logging
import os
import re
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from dashboard import auth, browser, sample
from dashboard import queries as Q
from streams.devstack.localstack import LocalStack, settings_env
from tests.dashboard.helpers import chromium, fresh_db, serving
from tests.dashboard.wsclient import StreamlitClient, drain, login, until, widget

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
ALICE_PW = "alice-pw-7731"
BOB_PW = "bob-pw-5519"
REFRESH = 2


def access_text(alice_models: list[str]) -> str:
    return (
        "users:\n"
        f"  alice: {{models: {alice_models}, password_hash: '{HASHES['alice']}'}}\n"
        f"  bob: {{models: ['*'], password_hash: '{HASHES['bob']}'}}\n"
        "default_models: []\n"
    )


HASHES = {"alice": auth.hash_password(ALICE_PW, iterations=2000), "bob": auth.hash_password(BOB_PW, iterations=2000)}


@pytest.fixture(scope="module")
def influx_db(stack: LocalStack) -> Iterator[Q.Conn]:
    with fresh_db(stack, "sec") as conn:
        sample.write_records(
            conn,
            sample.sample_records(
                ["wine", "diabetes"],
                n_features=4,
                windows=24,
                drift_feature="f_001",
                quality_feature="f_002",
                false_alarms=False,
            ),
        )
        yield conn


@pytest.fixture(scope="module")
def served(influx_db: Q.Conn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Path]]:
    """``driftwatch dashboard`` with password login and an access file (alice: wine only)."""
    from streams.settings import Settings

    folder = tmp_path_factory.mktemp("secdash")
    access = folder / "access.yaml"
    access.write_text(access_text(["wine"]))
    env = settings_env(Settings(influx_url=influx_db.url, influx_db=influx_db.db))
    env.update(
        DRIFTWATCH_DASHBOARD_REFRESH_SECONDS=str(REFRESH),
        DRIFTWATCH_DASHBOARD_AUTH="password",
        DRIFTWATCH_DASHBOARD_ACCESS=str(access),
    )
    env.pop("DRIFTWATCH_DASHBOARD_PASSWORD", None)
    log = folder / "dashboard.log"
    with serving(env, log) as base:
        yield base, access, log


@pytest.fixture
def dash(served: tuple[str, Path, Path]) -> Iterator[tuple[str, Path, Path]]:
    _base, access, _log = served
    access.write_text(access_text(["wine"]))
    yield served
    access.write_text(access_text(["wine"]))


def _no_leak(run, what: str) -> None:
    assert not run.data_elements(), f"{what}: data reached the client: {run.data_elements()}"
    text = run.text()
    for word in ("wine", "diabetes", "f_001", "p-value"):
        assert word not in text, f"{what}: {word!r} reached the client"


def _logged_in_with_fragment(base: str, user: str, pw: str) -> tuple[StreamlitClient, dict[str, str], str]:
    c = StreamlitClient(base)
    run = login(c, user, pw)
    assert run.data_elements(), f"{user} could not log in: {run.text()[:500]}"
    frags = run.fragment_ids()
    assert frags, "the page registered no auto-refreshing fragment"
    return c, run.widget_ids(), next(iter(frags))


# Session attacks over a raw websocket ------------------------------------------------------


def test_fragment_rerun_after_logout_sends_no_data(dash) -> None:
    base, _access, _log = dash
    c, ids, frag = _logged_in_with_fragment(base, "alice", ALICE_PW)
    with c:
        # the fragment works while logged in: the browser's refresh tick gets data
        assert c.rerun(fragment_id=frag).data_elements()
        c.rerun(widgets=[widget(ids["Log out"], trigger_value=True)], wait=False)
        after = until(c, lambda r: "Password" in r.widget_ids())
        _no_leak(after, "the logout run")
        # the attack: rerun the fragment id the browser received, on the same socket
        attack = c.rerun(fragment_id=frag)
        attack.msgs += drain(c, 3).msgs
        _no_leak(attack, "fragment rerun after logout")
        assert "Password" in attack.widget_ids(), "the session should be sent back to the login form"


def test_revoked_models_stop_at_the_next_refresh_tick(dash) -> None:
    base, access, _log = dash
    c, _ids, frag = _logged_in_with_fragment(base, "alice", ALICE_PW)
    with c:
        first = c.rerun(fragment_id=frag)
        assert first.data_elements() and "wine" in (first.text() + "wine")
        access.write_text(access_text([]))  # an administrator revokes alice's models
        tick = c.rerun(fragment_id=frag)  # what the browser's run_every timer sends
        tick.msgs += drain(c, 3).msgs
        _no_leak(tick, "refresh tick after revocation")
        assert "may not see any" in tick.text()
        again = c.rerun(fragment_id=frag)
        again.msgs += drain(c, 2).msgs
        _no_leak(again, "a later refresh tick")


def test_other_sessions_are_untouched_by_a_revocation_of_alice(dash) -> None:
    base, access, _log = dash
    c, _ids, frag = _logged_in_with_fragment(base, "bob", BOB_PW)
    with c:
        access.write_text(access_text([]))
        assert c.rerun(fragment_id=frag).data_elements()


# Forged and malformed input --------------------------------------------------------------

FORGED = [
    widget("dw_auth_ok", bool_value=True),
    widget("dw_auth_named", bool_value=True),
    widget("dw_auth_user", string_value="bob"),
    widget("dw__login", string_value="bob"),
    widget("dw__ctx", json_value='{"model": "diabetes"}'),
    widget("$$STREAMLIT_INTERNAL_KEY_x", int_value=1),
    widget("", string_value="x"),
    widget("dw_model", string_value="diabetes"),
]


def _no_traceback(run, what: str) -> None:
    raw = run.raw()
    for exc in run.exceptions():
        assert not exc.stack_trace, f"{what}: a stack trace reached the client: {list(exc.stack_trace)[:3]}"
    for needle in (b"Traceback", b'File "', b'.py", line', b"/work/", b"site-packages", b"KeyError"):
        assert needle not in raw, f"{what}: {needle!r} reached the client"
    assert not run.exceptions(), f"{what}: an exception reached the client: {run.exceptions()[0].message[:300]}"


@pytest.mark.slow  # every forged key against a fresh session (~30 s)
def test_forged_widget_keys_before_login_give_no_traceback_and_no_login(dash) -> None:
    base, _access, _log = dash
    with StreamlitClient(base) as c:
        form = c.rerun().widget_ids()
        run = c.rerun(widgets=FORGED)
        _no_traceback(run, "forged widget keys")
        _no_leak(run, "forged widget keys")
        assert "Password" in run.widget_ids()
        # the forged values, together with a real but empty login attempt
        run = c.rerun(widgets=[*FORGED, widget(form["Log in"], trigger_value=True)])
        _no_traceback(run, "forged keys + submit")
        _no_leak(run, "forged keys + submit")
        # wrong types for the real widgets
        run = c.rerun(
            widgets=[
                widget(form["User"], int_value=7),
                widget(form["Password"], bytes_value=b"\xff" * 64),
                widget(form["Log in"], string_value="yes"),
            ]
        )
        _no_traceback(run, "wrongly typed widget values")
        _no_leak(run, "wrongly typed widget values")
        run = c.rerun(fragment_id="f" * 32)  # a fragment id that never existed
        run.msgs += drain(c, 1).msgs
        _no_traceback(run, "unknown fragment id")
        _no_leak(run, "unknown fragment id")


@pytest.mark.parametrize(
    "query",
    [
        "model=diabetes",
        "model=%00%ff&range=bogus",
        "range=custom&from=2020-13-45&to=yesterday",
        "range=custom&from=" + "9" * 300,
        "version=%27%22;DROP&segment=%5C",
        "feature=" + "x" * 5000,
        "model=wine&model=diabetes&range=30d",
    ],
)
def test_malformed_urls_after_login_give_no_traceback_and_no_foreign_model(dash, query: str) -> None:
    base, _access, _log = dash
    with StreamlitClient(base) as c:
        run = login(c, "alice", ALICE_PW, query=query)
        _no_traceback(run, query)
        assert run.data_elements() and "wine" in run.data_text() and "diabetes" not in run.data_text()
        run = c.rerun(query=query, widgets=FORGED)
        run.msgs += drain(c, 1).msgs
        _no_traceback(run, query + " + forged keys")
        assert "diabetes" not in run.data_text()


# Guessing ---------------------------------------------------------------------------------


@pytest.fixture
def form_app(monkeypatch: pytest.MonkeyPatch, influx_db: Q.Conn, tmp_path: Path) -> Iterator[Path]:
    access = tmp_path / "access.yaml"
    access.write_text(access_text(["wine"]))
    for k in ("PASSWORD", "PASSWORD_FILE"):
        monkeypatch.delenv(f"DRIFTWATCH_DASHBOARD_{k}", raising=False)
    for k in ("INFLUX_PASSWORD", "INFLUX_TOKEN"):  # the stack's user and password file stay (conftest)
        monkeypatch.delenv(f"DRIFTWATCH_{k}", raising=False)
    monkeypatch.setenv("DRIFTWATCH_INFLUX_URL", influx_db.url)
    monkeypatch.setenv("DRIFTWATCH_INFLUX_DB", influx_db.db)
    monkeypatch.setenv("DRIFTWATCH_DASHBOARD_AUTH", "password")
    monkeypatch.setenv("DRIFTWATCH_DASHBOARD_ACCESS", str(access))
    monkeypatch.setenv("DRIFTWATCH_DASHBOARD_REFRESH_SECONDS", "0")
    auth.THROTTLE.reset()
    yield access
    auth.THROTTLE.reset()


def _submit(at: AppTest, user: str, pw: str) -> str:
    at.text_input[0].input(user)
    at.text_input[1].input(pw)
    at.button[0].click().run()
    return "\n".join(e.value for e in at.error)


def test_twenty_five_wrong_guesses_are_throttled_and_logged_without_the_password(
    form_app: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dashboard")
    at = AppTest.from_file(APP, default_timeout=60).run()
    guesses = [f"guess-{i:02d}-x" for i in range(25)]
    answers = [_submit(at, "alice", g) for g in guesses]
    refused = [a for a in answers if "Too many failed logins" in a]
    assert len(refused) >= 20, answers
    # the right password during the lockout is refused as well, and nobody is logged in
    assert "Too many failed logins" in _submit(at, "alice", ALICE_PW)
    assert not at.get("vega_lite_chart") and not at.metric
    assert auth.THROTTLE.wait(["user:alice"]) > 0 and auth.THROTTLE.wait(["addr:local"]) > 0
    # a different user from the same address is locked out too (the address counts)
    assert "Too many failed logins" in _submit(at, "bob", BOB_PW)
    text = caplog.text
    assert text.count("failed login as 'alice'") >= 5 and "refused unchecked" in text
    assert not [g for g in [*guesses, ALICE_PW, BOB_PW] if g in text]
    # after the lockout (simulated: the throttle forgets), the right password works
    auth.THROTTLE.reset()
    _submit(at, "alice", ALICE_PW)
    assert at.metric, "alice should be logged in after the lockout ended"


def test_unknown_and_known_users_cost_the_same_pbkdf2_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """The deterministic half of the timing claim: every attempt runs PBKDF2 exactly once, with
    the access file's iteration count, whether the name exists, is empty or is unknown."""
    import hashlib

    calls: list[int] = []
    real = hashlib.pbkdf2_hmac
    acc = auth.Access(users={"alice": ("wine",)}, hashes={"alice": auth.hash_password("pw", iterations=3000)})
    auth.dummy_hash(3000)  # made once per process, not per attempt
    monkeypatch.setattr(hashlib, "pbkdf2_hmac", lambda *a: calls.append(a[3]) or real(*a))
    for name in ("alice", "ALICE", "nobody", "", "x" * 200):
        calls.clear()
        assert auth.check_login(acc, name, "wrong", "shared") == (False, False)
        assert calls == [3000], (name, calls)
    calls.clear()
    assert auth.check_login(acc, "alice", "pw", None) == (True, True) and calls == [3000]


@pytest.mark.slow  # timing medians over many logins (~8 s)
def test_login_time_does_not_tell_whether_a_user_exists(form_app: Path) -> None:
    """Median time of a wrong password for a known and an unknown user, through the form,
    with production-strength hashes (600 000 PBKDF2 rounds). Asserted on the process's CPU
    time (the work the server does, which is what an attacker's clock measures on an idle
    server): on this shared machine the wall clock also carries other processes' load
    (both are printed)."""
    form_app.write_text(
        f"users:\n  alice: {{models: [wine], password_hash: '{auth.hash_password(ALICE_PW)}'}}\ndefault_models: []\n"
    )
    at = AppTest.from_file(APP, default_timeout=60).run()
    _submit(at, "nobody", "warm-up")  # the dummy hash is made once per process
    users = ["alice", "nobody-here"]
    wall: dict[str, list[float]] = {u: [] for u in users}
    cpu: dict[str, list[float]] = {u: [] for u in users}
    for i in range(21):  # alternating order: a load change hits both
        for user in users if i % 2 else users[::-1]:
            auth.THROTTLE.reset()
            w0, c0 = time.perf_counter(), time.process_time()
            assert "Wrong user or password" in _submit(at, user, "not-the-password")
            cpu[user].append(time.process_time() - c0)
            wall[user].append(time.perf_counter() - w0)
    med = {k: {u: statistics.median(v[u]) for u in users} for k, v in (("wall", wall), ("cpu", cpu))}
    print(
        "\nmedian failed login (known / unknown user): "
        + ", ".join(f"{k} {m['alice'] * 1000:.1f} / {m['nobody-here'] * 1000:.1f} ms" for k, m in med.items())
        + f"; load average {os.getloadavg()[0]:.1f}"
    )
    assert med["cpu"]["alice"] > 0.05, "the known user's hash should cost real time"
    assert abs(med["cpu"]["alice"] - med["cpu"]["nobody-here"]) < 0.020, med


# What the server tells anyone ------------------------------------------------------------


def test_metrics_script_path_and_versions_are_not_served(dash) -> None:
    """``/_stcore/metrics`` (sessions, cache statistics) answers 404 and a new session is not
    told the server's script path, Streamlit/Python versions or OS; the frontend still works."""
    import platform

    import streamlit

    base, _access, _log = dash
    assert httpx.get(f"{base}/_stcore/metrics").status_code == 404
    assert httpx.get(f"{base}/_stcore/metrics", headers={"Accept": "application/x-protobuf"}).status_code == 404
    assert httpx.get(f"{base}/_stcore/health").status_code == 200
    with StreamlitClient(base) as c:
        run = c.rerun()
        (ns,) = [m.new_session for m in run.msgs if m.WhichOneof("type") == "new_session"]
        assert ns.main_script_path == ""
        env = ns.initialize.environment_info
        assert (env.streamlit_version, env.python_version, env.server_os) == ("", "", "")
        raw = run.raw(new_session=True)
        for needle in (
            str(Path(APP).parent).encode(),
            b"app.py",
            streamlit.__version__.encode(),
            platform.python_version().encode(),
        ):
            assert needle not in raw, needle
        assert "Password" in run.widget_ids()  # the app itself is served as before


# The same attacks through Chromium -------------------------------------------------------


class Wire:
    """Every ForwardMsg the server sends to a Chromium page (via Playwright's websocket
    routing: the page's socket goes through us), and a way to send BackMsgs as the page."""

    def __init__(self, page) -> None:
        self.frames: list[tuple[float, object]] = []
        self.server = None
        page.route_web_socket(re.compile(r".*/_stcore/stream$"), self._route)

    def _route(self, ws) -> None:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        server = ws.connect_to_server()
        self.server = server

        def down(message) -> None:
            if isinstance(message, (bytes, bytearray)):
                m = ForwardMsg()
                m.ParseFromString(bytes(message))
                self.frames.append((time.monotonic(), m))
            ws.send(message)

        server.on_message(down)

    def since(self, t: float):
        from tests.dashboard.wsclient import Run

        return Run([m for at, m in self.frames if at >= t])

    def page_hash(self) -> str:
        return next(
            m.new_session.page_script_hash for _, m in reversed(self.frames) if m.WhichOneof("type") == "new_session"
        )

    def rerun_fragment(self, fragment_id: str) -> None:
        """What the page's refresh timer sends, sent by us on the page's own socket."""
        from streamlit.proto.BackMsg_pb2 import BackMsg

        msg = BackMsg()
        msg.rerun_script.page_script_hash = self.page_hash()
        msg.rerun_script.fragment_id = fragment_id
        msg.rerun_script.is_auto_rerun = True
        self.server.send(msg.SerializeToString())


def _browser_login(page, base: str, user: str, pw: str) -> None:
    page.goto(base)
    page.get_by_role("textbox", name="User").fill(user)
    page.locator("input[type=password]").fill(pw)
    page.get_by_role("button", name="Log in").click()
    browser.wait_page(page, "Overview", 1)


@pytest.mark.browser
@pytest.mark.slow  # Chromium (~15 s)
def test_browser_logout_then_replayed_fragment_shows_nothing(dash) -> None:
    base, _access, _log = dash
    with chromium() as page:
        wire = Wire(page)
        _browser_login(page, base, "alice", ALICE_PW)
        frags = wire.since(0).fragment_ids()
        assert frags and wire.since(0).data_elements()
        page.locator("[data-testid=stSidebar]").get_by_role("button", name="Log out").click()
        page.locator("input[type=password]").wait_for(timeout=20_000)
        t_out = time.monotonic()
        for frag in frags:  # the attack, on the browser's own socket
            wire.rerun_fragment(frag)
        page.wait_for_timeout((REFRESH * 2 + 2) * 1000)  # two refresh ticks
        after = wire.since(t_out)
        _no_leak(after, "browser after logout")
        assert page.locator(browser.CHART).count() == 0
        assert page.locator("input[type=password]").is_visible()
        browser.check_no_exception(page, "after logout")


@pytest.mark.browser
@pytest.mark.slow  # Chromium (~15 s)
def test_browser_revocation_empties_the_open_page_at_the_next_tick(dash) -> None:
    base, access, _log = dash
    with chromium() as page:
        wire = Wire(page)
        _browser_login(page, base, "alice", ALICE_PW)
        assert wire.since(0).data_elements()
        access.write_text(access_text([]))
        t_revoked = time.monotonic()
        page.get_by_text("may not see any").wait_for(timeout=(REFRESH + 8) * 1000)
        took = time.monotonic() - t_revoked
        page.wait_for_timeout((REFRESH * 2 + 1) * 1000)
        # a fragment run that had passed its check when the file changed may still finish: allow 1 s
        after = wire.since(t_revoked + 1.0)
        _no_leak(after, "browser after revocation")
        assert page.locator(browser.CHART).count() == 0
        browser.check_no_exception(page, "after revocation")
        print(f"\nrevocation shown {took:.1f} s after the access file changed (refresh every {REFRESH} s)")
        assert took <= REFRESH + 3
