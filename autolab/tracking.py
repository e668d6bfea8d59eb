"""A mirror of the archive in MLflow, for people comparing runs in the MLflow UI.

The archive stays the source of truth; nothing here is read back by the loop. Every call
finds its run by tags before creating one, so replaying the same records after a crash or
a resume updates the existing runs instead of duplicating them. MLflow is imported lazily
(it is slow to import) and only in this module.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autolab.config import Params
from autolab.records import (
    AuditVerdict,
    CampaignRecord,
    Candidate,
    Decision,
    Evaluation,
    Proposal,
    Trial,
)
from benchmarks.protocol import Direction, MetricSpec

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from autolab.archive import Archive

PARENT_TAG = "mlflow.parentRunId"
ROLE, CAMPAIGN, CANDIDATE = "autolab.role", "autolab.campaign", "autolab.candidate_id"
PARAM_MAX, TAG_MAX = 500, 5000


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
    parts = []
    for s in proposal.steps:
        args = ",".join(f"{k}={v}" for k, v in s.params.items())
        parts.append(f"{s.name}({args})" if args else s.name)
    return "; ".join(parts)


def _failures_text(trials: list[Trial]) -> str:
    blocks = []
    for t in sorted(trials, key=lambda t: (t.split, t.seed)):
        if t.status == "failed":
            head = f"[{t.split} seed {t.seed}] {t.failure or 'failed'}: {t.reason}"
            blocks.append(head + (f"\n{t.log_tail.rstrip()}" if t.log_tail else ""))
    return "\n\n".join(blocks)


class Tracker:
    """Writes campaign and candidate runs; with enabled=False every method does nothing."""

    def __init__(self, mlruns_dir: Path, enabled: bool = True):
        self.mlruns_dir = Path(mlruns_dir).resolve()
        self.enabled = enabled
        self._client: MlflowClient | None = None
        self._experiments: dict[str, str] = {}
        self._parents: dict[str, str] = {}

    # -- plumbing --------------------------------------------------------------------------
    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
            from mlflow.tracking import MlflowClient

            self.mlruns_dir.mkdir(parents=True, exist_ok=True)
            self._client = MlflowClient(tracking_uri=tracking_uri(self.mlruns_dir))
        return self._client

    def experiment_id(self, benchmark: str) -> str:
        """One experiment per benchmark, its artifacts under <mlruns>/artifacts/<benchmark>."""
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
        self,
        run_id: str,
        metrics: Iterable[tuple[str, float, int, int | None]] = (),
        params: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
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
                history[key] = {(m.step, m.value) for m in self.client.get_metric_history(run_id, key)}
            if (step, float(value)) not in history.get(key, set()):
                points.append(Metric(key, float(value), when or _ms(datetime.now()), step))
        new_params = [Param(k, v) for k, v in (params or {}).items() if k not in run.data.params]
        new_tags = [RunTag(k, str(v)[:TAG_MAX]) for k, v in (tags or {}).items()]
        for i in range(0, max(len(points), len(new_params), len(new_tags)), 100):
            self.client.log_batch(
                run_id, points[i : i + 100], new_params[i : i + 100], new_tags[i : i + 100]
            )

    # -- campaign run ----------------------------------------------------------------------
    def _parent(self, campaign: CampaignRecord) -> str:
        """The campaign's run: its recorded id if it still exists, else found by tag, else new."""
        if campaign.name in self._parents:
            return self._parents[campaign.name]
        from mlflow.exceptions import MlflowException

        exp_id = self.experiment_id(campaign.benchmark)
        run_id = None
        if campaign.mlflow_run_id:
            try:
                run = self.client.get_run(campaign.mlflow_run_id)
                if run.info.lifecycle_stage == "active" and run.info.experiment_id == exp_id:
                    run_id = run.info.run_id
            except MlflowException:
                run_id = None
        run_id = run_id or self._find(exp_id, {ROLE: "campaign", CAMPAIGN: campaign.name})
        if run_id is None:
            tags = {ROLE: "campaign", CAMPAIGN: campaign.name}
            run = self.client.create_run(
                exp_id, start_time=_ms(campaign.started_at), tags=tags, run_name=campaign.name
            )
            run_id = run.info.run_id
        self._parents[campaign.name] = run_id
        return run_id

    def start_campaign(self, campaign: CampaignRecord, params: Params) -> str | None:
        """Open (or reopen, on resume) the campaign's run and log its params; return its id."""
        if not self.enabled:
            return None
        run_id = self._parent(campaign)
        if self.client.get_run(run_id).info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        tags = {
            "benchmark": campaign.benchmark,
            "params_hash": campaign.params_hash,
            "seed_candidate": campaign.seed_candidate,
            "status": campaign.status,
            "proposer": params.proposer.kind,
        }
        self._log(run_id, params=flatten(params.model_dump(mode="json")), tags=tags)
        return run_id

    def log_champion(
        self, campaign: CampaignRecord, candidate_id: str, mean: float, metric: MetricSpec, step: int
    ) -> None:
        """A new champion: one point of the parent's champion curve (step = proposals made)."""
        if not self.enabled:
            return
        run_id = self._parent(campaign)
        point = (f"champion_{metric.name}", mean, step, None)
        self._log(run_id, metrics=[point], tags={"champion": candidate_id})

    def finish_campaign(
        self,
        campaign: CampaignRecord,
        metric: MetricSpec,
        champion_mean: float | None = None,
        seed_mean: float | None = None,
    ) -> None:
        """Final val and test-split figures on the parent run, then end it."""
        if not self.enabled:
            return
        run_id = self._parent(campaign)
        when = _ms(campaign.finished_at)
        name = metric.name
        sign = -1.0 if metric.direction is Direction.MINIMIZE else 1.0
        figures: dict[str, float | None] = {
            f"champion_val_{name}": champion_mean,
            f"seed_val_{name}": seed_mean,
        }
        if champion_mean is not None and seed_mean is not None:
            figures["val_gain"] = sign * (champion_mean - seed_mean)
        tags = {"status": campaign.status, "stop_reason": campaign.stop_reason}
        if campaign.test is not None:
            e = campaign.test.evaluation
            figures |= {
                f"test_champion_{name}": e.mean,
                f"test_seed_{name}": e.reference_mean,
                "test_gain": None if e.delta is None else sign * e.delta,
                "test_p_value": e.p_value,
                "test_effect_size": e.effect_size,
            }
            tags["champion"] = campaign.test.champion_id
            self.client.log_text(run_id, campaign.test.model_dump_json(indent=1), "test.json")
        points = [(k, v, 0, when) for k, v in figures.items() if v is not None]
        self._log(run_id, metrics=points, tags=tags)
        self.client.set_terminated(run_id, "FINISHED", end_time=when)

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
    ) -> str | None:
        """One child run per evaluated candidate, reused when the candidate is logged again.

        `proposal` and `decision` are None for the seed; `candidate` is None for a proposal
        refused before it became a candidate, which gets no run.
        """
        if not self.enabled or candidate is None:
            return None
        parent = self._parent(campaign)
        exp_id = self.experiment_id(campaign.benchmark)
        tags = _candidate_tags(campaign, candidate, proposal, verdict, decision)
        run_id = self._find(exp_id, {CANDIDATE: candidate.id, PARENT_TAG: parent})
        if run_id is None:
            started = min((t.started_at for t in trials), default=candidate.created_at)
            run_name = f"{tags['thread']}-{tags['operator']}-{candidate.id[:8]}"
            run = self.client.create_run(
                exp_id,
                start_time=_ms(started),
                tags={CANDIDATE: candidate.id, PARENT_TAG: parent},
                run_name=run_name,
            )
            run_id = run.info.run_id
        metrics = _candidate_metrics(trials, evaluation, verdict, decision, metric)
        self._log(run_id, metrics, _candidate_params(candidate, proposal), tags)
        self._candidate_artifacts(run_id, candidate, proposal, trials, evaluation, verdict, decision)
        status = "FAILED" if decision and decision.outcome == "failed" else "FINISHED"
        end = decision.created_at if decision else max((t.finished_at for t in trials), default=None)
        self.client.set_terminated(run_id, status, end_time=_ms(end))
        return run_id

    def _candidate_artifacts(
        self,
        run_id: str,
        candidate: Candidate,
        proposal: Proposal | None,
        trials: list[Trial],
        evaluation: Evaluation | None,
        verdict: AuditVerdict | None,
        decision: Decision | None,
    ) -> None:
        """Small text artifacts; rewriting one replaces it, so replays stay single copies."""
        files = {
            "candidate.diff": candidate.diff or "# no change: this is the seed\n",
            "audit.json": verdict.model_dump_json(indent=1) if verdict else None,
            "evaluation.json": evaluation.model_dump_json(indent=1) if evaluation else None,
            "decision.json": decision.model_dump_json(indent=1) if decision else None,
            "proposal.json": proposal.model_dump_json(indent=1) if proposal else None,
            "trials.json": json.dumps(
                [t.model_dump(mode="json", exclude={"log_tail"}) for t in trials], indent=1
            ),
            "failures.txt": _failures_text(trials) or None,
        }
        for name, text in files.items():
            if text is not None:
                self.client.log_text(run_id, text, name)

    # -- whole archive ---------------------------------------------------------------------
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
        self.log_candidate(campaign, seed, None, trials.get(campaign.seed_candidate, []),
                           None, None, None, metric)  # fmt: skip
        decisions = [d for d in archive.all(Decision) if d.campaign == campaign.name]
        for step, d in enumerate(decisions, start=1):
            if d.candidate_id is None:
                continue
            vals = [t.metrics[metric.name] for t in trials.get(d.candidate_id, [])
                    if t.split == "val" and t.status == "ok" and metric.name in t.metrics]  # fmt: skip
            self.log_candidate(
                campaign,
                archive.get(Candidate, d.candidate_id),
                archive.get(Proposal, d.proposal_id),
                trials.get(d.candidate_id, []),
                archive.get(Evaluation, d.evaluation_id) if d.evaluation_id else None,
                archive.get(AuditVerdict, d.audit_id) if d.audit_id else None,
                d,
                metric,
            )
            if d.champion and vals:
                self.log_champion(campaign, d.candidate_id, statistics.fmean(vals), metric, step)
        if campaign.status == "finished":
            self.finish_campaign(campaign, metric)
        return run_id


