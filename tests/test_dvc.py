"""`dvc repro` runs prepare -> campaign -> report from params.yaml."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import prefect_api_url, prefect_test_server

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def prefect_api(request):
    prefect_test_server(request)


def test_dvc_repro_runs_the_pipeline(tmp_path, prefect_api):
    work = tmp_path / "project"
    work.mkdir()
    for name in ("autolab", "flows", "tasks", "benchmarks"):
        shutil.copytree(ROOT / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", work / "dvc.yaml")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["campaign"].update(benchmark="noop", name="dvc-test", max_proposals=3)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", PREFECT_HOME=str(tmp_path / "ph"),
               PREFECT_API_URL=prefect_api_url(), PREFECT_LOGGING_LEVEL="WARNING",
               MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1")

    def dvc(*args: str) -> str:
        res = subprocess.run([str(BIN / "dvc"), *args], cwd=work, env=env, capture_output=True,
                             text=True, timeout=600)
        assert res.returncode == 0, f"dvc {' '.join(args)}\n{res.stdout}\n{res.stderr}"
        return res.stdout

    dvc("init", "--no-scm", "-q")
    dvc("config", "core.analytics", "false")
    dvc("repro")
    assert (work / "artifacts/noop/data").is_dir()
    assert (work / "artifacts/noop/seeds/default/solution.py").exists()
    assert (work / "artifacts/noop/champion/solution.py").exists()
    metrics = json.loads((work / "artifacts/noop/champion.json").read_text())
    assert metrics["campaign"] == "dvc-test" and metrics["test_value"] is not None
    assert metrics["test_split_looks"] == 1 and metrics["isolation"] in ("bwrap", "unshare", "none")
    assert (work / "reports/dvc-test/report.md").exists()
    lock = yaml.safe_load((work / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"prepare", "campaign", "report"}
    assert "up to date" in dvc("status") or "Data and pipelines are up to date" in dvc("status")
