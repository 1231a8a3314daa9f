"""The daemon's peer connections: one authenticated link per peer per share.

Theory of operation
-------------------
Every connection, accepted or dialled, is a :class:`~csembed.runtime.peer_link.PeerLink`
run in a task of its own and tracked as a :class:`LinkRecord`. When its
handshake reaches ``Ready`` the manager decides, in :meth:`ConnectionManager._resolve`,
whether it may carry its share:

* **Which share.** The grant's ``tag`` says: ``("share", share_id)`` for a
  share key or a code we issued, ``("attach", access_id)`` for a code we were
  given (by then :meth:`LinkHooks.keys_received` has stored the keys and
  opened the share).
* **One link per peer per share.** When both sides dial at once, two links
  reach ``Ready``; both daemons keep the one *initiated by the lower peer ID*
  and close the other, so they agree without talking about it. Two links in
  the same direction (one peer found at two addresses): the first one stays.
* **Limits.** Not while paused, and at most the board's
  ``memory.max_connections`` links carry shares. Before that, connections
  still authenticating pass one
  :class:`~csembed.runtime.admission.PreauthGate` shared by every listener
  (TCP v4, v6 and uTP): the board's ``memory.max_handshakes`` of them at once.

**Dialling.** :meth:`set_targets` takes the wanted :class:`Target` set (the
daemon computes it from the tracker, LAN sightings and manual peers) and
keeps one dial task per target: it waits until the target is worth dialling
(not paused, no link to that peer for that share yet, a free connection
slot, no other attach in flight for the same code), tries each address in
turn, runs the link, and after it ends waits a capped, jittered back-off
(1 s doubling to 60 s). The back-off is reset after a link that made
progress: it carried its share and either the peer sent messages on it or it
lasted 30 s, so a link that resets every few seconds but syncs meanwhile is
retried at once rather than once a minute.
A target that disappears stops being dialled, but a link it made keeps
running.

Addresses come from trackers and LAN announcements, which an attacker may
control, so dialling is bounded: at most :data:`MAX_TARGETS` targets (manual
ones first; targets naming the same addresses for the same share are one),
at most ``max_dials`` outgoing connections in progress at once (from the
connect until the peer authenticated or the attempt ended), and each address
paced by a :class:`~csembed.discovery.dial_policy.DialPolicy` (a few dials a
minute, back-off after failures) whichever targets name it.

A dead peer is noticed by the core's ping timeout, which ends the link; its
dial task then reconnects.

Upload and download rate limiters (the board's, shared by all links) are
handed to every link.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from csembed.board_profile import MemoryLimits
from csembed.discovery.backoff import Backoff
from csembed.discovery.dial_policy import DialPolicy
from csembed.protocol.core import CoreConfig, Grant, KeysReceived, Ready
from csembed.protocol.core_access import CredentialRegistry
from csembed.runtime.admission import PreauthGate
from csembed.runtime.dial_race import first_connected
from csembed.runtime.peer_link import LinkResult, PeerLink
from csembed.runtime.rate_limit import DaemonRateLimits
from csembed.runtime.session_stream import (
    READ_SIZE,
    SessionStream,
    budget_of,
    connect,
    serve,
)
from csembed.runtime.share_runtime import ShareRuntime
from csembed.security.rate_limit import RateLimiter as AuthLimiter
from csembed.security.sodium_version import check_sodium

if TYPE_CHECKING:  # uTP loads only when it is enabled (memory on small boards)
    from csembed.runtime.utp_endpoint import UtpEndpoint, UtpLimits

__all__ = ["ConnectionManager", "LinkHooks", "LinkRecord", "Target", "link_buffer"]

log = logging.getLogger("csembed.connections")

CONNECT_TIMEOUT = 15.0
MAX_TARGETS = 256  #: dial targets kept; the rest of a (possibly hostile) list is ignored
MAX_DIALS = 8  #: outgoing connections in progress (not yet authenticated) at once
DIAL_HANDSHAKE_TIMEOUT = 10.0  #: seconds a dialled peer has to authenticate
STABLE_LINK = 30.0  #: a link that carried its share this long resets the back-off
UTP_HEAD_START = 1.0  #: TCP's head start over uTP: a direct TCP path that works wins


class LinkHooks(Protocol):
    """What the manager asks of the daemon."""

    def runtime_for(self, share_id: str) -> ShareRuntime | None:
        """The running share, or ``None`` (unknown, removed, broken)."""

    async def keys_received(self, access_id: str, event: KeysReceived) -> str:
        """Store keys received with the code ``access_id``; return the new share's ID."""

    def link_ready(self, ready: Ready) -> None:
        """A link reached ``Ready`` and carries its share (e.g. a code was spent)."""

    def grant_for(self, target: Target) -> Grant | None:
        """The grant to dial ``target`` with, or ``None`` if it is no longer wanted."""

    def dial_ended(self, target: Target, record: LinkRecord | None) -> None:
        """A dial of ``target`` ended: ``None`` if no address answered, else the link
        (``record.ready`` is ``None`` if the handshake failed; ``record.ended`` says why)."""


