"""The sandbox contains what a candidate does: crashes, hangs, forks, memory, secrets, network."""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from autolab import sandbox
from autolab.sandbox import Limits, SandboxError, build_env, run_sandboxed

PY = sys.executable


def run_code(ws: Path, code: str, timeout_s: float = 10, memory_mb: int = 400, **kw):
    limits = Limits(timeout_s=timeout_s, memory_mb=memory_mb,
                    **{k: kw.pop(k) for k in ("threads", "address_space_mb", "output_mb")
                       if k in kw})
    return run_sandboxed([PY, "-c", textwrap.dedent(code)], ws, limits, **kw)


def test_ok_captures_output(tmp_path: Path, isolation: str) -> None:
    r = run_code(tmp_path / "ws", "print('hello'); import sys; print('warn', file=sys.stderr)")
    assert (r.status, r.returncode, r.isolation) == ("ok", 0, isolation)
    assert r.stdout_tail.strip() == "hello" and r.stderr_tail.strip() == "warn"
    assert r.wall_s > 0 and r.reason == ""


def test_crash_reports_exception_line(tmp_path: Path, isolation: str) -> None:
    r = run_code(tmp_path / "ws", "x = 1\nprint(x / 0)")
    assert r.status == "crash" and r.returncode == 1
    assert r.reason == "exited 1: ZeroDivisionError: division by zero"


def test_hang_is_killed_on_time(tmp_path: Path, isolation: str, live_processes) -> None:
    marker = f"hang-{uuid.uuid4().hex}"
    t0 = time.monotonic()
    r = run_code(tmp_path / "ws", f"import time; time.sleep(1000)  # {marker}", timeout_s=1.0)
    assert time.monotonic() - t0 < 1.0 + 2
    assert r.status == "timeout" and "1.0 s time limit" in r.reason
    assert live_processes(marker) == []


@pytest.mark.parametrize("setsid", [False, True], ids=["same-group", "own-session"])
def test_grandchildren_die_with_the_step(
    tmp_path: Path, isolation: str, live_processes, setsid: bool
) -> None:
    """A forked grandchild (even one in its own session) must not survive its step."""
    marker = f"grandchild-{uuid.uuid4().hex}"
    code = f"""
        import subprocess, sys, time, pathlib
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)", "{marker}"],
                         start_new_session={setsid})
        pathlib.Path("started").write_text("yes")
        time.sleep(1000)
    """
    ws = tmp_path / "ws"
    t0 = time.monotonic()
    r = run_code(ws, code, timeout_s=1.5)
    assert r.status == "timeout" and time.monotonic() - t0 < 1.5 + 2
    assert (ws / "started").read_text() == "yes"
    assert live_processes(marker) == []


def test_background_process_killed_after_clean_exit(
    tmp_path: Path, isolation: str, live_processes
) -> None:
    marker = f"daemon-{uuid.uuid4().hex}"
    code = f"""
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)", "{marker}"])
        time.sleep(0.3)
    """
    r = run_code(tmp_path / "ws", code)
    assert r.status == "ok"
    assert live_processes(marker) == []


def test_memory_over_limit_is_oom(tmp_path: Path, isolation: str) -> None:
    code = """
        import time
        chunks = []
        for _ in range(60):
            chunks.append(b"x" * 50_000_000)   # written pages: 3 GB in all
        time.sleep(30)  # hold it, so even a slow poll sees it
    """
    r = run_code(tmp_path / "ws", code, memory_mb=200)
    assert r.status == "oom", r
    assert "over the 200 MB limit" in r.reason and r.peak_rss_mb > 200


def test_memory_error_is_oom(tmp_path: Path) -> None:
    r = run_code(tmp_path / "ws", "x = bytearray(4 * 2**30)", address_space_mb=1024)
    assert r.status == "oom" and r.reason == "MemoryError"


