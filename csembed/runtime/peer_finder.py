"""How the daemon finds its peers: tracker, LAN broadcast and manual addresses -> dial targets.

Theory of operation
-------------------
:class:`PeerFinder` registers every club ID the daemon answers to -- each
share's key IDs, each issued code's access ID, each held code's access ID --
under our peer ID for it, with the tracker
(:class:`~csembed.discovery.tracker_client.TrackerClient`) and on the LAN
(:class:`~csembed.discovery.lan_service.LanAnnouncer`, UDP 60106, on start,
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
seconds; a tracker view is replaced by the next one for the club.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from typing import TYPE_CHECKING

from csembed.discovery.lan_service import LanAnnouncer, LanListener, LanSighting
from csembed.discovery.tracker_client import TrackerClient
from csembed.discovery.tracker_session import PeersUpdate
from csembed.runtime.connection_manager import Target
from csembed.runtime.data_dir import parse_host_port
from csembed.runtime.reach import Reach, ReachConfig, global_ipv6_addresses
from csembed.security.keys import READ_ONLY, READ_WRITE

if TYPE_CHECKING:
    from csembed.runtime.daemon import Daemon

__all__ = ["LAN_SIGHTING_TTL", "PeerFinder"]

log = logging.getLogger("csembed.discovery")

LAN_SIGHTING_TTL = 200.0  #: a LAN sighting not renewed for this long is forgotten


class PeerFinder:
    """Discovery for one daemon; see the module docstring."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
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
        if not self.daemon.options.lan:
            return False
        configured = self.daemon.config.get("lan_broadcast")
        return self.daemon.board.network.lan_broadcast if configured is None \
            else bool(configured)

    def tracker_address(self) -> tuple[str, int] | None:
        """``--tracker``, else the ``tracker`` setting, else none."""
        if self.daemon.options.tracker is not None:
            return self.daemon.options.tracker
        configured = self.daemon.config.get("tracker")
        return None if configured is None else parse_host_port(configured, "tracker")

    def manual_peers(self) -> list[tuple[str, int]]:
        """``--peer`` addresses and the ``peers`` setting."""
        peers = list(self.daemon.options.peers)
        for text in self.daemon.config.get("peers") or []:
            address = parse_host_port(text, "peers")
            if address not in peers:
                peers.append(address)
        return peers

    def club_ids(self) -> dict[str, str]:
        """Every club ID we answer to -> our peer ID for it."""
        ids: dict[str, str] = {}
        for share in self.daemon.shares.values():
            if share.runtime is None:
                continue
            for level in share.keys.levels:
                if level.key_id_hex is not None:
                    ids[level.key_id_hex] = share.entry.peer_id
        for issued in self.daemon.codes:
            ids[issued.access_id] = issued.peer_id
        for attach in self.daemon.pending.values():
            ids[attach.access_id] = attach.peer_id
        return ids

    def own_peers(self) -> set[str]:
        """Our peer IDs (announcements carrying them are our own)."""
        return {s.entry.peer_id for s in self.daemon.shares.values()} | \
            {p.peer_id for p in self.daemon.pending.values()}

    def announce_addresses(self) -> list[str]:
        """Where peers can reach us, as tracker address strings."""
        assert self.daemon.listen_address is not None
        host, port = self.daemon.listen_address
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
        schemes = ["tcp"] + (["utp"] if self.daemon.manager is not None
                             and self.daemon.manager.utp is not None else [])
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
        assert self.daemon.listen_address is not None
        tracker = self.tracker_address()
        ids = self.club_ids()
        manager = self.daemon.manager
        reach_config = getattr(self.daemon.options, "reach", None) or ReachConfig()
        self.reach = Reach(None if manager is None else manager.utp,
                           self.daemon.listen_address[1], reach_config, tracker=tracker,
                           on_change=self._on_reach_change)
        self.reach.start()
        if tracker is not None:
            self.tracker = TrackerClient(tracker[0], tracker[1], ids=ids,
                                         addresses=self.announce_addresses(),
                                         on_peers=self._on_tracker_peers,
                                         on_state=self._on_tracker_state)
            self.tracker.start()
        if self.lan_enabled():
            self.announcer = LanAnnouncer(ids=ids, port=self.daemon.listen_address[1],
                                          broadcast_address=self.daemon.options.lan_address,
                                          broadcast_port=self.daemon.options.lan_port)
            self.listener = LanListener(self._on_sighting, own_peers=self.own_peers(),
                                        ids=list(ids), port=self.daemon.options.lan_port)
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
            self.tracker.set_ids(ids)
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
        self._tracker_view[update.club_id] = {
            peer: [(a.host, a.port) for a in addresses if a.scheme == "tcp"]
            for peer, addresses in update.peers.items()}
        self._tracker_utp[update.club_id] = {
            peer: [(a.host, a.port) for a in addresses if a.scheme == "utp"]
            for peer, addresses in update.peers.items()}
        if self.reach is not None:  # open our NAT to them, whoever dials (nat.md)
            self.reach.punch([a for peers in self._tracker_utp[update.club_id].values()
                              for a in peers])
        self.reconcile()

    def _on_sighting(self, sighting: LanSighting) -> None:
        peers = self._lan_view.setdefault(sighting.id, {})
        known = peers.get(sighting.peer)
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
        if self.daemon.manager is None:
            return
        manual = self.manual_peers()
        targets: list[Target] = []
        rank = {READ_WRITE: 2, READ_ONLY: 1}
        for share in self.daemon.shares.values():
            if share.runtime is None:
                continue
            best: dict[str, tuple[str, list[tuple[str, int]]]] = {}
            utp: dict[str, list[tuple[str, int]]] = {}
            held = [lv for lv in share.keys.levels if lv.has_key and lv.key_id_hex]
            for level in held:
                assert level.key_id_hex is not None
                for peer, addresses in self.sightings(level.key_id_hex).items():
                    more = self.utp_sightings(level.key_id_hex, peer)
                    utp.setdefault(peer, []).extend(
                        a for a in more if a not in utp.get(peer, []))
                    if not addresses and not more:
                        continue
                    prior = best.get(peer)
                    if prior is None or rank.get(level.access_level, 0) > rank.get(prior[0], 0):
                        merged = addresses + ([] if prior is None else
                                              [a for a in prior[1] if a not in addresses])
                        best[peer] = (level.access_level, merged)
                    else:
                        prior[1].extend(a for a in addresses if a not in prior[1])
            for peer, (level_name, addresses) in best.items():
                targets.append(Target("share", share.entry.share_id, peer, tuple(addresses),
                                      level_name, "discovered", tuple(utp.get(peer, ()))))
            if held:
                top = max(held, key=lambda lv: rank.get(lv.access_level, 0)).access_level
                for address in manual:
                    targets.append(Target("share", share.entry.share_id, None, (address,),
                                          top, "manual"))
        for attach in self.daemon.pending.values():
            for peer, addresses in self.sightings(attach.access_id).items():
                more = self.utp_sightings(attach.access_id, peer)
                if addresses or more:
                    targets.append(Target("attach", attach.access_id, peer, tuple(addresses),
                                          None, "discovered", tuple(more)))
            for address in manual:
                targets.append(Target("attach", attach.access_id, None, (address,), None,
                                      "manual"))
        if self.daemon.listen_address is not None:
            own = {self.daemon.listen_address, ("127.0.0.1", self.daemon.listen_address[1])}
            targets = [t for t in targets if not (t.peer_id is None and t.addresses[0] in own)]
        self.daemon.manager.set_targets(targets)

