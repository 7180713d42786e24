"""`hub_platform.batch.LoadRound`: several loads of a batch's state in one round trip, each decoded exactly as a
plain `SELECT *` of its table would be (jsonb through the platform's binary codec included)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone

import asyncpg
import pytest

from hub_devstack.pytest_plugin import HubEnv
from hub_platform import db
from hub_platform.batch import LoadRound

pytestmark = pytest.mark.integration

FIELDS = {"nested": {"list": [1, 2.5, None, True], "日本語": "株式会社サンプル"}, "big": 2**70, "empty": {}, "s": "a\"b\\c"}


@pytest.fixture
async def pool(hub_env: HubEnv) -> AsyncIterator[asyncpg.Pool]:
    schema = f"lr_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(hub_env.admin_dsn)
    await admin.execute(f"CREATE SCHEMA {schema}")
    await admin.close()
    pool = await db.create_pool(hub_env.admin_dsn, schema, min_size=1, max_size=1)
    async with pool.acquire() as conn:
        await conn.execute(
            "CREATE TABLE tasks (org_id text, task_id text, id uuid, n integer, big bigint, done boolean, at timestamptz, "
            "tags text[], fields jsonb, note text, PRIMARY KEY (org_id, task_id));"
            "CREATE TABLE users (org_id text, user_id text, names jsonb[], PRIMARY KEY (org_id, user_id))")
        await conn.execute("INSERT INTO tasks VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                           "o", "t1", uuid.uuid4(), 7, 2**40, True, datetime(2026, 12, 1, tzinfo=timezone.utc),
                           ["a", "b"], FIELDS, None)
        await conn.execute("INSERT INTO tasks VALUES ('o', 't2', NULL, NULL, NULL, NULL, NULL, '{}', '[]', 'x')")
        await conn.execute("INSERT INTO users VALUES ('o', 'u1', ARRAY['{\"a\": 1}'::jsonb, 'null'::jsonb])")
    yield pool
    await pool.close()
    admin = await asyncpg.connect(hub_env.admin_dsn)
    await admin.execute(f"DROP SCHEMA {schema} CASCADE")
    await admin.close()


async def test_loads_of_several_tables_come_in_one_round_trip_typed_as_select_star(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        plain = {r["task_id"]: dict(r) for r in await conn.fetch("SELECT * FROM tasks")}
        assert plain["t1"]["fields"] == FIELDS, "the binary jsonb codec writes and reads back every JSON shape"

        def round_() -> LoadRound:
            r = LoadRound()
            orgs = r.arg(["o"], "text[]")  # one parameter used by two loads
            r.add("tasks", f"SELECT t FROM tasks t WHERE t.org_id = ANY({orgs}) ORDER BY t.task_id")
            r.add("locked", f"SELECT t FROM tasks t WHERE t.task_id = ANY({r.arg(['t2'], 'text[]')}) "
                            f"AND t.org_id = ANY({orgs}) ORDER BY t.task_id FOR UPDATE")
            r.add("users", "SELECT t FROM users t")
            r.add("none", f"SELECT t FROM tasks t WHERE t.org_id = ANY({r.arg([], 'text[]')})")
            return r

        await round_().fetch(conn)  # the first time, asyncpg also asks the server what the row types hold
        statements: list[str] = []
        def log(query: object) -> None:
            statements.append(query.query)  # type: ignore[attr-defined]

        conn.add_query_logger(log)
        loaded = await round_().fetch(conn)
        conn.remove_query_logger(log)

    assert len(statements) == 1 and statements[0].startswith("SELECT ARRAY(")
    assert [dict(x) for x in loaded["tasks"]] == [plain["t1"], plain["t2"]]
    assert [type(v) for v in loaded["tasks"][0].values()] == [type(v) for v in plain["t1"].values()]
    assert [dict(x) for x in loaded["locked"]] == [plain["t2"]]
    assert [dict(x) for x in loaded["users"]] == [{"org_id": "o", "user_id": "u1", "names": [{"a": 1}, None]}]
    assert loaded["none"] == []


async def test_an_empty_round_sends_nothing_and_names_are_checked() -> None:
    assert await LoadRound().fetch(None) == {}  # type: ignore[arg-type]  # no connection needed: no round trip
    r = LoadRound()
    r.add("a", "SELECT t FROM a t")
    with pytest.raises(ValueError, match="twice"):
        r.add("a", "SELECT t FROM a t")
    with pytest.raises(ValueError, match="identifier"):
        r.add("a b", "SELECT 1")
    with pytest.raises(ValueError, match="identifier"):
        r.arg([1], "int); DROP TABLE x; --")
