"""A runtime guard a harness installs in its own process before it imports candidate code.

It is a second line behind the sandbox, and the first where the machine has no
filesystem isolation: a Python audit hook (PEP 578) that ends the process the moment
the candidate opens or lists a path outside the step's read roots, writes outside its
write roots, makes links or special files, creates a socket, starts a process, loads
native code, signals another process or installs a hook of its own. A stopped step exits
with GUARD_EXIT and leaves one line on the guard channel (a pipe the trusted parent
reads); the candidate cannot catch it, since the process ends inside the hook. An audit
hook cannot be removed, and this one keeps its policy in immutable closures: there is
no flag or object for candidate code to reach and switch off.

It sees only what goes through the interpreter: native code that opens files itself is
the sandbox's and the static scan's to stop. Harnesses import their libraries first and
install the guard last. Stdlib only: it runs inside the sandbox.

Configuration comes from the environment the trusted runner built:
AUTOLAB_GUARD = JSON {"read": [roots], "write": [roots], "fd": channel fd or -1,
"allow_subprocess": bool}.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from importlib.machinery import PathFinder

GUARD_EXIT = 113
ENV = "AUTOLAB_GUARD"

# /proc/self itself is not listed: /proc/self/root, cwd and fd lead anywhere on the host.
_ALWAYS_READABLE = (
    "/dev/null", "/dev/urandom", "/dev/random", "/sys/devices/system/cpu",
    "/proc/self/status", "/proc/self/stat", "/proc/self/statm", "/proc/self/maps",
    "/proc/self/cmdline", "/proc/self/cgroup", "/proc/self/limits", "/proc/self/mountinfo",
    "/proc/cpuinfo", "/proc/meminfo", "/etc/localtime", "/usr/share/zoneinfo",
)
_WRITE_MODES = ("w", "a", "x", "+")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_DENIED_ALWAYS = frozenset({
    "socket.__new__", "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
    "ctypes.dlopen", "ctypes.dlsym", "ctypes.call_function", "ctypes.cdata",
    "os.kill", "os.killpg", "signal.pthread_kill", "sys.addaudithook",
    "sys.setprofile", "sys.settrace", "sys.remote_exec",
    "os.symlink", "os.link",
})  # fmt: skip  (os.mkfifo and os.mknod raise no audit event: trusted readers refuse
#                  anything but a regular file instead, see benchmarks.protocol.read_output)
_PROCESS_EVENTS = frozenset({
    "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
    "os.forkpty", "pty.spawn",
})  # fmt: skip
_PATH_WRITE_EVENTS = {
    "os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.rename": (0, 1),
    "os.truncate": (0,), "os.chmod": (0,), "os.chown": (0,), "os.utime": (0,),
    "shutil.rmtree": (0,), "shutil.copyfile": (1,), "shutil.move": (1,),
}
# where the directory descriptor of each path argument above sits in the event's args
_DIR_FD_ARGS = {
    "os.remove": (1,), "os.rmdir": (1,), "os.mkdir": (2,), "os.rename": (2, 3),
    "os.chmod": (2,), "os.chown": (3,), "os.utime": (3,),
}
_PATH_READ_EVENTS = {"os.listdir": 0, "os.scandir": 0, "glob.glob": 0, "os.chdir": 0}


def _norm(path: object, fsdecode=os.fsdecode, fspath=os.fspath, realpath=os.path.realpath,
          abspath=os.path.abspath) -> str | None:
    """An absolute, normalised path for str/bytes/PathLike; None for fds and the rest."""
    if isinstance(path, int):
        return None
    try:
        path = fsdecode(fspath(path))  # type: ignore[arg-type]
    except TypeError:
        return None
    return realpath(abspath(path))


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _escapes(raw: object, fsdecode=os.fsdecode, fspath=os.fspath,
             isabs=os.path.isabs) -> bool:
    """A relative path that climbs: resolved against a directory descriptor the hook does
    not see, it could leave any root."""
    if isinstance(raw, int):
        return False
    try:
        text = fsdecode(fspath(raw))  # type: ignore[arg-type]
    except TypeError:
        return False
    return not isabs(text) and ".." in text.replace("\\", "/").split("/")


def make_hook(
    read: tuple[str, ...], write: tuple[str, ...], fd: int, allow_subprocess: bool,
    on_stop: Callable[[str, str], None] | None = None,
) -> Callable[[str, tuple], None]:
    """The audit hook for one step's policy; everything it needs is in its closure,
    bound now, so replacing this module's names later changes nothing.
    `on_stop` replaces ending the process (for testing the policy in-process)."""
    norm, under, escapes, dumps, write_fd, exit_now = _norm, _under, _escapes, json.dumps, \
        os.write, os._exit
    getpid, write_flags, write_modes, isdir = os.getpid, _WRITE_FLAGS, _WRITE_MODES, \
        os.path.isdir
    read_events, write_events = dict(_PATH_READ_EVENTS), dict(_PATH_WRITE_EVENTS)
    dir_fd_args = dict(_DIR_FD_ARGS)
    isabs, fspath = os.path.isabs, os.fspath
    getframe, own_file, basename = sys._getframe, __file__, os.path.basename
    readlink, join = os.readlink, os.path.join

    def relative(raw: object) -> bool:
        try:
            return not isabs(fspath(raw))  # type: ignore[arg-type]
        except TypeError:
            return False
    denied, process_events = _DENIED_ALWAYS, _PROCESS_EVENTS
    # A step that runs compiler toolchains (torch.compile: Inductor, Triton) adds audit
    # hooks of its own, hard-links files in its caches and loads the libraries it built or
    # the system's: allowed there within its roots; the sandbox remains the boundary.
    toolchain = {"sys.addaudithook", "os.link", "ctypes.dlopen", "ctypes.dlsym",
                 "ctypes.call_function", "ctypes.cdata"} if allow_subprocess else set()
    denied = denied - toolchain

    def where() -> str:
        """The innermost calls outside this module that led here: which line of the
        candidate, or of a library it called, tried what the policy forbids."""
        calls = []
        try:
            frame = getframe(1)
            while frame is not None and len(calls) < 6:
                code = frame.f_code
                if code.co_filename != own_file and not code.co_filename.startswith("<frozen"):
                    calls.append(f"{basename(code.co_filename)}:{frame.f_lineno} {code.co_name}")
                frame = frame.f_back
        except Exception:  # noqa: BLE001 - the stop must happen whatever this finds
            pass
        return " < ".join(calls)

    def end(event: str, detail: str) -> None:
        line = dumps({"event": event, "detail": detail[:300]}) + "\n"
        if fd >= 0:
            try:
                write_fd(fd, line.encode())
            except OSError:
                pass
        try:
            write_fd(2, f"autolab guard: stopped {event}: {detail[:300]}\n".encode())
            # last: finding the calls raises an audit event of its own, which a hook the
            # candidate added may see (the stop is on record by then)
            write_fd(2, f"autolab guard: called from {where()}\n".encode())
        finally:
            exit_now(GUARD_EXIT)

    stop = on_stop or end

    def at_fd(event: str, raw: object, fd: int) -> None:
        """A write to a relative path under a directory descriptor: where the descriptor
        points is read back (a folder listed by os.scandir keeps one open, at a number
        easy to guess) and the path resolved there must be under the write roots."""
        if escapes(raw):
            stop(event, f"relative path {raw!r} that climbs out of its folder")
        try:
            base = readlink(f"/proc/self/fd/{fd}")
        except (OSError, ValueError):
            stop(event, f"write relative to descriptor {fd}, which cannot be resolved")
            return
        resolved = norm(join(base, fspath(raw)))  # type: ignore[arg-type]
        if resolved is None or not under(resolved, write):
            stop(event, f"write {resolved} outside the allowed paths (descriptor {fd})")

    def path(event: str, raw: object, writing: bool) -> None:
        if escapes(raw):
            stop(event, f"relative path {raw!r} that climbs out of its folder")
        resolved = norm(raw)
        if resolved is not None and not under(resolved, write if writing else read):
            stop(event, f"{'write' if writing else 'read'} {resolved} outside the allowed paths")

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            raw, mode = args[0], args[1] if len(args) > 1 else None
            flags = args[2] if len(args) > 2 else None
            if isinstance(flags, int):
                writing = bool(flags & write_flags)
            else:
                writing = isinstance(mode, str) and any(m in mode for m in write_modes)
            if mode is None and writing and relative(raw):
                # os.open: its audit event does not say which directory descriptor a
                # relative path is relative to, so the path cannot be placed
                stop(event, f"os.open of the relative path {raw!r} for writing")
            path(event, raw, writing)
            if mode is None and (resolved := norm(raw)) is not None and isdir(resolved) \
                    and not under(resolved, write):
                # a directory descriptor: names opened relative to it (dir_fd=) are not in
                # the audit event, so outside the workspace it would be a way around
                stop(event, f"directory descriptor for {resolved} outside the workspace")
        elif event in read_events:
            path(event, args[0] if args else ".", False)
        elif event in write_events:
            fds = dir_fd_args.get(event, ())
            for k, i in enumerate(write_events[event]):
                if i >= len(args):
                    continue
                fd_index = fds[k] if k < len(fds) else None
                relative_to_fd = fd_index is not None and fd_index < len(args) and isinstance(
                    args[fd_index], int) and args[fd_index] >= 0
                if relative_to_fd and relative(args[i]):
                    at_fd(event, args[i], args[fd_index])
                    continue
                if event == "os.mkdir" and (resolved := norm(args[i])) is not None \
                        and under(resolved, read) and isdir(resolved):
                    # making a readable folder that exists changes nothing (the call fails
                    # with EEXIST): libraries do it for the working directory
                    continue
                path(event, args[i], True)
        elif event == "os.link" and event in toolchain:
            for raw, fd in zip(args[:2], args[2:4], strict=False):
                if isinstance(fd, int) and fd >= 0 and relative(raw):
                    at_fd(event, raw, fd)
                else:
                    path(event, raw, True)
        elif event == "ctypes.dlopen" and event in toolchain:
            if args and args[0] is not None and "/" in str(args[0]):
                path(event, args[0], False)
        elif event in denied:
            if event in ("os.kill", "os.killpg") and args and args[0] in (0, getpid()):
                return  # signalling itself is harmless
            stop(event, repr(args)[:200])
        elif event in process_events and not allow_subprocess:
            stop(event, repr(args)[:200])

    return hook


class _AllowedPathFinder:
    """Stands in for the path finder: top-level modules found outside the step's read roots
    (the standard library, the declared distributions, the harness) do not exist, as they
    would not under the sandbox, so optional imports fall back instead of tripping the
    guard. Removing it from sys.meta_path only turns such imports into guard stops."""

    __slots__ = ("_allowed", "_dists")

    def __init__(self, read: tuple[str, ...]):
        self._allowed = read
        self._dists = tuple(r for r in read if r.endswith((".dist-info", ".egg-info")))

    def find_spec(self, name, path=None, target=None):  # noqa: ANN001
        spec = PathFinder.find_spec(name, path, target)
        if spec is None or path is not None:
            return spec
        where = spec.origin if spec.has_location else None
        if where is None and spec.submodule_search_locations:
            where = next(iter(spec.submodule_search_locations), None)
        if where and not _under(_norm(where) or "", self._allowed):
            return None
        return spec

    def find_distributions(self, context=None):  # noqa: ANN001
        """Installed distributions (importlib.metadata: entry points, versions) among the
        read roots only: listing site-packages would be a read outside them."""
        from importlib.metadata import PathDistribution
        from pathlib import Path

        def key(text: str) -> str:
            return text.replace("-", "_").replace(".", "_").lower()

        wanted = getattr(context, "name", None)
        for root in self._dists:
            name = os.path.basename(root).split("-", 1)[0]
            if wanted is None or key(name) == key(wanted):
                yield PathDistribution(Path(root))

    def invalidate_caches(self) -> None:
        PathFinder.invalidate_caches()


def install(extra_read: tuple[str, ...] = (), extra_write: tuple[str, ...] = ()) -> bool:
    """Add the audit hook from AUTOLAB_GUARD (a no-op when the variable is absent)."""
    spec = os.environ.get(ENV)
    if not spec:
        return False
    cfg = json.loads(spec)
    roots = lambda paths: tuple(p for p in (_norm(x) for x in paths) if p)  # noqa: E731
    write = roots([*cfg.get("write", []), *extra_write, "/dev/null"])
    read = roots([*cfg.get("read", []), *extra_read, *_ALWAYS_READABLE]) + write
    hook = make_hook(read, write, int(cfg.get("fd", -1)), bool(cfg.get("allow_subprocess")))
    sys.meta_path[:] = [_AllowedPathFinder(read) if f is PathFinder else f
                        for f in sys.meta_path]
    sys.addaudithook(hook)
    return True
