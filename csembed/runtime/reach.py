"""Being reachable from the internet: STUN on the uTP socket, port mapping, NAT status.

Theory of operation
-------------------
:class:`Reach` runs beside the connection manager for one daemon. When the
manager listens on uTP, it asks every configured STUN server (by default the
tracker's host on port 3478: whoever runs a tracker for its users can run a
STUN server beside it, and a daemon without a tracker contacts no one) which
address it sees our uTP socket at, at start and then every
``stun_interval`` seconds, which doubles as the keep-alive that holds the
NAT's UDP mapping open. The answers give the public ``utp:`` address we
announce to the tracker and the NAT's kind (:func:`csembed.nat.stun.classify`):
two servers that see different ports mean a symmetric NAT, where the port a
server saw is useless to a peer, which ``status`` says in plain words.

When port mapping is on, it asks the gateway for a TCP (and UDP) mapping of
our port by UPnP IGD, else NAT-PMP (:mod:`csembed.runtime.port_mapping`),
renews the lease at half its lifetime and deletes the mapping on close; the
mapped address is announced as a ``tcp:`` address. Whenever what we would
announce changes, ``on_change`` is called (the peer finder re-registers).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # uTP and STUN load only with a uTP socket (memory on small boards)
    from csembed.runtime.utp_endpoint import UtpEndpoint

__all__ = ["DEFAULT_STUN_PORT", "Reach", "ReachConfig"]

log = logging.getLogger("csembed.reach")

DEFAULT_STUN_PORT = 3478
PUNCH_ROUNDS = 15
MAX_PUNCH = 32

Address = tuple[str, int]


@dataclass(frozen=True)
class ReachConfig:
    """What the daemon does to be reachable (``csembed daemon`` options)."""

    utp: bool = True
    """Listen and dial on uTP too (UDP, same port number as TCP)."""
    stun_servers: tuple[Address, ...] = ()
    """STUN servers to ask; empty: the tracker's host on port 3478."""
    port_mapping: bool | None = None
    """UPnP/NAT-PMP mapping: on, off, or ``None`` = on with a tracker not on loopback."""
    stun_interval: float = 25.0
    mapping_lease: int = 3600


def global_ipv6_addresses(table: Path = Path("/proc/net/if_inet6")) -> list[str]:
    """This host's global-scope IPv6 addresses (not tentative, not deprecated)."""
    out = []
    with contextlib.suppress(OSError):
        for line in table.read_text().splitlines():
            fields = line.split()
            if len(fields) < 6 or fields[3] != "00":  # scope 0x00: global
                continue
            flags = int(fields[4], 16)
            if flags & (0x40 | 0x20 | 0x01):  # tentative, deprecated, temporary
                continue
            with contextlib.suppress(ValueError):
                out.append(str(ipaddress.IPv6Address(bytes.fromhex(fields[0]))))
    return out


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


NAT_SUMMARY = {
    "none": "no NAT: the STUN server sees our own address",
    "cone": "behind a NAT that keeps one public port per socket: peers can reach us "
            "over uTP by hole punching",
    "symmetric": "behind a symmetric NAT (a new public port for every destination): "
                 "hole punching cannot work from here, so a peer must be directly "
                 "reachable (a forwarded or UPnP-mapped port, or no NAT)",
    "unknown": "NAT type not known (fewer than two STUN answers)",
}


