"""SQL of the linking service, split by aggregate; every statement the service sends is in this package.

`tables` is what the batch state reads and writes set-based (one statement per table per batch); the other
modules are the reads and writes of the request handlers, which are rare and run after the state was written
back (see `hub_linking.state`).
"""

from hub_linking.storage.links import (
    active_links_of_portal, add_pending, is_linked, linked_project_ids, set_links, take_pending,
)
from hub_linking.storage.settings import (
    custom_fields, disable_integration, get_actor, get_integration, get_portal, get_users, mark_matched,
    pm_custom_types, save_integration, store_service_key, switch_portal,
)
from hub_linking.storage.upstream import (
    accounts_of_companies, accounts_of_org, client_users_of_company, clients_of_portal, contacts_of_account,
    get_client_users, get_pair, get_pairs, get_project, get_record, get_records, group_exists, projects_of_company,
    projects_of_portal, set_pairs,
)

__all__ = [
    "accounts_of_companies", "accounts_of_org", "active_links_of_portal", "add_pending", "client_users_of_company",
    "clients_of_portal", "contacts_of_account", "custom_fields", "disable_integration", "get_actor", "get_client_users",
    "get_integration", "get_pair", "get_pairs", "get_portal", "get_project", "get_record", "get_records", "get_users",
    "group_exists", "is_linked", "linked_project_ids", "mark_matched", "pm_custom_types", "projects_of_company",
    "projects_of_portal", "save_integration", "set_links", "set_pairs", "store_service_key", "switch_portal",
    "take_pending",
]
