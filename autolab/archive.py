"""The archive: the single source of truth of a campaign.

One JSON file per record under `<root>/<kind>/<id>.json`, written atomically (temp file,
fsync, rename), so a `kill -9` at any instant leaves every record either whole or absent.
Candidate snapshots live beside their record under `candidates/<id>/files/`.
Everything else (Prefect state, MLflow, reports) is derived from what is here.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

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

R = TypeVar("R", bound=BaseModel)

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


def atomic_write(path: Path, data: bytes) -> None:
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


class Archive:
    def __init__(self, root: Path, create: bool = True):
        self.root = Path(root)
        if create:
            self.root.mkdir(parents=True, exist_ok=True)

    # -- records ---------------------------------------------------------------------------
    def _path(self, kind: type[BaseModel], record_id: str) -> Path:
        if kind is Candidate:
            return self.root / "candidates" / record_id / "candidate.json"
        return self.root / KINDS[kind] / f"{record_id}.json"

    def put(self, record: BaseModel) -> None:
        atomic_write(self._path(type(record), record.id), record.model_dump_json(indent=1).encode())

    def get(self, kind: type[R], record_id: str) -> R | None:
        path = self._path(kind, record_id)
        if not path.exists():
            return None
        return kind.model_validate_json(path.read_bytes())

    def has(self, kind: type[BaseModel], record_id: str) -> bool:
        return self._path(kind, record_id).exists()

    def supersede(self, kind: type[BaseModel], record_id: str) -> None:
        """Move a record aside (kept under <kind>/superseded/), so its work can be done
        again; used only for failures of the machine, not of the candidate."""
        path = self._path(kind, record_id)
        if path.exists():
            dest = path.parent / "superseded" / f"{record_id}-{int(time.time())}.json"
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest)

    def all(self, kind: type[R]) -> list[R]:
        """Every record of a kind, oldest first."""
        folder = self.root / KINDS[kind]
        if not folder.exists():
            return []
        if kind is Candidate:
            paths = folder.glob("*/candidate.json")
        else:
            paths = folder.glob("*.json")
        records = [kind.model_validate_json(p.read_bytes()) for p in paths]
        return sorted(records, key=lambda r: (getattr(r, "created_at", None) or r.started_at,
                                              getattr(r, "id", "")))

    # -- candidate snapshots ---------------------------------------------------------------
    def files_dir(self, candidate_id: str) -> Path:
        return self.root / "candidates" / candidate_id / "files"

    def put_candidate(self, candidate: Candidate, files: dict[str, str]) -> None:
        """Write the snapshot first and the record last: a record implies its files."""
        base = self.files_dir(candidate.id)
        for rel, text in files.items():
            atomic_write(base / rel, text.encode())
        self.put(candidate)

    def read_files(self, candidate_id: str) -> dict[str, str]:
        base = self.files_dir(candidate_id)
        return {
            p.relative_to(base).as_posix(): p.read_text()
            for p in sorted(base.rglob("*"))
            if p.is_file() and not p.name.startswith(".")
        }

    # -- text artifacts (transcripts) -------------------------------------------------------
    def put_text(self, rel: str, text: str) -> Path:
        """A text file kept with the records (e.g. `transcripts/<proposal>.md`)."""
        path = self.root / rel
        atomic_write(path, text.encode())
        return path

    def read_text(self, rel: str) -> str | None:
        path = self.root / rel
        return path.read_text() if path.is_file() else None

    # -- campaign --------------------------------------------------------------------------
    def campaign(self) -> CampaignRecord | None:
        path = self.root / "campaign.json"
        return CampaignRecord.model_validate_json(path.read_bytes()) if path.exists() else None

    def put_campaign(self, record: CampaignRecord) -> None:
        atomic_write(self.root / "campaign.json", record.model_dump_json(indent=1).encode())
