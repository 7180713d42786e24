"""Field mapping (S3, S6): which CRM field may feed which PM field, and the project a won deal makes (S14)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

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


_STANDARD_VALUES = {
    ("deals", "Deal_Name"): "name", ("deals", "Amount"): "amount", ("deals", "Closing_Date"): "closing_date",
    ("deals", "Stage"): "stage", ("deals", "Owner"): "owner_id", ("deals", "Account_Name"): "account_id",
    ("accounts", "Account_Name"): "name", ("accounts", "Owner"): "owner_id",
}
"""Where a standard CRM field's value is in a stored deal or account."""


def _crm_value(module: str, crm_field: str, record: Mapping[str, Any] | None) -> Any:
    if record is None:
        return None
    key = _STANDARD_VALUES.get((module, crm_field))
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


