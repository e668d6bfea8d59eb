"""Line-level source surgery: knob lines, minimal search/replace edits, 3-way merge.

Knobs are the plain settings a benchmark exposes (learning rate, depth, activation).
They live as module-level `NAME = literal` assignments so that a human can read and
edit them, and so the offline proposer can change exactly one line per knob: small,
reviewable diffs whose lineage says precisely what moved. The same line-oriented view
gives the smallest unique search/replace for a code edit and lets crossover merge two
branches' knob values by value rather than as text.
"""

from __future__ import annotations

import ast
import difflib
import io
import re
import shutil
import subprocess
import tempfile
import tokenize
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from autolab.records import FileEdit
from benchmarks.protocol import EditNotApplicable, Knob

KnobValue = str | int | float | bool


@dataclass(frozen=True)
class KnobLine:
    """Where a knob's assignment sits in a source and what it holds."""

    index: int  # line number, 0-based
    prefix: str  # "NAME = " or "NAME: type = ", kept verbatim when rewriting
    value: KnobValue
    comment: str  # trailing "  # ..." including its leading spaces, or ""


def _split_comment(line: str) -> tuple[str, str]:
    """Split off a trailing comment with the tokenizer, so a '#' inside a string is safe."""
    if "#" not in line:
        return line, ""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(line).readline))
    except (tokenize.TokenError, SyntaxError):
        return line, ""
    for tok in tokens:
        if tok.type == tokenize.COMMENT:
            col = tok.start[1]
            code = line[:col].rstrip()
            return code, line[len(code) :]
    return line, ""


def find_knob(source: str, name: str) -> KnobLine | None:
    """The last top-level `name = literal` line (the one in effect), or None."""
    return _find(_assignments(source).get(name[:1], []), name)


def _assignments(source: str) -> dict[str, list[tuple[int, str]]]:
    """(index, line) of the lines that could assign a knob (they contain '='), by their
    first character: a knob line starts with the knob's name."""
    out: dict[str, list[tuple[int, str]]] = {}
    for index, line in enumerate(source.splitlines()):
        if "=" in line:
            out.setdefault(line[:1], []).append((index, line))
    return out


