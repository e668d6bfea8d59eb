"""The trusted companions of a nanochat trial's steps, run in the parent process.

`TrainServer` is the only source of training data and the clock: the first batch request
starts it, batches are served until `reserve_s` before the budget ends and refused after,
and a step still running once the budget is over is halted (the trial fails with
`budget`): from the first batch to the step's exit, training and saving the model included,
a trial has exactly its budget. `LogitsServer` receives the eval step's float16 logits in
order and computes the loss itself, against targets the step never received; it keeps the
raw logits of the windows the probe step will re-run, and it bounds the step's compute
after the harness's READY (loading the model and forward passes, not training on the
side). `ProbeServer` receives the probe step's logits and
compares them with those. Everything they measure goes into the trial's secrets, which
only trusted code reads.
"""

from __future__ import annotations

import math
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from benchmarks.nanochat import channel
from benchmarks.protocol import StepLink

POLL_S = 0.25
KILL_SLACK_S = 1.0  # a step past its deadline is halted within this (polling, killing)
READ_TIMEOUT_S = 30.0  # a message started must keep arriving: a stall is a protocol error
MAX_BATCH_TOKENS = 1 << 24  # one request may ask for at most this many tokens
MAX_CHUNK_BYTES = 1 << 31  # one logits message may carry at most this much
PINNED_MAX_BYTES = 1 << 30  # receive buffers up to this size are page-locked (GPU)


def scoring_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _wait_readable(conn: socket.socket, link: StepLink, deadline_check) -> bool:
    """Wait until conn has data (True) or the step has finished (False), checking the
    deadlines every POLL_S."""
    conn.settimeout(POLL_S)
    while True:
        deadline_check()
        try:
            data = conn.recv(1, socket.MSG_PEEK)
        except TimeoutError:
            if link.finished.is_set():
                return False
            continue
        except OSError:
            return False
        conn.settimeout(READ_TIMEOUT_S)
        return bool(data)


@dataclass
class TrainServer:
    """Serves consecutive windows of the training stream from a seed-chosen offset."""

    tokens: np.ndarray  # uint16 stream
    offset: int
    budget_s: float
    startup_s: float
    reserve_s: float
    record: dict
    _t0: float | None = None
    _cursor: int = 0
    _served: int = 0
    _batches: int = 0
    _refused_at: float | None = None

    def __call__(self, link: StepLink) -> None:
        self._cursor = self.offset % len(self.tokens)
        try:
            self._serve(link)
        except (channel.ProtocolError, OSError, ValueError) as err:
            link.halt("output", f"broke the data protocol: {err}")
        link.finished.wait()
        self._report(link)

    def _deadlines(self, link: StepLink) -> None:
        now = time.monotonic()
        if self._t0 is None and now - link.started > self.startup_s:
            link.halt("timeout", f"asked for no training batch within the {self.startup_s:g} s "
                      "start-up allowance")
        elif self._t0 is not None and now > self._t0 + self.budget_s + KILL_SLACK_S:
            link.halt("budget", f"still running {now - self._t0 - self.budget_s:.1f} s after "
                      f"its {self.budget_s:g} s training budget (counted from the first "
                      "batch to the step's exit)")

    def _serve(self, link: StepLink) -> None:
        conn = link.conn
        while _wait_readable(conn, link, lambda: self._deadlines(link)):
            head = channel.recv_header(conn)
            if head is None:
                break
            tag, size = head
            if tag != channel.BATCH or size != channel.REQUEST.size:
                raise channel.ProtocolError(f"expected a batch request, got {tag!r}")
            b, t = channel.REQUEST.unpack(channel.recv_exact(conn, size))
            n = b * t
            if not 0 < n <= MAX_BATCH_TOKENS or n + 1 > len(self.tokens):
                raise channel.ProtocolError(f"batch of {b} x {t} tokens is out of bounds")
            now = time.monotonic()
            if self._t0 is None:
                self._t0 = now
            if now - self._t0 >= self.budget_s - self.reserve_s:
                self._refused_at = self._refused_at or now
                channel.send(conn, channel.DONE)
                continue
            channel.send(conn, channel.DATA, memoryview(self._take(n + 1)))
            self._served += n
            self._batches += 1
        # the peer closed its end; the step may still be running: keep the deadlines
        while not link.finished.wait(POLL_S):
            self._deadlines(link)

    def _take(self, n: int) -> np.ndarray:
        """n tokens from the cursor, wrapping around the stream; the next batch starts
        where this one's inputs end (its last token is only a target here)."""
        idx = (self._cursor + np.arange(n)) % len(self.tokens)
        self._cursor = (self._cursor + n - 1) % len(self.tokens)
        return np.ascontiguousarray(self.tokens[idx])

    def _report(self, link: StepLink) -> None:
        r = self.record
        r["train_tokens"] = self._served
        r["train_batches"] = self._batches
        r["epochs"] = self._served / max(1, len(self.tokens))
        if self._t0 is None:
            r["train_s"], r["startup_s"] = 0.0, link.ended - link.started
        else:
            r["train_s"] = link.ended - self._t0  # until the step's processes were gone
            r["startup_s"] = self._t0 - link.started


