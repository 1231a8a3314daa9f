"""What one connection has to send, produced lazily: the serving side of transfers.

Theory of operation
-------------------
Each connection has an :class:`OutgoingQueue` of *wire units* -- one framed
message (``m``/``!``/``s``/``$``), one payload chunk (length, LF, data) or
the payload end (``0`` LF). Small units (requests, ``directory.present``,
database updates) are queued as bytes in the *control* lane. Anything with a
payload is queued in the *bulk* lane as a generator that makes its units on
demand: the content is read from disk one board ``chunk_size`` piece at a
time only when the runtime pulls (:meth:`OutgoingQueue.pull`), i.e. as the
socket drains, so a 1 GiB file costs one chunk of memory, however slow the
peer. Between two payloads the control lane goes first, so a request or a
database update never waits behind a whole file; inside a payload nothing may
be interleaved (the wire format has no multiplexing).

Which payload goes next is *smallest first*: each producer is queued with
the bytes it will send (a ``directory.get``'s range), and the smallest
waiting one starts, so a short file asked for while pieces of a big one wait
is sent after the piece in progress, not after the whole file (the fetcher
asks for big files in pieces of a few chunks, :mod:`.fetcher`). Payloads for
the same content keep their order (a receiver discards a piece that does
not continue its file), and one that has been passed over
:data:`MAX_PASSED_OVER` times goes next, so a stream of small requests
cannot hold a big file back for ever. Only the first :data:`LOOK_AHEAD`
waiting payloads are compared, so a peer that queues many requests cannot
make each choice expensive.

A generator may yield ``b""`` to say "I did work but have nothing to send
yet" (a delta over an unchanged region of a file); :meth:`OutgoingQueue.pull`
counts those against a work budget so one call never reads a whole file.

The producers for the serving side are here too: :func:`serve_data` answers
``directory.get`` (content found by SHA-256 through
:class:`~csembed.directory.reader.ContentReader`, never by a path from the
peer; ``range`` honoured; ``directory.not_present`` if we hold no verified
copy, ``directory.get_error`` for a range outside the file or a read error),
:func:`serve_patch` answers ``rsync.signature`` with ``rsync.patch`` (the
delta of our content against the peer's signature, streamed), and
:func:`payload_units` frames any byte source. If the file changes while it is
sent, the payload is ended early and followed by ``directory.not_present``:
the receiver has fewer bytes than it asked for (and would fail the SHA-256
check anyway) and asks again later or elsewhere.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING

from csembed.directory import sync_messages as msg
from csembed.directory.errors import ContentChanged, DirectoryError
from csembed.directory.reader import ContentReader
from csembed.protocol.wire import encode_chunk, encode_payload_end

if TYPE_CHECKING:
    from csembed.rsync import Signature

log = logging.getLogger("csembed.sync")

Units = Generator[bytes, None, None]


MAX_PASSED_OVER = 32  #: payloads that may start before a waiting one goes regardless
LOOK_AHEAD = 256  #: waiting payloads compared when choosing the next (bounds the work)


@dataclass(eq=False)
class _Payload:
    """One queued payload producer and what it is known to send."""

    units: Units
    size: float  #: bytes it will send (``inf`` when unknown)
    content: str | None  #: the SHA-256 it sends, to keep one content's payloads in order
    passed_over: int = 0


class OutgoingQueue:
    """Wire units waiting for one connection (control lane and lazy bulk lane)."""

    def __init__(self) -> None:
        self._control: deque[bytes] = deque()
        self._bulk: list[_Payload] = []
        self._current: Units | None = None  #: the producer whose payload is open
        self.queued_control_bytes = 0

    def __bool__(self) -> bool:
        return bool(self._control or self._bulk or self._current is not None)

    @property
    def bulk_items(self) -> int:
        """Payload producers queued or running."""
        return len(self._bulk) + (self._current is not None)

    def push(self, unit: bytes) -> None:
        """Queue one small unit (a whole message without payload)."""
        self._control.append(unit)
        self.queued_control_bytes += len(unit)

    def push_stream(self, units: Units, size: int | None = None,
                    content: str | None = None) -> None:
        """Queue a producer of units (run only when pulled); ``size``: the bytes it
        will send, if known; ``content``: the SHA-256 it sends, if any."""
        self._bulk.append(_Payload(units, math.inf if size is None else size, content))

    def _next_payload(self) -> Units:
        """The waiting producer to run next (see the module docstring)."""
        chosen = 0
        seen: set[str] = set()
        for index, item in enumerate(islice(self._bulk, LOOK_AHEAD)):
            if item.passed_over >= MAX_PASSED_OVER:
                chosen = index
                break
            if item.content is not None:
                if item.content in seen:
                    continue  # an earlier payload of this content goes first
                seen.add(item.content)
            if item.size < self._bulk[chosen].size:
                chosen = index
        for item in self._bulk[:chosen]:
            item.passed_over += 1
        return self._bulk.pop(chosen).units

    def clear(self) -> None:
        """Drop everything (connection gone); running producers are closed."""
        producers = [item.units for item in self._bulk]
        if self._current is not None:
            producers.insert(0, self._current)
        for producer in producers:
            producer.close()
        self._current = None
        self._bulk.clear()
        self._control.clear()
        self.queued_control_bytes = 0

    def pull(self, max_bytes: int, work_budget: int = 8) -> list[bytes]:
        """Units totalling about ``max_bytes`` (at least one unit if any is ready).

        ``work_budget`` bounds how many empty steps producers may take in
        this call (each may have read a chunk from disk).
        """
        out: list[bytes] = []
        size = 0
        idle = 0
        while size < max_bytes:
            if self._current is None:
                if self._control:
                    unit = self._control.popleft()
                    self.queued_control_bytes -= len(unit)
                    out.append(unit)
                    size += len(unit)
                    continue
                if not self._bulk:
                    break
                self._current = self._next_payload()
            try:
                unit = next(self._current)
            except StopIteration:
                self._current = None
                continue
            if not unit:
                idle += 1
                if idle >= work_budget:
                    break
                continue
            out.append(unit)
            size += len(unit)
        return out


def payload_units(header: bytes, pieces: Iterable[bytes]) -> Units:
    """A message with a payload: ``header``, one chunk per non-empty piece, the end."""
    yield header
    for piece in pieces:
        if piece:
            yield encode_chunk(piece)
    yield encode_payload_end()


def serve_data(reader: ContentReader, sha256: str, range_: tuple[int, int] | None,
               chunk_size: int, on_sent: Callable[[int], None] | None = None,
               on_start: Callable[[str, int, int], None] | None = None) -> Units:
    """Answer one ``directory.get`` (see the module docstring); ``on_start(key, size,
    start)`` is told what is sent before the first byte, ``on_sent(n)`` each piece."""
    source = reader.open(sha256)
    if source is None:
        yield msg.encode(msg.NotPresent(sha256))
        return
    with source:
        start, count = range_ if range_ is not None else (0, source.size)
        if start + count > source.size:
            yield msg.encode(msg.GetError(sha256, f"range [{start}, {count}] is outside "
                                                  f"the {source.size}-byte file"))
            return
        if on_start is not None:
            on_start(source.origin, source.size, start)
        yield msg.encode(msg.DataHeader(sha256, range_))
        try:
            for piece in source.chunks(start, count, chunk_size):
                if on_sent is not None:
                    on_sent(len(piece))
                yield encode_chunk(piece)
        except ContentChanged as exc:
            log.info("stopped sending %s: %s", sha256[:16], exc)
            yield encode_payload_end()
            yield msg.encode(msg.NotPresent(sha256))
            return
        except (OSError, DirectoryError) as exc:
            log.warning("read error sending %s: %s", sha256[:16], exc)
            yield encode_payload_end()
            yield msg.encode(msg.GetError(sha256, "read error"))
            return
        yield encode_payload_end()


def serve_patch(reader: ContentReader, sha256: str, signature: Signature, chunk_size: int,
                on_sent: Callable[[int], None] | None = None) -> Units:
    """Answer one ``rsync.signature``: the delta of our ``sha256`` content, streamed."""
    from csembed.rsync import DeltaWriter, RsyncError  # loaded with the peer's Signature
    source = reader.open(sha256)
    if source is None:
        yield msg.encode(msg.NotPresent(sha256))
        return
    with source:
        try:
            delta = DeltaWriter(signature)
        except RsyncError as exc:
            yield msg.encode(msg.GetError(sha256, f"rsync: {exc}"))
            return
        yield msg.encode(msg.PatchHeader(sha256))
        pending = bytearray()
        try:
            for piece in source.chunks(0, source.size, chunk_size):
                pending += delta.update(piece)
                if len(pending) < chunk_size:
                    yield b""  # work done, nothing to send yet
                    continue
                while len(pending) >= chunk_size:
                    unit = encode_chunk(bytes(pending[:chunk_size]))
                    del pending[:chunk_size]
                    if on_sent is not None:
                        on_sent(len(unit))
                    yield unit
            pending += delta.finish()
        except ContentChanged as exc:
            log.info("stopped sending a delta of %s: %s", sha256[:16], exc)
            yield encode_payload_end()
            yield msg.encode(msg.NotPresent(sha256))
            return
        except (OSError, DirectoryError, RsyncError) as exc:
            log.warning("error making a delta of %s: %s", sha256[:16], exc)
            yield encode_payload_end()
            yield msg.encode(msg.GetError(sha256, f"rsync: {exc}"))
            return
        while pending:
            unit = encode_chunk(bytes(pending[:chunk_size]))
            del pending[:chunk_size]
            if on_sent is not None:
                on_sent(len(unit))
            yield unit
        yield encode_payload_end()
