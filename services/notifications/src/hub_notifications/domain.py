"""Pure rules of the notification service (no I/O), unit-tested in tests/test_domain.py.

- Which kinds a person may turn off: only reports and outcomes
  (`OPTIONAL_KINDS`); a failure the person must act on (S10, S11, S12 refused
  task changes, S19 duplicate e-mails) is always sent, whatever the request's
  `optional` flag or the stored preferences say.
- One e-mail per request: the Message-ID is derived from the request id, so
  every (re)send of a request carries the same Message-ID and a mail client or
  server that de-duplicates by Message-ID shows it once.
- How an SMTP error is treated (`classify_smtp_error`): the server cannot be
  reached or we cannot log in → "outage" (the mail waits, it does not use up
  its attempts: nothing is lost while the server is down); 4xx → "transient"
  (retried with backoff up to `max_attempts`); 5xx → "permanent" (failed at once).
"""

from __future__ import annotations

import re
import uuid
from datetime import date
from typing import Literal

from hub_schema.events.notifications import NotificationKind

OPTIONAL_KINDS: frozenset[str] = frozenset({"matching_report", "import_outcome", "sync_stopped"})
MANDATORY_KINDS: frozenset[str] = frozenset(NotificationKind.__args__) - OPTIONAL_KINDS  # type: ignore[attr-defined]
LOCALES = ("ja", "en")

SmtpErrorClass = Literal["outage", "transient", "permanent"]

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_LOCAL_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+$")


def is_suppressible(kind: str, optional_flag: bool) -> bool:
    """Preferences may stop a mail only if the producer marked it optional AND the kind is optional."""
    return optional_flag and kind in OPTIONAL_KINDS


def pick_locale(requested: str | None, default: str) -> str:
    """The recipient's locale, else the service default (Japanese unless configured)."""
    return requested if requested in LOCALES else default


def address_problem(address: str) -> str | None:
    """Why an address cannot be delivered to, or None. Stricter than the schema's pattern (RFC 5321 limits)."""
    if len(address) > 254:
        return "address longer than 254 characters"
    if address.count("@") != 1:
        return "address must contain exactly one @"
    local, domain = address.split("@")
    if not local or len(local) > 64:
        return "local part must be 1 to 64 characters"
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return "local part has a misplaced dot"
    if not all(_LOCAL_ATOM.match(atom) for atom in local.split(".")):
        return "local part has characters not allowed in an address"
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return f"domain {domain!r} is not a valid host name"
    labels = ascii_domain.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        return f"domain {domain!r} is not a valid host name"
    if labels[-1].isdigit():
        return f"domain {domain!r} has a numeric top-level label"
    return None


def message_id(request_id: uuid.UUID, domain: str) -> str:
    """Stable Message-ID: the same request always yields the same id (also after a crash re-send)."""
    return f"<{request_id}@{domain}>"


def classify_smtp_error(code: int | None, *, reached_server: bool, during_auth: bool = False) -> SmtpErrorClass:
    """How an SMTP failure is handled; `code` is the server's reply code when it sent one."""
    if not reached_server or code is None or during_auth:
        return "outage"
    if code == 421:  # service not available, closing channel
        return "outage"
    if 400 <= code < 500:
        return "transient"
    return "permanent"


def retry_delay(attempt: int, base: float, cap: float, rnd: float) -> float:
    """Exponential backoff with 'equal jitter': half fixed, half random (rnd in [0, 1))."""
    ceiling = min(cap, base * (2 ** max(attempt - 1, 0)))
    return ceiling / 2 + ceiling / 2 * rnd


def gives_up(attempts: int, max_attempts: int) -> bool:
    return attempts >= max_attempts


def report_filename(finished: date) -> str:
    return f"matching-report-{finished.isoformat()}.xlsx"


XLSX_MIME = ("application", "vnd.openxmlformats-officedocument.spreadsheetml.sheet")


def clean_display_name(name: str | None) -> str:
    """A display name safe for a header: control characters (CR/LF header injection) removed."""
    return re.sub(r"[\x00-\x1f\x7f]+", " ", name or "").strip()
