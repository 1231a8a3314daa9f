"""Benchmark uTP against TCP: the secure session carrying one large payload.

Both transports carry the same ``clearskies:2`` session (gzip off) from a
sender to a receiver in this process, which checks the SHA-256 of what
arrived. Two links, each measured for TCP and uTP in the same run:

* **loopback**: straight to the listener;
* **faulty**: through the lab's fault proxy (``csembed.lab.fault_proxy``)
  adding ``--latency`` each way and, for uTP's datagrams, ``--loss``. The
  TCP proxy terminates TCP on both sides over loopback, so TCP pays the same
  latency but recovers no loss of its own: the anchor is TCP on a link with
  the same delay.

Prints MB/s for each and uTP's rate as a ratio of TCP's. uTP's loss response
is BEP 29's (the window halves once per round trip with loss), so random 2%
loss on a long round trip holds it to a fraction of TCP's rate: the figure to
watch is that the file arrives intact in bounded time.

Usage: ``python tools/bench/utp.py [--mb 50] [--latency 0.2] [--loss 0.02]
[--faulty-mb 50] [--skip-faulty]``
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import time
from typing import Any

from csembed.lab.fault_proxy import FaultProxy, Faults
from csembed.protocol.core import CoreConfig, Ready
from csembed.protocol.core_access import CredentialRegistry, Grant
from csembed.protocol.wire import PayloadChunk, PayloadEnd
from csembed.runtime.session_stream import SessionStream, connect, serve
from csembed.runtime.utp_endpoint import UtpEndpoint, connect_utp, serve_utp
from csembed.security.handshake import SessionClosed, SessionFailed
from csembed.security.keys import READ_WRITE, ShareKeys, new_peer_id

CONFIG = CoreConfig(gzip_level=0)
CHUNK = 64 * 1024


async def _receive(stream: SessionStream, done: asyncio.Future[tuple[int, str]]) -> None:
    digest = hashlib.sha256()
    size = 0
    while (event := await stream.next_event()) is not None:
        if isinstance(event, PayloadChunk):
            digest.update(event.data)
            size += len(event.data)
        elif isinstance(event, PayloadEnd):
            if not done.done():
                done.set_result((size, digest.hexdigest()))
        elif isinstance(event, SessionClosed | SessionFailed):
            break


async def _send(stream: SessionStream, blob: bytes) -> None:
    while True:
        event = await stream.next_event()
        if isinstance(event, Ready):
            break
        if event is None or isinstance(event, SessionFailed | SessionClosed):
            raise RuntimeError(f"handshake failed: {event}")
    await stream.send_message({"type": "bench.blob"}, payload=True)
    view = memoryview(blob)
    for i in range(0, len(blob), CHUNK):
        await stream.send_chunk(bytes(view[i:i + CHUNK]))
    await stream.send_payload_end()


async def one_run(kind: str, blob: bytes, faults: Faults | None) -> float:
    """Seconds from connect to the receiver holding every byte (checked)."""
    share = ShareKeys.generate()
    registry = CredentialRegistry()
    registry.add_share(share, new_peer_id())
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[int, str]] = loop.create_future()
    closers: list[Any] = []

    async def handler(stream: SessionStream) -> None:
        await _receive(stream, done)

    if kind == "tcp":
        server = await serve("127.0.0.1", 0, registry, handler, CONFIG)
        closers.append(server.close)
        port = int(server.sockets[0].getsockname()[1])
    else:
        listener = await UtpEndpoint.open("127.0.0.1", 0)
        serve_utp(listener, registry, handler, CONFIG)
        closers.append(listener.close)
        port = listener.local_address[1]
    proxy = None
    if faults is not None:
        proxy = FaultProxy("127.0.0.1:0", ("127.0.0.1", port), transport="udp" if kind == "utp"
                           else "tcp", faults=faults)
        await proxy.start()
        port = proxy.address[1]
    grant = Grant.share_key(share, READ_WRITE, new_peer_id())
    started = time.perf_counter()
    try:
        if kind == "tcp":
            stream = await connect("127.0.0.1", port, grant, CONFIG)
        else:
            dialer = await UtpEndpoint.open("127.0.0.1", 0)
            closers.append(dialer.close)
            stream = await connect_utp(dialer, "127.0.0.1", port, grant, CONFIG)
        await _send(stream, blob)
        size, digest = await done
        elapsed = time.perf_counter() - started
        await stream.close()
    finally:
        if proxy is not None:
            await proxy.close()
        for close in closers:
            close()
    if size != len(blob) or digest != hashlib.sha256(blob).hexdigest():
        raise SystemExit(f"{kind}: payload arrived damaged ({size} of {len(blob)} bytes)")
    return elapsed


def report(label: str, size: int, tcp: float, utp: float) -> None:
    tcp_rate, utp_rate = size / tcp / 1e6, size / utp / 1e6
    print(f"{label:<34} TCP {tcp_rate:8.2f} MB/s ({tcp:6.1f} s)   uTP {utp_rate:8.2f} MB/s "
          f"({utp:6.1f} s)   uTP/TCP {utp_rate / tcp_rate:5.2f}x   (intact)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=50, help="payload over loopback, MB")
    parser.add_argument("--faulty-mb", type=float, default=50,
                        help="payload over the faulty link, MB")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds, each way")
    parser.add_argument("--loss", type=float, default=0.02, help="uTP datagram loss, 0..1")
    parser.add_argument("--skip-faulty", action="store_true")
    args = parser.parse_args()
    blob = os.urandom(int(args.mb * 1e6))
    print(f"payload {len(blob) / 1e6:.0f} MB, secure session, gzip off; machine load "
          f"{os.getloadavg()[0]:.1f}")
    report("loopback", len(blob), await one_run("tcp", blob, None),
           await one_run("utp", blob, None))
    if not args.skip_faulty:
        blob = blob[:int(args.faulty_mb * 1e6)] if args.faulty_mb <= args.mb else \
            os.urandom(int(args.faulty_mb * 1e6))
        faults = Faults(latency=args.latency, loss=args.loss)
        tcp = await one_run("tcp", blob, Faults(latency=args.latency))
        utp = await one_run("utp", blob, faults)
        report(f"{args.latency * 1000:.0f} ms each way, {args.loss:.0%} loss "
               f"({len(blob) / 1e6:.0f} MB)", len(blob), tcp, utp)


if __name__ == "__main__":
    asyncio.run(main())