RECV_SLACK_S = 0.05


@dataclass
class LogitsServer:
    """Receives (rows, T, V) float16 logits in row order; sums nats over target bytes."""

    targets: np.ndarray  # (rows, T) token ids, trusted memory only
    token_bytes: np.ndarray  # (V,) bytes per token; 0 for special tokens
    vocab_size: int
    record: dict
    keep: frozenset[int] = frozenset()  # rows whose logits the probe comparison needs
    kept: dict[int, np.ndarray] = field(default_factory=dict)
    on_row: object = None  # optional callable(row, logits) for the probe
    compute_s: float = float("inf")  # the step's allowance of compute after READY
    # Receiving counts as trusted time only as long as the bytes take at this rate (plus
    # RECV_SLACK_S once a step): a step that trickles its logits computes meanwhile, and
    # headers come at its own pace. 0: no cap.
    transfer_floor_bps: float = 0.0

    def __call__(self, link: StepLink) -> None:
        try:
            self._receive(link)
        except (channel.ProtocolError, OSError, ValueError) as err:
            link.halt("output", f"broke the logits protocol: {err}")
        except FloatingPointError as err:
            link.halt("nan", str(err))
        link.finished.wait()

    def _receive(self, link: StepLink) -> None:
        """Receives chunk k+1 while a scoring thread works on chunk k. The step's compute
        clock runs from READY and leaves out the time spent receiving and waiting for the
        scoring thread: what is left is the step's own (loading, forward passes)."""
        conn, device = link.conn, scoring_device()
        rows, seq = self.targets.shape
        targets = torch.from_numpy(self.targets.astype(np.int64)).to(device)
        nbytes = torch.from_numpy(self.token_bytes.astype(np.int64)).to(device)
        total = {"nats": 0.0, "bytes": 0}
        clock = {"ready": None, "trusted": 0.0, "slack": RECV_SLACK_S}  # one slack a step
        next_row, scoring, received = 0, None, 0

        def over() -> None:
            if scoring is not None and scoring.done():
                scoring.result()  # a chunk that failed scoring (not finite) stops the step now
            if clock["ready"] is None:
                return
            used = time.monotonic() - clock["ready"] - clock["trusted"]
            if used > self.compute_s:
                link.halt("budget", f"computed for {used:.1f} s, more than the "
                          f"{self.compute_s:.1f} s its rows allow (loading the model and "
                          "forward passes)")

        # Two receive buffers, taken in turn: chunk k+1 arrives in one while chunk k is
        # scored from the other. Reused, so no chunk pays for fresh pages; page-locked on
        # a GPU, so the copy to the device runs at the bus's speed.
        # Only chunks up to PINNED_MAX_BYTES are page-locked: torch keeps freed page-locked
        # blocks for the process's life, so a step sending ever larger chunks must not
        # leave gigabytes of it behind in the runner.
        bufs: list[torch.Tensor | None] = [None, None]

        def receive_buffer(k: int, n: int, t: int) -> torch.Tensor:
            have = bufs[k % 2]
            if have is None or have.shape[0] < n or tuple(have.shape[1:]) != (t, self.vocab_size):
                pinned = device.type == "cuda" and n * t * self.vocab_size * 2 <= PINNED_MAX_BYTES
                have = bufs[k % 2] = channel.host_buffer((n, t, self.vocab_size), pinned)
            return have[:n]

        def score(row0: int, n: int, chunk: torch.Tensor) -> None:
            buf = chunk.numpy()
            logits = chunk.to(device, non_blocking=chunk.is_pinned()).float()
            if not torch.isfinite(logits).all():
                raise FloatingPointError(f"logits of rows {row0}..{row0 + n} are not finite")
            logp = torch.log_softmax(logits, dim=-1)
            tgt = targets[row0 : row0 + n]
            picked = logp.gather(-1, tgt[..., None])[..., 0].double()
            weight = nbytes[tgt]
            total["nats"] -= float((picked * (weight > 0)).sum())
            total["bytes"] += int(weight.sum())
            for r in range(row0, row0 + n):
                if r in self.keep:
                    self.kept[r] = buf[r - row0].copy()
                if callable(self.on_row):
                    self.on_row(r, logp[r - row0])

        def settle() -> None:  # waits for the chunk being scored; trusted time
            started = time.monotonic()
            if scoring is not None:
                scoring.result()
            clock["trusted"] += time.monotonic() - started

        with ThreadPoolExecutor(max_workers=1) as scorer:
            while _wait_readable(conn, link, over):
                head = channel.recv_header(conn)
                if head is None:
                    break
                tag, size = head
                if tag == channel.READY and size == 0 and clock["ready"] is None:
                    clock["ready"] = time.monotonic()
                    continue
                if clock["ready"] is None:
                    raise channel.ProtocolError(f"expected READY first, got {tag!r}")
                if tag == channel.END and size == 0:
                    break
                if tag != channel.LOGITS or not channel.ROWS.size < size <= MAX_CHUNK_BYTES:
                    raise channel.ProtocolError(
                        f"expected logits, got {tag!r} of {size} bytes")
                row0, n, t = channel.ROWS.unpack(channel.recv_exact(conn, channel.ROWS.size))
                expect = n * t * self.vocab_size * 2
                if row0 != next_row or n <= 0 or row0 + n > rows or t != seq or (
                        size - channel.ROWS.size != expect):
                    raise channel.ProtocolError(
                        f"logits for rows {row0}..{row0 + n} of length {t} ({size} bytes) "
                        f"do not follow row {next_row} of {rows} x {seq} x {self.vocab_size}")
                started = time.monotonic()  # the buffer's pages are trusted time too
                chunk = receive_buffer(received, n, t)
                received += 1
                clock["trusted"] += time.monotonic() - started
                started = time.monotonic()
                channel.recv_into(conn, memoryview(chunk.numpy()))
                took = time.monotonic() - started
                if self.transfer_floor_bps > 0:  # beyond the bytes' time at the floor: compute
                    late = max(0.0, took - expect / self.transfer_floor_bps)
                    used = min(clock["slack"], late)
                    clock["slack"] -= used
                    took -= late - used
                clock["trusted"] += took
                settle()
                over()
                if link.halted is not None:
                    return
                scoring = scorer.submit(score, row0, n, chunk)
                next_row = row0 + n
            settle()
        self.record["rows_received"] = next_row
        if clock["ready"] is not None:
            self.record["compute_s"] = time.monotonic() - clock["ready"] - clock["trusted"]
            self.record["transfer_s"] = clock["trusted"]
        self.record["nats"] = total["nats"]
        self.record["target_bytes"] = total["bytes"]
        if total["bytes"]:
            self.record["bpb"] = total["nats"] / math.log(2) / total["bytes"]


