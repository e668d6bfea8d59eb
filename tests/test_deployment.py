"""`prefect deployment run` against a local Prefect server on 127.0.0.1, with a worker.

Every deployment in prefect.yaml is registered; the noop one is run (the tinylm one runs
the same flow with heavier trials)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from autolab.archive import Archive
from autolab.records import Decision

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prefect(*args: str, env: dict, timeout: float = 300) -> str:
    res = subprocess.run(
        [str(BIN / "prefect"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert res.returncode == 0, f"prefect {' '.join(args)}\n{res.stdout}\n{res.stderr}"
    return res.stdout


def test_deployment_run_completes(tmp_path):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = dict(
        os.environ,
        PREFECT_HOME=str(tmp_path / "home"),
        PREFECT_API_URL=api,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        MLFLOW_DISABLE_TELEMETRY="true",
        PREFECT_CLI_PROMPT="false",
        PWD=str(ROOT),
        PATH=f"{BIN}:{os.environ['PATH']}",
    )
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{api}/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "Prefect server did not come up"
                time.sleep(1)
        prefect("work-pool", "create", "autolab-local", "--type", "process", env=env)
        prefect("--no-prompt", "deploy", "--all", env=env)
        listed = prefect("deployment", "ls", env=env)
        assert "tinylm-nightly" in listed and "noop-nightly" in listed
        overrides = {
            "campaign": {"name": "deployment-test", "max_proposals": 1},
            "budget": {"amount": 1},
            "evaluation": {"min_seeds": 2, "max_seeds": 2, "test_seeds": 2},
            "audit": {"replication_seeds": 2},
            "paths": {
                "workdir": str(tmp_path / "runs"),
                "prepared_dir": str(tmp_path / "art"),
                "mlruns": str(tmp_path / "mlruns"),
                "reports": str(tmp_path / "rep"),
            },
        }
        out = prefect(
            "deployment",
            "run",
            "campaign/noop-nightly",
            "--params",
            json.dumps({"overrides": overrides}),
            env=env,
        )
        assert "Created flow run" in out
        prefect("worker", "start", "--pool", "autolab-local", "--run-once", env=env, timeout=600)
        state = subprocess.run(
            [sys.executable, "-c", READ_STATE], env=env, capture_output=True, text=True, timeout=60
        )
        assert state.stdout.strip() == "COMPLETED", state.stdout + state.stderr
        archive = Archive(tmp_path / "runs" / "deployment-test" / "archive")
        record = archive.campaign()
        assert record.benchmark == "noop" and record.status == "finished"
        assert len(archive.all(Decision)) == 1 and record.test is not None
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        shutil.rmtree(tmp_path / "home", ignore_errors=True)


READ_STATE = """
import asyncio
from prefect.client.orchestration import get_client
async def main():
    async with get_client() as c:
        runs = await c.read_flow_runs()
        print([r.state_type.value for r in runs if r.name and r.deployment_id][0])
asyncio.run(main())
"""
