"""kill -9 in the middle of a campaign, then resume: nothing lost, nothing run twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import write_params

from autolab.archive import Archive
from autolab.records import Candidate, Decision, Proposal, Trial

pytestmark = pytest.mark.slow


def start(params: Path, env: dict) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "autolab.cli", "run", "--params", str(params)]
    return subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def snapshot(root: Path) -> dict[str, bytes]:
    """Every record file, by path, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*.json")}


def test_sigkill_then_resume(tmp_path):
    params = write_params(tmp_path, max_proposals=12)
    env = dict(
        os.environ,
        PREFECT_HOME=str(tmp_path / "prefect-home"),
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
    # no record lost, and none rewritten: the completed trials were not run again
    for path, data in before.items():
        if path != "campaign.json":
            assert after.get(path) == data, f"{path} changed or vanished on resume"
    assert {t.id for t in archive.all(Trial)} >= set(trials_before)
    record = archive.campaign()
    assert record.status == "finished"
    decisions = archive.all(Decision)
    assert len(decisions) == 12 == len(archive.all(Proposal))
    assert len({d.proposal_id for d in decisions}) == 12
    for d in decisions:
        if d.candidate_id:
            assert archive.get(Candidate, d.candidate_id) is not None
