"""Pure-Python twin of the C rsync engine (``native/{sigwriter,sumset,delta,patch}.c``).

Same classes, same methods, same output: the delta search follows the C
algorithm step for step (greedy scan, successor block tried first, lowest
block among identical ones, literal runs cut every 32 KiB, shrinking tail
window tried against the last block), so for the same input both backends
emit byte-identical deltas -- the tests check that. The per-byte scan is
plain Python, so expect about a megabyte per second.

Strong sums use the standard library's BLAKE2b, i.e. :func:`hashlib.blake2b` (bit-identical to
:mod:`csembed.native.pure.blake2b`, which the tests prove, and ~500x faster)
and the pure :class:`~csembed.native.pure.md4.MD4`.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator

from csembed.native import rsync_format as fmt
from csembed.native.errors import RsyncError, RsyncParamError
from csembed.native.pure.md4 import md4
from csembed.native.pure.weaksums import (
    MASK32,
    RK_ADJ,
    RK_MULT,
    ROLLSUM_CHAR_OFFSET,
    RabinKarp,
    RollSum,
)
from csembed.native.types import BytesLike

try:  # CPython's own BLAKE2 module: what hashlib.blake2b is, without loading OpenSSL
    from _blake2 import blake2b as _stdlib_blake2b
except ImportError:  # pragma: no cover - other Pythons
    from hashlib import blake2b as _stdlib_blake2b


def _blake2_256(data: BytesLike) -> bytes:
    return _stdlib_blake2b(data, digest_size=32).digest()


def _kinds(magic: int, block_len: int, strong_len: int, what: str) -> tuple[str, str]:
    if magic not in fmt.SIG_MAGICS:
        raise RsyncParamError(f"{what}: not a signature magic number")
    weak, strong = fmt.SIG_MAGICS[magic]
    if not 1 <= block_len <= fmt.MAX_BLOCK_LEN or not 1 <= strong_len <= fmt.STRONG_MAX[strong]:
        raise RsyncParamError(f"{what}: invalid parameter (status -1)")
    return weak, strong


def _strong_fn(strong: str) -> Callable[[BytesLike], bytes]:
    return _blake2_256 if strong == "blake2" else md4


def _weak_fn(weak: str) -> type[RollSum] | type[RabinKarp]:
    return RollSum if weak == "rollsum" else RabinKarp


class SigGenerator:
    """Basis bytes in, signature bytes out (header first, one record per block)."""

    def __init__(self, magic: int, block_len: int, strong_len: int) -> None:
        weak, strong = _kinds(magic, block_len, strong_len, "signature")
        self._magic, self._block_len, self._strong_len = magic, block_len, strong_len
        self._weak = _weak_fn(weak)
        self._strong = _strong_fn(strong)
        self._buf = bytearray()
        self._header_done = False
        self._finished = False

    def _header(self, out: bytearray) -> None:
        if not self._header_done:
            for v in (self._magic, self._block_len, self._strong_len):
                out += v.to_bytes(4, "big")
            self._header_done = True

    def _record(self, block: BytesLike, out: bytearray) -> None:
        out += self._weak(block).digest().to_bytes(4, "big")
        out += self._strong(block)[: self._strong_len]

    def update(self, data: BytesLike) -> bytes:
        """Hash more basis bytes; returns the signature bytes now complete."""
        if self._finished:
            raise RsyncError("signature: called in the wrong state")
        out = bytearray()
        self._header(out)
        self._buf += data
        bl = self._block_len
        n = len(self._buf) // bl * bl
        view = memoryview(self._buf)
        for off in range(0, n, bl):
            self._record(view[off:off + bl], out)
        view.release()
        del self._buf[:n]
        return bytes(out)

    def finish(self) -> bytes:
        """End of basis: returns the last record (and the header if nothing came yet)."""
        if self._finished:
            raise RsyncError("signature: called in the wrong state")
        out = bytearray()
        self._header(out)
        if self._buf:
            self._record(self._buf, out)
        self._buf.clear()
        self._finished = True
        return bytes(out)


class SumSet:
    """A signature's records in memory, indexed for the delta search."""

    def __init__(self, magic: int, block_len: int, strong_len: int) -> None:
        weak, strong = _kinds(magic, block_len, strong_len, "signature")
        self.magic, self.block_len, self.strong_len = magic, block_len, strong_len
        self.weak_kind, self.strong_kind = weak, strong
        self.weak_sums = array("I")
        self.strong_sums: list[bytes] = []
        #: weak sum -> {strong sum -> lowest block}; built by index()
        self.table: dict[int, dict[bytes, int]] = {}
        self._indexed = False

    @property
    def count(self) -> int:
        """Number of blocks (records) loaded."""
        return len(self.weak_sums)

    @property
    def memory(self) -> int:
        """Rough bytes of memory the records and index occupy."""
        return self.count * (4 + self.strong_len + 120)

    def add(self, records: BytesLike) -> None:
        """Append whole records (``4 + strong_len`` bytes each)."""
        if self._indexed:
            raise RsyncError("signature: called in the wrong state")
        view = memoryview(records).cast("B")
        rec = 4 + self.strong_len
        if len(view) % rec:
            raise ValueError("SumSet.add takes whole records only")
        for off in range(0, len(view), rec):
            self.weak_sums.append(int.from_bytes(view[off:off + 4], "big"))
            self.strong_sums.append(bytes(view[off + 4:off + rec]))

    def index(self) -> None:
        """Build the lookup index; no records can be added afterwards."""
        if self._indexed:
            raise RsyncError("signature index: called in the wrong state")
        for block, (weak, strong) in enumerate(zip(self.weak_sums, self.strong_sums,
                                                   strict=True)):
            self.table.setdefault(weak, {}).setdefault(strong, block)
        self._indexed = True


