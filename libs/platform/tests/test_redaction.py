"""The log processor that keeps e-mail addresses and names out of log lines (a defence in depth)."""

from __future__ import annotations

import structlog

from hub_platform.logs import configure_logging, redact_personal_data, redact_text


def test_addresses_in_free_text_are_masked() -> None:
    reply = "550 5.1.1 <taro.yamada@example.co.jp>: Recipient address rejected; cc 山田@例え.jp"
    assert redact_text(reply) == "550 5.1.1 <[email]>: Recipient address rejected; cc [email]"
    assert redact_text("no address, just a@ sign and @home") == "no address, just a@ sign and @home"


def test_log_lines_carry_no_address_or_name() -> None:
    line = redact_personal_data(None, "warning", {
        "event": "mail failed for hanako@acme.example", "name": "Hanako Sato", "email": "hanako@acme.example",
        "contacts": [{"id": "c-1", "last_name": "Sato", "note": "ask jiro@acme.example"}], "request_id": "r-1"})
    assert line["event"] == "mail failed for [email]"
    assert line["name"] == line["email"] == "[redacted]"
    assert line["contacts"] == [{"id": "c-1", "last_name": "[redacted]", "note": "ask [email]"}]
    assert line["request_id"] == "r-1"


def test_every_service_log_line_goes_through_the_redaction() -> None:
    configure_logging("test")
    try:
        processors = structlog.get_config()["processors"]
        assert redact_personal_data in processors
        assert processors.index(redact_personal_data) > processors.index(structlog.processors.format_exc_info), \
            "tracebacks are rendered before the redaction sees them"
    finally:
        structlog.contextvars.clear_contextvars()