@dataclass(frozen=True)
class Target:
    """Somewhere worth dialling for one share (or one code being redeemed).

    ``kind`` is ``"share"`` (``club`` = share ID, ``level`` = the access level
    to connect with) or ``"attach"`` (``club`` = the code's access ID).
    ``peer_id`` is known for tracker and LAN sightings, ``None`` for manual peers.
    """

    kind: str
    club: str
    peer_id: str | None
    addresses: tuple[tuple[str, int], ...]
    level: str | None = None
    source: str = ""
    utp_addresses: tuple[tuple[str, int], ...] = ()  #: its ``utp:`` addresses (NAT.md)

    @property
    def key(self) -> tuple[str, str, str]:
        """Identity of the dial task: the peer when known, else the address."""
        host, port = (self.addresses or self.utp_addresses)[0]
        who = self.peer_id or f"@{host}:{port}"
        return (self.kind, self.club, who)


@dataclass(eq=False)
class LinkRecord:
    """One connection the manager runs."""

    link: PeerLink
    outgoing: bool
    address: str
    started: float = field(default_factory=time.time)
    share_id: str | None = None
    ready: Ready | None = None
    ready_at: float | None = None
    task: asyncio.Task[Any] | None = None
    ended: str | None = None  #: why the link ended, once it has

    def describe(self) -> dict[str, Any]:
        """A JSON object for ``list_peers``."""
        ready = self.ready
        return {
            "peer_id": ready.peer_id if ready else None,
            "share_id": self.share_id,
            "address": self.address,
            "direction": "outgoing" if self.outgoing else "incoming",
            "access_level": ready.access_level if ready else None,
            "software": ready.peer_software if ready else None,
            "name": ready.peer_name if ready else None,
            "extensions": list(ready.extensions) if ready else [],
            "connected_since": self.ready_at,
            "state": "connected" if self.share_id else "handshaking",
            "payload_bytes_received": self.link.bytes_in,
        }


MIN_LINK_BUFFER = 64 * 1024  #: a link buffer never below this: one board chunk at least


def link_buffer(memory: MemoryLimits) -> int:
    """How much one link reads from its socket at once and batches for it to send:
    its share of the board's bytes in flight (``memory.per_connection``), at least
    :data:`MIN_LINK_BUFFER` and the board's chunk, at most the 1 MiB default.
    (wifi-piano: 256 KiB; desktop: 1 MiB.)"""
    return min(READ_SIZE, max(MIN_LINK_BUFFER, memory.chunk_size, memory.per_connection))


def made_progress(record: LinkRecord, now: float) -> bool:
    """Whether a finished link worked well enough to reset the dial back-off:
    it carried its share, and the peer sent messages on it or it lasted
    :data:`STABLE_LINK` seconds."""
    if record.share_id is None or record.ready_at is None:
        return False
    link = record.link
    return getattr(link, "messages_in", 0) > 0 or getattr(link, "bytes_in", 0) > 0 \
        or now - record.ready_at >= STABLE_LINK


