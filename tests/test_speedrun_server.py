"""The speedrun's trusted server on its own, driven through its channel by a fake launcher
(no processes, no torch on the other side): the clock, the batches, the validations and
the loss it computes, the causality probe, and what halts a step."""

from __future__ import annotations

import dataclasses
import math
import socket
import threading
import time

import numpy as np
import pytest
import torch

from benchmarks.nanochat import channel
from benchmarks.protocol import StepLink
from benchmarks.speedrun import contract as c
from benchmarks.speedrun.server import SpeedrunServer

VOCAB, LEN = 11, 8
PRESET = dataclasses.replace(
    c.PRESETS["cpu"], vocab_size=VOCAB, eot_id=10, val_every=2, val_len=LEN, val_rows=4,
    val_batch=2, n_probe=2, val_allowance_s=0.2, startup_s=5.0, finish_s=0.5,
    val_timeout_s=10.0)
TABLE = np.random.default_rng(1).normal(size=(VOCAB, VOCAB)).astype(np.float16) * 3


class Step:
    """The step's end of the channel, speaking for every process of the step."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.hold = "payload"  # what a trickling validator holds back (validate)

    def send(self, address: int, tag: bytes, *parts: bytes) -> None:
        channel.send(self.sock, tag, c.ADDRESS.pack(address), *parts)

    def recv(self) -> tuple[int, bytes, bytes]:
        tag, size = channel.recv_header(self.sock)
        payload = channel.recv_exact(self.sock, size)
        return payload[0], tag, payload[1:]

    def batch(self, rank: int, b: int = 1, t: int = 4) -> None:
        self.send(rank, c.BATCH, c.REQUEST.pack(b, t))

    def expect(self, address: int, tag: bytes) -> bytes:
        got, what, payload = self.recv()
        assert (got, what) == (address, tag), (got, what)
        return payload

    def validate(self, address: int, model, delay: float = 0.0,
                 trickle: float = 0.0) -> np.ndarray:
        """Answer one validation request with `model`'s logits; returns the rows.
        trickle: hold the first chunk's last byte back this long (computing meanwhile)."""
        payload = self.expect(address, c.VALIDATE)
        _, rows, seq = c.ROWS.unpack(payload[: c.ROWS.size])
        x = np.frombuffer(payload[c.ROWS.size :], dtype=np.uint16).reshape(rows, seq)
        time.sleep(delay)
        for i in range(0, rows, 2):
            logits = np.ascontiguousarray(model(x[i : i + 2]))
            parts = c.ADDRESS.pack(address) + c.ROWS.pack(i, len(logits), seq) + logits.tobytes()
            if trickle and i == 0:  # held back: the last byte, or (held) the rows' header
                cut = len(parts) - 1 if self.hold == "payload" else c.ADDRESS.size
                self.sock.sendall(channel.HEADER.pack(c.LOGITS, len(parts)) + parts[:cut])
                time.sleep(trickle)
                self.sock.sendall(parts[cut:])
            else:
                self.send(address, c.LOGITS, c.ROWS.pack(i, len(logits), seq),
                          logits.tobytes())
        self.send(address, c.END)
        return x

    def pause(self, model, delay: float = 0.0, nproc: int = 2,
              trickle: float = 0.0) -> np.ndarray:
        """A whole validation pause: the stops, the snapshot, main and probe, go on."""
        if nproc > 1:
            self.expect(c.LAUNCHER, c.STOP)
        self.expect(0, c.SNAPSHOT)
        self.send(0, c.SAVED)
        self.expect(c.LAUNCHER, c.STOP)
        rows = self.validate(c.VALIDATOR, model, delay, trickle)
        self.validate(c.PROBE, model)
        self.expect(c.LAUNCHER, c.CONT)
        return rows


def causal(x: np.ndarray) -> np.ndarray:
    """Logits from the current token only."""
    return TABLE[x.astype(np.int64)]


def peeking(x: np.ndarray) -> np.ndarray:
    """Logits that look at the next input token (the target): not causal."""
    nxt = np.concatenate([x[:, 1:], x[:, -1:]], axis=1).astype(np.int64)
    out = TABLE[x.astype(np.int64)].copy()
    np.put_along_axis(out, nxt[..., None], np.float16(20.0), axis=-1)
    return out


