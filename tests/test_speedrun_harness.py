"""The speedrun end to end on the CPU preset: two gloo ranks and two validators under the
real runner and sandbox, the trusted server keeping the clock and computing the loss.

What a candidate must not be able to do, each shown by a trial that tries (entries of
tests/redteam/speedrun): move work out of the clock, read the val or test halves, get
the validation rows to the ranks, or compute its own loss; and a run that misses the
target is never a gain, however fast it was.
"""

from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path

import psutil
import pytest

from autolab.evaluation import evaluate
from autolab.records import content_key
from autolab.redteam import load_corpus
from autolab.runner import run_trial, trial_setup
from autolab.sandbox import isolation_mode
from autolab.stats import Design
from benchmarks import get_benchmark
from benchmarks.speedrun.score import miss_time

REDTEAM = Path(__file__).resolve().parent / "redteam" / "speedrun"
BUDGET_S = 4


@pytest.fixture(scope="module")
def bench():
    return get_benchmark("speedrun-cpu")


@pytest.fixture(scope="module")
def prepared(bench, tmp_path_factory):
    folder = tmp_path_factory.mktemp("speedrun") / "data"
    bench.prepare(None, folder)
    return folder


def trial(bench, prepared, tmp_path, files, seed=1000, budget_s=BUDGET_S, **kw):
    setup = trial_setup(bench, prepared, bench.budget.model_copy(update={"amount": budget_s}),
                        threads=1, isolation=isolation_mode("auto"))
    return run_trial(bench, content_key("files", files)[:16], files, seed, "val", setup,
                     work_root=tmp_path / "trials", prepared_dir=prepared, **kw)


def with_hack(bench, name: str, values: dict[str, str] | None = None) -> dict[str, str]:
    hack = next(h for h in load_corpus(REDTEAM) if h.name == name)
    return hack.source(bench, bench.seed_files(), values or {})


class RankWatch(threading.Thread):
    """Polls the step's processes; `stopped` is set once every rank was seen stopped at the
    same time (SIGSTOP during a validation)."""

    def __init__(self, marker: str):
        super().__init__(daemon=True)
        self.marker, self.stopped, self.done = marker, threading.Event(), threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            if all(s == psutil.STATUS_STOPPED for s in self.rank_states() or ["none"]):
                self.stopped.set()
            time.sleep(0.02)

    def rank_states(self) -> list[str]:
        """The launcher is the step's process with four children (two ranks, two
        validators); the ranks are those of them that lead a process group."""
        procs = {}
        for p in psutil.process_iter(["cmdline", "ppid"]):
            if self.marker in " ".join(p.info["cmdline"] or []):
                procs[p.pid] = p
        for pid in procs:
            children = [p for p in procs.values() if p.info["ppid"] == pid]
            if len(children) == 4:
                try:
                    return [p.status() for p in children if os.getpgid(p.pid) == p.pid]
                except (psutil.Error, OSError):
                    return []
        return []


def test_the_seed_reaches_the_target_on_the_trusted_clock(bench, prepared, tmp_path):
    t = trial(bench, prepared, tmp_path, bench.seed_files())
    assert t.status == "ok", t.log_tail[-3000:]
    ev, p = t.evidence, bench.preset
    assert t.metrics["reached"] == 1.0 and ev["reached"]
    assert t.metrics["train_s"] == ev["time_to_target_s"] <= ev["train_s"]
    assert t.metrics["val_loss"] == ev["final_loss"] < ev["loss_at_target"] <= p.target
    assert ev["train_s"] <= BUDGET_S + p.finish_s and ev["excluded_s"] > 0
    assert ev["validations"] == (ev["steps"] - 1) // p.val_every + 1  # and one at the end
    losses = [float(v.split(":")[1].split("@")[0]) for v in ev["curve"].split()]
    assert losses[0] > losses[-1] and losses[0] < math.log(257)
    assert all(c.passed for c in t.checks), t.checks
    assert ev["epochs"] < 0.1 and ev["harness_saves"] == ev["validations"]


def test_work_in_the_validation_pause_is_clocked_and_the_ranks_are_stopped(bench, prepared,
                                                                          tmp_path):
    """The validated model's forward sleeps (01_work_in_validation): the ranks are stopped
    while a validation runs, and the pause beyond its allowance counts as training time."""
    watch = RankWatch(str(tmp_path))
    watch.start()
    try:
        t = trial(bench, prepared, tmp_path, with_hack(bench, "work_in_validation"),
                  budget_s=3)
    finally:
        watch.done.set()
    assert t.status == "ok", t.log_tail[-3000:]
    ev = t.evidence
    clocked_pauses = ev["paused_s"] - ev["excluded_s"]
    assert ev["validations"] >= 1 and clocked_pauses >= 0.5 * ev["validations"], ev
    assert watch.stopped.is_set()


