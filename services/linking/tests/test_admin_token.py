"""S24: the service-key endpoint's admin token: no published default, weak tokens only on loopback."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from hub_linking.main import build
from hub_linking.settings import LinkingSettings
from hub_platform.http import InsecureTokenError, require_strong_tokens

STRONG = "x" * 40


def test_there_is_no_default_token() -> None:
    assert LinkingSettings().admin_token.get_secret_value() == ""


def test_the_token_is_read_from_its_documented_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_LINKING_ADMIN_TOKEN", "from-a-secret")
    assert LinkingSettings().admin_token.get_secret_value() == "from-a-secret"


@pytest.mark.parametrize("token", ["", "short-token", "local-linking-admin-token", "CHANGE-ME"])
def test_a_weak_token_stops_the_service_off_loopback(token: str) -> None:
    service = build(LinkingSettings(http_host="0.0.0.0", HUB_LINKING_ADMIN_TOKEN=SecretStr(token)))
    with pytest.raises(InsecureTokenError, match="HUB_LINKING_ADMIN_TOKEN"):
        service.run()  # refuses before binding a port


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_a_weak_token_is_tolerated_on_loopback(host: str) -> None:
    require_strong_tokens({"HUB_LINKING_ADMIN_TOKEN": SecretStr("")}, host)


def test_a_strong_token_is_accepted_anywhere() -> None:
    require_strong_tokens({"HUB_LINKING_ADMIN_TOKEN": SecretStr(STRONG)}, "0.0.0.0")
