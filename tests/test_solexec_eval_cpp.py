"""A SOL-ExecBench candidate in C++ (torch.utils.cpp_extension.load_inline), compiled by
the build step into the trial's own build folder. Slow: one real compile (about 30 s)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmarks.solexec.build import build_solution
from benchmarks.solexec.evaluate import Timing
from benchmarks.solexec.problems import load_problems

FIXTURES = Path(__file__).parent / "fixtures" / "solexec"
SOURCE = '''
from torch.utils.cpp_extension import load_inline

_ext = load_inline(
    name="matmul_bt",
    cpp_sources="torch::Tensor mm(torch::Tensor a, torch::Tensor b) "
                "{ return torch::matmul(a, b.t()); }",
    functions=["mm"],
)


def run(A, B):
    return _ext.mm(A, B)
'''


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("c++") is None or shutil.which("ninja") is None,
                    reason="needs a C++ compiler and ninja")
def test_a_cpp_solution_compiles_into_its_own_build_folder(tmp_path):
    problem = next(p for p in load_problems(FIXTURES, ["L1"]) if p.name == "001_small_matmul")
    folder = tmp_path / "solution"
    folder.mkdir()
    (folder / "solution.py").write_text(SOURCE)
    timing = Timing(warmup=1, reps=1, flush_bytes=1 << 16, max_elements=256,
                    load_timeout_s=600)
    built = build_solution(problem, folder, tmp_path / "build", timing)
    assert built.ok, (built.reason, built.log_tail)
    assert (tmp_path / "build" / "torch_extensions" / "matmul_bt").is_dir()
