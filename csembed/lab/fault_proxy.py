"""A userspace fault-injecting proxy for TCP and UDP, as a library and a command.

TCP: the proxy listens, and for each accepted connection dials the target and
pumps bytes both ways. Each direction is a reader and a writer joined by a
queue bounded in bytes: the reader asks ``faults.LinkDirection`` what becomes
of each chunk (flipped bit, reset, when it arrives) and queues it; the writer
waits until the chunk's delivery time and writes it. A reset aborts both
sockets with ``SO_LINGER`` 0, so both ends see a real RST. A half-close
(EOF) is passed on in order after the data before it.

UDP: the proxy relays datagrams between each client address and the target,
through one upstream socket per client (so replies find their client); a
datagram may be lost, delayed (possibly reordering) or flipped. Flows idle
for ``udp_idle`` seconds are closed.

Faults are a frozen ``Faults`` value read for every chunk, so assigning
``proxy.faults`` (or calling ``proxy.update``) changes them at run time; the
bandwidth budget is one token bucket per direction shared by all
connections. Randomness comes from the ``rng`` passed in (seed 0 by default).

    async with FaultProxy("127.0.0.1:0", ("127.0.0.1", 8000),
                          faults=Faults(latency=0.2)) as proxy:
        host, port = proxy.address

    python -m csembed.lab.fault_proxy --listen 127.0.0.1:9000 \\
        --target 127.0.0.1:8000 --latency 200ms --loss 2%

The command also reads ``name=value`` settings from stdin, one line at a
time (``latency=50ms flip-probability=0.1%``), to change faults while it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import random
import socket
import struct
import sys
import threading
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, TypeVar

from csembed.lab.faults import (
    Fate,
    Faults,
    LinkDirection,
    TokenBucket,
    parse_probability,
    parse_rate,
    parse_setting,
)
from csembed.units import parse_duration, parse_size

__all__ = ["FaultProxy", "FaultProxyThread", "Faults", "ProxyStats", "main", "parse_address"]

Address = tuple[str, int]
T = TypeVar("T")
CHUNK = 16 * 1024


@dataclass
class ProxyStats:
    """Running counts, for tests and the command's exit summary."""

    connections: int = 0
    bytes_up: int = 0  # delivered client -> target
    bytes_down: int = 0  # delivered target -> client
    chunks: int = 0
    flips: int = 0
    resets: int = 0
    datagrams: int = 0
    dropped: int = 0


