"""structlog set-up: JSON lines on stdout, with event/correlation/trace ids bound per message."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog
from opentelemetry import trace


def _add_trace_ids(_logger: object, _name: str, event_dict: dict) -> dict:
    span = trace.get_current_span()
    ctx = span.get_span_context()
    if ctx.is_valid:
        event_dict.setdefault("trace_id", format(ctx.trace_id, "032x"))
        event_dict.setdefault("span_id", format(ctx.span_id, "016x"))
    return event_dict


EMAIL_ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")
"""Anything shaped like an e-mail address (Unicode letters included), wherever it appears in a text."""

PERSONAL_FIELDS = frozenset({
    "email", "emails", "email_norm", "recipient", "recipient_email", "recipient_name", "to", "cc", "bcc",
    "name", "names", "first_name", "last_name", "full_name", "display_name", "contact_name", "user_name",
})
"""Log fields that hold a person's address or name; their values never reach a log line."""

REDACTED = "[redacted]"


def redact_text(text: str) -> str:
    """`text` with every e-mail address replaced (for dead-letter reasons and free-text log values)."""
    return EMAIL_ADDRESS.sub("[email]", text)


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: REDACTED if k in PERSONAL_FIELDS and v is not None else _redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_redact(v) for v in value]
    return value


def redact_personal_data(_logger: object, _name: str, event_dict: dict) -> dict:
    """structlog processor, a defence in depth: code should not log addresses or names in the first place."""
    return _redact(event_dict)


def configure_logging(service: str, level: str = "info", fmt: str = "json") -> None:
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _add_trace_ids,
            structlog.processors.format_exc_info,
            redact_personal_data,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        # no file given: each line goes to sys.stdout as it is then (pytest swaps and closes it per test)
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(service=service)
    # Libraries (aiokafka, faststream) log through stdlib logging: keep them quiet but visible.
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