def test_sigkill_not_ours_reads_as_kernel_oom(tmp_path: Path, isolation: str) -> None:
    r = run_code(tmp_path / "ws", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert r.status == "oom" and "killed by the kernel?" in r.reason


def test_output_flood_is_stopped(tmp_path: Path) -> None:
    r = run_code(tmp_path / "ws", "while True: print('x' * 1000)", output_mb=1)
    assert r.status == "crash" and "more than 1 MB" in r.reason
    assert len(r.stdout_tail) <= 4096


def test_environment_is_scrubbed(
    tmp_path: Path, isolation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {"ANTHROPIC_API_KEY": "sk-test", "GITHUB_TOKEN": "ghp_x",
                        "AWS_SECRET_ACCESS_KEY": "a", "SOME_PLAIN_VAR": "1"}.items():
        monkeypatch.setenv(name, value)
    ws = tmp_path / "ws"
    code = "import os, json; json.dump(dict(os.environ), open('env.json', 'w'))"
    r = run_code(ws, code, threads=3, env_extra={"BENCH_FLAG": "on"})
    assert r.status == "ok", r
    env = json.loads((ws / "env.json").read_text())
    for name in ("ANTHROPIC_API_KEY", "GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "SOME_PLAIN_VAR"):
        assert name not in env
    assert "sk-test" not in json.dumps(env)
    assert env["HOME"] == str(ws) and env["TMPDIR"].startswith(str(ws))
    assert env["PYTHONHASHSEED"] == "0" and env["OMP_NUM_THREADS"] == "3"
    assert env["BENCH_FLAG"] == "on"
    assert env["PATH"].split(":")[0] == str(Path(PY).parent)


@pytest.mark.parametrize("name", ["ANTHROPIC_API_KEY", "HF_TOKEN", "AWS_REGION", "DB_PASSWORD"])
def test_secret_names_refused_in_env_extra(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="secret"):
        build_env(PY, tmp_path, 1, {name: "x"})


def test_secret_values_refused_in_env_extra(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="secret"):
        build_env(PY, tmp_path, 1, {"INNOCENT": "sk-ant-123"})


def test_network_is_cut(tmp_path: Path, isolation: str) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        code = f"""
            import socket
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
                print("connected")
            except OSError as e:
                print("blocked", e)
        """
        r = run_code(tmp_path / "ws", code)
    assert r.status == "ok", r
    expected = "connected" if isolation == "none" else "blocked"
    assert r.stdout_tail.split()[0] == expected, r.stdout_tail


@pytest.fixture
def secret_dir() -> Path:
    """A dir outside /tmp (which bwrap replaces anyway), so hiding it is really tested."""
    root = Path(tempfile.mkdtemp(prefix="autolab-secret-", dir="/var/tmp"))
    (root / "pub").mkdir()
    (root / "answers.txt").write_text("42")
    (root / "pub" / "readme.txt").write_text("public")
    (root / "pub" / "key.txt").write_text("hidden file")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_hidden_dir_unreadable_readable_path_reexposed(
    tmp_path: Path, force_isolation, secret_dir: Path
) -> None:
    force_isolation("bwrap")
    code = f"""
        import pathlib
        root = pathlib.Path("{secret_dir}")
        def probe(f):
            try:
                return f()
            except OSError as e:
                return type(e).__name__
        print(probe(lambda: (root / "answers.txt").read_text()))
        print(probe(lambda: (root / "pub" / "readme.txt").read_text()))
        print(probe(lambda: (root / "pub" / "readme.txt").write_text("changed")))
        print(probe(lambda: pathlib.Path("{PY}").exists()))
        print(repr(probe(lambda: (root / "pub" / "key.txt").read_text())))
    """
    r = run_code(tmp_path / "ws", code, readable=[secret_dir / "pub"],
                 hidden=[secret_dir, secret_dir / "pub" / "key.txt"])
    assert r.status == "ok", r
    answers, readme, write, python, key = r.stdout_tail.split()
    assert answers == "FileNotFoundError"
    assert readme == "public"
    assert write == "OSError"  # read-only file system
    assert python == "True"
    assert key == "'PermissionError'"  # a hidden file is covered by a nodev /dev/null
    assert (secret_dir / "pub" / "readme.txt").read_text() == "public"


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
def test_venv_torch_imports_under_bwrap(tmp_path: Path, force_isolation) -> None:
    force_isolation("bwrap")
    r = run_code(tmp_path / "ws", "import torch; print(torch.ones(2).sum().item())",
                 timeout_s=120, memory_mb=4000)
    assert r.status == "ok", r.stderr_tail
    assert r.stdout_tail.strip() == "2.0"


def test_infrastructure_faults_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    limits = Limits(timeout_s=5, memory_mb=100)
    with pytest.raises(SandboxError, match="interpreter"):
        run_sandboxed(["/nonexistent/python3"], tmp_path / "ws", limits)
    (tmp_path / "file").write_text("")
    with pytest.raises(SandboxError, match="workspace"):
        run_sandboxed([PY, "-c", "pass"], tmp_path / "file" / "ws", limits)
    monkeypatch.setenv("AUTOLAB_SANDBOX", "chroot")
    with pytest.raises(SandboxError, match="AUTOLAB_SANDBOX"):
        run_sandboxed([PY, "-c", "pass"], tmp_path / "ws", limits)


def test_bwrap_setup_failure_raises(
    tmp_path: Path, force_isolation, monkeypatch: pytest.MonkeyPatch
) -> None:
    force_isolation("bwrap")
    real = sandbox._bwrap_prefix
    monkeypatch.setattr(sandbox, "_bwrap_prefix", lambda *a: real(*a) + [
        "--bind", str(tmp_path / "missing"), "/mnt/x"])
    with pytest.raises(SandboxError, match="bwrap failed to start"):
        run_code(tmp_path / "ws", "print('never runs')")


def test_falls_back_when_namespaces_are_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox, "bwrap_works", lambda: False)
    monkeypatch.setattr(sandbox, "unshare_works", lambda: False)
    monkeypatch.delenv("AUTOLAB_SANDBOX", raising=False)
    assert run_code(tmp_path / "ws", "print(1)").isolation == "none"
    monkeypatch.setenv("AUTOLAB_SANDBOX", "bwrap")
    with pytest.raises(SandboxError, match="does not work"):
        run_code(tmp_path / "ws", "print(1)")
