"""The archive at scale: a synthetic tinylm campaign of 100,000 trials and 10,000 candidates
(with 11,000 proposals, decisions and paid attempts, 12,000 evaluations and 10,000 audit
verdicts) and what the campaign loop costs on it, on SQLite and on PostgreSQL.

- pick: what the loop does before each proposal's first request to the model, through
  the real `next_proposal` with the Claude proposer stopped at its first request: the
  proposal and spend lookups, the search state, the research memory, the plan, the
  request, the prompt with its context. Each pick follows one iteration's records
  written as the loop writes them (proposal, candidate with its files, trials,
  evaluation, audit, decision, spend). Median over the iterations; target <= 50 ms.
- resume: a fresh process opens the campaign (`open_lab`) and loads what the loop loads
  at its start (the campaign, the seed and its baseline trials, the stop checks over the
  decisions, proposals and spend); target <= 5 s. Then `first_pick`: the first pick of
  the resumed process, with nothing cached yet (every record read and parsed, every
  candidate's knobs read from its files): the rest of the wait for its first proposal.

    python perf/archive_scale.py [--postgres URL] [--write]

`python tests/pg.py` starts a throwaway PostgreSQL server and prints a URL for --postgres.
Prints one JSON line; --write merges it into perf/results.json under "archive_100k".
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autolab.config import parse_params  # noqa: E402
from autolab.db import schema  # noqa: E402
from autolab.lab import Lab, open_lab  # noqa: E402
from autolab.proposers.claude import claude_proposer  # noqa: E402
from autolab.proposers.knobs import format_value, set_knob  # noqa: E402
from autolab.proposers.memory import tried_on_parent  # noqa: E402
from autolab.proposing import next_proposal, proposal_id  # noqa: E402
from autolab.records import (  # noqa: E402
    AuditVerdict,
    CampaignRecord,
    Candidate,
    Cost,
    Decision,
    EditStep,
    Evaluation,
    FileEdit,
    Proposal,
    Spend,
    Trial,
    content_key,
)
from autolab.workspace import make_candidate  # noqa: E402
from benchmarks.protocol import CheckResult  # noqa: E402

RESULTS = ROOT / "perf" / "results.json"
THREADS = 8
VAL_SEEDS = 6  # the rest of a candidate's trials are replication (audit) trials
OPERATORS = {"improve": 0.55, "tune": 0.3, "crossover": 0.15, "draft": 0.1, "debug": 0.3}
LOG = "step train: 131072 tokens in 3.1 s\nstep eval: 614049 bytes scored\n" * 4


class Rehearsed(Exception):
    """The proposer got as far as its first request to the model."""


class Rehearsal:
    """The Claude proposer up to its first request: prompt and research memory built."""

    def __init__(self, llm):
        self.llm = llm

    def __getattr__(self, name: str):
        return getattr(self.llm, name)

    def propose(self, request):
        self.llm.prompt(request)
        tried_on_parent(request)
        raise Rehearsed


def params_for(workdir: Path, name: str, url: str | None):
    return parse_params({
        "campaign": {"name": name, "benchmark": "tinylm", "threads": THREADS,
                     "max_proposals": 1_000_000},
        "proposer": {"kind": "claude", "max_usd_per_day": 1e9, "max_usd_per_campaign": 1e9},
        "paths": {"workdir": str(workdir / "runs"), "prepared_dir": str(workdir / "artifacts"),
                  "mlruns": str(workdir / "mlruns"), "reports": str(workdir / "reports"),
                  "data_dir": str(workdir / "no-data")},
        "tracking": {"mlflow": False},
        "archive": {"url": url},
    }, "archive_scale")


def lab_for(params) -> Lab:
    lab = open_lab(params)
    return replace(lab, proposer=Rehearsal(claude_proposer(params.proposer)))


class Synthetic:
    """A campaign's records, one iteration at a time, in the loop's proportions."""

    def __init__(self, lab: Lab, trials_per_candidate: int, start: datetime):
        self.lab, self.k, self.rng = lab, trials_per_candidate, random.Random(7)
        self.setup_key = lab.setup.key()
        self.knobs = [k for k in lab.bench.search_space().knobs if k.kind != "categorical"]
        files = lab.bench.seed_files(lab.params.campaign.seed_variant)
        self.seed = make_candidate(lab.bench.name, files, [], None)
        self.files = {self.seed.id: files}
        self.mean = {self.seed.id: 3.5}
        self.heads = {t: [self.seed.id] for t in range(THREADS)}
        self.champion, self.start, self.ids = self.seed.id, start, {self.seed.id}

    def campaign(self) -> tuple[CampaignRecord, list[Trial]]:
        lab = self.lab
        record = CampaignRecord(
            name=lab.name, benchmark=lab.bench.name, params_hash=lab.params.key(),
            fixed=lab.params.fixed() | {"setup": lab.setup.model_dump(mode="json")},
            seed_candidate=self.seed.id, isolation=lab.isolation, started_at=self.start)
        seeds = lab.seeds(lab.params.evaluation.max_seeds)
        return record, [self.trial(self.seed.id, s, "val", 3.5, self.start) for s in seeds]

    def trial(self, cid: str, seed: int, split: str, mean: float, when: datetime,
              failed: bool = False) -> Trial:
        value = mean + self.rng.gauss(0, 0.02)
        return Trial(
            id=Trial.key(cid, seed, split, self.setup_key), candidate_id=cid, seed=seed,
            split=split, setup_key=self.setup_key, status="failed" if failed else "ok",
            failure="crash" if failed else None, reason="exit status 1" if failed else "",
            metrics={} if failed else {"bpb": value}, budget_used=131072,
            evidence={"tokens_per_s": 42000.0 + self.rng.random(), "params": 210000},
            wall_s=4.2, workload_s=3.9, peak_rss_mb=410.0, isolation="bwrap",
            checks=[CheckResult(name="causality", passed=True, evidence="max diff 0"),
                    CheckResult(name="independence", passed=True)],
            log_tail=("Traceback ...\nRuntimeError: shape mismatch\n" if failed else LOG),
            started_at=when, finished_at=when + timedelta(seconds=4))

    def iteration(self, i: int) -> tuple[list, dict[str, dict[str, str]]]:
        """The records of iteration i, in the order the loop writes them."""
        lab, rng = self.lab, self.rng
        when = self.start + timedelta(seconds=240 * (i + 1))
        thread, pid = i % THREADS, proposal_id(lab.name, i)
        operator = rng.choices(list(OPERATORS), weights=list(OPERATORS.values()))[0]
        heads = self.heads[thread]
        parent = heads[-1] if rng.random() < 0.75 else rng.choice(heads)
        knob = rng.choice(self.knobs)
        value = rng.uniform(knob.low, knob.high)
        value = int(value) if knob.kind == "int" else value
        cost = Cost(input_tokens=9000, output_tokens=2400, cache_read_tokens=2100,
                    usd=0.06, seconds=21.0, model="claude-sonnet-4-6")
        spend = Spend(id=Spend.key(pid, 1), campaign=lab.name, proposal_id=pid, proposer="claude",
                      outcome="ok", cost=cost, created_at=when)
        steps = [EditStep(name=f"set_{knob.name.lower()}", params={knob.name: value})]
        edits = [FileEdit(path=knob.file, search=f"{knob.name} = ",
                          replace=f"{knob.name} = {format_value(value)}")]
        proposal = Proposal(
            id=pid, campaign=lab.name, thread=thread, operator=operator, parents=[parent],
            rationale=f"Move {knob.name} to {value}: the last runs were limited by it. " * 3,
            steps=steps, edits=edits if rng.random() > 0.05 else [], proposer="claude",
            cost=cost, created_at=when)
        decision = {"id": content_key("decision", pid), "campaign": lab.name, "thread": thread,
                    "proposal_id": pid, "created_at": when + timedelta(seconds=50)}
        if not proposal.edits:  # the proposer gave no edit: a recorded failure
            return [spend, proposal, Decision(candidate_id=None, outcome="failed",
                                              reason="proposer gave no edit", **decision)], {}
        files = dict(self.files[parent])
        files[knob.file] = set_knob(files[knob.file], knob.name, value)
        while (cand := make_candidate(lab.bench.name, files, [parent], pid,
                                      self.files[parent])).id in self.ids:
            value = rng.uniform(knob.low, knob.high)
            files[knob.file] = set_knob(files[knob.file], knob.name, value)
        cand = cand.model_copy(update={"created_at": when})
        self.ids.add(cand.id)
        failed = rng.random() < 0.08
        mean = self.mean[parent] + rng.gauss(0.01, 0.03)
        seeds = [(s, "val") for s in lab.seeds(VAL_SEEDS)]
        seeds += [(s, "audit") for s in lab.replication_seeds(self.k - VAL_SEEDS, block=i)]
        trials = [self.trial(cand.id, s, split, mean, when + timedelta(seconds=j), failed
                             and j == 0) for j, (s, split) in enumerate(seeds)]
        values = [t.metrics["bpb"] for t in trials if t.split == "val" and t.status == "ok"]
        parent_values = [mean - 0.01] * len(values)
        evaluation = Evaluation(
            id=content_key("evaluation", cand.id, parent, i), candidate_id=cand.id,
            reference_id=parent, metric="bpb", values=values, reference_values=parent_values,
            mean=mean, reference_mean=self.mean[parent], delta=mean - self.mean[parent],
            p_value=rng.random(), test="paired", alpha=0.01, level=0.004,
            decision="accept" if mean < self.mean[parent] - 0.02 else "reject",
            reason="paired: p=0.3", created_at=when + timedelta(seconds=40))
        verdict = AuditVerdict(id=content_key("audit", cand.id, i), candidate_id=cand.id,
                               level=1, passed=not failed,
                               checks=[CheckResult(name="harness", passed=True)],
                               caught_at=None, created_at=when + timedelta(seconds=45))
        records = [spend, proposal, cand, *trials, evaluation, verdict]
        if failed:
            outcome = "failed"
        else:
            outcome = "accepted" if evaluation.decision == "accept" else "rejected"
        crowned = outcome == "accepted" and mean < self.mean[self.champion]
        if outcome == "accepted":
            heads.append(cand.id)
            self.files[cand.id], self.mean[cand.id] = files, mean
            if crowned:
                self.champion = cand.id
            if i % 3:  # a second evaluation, against the champion
                records.append(evaluation.model_copy(update={
                    "id": content_key("evaluation", cand.id, "champion", i),
                    "reference_id": self.champion}))
        else:
            self.files[cand.id], self.mean[cand.id] = files, mean
        records.append(Decision(candidate_id=cand.id, outcome=outcome, reason="paired: p=0.3",
                                champion=crowned, evaluation_id=evaluation.id,
                                audit_id=verdict.id, **decision))
        return records, {cand.id: files}


def build(lab: Lab, trials: int, candidates: int) -> Synthetic:
    proposals = int(candidates / 0.95)
    start = datetime.now(UTC) - timedelta(seconds=240 * (proposals + 10))
    synth = Synthetic(lab, trials // candidates, start)
    record, baseline = synth.campaign()
    lab.archive.put_candidate(synth.seed, synth.files[synth.seed.id])
    lab.archive.put_campaign(record)
    lab.archive.put_many(baseline)
    batch, snapshots, written = [], {}, time.perf_counter()
    for i in range(proposals):
        records, files = synth.iteration(i)
        batch += records
        snapshots |= files
        if len(batch) >= 20_000 or i == proposals - 1:
            lab.archive.put_many(batch, snapshots)
            batch, snapshots = [], {}
            print(f"  {i + 1} iterations written ({time.perf_counter() - written:.0f} s)",
                  file=sys.stderr, flush=True)
    synth.index = proposals
    return synth


def pick(lab: Lab, index: int) -> float:
    started = time.perf_counter()
    try:
        next_proposal(lab, index)
        raise RuntimeError("the proposer was not asked")
    except Rehearsed:
        return time.perf_counter() - started


def write_iteration(lab: Lab, synth: Synthetic, index: int) -> None:
    """One iteration's records, each written as the loop writes it (its own transaction)."""
    records, files = synth.iteration(index)
    for r in records:
        if isinstance(r, Candidate):
            lab.archive.put_candidate(r, files[r.id])
        else:
            lab.archive.put(r)


