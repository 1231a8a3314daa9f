"""An in-memory network of replicas, for tests and simulations.

Theory of operation
-------------------
Each replica has a name; on replica ``a`` the connection to ``b`` has the
conn_id ``b``. A link carries messages one way in order, like one direction of
a TCP stream: ``deliver(a, b)`` hands the oldest queued message from ``a`` to
``b``. Disconnecting detaches both ends and loses whatever was in flight, as a
dropped connection would. With ``wire=True`` every message is encoded to bytes
and decoded again with :class:`~csembed.protocol.wire.Decoder`, so the framing
and signatures are exercised end to end.

:meth:`MemoryNetwork.settle` delivers until every queue is empty and no
replica owes a connection anything -- the state "all connections healed and
quiet" in which replicas must agree.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from csembed.database.replica import Outgoing, Replica
from csembed.protocol.wire import Decoder, Message

__all__ = ["MemoryNetwork"]


class MemoryNetwork:
    """Named replicas joined by ordered, lossless-until-disconnected links."""

    def __init__(self, *, wire: bool = False) -> None:
        self.replicas: dict[str, Replica] = {}
        self.read_only: dict[str, bool] = {}
        self.queues: dict[tuple[str, str], deque[Outgoing]] = {}
        self.decoders: dict[tuple[str, str], Decoder] = {}
        self.wire = wire
        self.delivered = 0

    def add(self, name: str, replica: Replica) -> None:
        """Join a replica (not yet connected to anyone)."""
        self.replicas[name] = replica
        self.read_only[name] = replica.read_only

    def connected(self, a: str, b: str) -> bool:
        """Whether ``a`` and ``b`` are linked."""
        return (a, b) in self.queues

    def connect(self, a: str, b: str) -> None:
        """Open a link; both ends send their ``get_updates``."""
        if a == b or self.connected(a, b):
            return
        self.queues[(a, b)] = deque()
        self.queues[(b, a)] = deque()
        self.decoders[(a, b)] = Decoder()
        self.decoders[(b, a)] = Decoder()
        self.route(a, self.replicas[a].attach(b, peer_read_only=self.read_only[b]))
        self.route(b, self.replicas[b].attach(a, peer_read_only=self.read_only[a]))

    def disconnect(self, a: str, b: str) -> None:
        """Drop a link and everything in flight on it."""
        if not self.connected(a, b):
            return
        for pair in ((a, b), (b, a)):
            del self.queues[pair]
            del self.decoders[pair]
        self.replicas[a].detach(b)
        self.replicas[b].detach(a)

    def route(self, source: str, outgoing: Iterable[Outgoing]) -> None:
        """Queue what ``source`` wants to send."""
        for out in outgoing:
            self.queues[(source, str(out.conn_id))].append(out)

    def deliver(self, a: str, b: str) -> bool:
        """Deliver one message from ``a`` to ``b``, pulling more from ``a`` if idle."""
        queue = self.queues.get((a, b))
        if queue is None:
            return False
        if not queue:
            self.route(a, self.replicas[a].pull(b))
            if not queue:
                return False
        out = queue.popleft()
        self.delivered += 1
        self.route(b, self.replicas[b].receive(a, self._carry(a, b, out)))
        return True

    def _carry(self, a: str, b: str, out: Outgoing) -> Message:
        if not self.wire:
            return out.message()
        decoder = self.decoders[(a, b)]
        decoder.receive_data(out.encode())
        events = list(decoder.events())
        if len(events) != 1 or not isinstance(events[0], Message):
            raise AssertionError(f"one message expected on the wire, got {events!r}")
        return events[0]

    def settle(self, max_deliveries: int = 1_000_000) -> int:
        """Deliver until quiet; returns the number of messages delivered."""
        count = 0
        while True:
            progressed = False
            for a, b in list(self.queues):
                if (a, b) in self.queues and self.deliver(a, b):
                    progressed = True
                    count += 1
                    if count >= max_deliveries:
                        raise AssertionError("network did not settle")
            if not progressed:
                return count

    def connect_all(self) -> None:
        """Link every pair."""
        names = list(self.replicas)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                self.connect(a, b)
