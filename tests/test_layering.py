"""Dependencies run one way: CLI -> flows -> tasks -> autolab -> benchmarks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from autolab.static_scan import static_findings
from benchmarks import BENCHMARK_NAMES, get_benchmark

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "benchmarks": {"autolab", "flows", "tasks"},
    "autolab": {"flows", "tasks"},
    "tasks": {"flows"},
}
ALLOWED = {"autolab/cli.py"}  # the top of the stack


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_upward_imports(package):
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in ALLOWED or "/seed/" in rel:
            continue
        if hits := imported_roots(path) & FORBIDDEN[package]:
            bad.append(f"{rel} imports {sorted(hits)}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("name", BENCHMARK_NAMES)
def test_seed_solutions_pass_the_build_gate(name):
    bench = get_benchmark(name)
    for path, source in bench.seed_files().items():
        allowed_attrs = getattr(bench, "allowed_attrs", frozenset())
        assert static_findings(path, source, bench.allowed_imports, allowed_attrs) == [], path


def test_sandboxed_code_imports_only_the_stdlib_and_declared_distributions():
    """The guard and the harnesses run inside the sandbox: they may import nothing of the
    loop (autolab), which is not there, nor any package the benchmark does not declare."""
    import sys

    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    for name in BENCHMARK_NAMES:
        bench = get_benchmark(name)
        allowed = stdlib | {"benchmarks"} | set(bench.distributions)
        for path in bench.sandbox_files():
            bad = imported_roots(path) - allowed
            assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"