def counts(lab: Lab) -> dict[str, int]:
    kinds = {"trials": Trial, "candidates": Candidate, "proposals": Proposal,
             "decisions": Decision, "evaluations": Evaluation, "audits": AuditVerdict,
             "spend": Spend}
    return {name: lab.archive.count(kind) for name, kind in kinds.items()}


def resume(workdir: Path, name: str, url: str | None) -> dict[str, float]:
    """In a fresh process: open the campaign, load what the loop loads at its start, then
    make its first pick."""
    from flows.campaign import next_index, stop_reason
    from tasks.run import trial_id

    params = params_for(workdir, name, url)
    started = time.perf_counter()
    lab = lab_for(params)
    seed = lab.campaign.seed_candidate
    assert lab.archive.has(Candidate, seed)
    for s in lab.seeds(lab.params.evaluation.max_seeds):  # the baseline, already run
        assert lab.archive.get(Trial, trial_id(lab, seed, s, "val")) is not None
    assert stop_reason(lab, datetime.now(UTC)) is None
    index = next_index(lab)
    resumed = time.perf_counter()
    pick(lab, index)
    return {"resume_s": resumed - started, "first_pick_s": time.perf_counter() - resumed}


def measure(workdir: Path, url: str | None, trials: int, candidates: int,
            iterations: int) -> dict:
    name = f"scale-{os.getpid()}"
    params = params_for(workdir, name, url)
    lab = lab_for(params)
    lab.bench.prepare(None, lab.prepared_dir)
    began = time.perf_counter()
    synth = build(lab, trials, candidates)
    built = time.perf_counter() - began
    lab.archive.close()
    try:
        child = subprocess.run([sys.executable, __file__, "--resume-child", str(workdir), name,
                                url or ""], capture_output=True, text=True)
        if child.returncode != 0:
            raise SystemExit(f"the resumed process failed:\n{child.stderr[-3000:]}")
        resumed = json.loads(child.stdout.strip().splitlines()[-1])
        lab = lab_for(params)
        pick(lab, synth.index)  # the resumed state: caches filled once
        times = []
        for index in range(synth.index, synth.index + iterations):
            write_iteration(lab, synth, index)
            times.append(pick(lab, index + 1))
        n = counts(lab)
    finally:
        if url:
            drop(lab.archive.engine, name)
        lab.archive.close()
    return {"pick_ms": 1000 * statistics.median(times), "pick_ms_max": 1000 * max(times),
            **resumed, "build_s": built, "records": n}


