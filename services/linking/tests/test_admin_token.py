"""S24: the service-key endpoint's local admin token is only acceptable on a loopback address."""

from __future__ import annotations

from pydantic import SecretStr

from hub_linking.settings import LinkingSettings


def test_the_published_local_token_is_flagged_only_when_the_service_is_reachable_from_outside() -> None:
    assert not LinkingSettings(http_host="127.0.0.1").admin_token_is_public
    assert LinkingSettings(http_host="0.0.0.0").admin_token_is_public
    assert not LinkingSettings(http_host="0.0.0.0", HUB_LINKING_ADMIN_TOKEN=SecretStr("from-a-secret")).admin_token_is_public


def test_the_token_is_read_from_its_documented_variable(monkeypatch) -> None:
    monkeypatch.setenv("HUB_LINKING_ADMIN_TOKEN", "from-a-secret")
    assert LinkingSettings().admin_token.get_secret_value() == "from-a-secret"
