"""The trusted companion of a speedrun train step, run in the parent process.

It is the only source of training data, the clock, and the scorer. One thread serves
the step's single channel, on which the launcher relays every process of the step
(each message carries the address of its sender or receiver):

- Batches. Step s is defined by the first rank that asks for it: the shape (all ranks
  must ask for the same), and whether it is served, validated first, or refused because
  the budget is spent. Rank r gets the r-th slice of N consecutive windows of the train
  stream, from a seed-chosen offset.
- The clock starts at the first batch request and runs continuously. The only time it
  leaves out is the harness's own validation pauses, each up to the logits' transfer and
  scoring plus `val_allowance_s` (the transfer counted only as long as the bytes take at
  `transfer_floor_bps`: a validator that holds its logits back is clocked for the wait);
  whatever a candidate does anywhere else (before its steps, between them, in its own
  hooks) is clocked.
- Validations, every `val_every` steps and once all ranks have returned from train():
  when every rank has asked for step s, the other ranks are stopped, rank 0 saves its
  model, and rank 0 is stopped too; the main validator then streams the logits of the
  fixed validation rows, from which the loss is computed here, against targets that no
  process of the step received; then the probe validator re-runs a few of those rows
  (chosen now, secretly), cut at secret positions and continued with other text, and its
  predictions up to the cut must match the main validator's. Then the ranks go on.

Everything it measures goes into the trial's secrets, which only trusted code reads.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from benchmarks.nanochat import channel
from benchmarks.nanochat.score import probe_plan, probe_rows
from benchmarks.nanochat.server import POLL_S, RECV_SLACK_S, _wait_readable
from benchmarks.protocol import StepLink
from benchmarks.speedrun import contract as c

MAX_LOGITS_BYTES = 1 << 31  # one logits message may carry at most this much


class Halt(Exception):
    """Stop serving: the step was halted or has ended."""


@dataclass
class Validation:
    """One validation as the trusted side saw it."""

    index: int
    step: int  # optimizer steps before it
    clock_s: float  # clocked training seconds when it began
    final: bool
    loss: float = math.nan  # mean nats per token on the validation rows
    worst: float = 0.0  # largest log-prob change on unchanged prefixes (probe vs main)
    peeks: list[float] = field(default_factory=list)
    pause_s: float = 0.0
    trusted_s: float = 0.0  # spent receiving and scoring logits
    excluded_s: float = 0.0  # left off the clock

    def summary(self) -> dict:
        return {"index": self.index, "step": self.step, "clock_s": round(self.clock_s, 3),
                "final": self.final, "loss": self.loss, "worst": self.worst,
                "peek": float(np.mean(self.peeks)) if self.peeks else 0.0,
                "pause_s": round(self.pause_s, 3), "excluded_s": round(self.excluded_s, 3)}


@dataclass
class SpeedrunServer:
    tokens: np.ndarray  # uint16 train stream
    offset: int
    nproc: int
    preset: c.Preset
    budget_s: float  # clocked seconds after which no batch is served
    windows: np.ndarray  # (val_rows, val_len + 1): the validation rows and their targets
    source: np.ndarray  # the stream they come from: text for the probe's continuations
    rng: np.random.Generator  # secret: probe rows and cuts
    device: torch.device
    record: dict
    _t0: float | None = None
    _excluded: float = 0.0
    _sizes: list[int] = field(default_factory=list)  # tokens per rank at each step
    _starts: list[int] = field(default_factory=list)
    _kinds: list[bytes] = field(default_factory=list)  # DATA, VALIDATE or DONE
    _next: dict[int, int] = field(default_factory=dict)  # each rank's next step
    _waiting: set[int] = field(default_factory=set)  # ranks held at a validation step
    _finished: set[int] = field(default_factory=set)
    _ready: set[int] = field(default_factory=set)  # validators up
    _served: int = 0
    _planned: int = 0  # tokens of the steps defined so far
    _pause: float | None = None  # when the validation under way began
    _validations: list[Validation] = field(default_factory=list)
    _final_clock: float | None = None

    # -- the loop -------------------------------------------------------------------------

    def __call__(self, link: StepLink) -> None:
        self._next = dict.fromkeys(range(self.nproc), 0)
        try:
            self._serve(link)
        except Halt:
            pass
        except (channel.ProtocolError, OSError, ValueError, KeyError) as err:
            link.halt("output", f"broke the speedrun protocol: {err}")
        except FloatingPointError as err:
            link.halt("nan", str(err))
        link.finished.wait()
        self._report(link)

    def clock(self, now: float | None = None) -> float:
        """Clocked training seconds: since the first batch request, less the pauses."""
        if self._t0 is None:
            return 0.0
        return (time.monotonic() if now is None else now) - self._t0 - self._excluded

    def _deadlines(self, link: StepLink) -> None:
        now, p = time.monotonic(), self.preset
        if self._t0 is None and now - link.started > p.startup_s:
            link.halt("timeout", f"asked for no training batch within the {p.startup_s:g} s "
                      "start-up allowance")
        elif self._pause is not None and now - self._pause > p.val_timeout_s:
            link.halt("timeout", f"a validation took longer than {p.val_timeout_s:g} s")
        elif self._pause is None and self._final_clock is None and (
                self.clock(now) > self.budget_s + p.finish_s):
            link.halt("budget", f"still training {self.clock(now) - self.budget_s:.1f} s "
                      f"after its {self.budget_s:g} s budget (batches stop at the budget; "
                      f"train() then has {p.finish_s:g} s to return)")
        if link.halted is not None:
            raise Halt

    def _recv(self, link: StepLink) -> tuple[int, bytes, int]:
        """The next message: (address, tag, payload size after the address). Validators'
        READY and the launcher's word of a process that ended are handled here."""
        while True:
            if not _wait_readable(link.conn, link, lambda: self._deadlines(link)):
                raise Halt
            head = channel.recv_header(link.conn)
            if head is None:
                raise Halt
            tag, size = head
            if size < 1:
                raise channel.ProtocolError(f"{tag!r} without an address")
            (address,) = c.ADDRESS.unpack(channel.recv_exact(link.conn, 1))
            size -= 1
            if address in (c.VALIDATOR, c.PROBE) and tag == c.READY and size == 0:
                self._ready.add(address)
            elif address == c.LAUNCHER and tag == c.EXITED and size == c.CHILD.size:
                self._exited(link, *c.CHILD.unpack(channel.recv_exact(link.conn, size)))
            else:
                return address, tag, size

    def _send(self, link: StepLink, address: int, tag: bytes, *parts) -> None:
        size = sum(memoryview(p).nbytes for p in parts)
        link.conn.sendall(channel.HEADER.pack(tag, size + 1) + c.ADDRESS.pack(address))
        for part in parts:
            link.conn.sendall(part)

    def _serve(self, link: StepLink) -> None:
        while True:
            address, tag, size = self._recv(link)
            if address < self.nproc and tag == c.BATCH and size == c.REQUEST.size:
                b, t = c.REQUEST.unpack(channel.recv_exact(link.conn, size))
                self._batch(link, address, b, t)
            elif address < self.nproc and tag == c.FINISH and size == 0:
                self._finish(link, address)
            else:
                raise channel.ProtocolError(f"unexpected {tag!r} ({size} bytes) from {address}")

    def _exited(self, link: StepLink, address: int, code: int) -> None:
        """A process of the step ended before the run did. With an error the launcher ends
        the step and the sandbox reports why; a rank that just left is halted here."""
        if code == 0 and address < self.nproc:
            link.halt("crash", f"rank {address} exited before the run ended")
        raise Halt

    # -- batches --------------------------------------------------------------------------

    def _define(self, n: int) -> None:
        """The next step: its size, where it starts, and what it is."""
        s = len(self._sizes)
        start = self.offset if s == 0 else self._starts[-1] + self.nproc * self._sizes[-1]
        self._sizes.append(n)
        self._starts.append(start % len(self.tokens))
        self._planned += self.nproc * n
        if self.clock() >= self.budget_s or (
                self._planned > self.preset.max_epochs * len(self.tokens)):
            self._kinds.append(c.DONE)
        elif s > 0 and s % self.preset.val_every == 0:
            self._kinds.append(c.VALIDATE)
        else:
            self._kinds.append(c.DATA)

    def _batch(self, link: StepLink, rank: int, b: int, t: int) -> None:
        n, s = b * t, self._next[rank]
        if not 0 < n <= self.preset.max_batch_tokens or self.nproc * n + 1 > len(self.tokens):
            raise channel.ProtocolError(f"a batch of {b} x {t} tokens is out of bounds")
        if rank in self._finished:
            raise channel.ProtocolError(f"rank {rank} asked for a batch after finishing")
        if self._t0 is None:
            self._t0 = time.monotonic()
        if s == len(self._sizes):
            self._define(n)
        elif self._sizes[s] != n:
            raise channel.ProtocolError(f"rank {rank} asked for {n} tokens at step {s}, "
                                        f"another rank for {self._sizes[s]}")
        kind = self._kinds[s]
        if kind == c.DONE:
            self._send(link, rank, c.DONE)
        elif kind == c.VALIDATE:
            self._waiting.add(rank)
            if len(self._waiting) == self.nproc:
                self._validate(link, final=False)
                for r in sorted(self._waiting):
                    self._serve_batch(link, r)
                self._waiting.clear()
        else:
            self._serve_batch(link, rank)

    def _serve_batch(self, link: StepLink, rank: int) -> None:
        s = self._next[rank]
        n = self._sizes[s]
        first = self._starts[s] + rank * n
        idx = (first + np.arange(n + 1)) % len(self.tokens)
        self._send(link, rank, c.DATA, memoryview(np.ascontiguousarray(self.tokens[idx])))
        self._next[rank] = s + 1
        self._served += n

    def _finish(self, link: StepLink, rank: int) -> None:
        if rank in self._waiting:
            raise channel.ProtocolError(f"rank {rank} finished while waiting for a batch")
        self._finished.add(rank)
        if len(self._finished) < self.nproc:
            return
        self._final_clock = self.clock()
        self._validate(link, final=True)
        for r in range(self.nproc):
            self._send(link, r, c.BYE)
        while not link.finished.wait(POLL_S):  # the ranks exit; nothing more is served
            pass
        raise Halt

    # -- validations ----------------------------------------------------------------------

    def _validate(self, link: StepLink, final: bool) -> None:
        start = time.monotonic()
        v = Validation(index=len(self._validations), step=max(self._next.values()),
                       clock_s=self.clock(start), final=final)
        self._validations.append(v)
        self._pause = start
        others = bytes(range(1, self.nproc))
        if others:
            self._send(link, c.LAUNCHER, c.STOP, others)
        self._send(link, 0, c.SNAPSHOT)
        self._expect(link, 0, c.SAVED)
        self._send(link, c.LAUNCHER, c.STOP, b"\x00")
        picks = probe_plan(len(self.windows), self.preset.n_probe, self.rng)
        kept: dict[int, np.ndarray] = {}
        nats, tokens = self._main(link, v, picks, kept)
        v.loss = nats / tokens
        self._probe(link, v, picks, kept)
        self._send(link, c.LAUNCHER, c.CONT)
        v.pause_s = time.monotonic() - start
        v.excluded_s = min(v.pause_s, v.trusted_s + self.preset.val_allowance_s)
        self._excluded += v.excluded_s
        self._pause = None

    def _expect(self, link: StepLink, address: int, tag: bytes) -> None:
        got, what, size = self._recv(link)
        if (got, what, size) != (address, tag, 0):
            raise channel.ProtocolError(f"expected {tag!r} from {address}, got {what!r} from "
                                        f"{got}")

    def _main(self, link: StepLink, v: Validation, picks: np.ndarray,
              kept: dict[int, np.ndarray]) -> tuple[float, int]:
        targets = torch.from_numpy(self.windows[:, 1:].astype(np.int64)).to(self.device)
        total = {"nats": 0.0}
        keep = {int(p) for p in picks}

        def score(row0: int, logits: np.ndarray) -> None:
            logp = _log_softmax(logits, self.device)
            tgt = targets[row0 : row0 + len(logits)]
            total["nats"] -= float(logp.gather(-1, tgt[..., None]).double().sum())
            for r in range(row0, row0 + len(logits)):
                if r in keep:
                    kept[r] = logits[r - row0].copy()

        self._run_validator(link, c.VALIDATOR, v, self.windows[:, :-1], score)
        return total["nats"], int(targets.numel())

    def _probe(self, link: StepLink, v: Validation, picks: np.ndarray,
               kept: dict[int, np.ndarray]) -> None:
        length = self.preset.val_len
        rows, order, cuts = probe_rows(self.windows, picks, self.source, length, self.rng)

        def compare(row0: int, logits: np.ndarray) -> None:
            for i, probe in enumerate(logits):
                w, cut = int(order[row0 + i]), int(cuts[row0 + i])
                worst, peek = compare_prefix(kept[w], probe, cut, int(self.windows[w, cut + 1]),
                                             cut < length - 1, self.device)
                v.worst = max(v.worst, worst)
                if peek is not None:
                    v.peeks.append(peek)

        self._run_validator(link, c.PROBE, v, rows, compare)

    def _run_validator(self, link: StepLink, address: int, v: Validation, rows: np.ndarray,
                       on_chunk) -> None:
        """Sends rows to a validator and hands each chunk of logits to on_chunk, in order.
        Receiving and scoring are the trusted side's time (v.trusted_s)."""
        while address not in self._ready:
            got, what, _ = self._recv(link)
            raise channel.ProtocolError(f"unexpected {what!r} from {got} in a validation")
        started = time.monotonic()
        x = np.ascontiguousarray(rows, dtype=np.uint16)
        self._send(link, address, c.VALIDATE, c.ROWS.pack(v.index, *x.shape), memoryview(x))
        v.trusted_s += time.monotonic() - started
        n_rows, seq = x.shape
        next_row, slack = 0, RECV_SLACK_S  # one slack for the whole validation
        while True:
            got, tag, size = self._recv(link)
            if got != address:
                raise channel.ProtocolError(f"{tag!r} from {got} while validator {address} "
                                            "streams")
            if tag == c.END and size == 0:
                break
            if tag != c.LOGITS or not c.ROWS.size < size <= MAX_LOGITS_BYTES:
                raise channel.ProtocolError(f"expected logits, got {tag!r} of {size} bytes")
            row0, n, t = c.ROWS.unpack(channel.recv_exact(link.conn, c.ROWS.size))
            if row0 != next_row or n <= 0 or row0 + n > n_rows or t != seq or (
                    size - c.ROWS.size != n * t * self.preset.vocab_size * 2):
                raise channel.ProtocolError(
                    f"logits for rows {row0}..{row0 + n} of length {t} ({size} bytes) do not "
                    f"follow row {next_row} of {n_rows} x {seq} x {self.preset.vocab_size}")
            # trusted from here (the header and ROWS came at the validator's pace)
            started = time.monotonic()
            buf = np.empty((n, t, self.preset.vocab_size), dtype=np.float16)
            receiving = time.monotonic()
            channel.recv_into(link.conn, memoryview(buf))
            took = time.monotonic() - receiving  # at most what the bytes take at the floor
            floor = self.preset.transfer_floor_bps
            if floor > 0:  # beyond the cap: the validator's time, clocked
                late = max(0.0, took - buf.nbytes / floor)
                used = min(slack, late)
                slack -= used
                started += late - used
            on_chunk(row0, buf)
            next_row = row0 + n
            v.trusted_s += time.monotonic() - started
        if next_row != n_rows:
            raise channel.ProtocolError(f"validator {address} sent {next_row} of {n_rows} rows")

    # -- the account ----------------------------------------------------------------------

    def _report(self, link: StepLink) -> None:
        r = self.record
        r["validations"] = [v.summary() for v in self._validations]
        r["complete"] = bool(self._validations and self._validations[-1].final and (
            not math.isnan(self._validations[-1].loss)))
        r["train_tokens"] = self._served
        r["steps"] = len([k for k in self._kinds if k != c.DONE])
        r["epochs"] = self._served / max(1, len(self.tokens))
        r["train_s"] = self._final_clock if self._final_clock is not None else self.clock(
            link.ended or None)
        r["excluded_s"] = self._excluded
        r["startup_s"] = (self._t0 - link.started) if self._t0 is not None else (
            link.ended - link.started)


def _log_softmax(logits: np.ndarray, device: torch.device) -> torch.Tensor:
    z = torch.from_numpy(logits).to(device).float()
    if not torch.isfinite(z).all():
        raise FloatingPointError("validation logits are not finite")
    return torch.log_softmax(z, dim=-1)


def compare_prefix(main: np.ndarray, probe: np.ndarray, cut: int, target: int, cut_inside: bool,
                   device: torch.device) -> tuple[float, float | None]:
    """Largest |log-prob change| on positions 0..cut between a row's logits and the probe's
    (which saw other text after the cut), and how much more the main run believed the
    true next token at the cut (None when the cut is the row's last position)."""
    a = _log_softmax(main[: cut + 1], device)
    b = _log_softmax(probe[: cut + 1], device)
    worst = float((a - b).abs().max())
    peek = float(a[cut, target] - b[cut, target]) if cut_inside else None
    return worst, peek


def scoring_device(gpu: int | None) -> torch.device:
    """The trial's first GPU where there is one (not another trial's), else the CPU."""
    if gpu is not None and torch.cuda.is_available():
        return torch.device("cuda", gpu)
    return torch.device("cpu")
