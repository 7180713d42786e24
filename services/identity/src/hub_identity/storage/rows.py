"""Reading and writing the batch state's tables set-based: one statement per table and batch, not per event.

Rows come back as the `hub_identity.rows` dataclass of their table (whole rows read, its fields taken by name), never as asyncpg Records. The table and column names are the dataclasses' own, checked
as plain identifiers by `hub_platform.batch`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, TypeVar

import asyncpg

from hub_platform.batch import LoadRound, upsert_rows

R = TypeVar("R")

_TYPES = {"command_id": "uuid"}
"""SQL type of the key and index columns that are not text."""


def _columns(row_type: type[Any]) -> list[str]:
    return [f.name for f in dataclasses.fields(row_type)]


def query_rows(r: LoadRound, name: str, table: str, row_type: type[Any], columns: Sequence[str],
               values: Sequence[tuple[Any, ...]], *, lock: bool = True) -> None:
    """Every row of `table` whose `columns` equal one of `values`, as the load `name` of the round; with `lock`,
    locked for this transaction (`FOR UPDATE`: another replica's batch touching the same rows waits, so a row read
    here is still what flush overwrites)."""
    arrays = ", ".join(r.arg([v[i] for v in values], f"{_TYPES.get(c, 'text')}[]") for i, c in enumerate(columns))
    names = ", ".join(columns)
    r.add(name, f"SELECT t FROM {table} t JOIN unnest({arrays}) AS k({names}) USING ({names}) "
                f"ORDER BY {', '.join(f't.{c}' for c in row_type.KEY)}{' FOR UPDATE OF t' if lock else ''}")


def rows_of(row_type: type[R], records: Sequence[asyncpg.Record]) -> list[R]:
    columns = _columns(row_type)
    return [row_type(*(x[c] for c in columns)) for x in records]


async def load_rows(conn: asyncpg.Connection, table: str, row_type: type[R], columns: Sequence[str],
                    values: Sequence[tuple[Any, ...]], *, lock: bool = True) -> list[R]:
    """`query_rows` on its own."""
    if not values:
        return []
    r = LoadRound()
    query_rows(r, "found", table, row_type, columns, values, lock=lock)
    return rows_of(row_type, (await r.fetch(conn))["found"])


async def unnormalised_names(conn: asyncpg.Connection, table: str, row_type: type[R]) -> list[R]:
    """Rows written before identity stored `name_norm` (the normaliser is Python: see the migration)."""
    selected = ", ".join(_columns(row_type))
    return [row_type(*r) for r in await conn.fetch(
        f"SELECT {selected} FROM {table} WHERE name_norm IS NULL AND name IS NOT NULL FOR UPDATE")]


async def upsert(conn: asyncpg.Connection, table: str, rows: Sequence[Any], key: Sequence[str]) -> None:
    """Write the batch's changed rows as they are in memory (the state read them locked: it is the truth)."""
    await upsert_rows(conn, table, rows, key=key)


async def delete_rows(conn: asyncpg.Connection, table: str, key: Sequence[str], keys: Sequence[tuple[Any, ...]]) -> None:
    if not keys:
        return
    arrays = ", ".join(f"${i}::{_TYPES.get(c, 'text')}[]" for i, c in enumerate(key, 1))
    names = ", ".join(key)
    await conn.execute(f"DELETE FROM {table} t USING unnest({arrays}) AS k({names}) "
                       f"WHERE {' AND '.join(f't.{c} = k.{c}' for c in key)}",
                       *([v[i] for v in keys] for i in range(len(key))))
