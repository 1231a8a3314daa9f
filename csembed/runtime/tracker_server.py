"""asyncio runtime of the tracker server: sockets and a timer around the registry.

Theory of operation
-------------------
All protocol decisions live in :class:`~csembed.discovery.tracker_registry.TrackerRegistry`.
This module accepts TCP connections, hands each one's bytes to the registry
with the loop clock as ``now``, and carries out the registry's outputs:
writes, and closes of connections the registry dropped. One timer, re-armed
after every call with :meth:`TrackerRegistry.get_timer`, expires silent
clients. A client that stops reading while we write to it is dropped once
its unsent data exceeds ``write_buffer_limit``, so a slow reader cannot make
the tracker buffer without bound.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Final

from csembed.discovery.tracker_registry import (
    CloseConnection,
    SendData,
    TrackerRegistry,
    TrackerServerConfig,
)

__all__ = ["DEFAULT_TRACKER_PORT", "TrackerServer"]

DEFAULT_TRACKER_PORT: Final = 49200
"""The port core.md names for the public tracker."""

_READ_SIZE: Final = 65536
log = logging.getLogger("csembed.tracker")


class TrackerServer:
    """A tracker listening on TCP.

    ``await start(host, port)`` binds (port 0 picks a free one, see
    :attr:`addresses`); ``await close()`` stops listening and drops every
    client. ``registry`` is the live sans-I/O state, for inspection.
    """

    def __init__(self, config: TrackerServerConfig | None = None, *,
                 write_buffer_limit: int = 1 << 20) -> None:
        self.registry = TrackerRegistry(config)
        self._write_buffer_limit = write_buffer_limit
        self._writers: dict[int, asyncio.StreamWriter] = {}
        self._server: asyncio.Server | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """(host, port) of every listening socket."""
        if self._server is None:
            return []
        return [sock.getsockname()[:2] for sock in self._server.sockets]

    async def start(self, host: str | None = "0.0.0.0", port: int = DEFAULT_TRACKER_PORT) -> None:
        """Start listening on ``host:port``."""
        if self._server is not None:
            raise RuntimeError("tracker server already started")
        self._server = await asyncio.start_server(self._serve, host, port,
                                                  family=socket.AF_UNSPEC, reuse_address=True)
        log.info("tracker listening on %s", ", ".join(f"{h}:{p}" for h, p in self.addresses))

    async def serve_forever(self) -> None:
        """Serve until cancelled or closed."""
        if self._server is None:
            raise RuntimeError("tracker server not started")
        try:
            await self._server.serve_forever()
        except asyncio.CancelledError:
            pass

    async def close(self) -> None:
        """Stop listening and close every connection."""
        # A connection accepted just before this may start its handler later;
        # the flag makes that handler hang up at once, or wait_closed() would
        # wait for it for ever.
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers.values()):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> TrackerServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- per connection ----------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing:
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        loop = asyncio.get_running_loop()
        peer = writer.get_extra_info("peername")
        remote_ip = peer[0] if isinstance(peer, tuple) and peer else None
        conn = self.registry.open(remote_ip, loop.time())
        self._writers[conn] = writer
        try:
            self._flush()
            while conn in self._writers:
                try:
                    data = await reader.read(_READ_SIZE)
                except (ConnectionError, OSError):
                    self.registry.connection_lost(conn, loop.time())
                    break
                self.registry.receive_data(conn, data, loop.time())
                self._flush()
                if not data:
                    break
                drain = self._writers.get(conn)
                if drain is not None:
                    try:
                        await drain.drain()
                    except (ConnectionError, OSError):
                        self.registry.connection_lost(conn, loop.time())
                        break
        except asyncio.CancelledError:
            pass
        finally:
            self.registry.connection_lost(conn, loop.time())
            self._flush()
            closing = self._writers.pop(conn, None)
            if closing is not None:
                closing.close()
            self._tasks.discard(task)

    def _flush(self) -> None:
        """Carry out the registry's outputs, then re-arm the timer."""
        loop = asyncio.get_running_loop()
        while outputs := self.registry.pop_outputs():
            for out in outputs:
                writer = self._writers.get(out.conn)
                if isinstance(out, CloseConnection):
                    log.info("tracker client %d closed: %s", out.conn, out.reason)
                    if writer is not None:
                        del self._writers[out.conn]
                        writer.close()
                elif isinstance(out, SendData) and writer is not None:
                    if writer.is_closing():
                        continue
                    writer.write(out.data)
                    if writer.transport.get_write_buffer_size() > self._write_buffer_limit:
                        log.info("tracker client %d dropped: not reading", out.conn)
                        del self._writers[out.conn]
                        writer.transport.abort()
                        self.registry.connection_lost(out.conn, loop.time())
        self._arm_timer()

    def _arm_timer(self) -> None:
        if self._closing:
            return
        when = self.registry.get_timer()
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when is not None:
            self._timer = asyncio.get_running_loop().call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.registry.handle_timer(asyncio.get_running_loop().time())
        self._flush()
