"""The ``gzip`` extension: one zlib stream per direction, framed per message.

gzip.md: once negotiated, every message is sent as its compressed length in
ASCII digits, a colon, and the compressed bytes; the compression is deflate
with the zlib header (RFC 1950). csembed runs one ``compressobj`` per
direction for the whole connection and ends every frame with
``Z_SYNC_FLUSH``, so each frame decompresses completely on arrival while
later frames still profit from the shared history. A "message" here is one
unit the core hands down: a message header with its body (and signature),
one payload chunk, or the payload end marker.

The decoder reads the two-byte zlib header itself and inflates the rest as
raw deflate: the stream never ends while the connection lives (an end is an
error), so the Adler-32 trailer never comes, and zlib would otherwise
checksum every inflated byte for a check it never makes (a few per cent of
a bulk receiver's CPU). Integrity is the record layer's MAC and each file's
SHA-256.

The decoder never holds more than it was fed plus ``max_output`` bytes of
inflated data: :meth:`GzipDecoder.read` inflates at most that much per call
(zlib's ``max_length``), and the core only asks for more once the wire
decoder has digested the previous piece. A frame's length is checked digit
by digit against :data:`MAX_FRAME`, and compressed bytes are streamed into
zlib as they arrive, so neither a huge frame nor a zip bomb can make the
receiver allocate more than those bounds.

Adaptive compression (sender side only)
---------------------------------------
Deflating data that does not compress (media, archives, encrypted files)
costs the sender a lot of CPU for nothing. :class:`GzipEncoder` therefore
writes the deflate stream itself and chooses, per unit, between two kinds of
deflate block (RFC 1951 section 3.2.3) -- both part of any standard stream,
so every peer's ordinary zlib decoder reads the result unchanged:

* **deflate**: a raw-deflate ``compressobj`` at the board's level, ended by a
  sync flush (which leaves the stream byte-aligned);
* **stored**: the bytes copied verbatim behind a five-byte block header
  (``BFINAL=0 BTYPE=00`` padded to a byte, ``LEN``, ``NLEN``), at most
  65,535 bytes per block.

The two kinds interleave freely because every unit ends byte-aligned. After
stored units the compressor's history no longer matches the stream, so on
the way back to deflate a fresh ``compressobj`` is primed with the last
32 KiB sent (``zdict``; a raw stream writes no dictionary id), and
back-references stay valid.

The choice: a unit under :data:`SMALL_UNIT` (a JSON message, a payload
end) keeps the current mode. A large unit that follows a small one (a new
message, so most likely a new file) is *probed*: while deflating, its first
:data:`PROBE_SIZE` bytes go through the live compressor and are flushed; if
they came out at under 90 % of their size the rest is deflated too (the
probe cost nothing), otherwise the rest is stored and the stream stays
stored. In stored mode a probe deflates 2 KiB from the middle of a large
unit at level 1 on a scratch compressor, after a small unit or when a
back-off has run out; the back-off doubles after each failed probe up to
:data:`MAX_BACKOFF` units. A unit under :data:`PROBE_AFTER_SMALL` (a whole
small file) waits for the back-off even after a small unit: probing costs
half of deflating it, and many small files in a row would pay that each.
Any large deflated unit that came out at 90 % or more of its size also
switches the stream to stored.
"""

from __future__ import annotations

import struct
import zlib
from typing import Final

from csembed.errors import ProtocolError
from csembed.protocol.wire import MAX_BODY, MAX_CHUNK

MAX_FRAME: Final = max(MAX_BODY, MAX_CHUNK) + (1 << 20)
"""Largest compressed frame accepted: the biggest wire unit plus deflate's worst-case growth."""
_MAX_DIGITS: Final = len(str(MAX_FRAME))


class GzipError(ProtocolError):
    """The peer's compressed stream is malformed."""


