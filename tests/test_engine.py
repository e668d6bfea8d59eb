"""The engine: slots as Dask workers, the campaign's iterations in flight at once, the
duty cycle of each slot."""

from __future__ import annotations

import math
import threading

import pytest
from helpers import prefect_test_server, write_params

from autolab.archive import Archive
from autolab.engine import Activity, Engine, Slot, TrialJob, local_slots, more_iterations
from autolab.records import Decision, Evaluation, Proposal, Trial
from autolab.runner import trial_setup
from autolab.usage import runs_usage
from benchmarks import get_benchmark


@pytest.fixture(scope="module")
def prefect_api(request):
    prefect_test_server(request)


def test_slots_of_a_host():
    assert [s.name for s in local_slots("cpu", None, 1, 3)] == ["cpu0", "cpu1", "cpu2"]
    gpus = local_slots("gpu", None, 2, 1, gpus=[0, 1, 2, 3, 4])  # groups of 2 of 5 GPUs
    assert [(s.name, s.gpu) for s in gpus] == [("gpu0", 0), ("gpu2", 2)]
    assert len(local_slots("gpu", 1, 1, 1, gpus=list(range(8)))) == 1
    with pytest.raises(ValueError, match="needs 4 GPUs"):
        local_slots("gpu", 2, 2, 1, gpus=[0, 1, 2])
    # CUDA_VISIBLE_DEVICES=4,5: the slots are GPUs 4 and 5, not 0 and 1
    assert [s.gpu for s in local_slots("gpu", None, 1, 1, gpus=[4, 5])] == [4, 5]


def test_a_multi_gpu_benchmark_s_slot_is_a_group_of_gpus():
    bench = get_benchmark("speedrun")
    per = bench.gpus_per_trial
    assert per == bench.preset.nproc
    slots = local_slots("gpu", None, per, 1, gpus=list(range(2 * per)))
    assert [s.gpu for s in slots] == [0, per]
    assert get_benchmark("speedrun-cpu").gpus_per_trial == 1


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    from autolab.engine import visible_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    assert visible_gpus() == [4, 5]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1234abcd")
    with pytest.raises(ValueError, match="indices, not UUIDs"):
        visible_gpus()


def test_a_step_names_its_gpus_by_uuid_and_binds_their_own_nodes(tmp_path, monkeypatch):
    # inside a sandbox that binds only /dev/nvidia3, CUDA may number that GPU 0: the
    # step's CUDA_VISIBLE_DEVICES names it by UUID, and its node is found by minor number
    from benchmarks import protocol

    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho '0, GPU-aaaa'\necho '1, GPU-bbbb'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    protocol._GPU_TABLE.clear()
    try:
        table = protocol.gpu_identities()
        assert {i: uuid for i, (uuid, _) in table.items()} == {0: "GPU-aaaa", 1: "GPU-bbbb"}
        assert protocol.cuda_visible([1]) == "GPU-bbbb"
        assert protocol.cuda_visible([0, 1]) == "GPU-aaaa,GPU-bbbb"
        assert protocol.cuda_visible([5]) == "5"  # not listed: left as the index
        smi.write_text("#!/bin/sh\nexit 9\n")  # read once: not asked again
        assert protocol.gpu_identities()[1][0] == "GPU-bbbb"
        protocol._GPU_TABLE.clear()  # a failed read is not kept: the next one tries again
        assert protocol.gpu_identities() == {}
        smi.write_text("#!/bin/sh\necho '0, GPU-cccc'\n")
        assert protocol.gpu_identities() == {0: ("GPU-cccc", 0)}
        monkeypatch.setattr(protocol, "gpu_identities", lambda: {1: ("GPU-bbbb", 3)})
        monkeypatch.setattr(protocol.os.path, "exists", lambda p: True)
        assert protocol.gpu_device_nodes(1)[0] == "/dev/nvidia3"
        assert "/dev/nvidia1" not in protocol.gpu_device_nodes(1)
    finally:
        protocol._GPU_TABLE.clear()