def _find(lines: list[tuple[int, str]], name: str) -> KnobLine | None:
    pattern = re.compile(rf"^({re.escape(name)}\s*(?::[^=]+)?=\s*)(.+)$")
    found: KnobLine | None = None
    for index, line in lines:
        if not line.startswith(name):  # the pattern's own first test, done cheaply
            continue
        match = pattern.match(line)
        if match is None:
            continue
        code, comment = _split_comment(match.group(2))
        try:
            value = _literal(code.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            continue
        if isinstance(value, str | int | float | bool):
            found = KnobLine(index, match.group(1), value, comment)
    return found


_INT = re.compile(r"[+-]?(?:0|[1-9][0-9]*)")
_FLOAT = re.compile(r"[+-]?(?:(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
                    r"|[0-9]+[eE][+-]?[0-9]+)")


def _literal(code: str) -> object:
    """ast.literal_eval, with plain decimal numbers read directly (same values, faster)."""
    if _INT.fullmatch(code):
        return int(code)
    if _FLOAT.fullmatch(code):
        return float(code)
    return ast.literal_eval(code)


def typed_value(knob: Knob, value: KnobValue) -> KnobValue:
    """Coerce `LR = 1` to 1.0 for a float knob (and 4.0 to 4 for an int knob), so values
    read from files, from the archive and from the sampler compare equal."""
    if knob.kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if knob.kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def read_knobs(files: Mapping[str, str], knobs: Sequence[Knob]) -> dict[str, KnobValue]:
    """Current value of every knob found in its file; knobs that are absent are left out."""
    values: dict[str, KnobValue] = {}
    lines: dict[str, dict[str, list[tuple[int, str]]]] = {}
    for knob in knobs:
        source = files.get(knob.file)
        if source is not None and knob.file not in lines:
            lines[knob.file] = _assignments(source)
        line = (_find(lines[knob.file].get(knob.name[:1], []), knob.name)
                if source is not None else None)
        if line is not None:
            values[knob.name] = typed_value(knob, line.value)
    return values


def format_value(value: KnobValue) -> str:
    """Python literal for a knob value: floats by repr (shortest round-trip), strings in
    double quotes, matching how people write settings by hand."""
    if isinstance(value, bool | int | float):
        return repr(value)
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def set_knob(source: str, name: str, value: KnobValue) -> str:
    """Rewrite the one assignment line of `name`, keeping its trailing comment."""
    line = find_knob(source, name)
    if line is None:
        raise EditNotApplicable(f"knob {name} is not assigned a literal at top level")
    lines = source.splitlines(keepends=True)
    old = lines[line.index]
    ending = old[len(old.rstrip("\r\n")) :]
    lines[line.index] = f"{line.prefix}{format_value(value)}{line.comment}{ending}"
    return "".join(lines)


def knob_edits(
    parent_files: Mapping[str, str], changes: Mapping[str, KnobValue], knobs: Sequence[Knob]
) -> list[FileEdit]:
    """One search/replace edit per changed knob (old line -> new line).

    The patch step requires each search text to be unique in its file; where a knob line
    is not unique (a duplicate elsewhere in the file), that file gets one whole-file
    edit instead, which is always exact.
    """
    by_name = {k.name: k for k in knobs}
    per_file: dict[str, list[str]] = {}
    for name in changes:
        if name not in by_name:
            raise EditNotApplicable(f"unknown knob {name}")
        per_file.setdefault(by_name[name].file, []).append(name)
    edits: list[FileEdit] = []
    for path, names in per_file.items():
        if path not in parent_files:
            raise EditNotApplicable(f"knob file {path} is not among the candidate's files")
        text = parent_files[path]
        file_edits: list[FileEdit] | None = []
        for name in names:
            old_line = text.splitlines()[_require(text, name).index]
            new_text = set_knob(text, name, changes[name])
            new_line = new_text.splitlines()[_require(new_text, name).index]
            if old_line == new_line:
                continue
            if file_edits is not None and text.count(old_line) == 1:
                file_edits.append(FileEdit(path=path, search=old_line, replace=new_line))
            else:
                file_edits = None
            text = new_text
        if file_edits is None:
            file_edits = [FileEdit(path=path, search=None, replace=text)]
        edits.extend(file_edits)
    return edits


def _require(source: str, name: str) -> KnobLine:
    line = find_knob(source, name)
    if line is None:
        raise EditNotApplicable(f"knob {name} is not assigned a literal at top level")
    return line


def minimal_edit(path: str, old: str, new: str) -> FileEdit:
    """The changed block of lines as a unique search/replace, with context if needed;
    a whole-file edit only when no unique anchor exists."""
    a, b = old.splitlines(keepends=True), new.splitlines(keepends=True)
    start = 0
    while start < min(len(a), len(b)) and a[start] == b[start]:
        start += 1
    end = 0
    while end < min(len(a), len(b)) - start and a[-1 - end] == b[-1 - end]:
        end += 1
    for context in range(4):
        lo, tail = max(0, start - context), max(0, end - context)
        search = "".join(a[lo : len(a) - tail])
        if search and old.count(search) == 1:
            return FileEdit(path=path, search=search, replace="".join(b[lo : len(b) - tail]))
    return FileEdit(path=path, search=None, replace=new)


def merge_file(
    base: str, a: str, b: str, knobs: Iterable[Knob] = ()
) -> tuple[str, list[str], list[str]]:
    """Three-way merge of one file, knob lines resolved by value before the text merge.

    Knob lines are taken out of the text merge (all three versions get A's line) so
    that tuning different knobs on adjacent lines never reads as a conflict. A knob
    changed by one side takes that side's value; one changed by both sides to different
    values keeps A's value: A is the parent the graft is made onto, and the other value
    stays in the archive for `tune` to revisit. Returns (text, notes, conflicts).
    """
    notes: list[str] = []
    take_b: dict[str, KnobValue] = {}
    for knob in knobs:
        lo, la, lb = (find_knob(t, knob.name) for t in (base, a, b))
        if lo is None or la is None or lb is None:
            continue  # added or removed by one side: left to the text merge
        vo, va, vb = (typed_value(knob, x.value) for x in (lo, la, lb))
        a_line = a.splitlines()[la.index]
        base, b = _put_line(base, lo.index, a_line), _put_line(b, lb.index, a_line)
        if va == vo and vb != vo:
            take_b[knob.name] = vb
            notes.append(f"{knob.name} takes B's value {format_value(vb)}.")
        elif va != vb and vb != vo:
            notes.append(
                f"{knob.name} was changed by both parents (A {format_value(va)}, "
                f"B {format_value(vb)}); A's value is kept."
            )
    text, conflicts = merge3(base, a, b)
    for name, value in take_b.items():
        text = set_knob(text, name, value)
    return text, notes, conflicts


def _put_line(text: str, index: int, line: str) -> str:
    lines = text.splitlines(keepends=True)
    old = lines[index]
    lines[index] = line + old[len(old.rstrip("\r\n")) :]
    return "".join(lines)


def merge3(base: str, a: str, b: str, use_git: bool = True) -> tuple[str, list[str]]:
    """Merge the changes base->a and base->b; returns (text, conflict descriptions).

    `git merge-file` is the reference implementation; the difflib fallback covers
    machines without git (it is slightly more lenient: changes on adjacent lines merge).
    """
    if a == b or base == b:
        return a, []
    if base == a:
        return b, []
    git = shutil.which("git") if use_git else None
    if git is not None:
        with tempfile.TemporaryDirectory() as tmp:
            paths = [Path(tmp, n) for n in ("a", "base", "b")]
            for p, t in zip(paths, (a, base, b), strict=True):
                p.write_bytes(t.encode())
            proc = subprocess.run(
                [git, "merge-file", "-p", "-L", "A", "-L", "base", "-L", "B", *map(str, paths)],
                capture_output=True,
                check=False,
            )
        if 0 <= proc.returncode < 128:
            text = proc.stdout.decode()
            marks = [i + 1 for i, ln in enumerate(text.splitlines()) if ln.startswith("<<<<<<<")]
            return text, [f"both parents changed the code around merged line {n}" for n in marks]
    return _merge3_py(base, a, b)


def _merge3_py(base: str, a: str, b: str) -> tuple[str, list[str]]:
    o = base.splitlines(keepends=True)
    sides = [a.splitlines(keepends=True), b.splitlines(keepends=True)]
    hunks = sorted(
        (i1, i2, side, sides[side][j1:j2])
        for side in (0, 1)
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, o, sides[side]).get_opcodes()
        if tag != "equal"
    )
    out: list[str] = []
    conflicts: list[str] = []
    pos, k = 0, 0
    while k < len(hunks):
        cluster = [hunks[k]]
        start, end = hunks[k][0], hunks[k][1]
        k += 1
        while k < len(hunks) and (hunks[k][0] < end or hunks[k][0] == start):
            cluster.append(hunks[k])
            end = max(end, hunks[k][1])
            k += 1
        versions = set()
        for side in {h[2] for h in cluster}:
            region, at = [], start
            for i1, i2, _, rep in (h for h in cluster if h[2] == side):
                region += o[at:i1] + rep
                at = i2
            versions.add("".join(region + o[at:end]))
        out += o[pos:start]
        if len(versions) > 1:
            conflicts.append(f"both parents changed base lines {start + 1}-{max(end, start + 1)}")
        out.append(min(versions))
        pos = end
    out += o[pos:]
    return "".join(out), conflicts
