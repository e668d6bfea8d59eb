"""Audit level 0: a static scan of candidate code before any trial runs.

Cheap and conservative. It refuses imports outside the benchmark's allowlist, the
builtins and attributes that reach the interpreter's internals or the outside world
(files, processes, native code, string evaluation), private attributes of anything but
the candidate's own objects (the way other modules' `os`, `sys` and `builtins` are
reached), attribute access by computed name, and string annotations (which typing can
evaluate as code). It is the first of several lines, not the boundary: the sandbox and
the runtime guard stop what it misses. Honest code it refuses: `getattr(nn, NAME)`,
`x.__class__`, `torch.jit`, `.open(...)`; write them another way.
"""

from __future__ import annotations

import ast
import string
from collections.abc import Iterable

# Names that reach around the language: dynamic code, introspection, I/O, the process.
FORBIDDEN_NAMES = frozenset({
    "eval", "exec", "compile", "__import__", "breakpoint", "open", "input", "globals",
    "locals", "vars", "getattr", "setattr", "delattr", "__builtins__", "__loader__",
    "__spec__", "memoryview", "help", "exit", "quit",
})  # fmt: skip
# Attributes of modules and objects that open files, load native code, start processes,
# or expose internals from which everything else can be reached.
FORBIDDEN_ATTRS = frozenset({
    # files and native code in torch / numpy
    "from_file", "load", "loadtxt", "genfromtxt", "fromfile", "fromregex", "memmap", "save",
    "savez", "savez_compressed", "savetxt", "tofile", "load_library", "load_inline",
    "cpp_extension", "ctypeslib", "hub", "_C", "ops", "classes", "set_default_device",
    "distributed", "multiprocessing", "jit", "compile", "export",
    # the process and its environment
    "system", "popen", "fork", "execv", "execve", "spawn", "kill", "killpg", "environ",
    "getenv", "putenv", "_exit", "settrace", "setprofile", "addaudithook", "_getframe",
    "pidfd_open", "pidfd_send_signal",
    # builtins and string evaluation reached as attributes
    "exec", "open", "globals", "locals", "vars", "getattr", "setattr", "delattr",
    "breakpoint", "bltns", "get_type_hints", "ForwardRef", "singledispatch",
    "singledispatchmethod", "evaluate",
    # attribute access and calls by a name given as a string (getattr by another road),
    # reads at addresses a view was not given, and readers of arbitrary files
    "attrgetter", "methodcaller", "as_strided", "__array_interface__",
    "__cuda_array_interface__", "datapipes", "FileOpener",
    # interpreter internals
    "__dict__", "__class__", "__bases__", "__mro__", "__subclasses__", "__globals__",
    "__code__", "__closure__", "__builtins__", "__getattribute__", "__reduce__",
    "__reduce_ex__", "__self__", "__func__", "__wrapped__", "__loader__", "__spec__",
    "__import__", "f_globals", "f_locals", "f_back", "f_builtins", "tb_frame", "gi_frame",
    "cr_frame", "co_code", "func_globals",
    # modules a candidate may not import, reached as an attribute of one it may
    "os", "sys", "subprocess", "socket", "builtins", "importlib", "shutil", "pathlib", "io",
    "ctypes", "posix", "signal", "pickle", "marshal", "mmap", "urllib", "http", "gc",
    "inspect", "threading", "json",
    # threads and timers reached through another module's namespace
    "Thread", "Timer", "ThreadPoolExecutor", "ProcessPoolExecutor",
})  # fmt: skip


# Dunder attributes ordinary code uses; any other "_..." attribute is refused unless it is
# read off the candidate's own objects (self, cls, super()).
SAFE_DUNDERS = frozenset({
    "__init__", "__call__", "__name__", "__doc__", "__len__", "__iter__", "__next__",
    "__getitem__", "__setitem__", "__contains__", "__enter__", "__exit__", "__repr__",
    "__str__", "__eq__", "__hash__", "__post_init__",
})  # fmt: skip


def _own_object(node: ast.expr) -> bool:
    if isinstance(node, ast.Name) and node.id in ("self", "cls"):
        return True
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
        node.func.id == "super"


def _string_annotations(tree: ast.AST) -> list[ast.expr]:
    found = []
    for node in ast.walk(tree):
        annotations: list[ast.expr | None] = []
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            a = node.args
            annotations = [node.returns, *(x.annotation for x in (
                *a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg) if x)]
        elif isinstance(node, ast.AnnAssign):
            annotations = [node.annotation]
        found += [x for x in annotations if x is not None and any(
            isinstance(c, ast.Constant) and isinstance(c.value, str) for c in ast.walk(x))]
    return found


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            return ["." * node.level + (node.module or "")]
        return [node.module or ""]
    return []


def static_findings(
    path: str, source: str, allowed_imports: Iterable[str], allowed_attrs: Iterable[str] = ()
) -> list[str]:
    """Syntax errors and uses of what a candidate has no business with, one line each.
    A benchmark may allow some attributes its solutions need (e.g. `compile` on a GPU)."""
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as err:
        return [f"{path}:{err.lineno}: syntax error: {err.msg}"]
    allowed = frozenset(allowed_imports)
    forbidden_attrs = FORBIDDEN_ATTRS - frozenset(allowed_attrs)
    found: list[str] = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        for name in _imported(node):
            if name.split(".")[0] not in allowed:
                found.append(f"{path}:{line}: imports {name!r} (allowed: the benchmark's list)")
        if isinstance(node, ast.ImportFrom):
            # a module reached by a path through a private or a refused name
            # (torch.multiprocessing.spawn, torch._inductor...): what it re-exports is
            # what the attribute rules refuse
            parts = (node.module or "").split(".")[1:] if not node.level else []
            if any(p in forbidden_attrs or p.startswith("_") for p in parts):
                found.append(f"{path}:{line}: imports from {node.module!r}")
            for alias in node.names:
                if alias.name in forbidden_attrs or alias.name == "*":
                    found.append(f"{path}:{line}: imports {alias.name!r} from {node.module}")
                elif alias.name.startswith("_"):
                    found.append(f"{path}:{line}: imports private name {alias.name!r} "
                                 f"from {node.module}")
        if isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
            found.append(f"{path}:{line}: uses {node.id}")
        if isinstance(node, ast.Attribute) and node.attr in forbidden_attrs:
            found.append(f"{path}:{line}: uses .{node.attr}")
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and \
                node.attr not in SAFE_DUNDERS and not _own_object(node.value):
            found.append(f"{path}:{line}: uses private attribute .{node.attr}")
        if isinstance(node, ast.Global | ast.Nonlocal) and any(
            n.startswith("__") for n in node.names
        ):
            found.append(f"{path}:{line}: rebinds {', '.join(node.names)}")
    for lit in _attribute_formats(tree):
        found.append(f"{path}:{lit.lineno}: format string reaching into attributes or items")
    for ann in _string_annotations(tree):
        found.append(f"{path}:{ann.lineno}: string annotation (typing can evaluate it)")
    return found


def _format_fields(text: str) -> list[str]:
    try:
        return [f for _, f, _, _ in string.Formatter().parse(text) if f]
    except ValueError:
        return []


def _attribute_formats(tree: ast.AST) -> list[ast.Constant]:
    """String constants whose str.format fields read attributes or items ('{0.__globals__}',
    '{x[os]}'): `.format` is an attribute lookup by a name the scan cannot see."""
    return [
        node for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        and "{" in node.value
        and any("." in f or "[" in f for f in _format_fields(node.value))
    ]