def start(budget_s: float = 30.0, nproc: int = 2, **kw):
    rng = np.random.default_rng(0)
    windows = rng.integers(0, VOCAB - 1, size=(PRESET.val_rows, LEN + 1)).astype(np.uint16)
    record: dict = {}
    server = SpeedrunServer(
        tokens=(np.arange(1000) % VOCAB).astype(np.uint16), offset=3, nproc=nproc,
        preset=dataclasses.replace(PRESET, **kw), budget_s=budget_s, windows=windows,
        source=rng.integers(0, VOCAB - 1, size=500).astype(np.uint16),
        rng=np.random.default_rng(7), device=torch.device("cpu"), record=record)
    ours, theirs = socket.socketpair()
    killed: list[float] = []
    link = StepLink(ours, kill=lambda: killed.append(time.monotonic()))
    link.started = time.monotonic()
    thread = threading.Thread(target=server, args=(link,), daemon=True)
    thread.start()
    return Step(theirs), link, record, windows, thread, killed


def end(link: StepLink, thread: threading.Thread) -> None:
    link.ended = time.monotonic()
    link.finished.set()
    thread.join(10)
    assert not thread.is_alive()


def finish(step: Step, link: StepLink, thread: threading.Thread) -> None:
    """Both ranks return from train(): the final validation, then goodbye."""
    step.send(1, c.FINISH)
    step.send(0, c.FINISH)
    step.pause(causal)
    for rank in (0, 1):
        step.expect(rank, c.BYE)
    end(link, thread)


def expected_loss(windows: np.ndarray, model) -> float:
    z = model(windows[:, :-1]).astype(np.float64)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return float(-np.take_along_axis(logp, windows[:, 1:, None].astype(np.int64), -1).mean())


def test_the_clock_runs_from_the_first_batch_and_leaves_out_only_the_validations():
    step, link, record, windows, thread, _ = start()
    step.send(c.VALIDATOR, c.READY)
    step.send(c.PROBE, c.READY)
    time.sleep(0.3)  # start-up before the first batch: not clocked
    for s in range(2):
        for rank in (0, 1):
            step.batch(rank)
            tokens = np.frombuffer(step.expect(rank, c.DATA), dtype=np.uint16)
            first = 3 + s * 8 + rank * 4  # N consecutive windows from the offset, rank r's slice
            assert list(tokens) == [(first + i) % VOCAB for i in range(5)]
        time.sleep(0.25)  # work between steps: clocked
    step.batch(1)  # step 2 is a validation step: it waits for every rank
    step.batch(0)
    rows = step.pause(causal, delay=0.8)  # a slow validator: past the allowance
    assert np.array_equal(rows, windows[:, :-1])  # inputs only: the targets stay here
    for rank in (0, 1):
        assert len(step.expect(rank, c.DATA)) == 10
    time.sleep(0.2)
    finish(step, link, thread)
    first, final = record["validations"]
    assert link.halted is None and record["complete"]
    assert (first["step"], final["step"]) == (2, 3) and final["final"]
    assert 0.5 <= first["clock_s"] < 0.9  # two steps of 0.25 s, not the 0.3 s of start-up
    assert first["pause_s"] > 0.8 and first["excluded_s"] < first["pause_s"] - 0.5
    # what the slow validation took beyond its allowance is on the clock (the record's
    # times are rounded to the millisecond: four of them here, so 2 ms of slack)
    assert final["clock_s"] - first["clock_s"] >= (
        0.2 + (first["pause_s"] - first["excluded_s"]) - 0.002)
    assert first["loss"] == pytest.approx(expected_loss(windows, causal), rel=1e-3)
    assert first["worst"] == 0.0 and first["peek"] == 0.0
    assert record["train_tokens"] == 3 * 2 * 4 and record["steps"] == 3


@pytest.mark.parametrize(("floor", "hold"), [(0.0, "payload"), (1e6, "payload"),
                                             (1e6, "rows")])
