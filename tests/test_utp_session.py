"""The secure session over uTP on real loopback UDP sockets (IPv4 and IPv6)."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import pytest

from csembed.access_code import AccessCode
from csembed.protocol.core import CoreConfig, Ready
from csembed.protocol.core_access import CredentialRegistry, Grant
from csembed.protocol.wire import Message, PayloadChunk, PayloadEnd
from csembed.runtime.session_stream import SessionStream
from csembed.runtime.utp_endpoint import UtpEndpoint, connect_utp, serve_utp
from csembed.security.handshake import SessionClosed, SessionFailed
from csembed.security.keys import READ_WRITE, ShareKeys, new_peer_id

CONFIG = CoreConfig(gzip_level=1)
TIMEOUT = 30  # seconds; only guards against a hang


def run(coro: Any) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, TIMEOUT)
    return asyncio.run(bounded())


class Listener:
    def __init__(self, endpoint: UtpEndpoint) -> None:
        self.share = ShareKeys.generate()
        self.peer_id = new_peer_id()
        self.registry = CredentialRegistry()
        self.registry.add_share(self.share, self.peer_id)
        self.connections: asyncio.Queue[list[Any]] = asyncio.Queue()
        self.endpoint = endpoint
        serve_utp(endpoint, self.registry, self.handle, CONFIG)

    async def handle(self, stream: SessionStream) -> None:
        events = []
        while (event := await stream.next_event()) is not None:
            events.append(event)
            if isinstance(event, Message) and event.type == "test.echo":
                await stream.send_message({"type": "test.echoed", "n": event.body["n"]})
            if isinstance(event, SessionClosed | SessionFailed):
                break
        await self.connections.put(events)


async def until_ready(stream: SessionStream) -> list[Any]:
    events = []
    while (event := await stream.next_event()) is not None:
        events.append(event)
        if isinstance(event, Ready | SessionFailed | SessionClosed):
            break
    return events


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("family", ["ipv4", "ipv6", "dual-stack"])
def test_bulk_payload_and_echo_over_utp(family: str) -> None:
    if family != "ipv4" and not _ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    bind = {"ipv4": "127.0.0.1", "ipv6": "::1", "dual-stack": "::"}[family]
    dial = {"ipv4": "127.0.0.1", "ipv6": "::1", "dual-stack": "127.0.0.1"}[family]

    async def main() -> None:
        server_end = await UtpEndpoint.open(bind, 0)
        client_end = await UtpEndpoint.open(bind, 0)
        try:
            listener = Listener(server_end)
            grant = Grant.share_key(listener.share, READ_WRITE, new_peer_id())
            stream = await connect_utp(client_end, dial, server_end.local_address[1], grant,
                                       CONFIG)
            blob = bytes(range(256)) * 4096 * 2  # 2 MiB
            async with stream:
                events = await until_ready(stream)
                assert isinstance(events[-1], Ready)
                assert stream.peername[1] == server_end.local_address[1]
                await stream.send_message({"type": "test.echo", "n": 7})
                reply = await stream.next_event()
                assert isinstance(reply, Message) and reply.body["n"] == 7
                await stream.send_message({"type": "test.blob"}, payload=True)
                for i in range(0, len(blob), 65536):
                    await stream.send_chunk(blob[i:i + 65536])
                await stream.send_payload_end()
            server = await asyncio.wait_for(listener.connections.get(), TIMEOUT)
            data = b"".join(e.data for e in server if isinstance(e, PayloadChunk))
            assert data == blob
            assert sum(isinstance(e, PayloadEnd) for e in server) == 1
            assert isinstance(server[-1], SessionClosed)
            # both ends forget the connection once it closed cleanly
            for _ in range(200):
                if not server_end.connections and not client_end.connections:
                    break
                await asyncio.sleep(0.05)
            assert (server_end.connections, client_end.connections) == (0, 0)
        finally:
            server_end.close()
            client_end.close()
    run(main())


def test_wrong_code_fails_over_utp_and_nothing_answers_is_a_clear_error() -> None:
    async def main() -> None:
        server_end = await UtpEndpoint.open("127.0.0.1", 0)
        client_end = await UtpEndpoint.open("127.0.0.1", 0)
        try:
            listener = Listener(server_end)
            stream = await connect_utp(client_end, "127.0.0.1", server_end.local_address[1],
                                       Grant.code_holder(AccessCode.generate(), new_peer_id()),
                                       CONFIG)
            async with stream:
                events = await until_ready(stream)
            assert not any(isinstance(e, Ready) for e in events)
            del listener
            # a port where nothing listens for uTP answers SYNs with a reset
            silent = await UtpEndpoint.open("127.0.0.1", 0)
            port = silent.local_address[1]
            with pytest.raises(ConnectionError):
                await connect_utp(client_end, "127.0.0.1", port,
                                  Grant.code_holder(AccessCode.generate(), new_peer_id()))
            silent.close()
        finally:
            server_end.close()
            client_end.close()
    run(main())


def test_syn_flood_is_capped_and_answered_with_resets() -> None:
    from csembed.transport.utp_packet import ST_RESET, ST_SYN, Packet, decode, encode

    async def main() -> None:
        server_end = await UtpEndpoint.open("127.0.0.1", 0, max_connections=8)
        try:
            Listener(server_end)
            loop = asyncio.get_running_loop()
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.bind(("127.0.0.1", 0))
            for conn_id in range(0, 40, 2):
                sock.sendto(encode(Packet(ST_SYN, conn_id, 0, 0, 65536, 1, 0)),
                            server_end.local_address)
            resets = answers = 0
            async with asyncio.timeout(10):
                while resets + answers < 20:
                    packet = decode(await loop.sock_recv(sock, 2048))
                    if packet.type == ST_RESET:
                        resets += 1
                    else:
                        answers += 1
            assert (answers, resets) == (8, 12)
            assert server_end.connections == 8
            sock.close()
        finally:
            server_end.close()
    run(main())


@pytest.mark.once
def test_payload_arrives_intact_through_a_lossy_delaying_udp_proxy() -> None:
    import hashlib

    from csembed.lab.fault_proxy import FaultProxy, Faults

    async def main() -> None:
        server_end = await UtpEndpoint.open("127.0.0.1", 0)
        client_end = await UtpEndpoint.open("127.0.0.1", 0)
        proxy = FaultProxy("127.0.0.1:0", server_end.local_address, transport="udp",
                           faults=Faults(latency=0.05, jitter=0.02, loss=0.03))
        await proxy.start()
        try:
            listener = Listener(server_end)
            grant = Grant.share_key(listener.share, READ_WRITE, new_peer_id())
            stream = await connect_utp(client_end, "127.0.0.1", proxy.address[1], grant,
                                       CONFIG)
            blob = os.urandom(1_500_000)  # incompressible: gzip cannot shrink it
            async with stream:
                assert isinstance((await until_ready(stream))[-1], Ready)
                await stream.send_message({"type": "test.blob"}, payload=True)
                for i in range(0, len(blob), 65536):
                    await stream.send_chunk(blob[i:i + 65536])
                await stream.send_payload_end()
            server = await asyncio.wait_for(listener.connections.get(), TIMEOUT)
            data = b"".join(e.data for e in server if isinstance(e, PayloadChunk))
            assert hashlib.sha256(data).digest() == hashlib.sha256(blob).digest()
            assert proxy.stats.dropped > 0  # the loss really happened
        finally:
            await proxy.close()
            server_end.close()
            client_end.close()
    run(main())
