"""PeerConnection over real loopback TCP through the asyncio adapter."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from csembed.access_code import AccessCode
from csembed.protocol.core import (
    CoreConfig,
    KeysAcknowledged,
    KeysReceived,
    PeerConnection,
    Ready,
)
from csembed.protocol.core_access import DEFAULT_CODE_LIFETIME, CredentialRegistry, Grant
from csembed.protocol.wire import Message, PayloadChunk, PayloadEnd
from csembed.runtime.session_stream import SessionStream, connect, open_stream, serve
from csembed.security.errors import AuthenticationFailed, RecordError
from csembed.security.handshake import SessionClosed, SessionConfig, SessionFailed
from csembed.security.keys import READ_ONLY, READ_WRITE, ShareKeys, new_peer_id

CONFIG = CoreConfig(gzip_level=1)
TIMEOUT = 20  # seconds; only guards against a hang, never waited out on success


class Creator:
    """A listening device with one share; records what each connection saw."""

    def __init__(self) -> None:
        self.share = ShareKeys.generate()
        self.peer_id = new_peer_id()
        self.registry = CredentialRegistry()
        self.registry.add_share(self.share, self.peer_id)
        self.connections: asyncio.Queue[list[Any]] = asyncio.Queue()
        self.server: asyncio.Server | None = None

    async def handle(self, stream: SessionStream) -> None:
        events = []
        while (event := await stream.next_event()) is not None:
            events.append(event)
            if isinstance(event, Message) and event.type == "test.echo":
                await stream.send_message({"type": "test.echoed", "n": event.body["n"]})
            if isinstance(event, SessionClosed | SessionFailed):
                break
        await self.connections.put(events)

    async def __aenter__(self) -> Creator:
        self.server = await serve("127.0.0.1", 0, self.registry, self.handle, CONFIG)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    def issue(self, level: str = READ_ONLY, **terms: Any) -> AccessCode:
        code = AccessCode.generate()
        self.registry.codes.issue(code, self.share, level, self.peer_id,
                                  now=asyncio.get_running_loop().time(), **terms)
        return code


async def until_ready(stream: SessionStream) -> list[Any]:
    """Client side: run to Ready (acknowledging keys) or to the end."""
    events = []
    while (event := await stream.next_event()) is not None:
        events.append(event)
        if isinstance(event, KeysReceived):
            await stream.call("acknowledge_keys")
        if isinstance(event, Ready | SessionFailed | SessionClosed):
            break
    return events


async def session(creator: Creator, grant: Grant,
                  body: Callable[[SessionStream], Awaitable[Any]] | None = None
                  ) -> tuple[list[Any], list[Any]]:
    """One client connection: handshake, optional extra work, close; both sides' events."""
    stream = await connect("127.0.0.1", creator.port, grant, CONFIG)
    async with stream:
        client_events = await until_ready(stream)
        if body is not None and isinstance(client_events[-1], Ready):
            client_events += await body(stream)
    server_events = await asyncio.wait_for(creator.connections.get(), TIMEOUT)
    return client_events, server_events


def run(coro: Awaitable[Any]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, TIMEOUT)
    return asyncio.run(bounded())


def types(events: list[Any]) -> list[type]:
    return [type(e) for e in events]


def test_code_then_key_id_over_tcp() -> None:
    async def main() -> None:
        async with Creator() as creator:
            joiner_peer = new_peer_id()
            code = creator.issue(READ_WRITE)

            async def echo(stream: SessionStream) -> list[Any]:
                await stream.send_message({"type": "test.echo", "n": 7})
                return [await stream.next_event()]

            client, server = await session(creator, Grant.code_holder(code, joiner_peer), echo)
            assert types(client) == [KeysReceived, Ready, Message]
            assert client[2].body == {"type": "test.echoed", "n": 7}
            assert types(server)[:2] == [KeysAcknowledged, Ready]
            assert server[-1] == SessionClosed()
            received = client[1].share
            assert received.to_record() == creator.share.to_record()
            # one-time: spent
            client, _ = await session(creator, Grant.code_holder(code, joiner_peer))
            assert isinstance(client[-1].error, AuthenticationFailed)
            # the received key ID connects, without a key exchange
            client, server = await session(
                creator, Grant.share_key(received, READ_WRITE, joiner_peer), echo)
            assert types(client) == [Ready, Message] and types(server)[0] is Ready
    run(main())


