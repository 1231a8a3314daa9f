"""Issue 10 item 5: a hostile peer list cannot make a daemon dial without bound.

A fake tracker answers the daemon's registration with 4,096 made-up peers
per club, whose addresses point at 50 "sinks" on 127.0.0.2 ... 127.0.0.51
that accept connections and never answer (so every dial holds on until its
handshake times out). The daemon must keep its memory bounded, have at most
a few connections to the sinks in progress at once, dial no sink more than
a few times a minute, and still serve a legitimate peer.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections import defaultdict

import pytest
from test_daemon_support import (  # noqa: F401  (fixtures)
    Procs,
    procs_fixture,
    short_tmp_fixture,
    wait_for,
)
from test_hostile_support import MiB, memory

from csembed.discovery.dial_policy import DialPolicy
from csembed.discovery.tracker_messages import (
    TrackerGreeting,
    TrackerPeers,
    TrackerRegister,
    encode,
    message_from_body,
)
from csembed.protocol.wire import NEED_DATA, Decoder, Limits, Message

SINKS = [f"127.0.0.{n}" for n in range(2, 52)]
PEERS = int(os.environ.get("CSEMBED_HOSTILE_PEERS", "4096"))
OBSERVE = 15.0  # seconds the dialling is watched


class Sinks:
    """Listeners that accept and stay silent; they count what reaches them."""

    def __init__(self) -> None:
        first = socket.create_server((SINKS[0], 0))
        self.port = first.getsockname()[1]
        self.listeners = [first] + [socket.create_server((h, self.port)) for h in SINKS[1:]]
        self.times: dict[str, list[float]] = defaultdict(list)
        self.open: list[socket.socket] = []
        self.max_open = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import selectors
        with selectors.DefaultSelector() as sel:
            for listener in self.listeners:
                listener.setblocking(False)
                sel.register(listener, selectors.EVENT_READ, "listen")
            while not self.stop.is_set():
                # Closes before accepts: a connection the daemon closed before dialling
                # the next one must not be counted as open beside it because both
                # events came back from one select().
                ready = sorted(sel.select(0.1), key=lambda event: event[0].data == "listen")
                for key, _ in ready:
                    sock = key.fileobj
                    if key.data == "listen":
                        try:
                            conn, _ = sock.accept()  # type: ignore[union-attr]
                        except OSError:
                            continue
                        conn.setblocking(False)
                        sel.register(conn, selectors.EVENT_READ, "conn")
                        with self.lock:
                            self.times[conn.getsockname()[0]].append(time.monotonic())
                            self.open.append(conn)
                            self.max_open = max(self.max_open, len(self.open))
                    else:
                        try:
                            data = sock.recv(4096)  # type: ignore[union-attr]
                        except OSError:
                            data = b""
                        if not data:
                            sel.unregister(sock)
                            with self.lock:
                                self.open.remove(sock)  # type: ignore[arg-type]
                            sock.close()  # type: ignore[union-attr]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for sock in self.listeners + self.open:
            sock.close()


def _serve_fake_tracker(sinks: Sinks, ready: threading.Event, box: dict, stop: threading.Event,
                        ) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(encode(TrackerGreeting(min_ttl=60, max_ttl=3600)))
        decoder = Decoder(Limits(max_body=1 << 20))
        while not stop.is_set():
            data = await reader.read(65536)
            if not data:
                return
            decoder.receive_data(data)
            while (event := decoder.next_event()) is not NEED_DATA:
                message = message_from_body(event.body) if isinstance(event, Message) else None
                if isinstance(message, TrackerRegister):
                    for club in message.ids:
                        peers = {os.urandom(16).hex(): (
                            f"tcp:{SINKS[i % len(SINKS)]}:{sinks.port}",
                            f"tcp:{SINKS[(i + 1) % len(SINKS)]}:{sinks.port}")
                            for i in range(PEERS)}
                        writer.write(encode(TrackerPeers(id=club, peers=peers)))
                        box["lists"] = box.get("lists", 0) + 1
            await writer.drain()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        box["port"] = server.sockets[0].getsockname()[1]
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.1)
        server.close()

    asyncio.run(main())


@pytest.mark.once
def test_a_tracker_listing_4096_fake_peers_gets_paced_dialling(procs: Procs) -> None:
    sinks = Sinks()
    box: dict = {}
    ready, stop = threading.Event(), threading.Event()
    tracker = threading.Thread(target=_serve_fake_tracker, args=(sinks, ready, box, stop),
                               daemon=True)
    tracker.start()
    try:
        assert ready.wait(10)
        a = procs.daemon("a", "--tracker", f"127.0.0.1:{box['port']}", board="wifi-piano")
        pa, pb = procs.root / "A", procs.root / "B"
        pa.mkdir()
        (pa / "recital.mid").write_bytes(os.urandom(50_000))
        code = json.loads(a.cli("share", pa, "--json").stdout)["access_code"]
        wait_for(lambda: box.get("lists", 0) >= 1, "the fake tracker to send its list")
        wait_for(lambda: sum(map(len, sinks.times.values())) >= 1, "A to dial a sink")
        started = time.monotonic()
        b = procs.daemon("b", "--peer", a.address)
        b.cli("attach", code, pb, "--json", "--timeout", "60")
        wait_for(lambda: (pb / "recital.mid").is_file(), "B to receive A's file")
        served = time.monotonic() - started
        # watch the dialling for a while (polling the counts; nothing waits on it)
        deadline = started + OBSERVE
        while time.monotonic() < deadline:
            assert a.proc.poll() is None
            time.sleep(0.5)
        with sinks.lock:
            dials = {host: list(times) for host, times in sinks.times.items()}
            max_open = sinks.max_open
        peak = memory(a.proc.pid)["VmHWM"]
    finally:
        stop.set()
        tracker.join(10)
        sinks.close()
    per_minute = DialPolicy().per_minute
    busiest = max(len(t) for t in dials.values())
    total = sum(len(t) for t in dials.values())
    print(f"{total} dials to {len(dials)} sink addresses in {OBSERVE:g} s, at most "
          f"{max_open} open at once, busiest address {busiest}; legitimate peer served in "
          f"{served:.1f} s; A's peak RSS {peak / MiB:.1f} MiB")
    assert max_open <= 8
    assert busiest <= per_minute
    assert served < 10
    assert peak < 64_000_000


def test_dial_policy_paces_each_address() -> None:
    policy = DialPolicy(per_minute=3, initial=1.0, maximum=8.0, max_entries=2)
    a = ("127.0.0.2", 1)
    for t in (0.0, 1.0, 2.0):
        assert policy.wait(a, t) == 0
        policy.started(a, t)
    assert policy.wait(a, 2.0) == 58.0  # three in the last minute: the oldest must age out
    assert policy.wait(a, 60.0) == 0
    policy.started(("127.0.0.3", 1), 61.0)
    policy.started(("127.0.0.4", 1), 62.0)
    assert len(policy) == 2  # least recently used address dropped


def test_dial_policy_backs_off_after_failures() -> None:
    policy = DialPolicy(per_minute=100, initial=1.0, maximum=8.0)
    b = ("127.0.0.3", 1)
    waits = []
    for _ in range(5):
        policy.started(b, 100.0)
        policy.failed(b, 100.0)
        waits.append(policy.wait(b, 100.0))
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0]
    policy.succeeded(b)
    assert policy.wait(b, 100.0) == 0


def test_lan_sightings_per_club_are_bounded() -> None:
    """Anyone on the LAN can announce any peer for a club: only so many are kept."""
    from csembed.runtime.lan_service import LanSighting
    from csembed.runtime.peer_finder import MAX_PEERS_PER_REPLY, PeerFinder

    class NotListening:  # a daemon that has not started listening: nothing is dialled
        def listening_on(self) -> None:
            return None

    finder = PeerFinder(NotListening())  # type: ignore[arg-type]
    club = "ab" * 32
    for n in range(5000):
        finder._on_sighting(LanSighting(club, f"{n:032x}", "127.0.0.9", 1000 + n % 60000))
    assert len(finder.sightings(club)) == MAX_PEERS_PER_REPLY
