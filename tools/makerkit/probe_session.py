"""One probing connection to a ClearSkies peer, seen from the outside.

Theory of operation. :class:`ProbeConnection` is csembed's own
:class:`~csembed.protocol.core.PeerConnection` with two openings a prober
needs: it records every ``core.ping`` the peer sends (the core otherwise
swallows them), and :meth:`ProbeConnection.send_unit_raw` puts hand-framed
bytes on the wire with none of our own checks, so a probe can send what a
well-behaved peer never would. :class:`ProbeSession` runs one such connection
over TCP: a reader task turns events into :class:`Received` messages (with
their payloads gathered, up to a cap) in an inbox, and :meth:`ProbeSession.wait_for`
polls that inbox for a condition with a deadline -- the only way the probe
waits for anything.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from csembed.protocol.core import (
    CoreConfig,
    Grant,
    KeysReceived,
    PeerConnection,
    Ready,
)
from csembed.protocol.core_messages import CorePing
from csembed.protocol.wire import Message, PayloadChunk, PayloadEnd
from csembed.runtime.session_stream import SessionStream, open_stream
from csembed.security.handshake import SessionClosed, SessionFailed

MAX_PAYLOAD = 64 << 20  #: payload bytes kept per message; the rest is counted, not kept


class ProbeConnection(PeerConnection):
    """A client :class:`PeerConnection` that remembers the peer's pings."""

    pings: list[Any]

    def _on_ping(self, ping: CorePing) -> None:
        if not hasattr(self, "pings"):
            self.pings = []
        self.pings.append(ping.timeout)
        super()._on_ping(ping)

    def send_unit_raw(self, unit: bytes) -> None:
        """Send ``unit`` as it is (through gzip when negotiated), unchecked."""
        self._send_unit(unit)


@dataclass
class Received:
    """One message from the peer, with its payload when it has one."""

    message: Message
    payload: bytearray = field(default_factory=bytearray)
    payload_size: int = 0
    complete: bool = True  #: False while payload chunks are still arriving

    @property
    def type(self) -> str:
        """The message's ``type``."""
        return self.message.type

    @property
    def body(self) -> dict[str, Any]:
        """The message's JSON body."""
        return self.message.body


class ProbeSession:
    """A probing connection over TCP (see the module docstring)."""

    def __init__(self, stream: SessionStream) -> None:
        self.stream = stream
        self.inbox: list[Received] = []
        self.ready: Ready | None = None
        self.keys: KeysReceived | None = None
        self.ended: str | None = None  #: why the connection ended, once it has
        self._changed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(cls, host: str, port: int, grant: Grant, config: CoreConfig) -> ProbeSession:
        """Connect and start the handshake under ``grant``."""
        stream = await open_stream(
            host, port, lambda now: ProbeConnection.client(grant, config, now=now))
        return cls(stream)

    @property
    def machine(self) -> ProbeConnection:
        """The connection's protocol machine."""
        machine = self.stream.machine
        assert isinstance(machine, ProbeConnection)
        return machine

    @property
    def pings(self) -> list[Any]:
        """Timeouts of the ``core.ping`` messages received so far."""
        return getattr(self.machine, "pings", [])

    async def _read(self) -> None:
        current: Received | None = None
        try:
            while True:
                event = await self.stream.next_event()
                if event is None or isinstance(event, SessionClosed):
                    self.ended = "closed by the peer"
                    break
                if isinstance(event, SessionFailed):
                    self.ended = f"failed: {event.reason}"
                    break
                if isinstance(event, KeysReceived):
                    self.keys = event
                elif isinstance(event, Ready):
                    self.ready = event
                elif isinstance(event, Message):
                    current = Received(event, complete=not event.has_payload)
                    self.inbox.append(current)
                elif isinstance(event, PayloadChunk) and current is not None:
                    current.payload_size += len(event.data)
                    if len(current.payload) < MAX_PAYLOAD:
                        current.payload += event.data
                elif isinstance(event, PayloadEnd) and current is not None:
                    current.complete = True
                self._changed.set()
        except (ConnectionError, OSError) as exc:
            self.ended = f"connection error: {exc}"
        finally:
            self._changed.set()

    async def wait_for(self, condition: Callable[[], Any], timeout: float) -> Any:
        """Wait until ``condition()`` is truthy (returning it) or the connection
        ended or ``timeout`` passed (returning ``None``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = condition()
            if result or self.ended is not None:
                return result or None
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._changed.wait()

    async def wait_for_more(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for one more message; True if one came."""
        count = len(self.inbox)
        return bool(await self.wait_for(lambda: len(self.inbox) > count, timeout))

    def find(self, kind: str, start: int = 0,
             where: Callable[[Received], bool] = lambda r: True) -> Received | None:
        """The first complete message of type ``kind`` from inbox index ``start``."""
        for item in self.inbox[start:]:
            if item.type == kind and item.complete and where(item):
                return item
        return None

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call a sending method of the machine, then flush."""
        return await self.stream.call(method, *args, **kwargs)

    async def send(self, body: dict[str, Any], payload: bytes | None = None,
                   sign_with: Any = None) -> None:
        """Send a message (and its payload in pieces of at most 64 KiB)."""
        await self.stream.call("send_message", body, payload=payload is not None,
                               sign_with=sign_with)
        if payload is not None:
            for start in range(0, len(payload), 65536):
                await self.stream.call("send_chunk", payload[start:start + 65536])
            await self.stream.call("send_payload_end")

    async def close(self) -> None:
        """Close the connection and stop reading."""
        with contextlib.suppress(ConnectionError, OSError):
            async with asyncio.timeout(5):
                await self.stream.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
