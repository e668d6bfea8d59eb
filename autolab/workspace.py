"""Turning a proposal's edits into a candidate snapshot (the patch step's logic)."""

from __future__ import annotations

import ast
import difflib
import hashlib
from pathlib import PurePosixPath

from autolab.records import Candidate, FileEdit


class PatchRefused(ValueError):
    """The edit may not be applied: it touches a non-editable file, or changes nothing."""


class PatchFailed(ValueError):
    """The edit could not be applied to the parent (its search text is not there)."""


def _check_path(path: str, editable: tuple[str, ...]) -> None:
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts:
        raise PatchRefused(f"edit path {path!r} leaves the candidate's folder")
    if path not in editable:
        raise PatchRefused(
            f"edit touches non-editable file {path!r} (editable: {', '.join(editable)})"
        )


def apply_edits(
    parent: dict[str, str], edits: list[FileEdit], editable: tuple[str, ...]
) -> dict[str, str]:
    """Apply search/replace edits in order; refuse anything outside the editable files."""
    if not edits:
        raise PatchRefused("proposal carries no edit")
    files = dict(parent)
    for edit in edits:
        _check_path(edit.path, editable)
        if edit.search is None:
            files[edit.path] = edit.replace
            continue
        text = files.get(edit.path, "")
        count = text.count(edit.search)
        if count == 0:
            raise PatchFailed(f"search text not found in {edit.path}: {edit.search[:80]!r}")
        if count > 1:
            raise PatchFailed(f"search text occurs {count} times in {edit.path}; it must be unique")
        files[edit.path] = text.replace(edit.search, edit.replace, 1)
    if files == parent:
        raise PatchRefused("edit changes nothing")
    return files


def unified_diff(old: dict[str, str], new: dict[str, str]) -> str:
    out: list[str] = []
    for path in sorted(set(old) | set(new)):
        a, b = old.get(path, ""), new.get(path, "")
        if a != b:
            out.extend(
                difflib.unified_diff(
                    a.splitlines(keepends=True),
                    b.splitlines(keepends=True),
                    f"a/{path}",
                    f"b/{path}",
                )
            )
    return "".join(out)


def file_hashes(files: dict[str, str]) -> dict[str, str]:
    return {p: hashlib.sha256(t.encode()).hexdigest() for p, t in sorted(files.items())}


def make_candidate(
    benchmark: str,
    files: dict[str, str],
    parents: list[str],
    proposal_id: str | None,
    parent_files: dict[str, str] | None = None,
) -> Candidate:
    hashes = file_hashes(files)
    return Candidate(
        id=Candidate.key(hashes),
        benchmark=benchmark,
        parents=parents,
        proposal_id=proposal_id,
        files=hashes,
        diff=unified_diff(parent_files or {}, files) if parent_files is not None else "",
    )


# -- static checks (the build step's cheap gate before any trial) ---------------------------

FORBIDDEN_MODULES = frozenset(
    {
        "autolab",
        "benchmarks",
        "subprocess",
        "socket",
        "ctypes",
        "multiprocessing",
        "importlib",
        "requests",
        "urllib",
        "http",
        "httpx",
        "pty",
        "signal",
    }
)
FORBIDDEN_CALLS = frozenset({"eval", "exec", "compile", "__import__", "breakpoint"})
FORBIDDEN_ATTRS = frozenset(
    {"system", "popen", "fork", "execv", "execve", "kill", "environ", "modules"}
)


def static_findings(path: str, source: str) -> list[str]:
    """Syntax errors and uses of escape hatches a candidate has no business with."""
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as err:
        return [f"{path}:{err.lineno}: syntax error: {err.msg}"]
    found: list[str] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            if name.split(".")[0] in FORBIDDEN_MODULES:
                found.append(f"{path}:{node.lineno}: imports {name!r}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in FORBIDDEN_CALLS:
                found.append(f"{path}:{node.lineno}: calls {node.func.id}()")
        if isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_ATTRS:
            found.append(f"{path}:{node.lineno}: uses .{node.attr}")
    return found
