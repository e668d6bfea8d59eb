"""Helper processes started outside the sandbox (compiling ahead of a timed run), and
whatever they start in turn.

Compilers keep worker pools in sessions of their own, which outlive the process that
started them and would go on compiling beside a timed run. `run_reaped` watches the whole
tree while the process runs and kills every descendant it saw once it has ended.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import psutil


def run_reaped(argv: Sequence[str], *, env: Mapping[str, str] | None = None,
               log: IO | Path | None = None, timeout_s: float | None = None,
               poll_s: float = 0.5) -> int | None:
    """Run argv to its end (or until timeout_s, then kill it), then kill every process it
    started that is still running. Output goes to `log` (an open file or a path).
    Returns the exit status; None when it was killed for the timeout."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    out = open(log, "wb") if isinstance(log, Path) else log  # noqa: SIM115 - closed below
    try:
        proc = subprocess.Popen(list(argv), env=dict(env) if env is not None else None,
                                stdout=out if out is not None else subprocess.DEVNULL,
                                stderr=subprocess.STDOUT)
        seen: dict[int, psutil.Process] = {}
        timed_out = False
        while proc.poll() is None:
            try:
                seen |= {c.pid: c for c in psutil.Process(proc.pid).children(recursive=True)}
            except psutil.Error:
                pass
            if deadline is not None and time.monotonic() > deadline:
                timed_out = True
                proc.kill()
                proc.wait()
                break
            time.sleep(poll_s)
        for child in seen.values():
            try:
                child.kill()  # psutil checks it is still the process seen, not a reused pid
            except psutil.Error:
                pass
        psutil.wait_procs(list(seen.values()), timeout=10)
        return None if timed_out else proc.returncode
    finally:
        if isinstance(log, Path) and out is not None:
            out.close()
