"""One table's rows as far as a batch knows them: loaded once, looked up by key or by index, changed in memory.

The batch state (`hub_identity.state`) keeps one `Table` per identity table. A key is `known` once it was
looked up in the database (found or not), so nothing is read twice in a batch; `put`/`delete` record what
flush must write. An index answers "rows with this value" without SQL once that value was loaded
`complete` (every row of the database with it is known), which is what makes the look-ups by name or
e-mail set-based: the loader asks for all values of the batch in one query, then handlers only read memory.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Generic, TypeVar

R = TypeVar("R")
Key = tuple[Any, ...]


class Index:
    """Rows filed by the values of `columns` (loaded with one query for every value a batch asks for);
    `when` leaves rows out of it (a deleted row is never a match), a None column leaves the row out too."""

    def __init__(self, columns: tuple[str, ...], when: Callable[[Any], bool] | None = None) -> None:
        self.columns = columns
        self.when = when
        get = operator.attrgetter(*columns)
        self._get: Callable[[Any], Key] = get if len(columns) > 1 else (lambda row: (get(row),))

    def value(self, row: Any) -> Key | None:
        value = self._get(row)
        if None in value or (self.when is not None and not self.when(row)):
            return None
        return value


class Table(Generic[R]):
    def __init__(self, name: str, row_type: type[R], /, *, lock: bool = True, **indexes: Index) -> None:
        self.name = name
        self.lock = lock
        self.row_type = row_type
        self.key_columns: tuple[str, ...] = row_type.KEY  # type: ignore[attr-defined]
        self.columns = tuple(f.name for f in dataclasses.fields(row_type))  # type: ignore[arg-type]
        self.indexes = indexes
        self.rows: dict[Key, R] = {}
        self.known: set[Key] = set()
        self.dirty: set[Key] = set()
        self.gone: set[Key] = set()
        self.complete: set[tuple[str, Hashable]] = set()
        self._index: dict[str, dict[Hashable, set[Key]]] = {i: {} for i in indexes}

    def key(self, row: R) -> Key:
        return tuple(getattr(row, c) for c in self.key_columns)

    def missing(self, keys: Iterable[Key]) -> list[Key]:
        return sorted({k for k in keys if k not in self.known})

    def loaded(self, keys: Iterable[Key], rows: Iterable[R]) -> list[R]:
        """Take rows read from the database; `keys` were asked for (absent ones become known as absent).
        A key known already keeps its in-memory row (it may have changed since). Returns the rows taken."""
        taken = []
        for row in rows:
            key = self.key(row)
            if key not in self.known:
                self.known.add(key)
                self.rows[key] = row
                self._file(key, row)
                taken.append(row)
        self.known.update(keys)
        return taken

    def get(self, key: Key) -> R | None:
        if key not in self.known:
            raise LookupError(f"{self.name} {key} was not loaded for this batch")
        return self.rows.get(key)

    def put(self, row: R) -> R:
        key = self.key(row)
        self._unfile(key)
        self.rows[key] = row
        self.known.add(key)
        self.dirty.add(key)
        self.gone.discard(key)
        self._file(key, row)
        return row

    def delete(self, key: Key) -> None:
        self._unfile(key)
        self.rows.pop(key, None)
        self.known.add(key)
        self.dirty.discard(key)
        self.gone.add(key)

    def find(self, index: str, value: Hashable) -> list[R]:
        """Rows filed under `value`, by key order; only authoritative if `(index, value)` is complete."""
        if (index, value) not in self.complete:
            raise LookupError(f"{self.name}.{index} = {value!r} was not loaded for this batch")
        return [self.rows[k] for k in sorted(self._index[index].get(value, ()))]

    def take_writes(self) -> tuple[list[R], list[Key]]:
        """The rows to upsert and the keys to delete since the last flush; forgets them."""
        writes = [self.rows[k] for k in sorted(self.dirty)]
        gone = sorted(self.gone)
        self.dirty.clear()
        self.gone.clear()
        return writes, gone

    def snapshot(self) -> Any:
        return dict(self.rows), set(self.known), set(self.dirty), set(self.gone), set(self.complete)

    def restore(self, snapshot: Any) -> None:
        rows, known, dirty, gone, complete = snapshot
        self.rows, self.known, self.dirty, self.gone, self.complete = dict(rows), set(known), set(dirty), set(gone), set(complete)
        self._index = {i: {} for i in self.indexes}
        for key, row in self.rows.items():
            self._file(key, row)

    def _file(self, key: Key, row: R) -> None:
        for name, index in self.indexes.items():
            value = index.value(row)
            if value is not None:
                self._index[name].setdefault(value, set()).add(key)

    def _unfile(self, key: Key) -> None:
        row = self.rows.get(key)
        if row is None:
            return
        for name, index in self.indexes.items():
            value = index.value(row)
            if value is not None:
                self._index[name].get(value, set()).discard(key)
