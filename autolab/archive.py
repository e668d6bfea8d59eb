"""The archive: the single source of truth of a campaign.

Records are pydantic models kept in a database, as JSON with their queried fields in
indexed columns (tables: `autolab.db.schema`): a SQLite file, `archive.db` in the
campaign's archive folder, by default; a PostgreSQL database when `archive.url` names
one, so that campaigns spread over hosts share it. Every write is one transaction, so a
`kill -9` at any instant leaves each record, and each candidate with its files, either
whole or absent. Everything else (Prefect state, MLflow, reports) is derived from here.

Reads of whole kinds go through a cache of parsed records, checked on every read against
the campaign's revision (bumped by each write, in commit order), which fetches only what
other writers added since: a campaign with 100,000 trials reads them once, not once per
iteration. Records handed out are shared with the cache: copy them to change them. What
is derived from many records (the search state, the research memory, the spend) is kept
up to date from the records `since` says were added, not made again from all of them.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, TypeVar

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from autolab.db import engine as db
from autolab.db import schema
from autolab.db.cache import Changes, RecordCache, field_of, order_key
from autolab.records import (
    AuditVerdict,
    CampaignRecord,
    Candidate,
    Decision,
    Evaluation,
    Proposal,
    Spend,
    TestResult,
    Trial,
)

if TYPE_CHECKING:
    from autolab.config import Params

R = TypeVar("R", bound=BaseModel)
ArchiveError = db.ArchiveError

KINDS: dict[type[BaseModel], str] = {
    Proposal: "proposals",
    Candidate: "candidates",
    Trial: "trials",
    Evaluation: "evaluations",
    AuditVerdict: "audits",
    Decision: "decisions",
    TestResult: "tests",
    Spend: "spend",
}
MODELS = {name: model for model, name in KINDS.items()}
CAMPAIGNS, RECORDS, MOVED = schema.campaigns, schema.records, schema.superseded
FILES, TEXTS = schema.files, schema.texts
_name, _kind = sa.bindparam("name"), sa.bindparam("kind")  # statements built once: hot paths
REVISION = sa.select(CAMPAIGNS.c.revision).where(CAMPAIGNS.c.name == _name)
CAMPAIGN = sa.select(CAMPAIGNS.c.body).where(CAMPAIGNS.c.name == _name)
ONE = sa.select(RECORDS.c.body).where(RECORDS.c.campaign == _name, RECORDS.c.kind == _kind,
                                      RECORDS.c.id == sa.bindparam("id"))
SNAPSHOT = sa.select(FILES.c.path, FILES.c.text).where(
    FILES.c.campaign == _name, FILES.c.candidate_id == sa.bindparam("candidate"))
TEXT = sa.select(TEXTS.c.text).where(TEXTS.c.campaign == _name,
                                     TEXTS.c.path == sa.bindparam("path"))
_ON_DAY = (RECORDS.c.kind == KINDS[Spend], RECORDS.c.created_at >= sa.bindparam("start"),
           RECORDS.c.created_at < sa.bindparam("end"))
SPENT = sa.select(RECORDS.c.campaign, RECORDS.c.id, RECORDS.c.revision).where(*_ON_DAY)
SPENT_BODIES = sa.select(RECORDS.c.campaign, RECORDS.c.id, RECORDS.c.revision,
                         RECORDS.c.body).where(*_ON_DAY)


def atomic_write(path: Path, data: bytes) -> None:
    """A file written whole or not at all (temp file, fsync, rename): exported files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def utc(when: datetime) -> datetime:
    """Naive UTC, as the columns hold it (a naive time is taken to be UTC already)."""
    return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when


def columns(record: BaseModel) -> dict:
    """The fields of a record that are queried, as columns beside its JSON."""
    return {
        "created_at": utc(order_key(record)[0]),
        "candidate_id": field_of(record, "candidate_id"),
        "proposal_id": field_of(record, "proposal_id"),
        "thread": field_of(record, "thread"),
    }


def _file_order(path: str) -> tuple[str, ...]:
    return PurePosixPath(path).parts


