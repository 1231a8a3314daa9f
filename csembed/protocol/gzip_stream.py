"""The ``gzip`` extension: one zlib stream per direction, framed per message.

gzip.md: once negotiated, every message is sent as its compressed length in
ASCII digits, a colon, and the compressed bytes; the compression is deflate
with the zlib header (RFC 1950). csembed runs one ``compressobj`` per
direction for the whole connection and ends every frame with
``Z_SYNC_FLUSH``, so each frame decompresses completely on arrival while
later frames still profit from the shared history. A "message" here is one
unit the core hands down: a message header with its body (and signature),
one payload chunk, or the payload end marker.

The decoder never holds more than it was fed plus ``max_output`` bytes of
inflated data: :meth:`GzipDecoder.read` inflates at most that much per call
(zlib's ``max_length``), and the core only asks for more once the wire
decoder has digested the previous piece. A frame's length is checked digit
by digit against :data:`MAX_FRAME`, and compressed bytes are streamed into
zlib as they arrive, so neither a huge frame nor a zip bomb can make the
receiver allocate more than those bounds.
"""

from __future__ import annotations

import zlib
from typing import Final

from csembed.errors import ProtocolError
from csembed.protocol.wire import MAX_BODY, MAX_CHUNK

MAX_FRAME: Final = max(MAX_BODY, MAX_CHUNK) + (1 << 20)
"""Largest compressed frame accepted: the biggest wire unit plus deflate's worst-case growth."""
_MAX_DIGITS: Final = len(str(MAX_FRAME))


class GzipError(ProtocolError):
    """The peer's compressed stream is malformed."""


class GzipEncoder:
    """Compresses outgoing units into gzip.md frames."""

    def __init__(self, level: int = 6) -> None:
        if not -1 <= level <= 9:
            raise ValueError(f"zlib compression level must be -1..9, not {level}")
        self._z = zlib.compressobj(level, zlib.DEFLATED, zlib.MAX_WBITS)
        self.bytes_in = 0
        self.bytes_out = 0

    def encode(self, *parts: bytes) -> bytes:
        """One frame: ``<length>:<compressed parts, sync-flushed>``."""
        body = b"".join([self._z.compress(p) for p in parts] + [self._z.flush(zlib.Z_SYNC_FLUSH)])
        self.bytes_in += sum(len(p) for p in parts)
        self.bytes_out += len(body)
        return b"%d:%s" % (len(body), body)


class GzipDecoder:
    """Strips gzip.md framing and inflates, a bounded piece at a time."""

    def __init__(self, max_output: int = 64 * 1024) -> None:
        if max_output < 1:
            raise ValueError("max_output must be positive")
        self.max_output = max_output
        self._z = zlib.decompressobj(zlib.MAX_WBITS)
        self._inbox = bytearray()
        self._frame_left = 0  # compressed bytes of the current frame not yet given to zlib
        self._offset = 0  # stream offset of _inbox[0], for error messages
        self._eof = False
        self._maybe_pending = False  # zlib may hold output back after a full read

    def receive_data(self, data: bytes) -> None:
        """Compressed bytes from the peer (after the record layer); ``b""`` = end."""
        if data:
            self._inbox += data
        else:
            self._eof = True

    @property
    def at_frame_boundary(self) -> bool:
        """True when no partial frame is buffered or being inflated."""
        return not (self._inbox or self._frame_left or self._z.unconsumed_tail
                    or self._maybe_pending)

    def read(self) -> bytes:
        """Up to ``max_output`` inflated bytes; ``b""`` when more input is needed.

        Raises :class:`GzipError` on a bad frame header, corrupt deflate data,
        a zlib stream that ends, or input that stops inside a frame.
        """
        while True:
            if self._z.unconsumed_tail or self._maybe_pending:
                out = self._inflate(self._z.unconsumed_tail)
            elif self._frame_left:
                if not self._inbox:
                    break
                take = min(self._frame_left, len(self._inbox))
                piece = bytes(self._inbox[:take])
                del self._inbox[:take]
                self._offset += take
                self._frame_left -= take
                out = self._inflate(piece)
            elif not self._parse_header():
                break
            else:
                continue
            if out:
                return out
        if self._eof and not self.at_frame_boundary:
            raise GzipError(f"stream ended inside a compressed frame (at byte {self._offset})")
        return b""

    def _inflate(self, data: bytes) -> bytes:
        try:
            out = self._z.decompress(data, self.max_output)
        except zlib.error as exc:
            raise GzipError(f"corrupt compressed data near byte {self._offset}: {exc}") from None
        self._maybe_pending = len(out) == self.max_output
        if self._z.eof:
            raise GzipError(f"the zlib stream was ended by the peer near byte {self._offset}; "
                            "it must stay open for the whole connection")
        return out

    def _parse_header(self) -> bool:
        """Consume ``<digits>:`` if complete; False if more bytes are needed."""
        inbox = self._inbox
        end = inbox.find(b":", 0, _MAX_DIGITS + 1)
        if end < 0:
            if inbox and (len(inbox) > _MAX_DIGITS or not inbox.isdigit()):
                raise GzipError(f"bad compressed frame header {bytes(inbox[:12])!r} "
                                f"at byte {self._offset}: expected digits and ':'")
            return False
        digits = bytes(inbox[:end])
        if not digits.isdigit() or (len(digits) > 1 and digits[0] == ord("0")):
            raise GzipError(f"bad compressed frame length {digits[:12]!r} at byte {self._offset}")
        length = int(digits)
        if not 0 < length <= MAX_FRAME:
            raise GzipError(f"compressed frame length {length} at byte {self._offset} is "
                            f"outside 1..{MAX_FRAME}")
        del inbox[:end + 1]
        self._offset += end + 1
        self._frame_left = length
        return True
