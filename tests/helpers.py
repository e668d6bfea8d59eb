"""Helpers for tests that run whole campaigns."""

from __future__ import annotations

from pathlib import Path

import yaml

from autolab.proposers.base import Draft, ProposalRequest
from autolab.records import EditStep, FileEdit


def write_params(
    tmp: Path, benchmark: str = "noop", max_proposals: int = 4, **sections: dict
) -> Path:
    """A params.yaml whose every path lies under tmp."""
    data: dict = {
        "campaign": {
            "name": f"test-{benchmark}",
            "benchmark": benchmark,
            "threads": 2,
            "max_proposals": max_proposals,
            "max_wall_clock_min": 30,
        },
        "evaluation": {"min_seeds": 3, "max_seeds": 4, "test_seeds": 3},
        "paths": {
            "workdir": str(tmp / "runs"),
            "prepared_dir": str(tmp / "artifacts"),
            "mlruns": str(tmp / "mlruns"),
            "reports": str(tmp / "reports"),
            "data_dir": str(tmp / "no-data"),
        },
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class ScriptedProposer:
    """Returns the given whole-file contents of one file, one per call, then repeats the last."""

    name = "scripted"
    operators = frozenset({"tune", "improve", "crossover"})

    def __init__(self, path: str, sources: list[tuple[str, str]]):
        self.path, self.sources, self.calls = path, sources, 0

    def propose(self, request: ProposalRequest) -> Draft:
        label, text = self.sources[min(self.calls, len(self.sources) - 1)]
        self.calls += 1
        path = self.path if not label.startswith("other:") else label.split(":", 1)[1]
        return Draft(
            operator="improve",
            rationale=f"scripted: {label}",
            steps=[EditStep(name=label)],
            edits=[FileEdit(path=path, replace=text)],
        )
