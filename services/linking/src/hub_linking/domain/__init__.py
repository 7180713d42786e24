"""Pure rules of the linking service: no I/O, so every rule is unit-tested on its own.

Why these live apart from the handlers: the same rule (who may associate a project, whether a field mapping is
valid, how client names match accounts) is used by the event handlers and by the read API, and is easier to
reason about without a database. Split by concern; everything is importable from `hub_linking.domain`.
"""

from hub_linking.domain.access import (
    LINK_PERMISSIONS, Actor, ProjectMembers, may_change_settings, may_link_at_all, may_link_project,
)
from hub_linking.domain.keys import KEY_PREFIX, key_matches, key_sha256, new_service_key
from hub_linking.domain.mapping import (
    DATES, KIND_DEFAULT_TYPE, KIND_FITS, NUMERIC, PM_ACCEPTS, STANDARD_CRM_FIELDS, STANDARD_PM_FIELDS, TEXT_LIKE,
    MappingProblem, ProjectDraft, merge_kind, pm_value_type, project_from_mapping, validate_mapping, value_kind,
)
from hub_linking.domain.matching import (
    PAGE_BYTES, PAGE_ROWS, MatchResult, duplicate_emails, index_accounts, match_client, report_pages,
)

__all__ = [
    "DATES", "KEY_PREFIX", "KIND_DEFAULT_TYPE", "KIND_FITS", "LINK_PERMISSIONS", "NUMERIC", "PAGE_BYTES", "PAGE_ROWS",
    "PM_ACCEPTS", "STANDARD_CRM_FIELDS", "STANDARD_PM_FIELDS", "TEXT_LIKE", "Actor", "MappingProblem", "MatchResult",
    "ProjectDraft", "ProjectMembers", "duplicate_emails", "index_accounts", "key_matches", "key_sha256",
    "match_client", "may_change_settings", "may_link_at_all", "may_link_project", "merge_kind", "new_service_key",
    "pm_value_type", "project_from_mapping", "report_pages", "validate_mapping", "value_kind",
]
