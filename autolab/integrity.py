"""What trusted code checks around every trial: file digests and a tripwire.

The harness and the staged inputs are hashed before and after a trial; the trusted code
of the orchestrator (the project's sources, compiled or not) and the interpreter's
startup hooks (`.pth` files, sitecustomize) are snapshotted by size and mtime. Under
bubblewrap none of them is writable by a trial; elsewhere this is how a trial that
wrote to them is caught.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from autolab.sandbox import site_dirs

PROJECT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("autolab", "flows", "tasks", "benchmarks")
STARTUP_HOOKS = ("sitecustomize.py", "usercustomize.py")


def file_digests(paths: Iterable[Path]) -> dict[str, str]:
    """sha256 of each file (recursively for folders); unreadable files say so."""
    out: dict[str, str] = {}
    for p in paths:
        p = Path(p)
        files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
        for f in files:
            try:
                out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
            except OSError as e:
                out[str(f)] = f"unreadable ({e.strerror})"
    return out


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def _stat_tree(root: Path, out: dict[str, tuple[int, int]]) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            out[path] = (st.st_size, st.st_mtime_ns)


def tripwire(extra: Sequence[Path] = ()) -> dict[str, tuple[int, int]]:
    """(size, mtime) of the project's sources and bytecode, of every top-level entry and
    startup hook in the interpreter's package dirs, and of `extra` trees."""
    snap: dict[str, tuple[int, int]] = {}
    for pkg in PROJECT_PACKAGES:
        _stat_tree(PROJECT / pkg, snap)
    for tree in extra:
        _stat_tree(Path(tree), snap)
    stdlib = Path(os.__file__).parent
    for folder in (*site_dirs(), stdlib):
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for e in entries:
            if folder == stdlib and e.name not in STARTUP_HOOKS:
                continue
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            snap[e.path] = (st.st_size if e.name.endswith((".pth", ".py")) else 0, st.st_mtime_ns)
    return snap
