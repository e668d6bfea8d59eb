import os

import sqlalchemy as sa

from autolab.archive import Archive, atomic_write
from autolab.records import AuditVerdict, Candidate, Evaluation, Proposal, Trial
from autolab.records import TestResult as Confirmation


def test_put_get_all_roundtrip(tmp_path):
    archive = Archive(tmp_path)
    t1 = Trial(id="a", candidate_id="c", seed=1, split="val", status="ok", metrics={"bpb": 2.0})
    t2 = Trial(
        id="b", candidate_id="c", seed=2, split="val", status="failed", failure="crash", reason="x"
    )
    archive.put(t1)
    archive.put(t2)
    assert archive.get(Trial, "a") == t1
    assert archive.get(Trial, "zzz") is None
    assert [t.id for t in archive.all(Trial)] == ["a", "b"]
    assert archive.all(Proposal) == []


def test_candidate_snapshot(tmp_path):
    archive = Archive(tmp_path)
    cand = Candidate(id="c1", benchmark="b", parents=[], proposal_id=None, files={})
    archive.put_candidate(cand, {"train.py": "x = 1\n", "pkg/mod.py": "y = 2\n"})
    assert archive.read_files("c1") == {"pkg/mod.py": "y = 2\n", "train.py": "x = 1\n"}
    assert archive.all(Candidate)[0].id == "c1"


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    atomic_write(target, b"old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    try:
        atomic_write(target, b"new")
    except OSError:
        pass
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_audits_and_test_results_are_records_too(tmp_path):
    archive = Archive(tmp_path)
    ev = Evaluation(id="e", candidate_id="c", reference_id="s", metric="m", values=[1.0],
                    reference_values=[2.0], alpha=0.01, split="test", decision="accept")
    confirmed = Confirmation(id="t", champion_id="c", seed_id="s", seeds=[201000],
                             evaluation=ev)
    verdict = AuditVerdict(id="a", candidate_id="c", level=0, checks=[], passed=True)
    for record in (ev, confirmed, verdict):
        archive.put(record)
    assert archive.has(Confirmation, "t") and not archive.has(Confirmation, "x")
    assert archive.get(Confirmation, "t") == confirmed
    assert archive.all(AuditVerdict) == [verdict]
    with archive.engine.connect() as conn:
        kinds = conn.execute(sa.text("SELECT kind, id FROM archive_records ORDER BY kind")).all()
    assert [tuple(k) for k in kinds] == [("audits", "a"), ("evaluations", "e"), ("tests", "t")]
