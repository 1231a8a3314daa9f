"""asyncio runtime of the tracker client: one long-lived connection, re-made on failure.

Theory of operation
-------------------
:class:`TrackerClient` owns a task that loops: connect to the tracker, run a
:class:`~csembed.discovery.tracker_session.TrackerSession` over the
connection until it fails or ends, then wait a capped, jittered back-off
(:class:`~csembed.discovery.backoff.Backoff`) and try again. The back-off
resets once a tracker has greeted us. While connected the task reads with a
timeout that is the session's next timer, so pings go out at TTL/2.

The daemon changes what we register with :meth:`TrackerClient.set_ids` and
:meth:`TrackerClient.set_addresses` at any time; they take effect on the
live connection at once (the session sends a full replacement only if the
set changed) and on every later reconnection. Peer lists arrive through the
``on_peers`` callback (one :class:`~csembed.discovery.tracker_session.PeersUpdate`
per club, each replacing earlier news of that club) and are also kept in
:attr:`TrackerClient.peers`. ``on_state`` reports ``"connecting"``,
``"connected"`` (greeted), and ``"waiting"`` (backing off) for the daemon's
``status`` (``tracking`` is true while connected).

Callbacks run on the event loop and must not block; an exception in one is
logged and does not end the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from csembed import __version__
from csembed.discovery.addresses import PeerAddress
from csembed.discovery.backoff import Backoff
from csembed.discovery.errors import TrackerError
from csembed.discovery.tracker_session import (
    DEFAULT_TTL,
    PeersUpdate,
    TrackerGreeted,
    TrackerSession,
    normalize_addresses,
    normalize_ids,
)
from csembed.protocol.wire import NEED_DATA

__all__ = ["TrackerClient"]

_READ_SIZE: Final = 65536
log = logging.getLogger("csembed.tracker.client")


class TrackerClient:
    """Keeps us registered with one tracker and reports the peers it knows."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ids: Mapping[str, str] | None = None,
        addresses: Iterable[str | PeerAddress] = (),
        on_peers: Callable[[PeersUpdate], None] | None = None,
        on_state: Callable[[str], None] | None = None,
        ttl: int = DEFAULT_TTL,
        software: str = f"csembed {__version__}",
        backoff: Backoff | None = None,
        connect_timeout: float = 15.0,
        rng: random.Random | None = None,
        proofs: Mapping[str, bytes] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._ids = normalize_ids(ids or {})
        self._proofs: dict[str, bytes] = dict(proofs or {})
        self._addresses = normalize_addresses(addresses)
        self._on_peers = on_peers
        self._on_state = on_state
        self._ttl = ttl
        self._software = software
        self._backoff = backoff or Backoff()
        self._connect_timeout = connect_timeout
        self._rng = rng or random.Random()
        self._task: asyncio.Task[None] | None = None
        self._session: TrackerSession | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.state = "idle"
        self.peers: dict[str, dict[str, tuple[PeerAddress, ...]]] = {}
        self.your_ip: str | None = None
        self.attempts = 0

    @property
    def connected(self) -> bool:
        """True while a tracker has greeted us on a live connection."""
        return self.state == "connected"

    def start(self) -> None:
        """Start the connection task on the running loop."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop the task and close the connection."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._set_state("idle")

    def set_ids(self, ids: Mapping[str, str], proofs: Mapping[str, bytes] | None = None) -> None:
        """Replace the club ID -> peer ID map we register (and, when given, the
        registration proofs: club ID -> preimage)."""
        self._ids = normalize_ids(ids)
        if proofs is not None:
            self._proofs = dict(proofs)
        for club in [club for club in self.peers if club not in self._ids]:
            del self.peers[club]
        if self._session is not None:
            self._session.set_ids(self._ids, self._proofs)
            self._write()

    def set_addresses(self, addresses: Iterable[str | PeerAddress]) -> None:
        """Replace the addresses we announce."""
        self._addresses = normalize_addresses(addresses)
        if self._session is not None:
            self._session.set_addresses(self._addresses)
            self._write()

    # -- internals ---------------------------------------------------------

    def _set_state(self, state: str) -> None:
        if state == self.state:
            return
        self.state = state
        if self._on_state is not None:
            try:
                self._on_state(state)
            except Exception:
                log.exception("tracker on_state callback failed")

    def _write(self) -> None:
        if self._session is None or self._writer is None:
            return
        data = self._session.data_to_send()
        if data and not self._writer.is_closing():
            self._writer.write(data)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._set_state("connecting")
            self.attempts += 1
            try:
                # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a
                # cancellation that races with completion, and close() would hang.
                async with asyncio.timeout(self._connect_timeout):
                    reader, writer = await asyncio.open_connection(self.host, self.port)
            except (OSError, TimeoutError) as exc:
                log.info("tracker %s:%s unreachable: %s", self.host, self.port, exc)
            else:
                try:
                    await self._converse(reader, writer, loop)
                except (TrackerError, OSError, ConnectionError) as exc:
                    log.info("tracker %s:%s connection ended: %s", self.host, self.port, exc)
                finally:
                    self._session = None
                    self._writer = None
                    writer.close()
            self._set_state("waiting")
            await asyncio.sleep(self._backoff.next_delay(self._rng.random()))

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        loop: asyncio.AbstractEventLoop) -> None:
        session = TrackerSession(ids=self._ids, addresses=self._addresses, ttl=self._ttl,
                                 software=self._software, proofs=self._proofs)
        self._session = session
        self._writer = writer
        while True:
            when = session.get_timer()
            timeout = None if when is None else max(0.0, when - loop.time())
            try:
                async with asyncio.timeout(timeout):
                    data = await reader.read(_READ_SIZE)
            except TimeoutError:
                session.handle_timer(loop.time())
            else:
                session.receive_data(data, loop.time())
                self._drain_events(session)
                if not data:
                    return
            self._write()
            await writer.drain()

    def _drain_events(self, session: TrackerSession) -> None:
        while (event := session.next_event()) is not NEED_DATA:
            if isinstance(event, TrackerGreeted):
                self.your_ip = event.greeting.your_ip
                self._backoff.reset()
                self._set_state("connected")
            elif isinstance(event, PeersUpdate):
                if event.club_id not in self._ids:
                    continue  # unregistered locally while the update was in flight
                self.peers[event.club_id] = dict(event.peers)
                if self._on_peers is not None:
                    try:
                        self._on_peers(event)
                    except Exception:
                        log.exception("tracker on_peers callback failed")
