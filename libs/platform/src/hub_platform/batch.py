"""Writing a batch's state back in bulk: the versioned upsert every service needs, once.

A service's `BatchState` (see `hub_platform.consumer`) collects the rows its handlers changed and writes them
with `upsert_rows` in its `flush`: one pipelined `executemany` per table instead of one round trip per event.
Rows are dataclasses or mappings; the column names are the field names.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


def _check(*names: str) -> None:
    for name in names:
        if not _IDENT.match(name):
            raise ValueError(f"not a plain SQL identifier: {name!r}")


def _as_mapping(row: Any) -> Mapping[str, Any]:
    if dataclasses.is_dataclass(row) and not isinstance(row, type):
        return {f.name: getattr(row, f.name) for f in dataclasses.fields(row)}
    return row


def upsert_sql(table: str, columns: Sequence[str], *, key: Sequence[str], version: str | None = None,
               update: Sequence[str] | None = None) -> str:
    """`INSERT … ON CONFLICT (key) DO UPDATE` of `update` (default: every non-key column); with `version`, a row
    is only replaced by a newer one (`WHERE table.version < EXCLUDED.version`), so an old event replayed or
    arriving late never overwrites what a newer one wrote."""
    _check(table, *columns, *key, *(update or ()), *((version,) if version else ()))
    update = [c for c in columns if c not in key] if update is None else list(update)
    placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders}) ON CONFLICT ({', '.join(key)}) "
    if not update:
        return sql + "DO NOTHING"
    sql += "DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in update)
    if version:
        sql += f" WHERE {table}.{version} < EXCLUDED.{version}"
    return sql


async def upsert_rows(conn: asyncpg.Connection, table: str, rows: Sequence[Any], *, key: Sequence[str],
                      version: str | None = None, columns: Sequence[str] | None = None,
                      update: Sequence[str] | None = None) -> int:
    """Upsert `rows` (dataclasses or mappings) into `table` in one pipelined round trip; returns how many were sent.

    `columns` defaults to the first row's fields. Two rows with the same key in one call are applied in order
    (the later one wins, or the newer one with `version`).

    The rows are written in key order (a stable sort, so the order of one key's rows holds): two transactions
    writing overlapping keys of a table (two replicas, or two partition groups of one consumer) then lock them
    in the same order and wait for each other instead of deadlocking.
    """
    if not rows:
        return 0
    mappings = sorted((_as_mapping(r) for r in rows), key=lambda m: tuple(str(m[k]) for k in key))
    columns = list(columns or mappings[0].keys())
    await conn.executemany(upsert_sql(table, columns, key=key, version=version, update=update),
                           [tuple(m[c] for c in columns) for m in mappings])
    return len(mappings)
