"""LAN broadcast: codec, schedule, loopback announcer/listener, and a two-namespace test.

The loopback tests bind 127.0.0.1 on a free port, so nothing reaches a real
LAN. The namespace test (root only) uses the real port 60106 on a veth pair
between two network namespaces it creates and removes itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from csembed.discovery.errors import BroadcastError
from csembed.discovery.lan_broadcast import (
    Announcement,
    AnnounceSchedule,
    decode_announcement,
    encode_announcement,
)
from csembed.runtime.lan_service import LanAnnouncer, LanListener, LanSighting

CLUB_X = "adf6447b553841835aaa712219e01f10486fd1003b1324e94de59f5646b060f3"
CLUB_Y = "b2" * 32
PEER_A = "2a3728dca353324de4d6bfbebf2128d9"
PEER_B = "b" * 32
TIMEOUT = 10.0


# -- codec --------------------------------------------------------------------


def test_encoding_is_the_drafts_json() -> None:
    data = encode_announcement(Announcement(CLUB_X, PEER_A, 40121))
    assert json.loads(data) == {"name": "ClearSkiesBroadcast", "version": 1, "id": CLUB_X,
                                "peer": PEER_A, "myport": 40121}
    assert b" " not in data and len(data) < 200


def test_decoding_round_trips_and_normalises_case_and_ignores_extra_members() -> None:
    body = {"name": "ClearSkiesBroadcast", "version": 1, "id": CLUB_X.upper(),
            "peer": PEER_A.upper(), "myport": 40121, "future": {"x": 1}}
    assert decode_announcement(json.dumps(body).encode()) == Announcement(CLUB_X, PEER_A, 40121)


def datagram(**changes: Any) -> bytes:
    body: dict[str, Any] = {"name": "ClearSkiesBroadcast", "version": 1, "id": CLUB_X,
                            "peer": PEER_A, "myport": 40121}
    for key, value in changes.items():
        if value is ...:
            del body[key]
        else:
            body[key] = value
    return json.dumps(body).encode()


@pytest.mark.parametrize("data, fragment", [
    (b"x" * 513, "over 512"),
    (b"\xff\xfe{}", "not UTF-8 JSON"),
    (b"{not json", "not UTF-8 JSON"),
    (b'{"name":"ClearSkiesBroadcast","version":1,"myport":NaN}', "not UTF-8 JSON"),
    (b"[1,2]", "not a JSON object"),
    (b"[" * 250 + b"]" * 250, "not a JSON object"),
    (datagram(name="SomethingElse"), "name"),
    (datagram(name=...), "name"),
    (datagram(version=2), "version 2"),
    (datagram(version=True), "version True"),
    (datagram(version="1"), "version 1 is not"),
    (datagram(id="ab" * 31), "club ID"),
    (datagram(peer=PEER_A + "0"), "peer ID"),
    (datagram(peer=None), "peer ID"),
    (datagram(myport=0), "outside 1..65535"),
    (datagram(myport=65536), "outside 1..65535"),
    (datagram(myport="80"), "must be an integer"),
    (datagram(myport=False), "must be an integer"),
    (datagram(myport=...), "lacks 'myport'"),
])
def test_junk_and_foreign_datagrams_are_refused(data: bytes, fragment: str) -> None:
    with pytest.raises(BroadcastError, match=fragment):
        decode_announcement(data)


# -- schedule -----------------------------------------------------------------


def test_schedule_runs_at_start_then_every_interval() -> None:
    schedule = AnnounceSchedule(interval=60, min_gap=1)
    assert schedule.due(0.0)
    schedule.sent(0.0)
    assert not schedule.due(59.9) and schedule.get_timer() == 60.0
    assert schedule.due(60.0)


def test_pokes_are_coalesced_and_spaced_by_min_gap() -> None:
    schedule = AnnounceSchedule(interval=60, min_gap=1)
    schedule.sent(100.0)
    for t in (100.1, 100.2, 100.3):
        schedule.poke(t)
    assert schedule.get_timer() == 101.0 and not schedule.due(100.9)
    assert schedule.due(101.0)
    schedule.sent(101.0)
    schedule.poke(130.0)  # long after the last round: at once
    assert schedule.due(130.0)
    with pytest.raises(ValueError):
        AnnounceSchedule(interval=1, min_gap=2)


# -- loopback -----------------------------------------------------------------


class Sightings:
    def __init__(self) -> None:
        self.seen: list[LanSighting] = []
        self.changed = asyncio.Event()

    def __call__(self, sighting: LanSighting) -> None:
        self.seen.append(sighting)
        self.changed.set()

    async def until(self, count: int) -> None:
        async with asyncio.timeout(TIMEOUT):
            while len(self.seen) < count:
                self.changed.clear()
                await self.changed.wait()


def test_announcer_and_listener_on_loopback() -> None:
    async def main() -> None:
        sightings = Sightings()
        listener = LanListener(sightings, host="127.0.0.1", port=0)
        await listener.start()
        announcer = LanAnnouncer(ids={CLUB_X: PEER_A, CLUB_Y: PEER_A}, port=40121,
                                 broadcast_address="127.0.0.1",
                                 broadcast_port=listener.port, interval=3600, min_gap=0.01)
        rounds = asyncio.Event()
        announcer.on_round = lambda n: rounds.set()
        try:
            await announcer.start()
            await sightings.until(2)  # one datagram per club, at start
            assert {(s.id, s.peer, s.host, s.port) for s in sightings.seen} == {
                (CLUB_X, PEER_A, "127.0.0.1", 40121), (CLUB_Y, PEER_A, "127.0.0.1", 40121)}
            assert announcer.rounds == 1

            announcer.poke()  # a new access code, say: another round at once
            await sightings.until(4)
            assert announcer.rounds == 2

            announcer.set_port(40122)  # a new port announces itself
            await sightings.until(6)
            assert {s.port for s in sightings.seen[4:]} == {40122}

            new_club = "c3" * 32
            announcer.set_ids({CLUB_X: PEER_A, new_club: PEER_A})  # a new share pokes
            await sightings.until(8)
            assert {s.id for s in sightings.seen[6:]} == {CLUB_X, new_club}
            assert listener.dropped == 0
        finally:
            await announcer.close()
            await listener.close()

    asyncio.run(main())


def test_listener_drops_junk_foreign_and_own_datagrams() -> None:
    async def main() -> None:
        sightings = Sightings()
        listener = LanListener(sightings, own_peers=[PEER_A], host="127.0.0.1", port=0)
        await listener.start()
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            target = ("127.0.0.1", listener.port)
            own = encode_announcement(Announcement(CLUB_X, PEER_A, 1000))
            other = encode_announcement(Announcement(CLUB_X, PEER_B, 2000))
            # One socket, in order: loopback delivers these in the order sent.
            for data in (own, b"\x00junk", b"{}" * 400, datagram(version=2), other):
                sender.sendto(data, target)
            await sightings.until(1)
            assert sightings.seen == [LanSighting(CLUB_X, PEER_B, "127.0.0.1", 2000)]
            assert (listener.received, listener.dropped) == (5, 4)

            listener.set_ids([CLUB_Y])  # only clubs we are in
            sender.sendto(other, target)
            sender.sendto(encode_announcement(Announcement(CLUB_Y, PEER_B, 3000)), target)
            await sightings.until(2)
            assert sightings.seen[1] == LanSighting(CLUB_Y, PEER_B, "127.0.0.1", 3000)
            assert listener.dropped == 5
        finally:
            sender.close()
            await listener.close()

    asyncio.run(main())


def test_announcer_refuses_bad_ids_and_ports() -> None:
    with pytest.raises(ValueError):
        LanAnnouncer(ids={"xyz": PEER_A}, port=1)
    with pytest.raises(BroadcastError):
        LanAnnouncer(ids={}, port=0)


# -- two network namespaces joined by a veth pair (root only) ----------------

LISTENER = textwrap.dedent("""
    import asyncio, json
    from csembed.runtime.lan_service import LanListener

    async def main():
        got = asyncio.get_running_loop().create_future()
        def seen(s):
            if not got.done():
                got.set_result(s)
        listener = LanListener(seen, own_peers=[{own!r}])  # the real port, 60106
        await listener.start()
        print("ready", flush=True)
        s = await asyncio.wait_for(got, 30)
        print(json.dumps([s.id, s.peer, s.host, s.port]), flush=True)
        await listener.close()

    asyncio.run(main())
