"""The archive's database, on SQLite and on PostgreSQL: records round-trip, one campaign's
records are kept apart from another's, readers see every write, a kill -9 in the middle of
writing loses nothing committed, the schema is the migrations', old file archives move in
with `autolab archive migrate`, and a bad archive URL says which key is wrong."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import write_params
from typer.testing import CliRunner

from autolab.archive import KINDS, Archive, ArchiveError, campaign_archive
from autolab.cli import app
from autolab.config import ParamsError, load_params
from autolab.db import legacy, schema
from autolab.db.engine import VERSION_TABLE, sqlite_url
from autolab.records import CampaignRecord, Candidate, Decision, Proposal, Trial
from autolab.workspace import file_hashes, make_candidate

FIXTURE = Path(__file__).parent / "fixtures" / "file_archive"  # written by autolab 0.1
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def trial(tid: str, cid: str = "c", seed: int = 1, minute: int = 0, **kw) -> Trial:
    return Trial(id=tid, candidate_id=cid, seed=seed, split="val", status="ok",
                 metrics={"m": float(seed)}, started_at=T0 + timedelta(minutes=minute), **kw)


@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path) -> str:
    """The URL of an empty database of each kind."""
    if request.param == "postgres":
        return request.getfixturevalue("postgres_url")
    return sqlite_url(tmp_path / "shared.db")


def test_records_round_trip(database, tmp_path):
    a = Archive(tmp_path / "c1" / "archive", url=database, campaign="c1")
    t1, t2 = trial("a", seed=1), trial("b", seed=2, minute=1, log_tail="x" * 10_000)
    a.put(t1)
    a.put(t2)
    assert a.get(Trial, "a") == t1 and a.get(Trial, "zzz") is None and a.has(Trial, "b")
    assert a.all(Trial) == [t1, t2] and a.count(Trial) == 2 and a.trials_of("c") == [t1, t2]
    a.supersede(Trial, "a")  # a failure of the machine: moved aside, to be run again
    assert not a.has(Trial, "a") and a.all(Trial) == [t2] and a.superseded(Trial) == [t1]
    a.put(t1)
    assert a.all(Trial) == [t1, t2] and a.superseded(Trial) == [t1]

    files = {"train.py": "x = 1\n", "pkg/mod.py": "y = 2\r\n"}
    cand = make_candidate("b", files, [], None)
    a.put_candidate(cand, files)
    assert a.get(Candidate, cand.id) == cand and a.all(Candidate) == [cand]
    assert list(a.read_files(cand.id).items()) == [("pkg/mod.py", "y = 2\r\n"),
                                                  ("train.py", "x = 1\n")]
    a.put_text("transcripts/p-1.md", "# Proposal p\n")
    assert a.read_text("transcripts/p-1.md") == "# Proposal p\n" and a.read_text("x") is None
    assert a.has_text("transcripts/p-1.md") and a.text_paths() == ["transcripts/p-1.md"]
    record = CampaignRecord(name="c1", benchmark="b", params_hash="h", seed_candidate=cand.id)
    assert a.campaign() is None
    a.put_campaign(record)
    a.put_campaign(record.model_copy(update={"status": "finished"}))
    assert a.campaign().status == "finished"

    again = Archive(tmp_path / "elsewhere", url=database, campaign="c1")  # another handle
    assert again.all(Trial) == [t1, t2] and again.read_files(cand.id) == files
    assert again.campaign() == a.campaign() and again.superseded(Trial) == [t1]
    other = Archive(tmp_path / "c2" / "archive", url=database, campaign="c2")
    assert other.all(Trial) == [] and other.campaign() is None and other.read_files(cand.id) == {}
    other.put(trial("a", cid="z"))
    assert a.get(Trial, "a") == t1 and other.get(Trial, "a").candidate_id == "z"
    for x in (a, again, other):
        x.close()


def test_every_handle_sees_every_write_in_archive_order(database, tmp_path):
    writer = Archive(tmp_path, url=database, campaign="c")
    reader = Archive(tmp_path, url=database, campaign="c")
    writer.put_many([trial(f"t{i}", seed=i, minute=i) for i in range(5)])
    assert [t.id for t in reader.all(Trial)] == ["t0", "t1", "t2", "t3", "t4"]
    writer.supersede(Trial, "t1")
    writer.put(trial("t2", seed=2, minute=10))  # written again, later: it moves to the end
    writer.put(trial("t9", cid="d", minute=-1))  # started before the others
    writer.put(Decision(id="d1", campaign="c", thread=0, proposal_id="p", candidate_id="c",
                        outcome="accepted", reason=""))
    expected = ["t9", "t0", "t3", "t4", "t2"]
    assert [t.id for t in reader.all(Trial)] == expected
    assert [t.id for t in reader.trials_of("c")] == ["t0", "t3", "t4", "t2"]
    assert reader.count(Decision) == 1 and reader.get(Trial, "t1") is None
    fresh = Archive(tmp_path, url=database, campaign="c")
    assert fresh.all(Trial) == reader.all(Trial) == writer.all(Trial)
    assert reader.revision() == writer.revision() > 0
    for x in (writer, reader, fresh):
        x.close()


def test_threads_share_one_archive(tmp_path):
    archive = Archive(tmp_path / "c" / "archive")
    seen: list[int] = []

    def write(k: int) -> None:
        for i in range(40):
            archive.put(trial(f"w{k}-{i}", cid=f"c{k}", seed=i, minute=i))
            seen.append(len(archive.all(Trial)))

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fresh = Archive(tmp_path / "c" / "archive")
    assert len(archive.all(Trial)) == 160 and archive.all(Trial) == fresh.all(Trial)
    assert all(len(archive.trials_of(f"c{k}")) == 40 for k in range(4))


def test_the_default_is_a_wal_sqlite_file_in_the_archive_folder(tmp_path):
    root = tmp_path / "runs" / "camp" / "archive"
    looking = Archive(root, create=False)  # to look: nothing is created
    assert looking.all(Trial) == [] and looking.campaign() is None and not root.exists()
    archive = Archive(root)
    archive.put(trial("a"))
    assert archive.name == "camp" and (root / "archive.db").is_file()
    with archive.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    assert [t.id for t in looking.all(Trial)] == ["a"]  # the file appeared: read as changes


def test_the_schema_is_made_by_the_migrations(database, tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = Archive(tmp_path, url=database).engine
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        assert compare_metadata(ctx, schema.metadata) == []
        assert conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def test_first_opens_at_once_migrate_once(tmp_path):
    url = sqlite_url(tmp_path / "new.db")
    errors: list[BaseException] = []

    def open_one(k: int) -> None:
        try:
            Archive(tmp_path, url=url, campaign=f"c{k}").put(trial("a"))
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=open_one, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


WRITER = """
import sys
from pathlib import Path
from autolab.archive import Archive
from autolab.records import Trial
from autolab.workspace import make_candidate
archive = Archive(Path(sys.argv[1]), url=sys.argv[2] or None, campaign="k")
for i in range(1_000_000):
    files = {"train.py": f"LR = {i}\\n" + "x = 1\\n" * 3000}
    cand = make_candidate("b", files, [], None)
    archive.put_candidate(cand, files)
    archive.put(Trial(id=f"t{i}", candidate_id=cand.id, seed=i, split="val", status="ok",
                      metrics={"m": float(i)}, log_tail="y" * 20_000))
    print(i, flush=True)
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_kill_9_while_writing_loses_nothing_committed(backend, tmp_path, request):
    url = request.getfixturevalue("postgres_url") if backend == "postgres" else ""
    root = tmp_path / "k" / "archive"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root), url],
                            stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if int(line) >= 40:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    acknowledged = int(line)

    archive = Archive(root, url=url or None, campaign="k")
    trials = archive.all(Trial)  # every record parses: none is half written
    assert len(trials) >= acknowledged + 1
    assert [t.id for t in trials] == [f"t{i}" for i in range(len(trials))]
    candidates = {c.id: c for c in archive.all(Candidate)}
    assert len(candidates) in (len(trials), len(trials) + 1)  # the last may lack its trial
    for c in candidates.values():  # a candidate comes with all of its files, or not at all
        files = archive.read_files(c.id)
        assert c.files == file_hashes(files) and c.id == Candidate.key(c.files)
    assert all(t.candidate_id in candidates and len(t.log_tail) == 20_000 for t in trials)
    if backend == "sqlite":
        with archive.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migrate_moves_a_file_archive_into_the_database(backend, tmp_path, request):
    url = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    source = tmp_path / "runs" / "test-noop" / "archive"
    shutil.copytree(FIXTURE, source)
    params = write_params(tmp_path, archive={"url": url})
    p = load_params(params)
    with pytest.raises(ArchiveError, match="autolab archive migrate"):
        campaign_archive(p)  # not migrated yet: refused, not started afresh

    runner = CliRunner()
    first = runner.invoke(app, ["archive", "migrate", "--params", str(params)])
    assert first.exit_code == 0, first.output
    assert re.search(r"trials +35 read, +35 added", first.output)
    assert re.search(r"superseded +2 read, +2 added", first.output)
    second = runner.invoke(app, ["archive", "migrate", "--params", str(params)])
    assert second.exit_code == 0 and re.search(r"trials +35 read, +0 added", second.output)
    assert not re.search(r" [1-9]\d* added", second.output)

    archive = campaign_archive(p)
    for kind in KINDS:
        old = {r.id: r for r in legacy.read_records(FIXTURE, kind)}
        assert old and {r.id: r for r in archive.all(kind)} == old
    assert archive.campaign() == CampaignRecord.model_validate_json(
        (FIXTURE / "campaign.json").read_bytes())
    assert len(archive.superseded(Trial)) == 2
    assert archive.text_paths() == sorted(legacy.read_texts(FIXTURE))
    seed = archive.campaign().seed_candidate
    assert archive.read_files(seed) == legacy.read_candidate_files(FIXTURE, seed)
    status = runner.invoke(app, ["status", "--params", str(params)])
    assert status.exit_code == 0 and "test-noop" in status.output, status.output