def _candidate_tags(
    campaign: CampaignRecord,
    candidate: Candidate,
    proposal: Proposal | None,
    verdict: AuditVerdict | None,
    decision: Decision | None,
) -> dict[str, str]:
    """Tags to filter and group by in the UI; `champion` = it became champion when selected."""
    champion = decision.champion if decision else candidate.id == campaign.seed_candidate
    note = proposal.rationale if proposal else "seed solution"
    if decision:
        note += f"\n\n{decision.outcome}: {decision.reason}"
    return {
        CAMPAIGN: campaign.name,
        "operator": proposal.operator if proposal else "seed",
        "proposer": proposal.proposer if proposal else "seed",
        "outcome": decision.outcome if decision else "seed",
        "thread": str(proposal.thread) if proposal else "0",
        "champion": str(champion).lower(),
        "audit": "none" if verdict is None else ("passed" if verdict.passed else "failed"),
        "mlflow.note.content": note,
    }


def _candidate_params(candidate: Candidate, proposal: Proposal | None) -> dict[str, str]:
    return {
        "candidate_id": candidate.id,
        "proposal_id": candidate.proposal_id or "-",
        "operator": proposal.operator if proposal else "seed",
        "proposer": proposal.proposer if proposal else "seed",
        "parents": ",".join(candidate.parents) or "-",
        "edit_steps": steps_text(proposal)[:PARAM_MAX],
        "files_edited": ",".join(sorted({e.path for e in proposal.edits})) if proposal else "-",
    }