def parse_address(text: str | Address, *, default_host: str = "127.0.0.1") -> Address:
    """``"host:port"``, ``"[::1]:port"`` or ``":port"`` (or a tuple) as ``(host, port)``."""
    if isinstance(text, tuple):
        return (text[0], int(text[1]))
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected an address such as 127.0.0.1:9000, got {text!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return (host or default_host, int(port))


class FaultProxy:
    """Listens on ``listen``, forwards to ``target`` and applies ``faults`` on the way."""

    def __init__(
        self,
        listen: str | Address,
        target: str | Address,
        *,
        transport: Literal["tcp", "udp"] = "tcp",
        faults: Faults | None = None,
        rng: random.Random | None = None,
        buffer: int = 1 << 20,
        udp_idle: float = 60.0,
    ) -> None:
        if transport not in ("tcp", "udp"):
            raise ValueError(f"transport must be 'tcp' or 'udp', got {transport!r}")
        self.listen = parse_address(listen)
        self.target = parse_address(target)  # may be reassigned; used for new connections
        self.transport = transport
        self.faults = faults or Faults()
        self.rng = rng or random.Random(0)
        self.buffer = buffer
        self.udp_idle = udp_idle
        self.stats = ProxyStats()
        self._up_bucket = TokenBucket()
        self._down_bucket = TokenBucket()
        self._server: asyncio.Server | None = None
        self._links: set[_TcpLink] = set()
        self._udp_front: asyncio.DatagramTransport | None = None
        self._flows: dict[Address, _UdpFlow] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._address: Address | None = None

    # -- control -----------------------------------------------------------

    @property
    def address(self) -> Address:
        """The address the proxy listens on (with the real port when 0 was asked)."""
        if self._address is None:
            raise RuntimeError("the proxy is not started")
        return self._address

    def update(self, **changes: float | int) -> Faults:
        """Change some faults now (``update(latency=0.1, loss=0.02)``); returns the new value."""
        self.faults = dataclasses.replace(self.faults, **changes)  # type: ignore[arg-type]
        return self.faults

    def reset_connections(self) -> int:
        """Reset every open TCP connection now; returns how many there were."""
        links = list(self._links)
        for link in links:
            link.reset()
        return len(links)

    @property
    def open_connections(self) -> int:
        return len(self._links) if self.transport == "tcp" else len(self._flows)

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> FaultProxy:
        loop = asyncio.get_running_loop()
        if self.transport == "tcp":
            self._server = await asyncio.start_server(self._accept, *self.listen)
            sockname = self._server.sockets[0].getsockname()
        else:
            front, _ = await loop.create_datagram_endpoint(
                lambda: _UdpFront(self), local_addr=self.listen)
            self._udp_front = front
            sockname = front.get_extra_info("sockname")
            self._sweeper = asyncio.create_task(self._sweep_flows())
        self._address = (sockname[0], sockname[1])
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self.reset_connections()
            await self._server.wait_closed()
            self._server = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for flow in list(self._flows.values()):
            flow.close()
        self._flows.clear()
        if self._udp_front is not None:
            self._udp_front.close()
            self._udp_front = None

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await self.close()

    # -- TCP ---------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        link = _TcpLink(self, reader, writer)
        self._links.add(link)
        try:
            await link.run()
        finally:
            self._links.discard(link)

    # -- UDP ---------------------------------------------------------------

    def _from_client(self, data: bytes, client: Address) -> None:
        flow = self._flows.get(client)
        if flow is None:
            flow = self._flows[client] = _UdpFlow(self, client)
            asyncio.get_running_loop().create_task(flow.open())
        flow.send_up(data)

    async def _sweep_flows(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(0.5, self.udp_idle / 4))
            for client, flow in list(self._flows.items()):
                if loop.time() - flow.last_active > self.udp_idle:
                    flow.close()
                    del self._flows[client]


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _TcpLink:
    """One accepted connection and its upstream: four tasks, two per direction."""

    def __init__(self, proxy: FaultProxy, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.client = (reader, writer)
        self.upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.sent = 0
        self.closed = False
        self._tasks: list[asyncio.Task[None]] = []

    async def run(self) -> None:
        proxy = self.proxy
        try:
            self.upstream = await asyncio.open_connection(*proxy.target)
        except OSError:
            _abort_with_rst(self.client[1])
            return
        if self.closed:  # reset while dialling
            self.reset()
            return
        up = _Pipe(self, self.client[0], self.upstream[1],
                   LinkDirection(proxy.rng, proxy._up_bucket, ordered=True), upward=True)
        down = _Pipe(self, self.upstream[0], self.client[1],
                     LinkDirection(proxy.rng, proxy._down_bucket, ordered=True), upward=False)
        self._tasks = [asyncio.create_task(self._guard(coro)) for coro in
                       (up.read(), up.write(), down.read(), down.write())]
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.closed:
            self.reset()
        else:
            for _, writer in (self.client, self.upstream):
                writer.close()

    async def _guard(self, pump: Coroutine[Any, Any, None]) -> None:
        """Run one pump; an error on either socket (a reset, a dead peer) resets both
        ends at once, as a router would pass the RST on, rather than leave the other
        end connected to nothing."""
        try:
            await pump
        except (OSError, asyncio.IncompleteReadError):
            self.reset()

    def reset(self) -> None:
        self.closed = True
        for _, writer in (self.client, self.upstream) if self.upstream else (self.client,):
            _abort_with_rst(writer)
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()


class _Pipe:
    """One direction of a TCP link: reader decides fates, writer delivers them on time."""

    def __init__(self, link: _TcpLink, source: asyncio.StreamReader,
                 sink: asyncio.StreamWriter, direction: LinkDirection, *, upward: bool) -> None:
        self.link = link
        self.source = source
        self.sink = sink
        self.direction = direction
        self.upward = upward
        self.queue: asyncio.Queue[Fate | None] = asyncio.Queue()
        self.queued = 0
        self.drained = asyncio.Event()

    async def read(self) -> None:
        proxy = self.link.proxy
        loop = asyncio.get_running_loop()
        while True:
            data = await self.source.read(CHUNK)
            if not data:
                self.queue.put_nowait(None)
                return
            fate = self.direction.decide(data, proxy.faults, loop.time(), sent=self.link.sent)
            self.link.sent += len(fate.data)
            proxy.stats.chunks += 1
            proxy.stats.flips += fate.flipped
            while self.queued and self.queued + len(fate.data) > proxy.buffer:
                self.drained.clear()
                await self.drained.wait()
            self.queued += len(fate.data)
            self.queue.put_nowait(fate)
            if fate.reset:
                return

    async def write(self) -> None:
        proxy = self.link.proxy
        loop = asyncio.get_running_loop()
        while True:
            fate = await self.queue.get()
            if fate is None:
                if self.sink.can_write_eof() and not self.sink.is_closing():
                    self.sink.write_eof()
                return
            delay = fate.deliver_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if fate.data:
                self.sink.write(fate.data)
                await self.sink.drain()
            if self.upward:
                proxy.stats.bytes_up += len(fate.data)
            else:
                proxy.stats.bytes_down += len(fate.data)
            self.queued -= len(fate.data)
            self.drained.set()
            if fate.reset:
                proxy.stats.resets += 1
                self.link.reset()
                return


class _UdpFront(asyncio.DatagramProtocol):
    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.proxy._from_client(data, (str(addr[0]), int(addr[1])))


class _UdpBack(asyncio.DatagramProtocol):
    def __init__(self, flow: _UdpFlow) -> None:
        self.flow = flow

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.flow.send_down(data)


class _UdpFlow:
    """Datagrams between one client address and the target, through its own socket."""

    def __init__(self, proxy: FaultProxy, client: Address) -> None:
        self.proxy = proxy
        self.client = client
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.last_active = loop.time()
        self.up = LinkDirection(proxy.rng, proxy._up_bucket, ordered=False)
        self.down = LinkDirection(proxy.rng, proxy._down_bucket, ordered=False)
        self.back: asyncio.DatagramTransport | None = None
        self.pending: list[bytes] = []
        self.closed = False

    async def open(self) -> None:
        try:
            back, _ = await self.loop.create_datagram_endpoint(
                lambda: _UdpBack(self), remote_addr=self.proxy.target)
        except OSError:
            self.closed = True
            return
        if self.closed:
            back.close()
            return
        self.back = back
        for data in self.pending:
            back.sendto(data)
        self.pending.clear()

    def close(self) -> None:
        self.closed = True
        if self.back is not None:
            self.back.close()

    def send_up(self, data: bytes) -> None:
        self._relay(data, self.up, upward=True)

    def send_down(self, data: bytes) -> None:
        self._relay(data, self.down, upward=False)

    def _relay(self, data: bytes, direction: LinkDirection, *, upward: bool) -> None:
        stats = self.proxy.stats
        self.last_active = now = self.loop.time()
        stats.datagrams += 1
        fate = direction.decide(data, self.proxy.faults, now)
        if fate.dropped:
            stats.dropped += 1
            return
        stats.flips += fate.flipped
        self.loop.call_at(fate.deliver_at, self._deliver, fate.data, upward)

    def _deliver(self, data: bytes, upward: bool) -> None:
        if self.closed:
            return
        stats = self.proxy.stats
        if upward:
            stats.bytes_up += len(data)
            if self.back is None:
                self.pending.append(data)
            else:
                self.back.sendto(data)
        elif self.proxy._udp_front is not None:
            stats.bytes_down += len(data)
            self.proxy._udp_front.sendto(data, self.client)


class FaultProxyThread:
    """A :class:`FaultProxy` on its own event loop in a background thread.

    For synchronous code (tests that drive subprocess daemons): ``with
    FaultProxyThread(proxy) as proxy: ...`` starts it and stops it; change
    faults with ``proxy.update(...)`` from any thread (assigning a frozen value
    is atomic), and read ``proxy.stats`` for progress.
    """

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="fault-proxy")

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self._loop).result(30)
        return self.proxy

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    def call(self, function: Callable[[], T]) -> T:
        """Run ``function`` on the proxy's loop and return its result."""
        async def run() -> T:
            return function()
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(30)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.proxy.close(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()


# -- command -----------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m csembed.lab.fault_proxy",
        description="Forward TCP or UDP from --listen to --target, adding latency, loss, "
                    "a bandwidth cap, resets and bit flips. While running, lines such as "
                    "'latency=50ms loss=1%' on stdin change the faults.")
    parser.add_argument("--listen", required=True, help="address to listen on, e.g. :9000")
    parser.add_argument("--target", required=True, help="address to forward to")
    parser.add_argument("--udp", action="store_true", help="relay UDP datagrams instead of TCP")
    parser.add_argument("--latency", type=parse_duration, default=0.0,
                        help="one-way delay, e.g. 200ms")
    parser.add_argument("--jitter", type=parse_duration, default=0.0,
                        help="extra uniform random delay up to this, e.g. 20ms")
    parser.add_argument("--loss", type=parse_probability, default=0.0,
                        help="UDP datagram loss probability, e.g. 2%%")
    parser.add_argument("--bandwidth", type=parse_rate, default=0,
                        help="cap per direction in bytes/s, e.g. 1MB or 64KiB/s")
    parser.add_argument("--reset-after", type=parse_size, default=0,
                        help="reset each TCP connection after this many bytes")
    parser.add_argument("--reset-probability", type=parse_probability, default=0.0,
                        help="chance per chunk of resetting its TCP connection")
    parser.add_argument("--flip-probability", type=parse_probability, default=0.0,
                        help="chance per chunk or datagram of flipping one bit")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault RNG")
    return parser


