"""Frames on the socket between the trusted evaluator and the worker that runs a candidate.

A frame is a little-endian u32 length, then the payload. The trusted side sends pickles
(the worker has to trust its evaluator anyway) and may attach file descriptors to a frame
(the shared memory of a CPU arena, by SCM_RIGHTS). The worker answers in JSON only, and the
trusted side reads each frame against a length bound and a deadline: nothing the worker
writes is unpickled, allocated at its say, or waited on for ever.

With SO_PASSCRED on the trusted end (see `socket_pair`), the kernel stamps each frame
the worker sends with the sender's pid, translated into the trusted side's pid namespace.
`recv_frame` returns that pid, so the trusted side can watch the right process (its
threads, children and CPU time) without taking the worker's word for which one it is.

Stdlib only: it runs inside the sandbox, beside the worker.
"""

from __future__ import annotations

import array
import os
import select
import socket
import struct
import time
from dataclasses import dataclass

HEADER = struct.Struct("<I")
MAX_FDS = 4
_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid
_ANCILLARY = socket.CMSG_SPACE(MAX_FDS * 4) + socket.CMSG_SPACE(_CREDENTIALS.size)


class WireError(Exception):
    """The peer broke the framing, or sent something the reader does not accept."""


class PeerClosed(WireError):
    """The peer closed its end: its process has exited or is about to."""


class Deadline(WireError):
    """No whole frame arrived before the deadline."""


@dataclass(frozen=True)
class Frame:
    payload: bytes
    fds: tuple[int, ...] = ()
    pid: int | None = None  # the sender as the kernel vouches for it (SO_PASSCRED ends only)


def socket_pair() -> tuple[socket.socket, socket.socket]:
    """(trusted end, worker end) of a new channel; the trusted end receives credentials."""
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    return ours, theirs


def send_frame(sock: socket.socket, payload: bytes, fds: tuple[int, ...] = ()) -> None:
    data = HEADER.pack(len(payload)) + payload
    if fds:  # the descriptors ride on the first bytes of the frame
        data = data[socket.send_fds(sock, [data], list(fds)):]
    if data:
        sock.sendall(data)


def recv_frame(
    sock: socket.socket, max_bytes: int, deadline: float | None = None, *,
    accept_fds: bool = False, spin_s: float = 0.0,
) -> Frame:
    """The next frame. `deadline` is a time.monotonic() value (None waits for ever);
    descriptors arriving where none are accepted are closed at once. With `spin_s`, the
    frame's first bytes are polled for that long before the wait blocks: a process that
    sleeps in the kernel is woken late (on a virtual machine, tens to hundreds of
    microseconds, varying), and where the wake-up is inside a clock that is noise."""
    head, fds, pid = b"", [], None
    if spin_s > 0:
        _spin(sock, spin_s)
    try:
        while len(head) < HEADER.size:
            _wait(sock, deadline)
            data, ancillary, _flags, _addr = sock.recvmsg(HEADER.size - len(head), _ANCILLARY)
            for level, kind, raw in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds += array.array("i", raw[: len(raw) - len(raw) % 4])
                elif level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = _CREDENTIALS.unpack(raw[: _CREDENTIALS.size])[0]
            if not accept_fds:
                _close_all(fds)
                fds = []
            if not data:
                raise PeerClosed(f"the peer closed the channel after {len(head)} bytes")
            head += data
        (size,) = HEADER.unpack(head)
        if size > max_bytes:
            raise WireError(f"a frame of {size} bytes, where at most {max_bytes} are accepted")
        buf = bytearray(size)
        view, got = memoryview(buf), 0
        while got < size:
            _wait(sock, deadline)
            n = sock.recv_into(view[got:], size - got)
            if n == 0:
                raise PeerClosed(f"the peer closed the channel {got} of {size} bytes into a frame")
            got += n
    except TimeoutError:
        _close_all(fds)
        raise Deadline("no answer before the deadline") from None
    except BaseException:
        _close_all(fds)
        raise
    return Frame(bytes(buf), tuple(fds), pid)


def _spin(sock: socket.socket, spin_s: float) -> None:
    until = time.perf_counter() + spin_s
    while not select.select([sock], [], [], 0)[0] and time.perf_counter() < until:
        pass


def _wait(sock: socket.socket, deadline: float | None) -> None:
    if deadline is None:
        sock.settimeout(None)
        return
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    sock.settimeout(left)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
