"""asyncio LAN broadcast: an announcer and a listener on UDP port 60106.

Theory of operation
-------------------
:class:`LanAnnouncer` sends one datagram per registered club ID to
``broadcast_address:broadcast_port`` whenever its
:class:`~csembed.discovery.lan_broadcast.AnnounceSchedule` says a round is
due: on start, every ``interval`` seconds, and shortly after :meth:`poke`
(call it on a new share, a new access code or a new network connection;
:meth:`set_ids` pokes by itself when an ID appears). The socket has
``SO_BROADCAST`` set and is bound to an ephemeral port.

:class:`LanListener` binds ``host:port`` with ``SO_REUSEADDR`` (so several
programs on one machine all hear the broadcasts) and reports each valid
announcement as a :class:`LanSighting` -- club ID, peer ID, the datagram's
source host and the announced TCP port -- to its callback. Junk, oversized or
foreign datagrams, and announcements carrying one of our own peer IDs (our
own broadcasts come back to us), are counted in :attr:`LanListener.dropped`
and otherwise ignored. An optional ``ids`` filter limits sightings to clubs
we are in.

Both default to the real port and the limited broadcast address; tests and
simulators pass ``127.0.0.1`` and a free port so nothing reaches a real LAN.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from csembed.discovery.addresses import read_club_id, read_peer_id
from csembed.discovery.errors import BroadcastError
from csembed.discovery.lan_broadcast import (
    LAN_PORT,
    Announcement,
    AnnounceSchedule,
    decode_announcement,
    encode_announcement,
)

__all__ = ["LanAnnouncer", "LanListener", "LanSighting"]

log = logging.getLogger("csembed.lan")


@dataclass(frozen=True)
class LanSighting:
    """A peer announced club ``id`` as ``peer``, reachable at ``host:port`` over TCP."""

    id: str
    peer: str
    host: str
    port: int


class _Sender(asyncio.DatagramProtocol):
    def error_received(self, exc: Exception) -> None:
        log.info("LAN broadcast send failed: %s", exc)


class LanAnnouncer:
    """Broadcasts our clubs on the LAN. See the module docstring.

    ``ids`` maps club ID -> our peer ID; ``port`` is our TCP listening port.
    """

    def __init__(
        self,
        *,
        ids: Mapping[str, str] | None = None,
        port: int,
        broadcast_address: str = "255.255.255.255",
        broadcast_port: int = LAN_PORT,
        interval: float = 60.0,
        min_gap: float = 1.0,
    ) -> None:
        self._ids = self._check_ids(ids or {})
        self._port = self._check_port(port)
        self._target = (broadcast_address, broadcast_port)
        self._schedule = AnnounceSchedule(interval, min_gap)
        self._transport: asyncio.DatagramTransport | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.rounds = 0  #: rounds of announcements sent so far
        self.on_round: Callable[[int], None] | None = None  #: called after each round

    @staticmethod
    def _check_ids(ids: Mapping[str, str]) -> dict[str, str]:
        return {read_club_id(club): read_peer_id(peer) for club, peer in ids.items()}

    @staticmethod
    def _check_port(port: int) -> int:
        Announcement("0" * 64, "0" * 32, port)  # validates the port
        return port

    async def start(self) -> None:
        """Open the socket and start announcing (a first round goes out at once)."""
        if self._task is not None:
            return
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            _Sender, local_addr=("0.0.0.0", 0), allow_broadcast=True)
        self._transport = transport
        self._task = loop.create_task(self._run())

    async def close(self) -> None:
        """Stop announcing and close the socket."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def poke(self) -> None:
        """Announce again soon (new share, new access code, new network)."""
        with contextlib.suppress(RuntimeError):  # no running loop: picked up at start
            self._schedule.poke(asyncio.get_running_loop().time())
        self._wake.set()

    def set_ids(self, ids: Mapping[str, str]) -> None:
        """Replace the announced clubs; pokes if any ID is new."""
        new = self._check_ids(ids)
        fresh = any(self._ids.get(club) != peer for club, peer in new.items())
        self._ids = new
        if fresh:
            self.poke()

    def set_port(self, port: int) -> None:
        """Our TCP port changed; pokes."""
        if self._check_port(port) != self._port:
            self._port = port
            self.poke()

    def _send_round(self) -> None:
        if self._transport is None:
            return
        for club, peer in self._ids.items():
            self._transport.sendto(encode_announcement(Announcement(club, peer, self._port)),
                                   self._target)
        self.rounds += 1
        if self.on_round is not None:
            self.on_round(self.rounds)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._schedule.due(loop.time()):
                self._send_round()
                self._schedule.sent(loop.time())
            when = self._schedule.get_timer()
            timeout = 0.0 if when is None else max(0.0, when - loop.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):  # not wait_for: see tracker_client
                    await self._wake.wait()
            self._wake.clear()


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, listener: LanListener) -> None:
        self._listener = listener

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._listener._datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.info("LAN broadcast receive error: %s", exc)


class LanListener:
    """Hears LAN announcements and reports sightings. See the module docstring."""

    def __init__(
        self,
        on_sighting: Callable[[LanSighting], None],
        *,
        own_peers: Iterable[str] = (),
        ids: Iterable[str] | None = None,
        host: str = "0.0.0.0",
        port: int = LAN_PORT,
    ) -> None:
        self._on_sighting = on_sighting
        self._own = {read_peer_id(p) for p in own_peers}
        self._ids = None if ids is None else {read_club_id(i) for i in ids}
        self._bind = (host, port)
        self._transport: asyncio.DatagramTransport | None = None
        self.dropped = 0  #: datagrams ignored as junk, foreign, ours or unwanted
        self.received = 0  #: datagrams received in total

    @property
    def port(self) -> int:
        """The UDP port actually bound (useful when started with port 0)."""
        if self._transport is None:
            raise RuntimeError("listener not started")
        return int(self._transport.get_extra_info("sockname")[1])

    async def start(self) -> None:
        """Bind and start listening."""
        if self._transport is not None:
            return
        family = socket.AF_INET6 if ":" in self._bind[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(self._bind)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _Receiver(self), sock=sock)
        self._transport = transport

    async def close(self) -> None:
        """Stop listening."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def set_own_peers(self, peers: Iterable[str]) -> None:
        """Our own peer IDs, whose announcements are ignored."""
        self._own = {read_peer_id(p) for p in peers}

    def set_ids(self, ids: Iterable[str] | None) -> None:
        """Only report these club IDs (``None``: report every club)."""
        self._ids = None if ids is None else {read_club_id(i) for i in ids}

    def _datagram(self, data: bytes, addr: Any) -> None:
        self.received += 1
        try:
            announcement = decode_announcement(data)
        except BroadcastError as exc:
            self.dropped += 1
            log.debug("ignored datagram from %s: %s", addr, exc)
            return
        if announcement.peer in self._own or (
                self._ids is not None and announcement.id not in self._ids):
            self.dropped += 1
            return
        sighting = LanSighting(announcement.id, announcement.peer, str(addr[0]),
                               announcement.port)
        try:
            self._on_sighting(sighting)
        except Exception:
            log.exception("LAN on_sighting callback failed")
