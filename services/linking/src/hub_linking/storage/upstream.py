"""SQL of the upstream copies the request handlers read: CRM records, projects, client users, groups, pairs."""

from __future__ import annotations

import asyncpg

from hub_linking import rows
from hub_linking.storage.tables import (
    CLIENT_COMPANIES, CLIENT_USERS, CRM_RECORDS, PAIRS, PROJECT_GROUPS, PROJECTS, load_rows, row_of,
)


async def get_record(conn: asyncpg.Connection, org_id: str, record_type: str, record_id: str) -> rows.CrmRecord | None:
    found = await load_rows(conn, CRM_RECORDS, [(org_id, record_type, record_id)])
    return found[0] if found and not found[0].deleted else None


async def get_records(conn: asyncpg.Connection, org_id: str, record_type: str,
                      record_ids: list[str]) -> dict[str, rows.CrmRecord]:
    found = await load_rows(conn, CRM_RECORDS, [(org_id, record_type, i) for i in set(record_ids)])
    return {r.record_id: r for r in found if not r.deleted}


async def contacts_of_account(conn: asyncpg.Connection, org_id: str, account_id: str) -> list[rows.CrmRecord]:
    found = await conn.fetch(
        f"""SELECT {', '.join(CRM_RECORDS.columns)} FROM crm_records WHERE org_id = $1 AND record_type = 'contact'
            AND account_id = $2 AND NOT deleted ORDER BY record_id""", org_id, account_id)
    return [row_of(CRM_RECORDS, r) for r in found]


async def accounts_of_org(conn: asyncpg.Connection, org_id: str) -> list[tuple[str, str]]:
    """(record_id, name) of every account of the org (what matching indexes)."""
    found = await conn.fetch(
        "SELECT record_id, name FROM crm_records WHERE org_id = $1 AND record_type = 'account' AND NOT deleted", org_id)
    return [(r["record_id"], r["name"]) for r in found]


async def get_project(conn: asyncpg.Connection, org_id: str, portal_id: str, project_id: str) -> rows.Project | None:
    found = await load_rows(conn, PROJECTS, [(org_id, portal_id, project_id)])
    return found[0] if found and not found[0].deleted else None


async def projects_of_portal(conn: asyncpg.Connection, org_id: str, portal_id: str) -> list[rows.Project]:
    found = await conn.fetch(
        f"SELECT {', '.join(PROJECTS.columns)} FROM projects WHERE org_id = $1 AND portal_id = $2 AND NOT deleted "
        "ORDER BY project_id", org_id, portal_id)
    return [row_of(PROJECTS, r) for r in found]


async def projects_of_company(conn: asyncpg.Connection, org_id: str, portal_id: str, company_id: str) -> list[rows.Project]:
    found = await conn.fetch(
        f"""SELECT {', '.join(PROJECTS.columns)} FROM projects WHERE org_id = $1 AND portal_id = $2 AND NOT deleted
            AND client_company_ids ? $3 ORDER BY project_id""", org_id, portal_id, company_id)
    return [row_of(PROJECTS, r) for r in found]


async def clients_of_portal(conn: asyncpg.Connection, org_id: str, portal_id: str) -> list[rows.ClientCompany]:
    found = await conn.fetch(
        f"SELECT {', '.join(CLIENT_COMPANIES.columns)} FROM client_companies WHERE org_id = $1 AND portal_id = $2 "
        "AND NOT deleted ORDER BY company_id", org_id, portal_id)
    return [row_of(CLIENT_COMPANIES, r) for r in found]


async def client_users_of_company(conn: asyncpg.Connection, org_id: str, portal_id: str,
                                  company_id: str) -> list[rows.ClientUser]:
    found = await conn.fetch(
        f"SELECT {', '.join(CLIENT_USERS.columns)} FROM client_users WHERE org_id = $1 AND portal_id = $2 "
        "AND company_id = $3 AND NOT deleted", org_id, portal_id, company_id)
    return [row_of(CLIENT_USERS, r) for r in found]


async def get_client_users(conn: asyncpg.Connection, org_id: str, portal_id: str,
                           client_user_ids: list[str]) -> dict[str, rows.ClientUser]:
    found = await load_rows(conn, CLIENT_USERS, [(org_id, portal_id, i) for i in set(client_user_ids)])
    return {u.client_user_id: u for u in found if not u.deleted}


async def group_exists(conn: asyncpg.Connection, org_id: str, portal_id: str, group_id: str) -> bool:
    found = await load_rows(conn, PROJECT_GROUPS, [(org_id, portal_id, group_id)])
    return bool(found) and not found[0].deleted


async def get_pair(conn: asyncpg.Connection, org_id: str, portal_id: str, kind: str, crm_id: str) -> str | None:
    return (await get_pairs(conn, org_id, portal_id, kind, [crm_id])).get(crm_id)


async def get_pairs(conn: asyncpg.Connection, org_id: str, portal_id: str, kind: str,
                    crm_ids: list[str]) -> dict[str, str]:
    """crm_id → pm_id of the given ids that are paired."""
    found = await load_rows(conn, PAIRS, [(org_id, portal_id, kind, i) for i in set(crm_ids)])
    return {p.crm_id: p.pm_id for p in found}


async def accounts_of_companies(conn: asyncpg.Connection, org_id: str, portal_id: str,
                                company_ids: list[str]) -> dict[str, str]:
    """client company → the account paired with it."""
    found = await conn.fetch(
        "SELECT pm_id, crm_id FROM customer_pairs WHERE org_id = $1 AND portal_id = $2 AND kind = 'account' "
        "AND pm_id = ANY($3::text[])", org_id, portal_id, company_ids)
    return {r["pm_id"]: r["crm_id"] for r in found}


async def set_pairs(conn: asyncpg.Connection, org_id: str, portal_id: str, kind: str, pairs: dict[str, str],
                    revision: int = 0) -> None:
    """Pair crm_id → pm_id (a pair stored with a newer revision stays)."""
    if not pairs:
        return
    await conn.executemany(
        """INSERT INTO customer_pairs (org_id, portal_id, kind, crm_id, pm_id, revision) VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (org_id, portal_id, kind, crm_id) DO UPDATE SET pm_id = EXCLUDED.pm_id,
               revision = GREATEST(customer_pairs.revision, EXCLUDED.revision)
           WHERE customer_pairs.revision <= EXCLUDED.revision""",
        [(org_id, portal_id, kind, crm_id, pm_id, revision) for crm_id, pm_id in sorted(pairs.items())])
