"""Secret values for log redaction: an unresolvable webhook secret is skipped, not fatal."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from streams.alerts.rules import WebhookConfig
from streams.broker.security import secret_values
from streams.settings import Settings


def test_unresolvable_webhook_secrets_are_skipped(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("DW_TEST_HOOK_SECRET", "s3cret-value")
    monkeypatch.setenv("DW_TEST_HOOK_URL", "https://hooks.example/t0ken-in-url")
    monkeypatch.delenv("DW_TEST_UNSET_SECRET", raising=False)
    hooks = [
        WebhookConfig(name="ok", url_env="DW_TEST_HOOK_URL", secret_env="DW_TEST_HOOK_SECRET"),
        WebhookConfig(name="unset", url="https://example.org/hook", secret_env="DW_TEST_UNSET_SECRET"),
        WebhookConfig(name="nofile", url="https://example.org/hook", secret_file=tmp_path / "missing"),
    ]
    values = secret_values(Settings(), SimpleNamespace(webhooks=hooks))
    assert {"s3cret-value", "https://hooks.example/t0ken-in-url"} <= values
    assert "https://example.org/hook" not in values  # a URL written in the file is no secret


def test_a_bug_in_a_secret_getter_is_not_swallowed() -> None:
    class Broken:
        url_env = None

        def resolve_secret(self) -> bytes:
            raise TypeError("a bug")

        def resolve_url(self) -> str:
            return "https://example.org"

    with pytest.raises(TypeError, match="a bug"):
        secret_values(Settings(), SimpleNamespace(webhooks=[Broken()]))
