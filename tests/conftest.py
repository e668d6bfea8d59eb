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
# Triton's kernels run through its interpreter on the test machines' CPUs; it reads this
# when it is first imported, which collecting any test module may do.
os.environ.setdefault("TRITON_INTERPRET", "1")
# `proposer.kind: auto` means Claude where a key is set: no test may spend money by accident
# (subprocesses inherit this environment too). Tests that need a key set a fake one.
os.environ.pop("ANTHROPIC_API_KEY", None)

ISOLATION_MODES = ("none", "unshare", "bwrap")  # weakest first, as results record them


@pytest.fixture
def force_isolation(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    """force_isolation("bwrap") forces that sandbox mode (AUTOLAB_SANDBOX) for the test, or
    skips the test where the machine lacks it; returns the name results record."""

    def force(mode: str) -> str:
        if mode not in available_modes():
            pytest.skip(f"{mode} isolation does not work on this machine "
                        "(tool missing or user namespaces disabled)")
        monkeypatch.setenv("AUTOLAB_SANDBOX", mode)
        return mode

    return force


@pytest.fixture(params=ISOLATION_MODES)
def isolation(request: pytest.FixtureRequest, force_isolation: Callable[[str], str]) -> str:
    """Runs the test once per isolation mode that works here; returns the recorded name."""
    return force_isolation(request.param)


@pytest.fixture
def live_processes() -> Callable[[str], list[psutil.Process]]:
    """live_processes(marker): non-zombie processes whose command line mentions marker."""

    def find(marker: str) -> list[psutil.Process]:
        found = []
        for p in psutil.process_iter(["cmdline", "status"]):
            try:
                cmd = " ".join(p.info["cmdline"] or [])
                if marker in cmd and p.info["status"] != psutil.STATUS_ZOMBIE:
                    found.append(p)
            except psutil.Error:
                continue
        return found

    return find


@pytest.fixture
def wait_until() -> Callable[..., bool]:
    """wait_until(pred, timeout_s=5): poll pred until true; returns its last value."""
    import time

    def wait(pred: Callable[[], bool], timeout_s: float = 5.0, every_s: float = 0.05) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            if pred():
                return True
            if time.monotonic() > deadline:
                return bool(pred())
            time.sleep(every_s)

    return wait


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server for the whole session (tests/pg.py), from the
    distribution's binaries; tests that need one are skipped only where none is installed."""
    from pg import PostgresServer, server_binaries

    bindir = server_binaries()
    if bindir is None:
        why = ("no PostgreSQL server binaries (initdb, pg_ctl) on this machine: "
               "apt-get install postgresql (CI installs it)")
        if os.environ.get("AUTOLAB_REQUIRE_POSTGRES") == "1":  # CI: never skipped quietly
            pytest.fail(why)
        pytest.skip(why)
    server = PostgresServer(bindir).start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """The URL of a fresh, empty database on the session's server."""
    return postgres_server.create_database()