@dataclass
class ProbeServer:
    """Compares the probe step's log-probabilities with the eval step's, row by row, up to
    each row's secret cut; also how much more the eval step believed the true next token
    at the cut than the probe (which saw other text after it) did."""

    rows: np.ndarray  # (n, T) the probe's input rows (targets of the cut rows are not used)
    order: np.ndarray  # window index of each probe row
    cuts: np.ndarray
    targets: np.ndarray  # (windows, T) eval targets
    eval_logits: dict[int, np.ndarray]  # window -> (T, V) float16 from the eval step
    vocab_size: int
    record: dict
    compute_s: float = float("inf")
    transfer_floor_bps: float = 0.0

    def __call__(self, link: StepLink) -> None:
        self.record.update(worst=0.0, where=(-1, -1), peeks=[], rows_received=0)
        dummy = np.zeros_like(self.rows)
        server = LogitsServer(targets=dummy, token_bytes=np.zeros(self.vocab_size, np.int32),
                              vocab_size=self.vocab_size, record={}, on_row=self._row,
                              compute_s=self.compute_s,
                              transfer_floor_bps=self.transfer_floor_bps)
        server(link)
        self.record["rows_received"] = server.record.get("rows_received", 0)
        self.record["compute_s"] = server.record.get("compute_s")

    def _row(self, r: int, logp_probe: torch.Tensor) -> None:
        w, cut = int(self.order[r]), int(self.cuts[r])
        full = torch.from_numpy(self.eval_logits[w][: cut + 1]).to(logp_probe.device).float()
        a = torch.log_softmax(full, dim=-1)
        b = logp_probe[: cut + 1]
        diff = (a - b).abs().amax(dim=-1)
        worst = float(diff.max())
        if worst > self.record["worst"]:
            self.record["worst"], self.record["where"] = worst, (w, int(diff.argmax()))
        if cut < self.rows.shape[1] - 1:
            t = int(self.targets[w, cut])
            self.record["peeks"].append(float(a[cut, t] - b[cut, t]))