""")

ANNOUNCER = textwrap.dedent("""
    import asyncio
    from csembed.runtime.lan_service import LanAnnouncer

    async def main():
        announcer = LanAnnouncer(ids={{{club!r}: {peer!r}}}, port=40121,
                                 broadcast_address={broadcast!r}, interval=0.2, min_gap=0.1)
        await announcer.start()
        await asyncio.sleep(60)

    asyncio.run(main())
""")


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


@pytest.fixture
def veth_pair() -> Iterator[tuple[str, str, str]]:
    """Two fresh namespaces joined by a veth pair; yields (ns_a, ns_b, broadcast)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    if shutil.which("ip") is None:
        pytest.skip("iproute2 'ip' is not installed")
    tag = uuid.uuid4().hex[:8]
    ns_a, ns_b = f"csa{tag}", f"csb{tag}"
    veth_a, veth_b = f"cva{tag}", f"cvb{tag}"  # 11 characters, under IFNAMSIZ
    subnet = f"10.{200 + int(tag[:2], 16) % 50}.{int(tag[2:4], 16)}"
    try:
        try:
            for ns in (ns_a, ns_b):
                _run("ip", "netns", "add", ns)
            _run("ip", "link", "add", veth_a, "netns", ns_a, "type", "veth",
                 "peer", "name", veth_b, "netns", ns_b)
            _run("ip", "-n", ns_a, "addr", "add", f"{subnet}.1/24", "brd", "+", "dev", veth_a)
            _run("ip", "-n", ns_b, "addr", "add", f"{subnet}.2/24", "brd", "+", "dev", veth_b)
            for ns, dev in ((ns_a, veth_a), (ns_b, veth_b)):
                _run("ip", "-n", ns, "link", "set", dev, "up")
                _run("ip", "-n", ns, "link", "set", "lo", "up")
        except subprocess.CalledProcessError as exc:
            reason = exc.stderr.decode(errors="replace").strip() if exc.stderr else str(exc)
            pytest.skip(f"cannot set up network namespaces with 'ip netns' here: {reason}")
        except OSError as exc:
            pytest.skip(f"'ip netns' is unavailable here: {exc}")
        yield ns_a, ns_b, f"{subnet}.255"
    finally:
        for ns in (ns_a, ns_b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def test_broadcast_between_two_network_namespaces(veth_pair: tuple[str, str, str]) -> None:
    ns_a, ns_b, broadcast = veth_pair
    subnet = broadcast.rsplit(".", 1)[0]
    listener = subprocess.Popen(
        ["ip", "netns", "exec", ns_b, sys.executable, "-c", LISTENER.format(own=PEER_B)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    announcer = None
    try:
        assert listener.stdout is not None
        assert listener.stdout.readline().strip() == "ready"
        announcer = subprocess.Popen(
            ["ip", "netns", "exec", ns_a, sys.executable, "-c",
             ANNOUNCER.format(club=CLUB_X, peer=PEER_A, broadcast=broadcast)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = listener.communicate(timeout=60)
        assert listener.returncode == 0, err
        assert json.loads(out) == [CLUB_X, PEER_A, f"{subnet}.1", 40121]
    finally:
        for proc in (listener, announcer):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