def drop(engine: sa.Engine, name: str) -> None:
    with engine.begin() as conn:
        for table in (schema.records, schema.superseded, schema.files, schema.texts):
            conn.execute(sa.delete(table).where(table.c.campaign == name))
        conn.execute(sa.delete(schema.campaigns).where(schema.campaigns.c.name == name))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--postgres", help="PostgreSQL URL (a database this may write to)")
    ap.add_argument("--trials", type=int, default=100_000)
    ap.add_argument("--candidates", type=int, default=10_000)
    ap.add_argument("--iterations", type=int, default=20, help="picks timed per backend")
    ap.add_argument("--write", action="store_true", help=f"merge into {RESULTS}")
    ap.add_argument("--resume-child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.resume_child:
        folder, name, url = a.resume_child
        print(json.dumps(resume(Path(folder), name, url or None)))
        return
    out: dict = {"trials": a.trials, "candidates": a.candidates}
    backends = [("sqlite", None)] + ([("postgres", a.postgres)] if a.postgres else [])
    for label, url in backends:
        with tempfile.TemporaryDirectory(prefix="autolab-scale-") as tmp:
            print(f"{label}: building {a.trials} trials, {a.candidates} candidates",
                  file=sys.stderr, flush=True)
            got = measure(Path(tmp), url, a.trials, a.candidates, a.iterations)
        out |= {f"{label}_pick_ms": round(got["pick_ms"], 1),
                f"{label}_pick_ms_max": round(got["pick_ms_max"], 1),
                f"{label}_resume_s": round(got["resume_s"], 2),
                f"{label}_first_pick_s": round(got["first_pick_s"], 2),
                f"{label}_build_s": round(got["build_s"], 1),
                f"{label}_records": got["records"]}
    print(json.dumps(out))
    if a.write:
        merged = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        merged["archive_100k"] = out
        RESULTS.write_text(json.dumps(merged, indent=1) + "\n")


if __name__ == "__main__":
    main()
