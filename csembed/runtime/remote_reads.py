"""``read_file`` for the control protocol: a share's file read in pieces, from a peer if need be.

Theory of operation
-------------------
A client (``csembed cat``) reads a file by successive ``read_file`` calls at
growing offsets. :class:`RemoteReads` keeps one open
:class:`~csembed.directory.transfer_stream.RemoteStream` per (share, file)
between calls, so the engine's block cache and the peer's ranges are reused;
a stream is closed at end of file, on an error, when its share closes, or
when unused for ``STREAM_IDLE`` seconds (:meth:`RemoteReads.close_idle`,
called by the daemon's maintenance timer).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from csembed.control.handler import MAX_READ
from csembed.directory.transfer_stream import RemoteStream, StreamError
from csembed.runtime.errors import NotAvailable
from csembed.runtime.share_set import OpenShare

__all__ = ["STREAM_IDLE", "RemoteReads"]

STREAM_IDLE = 60.0  #: an open remote stream unused this long is closed


class RemoteReads:
    """Open read streams, by (share ID, file key); ``share_of`` finds a running share."""

    def __init__(self, share_of: Callable[[str], OpenShare | None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._share_of = share_of
        self._clock = clock
        self._streams: dict[tuple[str, str], tuple[RemoteStream, float]] = {}

    def _close(self, key: tuple[str, str], stream: RemoteStream) -> None:
        self._streams.pop(key, None)
        share = self._share_of(key[0])
        if share is not None and share.runtime is not None:
            share.runtime.engine.close_stream(stream)

    def close_share(self, share_id: str) -> None:
        """Close every stream of a share (it is closing)."""
        for key, (stream, _) in list(self._streams.items()):
            if key[0] == share_id:
                self._close(key, stream)

    def close_idle(self) -> None:
        """Close streams unused for ``STREAM_IDLE`` seconds."""
        now = self._clock()
        for key, (stream, used) in list(self._streams.items()):
            if now - used > STREAM_IDLE:
                self._close(key, stream)

    async def read(self, share: OpenShare, file: str, offset: int,
                   count: int) -> dict[str, Any]:
        """Up to ``count`` bytes of ``file`` at ``offset``; :class:`NotAvailable` if no one
        can supply them."""
        assert share.runtime is not None
        runtime = share.runtime
        key = (share.entry.share_id, "/" + file.strip("/"))
        held = self._streams.get(key)
        try:
            stream = runtime.engine.open_stream(key[1]) if held is None else held[0]
            self._streams[key] = (stream, self._clock())
            count = max(0, min(count, MAX_READ, stream.size - offset))
            data = b"" if count == 0 else await runtime.read_remote(stream, offset, count)
        except StreamError as exc:
            if key in self._streams:
                self._close(key, self._streams[key][0])
            raise NotAvailable(f"{file}: {exc}") from None
        eof = offset + len(data) >= stream.size
        if eof:
            self._close(key, stream)
        return {"size": stream.size, "offset": offset, "data": data, "eof": eof}