def test_more_iterations_fills_the_slots_then_keeps_ahead():
    # nothing running: always start one
    assert more_iterations(2, 0, 0, 0, 0, per_iteration=4, ahead=0)
    # one look of 4 trials covers 2 slots: ahead=0 means one at a time
    assert not more_iterations(2, 2, 2, 0, 1, per_iteration=4, ahead=0)
    assert not more_iterations(2, 0, 0, 1, 1, per_iteration=4, ahead=0)
    # ahead=1: one more proposal is made while the first one's trials run
    assert more_iterations(2, 2, 2, 0, 1, per_iteration=4, ahead=1)
    assert not more_iterations(2, 2, 2, 1, 2, per_iteration=4, ahead=1)
    # 16 free slots: proposals are started until their trials would cover them
    assert more_iterations(16, 0, 0, 3, 3, per_iteration=4, ahead=1)
    assert not more_iterations(16, 0, 0, 5, 5, per_iteration=4, ahead=1)
    # never more than slots + ahead at once, or the cap
    assert not more_iterations(4, 0, 0, 0, 5, per_iteration=1, ahead=1)
    assert not more_iterations(16, 0, 0, 0, 1, per_iteration=4, ahead=1, cap=1)


def test_the_queue_kept_ahead_covers_the_trials_that_end_during_a_proposal():
    now = [1000.0]
    a = Activity(clock=lambda: now[0])
    assert a.ending_soon() == 0  # nothing seen yet
    a.starting(0)
    now[0] += 3.0
    a.proposed(0)  # 3 s from an iteration's start to its candidate
    a.asked(20)
    for _ in range(20):  # a trial back every 0.5 s: 2 per second
        now[0] += 0.5
        a.asked(-1)
    assert a.ending_soon() == 6  # 2 trials/s x 3 s
    for i in (1, 2):  # slower proposals: the median latency moves
        a.starting(i)
        now[0] += 9.0
        a.proposed(i)
    assert a.ending_soon() == math.ceil(20 / (10 + 18) * 9)
    now[0] += Activity.RATE_WINDOW_S + 1  # the window has passed: no rate to go by
    assert a.ending_soon() == 0


def test_idle_reasons_name_what_the_orchestrator_waits_for():
    a = Activity()
    assert a.idle_reason(0) == "orchestrator"
    a.starting(3)
    assert a.idle_reason(0) == "proposal" and a.idle_reason(2) == "engine"
    a.proposed(3)
    with a.phase("decision"):
        assert a.idle_reason(0) == "decision"
    a.stage = "stopping"
    assert a.idle_reason(0) == "stopping"


def _listening() -> set[tuple[str, int]]:
    import psutil

    return {(c.laddr.ip, c.laddr.port) for c in psutil.Process().net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN}


def _job(tmp_path, bench, seed: int, text: str = "") -> TrialJob:
    files = {**bench.seed_files(), "solution.py": bench.seed_files()["solution.py"] + text}
    prepared = tmp_path / "prepared"
    bench.prepare(None, prepared)
    setup = trial_setup(bench, prepared, bench.budget.model_copy(update={"amount": 300}), 1,
                        "none")
    return TrialJob(benchmark=bench.name, candidate_id=f"c{len(text)}", files=files, seed=seed,
                    split="val", setup=setup.model_dump(mode="json"),
                    work_root=str(tmp_path / "trials"), prepared_dir=str(prepared))


