"""A runtime guard a harness installs in its own process before it imports candidate code.

It is a second line behind the sandbox, and the first where the machine has no
filesystem isolation: a Python audit hook (PEP 578) that stops the process the moment
the candidate opens a path outside the step's allowed roots, creates a socket, starts a
process, loads native code, signals another process or installs a hook of its own. A
stopped step exits with GUARD_EXIT and leaves one line on the guard channel (a pipe the
trusted parent reads); the candidate cannot catch it, since the process ends inside the
hook. Audit hooks cannot be removed once added.

It sees only what goes through the interpreter: native code that opens files itself is
the sandbox's and the static scan's to stop. Stdlib only: it runs inside the sandbox.

Configuration comes from the environment the trusted runner built:
AUTOLAB_GUARD = JSON {"read": [roots], "write": [roots], "fd": channel fd or -1,
"allow_subprocess": bool}.
"""

from __future__ import annotations

import json
import os
import sys
from importlib.machinery import PathFinder

GUARD_EXIT = 113
ENV = "AUTOLAB_GUARD"

_ALWAYS_READABLE = (
    "/dev/null", "/dev/urandom", "/dev/random", "/proc/self", "/sys/devices/system/cpu",
    "/proc/cpuinfo", "/proc/meminfo", "/etc/localtime", "/usr/share/zoneinfo",
)
_WRITE_MODES = ("w", "a", "x", "+")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_DENIED_ALWAYS = (
    "socket.__new__", "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
    "ctypes.dlopen", "ctypes.dlsym", "ctypes.call_function", "ctypes.cdata",
    "os.kill", "os.killpg", "signal.pthread_kill", "sys.addaudithook",
    "sys.setprofile", "sys.settrace", "sys.remote_exec",
)
_PROCESS_EVENTS = (
    "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
    "os.forkpty", "pty.spawn",
)
_PATH_WRITE_EVENTS = {
    "os.remove": 0, "os.rmdir": 0, "os.mkdir": 0, "os.rename": (0, 1), "os.link": (0, 1),
    "os.symlink": (1,), "os.truncate": 0, "os.chmod": 0, "os.chown": 0, "os.utime": 0,
    "shutil.rmtree": 0, "shutil.copyfile": (1,), "shutil.move": (1,),
}
_PATH_READ_EVENTS = {"os.listdir": 0, "os.scandir": 0, "glob.glob": 0, "os.chdir": 0}


def _norm(path: object) -> str | None:
    """An absolute, normalised path for str/bytes/PathLike; None for fds and the rest."""
    if isinstance(path, int):
        return None
    try:
        path = os.fsdecode(os.fspath(path))  # type: ignore[arg-type]
    except TypeError:
        return None
    return os.path.realpath(os.path.abspath(path))


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


class Guard:
    """The policy of one step; `check` is the audit hook."""

    def __init__(self, read: list[str], write: list[str], fd: int, allow_subprocess: bool):
        norm = lambda paths: tuple(p for p in (_norm(x) for x in paths) if p)  # noqa: E731
        self.write = norm(write)
        self.read = norm(read) + self.write + norm(_ALWAYS_READABLE)
        self.fd = fd
        self.allow_subprocess = allow_subprocess
        self.armed = False

    def stop(self, event: str, detail: str) -> None:
        line = json.dumps({"event": event, "detail": detail[:300]}) + "\n"
        if self.fd >= 0:
            try:
                os.write(self.fd, line.encode())
            except OSError:
                pass
        try:
            os.write(2, f"autolab guard: stopped {event}: {detail[:300]}\n".encode())
        finally:
            os._exit(GUARD_EXIT)

    def _path(self, event: str, raw: object, write: bool) -> None:
        path = _norm(raw)
        if path is None:
            return
        if not _under(path, self.write if write else self.read):
            self.stop(event, f"{'write' if write else 'read'} {path} outside the allowed paths")

    def check(self, event: str, args: tuple) -> None:
        if not self.armed:
            return
        if event == "open":
            path, mode = args[0], args[1] if len(args) > 1 else None
            flags = args[2] if len(args) > 2 else None
            if isinstance(flags, int):
                write = bool(flags & _WRITE_FLAGS)
            else:
                write = isinstance(mode, str) and any(m in mode for m in _WRITE_MODES)
            self._path(event, path, write)
        elif event in _PATH_READ_EVENTS:
            self._path(event, args[0] if args else ".", False)
        elif event in _PATH_WRITE_EVENTS:
            where = _PATH_WRITE_EVENTS[event]
            for i in (where,) if isinstance(where, int) else where:
                if i < len(args):
                    self._path(event, args[i], True)
        elif event in _DENIED_ALWAYS:
            if event in ("os.kill", "os.killpg") and args and args[0] in (0, os.getpid()):
                return  # signalling itself is harmless
            self.stop(event, repr(args)[:200])
        elif event in _PROCESS_EVENTS and not self.allow_subprocess:
            self.stop(event, repr(args)[:200])


class _AllowedPathFinder:
    """Stands in for the path finder: top-level modules found outside the step's read roots
    (the standard library, the declared distributions, the harness) do not exist, as they
    would not under the sandbox, so optional imports fall back instead of tripping the
    guard."""

    def __init__(self, guard: Guard):
        self.guard = guard

    def find_spec(self, name, path=None, target=None):  # noqa: ANN001
        spec = PathFinder.find_spec(name, path, target)
        if spec is None or path is not None:
            return spec
        where = spec.origin if spec.has_location else None
        if where is None and spec.submodule_search_locations:
            where = next(iter(spec.submodule_search_locations), None)
        if where and not _under(_norm(where) or "", self.guard.read):
            return None
        return spec

    def invalidate_caches(self) -> None:
        PathFinder.invalidate_caches()


def install(extra_read: tuple[str, ...] = (), extra_write: tuple[str, ...] = ()) -> Guard | None:
    """Add the audit hook from AUTOLAB_GUARD (a no-op when the variable is absent)."""
    spec = os.environ.get(ENV)
    if not spec:
        return None
    cfg = json.loads(spec)
    guard = Guard(
        [*cfg.get("read", []), *extra_read],
        [*cfg.get("write", []), *extra_write],
        int(cfg.get("fd", -1)),
        bool(cfg.get("allow_subprocess", False)),
    )
    sys.meta_path[:] = [_AllowedPathFinder(guard) if f is PathFinder else f
                        for f in sys.meta_path]
    sys.addaudithook(guard.check)
    guard.armed = True
    return guard
