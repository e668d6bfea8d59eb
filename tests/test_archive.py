import os

from autolab.archive import Archive, atomic_write
from autolab.records import Candidate, Proposal, Trial


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