def test_trials_spread_over_the_slots_and_the_same_trial_runs_once(tmp_path):
    """Four trials of 0.3 s on two slots, from four threads: both slots used, each slot one
    trial at a time; the same trial asked for twice at once is run once."""
    bench = get_benchmark("noop-sleep")
    before = _listening()
    engine = Engine([Slot("cpu0", None), Slot("cpu1", None)], interval_s=0.05)
    try:
        opened = _listening() - before  # the local cluster serves nothing to the network
        assert all(ip == "127.0.0.1" for ip, _ in opened), opened
        jobs = [_job(tmp_path, bench, seed) for seed in (1, 2, 3)]
        jobs.append(jobs[0])  # the same trial again
        out: list[Trial] = [None] * len(jobs)  # type: ignore[list-item]

        def run(i: int) -> None:
            out[i] = engine.run(jobs[i])

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert all(t.status == "ok" for t in out), [t.reason for t in out]
        assert {t.slot for t in out} == {"cpu0", "cpu1"}
        assert out[0].id == out[3].id
        by_slot: dict[str, list[Trial]] = {}
        for t in {t.id: t for t in out}.values():
            by_slot.setdefault(t.slot, []).append(t)
        for trials in by_slot.values():  # a slot never runs two trials at once
            trials.sort(key=lambda t: t.started_at)
            for a, b in zip(trials, trials[1:], strict=False):
                assert a.finished_at <= b.started_at
        usage = engine.usage()
    finally:
        engine.close()
    assert usage.trials == 3  # the repeated trial was not run again
    assert [s.slot for s in usage.slots] == ["cpu0", "cpu1"]
    assert all(s.busy_s > 0.2 for s in usage.slots)
    assert 0 < usage.duty_cycle() <= 1


def test_a_trial_asked_for_while_it_is_being_recorded_is_not_run_again(tmp_path):
    """The request that placed a trial records it before the engine forgets it was
    running: a request arriving meanwhile shares that run, and one arriving after finds
    the record; neither places the trial again."""
    import time

    bench = get_benchmark("noop-sleep")
    job = _job(tmp_path, bench, 7)
    recorded: dict[str, Trial] = {}
    recording = threading.Event()

    def slow_keep(trial: Trial) -> None:  # a busy archive
        recording.set()
        time.sleep(1.0)
        recorded[trial.id] = trial

    def lookup() -> Trial | None:
        return recorded.get(job.trial_id)

    engine = Engine([Slot("cpu0", None), Slot("cpu1", None)], interval_s=0.05)
    try:
        out: list[Trial] = []
        first = threading.Thread(target=lambda: out.append(engine.run(job, lookup, slow_keep)))
        first.start()
        assert recording.wait(timeout=120)
        during = engine.run(job, lookup, slow_keep)  # while the first records it
        first.join(timeout=120)
        after = engine.run(job, lookup, slow_keep)
        usage = engine.usage()
    finally:
        engine.close()
    assert out[0].status == "ok", out[0].reason
    assert during.id == after.id == out[0].id
    assert during.started_at == after.started_at == out[0].started_at  # one run
    assert usage.trials == 1


def test_a_trial_its_placer_could_not_record_is_an_error_for_those_sharing_it(tmp_path):
    """A run that could not be recorded (the archive locked, say) must not reach an
    iteration that shared it as if it had been: both requests fail, and the next
    request runs the trial again."""
    import time

    bench = get_benchmark("noop-sleep")
    job = _job(tmp_path, bench, 8)
    sharing = threading.Event()

    def failing_keep(trial: Trial) -> None:
        assert sharing.wait(timeout=120)
        time.sleep(0.5)  # the sharer is waiting on the record by now
        raise OSError("database is locked")

    engine = Engine([Slot("cpu0", None), Slot("cpu1", None)], interval_s=0.05)
    errors: list[BaseException] = []

    def ask(keep) -> None:
        try:
            engine.run(job, lambda: None, keep)
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    try:
        first = threading.Thread(target=ask, args=(failing_keep,))
        first.start()
        while job.trial_id not in engine._running:
            time.sleep(0.01)
        second = threading.Thread(target=ask, args=(lambda t: None,))
        second.start()
        sharing.set()
        first.join(timeout=120)
        second.join(timeout=120)
        again = engine.run(job, lambda: None, lambda t: None)
        usage = engine.usage()
    finally:
        engine.close()
    assert sorted(type(e).__name__ for e in errors) == ["OSError", "RuntimeError"]
    assert "could not be recorded" in str(next(e for e in errors if isinstance(e, RuntimeError)))
    assert again.status == "ok" and usage.trials == 2  # placed afresh


