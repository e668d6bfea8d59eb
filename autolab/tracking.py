"""A mirror of the archive in MLflow, for people comparing runs in the MLflow UI.

The archive stays the source of truth; nothing here is read back by the loop. Every call
finds its run by tags before creating one, so replaying records after a crash or a resume
updates runs instead of duplicating them. A store that cannot be opened (half-created by
a process killed while MLflow made its tables, or damaged) is moved aside and rebuilt
from the archive: a derived store is never a reason a campaign cannot start. MLflow is
imported lazily: it is slow to import.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from autolab.config import Params
from autolab.records import (
    AuditVerdict,
    CampaignRecord,
    Candidate,
    ConstraintResult,
    Decision,
    Evaluation,
    Proposal,
    Spend,
    TestResult,
    Trial,
)
from autolab.sandbox import ISOLATED
from benchmarks.protocol import Direction, MetricSpec

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from autolab.archive import Archive

PARENT_TAG = "mlflow.parentRunId"
ROLE, CAMPAIGN, CANDIDATE = "autolab.role", "autolab.campaign", "autolab.candidate_id"
PARAM_MAX, TAG_MAX = 500, 5000
Point = tuple[str, float, int, int | None]  # metric key, value, step, timestamp in ms
Flat = Mapping[str, str]
NONE: Flat = MappingProxyType({})


def tracking_uri(mlruns_dir: Path) -> str:
    """SQLite store (MLflow's file store is deprecated) inside the mlruns folder."""
    return f"sqlite:///{Path(mlruns_dir).resolve() / 'mlflow.db'}"


def _ms(when: datetime | None) -> int | None:
    return int(when.timestamp() * 1000) if when else None


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params as dotted keys, the shape MLflow's flat params table can show."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= flatten(value, f"{name}.")
        else:
            out[name] = str(value)[:PARAM_MAX]
    return out


def steps_text(proposal: Proposal | None) -> str:
    if proposal is None or not proposal.steps:
        return "-"
    return "; ".join(
        s.name + ("(" + ",".join(f"{k}={v}" for k, v in s.params.items()) + ")" if s.params else "")
        for s in proposal.steps
    )


def constraint_figures(results: Iterable[ConstraintResult], prefix: str = ""
                       ) -> dict[str, float | None]:
    """`constraint_val_loss_le_p_value` and `..._mean` for `val_loss <= target` (MLflow keys
    admit no '<=')."""
    out: dict[str, float | None] = {}
    for r in results:
        key = f"{prefix}constraint_{r.metric}_{'le' if r.op == '<=' else 'ge'}"
        out |= {f"{key}_p_value": r.p_value, f"{key}_mean": r.mean}
    return out


BUSY_RETRIES, BUSY_WAIT_S = 4, 2.0
COST_FIELDS = ("usd", "input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens")


def _busy(err: BaseException) -> bool:
    """A store another process is writing (sqlite's lock), not a damaged one."""
    text = f"{type(err).__name__}: {err}".lower()
    return "database is locked" in text or "database is busy" in text or "sqlite_busy" in text


def _forget_engine(uri: str) -> None:
    """MLflow keeps one database engine per URI for the whole process; its pooled
    connections still read the file being moved aside, so a store reopened at the same
    URI would see the damaged file again."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    engine = SqlAlchemyStore._engine_map.pop(uri, None)
    if engine is not None:
        engine.dispose()


def _metric_key(name: str) -> str:
    """MLflow keys allow letters, digits, _ - . space : and /."""
    return "".join(c if c.isalnum() or c in "_-./" else "_" for c in name)


class Tracker:
    """Writes campaign and candidate runs; with enabled=False every method does nothing."""

    def __init__(self, mlruns_dir: Path, enabled: bool = True):
        self.mlruns_dir = Path(mlruns_dir).resolve()
        self.enabled = enabled
        self.rebuilt: str | None = None  # why the store was moved aside and started anew
        self._client: MlflowClient | None = None
        self._experiments: dict[str, str] = {}
        self._parents: dict[str, str] = {}

    # -- plumbing --------------------------------------------------------------------------
    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            for attempt in range(BUSY_RETRIES + 1):
                try:
                    self._client = self._open()
                    break
                except Exception as err:  # noqa: BLE001 - classified below
                    if _busy(err):  # another process holds the store: wait, never rebuild
                        if attempt == BUSY_RETRIES:
                            raise
                        time.sleep(BUSY_WAIT_S * (attempt + 1))
                        continue
                    self._quarantine(err)
                    self._client = self._open()
                    break
        return self._client

    def _open(self) -> MlflowClient:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow.tracking import MlflowClient

        self.mlruns_dir.mkdir(parents=True, exist_ok=True)
        client = MlflowClient(tracking_uri=tracking_uri(self.mlruns_dir))
        client.search_experiments(max_results=1)  # opens (and if new, creates) the schema
        return client

    def _quarantine(self, err: BaseException) -> None:
        """Move the unusable store aside (kept for inspection) so a fresh one can be made."""
        _forget_engine(tracking_uri(self.mlruns_dir))
        db = self.mlruns_dir / "mlflow.db"
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for suffix in ("", "-journal", "-wal", "-shm"):
            part = db.with_name(db.name + suffix)
            if part.exists():
                part.rename(part.with_name(f"{part.name}.damaged-{stamp}"))
        self._experiments.clear()
        self._parents.clear()
        self.rebuilt = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"

    def experiment_id(self, benchmark: str) -> str:
        """One experiment per benchmark, its artifacts under <mlruns>/artifacts/<benchmark>;
        a family's members ("FAMILY/MEMBER") share the family's."""
        benchmark = benchmark.partition("/")[0]
        if benchmark in self._experiments:
            return self._experiments[benchmark]
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(benchmark)
        if exp is None:
            location = (self.mlruns_dir / "artifacts" / benchmark).as_uri()
            try:
                exp_id = self.client.create_experiment(benchmark, artifact_location=location)
            except MlflowException:  # created meanwhile by another process
                exp_id = self.client.get_experiment_by_name(benchmark).experiment_id
        else:
            exp_id = exp.experiment_id
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp_id)
        self._experiments[benchmark] = exp_id
        return exp_id

    def _find(self, experiment_id: str, tags: dict[str, str]) -> str | None:
        """The oldest live run carrying all these tags, if any."""
        where = " AND ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs(
            [experiment_id], where, max_results=1, order_by=["attributes.start_time ASC"]
        )
        return runs[0].info.run_id if runs else None

    def _log(
        self, run_id: str, metrics: Iterable[Point] = (), params: Flat = NONE, tags: Flat = NONE
    ) -> None:
        """log_batch of what the run does not hold yet, so replays neither fail nor repeat.

        MLflow refuses to change a param's value, so params already set are left alone;
        a metric point (key, step, value) already in the run's history is skipped.
        """
        from mlflow.entities import Metric, Param, RunTag

        run = self.client.get_run(run_id)
        history: dict[str, set[tuple[int, float]]] = {}
        points = []
        for key, value, step, when in metrics:
            if key in run.data.metrics and key not in history:
                old = self.client.get_metric_history(run_id, key)
                history[key] = {(m.step, m.value) for m in old}
            if (step, float(value)) not in history.get(key, set()):
                points.append(Metric(key, float(value), when or int(time.time() * 1000), step))
        new_params = [Param(k, v) for k, v in params.items() if k not in run.data.params]
        new_tags = [RunTag(k, str(v)[:TAG_MAX]) for k, v in tags.items()]
        self.client.log_batch(run_id, points, new_params, new_tags)  # < 100 of each here

    # -- campaign run ----------------------------------------------------------------------
    def _parent(self, campaign: CampaignRecord) -> str:
        """The campaign's run: its recorded id if it still exists, else found by tag, else new."""
        if campaign.name in self._parents:
            return self._parents[campaign.name]
        from mlflow.exceptions import MlflowException

        exp_id = self.experiment_id(campaign.benchmark)
        tags = {ROLE: "campaign", CAMPAIGN: campaign.name}
        run_id = None
        try:
            run = self.client.get_run(campaign.mlflow_run_id) if campaign.mlflow_run_id else None
            if run and run.info.lifecycle_stage == "active" and run.info.experiment_id == exp_id:
                run_id = run.info.run_id
        except MlflowException:  # recorded id unknown to this store (e.g. a new mlruns dir)
            pass
        run_id = run_id or self._find(exp_id, tags)
        if run_id is None:
            start = _ms(campaign.started_at)
            run_id = self.client.create_run(exp_id, start, tags, campaign.name).info.run_id
        self._parents[campaign.name] = run_id
        return run_id

    def start_campaign(self, campaign: CampaignRecord, params: Params) -> str | None:
        """Open (or reopen, on resume) the campaign's run and log its params; return its id."""
        if not self.enabled:
            return None
        run_id = self._parent(campaign)
        if self.client.get_run(run_id).info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        shown = {"benchmark", "params_hash", "seed_candidate", "status", "isolation",
                 "unisolated"}
        tags = {ROLE: "campaign", CAMPAIGN: campaign.name} | campaign.model_dump(include=shown)
        self._log(run_id, params=flatten(params.model_dump(mode="json")), tags=tags)
        self.log_seed_constraints(campaign)
        return run_id

    def log_family(self, summary) -> str | None:
        """The family campaign's run in the family's experiment, beside its members'
        campaign runs: the suite's aggregate before and after, each member's seed and
        champion, each relation's aggregate, and the techniques carried across."""
        if not self.enabled:
            return None
        exp_id = self.experiment_id(summary.family)
        tags = {ROLE: "family", CAMPAIGN: summary.campaign}
        run_id = self._find(exp_id, tags) or self.client.create_run(
            exp_id, tags=tags, run_name=summary.campaign).info.run_id
        metrics: list[Point] = []
        for key, value in (("suite_before", summary.before), ("suite_after", summary.after),
                           ("suite_val_before", summary.val_before),
                           ("suite_val_after", summary.val_after)):
            if value is not None:
                metrics.append((key, value, 0, None))
        for m in summary.members:
            for key, value in (("seed", m.seed), ("champion", m.champion), ("test", m.test),
                               ("test_seed", m.test_seed)):
                if value is not None:
                    metrics.append((f"{key}.{_metric_key(m.member)}", value, 0, None))
        for k, v in summary.by_relation.items():
            metrics.append((f"relation_after.{_metric_key(k)}", v["after"], 0, None))
        carried = "; ".join(f"{t.technique}: {t.source} -> {t.target} ({t.outcome})"
                            for t in summary.transfers)
        self._log(run_id, metrics, params={"members": str(len(summary.members))},
                  tags={"transfers": carried or "none"})
        return run_id

    def log_seed_constraints(self, campaign: CampaignRecord) -> None:
        """The seed's constraint tests on the campaign's run (`seed_constraint_*`), and the
        tag `seed_meets_constraints`: a seed that misses them is no valid baseline."""
        if not self.enabled or not campaign.seed_constraints:
            return
        figures = constraint_figures(campaign.seed_constraints, prefix="seed_")
        meets = all(r.holds for r in campaign.seed_constraints)
        self._log(self._parent(campaign),
                  [(k, v, 0, _ms(campaign.started_at)) for k, v in figures.items()
                   if v is not None],
                  tags={"seed_meets_constraints": str(meets).lower()})

    def log_champion(
        self, campaign: CampaignRecord, cid: str, mean: float, metric: MetricSpec, at: datetime
    ) -> None:
        """Append a point to the parent's champion curve (step = crowning order) and retag it.

        log_candidate calls this for each champion and the seed, so callers need not. Replays
        change nothing: a value already on the curve, or older than its last point, is skipped.
        """
        if not self.enabled:
            return
        run_id, key, ms = self._parent(campaign), f"champion_{metric.name}", _ms(at)
        curve = self.client.get_metric_history(run_id, key)
        if any(p.value == float(mean) or p.timestamp > ms for p in curve):
            return
        self._log(run_id, [(key, mean, len(curve), ms)], tags={"champion": cid})

    def log_usage(self, campaign: CampaignRecord, usage) -> None:
        """The run's duty cycle per slot and why slots idled (seconds by reason), as metrics
        of the campaign's run: step = the run's start, so each run of a resumed campaign
        has its own point."""
        if not self.enabled:
            return
        run_id, step = self._parent(campaign), int(usage.started)
        when = int(usage.ended * 1000)
        figures: dict[str, float | None] = {
            "duty_cycle": usage.duty_cycle(), "trial_overhead_s": usage.trial_overhead_s,
            "duty_cycle_research": usage.duty_cycle(research=True)}
        for s in usage.slots:
            figures[f"duty_cycle.{s.slot}"] = s.duty_cycle
            figures |= {f"idle_s.{s.slot}.{r}": v for r, v in s.idle_s.items()}
        points = [(k.replace("/", "_"), v, step, when) for k, v in figures.items()
                  if v is not None]
        self._log(run_id, metrics=points[:900])

    def finish_campaign(
        self, campaign: CampaignRecord, metric: MetricSpec, test_looks: int | None = None
    ) -> None:
        """Final val and test-split figures on the parent run, then end it.

        Val means come from the champion's and the seed's runs (log the seed's run too).
        """
        if not self.enabled:
            return
        run_id, name = self._parent(campaign), metric.name
        when, test = _ms(campaign.finished_at), campaign.test
        crowned = self.client.get_run(run_id).data.tags.get("champion", campaign.seed_candidate)
        champion_mean = self._val_mean(campaign, test.champion_id if test else crowned, name)
        seed_mean = self._val_mean(campaign, campaign.seed_candidate, name)
        sign = -1.0 if metric.direction is Direction.MINIMIZE else 1.0
        figures = {f"champion_val_{name}": champion_mean, f"seed_val_{name}": seed_mean}
        if champion_mean is not None and seed_mean is not None:
            figures["val_gain"] = sign * (champion_mean - seed_mean)
        tags = {"status": campaign.status, "stop_reason": campaign.stop_reason}
        if test_looks is not None:
            figures["test_split_looks"] = float(test_looks)
        if campaign.test is not None:
            e = campaign.test.evaluation
            figures |= {
                f"test_champion_{name}": e.mean,
                f"test_seed_{name}": e.reference_mean,
                "test_gain": None if e.delta is None else sign * e.delta,
                "test_p_value": e.p_value,
                "test_effect_size": e.effect_size,
            } | constraint_figures(e.constraints, prefix="test_")
            tags["champion"] = campaign.test.champion_id
            self.client.log_text(run_id, campaign.test.model_dump_json(indent=1), "test.json")
        points = [(k, v, 0, when) for k, v in figures.items() if v is not None]
        self._log(run_id, metrics=points, tags=tags)
        self.client.set_terminated(run_id, "FINISHED", end_time=when)

    def _val_mean(self, campaign: CampaignRecord, candidate_id: str, name: str) -> float | None:
        where = {CANDIDATE: candidate_id, PARENT_TAG: self._parent(campaign)}
        run_id = self._find(self.experiment_id(campaign.benchmark), where)
        return self.client.get_run(run_id).data.metrics.get(f"{name}_mean") if run_id else None

    def log_proposal(self, campaign: CampaignRecord, index: int, proposal: Proposal,
                     spend: list[Spend], transcript: str | None = None) -> None:
        """The proposer's spend on the campaign's run (step = proposal index): this
        proposal's dollars and the running totals of dollars and tokens; its transcript."""
        if not self.enabled:
            return
        run_id, when = self._parent(campaign), _ms(proposal.created_at)
        upto = [s.cost for s in spend if s.created_at <= proposal.created_at]
        points: list[Point] = [("proposal_usd", proposal.cost.usd, index, when)]
        for field in COST_FIELDS:
            points.append((f"proposer_{field}", float(sum(getattr(c, field) for c in upto)),
                           index, when))
        self._log(run_id, points)
        if transcript is not None:
            self.client.log_text(run_id, transcript, f"transcripts/{proposal.id}.md")

    # -- candidate runs --------------------------------------------------------------------
    def log_candidate(
        self,
        campaign: CampaignRecord,
        candidate: Candidate | None,
        proposal: Proposal | None,
        trials: list[Trial],
        evaluation: Evaluation | None,
        verdict: AuditVerdict | None,
        decision: Decision | None,
        metric: MetricSpec,
        transcript: str | None = None,
    ) -> str | None:
        """One child run per evaluated candidate, reused when the candidate is logged again.

        `proposal` and `decision` are None for the seed. A refused proposal gets no run (and
        must not relabel the run of the known candidate it duplicated).
        """
        if not self.enabled or candidate is None or (decision and decision.outcome == "refused"):
            return None
        entry = Entry(candidate, proposal, trials, evaluation, verdict, decision, transcript)
        parent, tags = self._parent(campaign), entry.tags(campaign)
        exp_id = self.experiment_id(campaign.benchmark)
        run_id = self._find(exp_id, {CANDIDATE: candidate.id, PARENT_TAG: parent})
        if run_id is None:
            started = min((t.started_at for t in trials), default=candidate.created_at)
            name = f"{tags['thread']}-{tags['operator']}-{candidate.id[:8]}"
            tags0 = {CANDIDATE: candidate.id, PARENT_TAG: parent}
            run_id = self.client.create_run(exp_id, _ms(started), tags0, name).info.run_id
        self._log(run_id, entry.metrics(metric), entry.params(), tags)
        for name, text in entry.artifacts():
            self.client.log_text(run_id, text, name)
        last = max((t.finished_at for t in trials), default=None)
        end = decision.created_at if decision else last
        status = "FAILED" if decision and decision.outcome == "failed" else "FINISHED"
        self.client.set_terminated(run_id, status, end_time=_ms(end))
        if tags["champion"] == "true" and (mean := val_mean(trials, metric)) is not None:
            crowned = decision.created_at if decision else campaign.started_at
            self.log_champion(campaign, candidate.id, mean, metric, crowned)
        return run_id

    def sync(self, archive: Archive, params: Params, metric: MetricSpec) -> str | None:
        """Mirror a whole archive: the way to rebuild or repair MLflow from the records."""
        campaign = archive.campaign()
        if not self.enabled or campaign is None:
            return None
        run_id = self.start_campaign(campaign, params)
        trials: dict[str, list[Trial]] = {}
        for t in archive.all(Trial):
            trials.setdefault(t.candidate_id, []).append(t)
        seed = archive.get(Candidate, campaign.seed_candidate)
        seed_trials = trials.get(campaign.seed_candidate, [])
        self.log_candidate(campaign, seed, None, seed_trials, None, None, None, metric)
        spend = archive.all(Spend)
        for index, d in enumerate(archive.all(Decision)):
            prop = archive.get(Proposal, d.proposal_id)
            text = archive.read_text(prop.transcript) if prop and prop.transcript else None
            if prop is not None and (spend or text):
                self.log_proposal(campaign, index, prop, spend, text)
            if d.candidate_id is None or d.campaign != campaign.name:
                continue
            cand = archive.get(Candidate, d.candidate_id)
            ev = archive.get(Evaluation, d.evaluation_id) if d.evaluation_id else None
            audit = archive.get(AuditVerdict, d.audit_id) if d.audit_id else None
            ran = trials.get(d.candidate_id, [])
            self.log_candidate(campaign, cand, prop, ran, ev, audit, d, metric, text)
        if campaign.status == "finished":
            looks = sum(t.is_look for t in archive.all(TestResult))
            self.finish_campaign(campaign, metric, test_looks=looks)
        return run_id


def _ok(trials: list[Trial], split: str, name: str) -> list[Trial]:
    """Trials of `split` that produced the metric, in seed order (step k = k-th seed)."""
    good = (t for t in trials if t.split == split and t.status == "ok" and name in t.metrics)
    return sorted(good, key=lambda t: t.seed)


def val_mean(trials: list[Trial], metric: MetricSpec) -> float | None:
    vals = [t.metrics[metric.name] for t in _ok(trials, "val", metric.name)]
    return statistics.fmean(vals) if vals else None


@dataclass(frozen=True)
class Entry:
    """One candidate's records, turned into the params, tags, metrics and files of its run."""

    candidate: Candidate
    proposal: Proposal | None
    trials: list[Trial]
    evaluation: Evaluation | None
    verdict: AuditVerdict | None
    decision: Decision | None
    transcript: str | None = None

    def tags(self, campaign: CampaignRecord) -> dict[str, str]:
        """For filtering and grouping in the UI; `champion`: it became champion when selected."""
        p, d, v = self.proposal, self.decision, self.verdict
        crowned = d.champion if d else self.candidate.id == campaign.seed_candidate
        isolation = sorted({t.isolation for t in self.trials if t.isolation})
        note = p.rationale if p else "seed solution"
        note += f"\n\n{d.outcome}: {d.reason}" if d else ""
        return {
            CAMPAIGN: campaign.name,
            "operator": p.operator if p else "seed",
            "proposer": p.proposer if p else "seed",
            "outcome": d.outcome if d else "seed",
            "thread": str(p.thread) if p else "0",
            "champion": str(crowned).lower(),
            "audit": "none" if v is None else ("passed" if v.passed else "failed"),
            "audit_caught_at": "-" if v is None or v.caught_at is None else str(v.caught_at),
            "isolation": ",".join(isolation) or "-",
            "unisolated": str(any(i not in ISOLATED for i in isolation)).lower(),
            "mlflow.note.content": note,
        } | ({"constraints": "hold" if self.evaluation.constraints_hold else "fail"}
             if self.evaluation and self.evaluation.constraints else {})

    def params(self) -> dict[str, str]:
        p, c = self.proposal, self.candidate
        return {
            "candidate_id": c.id,
            "proposal_id": c.proposal_id or "-",
            "operator": p.operator if p else "seed",
            "proposer": p.proposer if p else "seed",
            "parents": ",".join(c.parents) or "-",
            "edit_steps": steps_text(p)[:PARAM_MAX],
            "files_edited": ",".join(sorted({e.path for e in p.edits})) if p else "-",
        }

    def metrics(self, metric: MetricSpec) -> list[Point]:
        """Per-seed values (step = seed index, and `<name>_seed<k>`) plus summary figures."""
        name, points, e = metric.name, [], self.evaluation
        for split, key in (("val", name), ("test", f"test_{name}")):
            for k, t in enumerate(_ok(self.trials, split, name)):
                when, value = _ms(t.finished_at), t.metrics[name]
                points += [(key, value, k, when), (f"{key}_seed{k}", value, 0, when)]
        vals = [t.metrics[name] for t in _ok(self.trials, "val", name)]
        summary = {
            f"{name}_mean": statistics.fmean(vals) if vals else None,
            f"{name}_std": statistics.stdev(vals) if len(vals) > 1 else None,
            "n_seeds": float(len(vals)),
            "n_failed_trials": float(sum(t.status == "failed" for t in self.trials)),
            "audit_passed": None if self.verdict is None else float(self.verdict.passed),
            "p_value": e.p_value if e else None,
            "effect_size": e.effect_size if e else None,
            "delta": e.delta if e else None,
            f"reference_{name}_mean": e.reference_mean if e else None,
        } | constraint_figures(e.constraints if e else ())
        if self.proposal is not None and self.proposal.cost.usd:
            summary |= {f"proposal_{f}": float(getattr(self.proposal.cost, f))
                        for f in COST_FIELDS}
        when = _ms(self.decision.created_at) if self.decision else None
        return points + [(k, v, 0, when) for k, v in summary.items() if v is not None]

    def artifacts(self) -> Iterator[tuple[str, str]]:
        """(name, text) of each file; logging a name again replaces the file, never adds one."""
        yield "candidate.diff", self.candidate.diff or "# no change: this is the seed\n"
        records = (self.proposal, self.evaluation, self.verdict, self.decision)
        for name, record in zip(
            ("proposal", "evaluation", "audit", "decision"), records, strict=True
        ):
            if record is not None:
                yield f"{name}.json", record.model_dump_json(indent=1)
        if self.transcript is not None:
            yield "transcript.md", self.transcript
        dumps = [t.model_dump(mode="json", exclude={"log_tail"}) for t in self.trials]
        yield "trials.json", json.dumps(dumps, indent=1)
        failed = sorted((t for t in self.trials if t.status == "failed"), key=lambda t: t.seed)
        if failed:
            yield (
                "failures.txt",
                "\n\n".join(
                    f"[{t.split} seed {t.seed}] {t.failure}: {t.reason}\n{t.log_tail}".rstrip()
                    for t in failed
                ),
            )
