"""Pure rules of the linking service: no I/O, so every rule is unit-tested on its own.

Why these live apart from the handlers: the same rule (who may associate a project,
whether a field mapping is valid, how client names match accounts) is used by the
event handlers and by the read API, and is easier to reason about without a database.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

# --- field mapping (S3, S6) ---------------------------------------------------------------------

# CRM field types (requests.CrmFieldType) grouped by what they can feed.
TEXT_LIKE = {"text", "textarea", "picklist", "multiselect", "email", "phone", "url", "lookup", "user"}
NUMERIC = {"integer", "decimal", "currency", "percent"}
DATES = {"date", "datetime"}

STANDARD_CRM_FIELDS: dict[str, dict[str, str]] = {
    "deals": {
        "Deal_Name": "text", "Amount": "currency", "Closing_Date": "date", "Stage": "picklist",
        "Account_Name": "lookup", "Contact_Name": "lookup", "Owner": "user", "Description": "textarea",
        "Probability": "percent", "Type": "picklist", "Lead_Source": "picklist", "Next_Step": "text",
        "Expected_Revenue": "currency",
    },
    "accounts": {
        "Account_Name": "text", "Phone": "phone", "Website": "url", "Industry": "picklist",
        "Employees": "integer", "Annual_Revenue": "currency", "Owner": "user", "Description": "textarea",
        "Billing_City": "text", "Billing_Country": "text", "Account_Type": "picklist", "Rating": "picklist",
    },
}
"""The standard fields of the standard layouts of deals and accounts (the only modules S6 allows)."""

# PM project fields: standard ones have a fixed type; other names are the project's custom fields.
STANDARD_PM_FIELDS: dict[str, str] = {"name": "text", "description": "text", "start_date": "date", "end_date": "date"}
PM_ACCEPTS: dict[str, set[str]] = {
    "text": TEXT_LIKE | NUMERIC | DATES | {"boolean"},
    "number": NUMERIC,
    "date": DATES,
    "boolean": {"boolean"},
}

# What kind of JSON value a custom field was seen holding, and which declared types fit it.
KIND_FITS: dict[str, set[str]] = {
    "string": TEXT_LIKE | DATES,
    "integer": NUMERIC,
    "decimal": {"decimal", "currency", "percent"},
    "boolean": {"boolean"},
    "any": TEXT_LIKE | NUMERIC | DATES | {"boolean"},
}
KIND_DEFAULT_TYPE = {"string": "text", "integer": "integer", "decimal": "decimal", "boolean": "boolean", "any": "text"}


def value_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "decimal"
    if isinstance(value, str):
        return "string"
    return "any"


def merge_kind(old: str | None, new: str) -> str:
    """The least general kind that holds both: integer < decimal < string, boolean < string; a null
    value ("any") tells nothing. A join, so the inferred kind never depends on the order records arrive."""
    if old is None or old == "any":
        return new
    if new == "any" or new == old:
        return old
    if {old, new} == {"integer", "decimal"}:
        return "decimal"
    return "string"


def pm_value_type(value: Any) -> str:
    kind = value_kind(value)
    if kind in ("integer", "decimal"):
        return "number"
    if kind == "boolean":
        return "boolean"
    if kind == "string" and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return "date"
    return "text"


@dataclass(frozen=True)
class MappingProblem:
    pm_field: str
    crm_module: str
    crm_field: str
    problem: str

    def text(self) -> str:
        return f"{self.pm_field} ← {self.crm_module}.{self.crm_field}: {self.problem}"


def validate_mapping(
    mapping: Sequence[Mapping[str, Any]],
    custom_fields: Mapping[tuple[str, str], str],
    pm_custom_types: Mapping[str, str],
) -> list[MappingProblem]:
    """Problems of a field mapping (empty = valid).

    `custom_fields` are the custom fields of deals/accounts seen so far, (module, field) → value
    kind; `pm_custom_types` the PM project custom fields seen so far → PM type. A PM custom field
    the hub never saw is accepted as text: it may exist only in the PM tool's layout.
    """
    problems: list[MappingProblem] = []
    for m in mapping:
        module, crm_field, pm_field = m["crm_module"], m["crm_field"], m["pm_field"]
        declared = m.get("crm_field_type")

        def bad(msg: str) -> None:
            problems.append(MappingProblem(pm_field, module, crm_field, msg))

        standard = STANDARD_CRM_FIELDS.get(module, {})
        if crm_field in standard:
            crm_type = standard[crm_field]
            if declared is not None and declared != crm_type:
                bad(f"the standard field {crm_field} is of type {crm_type}, not {declared}")
                continue
        elif (module, crm_field) in custom_fields:
            kind = custom_fields[(module, crm_field)]
            if declared is not None and declared not in KIND_FITS[kind]:
                bad(f"the custom field {crm_field} holds {kind} values, which do not fit type {declared}")
                continue
            crm_type = declared or KIND_DEFAULT_TYPE[kind]
        else:
            bad(f"unknown field: {module} has no standard or custom field named {crm_field}")
            continue
        pm_type = STANDARD_PM_FIELDS.get(pm_field) or pm_custom_types.get(pm_field, "text")
        if crm_type not in PM_ACCEPTS[pm_type]:
            bad(f"incompatible types: the PM field {pm_field} is {pm_type}, the CRM field is {crm_type}")
    return problems


def _crm_value(module: str, crm_field: str, record: Mapping[str, Any] | None) -> Any:
    if record is None:
        return None
    standard = {
        ("deals", "Deal_Name"): "name", ("deals", "Amount"): "amount", ("deals", "Closing_Date"): "closing_date",
        ("deals", "Stage"): "stage", ("deals", "Owner"): "owner_id", ("deals", "Account_Name"): "account_id",
        ("accounts", "Account_Name"): "name", ("accounts", "Owner"): "owner_id",
    }
    key = standard.get((module, crm_field))
    if key is not None:
        return record.get(key)
    return (record.get("custom_fields") or {}).get(crm_field)


@dataclass
class ProjectDraft:
    name: str
    description: str | None = None
    start_date: date | None = None
    end_date: date | None = None
    custom_fields: dict[str, Any] = field(default_factory=dict)


def _as_date(value: Any) -> date | None:
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            return None
    return None


def project_from_mapping(mapping: Sequence[Mapping[str, Any]], deal: Mapping[str, Any],
                         account: Mapping[str, Any] | None) -> ProjectDraft:
    """The project a won deal creates (S14): PM fields filled from the deal and its account."""
    draft = ProjectDraft(name=str(deal.get("name") or "Project"))
    for m in mapping:
        source = deal if m["crm_module"] == "deals" else account
        value = _crm_value(m["crm_module"], m["crm_field"], source)
        if value is None:
            continue
        pm_field = m["pm_field"]
        if pm_field == "name":
            draft.name = str(value)[:255]
        elif pm_field == "description":
            draft.description = str(value)
        elif pm_field in ("start_date", "end_date"):
            setattr(draft, pm_field, _as_date(value))
        else:
            if isinstance(value, (str, int, float, bool)):
                draft.custom_fields[pm_field] = value
            else:
                draft.custom_fields[pm_field] = str(value)
    return draft


# --- who may do what (S3, S4) --------------------------------------------------------------------

LINK_PERMISSIONS = {"edit_project", "associate_project"}


@dataclass(frozen=True)
class Actor:
    crm_user_id: str
    active: bool
    is_admin: bool
    permissions: frozenset[str]
    portal_user_id: str | None
    email: str | None = None
    name: str | None = None
    locale: str | None = None
    time_zone: str | None = None


def may_change_settings(actor: Actor | None) -> tuple[bool, str, str]:
    if actor is None:
        return False, "unknown_user", "the hub does not know this CRM user yet"
    if not actor.active:
        return False, "not_admin", "the user is inactive; only active CRM admins may change the integration"
    if not actor.is_admin:
        return False, "not_admin", "only CRM admins may change the integration's settings"
    return True, "", ""


def may_link_at_all(actor: Actor | None) -> tuple[bool, str, str]:
    """S4: a user with neither edit nor associate permission gets a clear refusal."""
    if actor is None:
        return False, "unknown_user", "the hub does not know this CRM user yet"
    if not actor.active:
        return False, "permission_denied", "the user is inactive"
    if actor.is_admin or actor.permissions & LINK_PERMISSIONS:
        return True, "", ""
    return False, "permission_denied", "you need the 'edit project' or 'associate project' permission in the PM tool"


def may_link_project(actor: Actor, project: Mapping[str, Any]) -> bool:
    """Admins may associate any project; others only projects they are a member or owner of."""
    if not may_link_at_all(actor)[0]:
        return False
    if actor.is_admin:
        return True
    pu = actor.portal_user_id
    return pu is not None and (pu == project.get("owner_id") or pu in (project.get("user_ids") or []))


# --- duplicate client e-mails (S19) -------------------------------------------------------------


def normalise_email(email: str) -> str:
    return email.strip().lower()


def duplicate_emails(contacts: Iterable[tuple[str, str | None]]) -> dict[str, list[str]]:
    """address → contact ids, for addresses used by more than one contact."""
    by_email: dict[str, list[str]] = {}
    for contact_id, email in contacts:
        if email:
            by_email.setdefault(normalise_email(email), []).append(contact_id)
    return {e: sorted(ids) for e, ids in sorted(by_email.items()) if len(ids) > 1}


# --- client ↔ account matching (S21/S22) ---------------------------------------------------------

_SUFFIXES = (
    "株式会社", "(株)", "㈱", "有限会社", "合同会社",
    "incorporated", "inc", "corporation", "corp", "company", "co", "limited", "ltd", "llc", "gmbh", "kk", "plc",
)


def normalise_name(name: str) -> str:
    """NFKC, case-folded, punctuation dropped, corporate suffixes removed, spaces collapsed."""
    s = unicodedata.normalize("NFKC", name).casefold()
    for suffix in ("株式会社", "有限会社", "合同会社", "(株)", "㈱"):
        s = s.replace(suffix, " ")
    s = re.sub(r"[^\w\s]", " ", s)
    words = [w for w in s.split() if w not in _SUFFIXES]
    return " ".join(words)


@dataclass(frozen=True)
class MatchResult:
    client_id: str
    client_name: str
    outcome: str  # matched | no_match | ambiguous | error
    account_id: str | None = None
    account_name: str | None = None
    reason: str = ""
    candidates: tuple[str, ...] = ()  # ambiguous: the names of the accounts it could be


def match_client(client_id: str, client_name: str, accounts_by_norm: Mapping[str, list[tuple[str, str]]]) -> MatchResult:
    norm = normalise_name(client_name)
    if not norm:
        return MatchResult(client_id, client_name, "error", reason=f"the client name {client_name!r} has nothing to match on")
    found = accounts_by_norm.get(norm, [])
    if not found:
        return MatchResult(client_id, client_name, "no_match", reason=f"no CRM account named like {client_name!r}")
    if len(found) > 1:
        names = ", ".join(f"{n} ({i})" for i, n in found[:10])
        return MatchResult(client_id, client_name, "ambiguous", reason=f"{len(found)} accounts match: {names}",
                           candidates=tuple(n for _, n in found[:10]))
    account_id, account_name = found[0]
    return MatchResult(client_id, client_name, "matched", account_id=account_id, account_name=account_name)


def index_accounts(accounts: Iterable[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for account_id, name in accounts:
        norm = normalise_name(name)
        if norm:
            out.setdefault(norm, []).append((account_id, name))
    return out


# --- service keys (S24) --------------------------------------------------------------------------

KEY_PREFIX = "hubk_"


def new_service_key() -> str:
    """32 random bytes, URL-safe; shown once, stored only as its SHA-256."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_matches(presented: str, stored_sha256: str) -> bool:
    return hmac.compare_digest(key_sha256(presented), stored_sha256)


# --- matching report pages (S21/S22, issue 15) ----------------------------------------------------

PAGE_BYTES = 96 * 1024
"""Rows per page are cut by their encoded size, well under Kafka's message limit (256 KiB here): a page of
long Japanese names or long reasons holds fewer rows than a page of short Latin ones, never too many bytes."""
PAGE_ROWS = 1000


def report_pages(matched: Sequence[Any], unmatched: Sequence[Any], *, budget: int = PAGE_BYTES,
                 max_rows: int = PAGE_ROWS) -> list[tuple[list[Any], list[Any]]]:
    """Cut a report's rows (pydantic models) into pages of (matched, unmatched), in order, each at most
    `budget` bytes of JSON and `max_rows` rows per list; an empty report is one empty page."""
    pages: list[tuple[list[Any], list[Any]]] = [([], [])]
    size = 0
    for which, rows in ((0, matched), (1, unmatched)):
        for row in rows:
            row_size = len(row.model_dump_json().encode()) + 1
            page = pages[-1]
            if (page[0] or page[1]) and (size + row_size > budget or len(page[which]) >= max_rows):
                pages.append(([], []))
                size = 0
            pages[-1][which].append(row)
            size += row_size
    return pages
