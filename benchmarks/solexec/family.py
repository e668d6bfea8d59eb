"""SOL-ExecBench as a family: every runnable problem a member, searched in one campaign.

Members are named `<subset>-<problem>` (benchmark.member_name) and read from the folder
AUTOLAB_SOLEXEC_DIR names, else the shared data beside the project. Two members are
related when they share a category or an operator signature (search/categorise.py), so
that a technique that helped one is tried first on the others. The suite's headline is
the mean of the members' SOL scores, as the public benchmark aggregates problems.
`solexec-cpu` is the same on a CPU, with shrunk shapes, for the test suite.
"""

from __future__ import annotations

import statistics
from functools import cached_property

from benchmarks.solexec.benchmark import SolExecProblem, load_members, problems_root
from benchmarks.solexec.problems import Problem


class SolExec:
    name = "solexec"
    preset = "gpu"
    metric = SolExecProblem.metric

    @cached_property
    def _problems(self) -> dict[str, Problem]:
        return load_members(problems_root())

    def members(self) -> tuple[str, ...]:
        return tuple(self._problems)

    def member(self, name: str) -> SolExecProblem:
        if name not in self._problems:
            raise KeyError(f"{self.name} has no member {name!r} (problems under "
                           f"{problems_root()}; {len(self._problems)} members)")
        return SolExecProblem(self._problems[name], self.name, self.preset)

    def relations(self, name: str) -> tuple[str, ...]:
        from benchmarks.solexec.search import signature

        sig = signature(self.member(name).problem)
        return (f"category:{sig.category}", f"signature:{sig.key}")

    def aggregate(self, values: dict[str, float]) -> float:
        return statistics.fmean(values.values())


class SolExecCPU(SolExec):
    name = "solexec-cpu"
    preset = "cpu"
