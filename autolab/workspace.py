"""Turning a proposal's edits into a candidate snapshot (the patch step's logic)."""

from __future__ import annotations

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
