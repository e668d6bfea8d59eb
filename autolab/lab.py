"""Everything one campaign works with, opened once from its params."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from autolab.archive import Archive
from autolab.config import Params
from autolab.proposers import make_proposer
from autolab.proposers.base import Proposer
from autolab.records import CampaignRecord
from autolab.runner import harness_version
from autolab.tracking import Tracker
from benchmarks import get_benchmark
from benchmarks.protocol import Benchmark, Budget


@dataclass
class Lab:
    params: Params
    bench: Benchmark
    archive: Archive
    tracker: Tracker
    proposer: Proposer
    root: Path
    prepared_dir: Path
    budget: Budget
    harness_version: str

    @property
    def name(self) -> str:
        return self.params.campaign.name

    @property
    def campaign(self) -> CampaignRecord:
        record = self.archive.campaign()
        if record is None:
            raise RuntimeError(
                f"campaign {self.name!r} has not been started in {self.archive.root}"
            )
        return record

    @property
    def trials_dir(self) -> Path:
        return self.root / "trials"

    @property
    def hidden_paths(self) -> list[Path]:
        """What a sandboxed trial must never read: prepared splits (the test split too), every
        campaign's records and trials, and the MLflow store. The trial's own workspace and
        inputs are mounted back on top by the sandbox."""
        p = self.params.paths
        return [p.prepared_dir.resolve(), p.workdir.resolve(), p.mlruns.resolve()]

    def seeds(self, count: int, start: int = 0) -> list[int]:
        base = self.params.evaluation.seeds_base
        return [base + i for i in range(start, start + count)]

    @property
    def trial_threads(self) -> int:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return max(1, (cores or 1) // self.params.evaluation.parallel_trials)


def effective_budget(bench: Benchmark, params: Params) -> Budget:
    over = {k: v for k, v in params.budget.model_dump().items() if v is not None}
    return bench.budget.model_copy(update=over)


def open_lab(params: Params) -> Lab:
    bench = get_benchmark(params.campaign.benchmark)
    root = params.paths.workdir.resolve() / params.campaign.name
    return Lab(
        params=params,
        bench=bench,
        archive=Archive(root / "archive"),
        tracker=Tracker(params.paths.mlruns.resolve(), enabled=params.tracking.mlflow),
        proposer=make_proposer(params.proposer),
        root=root,
        prepared_dir=params.paths.prepared_dir.resolve() / bench.name / "data",
        budget=effective_budget(bench, params),
        harness_version=harness_version(bench),
    )
