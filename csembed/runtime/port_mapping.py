"""asyncio adapter: ask the router for a port mapping by UPnP IGD, PCP or NAT-PMP.

Theory of operation
-------------------
:class:`PortMapper` keeps one external mapping of our listening port (TCP,
and UDP for uTP when asked) alive. :meth:`PortMapper.refresh` tries its
``methods`` in order, by default UPnP, then PCP, then NAT-PMP, and keeps the
first that works. UPnP: an SSDP search (:mod:`csembed.nat.upnp`) on a socket
of its own, the gateway's description over HTTP, then ``AddPortMapping`` for
the same external port with a lease and ``GetExternalIPAddress``. PCP
(:mod:`csembed.nat.pcp`) and NAT-PMP (:mod:`csembed.nat.natpmp`) go to the
default gateway read from ``/proc/net/route`` (or the one injected) on UDP
port 5351; PCP comes first as NAT-PMP's successor, and a NAT-PMP-only
gateway's "unsupported version" answer to it moves on to NAT-PMP at once
and skips PCP on later refreshes (RFC 6887 9). The runtime calls
``refresh`` again at half the lease (:meth:`PortMapper.next_refresh`), or a
minute after a failure, and :meth:`PortMapper.remove` on the way out deletes
the mapping (PCP and NAT-PMP: lifetime 0; PCP with the mapping's nonce).
Every exchange has a deadline, and every answer is parsed by the sans-I/O
codecs, which bound its size; datagrams that are not the answer awaited are
ignored, a refusal ends the exchange at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from csembed.nat import natpmp, pcp, upnp
from csembed.security.keys import Rng, default_rng

__all__ = ["PortMapper", "default_gateway"]

log = logging.getLogger("csembed.port_mapping")

SSDP_WAIT = 3.0
HTTP_TIMEOUT = 5.0
RETRY_AFTER_FAILURE = 60.0
METHODS = ("upnp", "pcp", "nat-pmp")
T = TypeVar("T")


def default_gateway(route_table: Path = Path("/proc/net/route")) -> str | None:
    """The IPv4 default gateway from the kernel's routing table, if any."""
    with contextlib.suppress(OSError):
        for line in route_table.read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 3 and fields[1] == "00000000" and fields[2] != "00000000":
                return str(ipaddress.IPv4Address(struct.pack("<I", int(fields[2], 16))))
    return None


class _Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue(maxsize=64)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait((data, addr))


async def _http(host: str, port: int, request: bytes) -> tuple[upnp.HttpResponse, str]:
    """Send one request, read the answer to EOF (bounded); also our local address."""
    async with asyncio.timeout(HTTP_TIMEOUT):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            local = str(writer.get_extra_info("sockname")[0])
            writer.write(request)
            data = await reader.read(upnp.MAX_DOCUMENT + 4096)
            while chunk := await reader.read(upnp.MAX_DOCUMENT + 4096):
                data += chunk
                if len(data) > 2 * upnp.MAX_DOCUMENT:
                    raise upnp.UpnpError("gateway's HTTP answer is too long")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return upnp.parse_http_response(data), local