def test_a_trial_killed_at_its_time_limit_frees_its_slot(tmp_path):
    """One slot: a trial that outlives its wall clock is killed and recorded as a timeout,
    and the next trial runs on the same slot."""
    bench = get_benchmark("noop-sleep")
    hung = _job(tmp_path, bench, 1)
    hung.setup = {**hung.setup, "budget": {**hung.setup["budget"], "amount": 30_000,
                                           "wall_clock_s": 2.0}}
    engine = Engine([Slot("cpu0", None)], interval_s=0.05)
    try:
        first = engine.run(hung)
        second = engine.run(_job(tmp_path, bench, 2))
    finally:
        engine.close()
    assert first.status == "failed" and first.failure == "timeout", first.reason
    assert first.wall_s < 20
    assert second.status == "ok" and second.slot == first.slot == "cpu0"


@pytest.mark.slow
def test_a_campaign_keeps_iterations_in_flight_and_decides_soundly(tmp_path, prefect_api):
    """noop-sleep on 8 slots with 2 iterations in flight: the seed's baseline is asked for
    at once (its 4 trials beside the iterations' 2 × 2 fill the slots), the iterations
    overlap, every index is decided once, no trial runs twice, each new champion beat the
    champion of its moment, and the run's duty cycle is recorded."""
    from flows.campaign import campaign

    params = write_params(tmp_path, benchmark="noop-sleep", max_proposals=8,
                          evaluation={"min_seeds": 2, "max_seeds": 4, "test_seeds": 2,
                                      "parallel_trials": 2},
                          engine={"slots": 8, "ahead": 2, "max_in_flight": 2},
                          budget={"amount": 1000},
                          proposer={"kind": "offline", "offline_delay_s": 0.3},
                          sandbox={"isolation": "none", "allow_unisolated": True},
                          tracking={"mlflow": False})
    campaign(params_path=str(params))
    archive = Archive(tmp_path / "runs" / "test-noop-sleep" / "archive")
    decisions = archive.all(Decision)
    proposals = {p.id: p for p in archive.all(Proposal)}
    assert len(decisions) == 8 and len({d.proposal_id for d in decisions}) == 8
    assert set(proposals) == {d.proposal_id for d in decisions}
    trials = archive.all(Trial)
    assert len({t.id for t in trials}) == len(trials)
    assert all(t.slot.startswith("cpu") for t in trials)

    # the seed's baseline was asked for at once (not parallel_trials at a time): more of
    # its trials ran together than parallel_trials allows. The iterations in flight beside
    # it hold at most 2 × parallel_trials slots, so the baseline never waits for a slot.
    seed = archive.campaign().seed_candidate
    base = [t for t in trials if t.candidate_id == seed and t.split == "val"]
    assert len(base) == 4
    together = max(sum(1 for u in base if u.started_at <= t.started_at < u.finished_at)
                   for t in base)
    assert together > 2, [(t.started_at, t.finished_at) for t in base]

    # iterations overlapped: some candidate's trials ran while another's did
    spans = {}
    for t in trials:
        if t.candidate_id != seed and t.split == "val":
            a, b = spans.get(t.candidate_id, (t.started_at, t.finished_at))
            spans[t.candidate_id] = (min(a, t.started_at), max(b, t.finished_at))
    ordered = sorted(spans.values())
    assert any(b[0] < a[1] for a, b in zip(ordered, ordered[1:], strict=False))

    # each champion replicated against the champion crowned before it
    crowned = [d for d in decisions if d.champion]
    replications = {e.candidate_id: e for e in archive.all(Evaluation) if e.split == "audit"}
    previous = seed
    for d in sorted(crowned, key=lambda d: archive_order(archive, d)):
        assert replications[d.candidate_id].reference_id == previous
        previous = d.candidate_id

    usage = runs_usage(archive)[-1]
    assert [s.slot for s in usage.slots] == [f"cpu{i}" for i in range(8)]
    assert usage.trials == len(trials)
    assert 0 < usage.duty_cycle() <= 1
    # the research stage's trials: the iterations' (and the baseline's that ended there)
    assert 0 < sum(s.trials for s in usage.research) <= usage.trials


