"""A family of noop problems: each member is the noop benchmark with a seed of its own
(its VALUE and OFFSET), so members start at different values and have their own
champions. Members of a group are related; in every member dropping the offset helps
(OFFSET > 0), so the family shows what a campaign over many problems does with a
technique that helped one of them. Costs no compute."""

from __future__ import annotations

import statistics

from benchmarks.noop.benchmark import Noop
from benchmarks.protocol import Benchmark

MEMBERS: dict[str, tuple[str, float, float]] = {  # name: (group, VALUE, OFFSET)
    "a1": ("a", 3.0, 0.5),
    "a2": ("a", 2.0, 0.8),
    "b1": ("b", 4.0, 0.6),
    "b2": ("b", 1.5, 0.7),
}


class NoopFamily:
    name = "noop-family"
    metric = Noop.metric

    def members(self) -> tuple[str, ...]:
        return tuple(MEMBERS)

    def member(self, name: str) -> Benchmark:
        if name not in MEMBERS:
            raise KeyError(f"{self.name} has no member {name!r}; known: {', '.join(MEMBERS)}")
        _, value, offset = MEMBERS[name]
        base = Noop()

        class Member(Noop):
            def seed_files(self, variant: str = "default") -> dict[str, str]:
                src = base.seed_files(variant)["solution.py"]
                src = src.replace("VALUE = 3.0\n", f"VALUE = {value}\n", 1)
                src = src.replace("OFFSET = 0.5\n", f"OFFSET = {offset}\n", 1)
                return {"solution.py": src}

        Member.name = f"{self.name}/{name}"
        return Member()

    def relations(self, name: str) -> tuple[str, ...]:
        return (f"group:{MEMBERS[name][0]}",)

    def aggregate(self, values: dict[str, float]) -> float:
        return statistics.fmean(values.values())
