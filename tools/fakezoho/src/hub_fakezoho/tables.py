"""The fake Zoho's own tables, in SQLite: one row per record (its JSON as Zoho returns it).

SQLite rather than the hub's PostgreSQL: the fake is one process standing in for another company's
servers, started per test (dozens of instances per run) or per demo; a PostgreSQL database for each would
need provisioning and an async API its tests do not need, while SQLite gives it real tables in memory for
a test or in a file under the state folder for `make up ZOHO=fake` (kept across restarts of the fake).

`Kinds(db, table)["Tasks"]` is a mutable mapping id -> record over the rows of one module or kind; a
record read from it is a copy, so a change is written back by assigning it again.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, MutableMapping
from typing import Any

TABLES = ("crm_records", "crm_recycle_bin", "pm_records", "pm_portals")


class Table(MutableMapping[str, dict[str, Any]]):
    def __init__(self, db: sqlite3.Connection, table: str, kind: str) -> None:
        self.db, self.table, self.kind = db, table, kind

    def __getitem__(self, record_id: str) -> dict[str, Any]:
        row = self.db.execute(f"SELECT data FROM {self.table} WHERE kind = ? AND id = ?", (self.kind, str(record_id))).fetchone()
        if row is None:
            raise KeyError(record_id)
        return dict(json.loads(row[0]))

    def __setitem__(self, record_id: str, record: dict[str, Any]) -> None:
        self.db.execute(f"""INSERT INTO {self.table} (kind, id, data) VALUES (?, ?, ?)
                            ON CONFLICT (kind, id) DO UPDATE SET data = excluded.data""",
                        (self.kind, str(record_id), json.dumps(record, default=str)))

    def __delitem__(self, record_id: str) -> None:
        if self.db.execute(f"DELETE FROM {self.table} WHERE kind = ? AND id = ?", (self.kind, str(record_id))).rowcount == 0:
            raise KeyError(record_id)

    def __iter__(self) -> Iterator[str]:
        return iter([r[0] for r in self.db.execute(f"SELECT id FROM {self.table} WHERE kind = ? ORDER BY rowid", (self.kind,))])

    def __len__(self) -> int:
        return int(self.db.execute(f"SELECT count(*) FROM {self.table} WHERE kind = ?", (self.kind,)).fetchone()[0])

    def values(self) -> list[dict[str, Any]]:  # type: ignore[override]
        """In insertion order (an update keeps a record's place), as Zoho lists unsorted records."""
        return [json.loads(r[0]) for r in self.db.execute(f"SELECT data FROM {self.table} WHERE kind = ? ORDER BY rowid", (self.kind,))]


class Kinds:
    """The modules (CRM) or kinds (Projects) of one table: `kinds[name]` is that module's Table."""

    def __init__(self, db: sqlite3.Connection, table: str) -> None:
        self.db, self.table = db, table

    def __getitem__(self, kind: str) -> Table:
        return Table(self.db, self.table, kind)


def open_tables(path: str = ":memory:") -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)  # autocommit: every write is durable at once
    if path != ":memory:":
        db.execute("PRAGMA journal_mode=WAL")
    for table in TABLES:
        db.execute(f"CREATE TABLE IF NOT EXISTS {table} (kind TEXT NOT NULL, id TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (kind, id))")
    return db


def highest_numeric_id(db: sqlite3.Connection) -> int:
    """Where the id sequence goes on after a restart."""
    best = 0
    for table in TABLES:
        for (rid,) in db.execute(f"SELECT id FROM {table}"):
            if str(rid).isdigit():
                best = max(best, int(rid))
    return best
