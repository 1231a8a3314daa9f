"""Issue 10 item 1: one budget of unauthenticated connections for TCP and uTP,
and connections that never authenticate are freed the moment they end.

The rule itself (:class:`PreauthAdmission`) is tested alone; the rest runs a
real :class:`ConnectionManager` listening on loopback TCP and uTP, with floods
from raw sockets of this process (uTP SYNs from a plain UDP socket).
"""

from __future__ import annotations

import asyncio
import gc
import socket
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest

from csembed.protocol.core import CoreConfig, PeerConnection, Ready
from csembed.protocol.core_access import CredentialRegistry, Grant
from csembed.runtime import admission, heap_trim
from csembed.runtime.admission import PreauthAdmission
from csembed.runtime.connection_manager import ConnectionManager, LinkRecord
from csembed.runtime.peer_link import PeerLink
from csembed.runtime.rate_limit import DaemonRateLimits
from csembed.runtime.session_stream import SessionStream, _Transport, connect
from csembed.security.handshake import SessionConfig, SessionFailed
from csembed.security.keys import READ_WRITE, ShareKeys, new_peer_id
from csembed.transport.utp_packet import (
    ST_DATA,
    ST_FIN,
    ST_RESET,
    ST_STATE,
    ST_SYN,
    Packet,
    UtpPacketError,
    decode,
    encode,
)

TIMEOUT = 20.0  # seconds; a safety net for polls, never waited out on success

# -- the rule ------------------------------------------------------------------------


def test_the_source_with_most_pending_loses_its_oldest() -> None:
    rule: PreauthAdmission[str] = PreauthAdmission(4)
    for key, source in [("a1", "A"), ("b1", "B"), ("a2", "A"), ("a3", "A")]:
        assert rule.admit(key, source) == []
    assert rule.admit("c1", "C") == ["a1"]  # A holds 3 of 4
    assert rule.admit("b2", "B") == ["a2"]  # A still holds the most (2)
    assert (rule.pending_from("A"), rule.pending_from("B"), rule.pending_from("C")) == (1, 2, 1)
    assert rule.evicted == 2 and len(rule) == 4


def test_between_equal_sources_the_oldest_connection_goes() -> None:
    rule: PreauthAdmission[str] = PreauthAdmission(3)
    for key, source in [("b1", "B"), ("a1", "A"), ("c1", "C")]:
        rule.admit(key, source)
    assert rule.admit("d1", "D") == ["b1"]
    assert rule.admit("d2", "D") == ["a1"]
    assert rule.admit("a2", "A") == ["d1"]  # D now holds the most


def test_forget_frees_a_slot_and_ignores_strangers() -> None:
    rule: PreauthAdmission[str] = PreauthAdmission(2)
    rule.admit("a1", "A")
    rule.admit("a2", "A")
    rule.forget("a1")
    rule.forget("never-admitted")
    assert "a1" not in rule and "a2" in rule
    assert rule.admit("b1", "B") == []
    assert rule.pending_from("A") == 1
    rule.forget("a2")
    assert rule.pending_from("A") == 0 and rule.keys() == ["b1"]
    with pytest.raises(ValueError, match="already pending"):
        rule.admit("b1", "B")


def test_a_smaller_budget_takes_effect_at_the_next_arrival() -> None:
    rule: PreauthAdmission[int] = PreauthAdmission(5)
    for key in range(5):
        rule.admit(key, "A")
    rule.budget = 2
    assert rule.admit(99, "B") == [0, 1, 2, 3]
    assert sorted(rule.keys()) == [4, 99]


# -- live listeners --------------------------------------------------------------------

KEYS = ShareKeys.generate()
SHARE = KEYS.level("read_only").key_id_hex or ""


class _Hooks:
    """No share is served: an authenticated peer is refused after ``Ready``."""

    def runtime_for(self, share_id: str) -> Any:
        return None

    def link_ready(self, ready: Ready) -> None:
        pass


def _manager(*, max_pending: int = 64, handshake_timeout: float = 30.0
             ) -> ConnectionManager:
    registry = CredentialRegistry()
    registry.add_share(KEYS, new_peer_id())
    core = replace(CoreConfig(), session=SessionConfig(max_pending=max_pending,
                                                       handshake_timeout=handshake_timeout))
    return ConnectionManager(_Hooks(), registry, core,  # type: ignore[arg-type]
                             limits=DaemonRateLimits.from_rates(0, 0), max_connections=4)


async def _until(condition: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.02)  # polling a condition, not synchronising


