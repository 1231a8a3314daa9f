"""Issue 10 item 2 (network half): a peer that sends requests but does not read
the replies is not read from while its replies back up, and is dropped.

Real loopback TCP and a real :class:`PeerLink`; the share runtime is a stand-in
whose engine queues a 256 KiB reply for each message received, the way a
presence request is answered with a large bloom filter.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import replace
from typing import Any

import pytest
from test_session_tcp import TIMEOUT, Creator, until_ready

from csembed.protocol.core import CoreConfig, Ready
from csembed.protocol.core_access import Grant
from csembed.protocol.wire import encode_message
from csembed.runtime.peer_link import LinkResult, link_handler
from csembed.runtime.session_stream import connect, serve
from csembed.security.keys import READ_WRITE, new_peer_id

CONFIG = replace(CoreConfig(), gzip_level=0)  # replies that compress would hide the backlog
REPLY = 256 * 1024
SENT = 200  # requests the peer sends: 50 MiB of replies if all were queued


class _Engine:
    def __init__(self) -> None:
        self.queue: deque[bytes] = deque()
        self.queued = 0
        self.peak = 0

    def has_outgoing(self, conn_id: Any) -> bool:
        return bool(self.queue)

    def outgoing(self, conn_id: Any, max_bytes: int) -> list[bytes]:
        units: list[bytes] = []
        while self.queue and sum(map(len, units)) < max_bytes:
            units.append(self.queue.popleft())
            self.queued -= len(units[-1])
        return units

    def outgoing_backlog(self, conn_id: Any) -> int:
        return self.queued


class _Runtime:
    def __init__(self) -> None:
        self.engine = _Engine()
        self.received = 0
        self.wake = asyncio.Event()

    def attach(self, conn_id: Any, info: Any) -> asyncio.Event:
        return self.wake

    def detach(self, conn_id: Any) -> None:
        pass

    def receive(self, conn_id: Any, event: Any) -> None:
        self.received += 1
        unit = encode_message({"type": "test.reply", "pad": "x" * REPLY})
        self.engine.queue.append(unit)
        self.engine.queued += len(unit)
        self.engine.peak = max(self.engine.peak, self.engine.queued)
        self.wake.set()


@pytest.mark.once
def test_a_peer_that_does_not_read_its_replies_is_throttled_then_dropped() -> None:
    asyncio.run(_scenario())


async def _scenario() -> None:
    creator = Creator()
    runtime = _Runtime()
    ended: asyncio.Queue[LinkResult] = asyncio.Queue()
    handler = link_handler(lambda ready: runtime, on_end=ended.put_nowait,  # type: ignore[arg-type]
                           max_backlog=1 << 20, stall_timeout=2.0)
    server = await serve("127.0.0.1", 0, creator.registry, handler, CONFIG)
    try:
        port = server.sockets[0].getsockname()[1]
        grant = Grant.share_key(creator.share, READ_WRITE, new_peer_id())
        client = await connect("127.0.0.1", port, grant, CONFIG)
        assert isinstance((await until_ready(client))[-1], Ready)
        for n in range(SENT):  # small requests; the replies are never read
            await client.send_message({"type": "test.request", "n": n})
        async with asyncio.timeout(TIMEOUT):
            result = await ended.get()
        client.abort()
    finally:
        server.close()
        await server.wait_closed()
    print(f"{runtime.received} of {SENT} requests read; peak backlog "
          f"{runtime.engine.peak / 2**20:.1f} MiB; ended: {result.reason}")
    assert "does not read its replies" in result.reason
    assert runtime.received < SENT // 2
    assert runtime.engine.peak <= (1 << 20) + REPLY + 4096
