"""`hub_platform.batch.upsert_rows`: the bulk versioned upsert services flush their batch state with."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import pytest

from hub_devstack.pytest_plugin import HubEnv
from hub_platform.batch import upsert_rows, upsert_sql

pytestmark = pytest.mark.integration


@dataclass
class Account:
    org_id: str
    id: str
    name: str
    version: int


async def test_newer_versions_win_older_ones_are_ignored(hub_env: HubEnv) -> None:
    conn = await asyncpg.connect(hub_env.admin_dsn)
    try:
        await conn.execute("CREATE TEMP TABLE accounts (org_id text, id text, name text, version int, PRIMARY KEY (org_id, id))")
        sent = await upsert_rows(conn, "accounts", [Account("o", "1", "Acme", 2), Account("o", "2", "Beta", 1)],
                                 key=("org_id", "id"), version="version")
        assert sent == 2
        await upsert_rows(conn, "accounts", [Account("o", "1", "Old", 1), Account("o", "2", "Beta KK", 3),
                                             Account("o", "2", "Beta KK old", 2)], key=("org_id", "id"), version="version")
        rows = {r["id"]: (r["name"], r["version"]) for r in await conn.fetch("SELECT * FROM accounts")}
        assert rows == {"1": ("Acme", 2), "2": ("Beta KK", 3)}
        assert await upsert_rows(conn, "accounts", [], key=("org_id", "id")) == 0
    finally:
        await conn.close()


def test_only_plain_identifiers_reach_the_sql() -> None:
    with pytest.raises(ValueError, match="identifier"):
        upsert_sql("accounts; drop table x", ["id"], key=["id"])
    assert upsert_sql("t", ["id", "n"], key=["id"], update=[]).endswith("DO NOTHING")


async def test_two_transactions_writing_the_same_keys_in_opposite_order_wait_instead_of_deadlocking(hub_env: HubEnv) -> None:
    """Two partition groups of one consumer (or two replicas) may flush overlapping keys at once: upsert_rows writes
    in key order, so the second waits for the first and both commit (given in opposite orders, unsorted rows
    would lock 1 then 2 and 2 then 1 and one transaction would be killed as a deadlock)."""
    import asyncio

    setup = await asyncpg.connect(hub_env.admin_dsn)
    table = f"accounts_{id(setup)}"
    await setup.execute(f"CREATE TABLE {table} (org_id text, id text, name text, version int, PRIMARY KEY (org_id, id))")
    a, b = await asyncpg.connect(hub_env.admin_dsn), await asyncpg.connect(hub_env.admin_dsn)
    try:
        first = [Account("o", str(i), f"a{i}", 1) for i in range(200)]
        second = [Account("o", str(i), f"b{i}", 2) for i in reversed(range(200))]

        async def flush(conn: asyncpg.Connection, rows: list[Account]) -> None:
            async with conn.transaction():
                await upsert_rows(conn, table, rows, key=("org_id", "id"), version="version")
                await asyncio.sleep(0.2)  # hold the locks while the other transaction writes

        await asyncio.gather(flush(a, first), flush(b, second))
        rows = {r["id"]: r["name"] for r in await setup.fetch(f"SELECT * FROM {table}")}
        assert rows == {str(i): f"b{i}" for i in range(200)}, "version 2 wins whichever committed first"
    finally:
        await a.close()
        await b.close()
        await setup.execute(f"DROP TABLE {table}")
        await setup.close()
