"""`autolab aa-test`: the real loop on candidates equal in effect to their parent (the
A/A proposer's neutral variants of noop) measures the evaluation's false-accept rate and
the benchmark's noise."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from helpers import prefect_api_url, prefect_test_server, write_params

from autolab.archive import Archive
from autolab.records import Decision, Proposal, Trial
from autolab.records import TestResult as Confirmation
from benchmarks.noop.benchmark import TRIAL_NOISE

pytestmark = pytest.mark.slow
N = 20


@pytest.fixture(scope="module")
def prefect_api(request):
    prefect_test_server(request)


def test_aa_test_on_noop(tmp_path, prefect_api):
    # iterations at once, as a campaign runs them: an A/A candidate is judged against the
    # seed alone, so the order of decisions cannot change one
    params = write_params(tmp_path, evaluation={"parallel_trials": 2}, tracking={"mlflow": False},
                          engine={"max_in_flight": None})
    env = dict(os.environ, PREFECT_API_URL=prefect_api_url(), COLUMNS="200",
               PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_LOGGING_LEVEL="WARNING")
    res = subprocess.run(
        [sys.executable, "-m", "autolab.cli", "aa-test", "noop", "--n", str(N), "--params",
         str(params)], env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "false accepts" in res.stdout

    s = json.loads((tmp_path / "reports" / "noop-aa" / "aa_test.json").read_text())
    assert (s["benchmark"], s["campaign"], s["alpha"]) == ("noop", "noop-aa", 0.01)
    assert s["min_gain"] == 0.0  # the design is tested where its error rate is largest
    assert s["candidates_evaluated"] == s["proposals"] == N and s["failed_or_refused"] == 0
    assert s["false_accepts"] <= 2  # expected 0.2 at alpha 0.01
    assert s["false_accept_rate"] == s["false_accepts"] / N
    lo, hi = s["ci95"]
    assert 0 <= lo <= s["false_accept_rate"] <= hi <= 1 and hi < 0.25
    assert s["looks"] == [3, 4] and 3 <= s["mean_seeds"] <= 4
    expected_sd = math.sqrt(2) * TRIAL_NOISE  # what pairing leaves: two trials' own noise
    assert expected_sd / 2 < s["paired_sd"] < expected_sd * 2
    assert s["paired_sd"] < s["smallest_detectable_gain"] < 10 * s["paired_sd"]

    archive = Archive(tmp_path / "runs" / "noop-aa" / "archive")
    assert {p.proposer for p in archive.all(Proposal)} == {"aa"}
    assert len(archive.all(Decision)) == N
    # an A/A test is no look at the test split
    assert archive.all(Confirmation) == [] and not any(
        t.split == "test" for t in archive.all(Trial))