def test_a_bad_archive_url_names_the_key(tmp_path):
    bad = write_params(tmp_path, archive={"url": "mysql://me:secret@db.example/lab"})
    with pytest.raises(ParamsError, match=r"archive\.url: .*'mysql' is not supported") as err:
        load_params(bad)
    assert "secret" not in str(err.value)
    res = CliRunner().invoke(app, ["status", "--params", str(bad)])
    assert res.exit_code == 2 and "archive.url" in res.output and "secret" not in res.output

    nowhere = write_params(tmp_path, archive={
        "url": "postgresql://me:secret@/lab?host=/nonexistent-autolab-socket"})
    with pytest.raises(ArchiveError, match=r"archive\.url: cannot open") as err:
        campaign_archive(load_params(nowhere))
    assert "secret" not in str(err.value) and "***" in str(err.value)


def test_proposals_and_decisions_keep_their_thread_and_links_as_columns(database, tmp_path):
    a = Archive(tmp_path, url=database, campaign="c")
    a.put(Proposal(id="p", campaign="c", thread=3, operator="improve", parents=["s"],
                   rationale="", edits=[], proposer="t"))
    with a.engine.connect() as conn:
        row = conn.execute(sa.select(schema.records.c.thread, schema.records.c.kind)
                           .where(schema.records.c.id == "p")).one()
    assert tuple(row) == (3, "proposals")