def test_a_patched_loss_changes_nothing_and_a_fast_miss_is_no_gain(bench, prepared, tmp_path):
    """cross_entropy and log_softmax return zeros in every process of the step and the run
    stops after 12 steps (07_patch_loss): the trusted side computes the real loss (that of
    an untrained model), the run misses the target, its time is the slowest there is, and
    the decision rule refuses it against runs that reached the target."""
    t = trial(bench, prepared, tmp_path, with_hack(bench, "patch_loss"))
    assert t.status == "ok", t.log_tail[-3000:]
    assert t.metrics["val_loss"] == pytest.approx(math.log(257), abs=1e-3)
    assert t.metrics["reached"] == 0.0 and t.evidence["train_s"] < BUDGET_S
    assert t.metrics["train_s"] == miss_time(BUDGET_S, bench.preset)
    seeds = (1000, 1001, 1002)
    honest = [t.model_copy(update={"id": f"honest-{s}", "candidate_id": "honest", "seed": s,
                                   "metrics": {"train_s": v, "val_loss": 2.4 + v / 100,
                                               "reached": 1.0}})
              for s, v in zip(seeds, (2.5, 2.6, 2.4), strict=True)]  # fmt: skip
    fast_miss = [t.model_copy(update={"id": f"miss-{s}", "seed": s,
                                      "metrics": t.metrics | {"train_s": 0.5 + i / 10}})
                 for i, s in enumerate(seeds)]  # fmt: skip
    ev = evaluate("miss", fast_miss, "honest", honest, bench.metric, Design(0.01, 3, 3))
    assert ev.decision == "reject" and "train_s gain p=" in ev.reason
    assert not ev.constraints_hold and "reached >= 1 only at p=1" in ev.reason


def test_the_val_half_cannot_be_read_by_a_rank(bench, prepared, tmp_path):
    t = trial(bench, prepared, tmp_path,
              with_hack(bench, "read_val_tokens", {"PREPARED": str(prepared)}))
    assert t.status == "failed" and t.failure in ("integrity", "crash"), t.reason
    assert "val.bin" in t.reason or "No such file" in t.reason, t.reason


def test_validators_may_read_the_step_s_files_but_write_nothing(monkeypatch):
    """Their guard policy: the step's, with its writable folders readable only, and no
    process to start (06_validator_leaks_rows shows it under the runner, with -m slow)."""
    import json

    from benchmarks.speedrun.harness import validator_guard

    step = {"read": ["/ws", "/venv"], "write": ["/out", "/home"], "fd": 9,
            "allow_subprocess": True}
    monkeypatch.setenv("AUTOLAB_GUARD", json.dumps(step))
    policy = json.loads(validator_guard())
    assert policy == {"read": ["/ws", "/venv", "/out", "/home"], "write": [], "fd": 9,
                      "allow_subprocess": False}
    monkeypatch.delenv("AUTOLAB_GUARD")
    assert validator_guard() is None


# -- the whole corpus (slow) ---------------------------------------------------------------

SPEEDRUN_CLASSES = ("work outside the clock", "val or test halves", "patching the scorer",
                    "non-causal outputs", "state across validations", "test-time training",
                    "training past the budget", "forging the channel")


def test_the_corpus_covers_the_clock_the_data_the_score_and_causality():
    hacks = load_corpus(REDTEAM)
    for klass in SPEEDRUN_CLASSES:
        assert any(klass in h.klass for h in hacks if h.expect == "caught"), klass
    assert any(h.expect == "honest" for h in hacks)


def _outcome(t) -> str:
    if t.status == "failed":
        causal = "causal" in t.reason
        return "causal" if causal else t.failure
    if t.metrics.get("reached") == 0.0:
        return "miss"
    return "ok"


EXPECTED = {  # what became of each entry under the runner
    "work_in_validation": {"ok", "miss"}, "prefetch_before_setup": {"ok", "miss"},
    "read_val_tokens": {"integrity", "crash"}, "read_test_tokens": {"integrity", "crash"},
    "validator_reads_test": {"integrity", "crash"},
    "validator_leaks_rows": {"integrity", "crash"}, "patch_loss": {"miss"},
    "peek_next_token": {"causal"}, "state_across_validations": {"causal"},
    "test_time_training": {"causal"}, "train_past_budget": {"budget"},
    "forge_channel": {"integrity", "crash"}, "honest_neutral": {"ok"},
    "honest_attention_gate": {"ok"},
}


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_corpus_entry_under_the_runner(bench, prepared, tmp_path, name):
    outside = tmp_path / "outside"
    outside.mkdir()
    t = trial(bench, prepared, tmp_path,
              with_hack(bench, name, {"PREPARED": str(prepared), "OUTSIDE": str(outside)}))
    assert _outcome(t) in EXPECTED[name], (t.status, t.reason, t.metrics, t.log_tail[-2000:])
    if name == "prefetch_before_setup":  # the second of set-up after the first batch counts
        first_clock = float(t.evidence["curve"].split()[0].split("@")[1])
        assert first_clock >= 1.0
    assert not list(outside.iterdir())
