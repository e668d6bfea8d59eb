"""The command line: bad input is named in one line with exit status 2, never a traceback,
and nothing starts. (A refused resume: tests/test_cache.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import write_params


def autolab(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200", PREFECT_HOME=str(cwd / "prefect-home"))
    return subprocess.run([sys.executable, "-m", "autolab.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def test_unknown_benchmark_exits_2_naming_the_key(tmp_path):
    params = write_params(tmp_path)
    for command in (["run", "nosuchbench"], ["aa-test", "nosuchbench", "--n", "2"]):
        res = autolab(*command, "--params", str(params), cwd=tmp_path)
        out = res.stdout + res.stderr
        assert res.returncode == 2, out
        assert "Traceback" not in out
        (line,) = lines_with(out, "campaign.benchmark")
        assert "unknown benchmark 'nosuchbench'" in line and "noop" in line
    assert not (tmp_path / "runs").exists() and not (tmp_path / "prefect-home").exists()


def test_a_misspelled_key_exits_2_naming_it(tmp_path):
    params = write_params(tmp_path, evaluation={"alpah": 0.05})
    res = autolab("run", "--params", str(params), cwd=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 2 and "Traceback" not in out
    (line,) = lines_with(out, "evaluation.alpah")
    assert "unknown key" in line
    assert not (tmp_path / "runs").exists()


def test_status_of_a_campaign_never_started_exits_1(tmp_path):
    params = write_params(tmp_path)
    res = autolab("status", "--params", str(params), cwd=tmp_path)
    assert res.returncode == 1 and "no campaign 'test-noop'" in res.stdout
    assert "Traceback" not in res.stdout + res.stderr


def test_propose_dry_run_without_a_key_uses_the_local_estimate_and_writes_nothing(tmp_path):
    params = write_params(tmp_path)
    res = autolab("propose", "--dry-run", "--params", str(params), cwd=tmp_path)
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    assert "no ANTHROPIC_API_KEY in the environment, so a campaign would use the offline " \
           "proposer; shown: what Claude would be sent" in out
    assert "not started: the seed alone" in out and "Benchmark: noop" in out
    assert "## Task: " in out and "### solution.py" in out
    assert "counted by: local estimate (3.5 characters per token)" in out
    assert not (tmp_path / "runs").exists()
    res = autolab("propose", "--params", str(params), cwd=tmp_path)
    assert res.returncode == 2 and "only --dry-run" in res.stdout