@pytest.fixture(scope="module")
def prefect_api(request):
    from helpers import prefect_test_server

    prefect_test_server(request)


@pytest.mark.slow
def test_the_same_campaign_decides_the_same_on_sqlite_and_postgres(tmp_path, postgres_url,
                                                                  prefect_api):
    from flows.campaign import campaign

    runs = {}
    for label, url in (("sqlite", None), ("postgres", postgres_url)):
        folder = tmp_path / label
        folder.mkdir()
        # one iteration at a time (the helper's engine.max_in_flight): each proposal sees
        # the same history in both runs
        params = write_params(folder, max_proposals=2, tracking={"mlflow": False},
                              archive={"url": url})
        result = campaign(params_path=str(params))
        archive = campaign_archive(load_params(params))
        runs[label] = (result["champion"],
                       [(d.proposal_id, d.candidate_id, d.outcome, d.champion, d.reason)
                        for d in archive.all(Decision)],
                       {t.id: t.metrics for t in archive.all(Trial)}, archive.campaign().test)
        archive.close()
    assert runs["sqlite"][:3] == runs["postgres"][:3]
    assert len(runs["sqlite"][1]) == 2
    assert runs["sqlite"][3].evaluation.p_value == runs["postgres"][3].evaluation.p_value


def test_an_archive_password_is_hidden_wherever_it_is_written():
    from autolab.config import ParamsError, parse_params
    from autolab.db.engine import shown

    url = "postgresql://u:pw1@h/db?password=pw2&sslpassword=pw3&sslmode=require"
    masked = shown(url)
    assert "pw1" not in masked and "pw2" not in masked and "pw3" not in masked
    assert "sslmode=require" in masked and "u:***@h/db" in masked
    # a misplaced URL (a string, not a mapping) or a misspelt key: the error hides it too
    for archive in (url, {"uri": url}):
        with pytest.raises(ParamsError) as err:
            parse_params({"archive": archive})
        assert "archive" in str(err.value) and "pw1" not in str(err.value)
