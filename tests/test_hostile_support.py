"""Shared helpers of the malicious-peer suite (``test_hostile_*.py``; no tests here).

An attack is run against a real ``csembed daemon`` subprocess; its memory is
read from ``/proc/PID/status`` (``VmRSS`` now, ``VmHWM`` the peak). Floods
open many TCP connections from the test process in batches of non-blocking
sockets, so 2 cores and the daemon's listen backlog are not overrun, after
raising this process's open-file limit (the daemon keeps its own).
"""

from __future__ import annotations

import resource
import selectors
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

MiB = 1 << 20


def memory(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of a process, in bytes."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


@contextmanager
def open_files(wanted: int) -> Iterator[int]:
    """Raise this process's RLIMIT_NOFILE soft limit to ``wanted`` (at most the
    hard limit) for the duration; yields the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new = min(max(soft, wanted), hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    try:
        yield new
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def flood(host: str, port: int, count: int, *, payload: bytes = b"C", batch: int = 250,
          batch_timeout: float = 5.0, source: str = "127.0.0.1") -> list[socket.socket]:
    """Open ``count`` connections to ``host:port`` in batches, each sending
    ``payload`` once connected; returns the sockets (the caller closes them).
    Connections the server refused or reset are closed and not returned."""
    held: list[socket.socket] = []
    for start in range(0, count, batch):
        pending: dict[socket.socket, bool] = {}
        with selectors.DefaultSelector() as sel:
            for _ in range(min(batch, count - start)):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                sock.bind((source, 0))
                sock.connect_ex((host, port))
                sel.register(sock, selectors.EVENT_WRITE)
                pending[sock] = False
            deadline = time.monotonic() + batch_timeout
            while pending and time.monotonic() < deadline:
                for key, _ in sel.select(0.2):
                    sock = key.fileobj  # type: ignore[assignment]
                    sel.unregister(sock)
                    del pending[sock]
                    try:
                        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                            sock.send(payload)
                            held.append(sock)
                            continue
                    except OSError:
                        pass
                    sock.close()
            for sock in pending:  # still in the backlog's SYN queue: give up on it
                sock.close()
    return held


def close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()
    socks.clear()
