"""Framing on the socket between a sandboxed step and its trusted companion.

A message is a 4-byte tag, a little-endian u64 payload length, then the payload. Both
ends use this module; the trusted end bounds every length before it reads, so a step
that writes garbage gets a protocol error, never an allocation it chose.

Imported inside the sandbox by the harness: stdlib, numpy and torch only.
"""

from __future__ import annotations

import socket
import struct

import numpy as np
import torch

HEADER = struct.Struct("<4sQ")
BATCH = b"BATC"  # step -> server: struct <II (batch_size, seq_len)
DATA = b"DATA"  # server -> step: batch_size * seq_len + 1 uint16 tokens
DONE = b"DONE"  # server -> step: the training budget is spent
LOGITS = b"LGTS"  # step -> server: struct <III (first row, rows, seq_len), then float16 logits
END = b"END_"  # step -> server: all rows sent
READY = b"RDY_"  # step -> server: torch and the device are up, candidate code comes next
REQUEST = struct.Struct("<II")
ROWS = struct.Struct("<III")


class ProtocolError(Exception):
    """The peer broke the framing: a wrong tag, a length out of bounds, a short read."""


def send(sock: socket.socket, tag: bytes, *parts: bytes | memoryview) -> None:
    size = sum(memoryview(p).nbytes for p in parts)
    sock.sendall(HEADER.pack(tag, size))
    for p in parts:
        sock.sendall(p)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    recv_into(sock, memoryview(buf))
    return bytes(buf)


def recv_into(sock: socket.socket, view: memoryview) -> None:
    view = view.cast("B")
    got = 0
    while got < len(view):
        k = sock.recv_into(view[got:], len(view) - got)
        if k == 0:
            raise ProtocolError(f"connection closed after {got} of {len(view)} bytes")
        got += k


def recv_header(sock: socket.socket) -> tuple[bytes, int] | None:
    """(tag, payload length), or None when the peer closed the connection cleanly."""
    first = sock.recv(HEADER.size)
    if not first:
        return None
    rest = recv_exact(sock, HEADER.size - len(first)) if len(first) < HEADER.size else b""
    tag, size = HEADER.unpack(first + rest)
    return tag, size


def recv_tokens(sock: socket.socket, size: int) -> np.ndarray:
    out = np.empty(size // 2, dtype=np.uint16)
    recv_into(sock, memoryview(out))
    return out


def host_buffer(shape: tuple[int, ...], pinned: bool) -> torch.Tensor:
    """float16 host memory, page-locked when asked and the driver grants it."""
    if pinned:
        try:
            return torch.empty(shape, dtype=torch.float16, pin_memory=True)
        except RuntimeError:
            pass
    return torch.empty(shape, dtype=torch.float16)
