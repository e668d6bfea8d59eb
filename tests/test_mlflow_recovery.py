"""An unusable MLflow store never stops a campaign: it is moved aside, kept, and rebuilt
from the archive (the earlier candidates included).

Each run is a fresh `autolab run` process, as a nightly resume is; the A/A proposer keeps
the campaigns small (its candidates are rejected after a look or two).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import prefect_api_url, prefect_test_server, write_params

from autolab.archive import Archive
from autolab.records import Decision
from autolab.tracking import tracking_uri

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_api(request):
    prefect_test_server(request)


def autolab_run(params: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PREFECT_API_URL=prefect_api_url(), COLUMNS="200",
               PREFECT_HOME=str(params.parent / "prefect-home"), PREFECT_LOGGING_LEVEL="WARNING")
    res = subprocess.run([sys.executable, "-m", "autolab.cli", "run", "--params", str(params),
                          *args], env=env, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def small_campaign(tmp: Path) -> Path:
    return write_params(tmp, max_proposals=1, evaluation={"parallel_trials": 2},
                        proposer={"kind": "aa", "operators": {"improve": 1.0}})


def store_runs(mlruns: Path, campaign: str) -> tuple[dict, dict[str, object]]:
    """The campaign's parent run and its children by candidate id, in the store now there."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri(mlruns))
    exp = client.get_experiment_by_name("noop")
    assert exp is not None, "the rebuilt store has no noop experiment"
    (parent,) = client.search_runs(
        [exp.experiment_id],
        f"tags.`autolab.role` = 'campaign' AND tags.`autolab.campaign` = '{campaign}'")
    kids = client.search_runs([exp.experiment_id],
                              f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return parent, {r.data.tags["autolab.candidate_id"]: r for r in kids}


def evaluated(tmp: Path) -> set[str]:
    archive = Archive(tmp / "runs" / "test-noop" / "archive")
    ids = {d.candidate_id for d in archive.all(Decision) if d.outcome != "refused"}
    return ids - {None} | {archive.campaign().seed_candidate}


def tables(db: Path) -> set[str]:
    with sqlite3.connect(db) as con:
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_half_created_store_is_rebuilt_with_the_earlier_candidates(tmp_path, prefect_api):
    params = small_campaign(tmp_path)
    mlruns = tmp_path / "mlruns"
    autolab_run(params)
    before = evaluated(tmp_path)
    assert len(before) == 2  # the seed and one candidate
    # a process killed while MLflow made its tables: one table, no alembic_version
    (mlruns / "mlflow.db").unlink()
    with sqlite3.connect(mlruns / "mlflow.db") as con:
        con.execute("CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, name TEXT)")
    half_made = (mlruns / "mlflow.db").stat().st_ino

    res = autolab_run(params, "--max-proposals", "2")
    assert "MLflow store was unusable" in res.stdout
    (damaged,) = mlruns.glob("mlflow.db.damaged-*")
    assert damaged.stat().st_ino == half_made  # the very file, moved aside (MLflow's failed
    assert "experiments" in tables(damaged)  # attempt to complete it may have added tables)
    assert "alembic_version" in tables(mlruns / "mlflow.db")
    after = evaluated(tmp_path)
    assert after > before and len(after) == 3
    parent, kids = store_runs(mlruns, "test-noop")
    assert set(kids) == after  # the earlier candidates were replayed from the archive
    assert parent.info.status == "FINISHED"
    # the seed stayed champion: its confirmation against itself is no look at the test split
    assert parent.data.metrics["test_split_looks"] == 0
    isolation = Archive(tmp_path / "runs" / "test-noop" / "archive").campaign().isolation
    assert (parent.data.tags["isolation"], parent.data.tags["unisolated"]) == (isolation, "False")
    assert {k.data.tags["isolation"] for k in kids.values()} == {isolation}


def test_garbage_store_is_moved_aside_and_the_campaign_starts(tmp_path, prefect_api):
    params = small_campaign(tmp_path)
    mlruns = tmp_path / "mlruns"
    mlruns.mkdir()
    garbage = b"not a database at all\n" * 64
    (mlruns / "mlflow.db").write_bytes(garbage)

    res = autolab_run(params)
    assert "MLflow store was unusable" in res.stdout
    (damaged,) = mlruns.glob("mlflow.db.damaged-*")
    assert damaged.read_bytes() == garbage
    parent, kids = store_runs(mlruns, "test-noop")
    assert set(kids) == evaluated(tmp_path)
    assert parent.info.status == "FINISHED"