class PortMapper:
    """One port mapping kept alive (module docstring)."""

    def __init__(self, port: int, *, udp: bool, lease: int = 3600,
                 methods: tuple[str, ...] = METHODS, gateway: str | None = None,
                 gateway_port: int = natpmp.NATPMP_PORT, rng: Rng = default_rng,
                 first_wait: float = 0.25) -> None:
        if not methods or set(methods) - set(METHODS):
            raise ValueError(f"port mapping methods must be among {METHODS}")
        self.port = port
        self.methods = methods
        self.gateway = gateway  #: PCP/NAT-PMP gateway; None: the default route's
        self.gateway_port = gateway_port
        self.first_wait = first_wait  #: PCP/NAT-PMP: first resend after this, doubling
        self._rng = rng
        self._pcp_nonces: dict[str, bytes] = {}  #: protocol -> the mapping's nonce
        self._pcp_client: str | None = None
        self._pcp_unsupported = False
        self.udp = udp
        self.lease = lease
        self.method: str | None = None
        self.external: tuple[str, int] | None = None
        self.udp_mapped = False
        self.error: str | None = None
        self._gateway: upnp.Gateway | None = None
        self._local_ip: str | None = None
        self._natpmp_gateway: str | None = None

    def describe(self) -> str:
        if self.external is not None:
            what = "TCP+UDP" if self.udp_mapped else "TCP"
            return f"{self.method}: {what} {self.external[0]}:{self.external[1]} -> " \
                   f"port {self.port}, lease {self.lease} s"
        return f"failed: {self.error}" if self.error else "starting"

    def next_refresh(self) -> float:
        return self.lease / 2 if self.external is not None else RETRY_AFTER_FAILURE

    async def refresh(self) -> None:
        """Create or renew the mapping (the first of ``methods`` that works)."""
        errors = []
        attempts = {"upnp": ("UPnP", self._upnp, upnp.UpnpError),
                    "pcp": ("PCP", self._pcp, pcp.PcpError),
                    "nat-pmp": ("NAT-PMP", self._natpmp, natpmp.NatPmpError)}
        for method in self.methods:
            if method == "pcp" and self._pcp_unsupported:
                continue
            name, attempt, error = attempts[method]
            try:
                await attempt()
                self.method, self.error = method, None
                return
            except (OSError, TimeoutError, error) as exc:
                errors.append(f"{name}: {exc or type(exc).__name__}")
                if method == "upnp":
                    self._gateway = None
                if isinstance(exc, pcp.PcpVersionError) and exc.version == 0:
                    self._pcp_unsupported = True
        self.external, self.udp_mapped, self.method = None, False, None
        self.error = "; ".join(errors)
        log.info("no port mapping: %s", self.error)

    async def remove(self) -> None:
        """Delete the mapping (best effort)."""
        if self.external is None:
            return
        protocols = ["TCP"] + (["UDP"] if self.udp_mapped else [])
        if self.method == "upnp" and self._gateway is not None:
            for protocol in protocols:
                request = upnp.soap_request(self._gateway, "DeletePortMapping", {
                    "NewRemoteHost": "", "NewExternalPort": self.external[1],
                    "NewProtocol": protocol})
                with contextlib.suppress(OSError, TimeoutError, upnp.UpnpError):
                    response, _ = await _http(*self._gateway.host_port, request)
                    upnp.parse_soap_response(response, "DeletePortMapping")
        elif self.method == "pcp" and self._natpmp_gateway is not None:
            for protocol in protocols:
                with contextlib.suppress(OSError, TimeoutError, pcp.PcpError):
                    await self._pcp_map(protocol.lower(), 0, self.external[1])
        elif self.method == "nat-pmp" and self._natpmp_gateway is not None:
            for protocol in protocols:
                with contextlib.suppress(OSError, TimeoutError, natpmp.NatPmpError):
                    await self._natpmp_call(natpmp.mapping_request(protocol.lower(), self.port,
                                                                   0, 0))
        self.external = None

    # -- UPnP ----------------------------------------------------------------------------

    async def _discover(self) -> upnp.Gateway:
        loop = asyncio.get_running_loop()
        transport, collector = await loop.create_datagram_endpoint(
            _Collector, local_addr=("0.0.0.0", 0), family=socket.AF_INET)
        try:
            transport.sendto(upnp.msearch_request(), upnp.SSDP_ADDRESS)
            async with asyncio.timeout(SSDP_WAIT):
                while True:
                    data, _ = await collector.queue.get()
                    location = upnp.parse_ssdp_response(data)
                    if location is None:
                        continue
                    host, port = upnp.Gateway(location, "").host_port
                    response, _ = await _http(host, port, upnp.http_get(location))
                    if response.status == 200:
                        return upnp.parse_description(response.body, location)
        except TimeoutError:
            raise upnp.UpnpError("no UPnP gateway answered the SSDP search") from None
        finally:
            transport.close()

    async def _soap(self, action: str, arguments: dict[str, str | int]) -> dict[str, str]:
        assert self._gateway is not None
        response, local = await _http(*self._gateway.host_port,
                                      upnp.soap_request(self._gateway, action, arguments))
        self._local_ip = local
        return upnp.parse_soap_response(response, action)

    async def _upnp(self) -> None:
        if self._gateway is None:
            self._gateway = await self._discover()
        address = (await self._soap("GetExternalIPAddress", {})).get("NewExternalIPAddress", "")
        try:
            external_ip = str(ipaddress.ip_address(address))
        except ValueError:
            raise upnp.UpnpError(f"gateway gave external address {address!r:.60}") from None
        assert self._local_ip is not None
        protocols = ["TCP"] + (["UDP"] if self.udp else [])
        mapped = []
        for protocol in protocols:
            try:
                await self._soap("AddPortMapping", {
                    "NewRemoteHost": "", "NewExternalPort": self.port, "NewProtocol": protocol,
                    "NewInternalPort": self.port, "NewInternalClient": self._local_ip,
                    "NewEnabled": 1, "NewPortMappingDescription": "csembed",
                    "NewLeaseDuration": self.lease})
                mapped.append(protocol)
            except upnp.UpnpError:
                if protocol == "TCP":
                    raise
        self.external = (external_ip, self.port)
        self.udp_mapped = "UDP" in mapped

    # -- NAT-PMP ----------------------------------------------------------------------------

    def _gateway_address(self) -> str:
        self._natpmp_gateway = self.gateway or default_gateway()
        if self._natpmp_gateway is None:
            raise OSError("no default gateway")
        return self._natpmp_gateway

    async def _exchange(self, make: Callable[[str], bytes], parse: Callable[[bytes], T],
                        junk: type[Exception], what: str) -> T:
        """Send ``make(our address)`` to the gateway, resending (RFC 6886 3.1: 250 ms,
        doubling, four tries here), until ``parse`` accepts an answer; datagrams it
        rejects as ``junk`` are ignored, its other errors end the exchange."""
        assert self._natpmp_gateway is not None
        loop = asyncio.get_running_loop()
        transport, collector = await loop.create_datagram_endpoint(
            _Collector, remote_addr=(self._natpmp_gateway, self.gateway_port))
        try:
            request = make(str(transport.get_extra_info("sockname")[0]))
            wait = self.first_wait
            for _ in range(4):
                transport.sendto(request)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        while True:
                            data, _ = await collector.queue.get()
                            try:
                                return parse(data)
                            except junk:
                                continue
                wait *= 2
            raise TimeoutError(f"no {what} answer from {self._natpmp_gateway}")
        finally:
            transport.close()

    async def _natpmp_call(self, request: bytes) -> natpmp.NatPmpResponse:
        def parse(data: bytes) -> natpmp.NatPmpResponse:
            if not (len(data) >= 2 and data[1] == request[1] + 128) and not (
                    len(data) >= 4 and data[0] >= 2 and data[3] == 1):
                raise natpmp.NatPmpError("not the answer awaited")
            return natpmp.parse_response(data)

        class Junk(natpmp.NatPmpError):
            pass

        def strict(data: bytes) -> natpmp.NatPmpResponse:
            try:
                return parse(data)
            except natpmp.NatPmpRefused:
                raise
            except natpmp.NatPmpError as exc:
                raise Junk(str(exc)) from None

        return await self._exchange(lambda _: request, strict, Junk, "NAT-PMP")

    # -- PCP ----------------------------------------------------------------------------

    async def _pcp_map(self, protocol: str, lifetime: int,
                       suggested: int) -> pcp.PcpMapResponse:
        nonce = self._pcp_nonces.get(protocol)
        if nonce is None:
            nonce = self._pcp_nonces[protocol] = pcp.new_nonce(self._rng)

        def make(client: str) -> bytes:
            self._pcp_client = client
            return pcp.map_request(client_ip=client, nonce=nonce, protocol=protocol,
                                   internal_port=self.port, lifetime=lifetime,
                                   external_port=suggested)

        class Junk(pcp.PcpError):
            pass

        def parse(data: bytes) -> pcp.PcpMapResponse:
            try:
                return pcp.parse_map_response(data, nonce=nonce, protocol=protocol,
                                              internal_port=self.port)
            except (pcp.PcpResultError, pcp.PcpVersionError):
                raise
            except pcp.PcpError as exc:
                raise Junk(str(exc)) from None

        return await self._exchange(make, parse, Junk, "PCP")

    async def _pcp(self) -> None:
        self._gateway_address()
        previous = self.external[1] if self.external and self.method == "pcp" else self.port
        tcp = await self._pcp_map("tcp", self.lease, previous)
        self.udp_mapped = False
        if self.udp:
            with contextlib.suppress(OSError, TimeoutError, pcp.PcpError):
                udp = await self._pcp_map("udp", self.lease, tcp.external_port)
                self.udp_mapped = udp.external_port == tcp.external_port
        self.external = (tcp.external_ip, tcp.external_port)
        self.lease = tcp.lifetime or self.lease

    async def _natpmp(self) -> None:
        self._gateway_address()
        address = await self._natpmp_call(natpmp.external_address_request())
        tcp = await self._natpmp_call(natpmp.mapping_request("tcp", self.port, self.port,
                                                             self.lease))
        self.udp_mapped = False
        if self.udp:
            with contextlib.suppress(OSError, TimeoutError, natpmp.NatPmpError):
                udp = await self._natpmp_call(natpmp.mapping_request(
                    "udp", self.port, tcp.external_port, self.lease))
                self.udp_mapped = udp.external_port == tcp.external_port
        assert address.external_ip is not None
        self.external = (address.external_ip, tcp.external_port)
        self.lease = tcp.lifetime or self.lease
