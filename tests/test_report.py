"""Status, report and plot, all derived from a small synthetic archive."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from autolab.archive import Archive
from autolab.config import Params, parse_params
from autolab.records import (
    AuditVerdict,
    CampaignRecord,
    Candidate,
    Cost,
    Decision,
    EditStep,
    Evaluation,
    FileEdit,
    Proposal,
    Trial,
)
from autolab.records import (
    TestResult as FinalTest,
)
from autolab.report import build_report, campaign_status, champion_diff, render_status
from benchmarks.protocol import CheckResult, Direction, MetricSpec

METRIC = MetricSpec(name="bpb", direction=Direction.MINIMIZE, unit="bits/byte")
T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
SEEDS = [1000, 1001, 1002]


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


class Builder:
    """Writes a campaign into an archive the way the loop would, one iteration at a time."""

    def __init__(self, root: Path):
        self.archive = Archive(root)
        self.ids: dict[str, str] = {}

    def candidate(
        self, label: str, lr: str, parents: list[str], proposal_id: str | None, minute: float
    ) -> str:
        files = {"train.py": f"LR = {lr}\nSTEPS = 100\n"}
        cid = Candidate.key(files)
        diff = "" if not parents else f"-LR = old\n+LR = {lr}\n"
        cand = Candidate(
            id=cid,
            benchmark="tinylm",
            parents=parents,
            proposal_id=proposal_id,
            files={"train.py": "h"},
            diff=diff,
            created_at=at(minute),
        )
        self.archive.put_candidate(cand, files)
        self.ids[label] = cid
        return cid

    def trials(self, cid: str, values: list[float | None], minute: float, split: str = "val"):
        out = []
        for i, (seed, v) in enumerate(zip(SEEDS, values, strict=False)):
            ok = v is not None
            t = Trial(
                id=f"{cid}-{split}-{seed}",
                candidate_id=cid,
                seed=seed,
                split=split,
                status="ok" if ok else "failed",
                failure=None if ok else "crash",
                reason="" if ok else "RuntimeError: boom in forward()",
                metrics={"bpb": v} if ok else {},
                log_tail="" if ok else "Traceback ...",
                started_at=at(minute + i),
                finished_at=at(minute + i + 1),
            )
            self.archive.put(t)
            out.append(t)
        return out

    def iteration(
        self,
        n: int,
        thread: int,
        operator: str,
        parents: list[str],
        lr: str,
        values: list[float | None],
        outcome: str,
        p: float | None,
        champion: bool = False,
        ref: str | None = None,
    ) -> str:
        minute = 5.0 * n
        prop = Proposal(
            id=f"prop{n}",
            campaign="c1",
            thread=thread,
            operator=operator,
            parents=parents,
            rationale=f"try LR={lr} because step {n}",
            steps=[EditStep(name="set_lr", params={"LR": float(lr)})],
            edits=[FileEdit(path="train.py", replace=f"LR = {lr}")],
            proposer="offline",
            cost=Cost(usd=0.25),
            created_at=at(minute),
        )
        self.archive.put(prop)
        cid = self.candidate(f"c{n}", lr, parents, prop.id, minute)
        trials = self.trials(cid, values, minute)
        ok = [t.metrics["bpb"] for t in trials if t.status == "ok"]
        ref = ref or parents[0]
        ref_vals = [t.metrics["bpb"] for t in self.trials_of(ref)]
        ev_id = audit_id = None
        if ok:
            ev = Evaluation(
                id=f"ev{n}",
                candidate_id=cid,
                reference_id=ref,
                metric="bpb",
                values=ok,
                reference_values=ref_vals,
                mean=sum(ok) / len(ok),
                reference_mean=sum(ref_vals) / len(ref_vals),
                delta=sum(ok) / len(ok) - sum(ref_vals) / len(ref_vals),
                effect_size=2.0,
                p_value=p,
                alpha=0.01,
                decision="accept" if outcome == "accepted" else "reject",
                created_at=at(minute + 4),
            )
            audit = AuditVerdict(
                id=f"au{n}",
                candidate_id=cid,
                level=1,
                passed=True,
                checks=[CheckResult(name="harness", passed=True)],
                created_at=at(minute + 4),
            )
            self.archive.put(ev)
            self.archive.put(audit)
            ev_id, audit_id = ev.id, audit.id
        reason = {
            "accepted": "p < alpha",
            "rejected": "p >= alpha at 3 seeds",
            "failed": "all val trials failed (crash)",
        }[outcome]
        self.archive.put(
            Decision(
                id=f"dec{n}",
                campaign="c1",
                thread=thread,
                proposal_id=prop.id,
                candidate_id=cid,
                outcome=outcome,
                reason=reason,
                champion=champion,
                evaluation_id=ev_id,
                audit_id=audit_id,
                created_at=at(minute + 4.5),
            )
        )
        return cid

    def trials_of(self, cid: str) -> list[Trial]:
        return [
            t
            for t in self.archive.all(Trial)
            if t.candidate_id == cid and t.split == "val" and t.status == "ok"
        ]


def build_archive(root: Path, finished: bool = True) -> tuple[Archive, dict[str, str]]:
    """Seed + 4 candidates (2 accepted, 1 rejected, 1 failed) + 1 refused proposal.

    Lineage: seed -> c1 (champion) -> c4 (crossover of c1 and c2, champion).
    """
    b = Builder(root)
    seed = b.candidate("seed", "0.01", [], None, 0)
    b.trials(seed, [2.00, 2.02, 1.98], 0)
    c1 = b.iteration(1, 0, "tune", [seed], "0.02", [1.90, 1.91, 1.89], "accepted", 0.0012, True)
    c2 = b.iteration(2, 1, "improve", [c1], "0.03", [1.95, 1.96, 1.94], "rejected", 0.91)
    b.iteration(3, 0, "improve", [c1], "0.05", [None], "failed", None)
    c4 = b.iteration(
        4, 0, "crossover", [c1, c2], "0.025", [1.80, 1.81, 1.79], "accepted", 0.0021, True
    )
    b.archive.put(
        Proposal(
            id="prop5",
            campaign="c1",
            thread=1,
            operator="tune",
            parents=[c4],
            rationale="duplicate",
            edits=[],
            proposer="offline",
            created_at=at(25),
        )
    )
    b.archive.put(
        Decision(
            id="dec5",
            campaign="c1",
            thread=1,
            proposal_id="prop5",
            candidate_id=None,
            outcome="refused",
            reason="duplicate of an earlier",
            created_at=at(25.5),
        )
    )
    b.trials(c4, [1.82, 1.83, 1.81], 26, split="test")
    b.trials(seed, [2.01, 2.00, 2.02], 27, split="test")
    test = Evaluation(
        id="evtest",
        candidate_id=c4,
        reference_id=seed,
        metric="bpb",
        values=[1.82, 1.83, 1.81],
        reference_values=[2.01, 2.00, 2.02],
        mean=1.82,
        reference_mean=2.01,
        delta=-0.19,
        effect_size=15.2,
        p_value=0.00031,
        alpha=0.01,
        decision="accept",
        created_at=at(29),
    )
    confirmed = FinalTest(id="t-c4", champion_id=c4, seed_id=seed, evaluation=test)
    camp = CampaignRecord(
        name="c1",
        benchmark="tinylm",
        params_hash="ph",
        seed_candidate=seed,
        status="finished" if finished else "running",
        stop_reason="budget" if finished else "",
        started_at=T0,
        finished_at=at(30) if finished else None,
        test=confirmed if finished else None,
        isolation="bwrap",
    )
    if finished:
        b.archive.put(confirmed)
    b.archive.put_campaign(camp)
    return b.archive, b.ids


PARAMS: Params = parse_params(
    {"campaign": {"name": "c1", "max_proposals": 6, "max_wall_clock_min": 60}}
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Archive, dict[str, str], Path]:
    archive, ids = build_archive(tmp_path_factory.mktemp("archive"))
    out = tmp_path_factory.mktemp("report")
    path = build_report(archive, PARAMS, METRIC, out)
    return archive, ids, path


def test_status_counts(built):
    archive, ids, _ = built
    s = campaign_status(archive, PARAMS, METRIC)
    assert (s["proposals"], s["evaluated"], s["accepted"], s["rejected"]) == (5, 4, 2, 1)
    assert (s["failed"], s["refused"], s["failures_by_kind"]) == (1, 1, {"crash": 1})
    assert s["champion"] == ids["c4"] and s["seed"] == ids["seed"]
    assert s["champion_mean"] == pytest.approx(1.80) and s["seed_mean"] == pytest.approx(2.00)
    assert s["gain"] == pytest.approx(0.20) and s["gain_pct"] == pytest.approx(10.0)
    assert s["best_candidate"] == ids["c4"]
    assert s["proposals_left"] == 1
    assert s["elapsed_min"] == pytest.approx(30) and s["minutes_left"] == pytest.approx(30)
    assert s["status"] == "finished" and s["cost_usd"] == pytest.approx(1.0)


def test_render_status_is_a_table(built):
    from rich.console import Console
    from rich.table import Table

    table = render_status(campaign_status(built[0], PARAMS, METRIC))
    assert isinstance(table, Table)
    console = Console(width=120, record=True)
    console.print(table)
    text = console.export_text()
    assert "crash: 1" in text and built[1]["c4"][:8] in text


def test_report_headline_and_counts(built):
    _, ids, path = built
    text = path.read_text()
    assert path.name == "report.md"
    assert f"**Champion `{ids['c4'][:12]}`**" in text
    assert "**0.2 bits/byte** (+10.00%)" in text  # val gain over the seed
    assert "**0.19 bits/byte** (+9.45%), p = 0.00031 (welch test), effect size 15.2" in text
    assert "| 5 | 4 | 2 | 1 | 1 | 1 | 1 | $1.00 |" in text


def test_report_lineage_table_and_failures(built):
    _, ids, path = built
    text = path.read_text()
    lineage = text.split("## Champion lineage")[1].split("## Proposals")[0]
    rows = [r for r in lineage.splitlines() if r.startswith("| ") and "`" in r]
    assert [r.split("`")[1] for r in rows] == [ids[k][:8] for k in ("seed", "c1", "c4")]
    assert "set_lr(LR=0.02)" in rows[1] and f"| 0.0012 vs `{ids['seed'][:8]}` |" in rows[1]
    assert (
        "crossover" in rows[2]
        and "1.8 ± 0.01 (n=3)" in rows[2]
        and f"| 0.0021 vs `{ids['c1'][:8]}` |" in rows[2]
    )
    proposals = text.split("## Proposals")[1].split("## Failures")[0]
    assert proposals.count("\n| ") == 6  # header + 5 proposals
    assert "| refused |" in proposals and "duplicate of an earlier" in proposals
    failures = text.split("## Failures")[1].split("## Champion diff")[0]
    assert "val seed 1000 crash: RuntimeError: boom in forward()" in failures
    assert "all val trials failed (crash)" in failures


def test_report_diff_is_seed_to_champion(built):
    archive, ids, path = built
    text = path.read_text()
    diff = champion_diff(archive, ids["seed"], ids["c4"])
    assert "-LR = 0.01\n+LR = 0.025" in diff and diff.startswith("--- a/train.py")
    assert f"```diff\n{diff}\n```" in text


def test_best_so_far_png(built):
    png = built[2].parent / "best_so_far.png"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert 600 <= width <= 2000 and 300 <= height <= 1500
    assert len(data) > 10_000


def test_running_campaign_without_test(tmp_path):
    archive, ids = build_archive(tmp_path / "a", finished=False)
    text = build_report(archive, PARAMS, METRIC, tmp_path / "r").read_text()
    assert "Test split: not yet measured" in text
    s = campaign_status(archive, PARAMS, METRIC)
    assert s["status"] == "running" and s["minutes_left"] < 60


def test_status_and_report_show_isolation_test_looks_audit_levels_and_resolution(tmp_path):
    """An unisolated campaign whose failed candidate was caught at audit level 1, confirmed
    once on the test split, with one paired evaluation to measure the noise from."""
    from autolab.stats import Design, smallest_detectable_gain

    archive, ids = build_archive(tmp_path / "a")
    record = archive.campaign()
    archive.put_campaign(record.model_copy(update={"isolation": "none", "unisolated": True}))
    ev1 = archive.get(Evaluation, "ev1")
    archive.put(ev1.model_copy(update={"test": "paired"}))  # diffs -0.10, -0.11, -0.09
    caught = AuditVerdict(id="au3", candidate_id=ids["c3"], level=1, passed=False, caught_at=1,
                          checks=[CheckResult(name="trials_intact", passed=False)])
    archive.put(caught)
    archive.put(archive.get(Decision, "dec3").model_copy(update={"audit_id": "au3"}))

    s = campaign_status(archive, PARAMS, METRIC)
    assert (s["isolation"], s["unisolated"], s["test_looks"]) == ("none", True, 1)
    assert s["caught_by_level"] == {"L1 runtime": 1}
    assert s["paired_sd"] == pytest.approx(0.01)
    ev = PARAMS.evaluation
    expected = smallest_detectable_gain(0.01, Design(ev.alpha, ev.min_seeds, ev.max_seeds,
                                                     ev.parallel_trials))
    assert s["smallest_detectable_gain"] == pytest.approx(expected) and expected > 0.01

    text = build_report(archive, PARAMS, METRIC, tmp_path / "r").read_text()
    assert "**Unisolated results.** Trials ran under `none`" in text
    assert "Sandbox: `none` (unisolated). Caught by the audit: L1 runtime: 1." in text
    assert "looked at 1 time(s)" in text
    assert f"smallest gain detected with 80% power is {expected:.4g} bits/byte" in text

    from rich.console import Console

    console = Console(width=120, record=True)
    console.print(render_status(s))
    shown = console.export_text()
    for row in ("none (UNISOLATED)", "L1 runtime: 1", "test split looks", f"{expected:.4g}"):
        assert row in shown


def test_an_isolated_campaign_has_no_warning(built):
    text = built[2].read_text()
    assert "Unisolated" not in text
    assert "Sandbox: `bwrap`. Caught by the audit: none." in text
    assert "looked at 1 time(s)" in text
    s = campaign_status(built[0], PARAMS, METRIC)
    assert (s["isolation"], s["unisolated"], s["test_looks"]) == ("bwrap", False, 1)


def test_headline_gain_is_the_one_its_p_value_is_about(tmp_path):
    """With a recorded champion-vs-seed evaluation, the gain, its percentage and the p-value
    all come from that evaluation's matched seeds, not from the seed's other seeds."""
    archive, ids = build_archive(tmp_path / "archive")
    archive.put(Evaluation(
        id="ev-c4-vs-seed", candidate_id=ids["c4"], reference_id=ids["seed"], metric="bpb",
        values=[1.80, 1.79], reference_values=[2.06, 2.04], mean=1.795, reference_mean=2.05,
        delta=-0.255, effect_size=9.9, p_value=0.0042, alpha=0.01, decision="accept",
        created_at=T0, test="paired",
    ))  # fmt: skip
    archive.put(Evaluation(  # the replication on the audit split is not the val gain
        id="ev-c4-vs-seed-audit", candidate_id=ids["c4"], reference_id=ids["seed"],
        metric="bpb", values=[1.7, 1.7], reference_values=[2.3, 2.3], mean=1.7,
        reference_mean=2.3, delta=-0.6, effect_size=50.0, p_value=0.0001, alpha=0.05,
        decision="accept", created_at=T0, test="paired", split="audit",
    ))  # fmt: skip
    text = build_report(archive, PARAMS, METRIC, tmp_path / "out").read_text()
    assert "**0.255 bits/byte** (+12.44%), p = 0.0042" in text
    assert "paired test: 1.795 vs 2.05 on 2 val seeds" in text