def _candidate_metrics(
    trials: list[Trial],
    evaluation: Evaluation | None,
    verdict: AuditVerdict | None,
    decision: Decision | None,
    metric: MetricSpec,
) -> list[tuple[str, float, int, int | None]]:
    """Per-seed values (step = seed index, and `<name>_seed<k>`) plus summary figures."""
    name, points = metric.name, []
    for split, key in (("val", name), ("test", f"test_{name}")):
        ok = sorted(
            (t for t in trials if t.split == split and t.status == "ok" and name in t.metrics),
            key=lambda t: t.seed,
        )
        for k, t in enumerate(ok):
            when = _ms(t.finished_at)
            points += [(key, t.metrics[name], k, when), (f"{key}_seed{k}", t.metrics[name], 0, when)]
        if split == "val" and ok:
            vals = [t.metrics[name] for t in ok]
            points.append((f"{name}_mean", statistics.fmean(vals), 0, None))
            if len(vals) > 1:
                points.append((f"{name}_std", statistics.stdev(vals), 0, None))
    summary: dict[str, float | None] = {
        "n_seeds": float(sum(t.split == "val" and t.status == "ok" for t in trials)),
        "n_failed_trials": float(sum(t.status == "failed" for t in trials)),
        "audit_passed": None if verdict is None else float(verdict.passed),
    }
    if evaluation is not None:
        summary |= {
            "p_value": evaluation.p_value,
            "effect_size": evaluation.effect_size,
            "delta": evaluation.delta,
            f"reference_{name}_mean": evaluation.reference_mean,
        }
    when = _ms(decision.created_at) if decision else None
    return points + [(k, v, 0, when) for k, v in summary.items() if v is not None]