class _RawUtp:
    """A hostile uTP client: a plain UDP socket sending SYNs (and whatever else)
    and noting, per connection ID, which packet types came back."""

    def __init__(self, source: str, server: tuple[str, int]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((source, 0))
        self.sock.setblocking(False)
        self.server = server
        self.seen: dict[int, list[Packet]] = {}

    def syn(self, conn_id: int) -> None:
        self.sock.sendto(encode(Packet(ST_SYN, conn_id, 0, 0, 1 << 16, 1, 0)), self.server)

    def data(self, conn_id: int, payload: bytes) -> None:
        answer = self.first(conn_id, ST_STATE)
        self.sock.sendto(encode(Packet(ST_DATA, (conn_id + 1) & 0xFFFF, 0, 0, 1 << 16, 2,
                                       answer.seq_nr, payload)), self.server)

    def drain(self) -> None:
        while True:
            try:
                datagram = self.sock.recv(65536)
            except BlockingIOError:
                return
            try:
                packet = decode(datagram)
            except UtpPacketError:
                continue
            self.seen.setdefault(packet.connection_id, []).append(packet)

    def types(self, conn_id: int) -> list[int]:
        self.drain()
        return [p.type for p in self.seen.get(conn_id, [])]

    def first(self, conn_id: int, kind: int) -> Packet:
        return next(p for p in self.seen.get(conn_id, []) if p.type == kind)

    def reset(self, ids: range) -> list[int]:
        return [i for i in ids if ST_RESET in self.types(i)]


def _tcp_flood(port: int, source: str, count: int, payload: bytes) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), source_address=(source, 0))
        if payload:
            sock.sendall(payload)
        socks.append(sock)
    return socks


def test_a_utp_flood_counts_against_the_tcp_budget_and_cannot_lock_tcp_out() -> None:
    """12 silent uTP connections against a budget of 4: the 8 oldest are reset
    at once (without the shared gate, uTP had no budget at all). A TCP peer with
    the key then still gets in, and it takes its slot from the uTP flood."""
    asyncio.run(_utp_flood())


async def _utp_flood() -> None:
    manager = _manager(max_pending=4)
    _, port = await manager.listen("127.0.0.1", 0)
    flood = _RawUtp("127.0.0.2", ("127.0.0.1", port))
    ids = range(1000, 1024, 2)  # a dialler's receive IDs; +1 is the answering side's
    try:
        for conn_id in ids:
            flood.syn(conn_id)
            await _until(lambda c=conn_id: flood.types(c), "the SYN to be answered")
        await _until(lambda: len(flood.reset(ids)) >= 8, "the oldest uTP connections to be reset")
        assert flood.reset(ids) == list(ids[:8])
        assert manager.utp is not None and manager.utp.connections == 4

        client = await connect("127.0.0.1", port, Grant.share_key(KEYS, READ_WRITE,
                                                                  new_peer_id()))
        try:
            async with asyncio.timeout(TIMEOUT):
                while not isinstance(event := await client.next_event(), Ready):
                    assert event is not None and not isinstance(event, SessionFailed), event
        finally:
            client.abort()
        await _until(lambda: len(flood.reset(ids)) >= 9, "TCP to take its slot from uTP")
        assert flood.reset(ids) == list(ids[:9])
    finally:
        flood.sock.close()
        await manager.close()


def test_a_tcp_flood_pushes_out_utp_connections_too() -> None:
    """The other way round: uTP holds the budget, a TCP flood from another
    address arrives, and the source with the most pending (uTP's) loses first."""
    asyncio.run(_tcp_flood_against_utp())


async def _tcp_flood_against_utp() -> None:
    manager = _manager(max_pending=4)
    _, port = await manager.listen("127.0.0.1", 0)
    flood = _RawUtp("127.0.0.2", ("127.0.0.1", port))
    ids = range(2000, 2008, 2)
    loop = asyncio.get_running_loop()
    socks: list[socket.socket] = []
    try:
        for conn_id in ids:
            flood.syn(conn_id)
            await _until(lambda c=conn_id: flood.types(c), "the SYN to be answered")
        socks = await loop.run_in_executor(None, _tcp_flood, port, "127.0.0.3", 3, b"C")
        # uTP held 4, TCP arrives thrice: uTP 4 -> 3 -> 2 -> (2 vs 2: uTP is older) 1
        await _until(lambda: len(flood.reset(ids)) >= 3, "TCP to push out uTP connections")
        assert flood.reset(ids) == list(ids[:3])
    finally:
        for sock in socks:
            sock.close()
        flood.sock.close()
        await manager.close()