class DeltaGenerator:
    """New-file bytes in, delta bytes out, searched against an indexed :class:`SumSet`."""

    def __init__(self, sums: SumSet) -> None:
        if not sums._indexed:
            raise RsyncError("delta: called in the wrong state")
        self._sums = sums
        self._bl = sums.block_len
        self._rollsum = sums.weak_kind == "rollsum"
        self._strong = _strong_fn(sums.strong_kind)
        self._buf = bytearray()
        self._lit = 0  # start of the pending literal
        self._pos = 0  # start of the current window
        self._sum: RollSum | RabinKarp | None = None  # weak state of the window at pos
        self._copy: list[int] | None = None  # pending [basis offset, length]
        self._last_block = -1
        self._header_done = False
        self._done = False
        self._out = bytearray()
        self.literal_bytes = self.copy_bytes = self.commands = 0

    @property
    def stats(self) -> tuple[int, int, int]:
        """(literal bytes, copied bytes, commands) emitted so far."""
        return (self.literal_bytes, self.copy_bytes, self.commands)

    # -- command output ------------------------------------------------------
    @staticmethod
    def _int(v: int) -> tuple[int, bytes]:
        for idx, width in enumerate((1, 2, 4, 8)):
            if v < 1 << (8 * width):
                return idx, v.to_bytes(width, "big")
        raise AssertionError("value wider than 64 bits")

    def _flush_copy(self) -> None:
        if self._copy is not None:
            (wp, p), (wl, n) = self._int(self._copy[0]), self._int(self._copy[1])
            self._out.append(fmt.OP_COPY_N1_N1 + 4 * wp + wl)
            self._out += p + n
            self.copy_bytes += self._copy[1]
            self.commands += 1
            self._copy = None

    def _emit_literal(self, n: int) -> None:
        self._flush_copy()
        if n <= fmt.OP_LITERAL_64:
            self._out.append(n)
        else:
            w, enc = self._int(n)
            self._out.append(fmt.OP_LITERAL_N1 + w)
            self._out += enc
        self._out += self._buf[self._lit:self._lit + n]
        self._lit += n
        self.literal_bytes += n
        self.commands += 1

    def _flush_literal(self, upto: int) -> None:
        while self._lit < upto:
            self._emit_literal(min(fmt.LITERAL_FLUSH, upto - self._lit))

    def _take_match(self, block: int, length: int) -> None:
        bpos = block * self._bl
        self._flush_literal(self._pos)
        if self._copy is not None and self._copy[0] + self._copy[1] == bpos:
            self._copy[1] += length
        else:
            self._flush_copy()
            self._copy = [bpos, length]
        self._pos += length
        self._lit = self._pos
        self._sum = None
        self._last_block = block

    # -- matching ------------------------------------------------------------
    def _find_block(self, weak: int, length: int) -> int:
        s = self._sums
        window = bytes(self._buf[self._pos:self._pos + length])
        strong = None
        nxt = self._last_block + 1
        if self._last_block >= 0 and nxt < s.count and s.weak_sums[nxt] == weak:
            strong = self._strong(window)[: s.strong_len]
            if s.strong_sums[nxt] == strong:
                return nxt
        runs = s.table.get(weak)
        if runs is None:
            return -1
        if strong is None:
            strong = self._strong(window)[: s.strong_len]
        return runs.get(strong, -1)

    def _search(self) -> None:
        """Examine every full window held (the C ``search``; output is unbounded here)."""
        s, bl, buf = self._sums, self._bl, self._buf
        end = len(buf)
        table = s.table
        while True:
            if self._pos - self._lit >= fmt.LITERAL_FLUSH:
                self._emit_literal(fmt.LITERAL_FLUSH)
                continue
            if s.count == 0:
                self._pos = min(end, self._lit + fmt.LITERAL_FLUSH)
                if self._pos == end:
                    return
                continue
            if self._pos + bl > end:
                return
            if self._sum is None:
                self._sum = (RollSum if self._rollsum else RabinKarp)(
                    buf[self._pos:self._pos + bl])
            last = min(end - bl, self._lit + fmt.LITERAL_FLUSH)
            pos, weak = self._scan(last)
            if weak in table:
                block = self._find_block(weak, bl)
                if block >= 0:
                    self._take_match(block, bl)
                    continue
            if pos + bl >= end:
                return
            self._sum.rotate(buf[pos], buf[pos + bl])
            self._pos = pos + 1

    def _scan(self, last: int) -> tuple[int, int]:
        """Slide from pos to the first window whose weak sum is in the table, or to last."""
        buf, bl, table, pos = self._buf, self._bl, self._sums.table, self._pos
        state = self._sum
        if isinstance(state, RollSum):
            s1, s2, woff = state._s1, state._s2, bl * ROLLSUM_CHAR_OFFSET
            while True:
                weak = ((s2 << 16) | (s1 & 0xFFFF)) & MASK32
                if weak in table or pos == last:
                    break
                out = buf[pos]
                s1 = (s1 + buf[pos + bl] - out) & MASK32
                s2 = (s2 + s1 - bl * out - woff) & MASK32
                pos += 1
            state._s1, state._s2 = s1, s2
        else:
            assert state is not None
            h, mult = state._hash, state._mult
            madj = mult * RK_ADJ
            while True:
                if h in table or pos == last:
                    break
                h = (h * RK_MULT + buf[pos + bl] - mult * buf[pos] - madj) & MASK32
                pos += 1
            state._hash = weak = h
        self._pos = pos
        return pos, weak

    def _search_tail(self) -> None:
        s, buf = self._sums, self._buf
        end = len(buf)
        if s.count == 0:
            return
        last = s.count - 1
        state = (RollSum if self._rollsum else RabinKarp)(buf[self._pos:end])
        while self._pos < end:
            if self._pos - self._lit >= fmt.LITERAL_FLUSH:
                self._emit_literal(fmt.LITERAL_FLUSH)
            if state.digest() == s.weak_sums[last]:
                strong = self._strong(bytes(buf[self._pos:end]))[: s.strong_len]
                if strong == s.strong_sums[last]:
                    self._take_match(last, end - self._pos)
                    return
            state.rollout(buf[self._pos])
            self._pos += 1

    # -- public API ----------------------------------------------------------
    def _begin(self) -> None:
        if self._done:
            raise RsyncError("delta: called in the wrong state")
        if not self._header_done:
            self._out += fmt.DELTA_MAGIC.to_bytes(4, "big")
            self._header_done = True

    def _take_output(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def update(self, data: BytesLike) -> bytes:
        """Search more new-file bytes; returns the delta bytes now final."""
        self._begin()
        self._buf += data
        self._search()
        if self._lit:
            del self._buf[:self._lit]
            self._pos -= self._lit
            self._lit = 0
        return self._take_output()

    def finish(self) -> bytes:
        """End of new file: returns the rest of the delta, through END."""
        self._begin()
        self._search()
        self._search_tail()
        self._flush_literal(len(self._buf))
        self._flush_copy()
        self._out.append(fmt.OP_END)
        self._done = True
        self._buf.clear()
        return self._take_output()


class PatchDecoder:
    """Parses a delta stream into LITERAL/COPY/DONE events; does no I/O itself."""

    _MAGIC = fmt.DELTA_MAGIC.to_bytes(4, "big")

    def __init__(self) -> None:
        self._state = "magic"
        self._have = 0  # magic bytes matched, or parameter bytes gathered
        self._op = 0
        self._need = 0
        self._param = bytearray()
        self._remaining = 0
        self.offset = 0  # delta bytes consumed

    @staticmethod
    def _param_len(op: int) -> int:
        if fmt.OP_LITERAL_N1 <= op <= fmt.OP_LITERAL_N8:
            return 1 << (op - fmt.OP_LITERAL_N1)
        if fmt.OP_COPY_N1_N1 <= op <= fmt.OP_COPY_N8_N8:
            i = op - fmt.OP_COPY_N1_N1
            return (1 << (i // 4)) + (1 << (i % 4))
        return 0

    def _fail(self, exc: RsyncError) -> RsyncError:
        self._state = "failed"
        return exc

    def events(self, data: BytesLike) -> Iterator[tuple[int, int, int]]:
        """Decode one chunk of delta, yielding ``(event, a, b)`` in order.

        ``LITERAL``: the literal bytes are ``data[a:a+b]``; ``COPY``: copy ``b``
        bytes from basis offset ``a``; ``DONE``: END was read (the last event;
        bytes after it are ignored). The generator ends when the chunk is used
        up; raises :class:`RsyncError` subclasses on a corrupt delta.
        """
        view = memoryview(data).cast("B")
        i, n, base = 0, len(view), self.offset
        if self._state == "failed":
            raise RsyncError("delta: decoder used after an error")
        if self._state == "done":
            yield fmt.DONE, 0, 0
            return
        while i < n:
            state = self._state
            if state == "magic":
                if view[i] != self._MAGIC[self._have]:
                    self.offset = base + i
                    raise self._fail(fmt.bad_delta_magic(self.offset))
                i += 1
                self._have += 1
                if self._have == 4:
                    self._state = "opcode"
            elif state == "opcode":
                op = self._op = view[i]
                i += 1
                if op == fmt.OP_END:
                    self._state = "done"
                    self.offset = base + i
                    yield fmt.DONE, 0, 0
                    return
                if op <= fmt.OP_LITERAL_64:
                    self._remaining = op
                    self._state = "literal"
                elif (need := self._param_len(op)) != 0:
                    self._need = need
                    self._param.clear()
                    self._state = "params"
                else:
                    self.offset = base + i - 1
                    raise self._fail(fmt.corrupt_command(op, self.offset))
            elif state == "params":
                take = min(self._need - len(self._param), n - i)
                self._param += view[i:i + take]
                i += take
                if len(self._param) == self._need:
                    self.offset = base + i
                    event = self._decode_params()
                    if event is not None:
                        yield event
            else:  # literal
                take = min(self._remaining, n - i)
                self._remaining -= take
                if self._remaining == 0:
                    self._state = "opcode"
                self.offset = base + i + take
                yield fmt.LITERAL, i, take
                i += take
        self.offset = base + i

    def _decode_params(self) -> tuple[int, int, int] | None:
        op, p = self._op, bytes(self._param)
        if op <= fmt.OP_LITERAL_N8:
            length = int.from_bytes(p, "big")
            if length == 0:
                raise self._fail(fmt.corrupt_command(op, self.offset))
            self._remaining = length
            self._state = "literal"
            return None
        i = op - fmt.OP_COPY_N1_N1
        wpos = 1 << (i // 4)
        pos, length = int.from_bytes(p[:wpos], "big"), int.from_bytes(p[wpos:], "big")
        if length == 0 or length >> 63 or pos >> 63:
            raise self._fail(fmt.corrupt_command(op, self.offset))
        self._state = "opcode"
        return fmt.COPY, pos, length
