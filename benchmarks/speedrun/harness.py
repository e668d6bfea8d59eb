"""The launcher of a speedrun train step; runs inside the sandbox and runs no candidate code.

It starts the step's processes (see worker.py) the way torchrun would, by forking them
from one interpreter that has imported torch (so that start-up is paid once): the N
ranks, each in a process group of its own, and two validators, the main one and the
probe. Each child gets a socket to the launcher and nothing else of its: the launcher
relays their messages to the trusted side over the step's one channel, adding (and, the
other way, reading) an address byte, and copies logits through without looking at them.
On the trusted side's word it stops the ranks with SIGSTOP while a validation runs and
lets them go on after it, so that no rank computes while the clock is paused.

A child that ends with an error ends the step with its exit status (the guard's, say);
a validator that ends before the ranks do is an error too. When every rank has ended
cleanly the launcher closes the validators and exits 0.

Run as: python -m benchmarks.speedrun.harness --preset P --workspace W --out O --seed S
        --nproc N --budget-s B --threads T
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

# What every rank imports anyway, imported once before the children are forked (a
# second or more each on a busy machine): torch, its compiler front end (the optimisers
# import it) and flex attention.
import torch  # noqa: F401
import torch._dynamo  # noqa: F401
import torch.nn.attention.flex_attention  # noqa: F401

from benchmarks.nanochat import channel
from benchmarks.speedrun import contract as c
from benchmarks.speedrun import worker

COPY_BYTES = 1 << 22  # relay buffer
REAP_S = 0.1  # how often the launcher looks for children that ended
CLOSE_WAIT_S = 10.0  # how long validators get to exit once closed
GUARD_ENV = "AUTOLAB_GUARD"  # benchmarks.guard.ENV


@dataclass
class Child:
    address: int
    pid: int
    sock: socket.socket
    rank: bool


def free_port() -> int:
    """A free port on the loopback interface, which the ranks' process group needs: the
    sandbox's network namespace must have it up (bubblewrap's has; unshare's has not)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            port = s.getsockname()[1]
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            return port
    except OSError as err:
        print(f"speedrun launcher: no loopback network for the ranks' process group ({err}); "
              "run it under bubblewrap, whose network namespace has one, or without isolation",
              file=sys.stderr)
        sys.exit(2)


def validator_guard() -> str | None:
    """The step's guard policy with nothing writable: a validator may read the saved
    model (the step's writable folders are readable) but leave nothing for the ranks."""
    spec = os.environ.get(GUARD_ENV)
    if not spec:
        return None
    cfg = json.loads(spec)
    cfg["read"] = [*cfg.get("read", []), *cfg.get("write", [])]
    cfg["write"], cfg["allow_subprocess"] = [], False
    return json.dumps(cfg)


def spawn(address: int, role: str, args: argparse.Namespace, env: dict[str, str],
          close: list[socket.socket]) -> Child:
    """Fork a rank or validator; in the child, drop every descriptor of the launcher's
    (the trusted channel, the other children's sockets) before anything else runs."""
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            for sock in (*close, ours):
                os.close(sock.detach())
            if role == "rank":
                os.setpgid(0, 0)  # stopped and resumed as a group (its compile workers too)
            os.environ.update(env | {c.CHANNEL_ENV: str(theirs.fileno())})
            (worker.run_rank if role == "rank" else worker.run_validator)(args)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    theirs.close()
    return Child(address, pid, ours, role == "rank")


def start_children(args: argparse.Namespace, parent: socket.socket) -> list[Child]:
    preset = c.PRESETS[args.preset]
    dist_env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
                "WORLD_SIZE": str(args.nproc)}
    if preset.backend == "gloo":
        dist_env["GLOO_SOCKET_IFNAME"] = "lo"
    else:  # one host: bootstrap on the loopback, GPUs talk over NVLink / PCIe
        dist_env |= {"NCCL_SOCKET_IFNAME": "lo", "NCCL_SHM_DISABLE": "1"}
    children: list[Child] = []
    for rank in range(args.nproc):
        env = dist_env | {"RANK": str(rank), "LOCAL_RANK": str(rank)}
        children.append(spawn(rank, "rank", args, env, [parent, *(k.sock for k in children)]))
    guard = validator_guard()
    for address in (c.VALIDATOR, c.PROBE):
        env = {GUARD_ENV: guard} if guard else {}
        children.append(spawn(address, "validator", args, env,
                              [parent, *(k.sock for k in children)]))
    return children


def _copy(src: socket.socket, dst: socket.socket, n: int, buf: memoryview) -> None:
    while n > 0:
        k = src.recv_into(buf, min(n, len(buf)))
        if k == 0:
            raise channel.ProtocolError("connection closed inside a message")
        dst.sendall(buf[:k])
        n -= k


