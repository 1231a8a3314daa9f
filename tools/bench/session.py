"""Benchmark the clearskies:2 session against anchors measured in the same run.

* Handshake: a full in-memory ``clearskies:2`` handshake plus core greeting,
  start and ping (both sides, one process), in ms. Anchor: the bare
  Diffie-Hellman a non-PAKE handshake needs (two X25519 key pairs and both
  shared secrets). Also the same over loopback TCP, connect to Ready.
* Bulk: ``--mib`` payload messages of 1 MiB each, from one PeerConnection to
  another over loopback TCP through the asyncio adapter (gzip off), in MB/s of
  payload and in CPU milliseconds per MiB (sender and receiver together).
  Twice: with the receiver in a child process (two peers, one core each, as
  on two devices) and with both in this process on one event loop (both ends'
  crypto on one core). Anchor: libsodium secretstream alone, push then pull
  of the same bytes in 64 KiB pieces in a loop, on one core. Rounds of the
  three are interleaved, so load from other processes hits all of them alike;
  the best round of each is kept. Target: at least 0.7x the anchor's rate.

Usage: ``python tools/bench/session.py [--mib 256] [--handshakes 200] [--repeat 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import nacl.bindings as sodium
from _timing import best_time

from csembed.protocol.core import CoreConfig, PeerConnection, Ready
from csembed.protocol.core_access import CredentialRegistry, Grant
from csembed.protocol.wire import NEED_DATA, PayloadChunk, PayloadEnd
from csembed.runtime.session_stream import SessionStream, connect, serve
from csembed.security.handshake import SessionClosed, SessionFailed
from csembed.security.keys import READ_WRITE, ShareKeys, new_peer_id

CONFIG = CoreConfig(gzip_level=0)
PIECE = 64 * 1024
MIB = 1 << 20


def world() -> tuple[ShareKeys, CredentialRegistry, Grant]:
    share = ShareKeys.generate()
    registry = CredentialRegistry()
    registry.add_share(share, new_peer_id())
    return share, registry, Grant.share_key(share, READ_WRITE, new_peer_id())


def handshake_in_memory(registry: CredentialRegistry, grant: Grant) -> None:
    client = PeerConnection.client(grant, CONFIG, now=time.monotonic())
    server = PeerConnection.server(registry, CONFIG, now=time.monotonic())
    ready = 0
    while ready < 2:
        for src, dst in ((client, server), (server, client)):
            data = src.data_to_send()
            if data:
                dst.receive_data(data, time.monotonic())
            while (event := dst.next_event()) is not NEED_DATA:
                ready += isinstance(event, Ready)


def x25519_exchange() -> None:
    a_pk, a_sk = sodium.crypto_box_keypair()
    b_pk, b_sk = sodium.crypto_box_keypair()
    sodium.crypto_scalarmult(a_sk, b_pk)
    sodium.crypto_scalarmult(b_sk, a_pk)


def secretstream_loop(total: int) -> None:
    key = sodium.crypto_secretstream_xchacha20poly1305_keygen()
    push_state = sodium.crypto_secretstream_xchacha20poly1305_state()
    pull_state = sodium.crypto_secretstream_xchacha20poly1305_state()
    header = sodium.crypto_secretstream_xchacha20poly1305_init_push(push_state, key)
    sodium.crypto_secretstream_xchacha20poly1305_init_pull(pull_state, header, key)
    piece = os.urandom(PIECE)
    push = sodium.crypto_secretstream_xchacha20poly1305_push
    pull = sodium.crypto_secretstream_xchacha20poly1305_pull
    for _ in range(total // PIECE):
        pull(pull_state, push(push_state, piece, None, 0), None)


async def tcp_handshakes(count: int) -> float:
    """Seconds per loopback TCP connection from connect to Ready on both sides."""
    _, registry, grant = world()

    async def until_closed(stream: SessionStream) -> None:
        while await stream.next_event() is not None:
            pass

    server = await serve("127.0.0.1", 0, registry, until_closed, CONFIG)
    port = server.sockets[0].getsockname()[1]
    t0 = time.perf_counter()
    for _ in range(count):
        stream = await connect("127.0.0.1", port, grant, CONFIG)
        await until_ready(stream)
        await stream.close()
    elapsed = (time.perf_counter() - t0) / count
    server.close()
    await server.wait_closed()
    return elapsed


async def until_ready(stream: SessionStream) -> None:
    while not isinstance(await stream.next_event(), Ready):
        pass


def receiver(mib: int, report: Callable[[tuple[int, float]], Any],
             own_cpu: bool = False) -> Callable[[SessionStream], Any]:
    """A connection handler that reports ``(payload bytes, CPU seconds)`` after every
    ``mib`` messages (CPU only when it runs in a process of its own)."""
    async def receive(stream: SessionStream) -> None:
        received = ends = 0
        cpu = time.process_time()
        while (event := await stream.next_event()) is not None:
            if isinstance(event, PayloadChunk):
                received += len(event.data)
            elif isinstance(event, PayloadEnd):
                ends += 1
                if ends == mib:
                    now = time.process_time()
                    await report((received, now - cpu if own_cpu else 0.0))
                    received = ends = 0
                    cpu = now
            elif isinstance(event, SessionClosed | SessionFailed):
                break
    return receive


Measure = tuple[float, float]
"""(wall-clock seconds, CPU seconds of every process involved)."""


def anchor_round(total: int) -> Measure:
    wall, cpu = time.perf_counter(), time.process_time()
    secretstream_loop(total)
    return time.perf_counter() - wall, time.process_time() - cpu


class BulkPair:
    """A sender connected to a receiver (here, or in a child process)."""

    def __init__(self, mib: int, two_processes: bool) -> None:
        self.mib = mib
        self.two_processes = two_processes
        self.blob = os.urandom(MIB)
        self.cpu_split: list[tuple[float, float]] = []  # (sender, receiver) per round

    async def start(self) -> BulkPair:
        share, registry, grant = world()
        loop = asyncio.get_running_loop()
        if self.two_processes:
            self.pipe, child_end = multiprocessing.Pipe()
            self.child = multiprocessing.Process(target=_receiver_process, daemon=True, args=(
                share.to_record(), new_peer_id(), self.mib, child_end))
            self.child.start()
            port = await loop.run_in_executor(None, self.pipe.recv)
        else:
            self.done: asyncio.Queue[tuple[int, float]] = asyncio.Queue()
            self.server = await serve("127.0.0.1", 0, registry,
                                      receiver(self.mib, self.done.put), CONFIG)
            port = self.server.sockets[0].getsockname()[1]
        self.stream = await connect("127.0.0.1", port, grant, CONFIG)
        await until_ready(self.stream)
        self.reader = asyncio.create_task(drain_forever(self.stream))
        return self

    async def round(self) -> Measure:
        """Send ``mib`` 1 MiB payload messages; wait until all arrived."""
        wall, cpu = time.perf_counter(), time.process_time()
        for n in range(self.mib):
            await self.stream.send_message({"type": "bench.blob", "n": n}, payload=True)
            await self.stream.send_chunk(self.blob)
            await self.stream.send_payload_end()
        if self.two_processes:
            received, other_cpu = await asyncio.get_running_loop().run_in_executor(
                None, self.pipe.recv)
        else:
            received, other_cpu = await self.done.get()
        assert received == self.mib * MIB
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        self.cpu_split.append((cpu, other_cpu))
        return wall, cpu + other_cpu

    async def stop(self) -> None:
        self.reader.cancel()
        await self.stream.close()
        if self.two_processes:
            self.pipe.send("stop")
            await asyncio.get_running_loop().run_in_executor(None, self.child.join, 10)
        else:
            self.server.close()
            await self.server.wait_closed()


def _receiver_process(share_record: dict[str, Any], peer_id: str, mib: int,
                      pipe: Connection) -> None:
    async def main() -> None:
        registry = CredentialRegistry()
        registry.add_share(ShareKeys.from_record(share_record), peer_id)

        async def report(result: tuple[int, float]) -> None:
            pipe.send(result)

        server = await serve("127.0.0.1", 0, registry, receiver(mib, report, own_cpu=True),
                             CONFIG)
        pipe.send(server.sockets[0].getsockname()[1])
        await asyncio.get_running_loop().run_in_executor(None, pipe.recv)  # "stop"
        server.close()
    asyncio.run(main())


async def bulk(mib: int, repeat: int) -> dict[str, list[Measure]]:
    """Rounds of each kind, interleaved so that load from elsewhere hits all alike."""
    pairs = {"two": await BulkPair(mib, True).start(),
             "one": await BulkPair(mib, False).start()}
    results: dict[str, list[Measure]] = {"anchor": [], "two": [], "one": []}
    for _ in range(repeat):
        results["anchor"].append(anchor_round(mib * MIB))
        for name, pair in pairs.items():
            results[name].append(await pair.round())
    for pair in pairs.values():
        await pair.stop()
    sender, receiver_cpu = min(pairs["two"].cpu_split, key=sum)
    results["two_split"] = [(sender, receiver_cpu)]
    return results


async def drain_forever(stream: SessionStream) -> Any:
    """Keep the sender's side reading (pings, close) while it sends."""
    while await stream.next_event() is not None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=256, help="payload per bulk run (MiB)")
    ap.add_argument("--handshakes", type=int, default=200, help="handshakes to time")
    ap.add_argument("--repeat", type=int, default=5, help="bulk rounds (best is kept)")
    args = ap.parse_args()

    _, registry, grant = world()

    def handshakes() -> None:
        for _ in range(args.handshakes):
            handshake_in_memory(registry, grant)

    def exchanges() -> None:
        for _ in range(args.handshakes):
            x25519_exchange()

    t_hs = best_time(handshakes, 1) / args.handshakes
    t_dh = best_time(exchanges, 3) / args.handshakes
    t_tcp_hs = asyncio.run(tcp_handshakes(args.handshakes // 4 or 1))
    results = asyncio.run(bulk(args.mib, args.repeat))

    print(f"handshake, in memory (clearskies:2 + greeting/start/ping):    {t_hs * 1e3:8.3f} ms")
    print(f"  anchor: X25519 exchange (2 key pairs, 2 shared secrets):     {t_dh * 1e3:8.3f} ms"
          f"   ratio {t_hs / t_dh:5.1f}x")
    print(f"handshake over loopback TCP, connect to Ready:               {t_tcp_hs * 1e3:8.3f} ms")
    print(f"bulk: {args.mib} MiB as 1 MiB payload messages over loopback TCP (gzip off); best of "
          f"{args.repeat} rounds, interleaved with the anchor")
    print("                                                 MB/s   ratio   CPU ms/MiB  ratio")
    anchor_wall = min(w for w, _ in results["anchor"])
    anchor_cpu = min(c for _, c in results["anchor"])
    labels = {"anchor": "anchor: secretstream push+pull, 64 KiB, 1 core",
              "two": "two peers in two processes (one core each)",
              "one": "two peers in one process (one core)"}
    for name, label in labels.items():
        wall = min(w for w, _ in results[name])
        cpu = min(c for _, c in results[name])
        print(f"  {label:45s} {args.mib * MIB / wall / 1e6:7.1f}  {anchor_wall / wall:5.2f}"
              f"   {cpu / args.mib * 1e3:9.2f}  {anchor_cpu / cpu:5.2f}")
    sender, receiver_cpu = results["two_split"][0]
    print(f"  two processes, CPU per side: sender {sender / args.mib * 1e3:.2f} ms/MiB, "
          f"receiver {receiver_cpu / args.mib * 1e3:.2f} ms/MiB")
    print("  (ratio = anchor time / our time; CPU counts sender and receiver together)")


if __name__ == "__main__":
    main()
