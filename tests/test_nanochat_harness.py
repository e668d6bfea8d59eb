"""The nanochat harness end to end on the CPU preset (sandbox, trusted server, scorer,
probe), and its trusted companions on their own.

What a candidate must not be able to do, each shown by a trial that tries: train past
its budget, read the val or test halves while training, change its own score by patching
functions in its process, or be shown the test half outside a test trial.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from autolab.records import content_key
from autolab.runner import run_trial, trial_setup
from autolab.sandbox import isolation_mode
from benchmarks import get_benchmark
from benchmarks.nanochat import channel
from benchmarks.nanochat import prepare as prep
from benchmarks.nanochat.server import LogitsServer, TrainServer
from benchmarks.protocol import StepLink

REDTEAM = Path(__file__).resolve().parent / "redteam" / "nanochat"


@pytest.fixture(scope="module")
def bench():
    return get_benchmark("nanochat-cpu")


@pytest.fixture(scope="module")
def prepared(bench, tmp_path_factory):
    folder = tmp_path_factory.mktemp("nanochat") / "data"
    bench.prepare(None, folder)
    return folder


def _trial(bench, prepared, tmp_path, files, seed=1000, split="val", **kw):
    setup = trial_setup(bench, prepared, bench.budget.model_copy(update={"amount": 7}),
                        threads=1, isolation=isolation_mode("auto"))
    cid = content_key("files", files)[:16]
    return run_trial(bench, cid, files, seed, split, setup, work_root=tmp_path / "trials",
                     prepared_dir=prepared, **kw)


def _with(bench, snippet_file: str) -> dict[str, str]:
    files = bench.seed_files("strong")
    body = "\n".join(line for line in (REDTEAM / snippet_file).read_text().splitlines()
                     if not line.startswith("#"))
    return {"train.py": files["train.py"] + "\n\n" + body + "\n"}


@pytest.mark.parametrize("variant", ["strong", "weak"])
def test_each_seed_trains_and_is_scored_by_the_trusted_side(bench, prepared, tmp_path,
                                                            variant):
    trial = _trial(bench, prepared, tmp_path, bench.seed_files(variant))
    assert trial.status == "ok", trial.log_tail[-2000:]
    bpb = trial.metrics["bpb"]
    assert math.isfinite(bpb) and 0.5 < bpb < 9 / 2.3, bpb  # below the 9-bit uniform floor
    ev = trial.evidence
    assert ev["train_tokens"] > 0 and ev["tokens_per_s"] > 0 and ev["eval_windows"] == 48
    assert 3 < trial.budget_used <= 8  # batches for 7 - 4 s, then saving, within the budget
    assert all(c.passed for c in trial.checks), trial.checks
    # where the start-up went, in the step (the seeds warm up on one step before the clock)
    parts = [ev[f"harness_startup_{k}_s"] for k in ("device", "import", "build", "warmup")]
    assert all(x >= 0 for x in parts) and ev["harness_startup_warmup_s"] > 0
    assert sum(parts) == pytest.approx(ev["harness_startup_in_step_s"], abs=0.01)
    assert ev["harness_startup_in_step_s"] <= ev["startup_s"]  # the server's: from launch
    # the eval and probe steps' compute, as the trusted side clocked it, within allowance
    p = bench.preset
    assert 0 < ev["eval_compute_s"] <= p.eval_load_s + p.eval_row_s * ev["eval_windows"]
    assert 0 < ev["probe_compute_s"] <= p.eval_load_s + p.eval_row_s * ev["eval_windows"]


def test_training_past_the_budget_is_stopped_and_fails(bench, prepared, tmp_path):
    trial = _trial(bench, prepared, tmp_path, _with(bench, "01_train_after_done.py"))
    assert trial.status == "failed" and trial.failure == "budget", trial.reason
    assert "after its 7 s training budget" in trial.reason
    # the step's log says why it ended, not how its processes died (SIGKILL: "oom")
    assert "== train: budget: halted by the harness: still running" in trial.log_tail
    assert "oom" not in trial.log_tail


def test_the_val_and_test_halves_cannot_be_read_while_training(bench, prepared, tmp_path):
    for split in ("val", "test"):
        snippet = (f"_seed_train = train\n\n\ndef train(ctx):\n"
                   f"    with open({str(prepared / f'{split}.bin')!r}, 'rb') as f:\n"
                   f"        ctx.stolen = f.read(64)\n"
                   f"    return _seed_train(ctx)\n")
        files = {"train.py": bench.seed_files("strong")["train.py"] + "\n\n" + snippet}
        trial = _trial(bench, prepared, tmp_path, files)
        assert trial.status == "failed" and trial.failure in ("integrity", "crash"), (
            trial.reason)
        assert f"{split}.bin" in trial.reason or "No such file" in trial.reason, trial.reason


def test_patching_the_loss_in_its_own_process_does_not_change_the_score(bench, prepared,
                                                                        tmp_path):
    """log_softmax and cross_entropy return zeros in the candidate's processes: a loss
    computed there would be 0 bits; the trusted side computes the real one."""
    trial = _trial(bench, prepared, tmp_path, _with(bench, "06_patch_loss.py"))
    assert trial.status == "ok", trial.log_tail[-2000:]
    assert trial.metrics["bpb"] > 1.0


def test_a_val_trial_is_never_shown_the_test_half(bench, prepared, tmp_path, monkeypatch):
    seen: list[str] = []
    real = prep.load_split

    def spy(folder, split):
        seen.append(split)
        return real(folder, split)

    monkeypatch.setattr(prep, "load_split", spy)
    trial = _trial(bench, prepared, tmp_path, bench.seed_files("strong"), keep_outputs=True)
    assert trial.status == "ok", trial.log_tail[-2000:]
    assert "test" not in seen and {"train", "val"} <= set(seen)
    staged = np.fromfile(tmp_path / "trials" / trial.id / "in" / "eval" / "x.bin",
                         dtype=np.uint16)
    val = np.asarray(real(prepared, "val"))
    assert np.array_equal(staged[:64], val[:64])  # the val half's first window, not test's


# -- the companions on their own ------------------------------------------------------------


def _link() -> tuple[StepLink, socket.socket, list]:
    ours, theirs = socket.socketpair()
    killed: list = []
    link = StepLink(ours, kill=lambda: killed.append(time.monotonic()))
    link.started = time.monotonic()
    return link, theirs, killed


def test_the_train_server_refuses_batches_after_the_budget_and_halts_a_late_step():
    tokens = np.arange(1000, dtype=np.uint16)
    record: dict = {}
    server = TrainServer(tokens=tokens, offset=10, budget_s=0.6, startup_s=5, reserve_s=0.1,
                         record=record)
    link, step, killed = _link()
    thread = threading.Thread(target=server, args=(link,))
    thread.start()
    channel.send(step, channel.BATCH, channel.REQUEST.pack(2, 4))
    tag, size = channel.recv_header(step)
    got = channel.recv_tokens(step, size)
    assert tag == channel.DATA and list(got) == list(range(10, 19))  # 2 x 4 + 1 tokens
    time.sleep(0.6)
    channel.send(step, channel.BATCH, channel.REQUEST.pack(2, 4))
    assert channel.recv_header(step)[0] == channel.DONE
    time.sleep(1.5)  # the step keeps running past the budget (and the halting slack)
    assert link.halted is not None and link.halted[0] == "budget" and killed
    link.ended = time.monotonic()
    link.finished.set()
    thread.join(5)
    assert record["train_tokens"] == 8 and record["train_batches"] == 1


def test_the_train_server_halts_a_step_that_never_asks_for_data():
    server = TrainServer(tokens=np.zeros(100, np.uint16), offset=0, budget_s=1, startup_s=0.3,
                         reserve_s=0.5, record={})
    link, step, killed = _link()
    thread = threading.Thread(target=server, args=(link,))
    thread.start()
    time.sleep(0.8)
    assert link.halted is not None and link.halted[0] == "timeout" and killed
    link.finished.set()
    thread.join(5)


def _send_logits(step, row0, logits):
    n, t, _ = logits.shape
    channel.send(step, channel.LOGITS, channel.ROWS.pack(row0, n, t),
                 memoryview(np.ascontiguousarray(logits, dtype=np.float16)))


@pytest.mark.parametrize("sizes", [(2, 3), (1, 1, 3), (3, 1, 1)])
def test_the_logits_server_computes_bits_per_byte_itself(sizes):
    rng = np.random.default_rng(0)
    rows, t, v = 5, 6, 11
    targets = rng.integers(0, v, size=(rows, t))
    token_bytes = rng.integers(0, 4, size=v)
    logits = rng.normal(size=(rows, t, v)).astype(np.float16)
    record: dict = {}
    server = LogitsServer(targets=targets, token_bytes=token_bytes, vocab_size=v,
                          record=record, keep=frozenset({0, 1, 3, 4}))
    link, step, _ = _link()
    thread = threading.Thread(target=server, args=(link,))
    thread.start()
    channel.send(step, channel.READY)
    # (1, 1, 3): a receive buffer grown; (3, 1, 1): a kept row's buffer reused, and sliced
    row0 = 0
    for n in sizes:
        _send_logits(step, row0, logits[row0 : row0 + n])
        row0 += n
    channel.send(step, channel.END)
    step.close()
    link.finished.set()
    thread.join(5)
    z = logits.astype(np.float64)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    picked = np.take_along_axis(logp, targets[..., None], -1)[..., 0]
    weight = token_bytes[targets]
    want = -(picked * (weight > 0)).sum() / math.log(2) / weight.sum()
    assert record["rows_received"] == rows and link.halted is None
    assert record["bpb"] == pytest.approx(want, rel=1e-4)
    for r in (0, 1, 3, 4):
        assert np.array_equal(server.kept[r], logits[r]), r


def test_the_harness_copies_logits_into_its_host_buffer_or_a_new_array():
    from benchmarks.nanochat.harness import _to_host

    buf = torch.zeros((2, 3, 4), dtype=torch.float16)
    y = torch.randn(2, 3, 4, dtype=torch.bfloat16)
    out = _to_host(y, buf)
    assert np.shares_memory(out, buf.numpy())
    assert np.array_equal(out, y.to(torch.float16).numpy())
    odd = torch.randn(2, 3, 5)  # another vocabulary: sent as it is, for the server to refuse
    out = _to_host(odd, buf)
    assert out.shape == (2, 3, 5) and not np.shares_memory(out, buf.numpy())
    assert np.array_equal(out, odd.to(torch.float16).numpy())


@pytest.mark.parametrize("case", ["out_of_order", "wrong_length", "nan", "bad_tag", "no_ready",
                                  "stalled_message"])
def test_the_logits_server_refuses_what_breaks_the_protocol(case, monkeypatch):
    monkeypatch.setattr("benchmarks.nanochat.server.READ_TIMEOUT_S", 0.5)
    targets = np.zeros((4, 3), dtype=np.int64)
    server = LogitsServer(targets=targets, token_bytes=np.ones(5, np.int64), vocab_size=5,
                          record={})
    link, step, killed = _link()
    thread = threading.Thread(target=server, args=(link,))
    thread.start()
    good = np.zeros((2, 3, 5), dtype=np.float16)
    if case != "no_ready":
        channel.send(step, channel.READY)
    if case == "no_ready":
        _send_logits(step, 0, good)
    elif case == "stalled_message":
        step.sendall(channel.HEADER.pack(channel.LOGITS, 999)[:5])  # half a header, then nothing
    elif case == "out_of_order":
        _send_logits(step, 2, good)
    elif case == "wrong_length":
        _send_logits(step, 0, np.zeros((2, 2, 5), dtype=np.float16))
    elif case == "nan":
        _send_logits(step, 0, np.full((2, 3, 5), np.nan, dtype=np.float16))
    else:
        channel.send(step, b"XXXX", b"1234")
    deadline = time.monotonic() + 10
    while link.halted is None and time.monotonic() < deadline:
        time.sleep(0.05)
    link.finished.set()  # the runner sets this once the halted step is gone
    thread.join(5)
    expected = "nan" if case == "nan" else "output"
    assert link.halted is not None and link.halted[0] == expected and killed
    step.close()


def test_the_logits_server_bounds_the_compute_after_ready():
    """Eval steps may load the model and run forward passes, not train on the side: past
    their allowance of compute (time after READY, less the logits' transfer) they stop."""
    server = LogitsServer(targets=np.zeros((4, 3), dtype=np.int64),
                          token_bytes=np.ones(5, np.int64), vocab_size=5, record={},
                          compute_s=0.3)
    link, step, killed = _link()
    thread = threading.Thread(target=server, args=(link,))
    thread.start()
    channel.send(step, channel.READY)
    time.sleep(0.8)  # "training" before the first rows
    link.finished.set()
    thread.join(5)
    assert link.halted is not None and link.halted[0] == "budget" and killed
    assert "computed for" in link.halted[1]
    step.close()


@pytest.mark.parametrize("floor", [0.0, 1e6])
def test_logits_trickled_in_hold_the_compute_clock_only_as_long_as_they_take(floor):
    """A step that sends its logits a byte at a time (computing meanwhile) would have the
    whole wait counted as transfer; with a floor on the transfer rate, the time beyond
    what the bytes take at that rate is compute, and past the allowance the step stops."""
    rows, t, v = 2, 3, 5
    server = LogitsServer(targets=np.zeros((rows, t), dtype=np.int64),
                          token_bytes=np.ones(v, np.int64), vocab_size=v, record={},
                          compute_s=0.5, transfer_floor_bps=floor)
    link, step, killed = _link()
    thread = threading.Thread(target=server, args=(link,))
    thread.start()
    channel.send(step, channel.READY)
    payload = channel.ROWS.pack(0, rows, t) + np.zeros((rows, t, v), np.float16).tobytes()
    step.sendall(channel.HEADER.pack(channel.LOGITS, len(payload)) + payload[:-1])
    time.sleep(1.2)  # "training" while the trusted side waits for the last byte
    try:
        step.sendall(payload[-1:])
        channel.send(step, channel.END)
    except OSError:
        pass
    thread.join(5)
    link.finished.set()
    if floor:
        assert link.halted is not None and link.halted[0] == "budget" and killed
    else:  # without a floor the stall passes for transfer: the hole the floor closes
        assert link.halted is None and server.record["rows_received"] == rows
        assert server.record["transfer_s"] > 1.0
    step.close()


def test_harness_logs_the_candidate_wrote_cannot_break_scoring(tmp_path):
    """The train and eval logs are evidence written by the candidate's process: oversized
    numbers, deep nesting or other types are dropped, never raised into the runner."""
    from benchmarks.nanochat.score import _read_log
    from benchmarks.protocol import Budget, TrialContext

    ctx = TrialContext(workspace=tmp_path, inputs_dir=tmp_path / "in",
                       outputs_dir=tmp_path / "out", prepared_dir=tmp_path, seed=0,
                       split="val", budget=Budget(unit="s", amount=1, wall_clock_s=1,
                                                  memory_mb=1), python="python3")
    folder = ctx.outputs("train")
    folder.mkdir(parents=True)
    cases = {
        '{"tokens": 1' + "0" * 400 + ', "steps": 3, "gpu": "H100"}': {"steps": 3, "gpu": "H100"},
        "[" * 30_000 + "]" * 30_000: {},  # deeper than the JSON parser recurses
        '{"a": [1, 2], "b": NaN, "c": "x"}': {"c": "x"},
        "not json": {},
    }
    for text, want in cases.items():
        (folder / "log.json").write_text(text)
        assert _read_log(ctx, "train", "log.json") == want