def _apply_line(proxy: FaultProxy, line: str) -> None:
    changes: dict[str, float | int] = {}
    try:
        for word in line.split():
            name, sep, value = word.partition("=")
            if not sep:
                raise ValueError(f"expected name=value, got {word!r}")
            key, parsed = parse_setting(name, value)
            changes[key] = parsed
        faults = proxy.update(**changes)
    except (ValueError, TypeError) as error:
        print(f"fault proxy: {error}", file=sys.stderr, flush=True)
        return
    print(f"fault proxy: now {faults}", file=sys.stderr, flush=True)


async def _serve(args: argparse.Namespace) -> ProxyStats:
    import signal

    faults = Faults(latency=args.latency, jitter=args.jitter, loss=args.loss,
                    bandwidth=args.bandwidth, reset_after=args.reset_after,
                    reset_probability=args.reset_probability,
                    flip_probability=args.flip_probability)
    proxy = FaultProxy(args.listen, args.target, transport="udp" if args.udp else "tcp",
                       faults=faults, rng=random.Random(args.seed))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    def read_stdin() -> None:
        for line in sys.stdin:
            if line.strip():
                loop.call_soon_threadsafe(_apply_line, proxy, line)

    async with proxy:
        host, port = proxy.address
        kind = "udp" if args.udp else "tcp"
        print(f"fault proxy {kind} {host}:{port} -> {proxy.target[0]}:{proxy.target[1]} "
              f"{proxy.faults}", flush=True)
        threading.Thread(target=read_stdin, daemon=True).start()
        await stop.wait()
    return proxy.stats


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        parse_address(args.listen)
        parse_address(args.target)
    except ValueError as error:
        print(f"fault proxy: {error}", file=sys.stderr)
        return 2
    stats = asyncio.run(_serve(args))
    print(f"fault proxy: {stats}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