def up(child: Child, parent: socket.socket, buf: memoryview) -> bool:
    """One message from a child to the trusted side; False when the child closed."""
    head = channel.recv_header(child.sock)
    if head is None:
        return False
    tag, size = head
    parent.sendall(channel.HEADER.pack(tag, size + 1) + c.ADDRESS.pack(child.address))
    _copy(child.sock, parent, size, buf)
    return True


def down(parent: socket.socket, children: dict[int, Child], buf: memoryview) -> bool:
    """One message from the trusted side to a child (or to the launcher itself)."""
    head = channel.recv_header(parent)
    if head is None:
        return False
    tag, size = head
    (address,) = c.ADDRESS.unpack(channel.recv_exact(parent, 1))
    if address == c.LAUNCHER:  # the payload names the ranks (none: all of them)
        ranks = set(channel.recv_exact(parent, size - 1)) if size > 1 else None
        signal_ranks(children, signal.SIGSTOP if tag == c.STOP else signal.SIGCONT, ranks)
        return True
    child = children[address]
    child.sock.sendall(channel.HEADER.pack(tag, size - 1))
    _copy(parent, child.sock, size - 1, buf)
    return True


def signal_ranks(children: dict[int, Child], sig: int, ranks: set[int] | None) -> None:
    for child in children.values():
        if child.rank and (ranks is None or child.address in ranks):
            try:
                os.killpg(child.pid, sig)
            except ProcessLookupError:
                pass


def end_all(children: dict[int, Child]) -> None:
    """SIGKILL every child: a rank's whole process group, a validator itself."""
    for child in children.values():
        try:
            if child.rank:
                os.killpg(child.pid, signal.SIGKILL)
            else:
                os.kill(child.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _status(raw: int) -> int:
    code = os.waitstatus_to_exitcode(raw)
    return code if code >= 0 else 128 - code


def reap(children: dict[int, Child], running: set[int], parent: socket.socket) -> int | None:
    """Children that ended since the last look; the step's exit status once it is over."""
    for address in sorted(running):
        child = children[address]
        pid, raw = os.waitpid(child.pid, os.WNOHANG)
        if pid == 0:
            continue
        running.discard(address)
        code = _status(raw)
        try:
            channel.send(parent, c.EXITED, c.ADDRESS.pack(c.LAUNCHER),
                         c.CHILD.pack(address, code))
        except OSError:
            pass
        if code != 0:  # its own last words (a traceback, the guard's line) say why
            return code
        if not child.rank:
            print(f"speedrun launcher: validator {address} ended before the run did",
                  file=sys.stderr)
            return 1
    if not any(children[a].rank for a in running):
        return 0
    return None


def relay(parent: socket.socket, children: list[Child]) -> int:
    by_address = {k.address: k for k in children}
    running = set(by_address)
    sel = selectors.DefaultSelector()
    sel.register(parent, selectors.EVENT_READ, None)
    for child in children:
        sel.register(child.sock, selectors.EVENT_READ, child)
    buf = memoryview(bytearray(COPY_BYTES))
    while True:
        for key, _ in sel.select(timeout=REAP_S):
            if key.data is None:
                if not down(parent, by_address, buf):
                    print("speedrun launcher: the trusted side closed the channel",
                          file=sys.stderr)
                    return 1
            elif not up(key.data, parent, buf):
                sel.unregister(key.data.sock)
        if (code := reap(by_address, running, parent)) is not None:
            return code


def close_validators(children: list[Child]) -> None:
    validators = [k for k in children if not k.rank]
    for k in validators:
        k.sock.close()
    deadline = time.monotonic() + CLOSE_WAIT_S
    for k in validators:
        while time.monotonic() < deadline and os.waitpid(k.pid, os.WNOHANG)[0] == 0:
            time.sleep(0.05)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.speedrun.harness")
    parser.add_argument("--preset", choices=sorted(c.PRESETS), required=True)
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nproc", type=int, default=1)
    parser.add_argument("--budget-s", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=1)
    a = parser.parse_args(argv)
    a.snapshot = Path(os.environ.get("HOME", str(a.out))) / "speedrun-model.pt"
    parent = socket.socket(fileno=int(os.environ[c.CHANNEL_ENV]))
    children = start_children(a, parent)
    code = 1
    try:
        code = relay(parent, children)
    finally:
        if code == 0:
            close_validators(children)
        end_all({k.address: k for k in children})
        parent.close()
    sys.exit(code)


if __name__ == "__main__":
    main()
