"""Shared test fixtures."""

from __future__ import annotations

import os
from collections.abc import Callable

import psutil
import pytest

from autolab.sandbox import available_modes

# Telemetry off for everything the tests start (Prefect servers, MLflow, DVC).
for _key, _value in {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_LOGGING_LEVEL": "WARNING",
}.items():
    os.environ.setdefault(_key, _value)

# AUTOLAB_SANDBOX value -> the isolation name a SandboxResult / Trial records
ISOLATION_MODES = {"none": "none", "unshare": "unshare-net", "bwrap": "bwrap"}


@pytest.fixture
def force_isolation(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    """force_isolation("bwrap") forces that sandbox mode for the test, or skips the test
    where the machine lacks it; returns the name results record."""

    def force(mode: str) -> str:
        recorded = ISOLATION_MODES[mode]
        if recorded not in available_modes():
            pytest.skip(f"{mode} isolation does not work on this machine "
                        "(tool missing or user namespaces disabled)")
        monkeypatch.setenv("AUTOLAB_SANDBOX", mode)
        return recorded

    return force


@pytest.fixture(params=list(ISOLATION_MODES))
def isolation(request: pytest.FixtureRequest, force_isolation: Callable[[str], str]) -> str:
    """Runs the test once per isolation mode that works here; returns the recorded name."""
    return force_isolation(request.param)


@pytest.fixture
def live_processes() -> Callable[[str], list[psutil.Process]]:
    """live_processes(marker): non-zombie processes whose command line mentions marker."""

    def find(marker: str) -> list[psutil.Process]:
        found = []
        for p in psutil.process_iter(["cmdline", "status"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if marker in cmd and p.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(p)
        return found

    return find