def test_a_silent_utp_peer_is_reset_when_its_handshake_times_out() -> None:
    """Its slot and its entry in the uTP socket's table are freed, and the peer
    is told with a reset, not a FIN that would linger waiting for an answer."""
    asyncio.run(_silent_utp())


async def _silent_utp() -> None:
    manager = _manager(max_pending=4, handshake_timeout=0.5)
    _, port = await manager.listen("127.0.0.1", 0)
    silent = _RawUtp("127.0.0.2", ("127.0.0.1", port))
    try:
        silent.syn(3000)
        await _until(lambda: silent.types(3000), "the SYN to be answered")
        assert manager._gate is not None
        await _until(lambda: ST_RESET in silent.types(3000) or ST_FIN in silent.types(3000),
                     "the handshake deadline to end the connection")
        assert ST_RESET in silent.types(3000) and ST_FIN not in silent.types(3000)
        assert manager.utp is not None
        await _until(lambda: manager.utp is not None and manager.utp.connections == 0
                     and len(manager._gate) == 0, "the slot to be freed")
    finally:
        silent.sock.close()
        await manager.close()


# -- nothing left behind -----------------------------------------------------------------

_KINDS = (SessionStream, _Transport, PeerConnection, PeerLink, LinkRecord,
          asyncio.BaseTransport)  # asyncio's socket transports and ours for uTP


def _alive() -> Counter[str]:
    return Counter(type(o).__name__ for o in gc.get_objects() if isinstance(o, _KINDS))


@contextmanager
def _gc_disabled() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


def test_closed_preauth_connections_are_freed_without_the_cycle_collector(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With the cycle collector off, every kind of unauthenticated connection --
    garbage (the handshake fails), hung up at once, evicted to make room, and
    uTP ones sending garbage -- leaves nothing alive once it ended; the burst's
    end then asks for one give-back (recorded here instead: its collection would
    hide what refcounting failed to free)."""
    monkeypatch.setattr(admission, "SETTLE", 0.2)
    give_backs: list[Counter[str]] = []
    monkeypatch.setattr(admission, "give_back", lambda: give_backs.append(_alive()))
    with _gc_disabled():
        asyncio.run(_freed(give_backs))


def test_give_back_frees_cycles_even_with_the_collector_off() -> None:
    class Node:
        pass

    with _gc_disabled():
        node = Node()
        node.self = node  # type: ignore[attr-defined]
        ref = weakref.ref(node)
        del node
        assert ref() is not None
        assert isinstance(heap_trim.give_back(), bool)
        assert ref() is None


async def _freed(give_backs: list[Counter[str]]) -> None:
    manager = _manager(max_pending=4)
    host, port = await manager.listen("127.0.0.1", 0)
    loop = asyncio.get_running_loop()
    baseline = _alive()
    assert baseline == Counter()
    utp = _RawUtp("127.0.0.2", (host, port))
    ids = range(4000, 4016, 2)
    socks: list[socket.socket] = []
    try:
        socks += await loop.run_in_executor(None, _tcp_flood, port, "127.0.0.1", 6,
                                            b"CS2\nnot a client hello" * 20)
        socks += await loop.run_in_executor(None, _tcp_flood, port, "127.0.0.1", 6, b"")
        for sock in socks[6:]:
            sock.close()  # hung up before saying anything
        socks += await loop.run_in_executor(None, _tcp_flood, port, "127.0.0.3", 10, b"C")
        for conn_id in ids:
            utp.syn(conn_id)
            await _until(lambda c=conn_id: utp.types(c), "the SYN to be answered")
            utp.data(conn_id, b"\x16\x03\x01 not a clearskies hello" * 10)
        await _until(lambda: len(utp.reset(ids)) == len(ids), "uTP garbage to be reset")
        for sock in socks:
            sock.close()
        assert manager._gate is not None
        await _until(lambda: not manager._records and len(manager._gate) == 0
                     and manager.utp is not None and manager.utp.connections == 0,
                     "every connection to end")
        try:
            await _until(lambda: _alive() == Counter(), "the connections' objects to be freed",
                         timeout=5.0)
        except AssertionError:
            raise AssertionError(f"still alive: {dict(_alive())}") from None
        await _until(lambda: give_backs, "a give-back after the burst")
        assert give_backs == [Counter()] and manager._gate.give_backs == 1
    finally:
        for sock in socks:
            sock.close()
        utp.sock.close()
        await manager.close()
