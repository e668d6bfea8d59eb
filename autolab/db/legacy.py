"""The file layout of earlier versions, read only to move an archive into the database
(`autolab archive migrate`).

That layout: `<root>/campaign.json`; one JSON file per record in `<root>/<kind>/<id>.json`,
candidates as `candidates/<id>/candidate.json` with their files under
`candidates/<id>/files/`; records moved aside in `<kind>/superseded/<id>-<unix time>.json`;
any other file (transcripts) is a text kept with the records under its relative path.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from pydantic import BaseModel

from autolab.archive import KINDS, Archive, columns, utc
from autolab.db import engine as db
from autolab.db.schema import superseded, texts
from autolab.records import CampaignRecord, Candidate

SKIP = {"campaign.json", db.SQLITE_FILE, f"{db.SQLITE_FILE}-wal", f"{db.SQLITE_FILE}-shm",
        f"{db.SQLITE_FILE}-journal"}


def _visible(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".")  # .name.tmp: an unfinished write


def read_records(root: Path, kind: type[BaseModel]) -> list[BaseModel]:
    folder = root / KINDS[kind]
    paths = folder.glob("*/candidate.json") if kind is Candidate else folder.glob("*.json")
    return [kind.model_validate_json(p.read_bytes()) for p in sorted(paths) if _visible(p)]


def read_candidate_files(root: Path, candidate_id: str) -> dict[str, str]:
    base = root / "candidates" / candidate_id / "files"
    return {p.relative_to(base).as_posix(): p.read_text()
            for p in sorted(base.rglob("*")) if _visible(p)}


def read_superseded(root: Path, kind: type[BaseModel]) -> Iterator[tuple[datetime, BaseModel]]:
    """(when it was moved aside, the record), from `<id>-<unix time>.json`."""
    for path in sorted((root / KINDS[kind] / "superseded").glob("*.json")):
        if _visible(path):
            stamp = path.stem.rsplit("-", 1)[-1]
            when = datetime.fromtimestamp(int(stamp), UTC) if stamp.isdigit() else \
                datetime.fromtimestamp(path.stat().st_mtime, UTC)
            yield when, kind.model_validate_json(path.read_bytes())


def read_texts(root: Path) -> dict[str, str]:
    """Every file that is neither a record nor a candidate's file, by relative path."""
    kinds = set(KINDS.values())
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if _visible(path) and rel.parts[0] not in kinds and rel.as_posix() not in SKIP:
            out[rel.as_posix()] = path.read_text()
    return out


def migrate_files(root: Path, archive: Archive) -> dict[str, tuple[int, int]]:
    """Copy the file archive at `root` into `archive`; (read, added) per kind of thing.
    What the database already holds is kept as it is, so a second run adds nothing. The
    campaign record goes last: until it is there, the campaign is not taken as migrated."""
    record = CampaignRecord.model_validate_json((root / "campaign.json").read_bytes())
    if record.name != archive.name:
        raise db.ArchiveError(f"{root} holds campaign {record.name!r}, not {archive.name!r}: "
                              "name it with --name")
    counts: dict[str, tuple[int, int]] = {}
    new: list[BaseModel] = []
    snapshots: dict[str, dict[str, str]] = {}
    for kind, name in KINDS.items():
        found = read_records(root, kind)
        have = {r.id for r in archive.all(kind)}
        fresh = [r for r in found if r.id not in have]
        new += fresh
        if kind is Candidate:
            snapshots = {c.id: read_candidate_files(root, c.id) for c in fresh}
        counts[name] = (len(found), len(fresh))
    archive.put_many(new, snapshots)

    engine = archive.engine
    with db.writing(engine) as conn:
        have = set(conn.execute(sa.select(superseded.c.kind, superseded.c.id,
                                          superseded.c.superseded_at)
                                .where(superseded.c.campaign == archive.name)).all())
        moved = [(KINDS[kind], when, r) for kind in KINDS
                 for when, r in read_superseded(root, kind)]
        rows = [{"campaign": archive.name, "kind": name, "id": r.id, "revision": 0,
                 "superseded_at": utc(when), "created_at": columns(r)["created_at"],
                 "candidate_id": getattr(r, "candidate_id", None), "body": r.model_dump_json()}
                for name, when, r in moved if (name, r.id, utc(when)) not in have]
        if rows:  # revision 0: moved aside before anything this database has seen
            conn.execute(sa.insert(superseded), rows)
        counts["superseded"] = (len(moved), len(rows))

        found_texts = read_texts(root)
        have = set(conn.execute(sa.select(texts.c.path)
                                .where(texts.c.campaign == archive.name)).scalars())
        now = utc(datetime.now(UTC))
        rows = [{"campaign": archive.name, "path": p, "text": t, "created_at": now}
                for p, t in found_texts.items() if p not in have]
        if rows:
            conn.execute(sa.insert(texts), rows)
        counts["texts"] = (len(found_texts), len(rows))

    added = archive.campaign() is None
    if added:
        archive.put_campaign(record)
    counts["campaign"] = (1, int(added))
    return counts
