"""The web server on a real loopback socket, with a stand-in control handler.

Hostile clients -- one that stalls mid-request, one that floods, too many at
once -- get their error and lose the server nothing: the next request is
served. The page's data really comes from the control callable.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from csembed.runtime.web_server import WebServer
from csembed.web.guard import WebOptions


async def _control(request: dict[str, Any]) -> dict[str, Any]:
    replies = {"status_detail": {"paused": False, "shares": [{"path": "/m", "status": "synced"}]},
               "list_peers": {"peers": []}, "list_transfers": {"transfers": []}}
    return replies.get(request["type"], {"error": "not_supported", "message": "no"})


async def _exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    return reply


def _get(port: int) -> bytes:
    return f"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


def test_hostile_clients_get_errors_and_the_next_request_is_served() -> None:
    async def run() -> None:
        server = WebServer(WebOptions("127.0.0.1", 0), _control, max_connections=3,
                           read_timeout=0.5)
        _, port = await server.start()
        try:
            reply = await _exchange(port, _get(port))
            assert reply.startswith(b"HTTP/1.1 200 ")
            body = json.loads(reply.split(b"\r\n\r\n", 1)[1])
            assert body["status"]["shares"][0]["path"] == "/m"

            # stalls mid-head: cut off at the read timeout with 408
            assert (await _exchange(port, b"GET / HTTP/1.1\r\nHo")).startswith(
                b"HTTP/1.1 408 ")
            # floods a header: 431 as soon as the bound is passed, without reading it all
            flood = b"GET / HTTP/1.1\r\nX: " + b"a" * 200_000
            assert (await _exchange(port, flood)).startswith(b"HTTP/1.1 431 ")
            assert (await _exchange(port, b"\x00\xff garbage\r\n\r\n")).startswith(
                b"HTTP/1.1 400 ")

            # three stalled connections hold every slot: a fourth is told 503 at once
            stalled = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
            for _, writer in stalled:
                writer.write(b"GET")
                await writer.drain()
            deadline = asyncio.get_running_loop().time() + 10
            while len(server._tasks) < 3 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
            assert (await _exchange(port, _get(port))).startswith(b"HTTP/1.1 503 ")
            for _, writer in stalled:
                writer.close()
            # once they time out, the page answers again
            deadline = asyncio.get_running_loop().time() + 10
            while server._tasks and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
            assert (await _exchange(port, _get(port))).startswith(b"HTTP/1.1 200 ")
        finally:
            await server.close()

    asyncio.run(run())
