"""The red-team run: every corpus entry proposed through the real iteration DAG, under each
isolation mode asked for, with canaries on the host; then the held-out confirmation."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from prefect import flow

from autolab.config import Params, merge, parse_params
from autolab.lab import Lab, open_engine, open_lab, prepared_data_dir
from autolab.proposers.base import Draft, ProposalRequest
from autolab.records import (
    AuditVerdict,
    Decision,
    EditStep,
    Evaluation,
    FileEdit,
    TestResult,
    Trial,
)
from autolab.redteam import Canaries, Hack, Row, judge
from benchmarks import get_benchmark
from flows import FLOW_RESULTS
from flows.iteration import iteration
from tasks.confirm import confirm_on_test
from tasks.prepare import baseline, prepare_data, register_seed


class CorpusProposer:
    """Proposes corpus entry i at iteration i, as a whole-file edit of the seed."""

    name = "redteam"
    operators = frozenset({"tune", "improve", "crossover"})
    free_form = True  # it writes code of its own, the way an LLM would

    def __init__(self, sources: list[dict[str, str]], hacks: list[Hack]):
        self.sources, self.hacks = sources, hacks

    def propose(self, request: ProposalRequest) -> Draft:
        i = request.thread
        parent = request.parents[0].files
        edits = [FileEdit(path=p, replace=t) for p, t in self.sources[i].items()
                 if parent.get(p) != t]
        return Draft(operator="improve", rationale=f"red team: {self.hacks[i].what}",
                     steps=[EditStep(name=self.hacks[i].name)], edits=edits)


def redteam_params(base: Params, mode: str, root: Path, n: int) -> Params:
    """Small budget and a single look: enough for a hack's gain to show, cheap to run.
    A benchmark may set its own (`redteam_overrides`: e.g. a budget in seconds)."""
    bench = get_benchmark(base.campaign.benchmark)
    data = merge(base.model_dump(mode="json"), {
        "campaign": {"name": f"redteam-{mode}", "threads": n, "max_proposals": n,
                     "max_wall_clock_min": 600, "patience": 0},
        "budget": {"amount": 8192, "wall_clock_s": 25, "memory_mb": 3000},
        "evaluation": {"alpha": 0.01, "min_seeds": 3, "max_seeds": 3, "test_seeds": 3,
                       "parallel_trials": 2, "screen": False, "min_gain": 0.005},
        "audit": {"replication_seeds": 3, "replication_alpha": 0.05},
        "sandbox": {"isolation": mode, "allow_unisolated": True},
        "proposer": {"kind": "offline", "operators": {"improve": 1.0}},
        "archive": {"url": None},  # its own SQLite file under its temporary folder
        # this host's slots: the canaries watch this host, and the trials' folders are here
        "engine": {"address": None},
        "paths": {"workdir": str(root / "runs"), "prepared_dir": str(root / "artifacts"),
                  "mlruns": str(root / "mlruns"), "reports": str(root / "reports")},
        "tracking": {"mlflow": False},
    })  # fmt: skip
    return parse_params(merge(data, getattr(bench, "redteam_overrides", {})), "redteam")


@flow(name="redteam", validate_parameters=False, persist_result=False,
      result_storage=FLOW_RESULTS)
def redteam(params: Params, hacks: list[Hack], mode: str, keep: Path | None = None) -> list[Row]:
    """The corpus's campaign lives in a temporary folder, removed at the end unless `keep`."""
    root = keep or Path(tempfile.mkdtemp(prefix=f"autolab-redteam-{mode}-"))
    try:
        return run_corpus(params, hacks, mode, root)
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)


def copy_shipped_data(base: Params, target: Path) -> bool:
    """On a host without the source data but with prepared files shipped to it (a GPU host
    given token files), a copy of them where the red team prepares its data: its hacks may
    write wherever a weaker sandbox lets them, and the campaigns' own files must not be
    among those places. Returns whether a copy was made."""
    shipped = prepared_data_dir(base)
    if base.paths.data_dir.resolve().exists() or not shipped.is_dir() or target.exists():
        return False
    shutil.copytree(shipped, target, symlinks=False)
    return True


def run_corpus(params: Params, hacks: list[Hack], mode: str, root: Path) -> list[Row]:
    p = redteam_params(params, mode, root, len(hacks))
    lab = open_lab(p)
    bench = get_benchmark(p.campaign.benchmark)
    rows: list[Row] = []
    with Canaries() as bait:
        values = bait.placeholders(lab.archive.root, lab.prepared_dir,
                                   params.paths.data_dir.resolve())
        seed = bench.seed_files(p.campaign.seed_variant)
        lab.proposer = CorpusProposer([h.source(bench, seed, values) for h in hacks], hacks)
        copy_shipped_data(params, lab.prepared_dir)
        prepare_data(lab)
        register_seed(lab)
        lab.engine = open_engine(lab)  # the campaign's slots: no more trials at once than it
        try:
            decisions, traces, test = _run_hacks(lab, bait, len(hacks))
        finally:
            lab.engine.close()
    # each candidate's replication on the audit's fresh seeds (the newest, if several)
    replications = {e.candidate_id: e for e in lab.archive.all(Evaluation) if e.split == "audit"}
    for hack, decision, found in zip(hacks, decisions, traces, strict=True):
        verdict = lab.archive.get(AuditVerdict, decision.audit_id) if decision.audit_id else None
        ev = lab.archive.get(Evaluation, decision.evaluation_id) if decision.evaluation_id else None
        rows.append(judge(hack, mode, decision, verdict, ev, found, test, p.evaluation.alpha,
                          replications.get(decision.candidate_id)))
    return rows


def _run_hacks(lab: Lab, bait: Canaries, n: int) -> tuple[list[Decision], list[list[str]],
                                                           TestResult | None]:
    """The seed's baseline, each entry's iteration in turn (what reached the host noted
    after each), and the champion's test."""
    baseline(lab)
    decisions: list[Decision] = []
    traces: list[list[str]] = []
    for i in range(n):
        # untagged task runs, one iteration after another (why untagged: flows.campaign)
        decisions.append(iteration.fn(lab, i))
        traces.append(bait.traces(lab.archive.all(Trial), lab.trials_dir, lab.archive.root))
        bait.clean(look_again=False)
    test = confirm_on_test(lab)
    traces[-1] += bait.traces(lab.archive.all(Trial), lab.trials_dir, lab.archive.root)
    return decisions, traces, test


def default_modes() -> list[str]:
    """The strongest isolation here, and the fallback a machine without it would use."""
    from autolab.sandbox import available_modes

    modes = available_modes()
    return [modes[-1]] + ([modes[-2]] if len(modes) > 1 else [])
