"""run_reaped: a helper process runs to its end or its timeout, and nothing it started
outlives it, not even a worker in a session of its own."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import psutil

from autolab.procs import run_reaped

# starts a sleeper in a new session (as compile worker pools do), says its pid, then
# does what argv[1] asks: exit 0, crash, or hang
SCRIPT = """
import os, subprocess, sys, time
p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"],
                     start_new_session=True)
print("worker", p.pid, flush=True)
time.sleep(1.0)
if sys.argv[1] == "crash":
    os.abort()
if sys.argv[1] == "hang":
    time.sleep(300)
print("done", flush=True)
"""


def _worker(log: Path) -> psutil.Process | None:
    pid = int(next(ln for ln in log.read_text().splitlines() if ln.startswith("worker"))
              .split()[1])
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def _gone(proc: psutil.Process | None) -> bool:
    return proc is None or not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE


def test_a_worker_in_its_own_session_is_killed_when_the_process_ends(tmp_path: Path):
    log = tmp_path / "log"
    assert run_reaped([sys.executable, "-c", SCRIPT, "ok"], log=log, poll_s=0.1) == 0
    assert "done" in log.read_text()
    assert _gone(_worker(log))


def test_a_crash_is_its_exit_status_and_leaves_nothing(tmp_path: Path):
    log = tmp_path / "log"
    code = run_reaped([sys.executable, "-c", SCRIPT, "crash"], log=log, poll_s=0.1)
    assert code is not None and code < 0  # killed by SIGABRT
    assert _gone(_worker(log))


def test_a_hang_is_stopped_at_the_timeout(tmp_path: Path):
    log = tmp_path / "log"
    started = time.monotonic()
    assert run_reaped([sys.executable, "-c", SCRIPT, "hang"], log=log, timeout_s=3,
                      poll_s=0.1) is None
    assert time.monotonic() - started < 20
    assert "done" not in log.read_text()
    assert _gone(_worker(log))