def test_multi_use_code_twice_and_expired_code_over_tcp() -> None:
    async def main() -> None:
        async with Creator() as creator:
            multi = creator.issue(max_uses=None)
            for _ in range(2):
                client, _ = await session(creator, Grant.code_holder(multi, new_peer_id()))
                assert types(client) == [KeysReceived, Ready]
            loop = asyncio.get_running_loop()
            expired = AccessCode.generate()
            creator.registry.codes.issue(expired, creator.share, READ_ONLY, creator.peer_id,
                                         now=loop.time() - DEFAULT_CODE_LIFETIME)
            client, _ = await session(creator, Grant.code_holder(expired, new_peer_id()))
            assert isinstance(client[-1], SessionFailed)
            assert isinstance(client[-1].error, AuthenticationFailed)
    run(main())


def test_bulk_payload_over_tcp() -> None:
    async def main() -> None:
        async with Creator() as creator:
            grant = Grant.share_key(creator.share, READ_WRITE, new_peer_id())
            blob = bytes(range(256)) * 4096  # 1 MiB

            async def send(stream: SessionStream) -> list[Any]:
                for n in range(4):
                    await stream.send_message({"type": "test.blob", "n": n}, payload=True)
                    await stream.send_chunk(blob)
                    await stream.send_payload_end()
                return []

            _, server = await session(creator, grant, send)
            data = b"".join(e.data for e in server if isinstance(e, PayloadChunk))
            assert data == blob * 4
            assert sum(isinstance(e, PayloadEnd) for e in server) == 4
            assert max(len(e.data) for e in server if isinstance(e, PayloadChunk)) <= 65536
    run(main())


async def flipping_proxy(target_port: int, flip_at: int) -> tuple[asyncio.Server, int]:
    """Forwards TCP both ways; flips one bit of the server-to-client byte ``flip_at``."""
    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   flip: int | None) -> None:
        seen = 0
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if flip is not None and seen <= flip < seen + len(data):
                    mutable = bytearray(data)
                    mutable[flip - seen] ^= 0x04
                    data = bytes(mutable)
                seen += len(data)
                writer.write(data)
                await writer.drain()
        writer.close()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(reader, up_writer, None), pipe(up_reader, writer, flip_at))

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1])


def test_flipped_bit_on_the_wire_ends_the_session_over_tcp() -> None:
    async def main() -> None:
        async with Creator() as creator:
            # 64 bytes of server hello + 24 of stream header; byte 100 is inside the
            # first record (the greeting)
            proxy, port = await flipping_proxy(creator.port, 100)
            grant = Grant.share_key(creator.share, READ_WRITE, new_peer_id())
            stream = await connect("127.0.0.1", port, grant, CONFIG)
            async with stream:
                events = await until_ready(stream)
            assert types(events) == [SessionFailed]
            assert isinstance(events[0].error, RecordError)
            await asyncio.wait_for(creator.connections.get(), TIMEOUT)
            proxy.close()
            await proxy.wait_closed()
    run(main())


def test_adapter_fires_the_machines_timers() -> None:
    """A server that accepts but never answers: the client's handshake deadline fires."""
    async def main() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # until the client gives up
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        config = CoreConfig(session=SessionConfig(handshake_timeout=0.2))
        grant = Grant.share_key(ShareKeys.generate(), READ_WRITE, new_peer_id())
        loop = asyncio.get_running_loop()
        started = loop.time()
        stream = await connect("127.0.0.1", port, grant, config)
        async with stream:
            events = await until_ready(stream)
        assert types(events) == [SessionFailed] and "timed out after 0.2 s" in events[0].reason
        assert 0.2 <= loop.time() - started < TIMEOUT
        server.close()
        await server.wait_closed()
    run(main())


class CopyingMachine:
    """A PeerConnection seen only through receive_data (no zero-copy receiving)."""

    def __init__(self, inner: PeerConnection) -> None:
        self.inner = inner

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> None:
        self.inner.receive_data(bytes(data), now)

    def next_event(self) -> Any:
        return self.inner.next_event()

    def data_to_send(self) -> bytes | bytearray:
        return self.inner.data_to_send()

    def get_timer(self) -> float | None:
        return self.inner.get_timer()

    def handle_timer(self, now: float) -> None:
        self.inner.handle_timer(now)

    def close(self) -> None:
        self.inner.close()

    def send_message(self, body: dict[str, Any], **kwargs: Any) -> None:
        self.inner.send_message(body, **kwargs)


def test_adapter_with_a_machine_that_only_takes_receive_data() -> None:
    async def main() -> None:
        async with Creator() as creator:
            grant = Grant.share_key(creator.share, READ_WRITE, new_peer_id())
            stream = await open_stream("127.0.0.1", creator.port, lambda now: CopyingMachine(
                PeerConnection.client(grant, CONFIG, now=now)))
            async with stream:
                events = await until_ready(stream)
                await stream.send_message({"type": "test.echo", "n": 3})
                events.append(await stream.next_event())
            assert types(events) == [Ready, Message] and events[1].body["n"] == 3
            await asyncio.wait_for(creator.connections.get(), TIMEOUT)
    run(main())