class Reach:
    """STUN, port mapping and NAT status for one daemon (module docstring)."""

    def __init__(self, endpoint: UtpEndpoint | None, tcp_port: int, config: ReachConfig, *,
                 tracker: Address | None, on_change: Callable[[], None]) -> None:
        self.endpoint = endpoint
        self.tcp_port = tcp_port
        self.config = config
        self.on_change = on_change
        self.stun_servers = list(config.stun_servers) or (
            [] if tracker is None else [(tracker[0], DEFAULT_STUN_PORT)])
        mapping = config.port_mapping
        if mapping is None:
            mapping = tracker is not None and not _is_loopback(tracker[0])
        self.mapping_enabled = mapping
        self.seen: dict[Address, Address] = {}  #: STUN server -> our address as it saw it
        self.stun_error: str | None = None
        self.mapper: Any = None  #: a port_mapping.PortMapper once mapping runs
        self._tasks: list[asyncio.Task[None]] = []
        self._punching: set[Address] = set()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.endpoint is not None and self.stun_servers:
            self._tasks.append(loop.create_task(self._stun_loop()))
        if self.mapping_enabled:
            self._tasks.append(loop.create_task(self._mapping_loop()))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.mapper is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self.mapper.remove()

    # -- STUN ---------------------------------------------------------------------------

    async def _stun_loop(self) -> None:
        assert self.endpoint is not None
        while True:
            seen: dict[Address, Address] = {}
            errors = []
            for server in self.stun_servers:
                try:
                    seen[server] = await self.endpoint.stun(server)
                except OSError as exc:
                    errors.append(str(exc))
            before = self.public_udp()
            self.seen = seen
            self.stun_error = "; ".join(errors) or None
            if self.public_udp() != before:
                log.info("STUN: public uTP address %s (%s NAT)", self.public_udp(),
                         self.nat_type())
                self.on_change()
            await asyncio.sleep(self.config.stun_interval)

    def public_udp(self) -> Address | None:
        """Our uTP socket's public address, when every server that answered agrees."""
        values = set(self.seen.values())
        return next(iter(values)) if len(values) == 1 else None

    def nat_type(self) -> str:
        """``none`` / ``cone`` / ``symmetric`` / ``unknown`` (see :func:`classify`)."""
        if self.endpoint is None:
            return "unknown"
        from csembed.nat.stun import classify
        return classify(self.endpoint.local_address, list(self.seen.values()))

    # -- port mapping ---------------------------------------------------------------------

    async def _mapping_loop(self) -> None:
        from csembed.runtime.port_mapping import PortMapper
        mapper = PortMapper(self.tcp_port, udp=self.endpoint is not None,
                            lease=self.config.mapping_lease)
        self.mapper = mapper
        while True:
            before = mapper.external
            await mapper.refresh()
            if mapper.external != before:
                log.info("port mapping: %s", mapper.describe())
                self.on_change()
            await asyncio.sleep(mapper.next_refresh())

    # -- hole punching --------------------------------------------------------------------

    def punch(self, addresses: list[Address]) -> None:
        """Open our NAT towards peers' ``utp:`` addresses: a one-byte datagram to each,
        once a second for ``PUNCH_ROUNDS`` seconds, from the uTP socket. A peer that
        only waits for us to dial (we issued the code it holds) can then be reached."""
        if self.endpoint is None:
            return
        fresh = [a for a in addresses[:MAX_PUNCH] if a not in self._punching]
        if not fresh:
            return
        self._punching.update(fresh)
        task = asyncio.get_running_loop().create_task(self._punch(fresh))
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    async def _punch(self, addresses: list[Address]) -> None:
        assert self.endpoint is not None
        from csembed.runtime.utp_endpoint import PUNCH
        try:
            for _ in range(PUNCH_ROUNDS):
                for address in addresses:
                    self.endpoint.send_datagram(PUNCH, address)
                await asyncio.sleep(1.0)
        finally:
            self._punching.difference_update(addresses)

    # -- what we tell others ----------------------------------------------------------------

    def addresses(self) -> list[str]:
        """Extra addresses to announce: the mapped TCP one, the public uTP one."""
        out = []
        if self.mapper is not None and self.mapper.external is not None:
            host, port = self.mapper.external
            out.append(f"tcp:{host}:{port}")
            if self.mapper.udp_mapped:
                out.append(f"utp:{host}:{port}")
        public = self.public_udp()
        if public is not None and self.nat_type() != "symmetric":
            host, port = public
            text = f"utp:[{host}]:{port}" if ":" in host else f"utp:{host}:{port}"
            if text not in out:
                out.append(text)
        return out

    def status(self) -> dict[str, Any]:
        """The ``nat`` object of ``status``."""
        public = self.public_udp()
        nat = self.nat_type()
        summary = NAT_SUMMARY[nat]
        if self.endpoint is None:
            summary = "uTP is off: only TCP addresses are used"
        elif not self.stun_servers:
            summary = "no STUN server configured: public uTP address unknown"
        elif not self.seen and self.stun_error:
            summary = f"STUN failed: {self.stun_error}"
        return {
            "utp": None if self.endpoint is None else
            f"udp port {self.endpoint.local_address[1]}",
            "stun_servers": [f"{h}:{p}" for h, p in self.stun_servers],
            "public_udp": None if public is None else f"{public[0]}:{public[1]}",
            "nat_type": nat,
            "hole_punching": nat in ("none", "cone"),
            "summary": summary,
            "port_mapping": "off" if not self.mapping_enabled else
            (self.mapper.describe() if self.mapper is not None else "starting"),
        }
