"""Unit tests of the dashboard's login helpers and access file."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from types import SimpleNamespace

import pytest

from dashboard import auth
from dashboard.launch import streamlit_command


def test_password_hash_is_pbkdf2_and_verifies() -> None:
    h = auth.hash_password("correct horse", iterations=1000, salt=b"0123456789abcdef")
    scheme, iters, _salt_b64, hash_b64 = h.split("$")
    assert (scheme, iters) == ("pbkdf2_sha256", "1000")

    def pad(s):
        return s + "=" * (-len(s) % 4)

    expected = hashlib.pbkdf2_hmac("sha256", b"correct horse", b"0123456789abcdef", 1000)
    assert base64.b64decode(pad(hash_b64)) == expected
    assert auth.verify_password("correct horse", h)
    assert not auth.verify_password("wrong", h)
    assert not auth.verify_password("x", "md5$1$a$b")
    assert not auth.verify_password("x", "garbage")


def test_access_patterns_and_defaults(tmp_path: Path) -> None:
    f = tmp_path / "access.yaml"
    f.write_text(
        "users:\n"
        "  Alice@Example.com: {models: ['*']}\n"
        "  bob: {models: [churn, 'fraud-*'], password_hash: " + auth.hash_password("pw", iterations=1000) + "}\n"
        "default_models: [demo]\n"
    )
    acc = auth.load_access(f)
    models = ["churn", "demo", "fraud-eu", "ranker"]
    assert acc.allowed("alice@example.com", models) == models
    assert acc.allowed("BOB", models) == ["churn", "fraud-eu"]
    assert acc.allowed("mallory", models) == ["demo"]
    assert acc.allowed(None, models) == ["demo"]
    assert acc.password_hash("bob") and acc.password_hash("alice@example.com") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "expected a mapping"),
        ("users: {a: {models: churn}}", "expected a list"),
        ("users: {a: {modles: [x]}}", "users.a"),
        ("groups: {}", "unknown keys"),
        ("users: {a: {models: [x], password_hash: plain}}", "python -m dashboard.auth hash"),
        ("users: [", "not valid YAML"),
    ],
)
def test_bad_access_file_says_where(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "a.yaml"
    f.write_text(text)
    with pytest.raises(auth.AccessError, match=message):
        auth.load_access(f)


def test_missing_access_file(tmp_path: Path) -> None:
    with pytest.raises(auth.AccessError, match="cannot read"):
        auth.load_access(tmp_path / "nope.yaml")


def test_resolve_mode() -> None:
    def s(mode="auto", pw=None):
        return SimpleNamespace(dashboard_auth=mode, dashboard_password=pw)

    with_hashes = auth.Access(users={"a": ("*",)}, hashes={"a": "pbkdf2_sha256$1$a$b"})
    assert auth.resolve_mode(s(), None, False) == "none"
    assert auth.resolve_mode(s(pw="x"), None, True) == "password"
    assert auth.resolve_mode(s(), with_hashes, False) == "password"
    assert auth.resolve_mode(s(), None, True) == "oidc"
    assert auth.resolve_mode(s("none", "x"), None, True) == "none"
    assert auth.resolve_mode(s("oidc"), None, False) == "oidc"


def test_hash_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret\n"))
    assert auth.main(["hash"]) == 0
    out = capsys.readouterr().out.strip()
    assert auth.verify_password("s3cret", out)
    assert auth.main([]) == 2


def test_launch_command_is_headless_and_private() -> None:
    cmd = streamlit_command(port=8765, address="127.0.0.1", extra=["--theme.base=dark"])
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4].endswith("dashboard/server.py")
    for opt in (
        "--server.port=8765",
        "--server.address=127.0.0.1",
        "--server.headless=true",
        "--browser.gatherUsageStats=false",
        "--client.showErrorDetails=none",
        "--client.showErrorLinks=false",
    ):
        assert opt in cmd
    assert cmd[-1] == "--theme.base=dark"


def test_streamlit_command_log_level_and_no_magic() -> None:
    cmd = streamlit_command(port=8765, address="127.0.0.1", log_level="DEBUG")
    assert "--logger.level=debug" in cmd and "--runner.magicEnabled=false" in cmd
    assert "--logger.level=info" in streamlit_command(port=1, address="127.0.0.1")


def test_authlib_problem_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "authlib", None)  # import authlib -> ImportError
    assert auth.authlib_problem() == "Authlib is not installed"
    monkeypatch.setitem(sys.modules, "authlib", SimpleNamespace(__version__="1.2.9"))
    assert auth.authlib_problem() == "Authlib 1.2.9 is too old"
    monkeypatch.setitem(sys.modules, "authlib", SimpleNamespace(__version__="1.3.2"))
    assert auth.authlib_problem() is None
    monkeypatch.setitem(sys.modules, "authlib", SimpleNamespace(__version__="1.6.0rc1"))
    assert auth.authlib_problem() is None
    hint = auth.oidc_install_hint("Authlib is not installed")
    assert "pip install 'driftwatch[oidc]'" in hint and "Authlib>=1.3.2" in hint and "nobody can log in" in hint
