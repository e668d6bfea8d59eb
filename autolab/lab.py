"""Everything one campaign works with, opened once from its params."""

from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autolab import history
from autolab.archive import Archive, campaign_archive
from autolab.config import Params
from autolab.engine import Activity, Engine, Slot, local_slots
from autolab.proposers import make_proposer
from autolab.proposers.base import Proposer
from autolab.records import CampaignRecord, Decision, Trial
from autolab.runner import TrialSetup, give_trial_runner, harness_version, trial_setup
from autolab.sandbox import ISOLATED, Isolation, isolation_mode
from autolab.stats import Design
from autolab.tracking import Tracker
from benchmarks import get_benchmark
from benchmarks.protocol import Benchmark, Budget

REPLICATION_SEEDS_AT = 100_000  # offsets of the seed ranges: selection, audit and test
TEST_SEEDS_AT = 200_000  # seeds never overlap, so no trial is reused across purposes


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
    isolation: Isolation
    _setup: TrialSetup | None = field(default=None, repr=False)
    engine: Engine | None = field(default=None, repr=False)  # None: trials run in-process
    activity: Activity = field(default_factory=Activity, repr=False)
    # the seed's baseline while it runs beside the first iterations (flows/campaign.py):
    # their looks take the seed's val trials from it, never ask for them themselves
    baseline: Any = field(default=None, repr=False)
    # a would-be champion's challenge and the decision on it, one iteration at a time
    decide_lock: Any = field(default_factory=threading.Lock, repr=False)
    # a candidate's record made by one proposal only (two patching the same code at once)
    patch_lock: Any = field(default_factory=threading.Lock, repr=False)
    # what earlier campaigns on this benchmark judged (campaign.learn_from), read at the start
    learned: list = field(default_factory=list, repr=False)
    _blocks: list[int] = field(default_factory=list, repr=False)  # replication blocks issued
    _blocks_lock: Any = field(default_factory=threading.Lock, repr=False)

    @property
    def name(self) -> str:
        return self.params.campaign.name

    @property
    def campaign(self) -> CampaignRecord:
        record = self.archive.campaign()
        if record is None:
            raise RuntimeError(
                f"campaign {self.name!r} has not been started in {self.archive.location}"
            )
        return record

    @property
    def trials_dir(self) -> Path:
        return self.root / "trials"

    @property
    def setup(self) -> TrialSetup:
        """What every trial of this run shares (known once the data are prepared)."""
        if self._setup is None:
            self._setup = trial_setup(self.bench, self.prepared_dir, self.budget,
                                      self.trial_threads, self.isolation)
        return self._setup

    @functools.cached_property
    def design(self) -> Design:
        ev = self.params.evaluation
        return Design(alpha=ev.alpha, min_seeds=ev.min_seeds, max_seeds=ev.max_seeds,
                      step=ev.parallel_trials, screen=ev.screen, min_gain=ev.min_gain)

    def single_look(self, alpha: float, n: int) -> Design:
        """One test at alpha on n seeds, with the campaign's minimum gain."""
        return Design(alpha, n, n, min_gain=self.params.evaluation.min_gain)

    @property
    def required_isolation(self) -> Isolation:
        """bwrap when the proposer writes free-form code and the user has not opted out;
        otherwise what this machine offers."""
        free_form = getattr(self.proposer, "free_form", True)
        if free_form and not self.params.sandbox.allow_unisolated:
            return "bwrap"
        return self.isolation

    @property
    def unisolated(self) -> bool:
        return self.isolation not in ISOLATED

    def seeds(self, count: int, start: int = 0) -> list[int]:
        base = self.params.evaluation.seeds_base
        return [base + i for i in range(start, start + count)]

    def replication_seeds(self, count: int, block: int = 0) -> list[int]:
        """Seeds of the block-th replication: each challenge gets seeds no one has used."""
        return self.seeds(count, start=REPLICATION_SEEDS_AT + block * count)

    def replication_block(self) -> int:
        """The next block of replication seeds: one per challenge, never handed out twice,
        also to challenges running at once (the archive's level-2 verdicts count those
        of earlier runs)."""
        from autolab.records import AuditVerdict

        with self._blocks_lock:
            done = sum(1 for v in self.archive.all(AuditVerdict) if v.level >= 2)
            block = max([done, *(b + 1 for b in self._blocks)])
            self._blocks.append(block)
            return block

    def test_seeds(self, count: int) -> list[int]:
        return self.seeds(count, start=TEST_SEEDS_AT)

    @property
    def trial_threads(self) -> int:
        """The cores each of this host's trials may use: its share among the slots."""
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return max(1, (cores or 1) // len(self.slots))

    @functools.cached_property
    def slots(self) -> list[Slot]:
        """This host's slots (engine.slots; by default one per GPU group for a GPU
        benchmark, evaluation.parallel_trials for a CPU one)."""
        e = self.params.engine
        per = e.gpus_per_slot or getattr(self.bench, "gpus_per_trial", 1)
        # with engine.address the slots are the scheduler's workers; these only set the
        # trials' thread count, so a head host without the GPUs is no error
        count = None if e.address else e.slots
        return local_slots(self.bench.hardware, count, per,
                           self.params.evaluation.parallel_trials)

    def comparable(self, candidate_id: str, split: str = "val") -> list[Trial]:
        return history.comparable_trials(self.archive.trials_of(candidate_id), candidate_id,
                                         split, self.setup.key())

    def champion(self) -> str:
        return history.champion_id(self.archive.all(Decision), self.campaign.seed_candidate)


def open_engine(lab: Lab) -> Engine:
    """The engine for a campaign run: this host's slots in-process, or the scheduler at
    engine.address (whose workers are the slots)."""
    e = lab.params.engine
    if e.address:
        return Engine(address=e.address, activity=lab.activity, interval_s=e.sample_s)
    return Engine(lab.slots, activity=lab.activity, interval_s=e.sample_s)


def effective_budget(bench: Benchmark, params: Params) -> Budget:
    over = {k: v for k, v in params.budget.model_dump().items() if v is not None}
    return bench.budget.model_copy(update=over)


def prepared_data_dir(params: Params) -> Path:
    """Where the campaign's benchmark keeps its prepared data."""
    return params.paths.prepared_dir.resolve() / get_benchmark(params.campaign.benchmark).name \
        / "data"


def open_lab(params: Params, create: bool = True) -> Lab:
    """`create=False` opens a campaign without making its folders (to look, not to run)."""
    bench = get_benchmark(params.campaign.benchmark)
    root = params.paths.workdir.resolve() / params.campaign.name
    isolation = isolation_mode(params.sandbox.isolation)
    give_trial_runner(bench, isolation)  # trials its prepare runs: as the campaign's run
    return Lab(
        params=params,
        bench=bench,
        archive=campaign_archive(params, create=create),
        tracker=Tracker(params.paths.mlruns.resolve(), enabled=params.tracking.mlflow),
        proposer=make_proposer(params.proposer),
        root=root,
        prepared_dir=prepared_data_dir(params),
        budget=effective_budget(bench, params),
        harness_version=harness_version(bench),
        isolation=isolation,
    )
