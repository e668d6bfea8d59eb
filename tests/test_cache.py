"""Exact reuse: a trial is reused only by the campaign that ran it.

Prefect's cache records and results live in the campaign's folder, so a second campaign
with the same trials (same candidates, seeds and setup, hence the same keys) runs every
one of them itself, and nothing lands in PREFECT_HOME. A resume reuses everything and is
refused when a setting that fixes what results mean has changed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from types import SimpleNamespace

import pytest
import yaml
from helpers import noop_solution, prefect_api_url, prefect_test_server, write_params

from autolab.archive import Archive
from autolab.proposers.base import Draft
from autolab.records import Decision, EditStep, FileEdit, Trial

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_api(request):
    prefect_test_server(request)


class Behind:
    """Each proposal is a solution 0.1 worse than its parent: rejected at the first look.
    Two campaigns with the same random_seed get the same proposals, hence the same trials."""

    name = "behind"
    operators = frozenset({"tune", "improve", "crossover"})
    free_form = False

    def propose(self, request) -> Draft:
        from autolab.proposers.knobs import read_knobs
        from benchmarks.noop.benchmark import KNOBS

        value = read_knobs(request.parents[0].files, KNOBS)["VALUE"]
        text = noop_solution(value + 0.1, extra=f"# proposal {request.rng_seed}\n")
        return Draft(operator="improve", rationale="worse", steps=[EditStep(name="behind")],
                     edits=[FileEdit(path="solution.py", replace=text)])  # fmt: skip


class Counter:
    """Counts trials run in the sandbox (not taken from an archive or a cache)."""

    def __init__(self, real):
        self.real, self.ran, self.lock = real, [], threading.Lock()

    def __call__(self, bench, candidate_id, files, seed, split, setup, **kw):
        with self.lock:
            self.ran.append((candidate_id, seed, split))
        return self.real(bench, candidate_id, files, seed, split, setup, **kw)

    def take(self) -> list:
        with self.lock:
            out, self.ran = self.ran, []
        return out


def named(name: str, **more) -> dict:
    return {"campaign": {"name": name, **more}}


@pytest.fixture(scope="module")
def reuse(prefect_api, tmp_path_factory) -> SimpleNamespace:
    from prefect.settings import PREFECT_HOME, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    import autolab.runner
    from flows.campaign import campaign

    tmp = tmp_path_factory.mktemp("reuse")
    params = write_params(tmp, max_proposals=1, evaluation={"parallel_trials": 2},
                          tracking={"mlflow": False})
    ns = SimpleNamespace(tmp=tmp, params=params, home=tmp / "prefect-home")
    with pytest.MonkeyPatch.context() as mp, temporary_settings({PREFECT_HOME: ns.home}):
        ns.storage = PREFECT_LOCAL_STORAGE_PATH.value()
        counter = Counter(autolab.runner.run_trial)
        mp.setattr("autolab.runner.run_trial", counter)  # what the engine's slots call
        mp.setattr("autolab.lab.make_proposer", lambda _p: Behind())
        campaign(params_path=str(params), overrides=named("first"), confirm=False)
        ns.ran_first = counter.take()
        ns.trials_first = {t.id for t in archive(ns, "first").all(Trial)}
        campaign(params_path=str(params), overrides=named("second"), confirm=False)
        ns.ran_second = counter.take()
        with pytest.raises(Exception) as refused:
            campaign(params_path=str(params), confirm=False,
                     overrides=named("first") | {"evaluation": {"alpha": 0.05}})
        ns.refused, ns.ran_refused = refused.value, counter.take()
        ns.resumed = campaign(params_path=str(params), overrides=named("first", max_proposals=2),
                              confirm=False)
        ns.ran_resumed = counter.take()
        ns.stored = sorted(ns.storage.rglob("*")) if ns.storage.exists() else []
    return ns


def archive(ns, name: str) -> Archive:
    return Archive(ns.tmp / "runs" / name / "archive")


def test_a_second_campaign_runs_every_trial_itself(reuse):
    first, second = archive(reuse, "first"), archive(reuse, "second")
    ids_first = reuse.trials_first
    assert ids_first == {t.id for t in second.all(Trial)}  # the same keys in both ...
    assert len(reuse.ran_first) == len(ids_first) == 4 + 3  # seed's 4 seeds, 3 for the candidate
    assert sorted(reuse.ran_second) == sorted(reuse.ran_first)  # ... and neither reused any
    started_first = {t.id: t.started_at for t in first.all(Trial) if t.id in ids_first}
    assert all(t.started_at > max(started_first.values()) for t in second.all(Trial))


def test_prefect_keeps_its_cache_in_the_campaign_folder(reuse):
    assert reuse.stored == []  # nothing in PREFECT_HOME/storage: two campaigns, a refusal, a resume
    for name in ("first", "second"):
        folder = reuse.tmp / "runs" / name / "prefect"
        keys = [p for p in (folder / "keys").rglob("*") if p.is_file()]
        assert len(keys) >= len(archive(reuse, name).all(Trial))
        assert any(p.is_file() for p in (folder / "results").rglob("*"))


def test_a_resume_with_another_alpha_is_refused(reuse):
    from tasks.prepare import CampaignRefused

    assert isinstance(reuse.refused, CampaignRefused)
    assert "evaluation.alpha: 0.01 -> 0.05" in str(reuse.refused)
    assert reuse.ran_refused == []
    assert archive(reuse, "first").campaign().fixed["evaluation.alpha"] == 0.01


def test_a_resume_with_more_proposals_is_allowed_and_reuses_everything(reuse):
    a = archive(reuse, "first")
    assert len(a.all(Decision)) == 2 and reuse.resumed["stop_reason"].endswith("=2")
    new = a.all(Decision)[-1].candidate_id
    assert reuse.ran_resumed and all(c == new for c, _, _ in reuse.ran_resumed)
    assert len(reuse.ran_resumed) == 3  # the new candidate's first look; its parent is reused


def cli(*args: str, tmp) -> subprocess.CompletedProcess:
    env = dict(os.environ, PREFECT_API_URL=prefect_api_url(), PREFECT_HOME=str(tmp / "home"),
               PREFECT_LOGGING_LEVEL="WARNING", COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "autolab.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_refuses_a_changed_resume_in_one_line(reuse, tmp_path):
    data = yaml.safe_load(reuse.params.read_text())
    data["campaign"]["name"] = "first"
    data["budget"] = {"wall_clock_s": 12.5}
    changed = tmp_path / "params.yaml"
    changed.write_text(yaml.safe_dump(data))
    before = {t.id for t in archive(reuse, "first").all(Trial)}
    res = cli("run", "--params", str(changed), tmp=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = [line for line in res.stdout.splitlines() if line.startswith("refused")]
    assert len(lines) == 1 and "resuming would mix" in lines[0]
    assert "budget.wall_clock_s: None -> 12.5" in res.stdout
    assert "Traceback" not in res.stdout  # Prefect's own error log goes to stderr
    assert {t.id for t in archive(reuse, "first").all(Trial)} == before
