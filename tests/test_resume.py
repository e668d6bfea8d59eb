"""kill -9 in the middle of a campaign, then resume: nothing lost, nothing run twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import prefect_api_url, prefect_test_server, write_params

from autolab.archive import KINDS, Archive
from autolab.records import Candidate, Decision, Proposal, Trial

pytestmark = pytest.mark.slow
DERIVED = ("evaluations", "audits")  # recomputed from the trials when an iteration resumes


@pytest.fixture(scope="module")
def prefect_api(request):
    prefect_test_server(request)


def start(params: Path, env: dict) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "autolab.cli", "run", "--params", str(params)]
    return subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def snapshot(root: Path) -> dict[str, bytes]:
    """Every record as the database holds it, by `<kind>/<id>`, with its JSON bytes."""
    archive = Archive(root, create=False)
    try:
        return {f"{name}/{r.id}": r.model_dump_json().encode()
                for kind, name in KINDS.items() for r in archive.all(kind)}
    finally:
        archive.close()


def same_record(path: str, old: bytes, new: bytes | None) -> bool:
    """Byte for byte; a derived record of the iteration in flight when the process was
    killed is written again on resume, and may differ only in its creation time."""
    if new is None or old == new:
        return old == new
    if path.split("/")[0] not in DERIVED:
        return False
    a, b = json.loads(old), json.loads(new)
    a.pop("created_at"), b.pop("created_at")
    return a == b


def test_sigkill_then_resume(tmp_path, prefect_api):
    # iterations in flight at once (the engine's default), so the kill lands among them
    params = write_params(tmp_path, max_proposals=8, engine={"max_in_flight": None})
    env = dict(
        os.environ,
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_API_URL=prefect_api_url(),
        PREFECT_LOGGING_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    root = tmp_path / "runs" / "test-noop" / "archive"
    archive = Archive(root)

    proc = start(params, env)
    deadline = time.monotonic() + 240
    while len(archive.all(Trial)) < 14 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    before = snapshot(root)
    trials_before = {t.id: t for t in archive.all(Trial)}
    assert trials_before and not (archive.campaign().status == "finished")

    proc = start(params, env)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out.decode()[-3000:]

    after = snapshot(root)
    # no record lost, and none changed: the completed trials were not run again
    for path, data in before.items():
        assert same_record(path, data, after.get(path)), f"{path} changed or vanished"
    assert all(after[p] == d for p, d in before.items() if p.startswith("trials/"))
    assert {t.id for t in archive.all(Trial)} >= set(trials_before)
    record = archive.campaign()
    assert record.status == "finished"
    decisions = archive.all(Decision)
    assert len(decisions) == 8 == len(archive.all(Proposal))
    assert len({d.proposal_id for d in decisions}) == 8
    for d in decisions:
        if d.candidate_id:
            assert archive.get(Candidate, d.candidate_id) is not None