SMALL_UNIT: Final = 4096
"""Units shorter than this (messages, chunk headers) never cause a probe or a switch."""
PROBE_SIZE: Final = 2048
"""Bytes of a large unit deflated at level 1 to judge whether it compresses."""
MAX_BACKOFF: Final = 64
"""Most large units sent stored between two probes of a stream that keeps not compressing."""
PROBE_AFTER_SMALL: Final = 16 * 1024
"""In stored mode, a unit at least this long is probed after a small unit whatever the back-off."""
_WINDOW: Final = 32 * 1024  # deflate's largest back-reference distance
_STORED_MAX: Final = 0xFFFF  # one stored block's LEN field
_ZLIB_HEADER: Final = b"\x78\x9c"  # CM=8, CINFO=7 (32 KiB window), default level; FCHECK ok
_POOR_RATIO: Final = 0.9


def stored_blocks(data: bytes | memoryview) -> list[bytes | memoryview]:
    """``data`` as non-final stored deflate blocks (the stream must be byte-aligned)."""
    out: list[bytes | memoryview] = []
    view = memoryview(data)
    for at in range(0, len(view), _STORED_MAX):
        piece = view[at:at + _STORED_MAX]
        n = len(piece)
        out.append(struct.pack("<BHH", 0, n, n ^ 0xFFFF))
        out.append(piece)
    return out


def compresses(sample: bytes | memoryview) -> bool:
    """Whether ``sample`` shrinks to under 90 % at deflate level 1."""
    z = zlib.compressobj(1, zlib.DEFLATED, -12, 8)
    size = len(z.compress(sample)) + len(z.flush())
    return size < _POOR_RATIO * len(sample)


def _split(parts: tuple[bytes, ...], count: int
           ) -> tuple[tuple[memoryview, ...], tuple[memoryview, ...]]:
    """The first ``count`` bytes of ``parts`` and the rest, as views."""
    head: list[memoryview] = []
    rest: list[memoryview] = []
    for part in parts:
        view = memoryview(part)
        take = min(count, len(view))
        if take:
            head.append(view[:take])
        if take < len(view):
            rest.append(view[take:])
        count -= take
    return tuple(head), tuple(rest)


