"""The log processor that keeps e-mail addresses and names out of log lines (a defence in depth)."""

from __future__ import annotations

import json

import structlog

from hub_platform.logs import configure_logging, get_logger, redact_text


def test_addresses_in_free_text_are_masked() -> None:
    reply = "550 5.1.1 <taro.yamada@example.co.jp>: Recipient address rejected; cc 山田@例え.jp"
    assert redact_text(reply) == "550 5.1.1 <[email]>: Recipient address rejected; cc [email]"
    assert redact_text("no address, just a@ sign and @home") == "no address, just a@ sign and @home"


def test_log_lines_carry_no_address_or_name(capsys) -> None:  # type: ignore[no-untyped-def]
    configure_logging("test")
    try:
        get_logger("t").warning("mail failed for hanako@acme.example", name="Hanako Sato", email="hanako@acme.example",
                                contacts=[{"id": "c-1", "last_name": "Sato", "note": "ask jiro@acme.example"}],
                                request_id="r-1")
    finally:
        structlog.contextvars.clear_contextvars()
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["event"] == "mail failed for [email]"
    assert line["name"] == line["email"] == "[redacted]"
    assert line["contacts"] == [{"id": "c-1", "last_name": "[redacted]", "note": "ask [email]"}]
    assert line["request_id"] == "r-1"