class Archive:
    """The records of one campaign (`campaign`, by default the name of the folder that
    holds the archive folder: `runs/<campaign>/archive`). `url` is the database; None is
    the SQLite file `<root>/archive.db`. `create=False` looks without creating anything."""

    def __init__(self, root: Path, create: bool = True, url: str | None = None,
                 campaign: str | None = None):
        self.root = Path(root)
        self.name = campaign or (self.root.parent.name if self.root.name == "archive"
                                 else self.root.name)
        self.url = url or db.sqlite_url(self.root / db.SQLITE_FILE)
        self._configured = url is not None
        self._engine: Engine | None = None
        self._lock = threading.RLock()
        self._cache: dict[type[BaseModel], RecordCache] = {}
        self._revision = 0
        self._files: dict[str, dict[str, str]] = {}
        self._spent: tuple[date | None, dict[tuple[str, str], tuple[int, Spend]]] = (None, {})
        if create or self._exists():
            self._open()

    def __repr__(self) -> str:
        return f"Archive({self.name!r} in {self.location})"

    def __deepcopy__(self, memo: dict) -> Archive:
        raise TypeError("an open archive is shared, not copied")

    @property
    def location(self) -> str:
        return db.shown(self.url)

    def _exists(self) -> bool:
        path = db.sqlite_path(self.url)
        return path is None or path.is_file()

    def _open(self) -> Engine:
        with self._lock:
            if self._engine is None:
                if (path := db.sqlite_path(self.url)) is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                engine = db.make_engine(self.url)
                try:
                    db.migrate(engine)
                except OperationalError as err:
                    engine.dispose()
                    key = "archive.url: " if self._configured else ""
                    raise ArchiveError(f"{key}cannot open the archive database "
                                       f"{self.location}: {err.orig}") from None
                self._engine = engine
            return self._engine

    @property
    def engine(self) -> Engine:
        """The open database (created if it was not there)."""
        return self._open()

    def _reader(self) -> Engine | None:
        return self._engine or (self._open() if self._exists() else None)

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ----------------------------------------------------------------------------
    def _bump(self, conn: sa.Connection) -> int:
        """The campaign's next revision; its row lock orders this write after the others."""
        stmt = db.insert(conn, CAMPAIGNS).values(name=self.name, revision=1)
        stmt = stmt.on_conflict_do_update(index_elements=["name"],
                                          set_={"revision": CAMPAIGNS.c.revision + 1})
        conn.execute(stmt)
        return conn.execute(sa.select(CAMPAIGNS.c.revision)
                            .where(CAMPAIGNS.c.name == self.name)).scalar_one()

    def _rows(self, batch: list[BaseModel], revision: int) -> list[dict]:
        return [{"campaign": self.name, "kind": KINDS[type(r)], "id": r.id,
                 "revision": revision, "body": r.model_dump_json(), **columns(r)} for r in batch]

    def _write(self, batch: list[BaseModel], candidate_files: dict[str, dict[str, str]]
               | None = None) -> None:
        engine = self._open()
        with db.writing(engine) as conn:
            revision = self._bump(conn)
            for cid, snapshot in (candidate_files or {}).items():
                conn.execute(sa.delete(FILES).where(FILES.c.campaign == self.name,
                                                    FILES.c.candidate_id == cid))
                if snapshot:
                    conn.execute(sa.insert(FILES), [
                        {"campaign": self.name, "candidate_id": cid, "path": p, "text": t}
                        for p, t in snapshot.items()])
            rows = self._rows(batch, revision)
            if rows:
                conn.execute(db.upsert(engine, RECORDS, ["campaign", "kind", "id"]), rows)
        self._applied(revision, [(type(r), row["body"]) for r, row in zip(batch, rows,
                                                                           strict=True)], [])

    def _applied(self, revision: int, added: list[tuple[type, str]],
                 removed: list[tuple[type, str]]) -> None:
        """Our own write, into the cache, when no other writer came between."""
        with self._lock:
            if self._revision != revision - 1:
                return
            for kind, body in added:
                if kind in self._cache:
                    self._cache[kind].add(kind.model_validate_json(body))
            for kind, record_id in removed:
                if kind in self._cache:
                    self._cache[kind].remove(record_id)
            self._revision = revision

    def put(self, record: BaseModel) -> None:
        self._write([record])

    def put_many(self, batch: list[BaseModel],
                 candidate_files: dict[str, dict[str, str]] | None = None) -> None:
        """Many records (and candidates' files) in one transaction: imports, and synthetic
        archives."""
        if batch or candidate_files:
            self._write(list(batch), candidate_files)

    def put_candidate(self, candidate: Candidate, files: dict[str, str]) -> None:
        """The snapshot and the record in one transaction: a record implies its files."""
        self._write([candidate], {candidate.id: dict(files)})
        with self._lock:
            self._files[candidate.id] = self._ordered(files)

    def supersede(self, kind: type[BaseModel], record_id: str) -> None:
        """Move a record aside (kept in `archive_superseded`), so its work can be done
        again; used only for failures of the machine, not of the candidate."""
        key = (RECORDS.c.campaign == self.name, RECORDS.c.kind == KINDS[kind],
               RECORDS.c.id == record_id)
        with db.writing(self._open()) as conn:
            revision = self._bump(conn)
            row = conn.execute(sa.select(RECORDS).where(*key)).mappings().first()
            if row is not None:
                conn.execute(sa.insert(MOVED).values(
                    campaign=self.name, kind=row["kind"], id=row["id"], revision=revision,
                    superseded_at=utc(datetime.now(UTC)), created_at=row["created_at"],
                    candidate_id=row["candidate_id"], body=row["body"]))
                conn.execute(sa.delete(RECORDS).where(*key))
        self._applied(revision, [], [(kind, record_id)])

    # -- reading ----------------------------------------------------------------------------
    def _sync(self, *want: type[BaseModel]) -> None:
        """Bring the cache to the database's revision, loading the kinds in `want` whole if
        they are new to it."""
        engine = self._reader()
        if engine is None:  # nothing written yet: what is written later comes as changes
            for kind in want:
                self._cache.setdefault(kind, RecordCache())
            return
        load = [k for k in dict.fromkeys(want) if k not in self._cache]
        with db.reading(engine) as conn:
            revision = conn.execute(REVISION, {"name": self.name}).scalar() or 0
            if revision == self._revision and not load:
                return
            changed, gone = [], []
            if revision != self._revision and self._cache:
                kinds = [KINDS[k] for k in self._cache]
                changed = conn.execute(
                    sa.select(RECORDS.c.kind, RECORDS.c.body).where(
                        RECORDS.c.campaign == self.name, RECORDS.c.kind.in_(kinds),
                        RECORDS.c.revision > self._revision)).all()
                gone = conn.execute(
                    sa.select(MOVED.c.kind, MOVED.c.id).where(
                        MOVED.c.campaign == self.name, MOVED.c.kind.in_(kinds),
                        MOVED.c.revision > self._revision)).all()
            whole = {kind: conn.execute(sa.select(RECORDS.c.body).where(
                RECORDS.c.campaign == self.name, RECORDS.c.kind == KINDS[kind])
                .order_by(RECORDS.c.created_at, RECORDS.c.id)).scalars().all() for kind in load}
        fresh = set()
        for kind, body in changed:
            record = MODELS[kind].model_validate_json(body)
            self._cache[MODELS[kind]].add(record)
            fresh.add((kind, record.id))
        for kind, record_id in gone:
            if (kind, record_id) not in fresh:  # a live row newer than its supersession stays
                self._cache[MODELS[kind]].remove(record_id)
        for kind, bodies in whole.items():  # in archive order already, from the index
            self._cache[kind] = RecordCache([kind.model_validate_json(b) for b in bodies])
        self._revision = revision

    def get(self, kind: type[R], record_id: str) -> R | None:
        with self._lock:
            if kind in self._cache:
                self._sync()
                return self._cache[kind].by_id.get(record_id)
        engine = self._reader()
        if engine is None:
            return None
        with engine.connect() as conn:
            body = conn.execute(ONE, {"name": self.name, "kind": KINDS[kind],
                                      "id": record_id}).scalar()
        return None if body is None else kind.model_validate_json(body)

    def has(self, kind: type[BaseModel], record_id: str) -> bool:
        return self.get(kind, record_id) is not None

    def all(self, kind: type[R]) -> list[R]:
        """Every record of a kind, oldest first."""
        with self._lock:
            self._sync(kind)
            return list(self._cache[kind].rows)

    def count(self, kind: type[BaseModel]) -> int:
        with self._lock:
            self._sync(kind)
            return len(self._cache[kind].by_id)

    def trials_of(self, candidate_id: str) -> list[Trial]:
        """The candidate's trials, in archive order (what `all(Trial)` filtered gives)."""
        with self._lock:
            self._sync(Trial)
            return list(self._cache[Trial].grouped().get(candidate_id, ()))

    def trials_by_candidate(self) -> dict[str, tuple[Trial, ...]]:
        """Every candidate's trials, in archive order. A candidate's tuple is the same
        object from call to call until one of its trials changes: derived figures can be
        kept per candidate and recomputed only for those whose tuple is new."""
        with self._lock:
            self._sync(Trial)
            return dict(self._cache[Trial].grouped())

    def since(self, marks: Mapping[type[BaseModel], tuple[int, int] | None]
              ) -> dict[type[BaseModel], Changes]:
        """For each kind in `marks`, the records added since its mark, the one an earlier
        call returned (None the first time): for what is derived from many records and kept
        up to date from the few new ones. `Changes` says whether they are every record
        instead (the reader starts over: the first call, or a record replaced or removed
        since), whether they all come after those the reader had, and the mark to give
        next time."""
        with self._lock:
            self._sync(*marks)
            return {kind: self._cache[kind].since(mark) for kind, mark in marks.items()}

    def trials_since(self, mark: tuple[int, int] | None
                     ) -> tuple[dict[str, tuple[Trial, ...]], bool, tuple[int, int]]:
        """As `since`, for trials by candidate: the candidates whose trials changed since
        `mark`, each with its trials in archive order (none left: an empty tuple), or every
        candidate's when the reader starts over."""
        with self._lock:
            self._sync(Trial)
            return self._cache[Trial].regrouped(mark)

    def revision(self) -> int:
        """The campaign's revision: it changes whenever one of its records does."""
        engine = self._reader()
        if engine is None:
            return 0
        with engine.connect() as conn:
            return conn.execute(REVISION, {"name": self.name}).scalar() or 0

    def superseded(self, kind: type[R]) -> list[R]:
        """Records moved aside, oldest move first."""
        engine = self._reader()
        if engine is None:
            return []
        with engine.connect() as conn:
            bodies = conn.execute(sa.select(MOVED.c.body).where(
                MOVED.c.campaign == self.name, MOVED.c.kind == KINDS[kind])
                .order_by(MOVED.c.seq)).scalars().all()
        return [kind.model_validate_json(b) for b in bodies]

    # -- candidate snapshots ----------------------------------------------------------------
    @staticmethod
    def _ordered(snapshot: dict[str, str]) -> dict[str, str]:
        return {p: snapshot[p] for p in sorted(snapshot, key=_file_order)}

    def read_files(self, candidate_id: str) -> dict[str, str]:
        """A candidate's files (they never change: its id is their hash)."""
        with self._lock:
            if candidate_id in self._files:
                return dict(self._files[candidate_id])
        engine = self._reader()
        if engine is None:
            return {}
        with engine.connect() as conn:
            rows = conn.execute(SNAPSHOT, {"name": self.name, "candidate": candidate_id}).all()
        snapshot = self._ordered(dict(rows))
        if snapshot:
            with self._lock:
                self._files[candidate_id] = snapshot
        return dict(snapshot)

    def files_of(self, candidate_ids: list[str]) -> dict[str, dict[str, str]]:
        """Many candidates' files at once, for a pass over all of them (not cached);
        candidates without files are left out."""
        engine, out = self._reader(), {}
        for at in range(0, len(candidate_ids) if engine else 0, 500):
            with engine.connect() as conn:
                rows = conn.execute(sa.select(FILES.c.candidate_id, FILES.c.path, FILES.c.text)
                                    .where(FILES.c.campaign == self.name,
                                           FILES.c.candidate_id.in_(candidate_ids[at:at + 500])))
                for cid, path, text in rows:
                    out.setdefault(cid, {})[path] = text
        return {cid: self._ordered(snapshot) for cid, snapshot in out.items()}

    # -- text kept with the records (transcripts) -------------------------------------------
    def put_text(self, rel: str, text: str) -> None:
        """A text kept with the records under a path (e.g. `transcripts/<proposal>.md`)."""
        engine = self._open()
        with db.writing(engine) as conn:
            conn.execute(db.upsert(engine, TEXTS, ["campaign", "path"]).values(
                campaign=self.name, path=rel, text=text, created_at=utc(datetime.now(UTC))))

    def read_text(self, rel: str) -> str | None:
        engine = self._reader()
        if engine is None:
            return None
        with engine.connect() as conn:
            return conn.execute(TEXT, {"name": self.name, "path": rel}).scalar()

    def has_text(self, rel: str) -> bool:
        return self.read_text(rel) is not None

    def text_paths(self) -> list[str]:
        """The paths of every text kept, sorted."""
        engine = self._reader()
        if engine is None:
            return []
        with engine.connect() as conn:
            return sorted(conn.execute(sa.select(TEXTS.c.path).where(
                TEXTS.c.campaign == self.name)).scalars())

    # -- campaign ---------------------------------------------------------------------------
    def campaign(self) -> CampaignRecord | None:
        engine = self._reader()
        if engine is None:
            return None
        with engine.connect() as conn:
            body = conn.execute(CAMPAIGN, {"name": self.name}).scalar()
        return CampaignRecord.model_validate_json(body) if body else None

    def put_campaign(self, record: CampaignRecord) -> None:
        engine = self._open()
        values = {"body": record.model_dump_json(), "benchmark": record.benchmark,
                  "status": record.status, "started_at": utc(record.started_at)}
        stmt = db.insert(engine, CAMPAIGNS).values(name=self.name, revision=0, **values)
        with db.writing(engine) as conn:
            conn.execute(stmt.on_conflict_do_update(index_elements=["name"], set_=values))

    # -- every campaign in the database -----------------------------------------------------
    def spend_on(self, day: date) -> list[Spend]:
        """Every campaign's paid attempts on a UTC day, in this archive's database. Each is
        parsed once: a later call reads which rows there are, and the bodies of the new."""
        engine = self._reader()
        if engine is None:
            return []
        start = datetime(day.year, day.month, day.day)
        span = {"start": start, "end": start + timedelta(days=1)}
        with self._lock, db.reading(engine) as conn:
            if self._spent[0] != day:
                self._spent = (day, {})
            seen = self._spent[1]  # (campaign, id) -> (revision, the attempt)
            rows = conn.execute(SPENT, span).all()
            new = {i for c, i, r in rows if seen.get((c, i), (None,))[0] != r}
            if new:
                bodies = conn.execute(SPENT_BODIES, span) if len(new) > 500 else \
                    conn.execute(SPENT_BODIES.where(RECORDS.c.id.in_(sorted(new))), span)
                for c, i, r, body in bodies:
                    seen[(c, i)] = (r, Spend.model_validate_json(body))
            return [seen[(c, i)][1] for c, i, _ in rows]

    def legacy_files(self) -> bool:
        """Whether the folder holds an archive in the file layout of earlier versions."""
        return (self.root / "campaign.json").is_file()


def campaign_archive(params: Params, create: bool = True) -> Archive:
    """The archive of the campaign `params` name, where `archive.url` puts it. A campaign
    still in the old file layout is refused until `autolab archive migrate` has run."""
    root = params.paths.workdir.resolve() / params.campaign.name / "archive"
    archive = Archive(root, create=create, url=params.archive.url, campaign=params.campaign.name)
    if archive.legacy_files() and archive.campaign() is None:
        archive.close()
        raise ArchiveError(
            f"{root} holds campaign {params.campaign.name!r} in the file layout of earlier "
            f"versions, and its database ({archive.location}) has no such campaign yet: move "
            "it there with `autolab archive migrate --params PARAMS`")
    return archive
