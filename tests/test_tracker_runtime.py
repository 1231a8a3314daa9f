"""Tracker server and client over real loopback TCP, and ``csembed tracker``."""

from __future__ import annotations

import asyncio
import hashlib
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from csembed.cli_commands.tracker import ListenError, parse_listen
from csembed.discovery.backoff import Backoff
from csembed.discovery.tracker_messages import (
    TrackerConnection,
    TrackerRegister,
    TrackerStart,
    encode,
)
from csembed.discovery.tracker_registry import TrackerServerConfig
from csembed.discovery.tracker_session import PeersUpdate
from csembed.protocol.wire import Decoder, Message, encode_message
from csembed.runtime.tracker_client import TrackerClient
from csembed.runtime.tracker_server import TrackerServer

PROOFS = {hashlib.sha256(name).hexdigest(): name for name in (b"club x", b"club y", b"club z")}
CLUB_X, CLUB_Y, CLUB_Z = PROOFS
TIMEOUT = 10.0


def peer(n: int) -> str:
    return f"{n:032x}"


def addr(n: int, port: int = 4000) -> str:
    return f"tcp:192.0.2.{n}:{port}"


class Watched:
    """A TrackerClient plus everything its callbacks reported."""

    def __init__(self, port: int, ids: dict[str, str], addresses: list[str],
                 **kw: Any) -> None:
        self.updates: list[PeersUpdate] = []
        self.states: list[str] = []
        self.changed = asyncio.Event()
        self.client = TrackerClient("127.0.0.1", port, ids=ids, proofs=PROOFS,
                                    addresses=addresses,
                                    on_peers=self._on_peers, on_state=self._on_state,
                                    rng=random.Random(7), **kw)

    def _on_peers(self, update: PeersUpdate) -> None:
        self.updates.append(update)
        self.changed.set()

    def _on_state(self, state: str) -> None:
        self.states.append(state)
        self.changed.set()

    def view(self, club: str) -> dict[str, list[str]] | None:
        peers = self.client.peers.get(club)
        return None if peers is None else {p: [str(a) for a in v] for p, v in peers.items()}

    async def until(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(TIMEOUT):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    async def until_view(self, club: str, expected: dict[str, list[str]]) -> None:
        await self.until(lambda: self.view(club) == expected)


async def started_server(config: TrackerServerConfig | None = None,
                         port: int = 0) -> tuple[TrackerServer, int]:
    server = TrackerServer(config)
    await server.start("127.0.0.1", port)
    return server, server.addresses[0][1]


def test_two_clubs_several_clients_learn_only_their_own_club() -> None:
    async def main() -> None:
        server, port = await started_server()
        a = Watched(port, {CLUB_X: peer(1)}, [addr(1)])
        b = Watched(port, {CLUB_X: peer(2), CLUB_Y: peer(22)}, [addr(2)])
        c = Watched(port, {CLUB_Y: peer(3)}, [addr(3), "utp:[2001:db8::3]:9"])
        d = Watched(port, {CLUB_Z: peer(4)}, [addr(4)])
        everyone = (a, b, c, d)
        try:
            for w in everyone:
                w.client.start()
            await a.until_view(CLUB_X, {peer(2): [addr(2)]})
            await b.until_view(CLUB_X, {peer(1): [addr(1)]})
            await b.until_view(CLUB_Y, {peer(3): [addr(3), "utp:[2001:db8::3]:9"]})
            await c.until_view(CLUB_Y, {peer(22): [addr(2)]})
            await d.until_view(CLUB_Z, {})
            assert all(w.client.connected and w.client.your_ip == "127.0.0.1"
                       for w in everyone)

            # Addresses change: both clubs b is in hear of it.
            b.client.set_addresses([addr(2, 5000)])
            await a.until_view(CLUB_X, {peer(2): [addr(2, 5000)]})
            await c.until_view(CLUB_Y, {peer(22): [addr(2, 5000)]})

            # b leaves club X: a's view of X empties, c's view of Y is unchanged.
            b.client.set_ids({CLUB_Y: peer(22)})
            await a.until_view(CLUB_X, {})
            assert b.view(CLUB_X) is None

            # c goes away: b hears that club Y is empty.
            await c.client.close()
            await b.until_view(CLUB_Y, {})

            assert {u.club_id for u in a.updates} == {CLUB_X}
            assert {u.club_id for u in c.updates} == {CLUB_Y}
            assert {u.club_id for u in d.updates} == {CLUB_Z}
            assert all(peer(22) not in u.peers for u in a.updates)
            assert all(peer(2) not in u.peers for u in c.updates)
            assert server.registry.client_count == 3
        finally:
            for w in everyone:
                await w.client.close()
            await server.close()

    asyncio.run(main())


async def raw_client(port: int, ttl: int, ids: dict[str, str],
                     addresses: tuple[str, ...]) -> tuple[asyncio.StreamReader,
                                                          asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    greeting = await reader.readuntil(b"}\n")
    assert b'"tracker.greeting"' in greeting
    writer.write(encode(TrackerStart(ttl=ttl)) + encode(TrackerConnection(addresses))
                 + encode(TrackerRegister(ids, {c: PROOFS[c].hex() for c in ids if c in PROOFS})))
    await writer.drain()
    return reader, writer


def test_a_silent_client_expires_by_ttl_and_its_club_is_told() -> None:
    async def main() -> None:
        server, port = await started_server(TrackerServerConfig(min_ttl=1, max_ttl=60))
        watcher = Watched(port, {CLUB_X: peer(2)}, [addr(2)], ttl=60)
        try:
            watcher.client.start()
            reader, writer = await raw_client(port, 1, {CLUB_X: peer(1)}, (addr(1),))
            silent_since = time.monotonic()
            await watcher.until_view(CLUB_X, {peer(1): [addr(1)]})
            await watcher.until_view(CLUB_X, {})
            async with asyncio.timeout(TIMEOUT):
                rest = await reader.read()  # read to EOF: the tracker hung up on us
            assert b"tracker.peers" in rest or rest == b""
            assert time.monotonic() - silent_since >= 0.9
            assert watcher.client.connected and server.registry.client_count == 1
            writer.close()
        finally:
            await watcher.client.close()
            await server.close()

    asyncio.run(main())


def test_client_pings_every_half_ttl() -> None:
    async def main() -> None:
        pings: list[float] = []
        two = asyncio.Event()

        async def fake_tracker(reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter) -> None:
            writer.write(encode_message({"type": "tracker.greeting", "min_ttl": 1,
                                         "max_ttl": 1, "protocol": [1]}))
            decoder = Decoder()
            while data := await reader.read(4096):
                decoder.receive_data(data)
                for event in decoder.events():
                    if isinstance(event, Message) and event.type == "tracker.ping":
                        pings.append(time.monotonic())
                        if len(pings) >= 2:
                            two.set()
            writer.close()

        server = await asyncio.start_server(fake_tracker, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = Watched(port, {}, [], ttl=300)
        try:
            client.client.start()
            async with asyncio.timeout(TIMEOUT):
                await two.wait()
            assert pings[1] - pings[0] >= 0.45  # TTL 1 s (clamped): a ping every 0.5 s
        finally:
            await client.client.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def test_garbage_gets_a_client_dropped_and_the_server_keeps_serving() -> None:
    async def main() -> None:
        server, port = await started_server()
        good = Watched(port, {CLUB_X: peer(2)}, [addr(2)])
        try:
            good.client.start()
            reader, writer = await raw_client(port, 60, {CLUB_X: peer(1)}, (addr(1),))
            await good.until_view(CLUB_X, {peer(1): [addr(1)]})
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
            async with asyncio.timeout(TIMEOUT):
                await reader.read()  # to EOF
            await good.until_view(CLUB_X, {})
            assert good.client.connected
        finally:
            await good.client.close()
            await server.close()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_client_backs_off_reconnects_and_reregisters() -> None:
    async def main() -> None:
        port = free_port()
        fast = Backoff(initial=0.02, maximum=0.1)
        a = Watched(port, {CLUB_X: peer(1)}, [addr(1)], backoff=fast)
        b = Watched(port, {CLUB_X: peer(2)}, [addr(2)], backoff=Backoff(0.02, 0.1))
        server = None
        try:
            a.client.start()
            await a.until(lambda: a.states.count("waiting") >= 3)
            assert not a.client.connected
            server, _ = await started_server(port=port)
            b.client.start()
            await a.until_view(CLUB_X, {peer(2): [addr(2)]})
            attempts = a.client.attempts

            await server.close()  # the tracker goes away ...
            await a.until(lambda: a.client.state == "waiting")
            server, _ = await started_server(port=port)  # ... and comes back
            await a.until(lambda: a.client.attempts > attempts and a.client.connected)
            await b.until(lambda: b.client.connected)
            # Both registered again on the new tracker and see each other.
            await a.until_view(CLUB_X, {peer(2): [addr(2)]})
            await b.until_view(CLUB_X, {peer(1): [addr(1)]})
        finally:
            await a.client.close()
            await b.client.close()
            if server is not None:
                await server.close()

    asyncio.run(main())


def test_backoff_grows_caps_and_resets() -> None:
    backoff = Backoff(initial=1, maximum=8, factor=2, jitter=0.5)
    assert [backoff.next_delay(0.0) for _ in range(6)] == [1, 2, 4, 8, 8, 8]
    backoff.reset()
    assert backoff.next_delay(0.999) == pytest.approx(0.5005)
    with pytest.raises(ValueError):
        Backoff(initial=0)


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:49200") == ("127.0.0.1", 49200)
    assert parse_listen("[::1]:0") == ("::1", 0)
    assert parse_listen(":5") == ("0.0.0.0", 5)
    for bad in ("localhost", "::1:80", "host:99999", "host:x"):
        with pytest.raises(ListenError):
            parse_listen(bad)


def test_cli_tracker_serves_until_sigterm() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "csembed", "tracker", "--listen",
                             "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("tracker listening on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])

        async def main() -> None:
            a = Watched(port, {CLUB_X: peer(1)}, [addr(1)])
            b = Watched(port, {CLUB_X: peer(2)}, [addr(2)])
            try:
                a.client.start()
                b.client.start()
                await a.until_view(CLUB_X, {peer(2): [addr(2)]})
                await b.until_view(CLUB_X, {peer(1): [addr(1)]})
            finally:
                await a.client.close()
                await b.client.close()

        asyncio.run(main())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_tracker_reports_a_bad_listen_address() -> None:
    result = subprocess.run([sys.executable, "-m", "csembed", "tracker", "--listen", "nowhere"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "expected HOST:PORT" in result.stderr
