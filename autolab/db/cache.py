"""The archive's cache of parsed records, one per kind: by id, in archive order (oldest
first, then by id), and grouped by candidate. The archive keeps it in step with the
database; it holds no database code itself.

It also says what changed since a reader last looked (`since`, `regrouped`), so that what
is derived from many records can be kept up to date from the few that changed."""

from __future__ import annotations

import bisect
import itertools
from typing import NamedTuple

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


_EPOCHS = itertools.count(1)  # unique over the process: a new cache never takes an old mark


class Changes(NamedTuple):
    """What a reader of one kind's records learns from `RecordCache.since`."""

    records: list[BaseModel]  # added since the mark, in archive order; all of them if `whole`
    whole: bool  # start over: no mark, or a record was replaced or removed since the mark
    at_end: bool  # every one of `records` comes after every record the reader had
    mark: tuple[int, int]  # to give next time


class RecordCache:
    """The records of one kind: by id, in archive order, and grouped by candidate (each
    group a tuple in archive order, rebuilt only when one of its records changes).

    Readers that keep something derived from many records learn what changed since they
    last looked: the records added (`since`), and the candidates whose group changed
    (`regrouped`). `epoch` changes whenever a record is replaced or removed; `added` lists
    the records in the order they were added, `inserted` the place in it of the newest one
    that went before the last record (the campaign loop adds records at the end), and
    `touched` the candidates whose group changed, in the order of the changes."""

    def __init__(self, records: list[BaseModel] = ()) -> None:
        self.rows = list(records)
        self.keys = [order_key(r) for r in self.rows]
        if any(a >= b for a, b in zip(self.keys, self.keys[1:], strict=False)):
            order = sorted(range(len(self.rows)), key=self.keys.__getitem__)
            self.rows, self.keys = [self.rows[i] for i in order], [self.keys[i] for i in order]
        self.serial, self.epoch = next(_EPOCHS), next(_EPOCHS)
        self.added, self.inserted = list(self.rows), -1
        self.touched: list[str] = []
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
        if at != len(self.keys):
            self.inserted = len(self.added)
        self.added.append(record)
        self.keys.insert(at, key)
        self.rows.insert(at, record)
        self.by_id[record.id] = record
        if (cid := field_of(record, "candidate_id")) is not None:
            self.members.setdefault(cid, {})[record.id] = record
            self.stale.add(cid)
            self.touched.append(cid)

    def remove(self, record_id: str) -> None:
        old = self.by_id.pop(record_id, None)
        if old is None:
            return
        self.epoch = next(_EPOCHS)
        at = bisect.bisect_left(self.keys, order_key(old))
        while self.rows[at] is not old:
            at += 1
        del self.keys[at], self.rows[at]
        if (cid := field_of(old, "candidate_id")) is not None:
            self.members.get(cid, {}).pop(record_id, None)
            self.stale.add(cid)
            self.touched.append(cid)

    def grouped(self) -> dict[str, tuple[BaseModel, ...]]:
        for cid in self.stale:
            mine = self.members.get(cid)
            if mine:
                self.groups[cid] = tuple(sorted(mine.values(), key=order_key))
            else:
                self.groups.pop(cid, None)
        self.stale.clear()
        return self.groups

    def since(self, mark: tuple[int, int] | None) -> Changes:
        """What was added since `mark`, the mark an earlier call returned."""
        now = (self.epoch, len(self.added))
        if mark is None or mark[0] != self.epoch or mark[1] > len(self.added):
            return Changes(list(self.rows), True, True, now)
        if self.inserted < mark[1]:  # each went at the end: in archive order already
            return Changes(self.added[mark[1]:], False, True, now)
        return Changes(sorted(self.added[mark[1]:], key=order_key), False, False, now)

    def regrouped(self, mark: tuple[int, int] | None
                  ) -> tuple[dict[str, tuple[BaseModel, ...]], bool, tuple[int, int]]:
        """The groups changed since `mark` (a candidate left with no record maps to an empty
        tuple), whether they are every group instead (no mark, or another cache's), and the
        mark to give next time."""
        groups = self.grouped()
        now = (self.serial, len(self.touched))
        if mark is not None and mark[0] == now[0] and mark[1] <= now[1]:
            return {c: groups.get(c, ()) for c in self.touched[mark[1]:]}, False, now
        return dict(groups), True, now
