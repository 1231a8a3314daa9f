"""Hostile or dying peers at the connection layer (issue 10): real loopback TCP."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from dataclasses import replace

import pytest
from test_session_tcp import CONFIG, TIMEOUT, Creator, until_ready

from csembed.protocol.core import Ready
from csembed.protocol.core_access import Grant
from csembed.protocol.wire import Message
from csembed.runtime.session_stream import SessionStream, connect, serve
from csembed.security.handshake import SessionConfig
from csembed.security.keys import READ_WRITE, new_peer_id


async def _reset_on_first_message(stream: SessionStream) -> None:
    while (event := await stream.next_event()) is not None:
        if isinstance(event, Message):
            sock = stream._link.transport.get_extra_info("socket")  # type: ignore[union-attr]
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            stream.abort()  # the peer "dies": an RST, no close record
            return


def test_first_failed_send_closes_the_stream(caplog: pytest.LogCaptureFixture) -> None:
    """Item 12: after the peer died, sending raises at once instead of logging
    'socket.send() raised exception' on every later write."""
    caplog.set_level(logging.WARNING, logger="asyncio")
    asyncio.run(_first_failed_send())
    noisy = [r for r in caplog.records if "socket.send() raised" in r.getMessage()]
    assert noisy == []


async def _first_failed_send() -> None:
    creator = Creator()
    server = await serve("127.0.0.1", 0, creator.registry, _reset_on_first_message, CONFIG)
    try:
        port = server.sockets[0].getsockname()[1]
        grant_stream = await connect("127.0.0.1", port, creator_grant(creator), CONFIG)
        events = await until_ready(grant_stream)
        assert isinstance(events[-1], Ready)
        await grant_stream.send_message({"type": "test.die"})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        failed = False
        while loop.time() < deadline:
            try:
                await grant_stream.send_message({"type": "test.more", "pad": "x" * 1000})
            except ConnectionError:
                failed = True
                break
            await asyncio.sleep(0.01)  # let the reset arrive; polling, not synchronising
        assert failed, "sending to a dead peer never failed"
        with pytest.raises(ConnectionError):
            await grant_stream.send_message({"type": "test.more"})
        grant_stream.abort()
    finally:
        server.close()
        await server.wait_closed()


def creator_grant(creator: Creator) -> Grant:
    return Grant.share_key(creator.share, READ_WRITE, new_peer_id())


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_unauthenticated_connections_beyond_the_budget_push_out_the_floods_own() -> None:
    """Item 1: at most ``max_pending`` connections may be authenticating; a flood
    from one address closes its own oldest ones, not another address's, and a
    peer with the key still gets in while the flood's sockets stay open."""
    asyncio.run(_budget())


async def _budget() -> None:
    creator = Creator()
    config = replace(CONFIG, session=SessionConfig(max_pending=4))
    server = await serve("127.0.0.1", 0, creator.registry, creator.handle, config)
    loop = asyncio.get_running_loop()
    flood: list[socket.socket] = []
    try:
        port = server.sockets[0].getsockname()[1]

        def raw(source: str) -> socket.socket:
            sock = socket.create_connection(("127.0.0.1", port), source_address=(source, 0))
            sock.sendall(b"C")
            return sock

        bystander = await loop.run_in_executor(None, raw, "127.0.0.3")
        for _ in range(12):
            flood.append(await loop.run_in_executor(None, raw, "127.0.0.2"))
        async with asyncio.timeout(TIMEOUT):
            while sum(map(_closed_by_peer, flood)) < 12 - 3:
                await asyncio.sleep(0.02)
        assert not _closed_by_peer(bystander)
        client = await connect("127.0.0.1", port, creator_grant(creator), CONFIG)
        events = await until_ready(client)
        assert isinstance(events[-1], Ready)
        await client.close()
        bystander.close()
    finally:
        for sock in flood:
            sock.close()
        server.close()
        await server.wait_closed()
