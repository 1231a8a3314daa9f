"""Benchmark: resident memory of a listener flooded with connections that never authenticate.

Usage::

    python tools/bench/flood.py [--board wifi-piano] [--count 5000] [--utp 2000]
                                [--settle 8]

A real ``csembed daemon --board BOARD`` holding one share is measured idle
(``VmRSS``), then flooded from 127.0.0.2: ``--count`` TCP connections, each
sending one byte and then nothing, opened in batches and all held open, and
``--utp`` uTP SYNs from one UDP socket. It is measured again while the flood's
sockets are open (``VmRSS`` and the peak ``VmHWM``), then the sockets are
closed and, ``--settle`` seconds later, once more: the memory it gave back.

The anchor is the plainest asyncio listener (a :class:`asyncio.Protocol` that
reads and discards, no limits), started the same way and flooded the same way
(TCP only): the floor of holding such a flood with asyncio on this Python, and
what CPython and the C library keep afterwards without being asked to give
memory back. Both run with the same open-file limit (``--count`` + 1000, at
most this process's hard limit). The ratio is ours over the anchor's.
"""

from __future__ import annotations

import argparse
import os
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _proc import vm_status

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

MiB = 1 << 20
SOURCE = "127.0.0.2"
BATCH = 250

ANCHOR = """
import asyncio, sys
class Sink(asyncio.Protocol):
    def data_received(self, data): pass
async def main():
    server = await asyncio.get_running_loop().create_server(Sink, "127.0.0.1", 0)
    print("listening on 127.0.0.1:%d," % server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def start(argv: list[str], nofile: int) -> tuple[subprocess.Popen[str], str, int]:
    """Start a listener that prints ``listening on HOST:PORT,``; returns it and its address."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            cwd=ROOT, preexec_fn=limit)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on " not in line:
        proc.kill()
        raise SystemExit(f"{argv[:4]} did not start")
    host, port = line.split("listening on ", 1)[1].split(",", 1)[0].rsplit(":", 1)
    return proc, host, int(port)


def tcp_flood(host: str, port: int, count: int) -> list[socket.socket]:
    """Open ``count`` connections from :data:`SOURCE`, each sending one byte; returns
    the ones still open."""
    held: list[socket.socket] = []
    for start_at in range(0, count, BATCH):
        with selectors.DefaultSelector() as sel:
            pending = set()
            for _ in range(min(BATCH, count - start_at)):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                sock.bind((SOURCE, 0))
                sock.connect_ex((host, port))
                sel.register(sock, selectors.EVENT_WRITE)
                pending.add(sock)
            deadline = time.monotonic() + 5.0
            while pending and time.monotonic() < deadline:
                for key, _ in sel.select(0.2):
                    sock = key.fileobj  # type: ignore[assignment]
                    sel.unregister(sock)
                    pending.discard(sock)
                    try:
                        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                            sock.send(b"C")
                            held.append(sock)
                            continue
                    except OSError:
                        pass
                    sock.close()
            for sock in pending:
                sock.close()
    return held


def utp_flood(host: str, port: int, count: int) -> socket.socket:
    """Send ``count`` uTP SYNs (distinct connection IDs) from one UDP socket."""
    from csembed.transport.utp_packet import ST_SYN, Packet, encode
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((SOURCE, 0))
    for i in range(count):
        sock.sendto(encode(Packet(ST_SYN, (2 * i) & 0xFFFF, 0, 0, 1 << 16, 1, 0)),
                    (host, port))
        if i % 64 == 63:
            time.sleep(0.005)  # within the socket buffers: a flood, not a drop test
    return sock


def run(argv: list[str], count: int, utp: int, settle: float, nofile: int,
        prepare: Callable[[], object] = lambda: None) -> dict[str, int]:
    """Idle, flooded and settled figures of one listener (``prepare()`` runs once
    it listens)."""
    proc, host, port = start(argv, nofile)
    try:
        prepare()
        time.sleep(1.0)  # let it finish starting (the daemon trims its heap once started)
        idle = vm_status(proc.pid)["VmRSS"]
        socks = tcp_flood(host, port, count)
        udp = utp_flood(host, port, utp) if utp else None
        time.sleep(1.0)
        during = vm_status(proc.pid)
        for sock in socks:
            sock.close()
        if udp is not None:
            udp.close()
        time.sleep(settle)
        after = vm_status(proc.pid)
        if proc.poll() is not None:
            raise SystemExit(f"{argv[:4]} died under the flood")
        return {"idle": idle, "during": during["VmRSS"],
                "peak": max(during["VmRSS"], after["VmHWM"]),  # HWM is updated lazily
                "after": after["VmRSS"], "held": len(socks)}
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--board", default="wifi-piano")
    parser.add_argument("--count", type=int, default=5000, help="TCP connections")
    parser.add_argument("--utp", type=int, default=2000, help="uTP SYNs (ours only)")
    parser.add_argument("--settle", type=float, default=8.0,
                        help="seconds after the flood ended before the last figure")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nofile = min(args.count + 1000, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, nofile), hard))
    with tempfile.TemporaryDirectory(prefix="csembed-flood-") as tmp:
        data, share = Path(tmp) / "data", Path(tmp) / "share"
        share.mkdir()
        (share / "recital.mid").write_bytes(os.urandom(200_000))
        daemon = [sys.executable, "-m", "csembed", "daemon", "--data-dir", str(data),
                  "--board", args.board, "--listen", "127.0.0.1:0", "--no-lan",
                  "--log-level", "error"]
        ours = run(daemon, args.count, args.utp, args.settle, nofile,
                   lambda: subprocess.run([sys.executable, "-m", "csembed", "share", str(share),
                                           "--data-dir", str(data)], cwd=ROOT, check=True,
                                          capture_output=True))
    anchor = run([sys.executable, "-c", ANCHOR], args.count, 0, args.settle, nofile)
    print(f"flood of {args.count} TCP connections (+{args.utp} uTP SYNs on ours) from "
          f"{SOURCE}, board {args.board}, open-file limit {nofile}; load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"  anchor: a bare asyncio listener that holds every connection "
          f"(held {anchor['held']}; ours held {ours['held']} on our side)")
    print(f"  {'MiB':<38} {'csembed':>8} {'anchor':>8} {'ratio':>6}")
    for label, key in [("idle RSS", "idle"), ("RSS while the flood's sockets are open", "during"),
                       ("peak RSS (VmHWM)", "peak"),
                       (f"RSS {args.settle:g} s after the flood", "after")]:
        print(f"  {label:<38} {ours[key] / MiB:>8.1f} {anchor[key] / MiB:>8.1f} "
              f"{ours[key] / anchor[key]:>6.2f}")
    print(f"  {'kept after the flood (after - idle)':<38} "
          f"{(ours['after'] - ours['idle']) / MiB:>8.1f} "
          f"{(anchor['after'] - anchor['idle']) / MiB:>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
