"""Client ↔ account matching (S21/S22) and its report pages, duplicate client e-mails (S19).

Names and e-mails are compared through hub_schema.names, the one normaliser identity uses too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hub_schema.names import normalise_company_name, normalise_email


def duplicate_emails(contacts: Iterable[tuple[str, str | None]]) -> dict[str, list[str]]:
    """address → contact ids, for addresses used by more than one contact."""
    by_email: dict[str, list[str]] = {}
    for contact_id, email in contacts:
        address = normalise_email(email)
        if address:
            by_email.setdefault(address, []).append(contact_id)
    return {e: sorted(ids) for e, ids in sorted(by_email.items()) if len(ids) > 1}


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
    norm = normalise_company_name(client_name)
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
        norm = normalise_company_name(name)
        if norm:
            out.setdefault(norm, []).append((account_id, name))
    return out


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