def test_a_validator_that_trickles_its_logits_has_the_wait_clocked(floor, hold):
    """Receiving counts as the trusted side's time only as long as the bytes take at the
    floor rate: a validator that holds its logits back (training meanwhile) is clocked
    for the wait. Without a floor (0) the wait would be left out: the hole it closes."""
    step, link, record, windows, thread, _ = start(transfer_floor_bps=floor)
    step.hold = hold
    step.send(c.VALIDATOR, c.READY)
    step.send(c.PROBE, c.READY)
    for _ in range(2):
        for rank in (0, 1):
            step.batch(rank)
            step.expect(rank, c.DATA)
    step.batch(1)
    step.batch(0)
    step.pause(causal, trickle=1.0)
    for rank in (0, 1):
        step.expect(rank, c.DATA)
    finish(step, link, thread)
    first = record["validations"][0]
    assert first["pause_s"] > 1.0
    if floor:
        # the wait is on the clock, less the pause's allowance (0.2 s here)
        assert first["pause_s"] - first["excluded_s"] > 0.6
    else:
        assert first["pause_s"] - first["excluded_s"] < 0.3


def test_a_model_that_looks_ahead_is_caught_by_the_probe():
    from benchmarks.protocol import Budget, TrialContext
    from benchmarks.speedrun.score import check_causal

    step, link, record, windows, thread, _ = start(nproc=1)
    step.send(c.VALIDATOR, c.READY)
    step.send(c.PROBE, c.READY)
    step.send(0, c.FINISH)
    step.pause(peeking, nproc=1)
    step.expect(0, c.BYE)
    end(link, thread)
    (only,) = record["validations"]
    assert only["loss"] < expected_loss(windows, causal)  # peeking "helps"...
    assert only["worst"] > 1.0 and only["peek"] > 1.0  # ...and the probe sees it
    ctx = TrialContext(workspace=".", inputs_dir=".", outputs_dir=".", prepared_dir=".", seed=0,
                       split="val", python="python",
                       budget=Budget(unit="s", amount=1, wall_clock_s=1, memory_mb=1),
                       secrets={"run": record})
    assert not check_causal(ctx, None, PRESET).passed


def test_no_batch_after_the_budget_and_a_step_that_keeps_going_is_halted():
    step, link, record, _, thread, killed = start(budget_s=0.3)
    for rank in (0, 1):
        step.batch(rank)
        step.expect(rank, c.DATA)
    time.sleep(0.4)
    for rank in (1, 0):  # every rank is refused the same step, so none waits for another
        step.batch(rank)
        step.expect(rank, c.DONE)
    time.sleep(1.0)  # past the budget and the time to finish, still no FINISH
    assert link.halted is not None and link.halted[0] == "budget" and killed
    end(link, thread)
    assert not record["complete"]


@pytest.mark.parametrize("case", ["shapes", "after_finish", "oversized", "no_batch"])
def test_what_breaks_the_protocol_or_the_start_up_halts_the_step(case):
    step, link, _, _, thread, killed = start(startup_s=0.5)
    if case == "shapes":  # every rank must ask for the same step size
        step.batch(0, 1, 4)
        step.expect(0, c.DATA)
        step.batch(1, 2, 4)
    elif case == "after_finish":
        step.send(0, c.FINISH)
        step.batch(0)
    elif case == "oversized":
        step.batch(0, 1, PRESET.max_batch_tokens + 1)
    deadline = time.monotonic() + 5
    while link.halted is None and time.monotonic() < deadline:
        time.sleep(0.05)
    end(link, thread)
    assert link.halted is not None and killed
    assert link.halted[0] == ("timeout" if case == "no_batch" else "output"), link.halted


def test_the_loss_is_the_mean_negative_log_likelihood_in_nats():
    rng = np.random.default_rng(3)
    windows = rng.integers(0, VOCAB, size=(4, LEN + 1))
    uniform = lambda x: np.zeros((*x.shape, VOCAB), dtype=np.float16)  # noqa: E731
    assert expected_loss(windows, uniform) == pytest.approx(math.log(VOCAB))