class GzipEncoder:
    """Compresses outgoing units into gzip.md frames, storing what does not compress.

    ``adaptive=False`` deflates every unit (the plain behaviour, for
    comparison). :attr:`stored_units` / :attr:`probes` count the decisions.
    """

    def __init__(self, level: int = 6, *, adaptive: bool = True) -> None:
        if not -1 <= level <= 9:
            raise ValueError(f"zlib compression level must be -1..9, not {level}")
        self.level = level
        self.adaptive = adaptive
        self._z: zlib._Compress | None = None  # valid only while deflating
        self._tail = bytearray()  # at least the last _WINDOW bytes sent (for zdict)
        self._header = _ZLIB_HEADER
        self._stored = False  # current mode
        self._skip = 0  # large units to send stored before the next probe
        self._backoff = 1
        self._after_small = True
        self.bytes_in = 0
        self.bytes_out = 0
        self.stored_units = 0
        self.probes = 0

    def encode(self, *parts: bytes) -> bytes:
        """One frame: ``<length>:<the parts as deflate or stored blocks>``."""
        size = sum(len(p) for p in parts)
        pieces: list[bytes | memoryview] = [self._header] if self._header else []
        self._header = b""
        if not self.adaptive or size == 0:
            pieces.append(self._deflate(parts))
        elif size < SMALL_UNIT:
            self._after_small = True
            self._encode_as(parts, pieces, stored=self._stored)
        else:
            self._encode_large(parts, pieces)
        self._remember(parts, size)
        length = sum(len(p) for p in pieces)
        self.bytes_in += size
        self.bytes_out += length
        pieces.insert(0, b"%d:" % length)
        return b"".join(pieces)  # the one copy of the payload the frame costs

    def _encode_large(self, parts: tuple[bytes, ...], pieces: list[bytes | memoryview]) -> None:
        after_small, self._after_small = self._after_small, False
        if self._stored:
            tiny = sum(len(p) for p in parts) < PROBE_AFTER_SMALL
            if (tiny or not after_small) and self._skip > 0:
                self._skip -= 1
                self._encode_as(parts, pieces, stored=True)
                return
            self.probes += 1
            big = max(parts, key=len)
            middle = max(0, len(big) // 2 - PROBE_SIZE // 2)
            if compresses(memoryview(big)[middle:middle + PROBE_SIZE]):
                self._stored, self._backoff, self._skip = False, 1, 0
                self._encode_as(parts, pieces, stored=False)
            else:
                self._backoff = min(MAX_BACKOFF, self._backoff * 2)
                self._skip = self._backoff
                self._encode_as(parts, pieces, stored=True)
            return
        if not after_small:
            body = self._deflate(parts)
            pieces.append(body)
            if len(body) >= _POOR_RATIO * sum(len(p) for p in parts):
                self._go_stored()
            return
        # A new message's first large unit: deflate its first PROBE_SIZE bytes
        # with the live compressor (not wasted when they compress), judge by them.
        self.probes += 1
        head, rest = _split(parts, PROBE_SIZE)
        body = self._deflate(head)
        pieces.append(body)
        if len(body) < _POOR_RATIO * sum(len(p) for p in head):
            pieces.append(self._deflate(rest))
        else:
            self._go_stored()
            self._encode_as(rest, pieces, stored=True)

    def _go_stored(self) -> None:
        self._stored, self._skip, self._backoff = True, 1, 1
        self._z = None

    def _encode_as(self, parts: tuple[bytes | memoryview, ...], pieces: list[bytes | memoryview],
                   *, stored: bool) -> None:
        if not stored:
            pieces.append(self._deflate(parts))
            return
        self.stored_units += 1
        self._z = None  # its history misses these bytes from now on
        for part in parts:
            pieces += stored_blocks(part)

    def _deflate(self, parts: tuple[bytes | memoryview, ...]) -> bytes:
        z = self._z
        if z is None:
            if self._tail:
                z = zlib.compressobj(self.level, zlib.DEFLATED, -zlib.MAX_WBITS,
                                     zdict=bytes(self._tail[-_WINDOW:]))
            else:
                z = zlib.compressobj(self.level, zlib.DEFLATED, -zlib.MAX_WBITS)
            self._z = z
        return b"".join([z.compress(p) for p in parts] + [z.flush(zlib.Z_SYNC_FLUSH)])

    def _remember(self, parts: tuple[bytes, ...], size: int) -> None:
        """Keep the last 32 KiB sent, for priming a compressor after stored units."""
        tail = self._tail
        if size >= _WINDOW:
            tail.clear()
            last = parts[-1]
            if len(last) >= _WINDOW:
                tail += memoryview(last)[-_WINDOW:]
                return
            for part in parts:
                tail += part
        else:
            for part in parts:
                tail += part
        if len(tail) > 2 * _WINDOW:  # trimmed now and then, not on every small unit
            del tail[:-_WINDOW]


class GzipDecoder:
    """Strips gzip.md framing and inflates, a bounded piece at a time."""

    def __init__(self, max_output: int = 64 * 1024) -> None:
        if max_output < 1:
            raise ValueError("max_output must be positive")
        self.max_output = max_output
        self._z = zlib.decompressobj(-zlib.MAX_WBITS)
        self._zlib_header = bytearray()  # the stream's first two bytes, until checked
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
                with memoryview(self._inbox) as view:
                    piece = bytes(view[:take])
                del self._inbox[:take]
                self._offset += take
                self._frame_left -= take
                if len(self._zlib_header) < 2:
                    piece = self._strip_zlib_header(piece)
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

    def _strip_zlib_header(self, piece: bytes) -> bytes:
        """Take the RFC 1950 header from the stream's first bytes; the rest of ``piece``."""
        need = 2 - len(self._zlib_header)
        self._zlib_header += piece[:need]
        if len(self._zlib_header) == 2:
            cmf, flg = self._zlib_header
            # RFC 1950 2.2: CM 8 = deflate, CINFO <= 7 (window <= 32 KiB), FCHECK makes
            # CMF*256+FLG a multiple of 31; a preset dictionary (FDICT) is not in gzip.md.
            if cmf & 0x0F != 8 or cmf >> 4 > 7 or (cmf << 8 | flg) % 31 or flg & 0x20:
                raise GzipError(f"bad zlib stream header {bytes(self._zlib_header).hex()}: "
                                "expected deflate, a window of at most 32 KiB, a valid "
                                "check and no preset dictionary")
        return piece[need:]

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
