"""Writing a batch's state back in bulk: the versioned upsert every service needs, once.

A service's `BatchState` (see `hub_platform.consumer`) collects the rows its handlers changed and writes them
with `upsert_rows` in its `flush`: one pipelined `executemany` per table instead of one round trip per event.
Rows are dataclasses or mappings; the column names are the field names.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import re
from collections.abc import Callable, Mapping, Sequence
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
    return _upsert_sql(table, tuple(columns), tuple(key), version, None if update is None else tuple(update))


@functools.lru_cache(maxsize=256)
def _upsert_sql(table: str, columns: Sequence[str], key: Sequence[str], version: str | None,
                update: Sequence[str] | None) -> str:
    """Made once per shape: a service writes a few tables the same way batch after batch (building and checking
    the text was a tenth of a small batch's bulk writes)."""
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
    first = rows[0]
    if dataclasses.is_dataclass(first) and all(type(r) is type(first) for r in rows):
        # attribute getters made once per call: building a dict per row was a tenth of a flush's CPU
        columns = list(columns or _field_names(type(first)))
        values, keys = _getter(operator.attrgetter, columns), _getter(operator.attrgetter, key)
        ordered: Sequence[Any] = rows
    else:
        ordered = [_as_mapping(r) for r in rows]
        columns = list(columns or ordered[0].keys())
        values, keys = _getter(operator.itemgetter, columns), _getter(operator.itemgetter, key)
    ordered = sorted(ordered, key=lambda r: tuple(str(v) for v in keys(r)))
    await conn.executemany(upsert_sql(table, columns, key=key, version=version, update=update),
                           [values(r) for r in ordered])
    return len(ordered)


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _getter(kind: Any, names: Sequence[str]) -> Callable[[Any], tuple[Any, ...]]:
    """`attrgetter`/`itemgetter` of `names` that always returns a tuple (they return a bare value for one name)."""
    get = kind(*names)
    if len(names) == 1:
        return lambda r: (get(r),)
    return get  # type: ignore[no-any-return]


class LoadRound:
    """Several set-based loads of one batch's state in one round trip.

    A batch's state loads are independent `SELECT`s of different tables; sent one after another they are one round
    trip each (six for a tasks batch of PM tasks), a fixed cost every batch pays, most of a small batch's time. Here
    each load is a sub-select yielding whole rows of its table (`SELECT t FROM pm_tasks t WHERE …`), and the round
    sends them as one statement, `SELECT ARRAY(…) AS pm_tasks, ARRAY(…) AS users, …`: PostgreSQL returns each as an
    array of the table's row type, which asyncpg decodes to `Record`s with the table's column names, typed as a
    plain `SELECT *` would be (jsonb included: it needs the binary jsonb codec of `hub_platform.db`).

    Parameters are placed with `arg`, which returns the placeholder (`$3::text[]`) for the SQL being built, so the
    text is written with its final numbers and never renumbered. A load that is not added costs nothing; each
    combination of loads is one statement text, prepared once per connection (asyncpg's statement cache).
    """

    def __init__(self) -> None:
        self._args: list[Any] = []
        self._loads: dict[str, str] = {}

    def arg(self, value: Any, pg_type: str) -> str:
        """A parameter of the round: its placeholder, with its type (`text[]`, `uuid[]`) cast on."""
        _check(pg_type.removesuffix("[]"))
        self._args.append(value)
        return f"${len(self._args)}::{pg_type}"

    def add(self, name: str, rows_sql: str) -> None:
        """`rows_sql` selects one column, a whole row of a table (`SELECT t FROM users t WHERE …`); the round's
        result has its rows under `name`."""
        _check(name)
        if name in self._loads:
            raise ValueError(f"{name!r} is loaded twice in one round")
        self._loads[name] = rows_sql

    def __bool__(self) -> bool:
        return bool(self._loads)

    async def fetch(self, conn: asyncpg.Connection) -> dict[str, list[asyncpg.Record]]:
        """Every load's rows by name ({} and no round trip if nothing was added)."""
        if not self._loads:
            return {}
        sql = "SELECT " + ", ".join(f"ARRAY({q}) AS {name}" for name, q in self._loads.items())
        row = await conn.fetchrow(sql, *self._args)
        return {name: row[name] for name in self._loads}
