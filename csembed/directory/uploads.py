"""Uploads: which file each peer is being sent, and how far it has got.

Theory of operation
-------------------
A peer fetches a file from us in ranged ``directory.get`` requests, one
payload each (:func:`~.transfer_serve.serve_data`). The user thinks of one
upload per file and peer, so :class:`Uploads` keeps one :class:`Upload` per
(connection, content): the producer of each payload reports when it starts
(the key it reads from, the file's size, the range's start), each piece it
hands out, and its end. ``done`` is how far into the file the bytes sent
reach -- a file asked for in pieces advances piece by piece, and a resumed
download starts where the peer's partial ends -- so ``done`` / ``size`` is
the upload's progress and successive ``done`` values give its rate (the CLI
measures it, as for downloads). Bytes handed out are not sent yet: the
runtime's writer passes them through the upload limiter and the socket
first, and asks for more (:meth:`ShareEngine.outgoing`) only once it has,
so bytes count as sent when the connection asks for more
(:meth:`Uploads.confirm`), never ahead of the link.

An upload is listed while one of its payloads is queued or being sent, and
between two pieces for a while after (:data:`HOLD` seconds, measured on the
clock of whoever asks, :meth:`Uploads.views`: the engine reads no clock),
so that a file sent in pieces shows as one steady line. It goes once its
last byte is sent, when the connection closes, or after ``HOLD`` idle.
Memory is bounded: at most :data:`MAX_UPLOADS` entries, the oldest idle one
forgotten first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

HOLD = 5.0  #: seconds an upload stays listed between two of its pieces
MAX_UPLOADS = 256  #: uploads remembered per share (all peers)


@dataclass(eq=False)
class Upload:
    """One file being sent to one peer."""

    conn_id: Any
    peer_id: str
    sha256: str
    key: str  #: where the bytes are read from (a key, or ``archive:<name>``)
    size: int  #: bytes of the whole file
    done: int = 0  #: how far into the file the bytes sent reach
    sent: int = 0  #: payload bytes sent for this upload, all pieces
    handed: int = 0  #: bytes handed to the connection and not yet known to be sent
    running: int = 0  #: payloads of it queued or being sent
    idle_since: float | None = None  #: when :meth:`Uploads.views` first saw it idle


class Uploads:
    """Every upload of one share (see the module docstring)."""

    def __init__(self) -> None:
        self._items: dict[tuple[Any, str], Upload] = {}
        self._handed: dict[Any, list[Upload]] = {}  #: per connection: uploads with ``handed``

    def __len__(self) -> int:
        return len(self._items)

    def queued(self, conn_id: Any, peer_id: str, sha256: str) -> Upload:
        """A payload of ``sha256`` for ``conn_id`` is queued (what it reads comes later)."""
        item = self._items.pop((conn_id, sha256), None)
        if item is None:
            item = Upload(conn_id, peer_id, sha256, key="", size=0)
            self._make_room()
        self._items[(conn_id, sha256)] = item  # most recently active last
        item.running += 1
        item.idle_since = None
        return item

    def started(self, item: Upload, key: str, size: int, start: int) -> None:
        """The payload opened ``key`` (``size`` bytes) and sends from ``start``."""
        item.key, item.size, item.done = key, size, start - item.handed

    def progress(self, item: Upload, n: int) -> None:
        """``n`` more bytes of the payload were handed to the connection."""
        if not item.handed:
            self._handed.setdefault(item.conn_id, []).append(item)
        item.handed += n

    def confirm(self, conn_id: Any) -> None:
        """The connection asks for more: what it was handed before has been sent."""
        for item in self._handed.pop(conn_id, ()):
            item.done += item.handed
            item.sent += item.handed
            item.handed = 0
            self._finish(item)

    def ended(self, item: Upload) -> None:
        """The payload ended (sent whole, cut short, or never started)."""
        item.running = max(0, item.running - 1)
        self._finish(item)

    def _finish(self, item: Upload) -> None:
        if item.running == 0 and not item.handed and item.size and item.done >= item.size:
            self._items.pop((item.conn_id, item.sha256), None)

    def forget(self, conn_id: Any) -> None:
        """The connection closed: its uploads go."""
        self._handed.pop(conn_id, None)
        for pair in [p for p in self._items if p[0] == conn_id]:
            del self._items[pair]

    def _make_room(self) -> None:
        while len(self._items) >= MAX_UPLOADS:
            idle = next((p for p, u in self._items.items() if u.running == 0), None)
            del self._items[idle if idle is not None else next(iter(self._items))]

    def views(self, now: float) -> list[dict[str, Any]]:
        """Uploads in progress at ``now``: key, peer, bytes done and total, bytes sent."""
        out = []
        for pair, item in list(self._items.items()):
            if item.running == 0:
                if item.idle_since is None:
                    item.idle_since = now
                elif now - item.idle_since > HOLD:
                    del self._items[pair]
                    continue
            if not item.size:
                continue  # queued, not yet opened
            out.append({"key": item.key, "sha256": item.sha256, "peer": item.peer_id,
                        "kind": "get", "done": min(item.done, item.size),
                        "total": item.size, "sent": item.sent})
        return out
