"""The archive's cache of parsed records, one per kind: by id, in archive order (oldest
first, then by id), and grouped by candidate. The archive keeps it in step with the
database; it holds no database code itself."""

from __future__ import annotations

import bisect

from pydantic import BaseModel

from autolab.records import Trial


def order_key(record: BaseModel) -> tuple:
    """Archive order: oldest first (trials by their start), then by id."""
    if isinstance(record, Trial):
        return (record.started_at, record.id)
    return (record.created_at, record.id)


def field_of(record: BaseModel, name: str) -> object:
    """A field's value, or None for a kind without that field (no attribute lookup miss)."""
    return record.__dict__.get(name) if name in type(record).model_fields else None


class RecordCache:
    """The records of one kind: by id, in archive order, and grouped by candidate (each
    group a tuple in archive order, rebuilt only when one of its records changes)."""

    def __init__(self, records: list[BaseModel] = ()) -> None:
        self.rows = list(records)
        self.keys = [order_key(r) for r in self.rows]
        if any(a >= b for a, b in zip(self.keys, self.keys[1:], strict=False)):
            order = sorted(range(len(self.rows)), key=self.keys.__getitem__)
            self.rows, self.keys = [self.rows[i] for i in order], [self.keys[i] for i in order]
        self.by_id: dict[str, BaseModel] = {r.id: r for r in self.rows}
        self.members: dict[str, dict[str, BaseModel]] = {}
        for r in self.rows:
            if (cid := field_of(r, "candidate_id")) is not None:
                self.members.setdefault(cid, {})[r.id] = r
        self.groups: dict[str, tuple[BaseModel, ...]] = {}
        self.stale: set[str] = set(self.members)

    def add(self, record: BaseModel) -> None:
        self.remove(record.id)
        key = order_key(record)
        at = bisect.bisect_right(self.keys, key)
        self.keys.insert(at, key)
        self.rows.insert(at, record)
        self.by_id[record.id] = record
        if (cid := field_of(record, "candidate_id")) is not None:
            self.members.setdefault(cid, {})[record.id] = record
            self.stale.add(cid)

    def remove(self, record_id: str) -> None:
        old = self.by_id.pop(record_id, None)
        if old is None:
            return
        at = bisect.bisect_left(self.keys, order_key(old))
        while self.rows[at] is not old:
            at += 1
        del self.keys[at], self.rows[at]
        if (cid := field_of(old, "candidate_id")) is not None:
            self.members.get(cid, {}).pop(record_id, None)
            self.stale.add(cid)

    def grouped(self) -> dict[str, tuple[BaseModel, ...]]:
        for cid in self.stale:
            mine = self.members.get(cid)
            if mine:
                self.groups[cid] = tuple(sorted(mine.values(), key=order_key))
            else:
                self.groups.pop(cid, None)
        self.stale.clear()
        return self.groups
