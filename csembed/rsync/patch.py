"""Streaming patch application: basis + delta -> new file.

:class:`Patcher` is fed the delta in chunks of any size. The backend's
decoder turns them into LITERAL and COPY commands; literals are passed
through, copies are read from the basis file in bounded pieces. Every
command is checked before it is acted on: a COPY reaching past the end of
the basis, a reserved opcode, a zero length or a missing END is a
:class:`~csembed.native.errors.RsyncError`, never a crash, a hang or an
allocation sized by the delta. ``max_output`` caps the size of the result
against a delta that copies the same basis range over and over.

:meth:`Patcher.feed` hands each output piece to a ``write`` callable (the
fast path: basis ranges are read into one reused buffer);
:meth:`Patcher.update` instead yields the pieces -- iterate it fully before
the next call. :func:`csembed.rsync.patch_file` wraps ``feed`` with temp-file
output.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import BinaryIO

from csembed.native import rsync_format as fmt
from csembed.native.errors import CorruptError, LimitError, RsyncError, TruncatedError
from csembed.native.types import BytesLike
from csembed.rsync.params import resolve_backend

#: Largest piece of basis read (and yielded) at once for a COPY.
COPY_PIECE = 128 << 10


class Patcher:
    """Applies a streamed delta to a seekable basis file, yielding the new file's bytes."""

    def __init__(self, basis: BinaryIO, *, max_output: int | None = None,
                 backend: ModuleType | str | None = None) -> None:
        self.basis = basis
        self.basis_size = basis.seek(0, os.SEEK_END)
        self.max_output = max_output
        self.written = 0  # output bytes produced so far
        self.done = False  # END seen
        self._decoder = resolve_backend(backend).PatchDecoder()
        self._busy = False
        self._piece: bytearray | None = None  # reused COPY buffer of feed()

    def _account(self, n: int) -> None:
        self.written += n
        if self.max_output is not None and self.written > self.max_output:
            raise LimitError(f"patch output exceeds the limit of {self.max_output} bytes")

    def _start_copy(self, pos: int, length: int) -> None:
        if pos + length > self.basis_size:
            raise CorruptError(f"delta: COPY of {length} bytes at basis offset {pos} runs past "
                               f"the end of the basis ({self.basis_size} bytes)")
        self._account(length)
        self.basis.seek(pos)

    def _copy(self, pos: int, length: int) -> Iterator[bytes]:
        self._start_copy(pos, length)
        while length:
            piece = self.basis.read(min(length, COPY_PIECE))
            if not piece:
                raise RsyncError(f"basis file shrank while patching (read failed at {pos})")
            pos += len(piece)
            length -= len(piece)
            yield piece

    def _copy_into(self, pos: int, length: int, write: Callable[[BytesLike], object]) -> None:
        self._start_copy(pos, length)
        if self._piece is None:
            self._piece = bytearray(COPY_PIECE)
        view = memoryview(self._piece)
        while length:
            n = self.basis.readinto(view[:min(length, COPY_PIECE)])  # type: ignore[attr-defined]
            if not n:
                raise RsyncError(f"basis file shrank while patching (read failed at {pos})")
            write(view[:n])
            pos += n
            length -= n

    def feed(self, data: BytesLike, write: Callable[[BytesLike], object]) -> None:
        """Feed a chunk of delta, passing each output piece to ``write`` in order.

        A piece is only valid during its ``write`` call (copies reuse one
        buffer). Bytes after END are ignored.
        """
        if self._busy:
            raise RuntimeError("Patcher.feed: the previous update() output was not consumed")
        if self.done:
            return
        view = memoryview(data).cast("B")
        for event, a, b in self._decoder.events(view):
            if event == fmt.LITERAL:
                self._account(b)
                write(view[a:a + b])
            elif event == fmt.COPY:
                self._copy_into(a, b, write)
            else:
                self.done = True
                return

    def update(self, data: BytesLike) -> Iterator[BytesLike]:
        """Feed a chunk of delta; yields output pieces. Bytes after END are ignored.

        Literal pieces are zero-copy views of ``data``; copied pieces are new
        ``bytes``. Write each piece out (or copy it) as it comes.
        """
        if self._busy:
            raise RuntimeError("Patcher.update: the previous call's output was not consumed")
        if self.done:
            return
        self._busy = True
        try:
            view = memoryview(data).cast("B")
            for event, a, b in self._decoder.events(view):
                if event == fmt.LITERAL:
                    self._account(b)
                    yield view[a:a + b]
                elif event == fmt.COPY:
                    yield from self._copy(a, b)
                else:
                    self.done = True
                    return
        finally:
            self._busy = False

    def finish(self) -> None:
        """End of the delta: raises :class:`TruncatedError` if END never came."""
        if not self.done:
            raise TruncatedError(f"delta ended without an END command (after "
                                 f"{self._decoder.offset} bytes)")
