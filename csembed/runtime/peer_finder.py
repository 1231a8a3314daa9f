"""How the daemon finds its peers: tracker, LAN broadcast and manual addresses -> dial targets.

Theory of operation
-------------------
:class:`PeerFinder` registers every club ID the daemon answers to -- each
share's key IDs, each issued code's access ID, each held code's access ID --
under our peer ID for it, with the tracker
(:class:`~csembed.runtime.tracker_client.TrackerClient`) and on the LAN
(:class:`~csembed.runtime.lan_service.LanAnnouncer`, UDP 60106, on start,
on a new share or code, every minute, and at once when a newcomer announces
itself). What comes back -- tracker views and LAN sightings, each a club ID,
a peer ID and addresses -- plus the manual peers (``--peer`` and the
``peers`` setting) is turned into the connection manager's dial targets by
:meth:`PeerFinder.reconcile`, which the daemon calls whenever its clubs or
what discovery knows change:

* a sighting under one of a share's **key IDs** is dialled with a level's
  key -- the best level the peer was seen under (a peer listed under both
  the read-write and the read-only key ID is a read-write member);
* a sighting under the access ID of a **code we hold** is dialled with the
  code (we are attaching);
* a sighting under the access ID of a **code we issued** is left alone: the
  holder dials us;
* a **manual** address is dialled for every share (with the best level we
  hold) and every attach, its peer ID learned on the first connection.

LAN sightings are forgotten when not renewed for ``LAN_SIGHTING_TTL``
seconds; a tracker view is replaced by the next one for the club. A tracker
reply is taken only in part -- at most ``MAX_PEERS_PER_REPLY`` peers with
``MAX_ADDRESSES_PER_PEER`` addresses each, every address once -- since
whoever runs or registers with a tracker picks what is in it; the connection
manager paces the dialling itself.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from csembed.runtime.connection_manager import Target
from csembed.runtime.reach import Reach, ReachConfig, global_ipv6_addresses
from csembed.security.keys import READ_ONLY, READ_WRITE

if TYPE_CHECKING:  # each loads only when the settings use it (memory on small boards)
    from csembed.discovery.tracker_session import PeersUpdate
    from csembed.runtime.lan_service import LanAnnouncer, LanListener, LanSighting
    from csembed.runtime.tracker_client import TrackerClient
    from csembed.runtime.utp_endpoint import UtpEndpoint

__all__ = ["LAN_SIGHTING_TTL", "Club", "DiscoverySettings", "FinderHooks", "PeerFinder"]

log = logging.getLogger("csembed.discovery")

LAN_SIGHTING_TTL = 200.0  #: a LAN sighting not renewed for this long is forgotten
MAX_PEERS_PER_REPLY = 64  #: peers taken from one tracker reply (or the LAN) for one club
MAX_ADDRESSES_PER_PEER = 4  #: addresses taken per peer (distinct within a reply)


@dataclass(frozen=True)
class DiscoverySettings:
    """Where to look for peers, as the command line and the settings decide."""

    lan: bool  #: LAN broadcast on
    tracker: tuple[str, int] | None
    manual: tuple[tuple[str, int], ...]  #: ``--peer`` and the ``peers`` setting
    lan_address: str
    lan_port: int


@dataclass(frozen=True)
class Club:
    """A share we run (``kind`` ``"share"``, ``club`` its share ID) or a code we hold
    (``"attach"``, ``club`` its access ID), with our peer ID in it."""

    kind: str
    club: str
    peer_id: str
    answers_to: tuple[str, ...] = ()  #: every key ID of the share (we register them all)
    held: tuple[tuple[str, str], ...] = ()  #: (access level, key ID) we hold keys for


class FinderHooks(Protocol):
    """What the finder asks of the daemon."""

    def discovery_settings(self) -> DiscoverySettings:
        """Tracker, LAN and manual peers to use now."""

    def clubs(self) -> list[Club]:
        """The shares we run and the codes we are redeeming."""

    def issued_ids(self) -> dict[str, str]:
        """Access ID -> our peer ID, for every live code we issued."""

    def listening_on(self) -> tuple[str, int] | None:
        """Where our peers can connect (``None`` before listening)."""

    def club_proofs(self) -> dict[str, bytes]:
        """Club ID -> registration proof (its SHA-256 preimage) where we know one
        (``protocol/discovery.md``)."""

    def set_targets(self, targets: list[Target]) -> None:
        """Dial these (the connection manager's targets)."""

    def utp_endpoint(self) -> UtpEndpoint | None:
        """The uTP socket we listen on (``None``: TCP only)."""

    def reach_config(self) -> ReachConfig:
        """STUN servers and port mapping (``protocol/nat.md``)."""


class PeerFinder:
    """Discovery for one daemon; see the module docstring."""

    def __init__(self, hooks: FinderHooks) -> None:
        self.hooks = hooks
        self.tracker: TrackerClient | None = None
        self.announcer: LanAnnouncer | None = None
        self.listener: LanListener | None = None
        self._tracker_view: dict[str, dict[str, list[tuple[str, int]]]] = {}
        self._tracker_utp: dict[str, dict[str, list[tuple[str, int]]]] = {}
        self.reach: Reach | None = None
        self._lan_view: dict[str, dict[str, tuple[str, int, float]]] = {}

    def poke(self) -> None:
        """Announce on the LAN soon (a new access code)."""
        if self.announcer is not None:
            self.announcer.poke()

    def expire_sightings(self) -> None:
        """Forget LAN sightings not renewed lately; re-plan if any went."""
        cutoff = time.monotonic() - LAN_SIGHTING_TTL
        stale = False
        for club in list(self._lan_view):
            peers = self._lan_view[club]
            for peer in [p for p, (_, _, seen) in peers.items() if seen < cutoff]:
                del peers[peer]
                stale = True
            if not peers:
                del self._lan_view[club]
        if stale:
            self.reconcile()

    def lan_enabled(self) -> bool:
        """LAN broadcast: off with ``--no-lan``, else the setting, else the board's."""
        return self.hooks.discovery_settings().lan

    def tracker_address(self) -> tuple[str, int] | None:
        """``--tracker``, else the ``tracker`` setting, else none."""
        return self.hooks.discovery_settings().tracker

    def manual_peers(self) -> list[tuple[str, int]]:
        """``--peer`` addresses and the ``peers`` setting."""
        return list(self.hooks.discovery_settings().manual)

    def club_ids(self) -> dict[str, str]:
        """Every club ID we answer to -> our peer ID for it."""
        ids: dict[str, str] = {}
        clubs = self.hooks.clubs()
        for club in clubs:
            for key_id in club.answers_to:
                ids[key_id] = club.peer_id
        ids.update(self.hooks.issued_ids())
        for club in clubs:
            if club.kind == "attach":
                ids[club.club] = club.peer_id
        return ids

    def own_peers(self) -> set[str]:
        """Our peer IDs (announcements carrying them are our own)."""
        return {club.peer_id for club in self.hooks.clubs()}

    def announce_addresses(self) -> list[str]:
        """Where peers can reach us, as tracker address strings."""
        listen = self.hooks.listening_on()
        assert listen is not None
        host, port = listen
        hosts: list[str] = []
        if host not in ("0.0.0.0", "::", ""):
            hosts.append(host)
        else:
            tracker = self.tracker_address()
            if tracker is not None:
                with contextlib.suppress(OSError), \
                        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                    probe.connect((tracker[0], tracker[1]))
                    hosts.append(probe.getsockname()[0])
            if self.tracker is not None and self.tracker.your_ip:
                hosts.append(self.tracker.your_ip.strip("[]"))
            if host == "::":  # dual stack: our global IPv6 addresses too
                hosts += global_ipv6_addresses()
        out = []
        schemes = ["tcp"] + (["utp"] if self.hooks.utp_endpoint() is not None else [])
        for scheme in schemes:
            for h in hosts:
                text = f"{scheme}:[{h}]:{port}" if ":" in h else f"{scheme}:{h}:{port}"
                if text not in out:
                    out.append(text)
        if self.reach is not None:
            out += [a for a in self.reach.addresses() if a not in out]
        return out

    def _on_reach_change(self) -> None:
        if self.tracker is not None:
            self.tracker.set_addresses(self.announce_addresses())

    async def start(self) -> None:
        """Start the tracker client and the LAN services the settings ask for."""
        listen = self.hooks.listening_on()
        assert listen is not None
        settings = self.hooks.discovery_settings()
        tracker = settings.tracker
        ids = self.club_ids()
        self.reach = Reach(self.hooks.utp_endpoint(), listen[1], self.hooks.reach_config(),
                           tracker=tracker, on_change=self._on_reach_change)
        self.reach.start()
        if tracker is not None:
            from csembed.runtime.tracker_client import TrackerClient
            self.tracker = TrackerClient(tracker[0], tracker[1], ids=ids,
                                         proofs=self.hooks.club_proofs(),
                                         addresses=self.announce_addresses(),
                                         on_peers=self._on_tracker_peers,
                                         on_state=self._on_tracker_state)
            self.tracker.start()
        if self.lan_enabled():
            from csembed.runtime.lan_service import LanAnnouncer, LanListener
            self.announcer = LanAnnouncer(ids=ids, port=listen[1],
                                          broadcast_address=settings.lan_address,
                                          broadcast_port=settings.lan_port)
            self.listener = LanListener(self._on_sighting, own_peers=self.own_peers(),
                                        ids=list(ids), port=settings.lan_port)
            try:
                await self.announcer.start()
                await self.listener.start()
            except OSError as exc:
                log.warning("LAN broadcast unavailable: %s", exc)
                await self.announcer.close()
                await self.listener.close()
                self.announcer = self.listener = None
        self.reconcile()

    async def stop(self) -> None:
        """Stop them (settings changed, or the daemon is stopping)."""
        if self.reach is not None:
            await self.reach.close()
            self.reach = None
        if self.tracker is not None:
            await self.tracker.close()
            self.tracker = None
        for service in (self.announcer, self.listener):
            if service is not None:
                await service.close()
        self.announcer = self.listener = None
        self._tracker_view.clear()
        self._tracker_utp.clear()

    def update(self) -> None:
        """Our clubs changed: re-register everywhere, re-plan the dialling."""
        ids = self.club_ids()
        if self.tracker is not None:
            self.tracker.set_ids(ids, self.hooks.club_proofs())
        if self.announcer is not None:
            self.announcer.set_ids(ids)
        if self.listener is not None:
            self.listener.set_own_peers(self.own_peers())
            self.listener.set_ids(list(ids))
        for club in [c for c in self._tracker_view if c not in ids]:
            del self._tracker_view[club]
            self._tracker_utp.pop(club, None)
        self.reconcile()

    def _on_tracker_state(self, state: str) -> None:
        log.info("tracker: %s", state)
        if state == "connected" and self.tracker is not None:
            self.tracker.set_addresses(self.announce_addresses())

    def _on_tracker_peers(self, update: PeersUpdate) -> None:
        # A tracker (or whoever registered with it) chooses these addresses: take a
        # bounded number, never one of our own, and each address once per club.
        view: dict[str, list[tuple[str, int]]] = {}
        utp_view: dict[str, list[tuple[str, int]]] = {}
        taken: set[tuple[str, str, int]] = set()
        own = self.own_peers()
        for peer, addresses in update.peers.items():
            if len(view) + len(utp_view.keys() - view.keys()) >= MAX_PEERS_PER_REPLY:
                log.warning("tracker listed %d peers for club %s; taking the first %d",
                            len(update.peers), update.club_id[:8], MAX_PEERS_PER_REPLY)
                break
            if peer in own:
                continue
            for scheme, into in (("tcp", view), ("utp", utp_view)):
                usable = [(a.host, a.port) for a in addresses if a.scheme == scheme]
                usable = [a for a in dict.fromkeys(usable) if (scheme, *a) not in taken]
                usable = usable[:MAX_ADDRESSES_PER_PEER]
                if usable:
                    taken.update((scheme, *a) for a in usable)
                    into[peer] = usable
        self._tracker_view[update.club_id] = view
        self._tracker_utp[update.club_id] = utp_view
        if self.reach is not None:  # open our NAT to them, whoever dials (nat.md)
            self.reach.punch([a for peers in utp_view.values() for a in peers])
        self.reconcile()

    def _on_sighting(self, sighting: LanSighting) -> None:
        peers = self._lan_view.setdefault(sighting.id, {})
        known = peers.get(sighting.peer)
        if known is None and len(peers) >= MAX_PEERS_PER_REPLY:
            return  # anyone on the LAN can announce: a flood of made-up peers is ignored
        peers[sighting.peer] = (sighting.host, sighting.port, time.monotonic())
        if known is None or known[:2] != (sighting.host, sighting.port):
            log.info("LAN: peer %s at %s:%d for club %s", sighting.peer[:8], sighting.host,
                     sighting.port, sighting.id[:8])
            if known is None and self.announcer is not None:
                # A newcomer announced itself: answer at once rather than at our next
                # round, up to a minute away. It hears us and does not answer again.
                self.announcer.poke()
            self.reconcile()

    def sightings(self, club: str) -> dict[str, list[tuple[str, int]]]:
        """Peer ID -> addresses for one club, from the tracker and the LAN."""
        found: dict[str, list[tuple[str, int]]] = {}
        for peer, addresses in self._tracker_view.get(club, {}).items():
            found.setdefault(peer, []).extend(addresses)
        for peer, (host, port, _) in self._lan_view.get(club, {}).items():
            if (host, port) not in found.setdefault(peer, []):
                found[peer].insert(0, (host, port))  # the LAN is the short way
        return found

    def utp_sightings(self, club: str, peer: str) -> list[tuple[str, int]]:
        """The ``utp:`` addresses the tracker gave for a peer of a club."""
        return self._tracker_utp.get(club, {}).get(peer, [])

    def reconcile(self) -> None:
        """Compute the dial targets from what discovery knows (module docstring)."""
        listen = self.hooks.listening_on()
        if listen is None:
            return
        manual = self.manual_peers()
        targets: list[Target] = []
        rank = {READ_WRITE: 2, READ_ONLY: 1}
        clubs = self.hooks.clubs()
        for share in [c for c in clubs if c.kind == "share"]:
            best: dict[str, tuple[str, list[tuple[str, int]]]] = {}
            utp: dict[str, list[tuple[str, int]]] = {}
            held = share.held
            for access_level, key_id in held:
                for peer, addresses in self.sightings(key_id).items():
                    more = self.utp_sightings(key_id, peer)
                    utp.setdefault(peer, []).extend(
                        a for a in more if a not in utp.get(peer, []))
                    if not addresses and not more:
                        continue
                    prior = best.get(peer)
                    if prior is None or rank.get(access_level, 0) > rank.get(prior[0], 0):
                        merged = addresses + ([] if prior is None else
                                              [a for a in prior[1] if a not in addresses])
                        best[peer] = (access_level, merged)
                    else:
                        prior[1].extend(a for a in addresses if a not in prior[1])
            for peer, (level_name, addresses) in best.items():
                targets.append(Target("share", share.club, peer, tuple(addresses),
                                      level_name, "discovered", tuple(utp.get(peer, ()))))
            if held:
                top = max(held, key=lambda lv: rank.get(lv[0], 0))[0]
                for address in manual:
                    targets.append(Target("share", share.club, None, (address,),
                                          top, "manual"))
        for attach in [c for c in clubs if c.kind == "attach"]:
            for peer, addresses in self.sightings(attach.club).items():
                more = self.utp_sightings(attach.club, peer)
                if addresses or more:
                    targets.append(Target("attach", attach.club, peer, tuple(addresses),
                                          None, "discovered", tuple(more)))
            for address in manual:
                targets.append(Target("attach", attach.club, None, (address,), None,
                                      "manual"))
        own = {listen, ("127.0.0.1", listen[1])}
        targets = [t for t in targets if not (t.peer_id is None and t.addresses[0] in own)]
        self.hooks.set_targets(targets)