class ConnectionManager:
    """Accepts, dials, de-duplicates and limits peer links. See the module docstring."""

    def __init__(self, hooks: LinkHooks, registry: CredentialRegistry, core: CoreConfig, *,
                 limits: DaemonRateLimits, max_connections: int,
                 backoff_max: float = 60.0, rng: random.Random | None = None,
                 max_dials: int = MAX_DIALS, dial_policy: DialPolicy | None = None) -> None:
        check_sodium()  # refuse to start rather than fail on the first connection
        self.dial_policy = dial_policy or DialPolicy()
        self._dial_slots = asyncio.Semaphore(max_dials)
        self.dials_in_progress = 0
        self.hooks = hooks
        self.registry = registry
        self.core = core
        self.limits = limits
        self.max_connections = max_connections
        self.backoff_max = backoff_max
        self._rng = rng or random.Random()
        self._records: set[LinkRecord] = set()
        self._by_share: dict[str, dict[str, LinkRecord]] = {}
        self._attached: dict[str, str] = {}  #: access ID -> share ID, once keys arrived
        self._targets: dict[tuple[str, str, str], Target] = {}
        self._dialers: dict[tuple[str, str, str], asyncio.Task[None]] = {}
        self._learned: dict[tuple[str, str, str], str] = {}  #: manual target -> peer ID
        self._attach_inflight: set[str] = set()
        self._dialing: set[tuple[str, str]] = set()  #: (share, peer) being dialled now
        self._tasks: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._auth_limiter = AuthLimiter()
        self.utp_enabled = True  #: listen() also opens uTP on the same port number (UDP)
        self.utp: UtpEndpoint | None = None
        self.utp_limits: UtpLimits | None = None  #: the board's windows and cap for uTP
        #: a link's largest socket read and outgoing batch (:func:`link_buffer`)
        self.link_buffer = READ_SIZE
        self._server_v4: asyncio.Server | None = None  #: IPv4 beside ``::`` (dual stack)
        self._gate: PreauthGate | None = None  #: shared by the listeners, once listening
        self.paused = False

    # -- state ----------------------------------------------------------------------

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    @property
    def ready_count(self) -> int:
        """Links carrying a share."""
        return sum(len(peers) for peers in self._by_share.values())

    def records(self) -> list[LinkRecord]:
        """Every connection, carrying or still handshaking."""
        return sorted(self._records, key=lambda r: r.started)

    def links_of(self, share_id: str) -> list[LinkRecord]:
        """The links carrying ``share_id``."""
        return list(self._by_share.get(share_id, {}).values())

    def targets(self) -> list[Target]:
        """Where the manager dials now."""
        return list(self._targets.values())

    def peer_for(self, target: Target) -> str | None:
        """The peer ID behind a target, if known."""
        return target.peer_id or self._learned.get(target.key)

    # -- accepting --------------------------------------------------------------------

    async def listen(self, host: str, port: int) -> tuple[str, int]:
        """Accept peer connections on ``host:port``; returns the bound address."""
        # one budget of unauthenticated connections for every listener, TCP and uTP
        gate = self._gate = PreauthGate(budget_of(lambda: self.core))
        self._server = await serve(host, port, self.registry, self._accepted, lambda: self.core,
                                   limiter=self._auth_limiter, gate=gate,
                                   read_size=self.link_buffer)
        sockname = self._server.sockets[0].getsockname()
        if host == "::":  # asyncio binds "::" IPv6-only: add IPv4 on the same port number
            try:
                self._server_v4 = await serve("0.0.0.0", int(sockname[1]), self.registry,
                                              self._accepted, lambda: self.core,
                                              limiter=self._auth_limiter, gate=gate,
                                              read_size=self.link_buffer)
            except OSError as exc:
                log.warning("IPv4 unavailable beside IPv6 on port %d: %s", sockname[1], exc)
        if self.utp_enabled:
            from csembed.runtime.utp_endpoint import UtpEndpoint, serve_utp
            try:
                self.utp = await UtpEndpoint.open(host, int(sockname[1]), limits=self.utp_limits)
                serve_utp(self.utp, self.registry, self._accepted, lambda: self.core,
                          limiter=self._auth_limiter, gate=gate,
                          read_size=self.link_buffer)
            except OSError as exc:
                log.warning("uTP unavailable on UDP port %d: %s", sockname[1], exc)
        return str(sockname[0]), int(sockname[1])

    async def _accepted(self, stream: SessionStream) -> None:
        peer = stream.peername
        address = f"{peer[0]}:{peer[1]}" if peer else "?"
        if stream._link.transport is not None and \
                stream._link.transport.get_extra_info("transport_kind") == "utp":
            address = "utp:" + address
        record = self._make_record(stream, outgoing=False, address=address)
        await self._run(record)

    def _make_record(self, stream: SessionStream, *, outgoing: bool, address: str) -> LinkRecord:
        holder: list[weakref.ref[LinkRecord]] = []  # weak: the record holds the link

        def resolve(ready: Ready) -> ShareRuntime | None:
            record = holder[0]()
            return None if record is None else self._resolve(record, ready)

        async def on_keys(event: KeysReceived) -> None:
            await self._on_keys(event)

        # Replies queued for one peer: a few of the board's largest messages.
        link = PeerLink(stream, resolve=resolve, on_keys=on_keys, upload=self.limits.upload,
                        download=self.limits.download,
                        max_backlog=4 * self.core.limits.max_body,
                        max_unit_bytes=self.link_buffer)
        record = LinkRecord(link, outgoing, address)
        holder.append(weakref.ref(record))
        return record

    async def _on_keys(self, event: KeysReceived) -> None:
        tag = event.grant.tag
        if not (isinstance(tag, tuple) and tag[0] == "attach"):
            raise RuntimeError("received keys on a connection that did not redeem a code")
        access_id = str(tag[1])
        self._attached[access_id] = await self.hooks.keys_received(access_id, event)

    def _share_of(self, ready: Ready) -> str | None:
        tag = ready.grant.tag
        if not isinstance(tag, tuple) or len(tag) != 2:
            return None
        kind, club = tag
        if kind == "share":
            return str(club)
        if kind == "attach":
            return self._attached.get(str(club))
        return None

    def _resolve(self, record: LinkRecord, ready: Ready) -> ShareRuntime | None:
        record.ready = ready
        if self.paused:
            log.info("refusing %s: paused", record.address)
            return None
        share_id = self._share_of(ready)
        runtime = None if share_id is None else self.hooks.runtime_for(share_id)
        if share_id is None or runtime is None:
            log.info("refusing %s: no such share", record.address)
            return None
        peers = self._by_share.setdefault(share_id, {})
        existing = peers.get(ready.peer_id)
        if existing is not None:
            # Both daemons keep the link initiated by the lower peer ID.
            we_initiate_keeper = ready.grant.peer_id < ready.peer_id
            if record.outgoing == we_initiate_keeper and existing.outgoing != we_initiate_keeper:
                log.info("duplicate link to peer %s: keeping %s, closing %s",
                         ready.peer_id[:8], record.address, existing.address)
                del peers[ready.peer_id]
                existing.link.stream.abort()
            else:
                log.info("duplicate link to peer %s: keeping %s, refusing %s",
                         ready.peer_id[:8], existing.address, record.address)
                return None
        if self.ready_count >= self.max_connections:
            log.warning("refusing %s: the board allows %d connections", record.address,
                        self.max_connections)
            return None
        peers[ready.peer_id] = record
        record.share_id = share_id
        record.ready_at = time.time()
        log.info("peer %s connected (%s, %s, %s) for share %s", ready.peer_id[:8],
                 "outgoing" if record.outgoing else "incoming", record.address,
                 ready.access_level, share_id[:8])
        self._notify()
        try:
            self.hooks.link_ready(ready)
        except Exception:
            log.exception("link_ready hook failed")
        return runtime

    async def _run(self, record: LinkRecord) -> LinkResult | None:
        record.task = asyncio.current_task()
        self._records.add(record)
        self._notify()
        result = None
        try:
            result = await record.link.run()
            record.ended = result.reason
            # An incoming connection that never authenticated is noise (scans, floods).
            quiet = result.ready is None and not record.outgoing
            log.log(logging.DEBUG if quiet else logging.INFO, "connection %s ended: %s",
                    record.address, result.reason)
        except asyncio.CancelledError:
            record.link.stream.abort()
            raise
        except Exception as exc:
            record.ended = str(exc) or type(exc).__name__
            log.warning("connection %s failed: %r", record.address, exc)
            record.link.stream.abort()
        finally:
            self._records.discard(record)
            if record.share_id is not None and record.ready is not None:
                peers = self._by_share.get(record.share_id, {})
                if peers.get(record.ready.peer_id) is record:
                    del peers[record.ready.peer_id]
            self._notify()
        return result

    # -- dialling ---------------------------------------------------------------------

    def set_targets(self, targets: Iterable[Target]) -> None:
        """Dial these targets (and stop dialling any others)."""
        wanted: dict[tuple[str, str, str], Target] = {}
        seen: set[tuple[str, str, tuple[tuple[str, int], ...]]] = set()
        ordered = sorted(targets, key=lambda t: t.source != "manual")  # stable: manual first
        for target in ordered:
            same = (target.kind, target.club, target.addresses)
            if same in seen or target.key in wanted:
                continue
            if len(wanted) >= MAX_TARGETS:
                log.warning("dialling only %d of %d targets", MAX_TARGETS, len(ordered))
                break
            seen.add(same)
            wanted[target.key] = target
        self._targets = wanted
        for key in [k for k in self._dialers if k not in wanted]:
            self._dialers.pop(key).cancel()
        for key in wanted:
            task = self._dialers.get(key)
            if task is None or task.done():
                self._dialers[key] = asyncio.get_running_loop().create_task(self._dial_loop(key))
        self._notify()

    def _dialable(self, target: Target) -> bool:
        if self.paused or self.ready_count >= self.max_connections:
            return False
        if target.kind == "attach":
            return target.club not in self._attach_inflight
        peer = self.peer_for(target)
        if peer is None:
            return True
        return peer not in self._by_share.get(target.club, {}) \
            and (target.club, peer) not in self._dialing

    async def _dial_loop(self, key: tuple[str, str, str]) -> None:
        backoff = Backoff(initial=1.0, maximum=self.backoff_max)
        while True:
            target = self._targets.get(key)
            if target is None:
                return
            if not self._dialable(target):
                await self._changed.wait()
                continue
            grant = self.hooks.grant_for(target)
            if grant is None:
                await self._changed.wait()
                continue
            record = await self._dial_once(target, grant)
            report = getattr(self.hooks, "dial_ended", None)
            if report is not None:
                report(target, record)
            if record is not None and record.ready is not None and target.peer_id is None:
                self._learned[key] = record.ready.peer_id
            if record is not None and made_progress(record, time.time()):
                backoff.reset()
            await asyncio.sleep(backoff.next_delay(self._rng.random()))

    async def _dial_once(self, target: Target, grant: Grant) -> LinkRecord | None:
        """Try the target's addresses, each TCP one raced against a uTP one; run the
        first link made to its end."""
        marker: tuple[str, str] | None = None
        peer = self.peer_for(target)
        if target.kind == "attach":
            self._attach_inflight.add(target.club)
        elif peer is not None:
            marker = (target.club, peer)
            self._dialing.add(marker)
        loop = asyncio.get_running_loop()
        try:
            now = loop.time()

            def allowed(address: tuple[str, int]) -> bool:
                # The owner's own --peer addresses are not attacker-chosen: only the
                # target's back-off paces them, so trying several codes in a row works.
                return target.source == "manual" or self.dial_policy.wait(address, now) <= 0

            tcp = [a for a in target.addresses if allowed(a)]
            utp = [a for a in target.utp_addresses if allowed(a)] if self.utp is not None \
                else []
            # Round i races the i-th TCP address against the i-th uTP one (TCP with a
            # head start), so one dial slot holds at most two sockets at once, and a
            # target listing many addresses cannot open them all together.
            for i in range(max(len(tcp), len(utp))):
                ways = [("tcp", tcp[i], 0.0)] if i < len(tcp) else []
                if i < len(utp):
                    ways.append(("utp", utp[i], UTP_HEAD_START if ways else 0.0))
                async with self._dial_slots:
                    self.dials_in_progress += 1
                    try:
                        record, task = await self._dial_until_authenticated(ways, grant)
                    finally:
                        self.dials_in_progress -= 1
                if record is None or task is None:
                    continue
                if marker is not None:
                    self._dialing.discard(marker)
                    marker = None
                if target.kind == "attach":
                    self._attach_inflight.discard(target.club)
                    self._notify()
                await asyncio.shield(task)
                return record
            return None
        finally:
            if marker is not None:
                self._dialing.discard(marker)
            if target.kind == "attach":
                self._attach_inflight.discard(target.club)
            self._notify()

    async def _dial_until_authenticated(
            self, ways: list[tuple[str, tuple[str, int], float]], grant: Grant,
    ) -> tuple[LinkRecord | None, asyncio.Task[Any] | None]:
        """Race the ways to a peer (``(kind, address, delay)``: TCP, then uTP after
        a head start) and start a link on the first that connects; return once
        the peer authenticated or the attempt ended (the caller holds a dial
        slot meanwhile)."""
        loop = asyncio.get_running_loop()
        core = self._dial_core()

        def attempt(kind: str, address: tuple[str, int]) -> Callable[[], Awaitable[Any]]:
            async def dial() -> SessionStream:
                self.dial_policy.started(address, loop.time())
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    if kind == "utp":
                        assert self.utp is not None
                        from csembed.runtime.utp_endpoint import connect_utp
                        return await connect_utp(self.utp, *address, grant, core)
                    return await connect(*address, grant, core, read_size=self.link_buffer)
            return dial

        def failed(index: int, exc: BaseException) -> None:
            kind, (host, port), _ = ways[index]
            log.debug("cannot reach %s:%s:%d: %s", kind, host, port, exc)
            self.dial_policy.failed((host, port), loop.time())

        won = await first_connected([(delay, attempt(kind, address))
                                     for kind, address, delay in ways], on_error=failed)
        if won is None:
            return None, None
        kind, address, _ = ways[won[0]]
        host, port = address
        label = f"{host}:{port}" if kind == "tcp" else f"utp:{host}:{port}"
        record = self._make_record(won[1], outgoing=True, address=label)
        task = loop.create_task(self._run(record))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            while record.ready is None and not task.done():
                await self._changed.wait()
        except asyncio.CancelledError:
            # The target went away: abandon the attempt, or its connection would
            # outlive the dial slot it holds.
            if record.ready is None:
                record.link.stream.abort()
            raise
        if record.ready is not None:
            self.dial_policy.succeeded(address)
        else:
            self.dial_policy.failed(address, loop.time())
        return record, task

    def _dial_core(self) -> CoreConfig:
        """The core settings for a dial: a short handshake deadline, since the dial
        holds one of the few dial slots until the peer authenticates."""
        session = self.core.session
        if session.handshake_timeout <= DIAL_HANDSHAKE_TIMEOUT:
            return self.core
        return replace(self.core, session=replace(session,
                                                  handshake_timeout=DIAL_HANDSHAKE_TIMEOUT))

    # -- control ----------------------------------------------------------------------

    def pause(self) -> None:
        """Close every link and accept or dial none until :meth:`resume`."""
        self.paused = True
        for record in list(self._records):
            record.link.stream.abort()
        self._notify()

    def resume(self) -> None:
        """Connect again."""
        self.paused = False
        self._notify()

    def close_share(self, share_id: str) -> None:
        """Close every link of a share (it is being removed)."""
        for record in list(self._records):
            if record.share_id == share_id:
                record.link.stream.abort()

    def set_core(self, core: CoreConfig) -> None:
        """Settings for connections made from now on."""
        self.core = core

    async def close(self) -> None:
        """Stop listening and dialling; close every link."""
        if self._server is not None:
            self._server.close()
        if self.utp is not None:
            self.utp.close()
        if self._server_v4 is not None:
            self._server_v4.close()
        if self._gate is not None:
            self._gate.close()
        for task in self._dialers.values():
            task.cancel()
        # Cancelling a link's task makes it close cleanly (a close record, not a reset).
        links = [r.task for r in self._records if r.task is not None]
        for task in links:
            task.cancel()
        if links:
            await asyncio.wait(links, timeout=5)
        for record in list(self._records):
            record.link.stream.abort()
        pending = list(self._dialers.values()) + list(self._tasks)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._dialers.clear()
        if self._server is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self._server.wait_closed()

