"""The editing tools an LLM proposer is given, and the session that carries them out.

The model works on an in-memory copy of the candidate's editable files and nothing else:
it may view a file, replace a span that occurs exactly once, write a whole file, and
finish with a rationale. Every call is checked; a bad call (malformed input, a file that
is not editable, a span that matches nothing or more than once) is answered with an error
the model can act on, and counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from autolab.proposers.knobs import minimal_edit
from autolab.proposers.memory import normalise_idea
from autolab.records import FileEdit

TOOLS: list[dict[str, Any]] = [
    {
        "name": "view_file",
        "description": "Show an editable file with line numbers (the numbers are for "
        "orientation only and are not part of the file). Optional 1-based inclusive range.",
        "input_schema": {
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "an editable file"},
                "start_line": {"type": "integer", "minimum": 1},
                "end_line": {"type": "integer", "minimum": 1},
            },
            "required": ["path"],
        },
    },
    {
        "name": "replace_span",
        "description": "Replace a span of an editable file. `old` must occur exactly once in "
        "the file's current text (include enough surrounding lines to make it unique; no line "
        "numbers); it is replaced by `new`.",
        "input_schema": {
            "type": "object",
            "properties": {
                "path": {"type": "string"},
                "old": {"type": "string", "description": "exact text to replace"},
                "new": {"type": "string", "description": "replacement text"},
            },
            "required": ["path", "old", "new"],
        },
    },
    {
        "name": "write_file",
        "description": "Replace the whole content of an editable file.",
        "input_schema": {
            "type": "object",
            "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
            "required": ["path", "content"],
        },
    },
    {
        "name": "finish",
        "description": "End the proposal once the edit is complete. `idea` is a short "
        "snake_case label of the one idea tried (e.g. rotary_embeddings); `rationale` says "
        "what changed and why it should improve the metric.",
        "input_schema": {
            "type": "object",
            "properties": {
                "idea": {"type": "string"},
                "rationale": {"type": "string"},
            },
            "required": ["idea", "rationale"],
        },
    },
]
SCHEMAS = {t["name"]: t["input_schema"] for t in TOOLS}
_TYPES = {"string": str, "integer": int}


class ToolError(ValueError):
    """A call the session refused; its message goes back to the model."""


def check_input(name: str, data: object) -> dict[str, Any]:
    """The call's arguments, checked against the tool's schema (required keys and types)."""
    if name not in SCHEMAS:
        raise ToolError(f"unknown tool {name!r}; tools: {', '.join(SCHEMAS)}")
    if not isinstance(data, dict):
        raise ToolError(f"malformed input for {name}: expected an object of arguments")
    schema = SCHEMAS[name]
    missing = [k for k in schema["required"] if k not in data]
    if missing:
        raise ToolError(f"malformed input for {name}: missing {', '.join(missing)}")
    for key, value in data.items():
        spec = schema["properties"].get(key)
        if spec is None:
            raise ToolError(f"malformed input for {name}: unknown argument {key!r}")
        kind = _TYPES[spec["type"]]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ToolError(f"malformed input for {name}: {key} must be a {spec['type']}")
    return data


@dataclass
class Finish:
    idea: str
    rationale: str


@dataclass
class EditSession:
    """The files the model edits, starting from `start`, confined to `editable`."""

    start: Mapping[str, str]
    editable: tuple[str, ...]
    tried: Mapping[str, str] = field(default_factory=dict)  # idea -> its negative outcome here
    files: dict[str, str] = field(init=False)
    errors: list[str] = field(default_factory=list)
    finished: Finish | None = None
    _warned: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.files = {p: t for p, t in self.start.items() if p in self.editable}

    # -- dispatch ----------------------------------------------------------------------------
    def call(self, name: str, data: object) -> tuple[str, bool]:
        """(text for the model, is_error). Errors are recorded in `errors`."""
        try:
            args = check_input(name, data)
            return getattr(self, f"_{name}")(**args), False
        except ToolError as err:
            self.errors.append(str(err))
            return f"error: {err}", True
        except (ValueError, TypeError, IndexError, KeyError) as err:  # input the schema let by
            self.errors.append(f"{name}: {type(err).__name__}: {err}")
            return f"error: {name}: {type(err).__name__}: {err}", True

    @property
    def changed(self) -> bool:
        return self.files != {p: t for p, t in self.start.items() if p in self.editable}

    def edits(self, reference: Mapping[str, str]) -> list[FileEdit]:
        """The session's result as edits against `reference` (the proposal's first parent)."""
        out = []
        for path in sorted(self.files):
            new, old = self.files[path], reference.get(path)
            if old is None:
                out.append(FileEdit(path=path, replace=new))
            elif new != old:
                out.append(minimal_edit(path, old, new))
        return out

    # -- the tools ---------------------------------------------------------------------------
    def _path(self, path: str) -> str:
        pure = PurePosixPath(path)
        if pure.is_absolute() or ".." in pure.parts or path not in self.editable:
            raise ToolError(f"{path!r} is not an editable file (editable: "
                            f"{', '.join(self.editable)}); nothing else may be read or changed")
        return path

    def _view_file(self, path: str, start_line: int = 1, end_line: int | None = None) -> str:
        text = self.files.get(self._path(path))
        if text is None:
            return f"{path} does not exist yet (write_file creates it)"
        lines = text.splitlines()
        if start_line < 1 or (end_line is not None and end_line < 1):
            raise ToolError(f"lines are numbered from 1 (got {start_line}-{end_line})")
        end = min(end_line or len(lines), len(lines))
        if start_line > max(end, 1):
            raise ToolError(f"{path} has {len(lines)} lines; range {start_line}-{end} is empty")
        width = len(str(end))
        return "\n".join(f"{i:>{width}}  {lines[i - 1]}" for i in range(start_line, end + 1))

    def _replace_span(self, path: str, old: str, new: str) -> str:
        text = self.files.get(self._path(path), "")
        count = text.count(old) if old else 0
        if count == 0:
            raise ToolError(f"the span to replace was not found in {path}; copy it exactly "
                            "from view_file, without line numbers")
        if count > 1:
            raise ToolError(f"the span occurs {count} times in {path}; include more lines "
                            "around it so it is unique")
        self.files[path] = text.replace(old, new, 1)
        return f"replaced 1 span in {path} ({old.count(chr(10)) + 1} line(s) -> " \
               f"{new.count(chr(10)) + 1})"

    def _write_file(self, path: str, content: str) -> str:
        self.files[self._path(path)] = content
        return f"wrote {path} ({len(content.splitlines())} lines)"

    def _finish(self, idea: str, rationale: str) -> str:
        if not self.changed:
            raise ToolError("no edit has been made: change the files before calling finish")
        if not rationale.strip() or not normalise_idea(idea):
            raise ToolError("finish needs a non-empty idea label and rationale")
        key = normalise_idea(idea)
        if key in self.tried and key not in self._warned:
            self._warned.add(key)
            return (f"not finished: idea {key!r} was already tried on this parent "
                    f"({self.tried[key]}). Try a different idea, or, if this attempt really "
                    "differs, say how in the rationale and call finish again.")
        self.finished = Finish(idea=key, rationale=rationale.strip())
        return "finished"