def archive_order(archive: Archive, decision: Decision) -> int:
    """The position of a decision in the order it was recorded."""
    return [d.id for d in archive.all(Decision)].index(decision.id)


@pytest.mark.slow
def test_workers_started_elsewhere_are_the_slots(tmp_path, prefect_api):
    """A Dask scheduler and two workers in their own processes (as on other hosts, with the
    README's command lines): a campaign given engine.address runs its trials on them."""
    import os
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    from flows.campaign import campaign

    dask = str(Path(sys.executable).with_name("dask"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, DASK_DISTRIBUTED__WORKER__DAEMON="False")
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    try:
        for name in ("host-a/cpu0", "host-b/cpu0"):
            procs.append(subprocess.Popen(
                [dask, "worker", address, "--nworkers", "1", "--nthreads", "1",
                 "--resources", "slot=1", "--name", name, "--no-dashboard",
                 "--local-directory", str(tmp_path / name.replace("/", "-"))],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        params = write_params(tmp_path, benchmark="noop-sleep", max_proposals=3,
                              evaluation={"min_seeds": 2, "max_seeds": 2, "test_seeds": 2,
                                          "parallel_trials": 2},
                              engine={"address": address, "max_in_flight": None},
                              budget={"amount": 200},
                              sandbox={"isolation": "none", "allow_unisolated": True},
                              proposer={"kind": "offline"}, tracking={"mlflow": False})
        t0 = time.monotonic()
        campaign(params_path=str(params))
        assert time.monotonic() - t0 < 600
    finally:
        for p in procs[::-1]:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    archive = Archive(tmp_path / "runs" / "test-noop-sleep" / "archive")
    trials = archive.all(Trial)
    assert trials and {t.slot for t in trials} == {"host-a/cpu0", "host-b/cpu0"}
    assert len(archive.all(Decision)) == 3
    usage = runs_usage(archive)[-1]
    assert {s.slot for s in usage.slots} == {"host-a/cpu0", "host-b/cpu0"}


def test_without_an_engine_no_more_trials_run_at_once_than_there_are_slots(tmp_path, prefect_api):
    """A lab run without the engine (its trials in Prefect's own threads) still runs the
    seed's baseline at most `slots` at a time: on a wall-clock budget, trials that share
    the cores with more of their kind than the slots allow train less."""
    from prefect import flow

    from autolab.config import load_params
    from autolab.lab import open_lab
    from tasks.prepare import baseline, prepare_data, register_seed

    params = write_params(tmp_path, benchmark="noop-sleep",
                          evaluation={"min_seeds": 2, "max_seeds": 5, "parallel_trials": 2},
                          budget={"amount": 600},
                          sandbox={"isolation": "none", "allow_unisolated": True},
                          tracking={"mlflow": False})
    lab = open_lab(load_params(params))
    assert lab.engine is None and len(lab.slots) == 2

    @flow(persist_result=False)
    def seed_baseline():
        prepare_data(lab)
        register_seed(lab)
        return baseline(lab)

    trials = seed_baseline()
    assert len(trials) == 5
    spans = [(t.started_at, t.finished_at) for t in trials]
    most = max(sum(1 for s, f in spans if s <= start < f) for start, _ in spans)
    assert most == 2, spans


def _seed_baseline_campaign(tmp_path, max_seeds: int) -> Archive:
    from flows.campaign import campaign

    params = write_params(tmp_path, benchmark="noop-sleep", max_proposals=2,
                          evaluation={"min_seeds": 2, "max_seeds": max_seeds,
                                      "parallel_trials": 1, "test_seeds": 2},
                          engine={"slots": 2, "ahead": 1, "max_in_flight": None},
                          budget={"amount": 3000},
                          proposer={"kind": "offline"},
                          sandbox={"isolation": "none", "allow_unisolated": True},
                          tracking={"mlflow": False})
    campaign(params_path=str(params), confirm=False)
    return Archive(tmp_path / "runs" / "test-noop-sleep" / "archive")


def _compared_on_matched_seeds(archive: Archive, seed: str) -> None:
    """Every look against the seed paired the candidate's trials with the seed's on the
    same seeds (never a fallback to unpaired values)."""
    looks = [e for e in archive.all(Evaluation) if e.split == "val" and e.reference_id == seed]
    assert looks
    for e in looks:
        assert e.test == "paired" and len(e.values) == len(e.reference_values), e


def test_a_slot_the_seed_s_baseline_leaves_free_takes_a_candidate_s_trial(tmp_path, prefect_api):
    """Three baseline trials on two slots: the third would run alone, so an iteration,
    started beside the baseline, has a candidate's trial run next to it; its look takes
    the seed's trials from the finished baseline, on the same seeds, and no trial runs
    twice."""
    archive = _seed_baseline_campaign(tmp_path, max_seeds=3)
    seed = archive.campaign().seed_candidate
    trials = [t for t in archive.all(Trial) if t.split == "val"]
    assert runs_usage(archive)[-1].trials == len(archive.all(Trial))  # none run twice
    base = [t for t in trials if t.candidate_id == seed]
    others = [t for t in trials if t.candidate_id != seed]
    assert len(base) == 3 and others
    assert min(t.started_at for t in others) < max(t.finished_at for t in base), (
        "no candidate's trial ran beside the seed's last baseline trial")
    assert len(archive.all(Decision)) == 2
    _compared_on_matched_seeds(archive, seed)


def test_a_seed_trial_that_fails_once_is_run_again_before_any_look_uses_it(
        tmp_path, prefect_api, monkeypatch):
    """The seed's trial on one seed fails (a machine fault) and ends last: the baseline
    runs it again, and the iterations started beside it wait for that, instead of
    comparing with the failed trial or asking for the seed's trial themselves."""
    import time

    import autolab.engine as engine_module
    from benchmarks.noop.benchmark import NoopSleep

    # trials run in the engine's workers, which get a pickled copy of this function: the
    # runs are counted in a file
    seed_files, real, counter = NoopSleep().seed_files(), engine_module.run_job, tmp_path / "n"

    def machine_fault_once(job):
        trial = real(job)
        if job.split == "val" and job.files == seed_files and job.seed == 1000:
            with counter.open("a") as f:
                f.write("x")
            if counter.read_text() == "x":
                time.sleep(3)
                return trial.model_copy(update={"status": "failed", "failure": "timeout",
                                                "reason": "planted machine fault",
                                                "metrics": {}})
        return trial

    monkeypatch.setattr(engine_module, "run_job", machine_fault_once)
    archive = _seed_baseline_campaign(tmp_path, max_seeds=4)
    seed = archive.campaign().seed_candidate
    runs = counter.read_text()
    assert len(runs) == 2  # the baseline's run and its one re-run, nobody else's
    assert [t.status for t in archive.superseded(Trial)] == ["failed"]
    assert len(archive.all(Decision)) == 2
    _compared_on_matched_seeds(archive, seed)


def test_iterations_starting_together_save_the_trials_storage_once(tmp_path, monkeypatch):
    """The trials' result storage is a block saved on Prefect's server: the iterations of
    a campaign's start ask for it at the same moment, and must wait for one save instead
    of each sending its own (which held every slot idle while the server answered)."""
    import time
    import uuid
    from concurrent.futures import ThreadPoolExecutor
    from types import SimpleNamespace

    import tasks.run as run_module

    saves = []

    def slow_save(self, name, overwrite=False):
        saves.append(name)
        time.sleep(0.2)  # a server that takes its time
        self._block_document_id = uuid.uuid4()  # what a saved block carries

    monkeypatch.setattr(run_module.LocalFileSystem, "save", slow_save)
    monkeypatch.setattr(run_module, "_STORAGE", {})
    lab = SimpleNamespace(root=tmp_path / "campaign")
    with ThreadPoolExecutor(16) as pool:
        tasks = list(pool.map(lambda _: run_module._campaign_task(lab), range(16)))
    assert len(saves) == 1
    assert len({id(t.result_storage) for t in tasks}) == 1
    assert tasks[0].result_storage.basepath == str(tmp_path / "campaign" / "prefect" / "results")
