"""File-level helpers: rdiff's three operations on paths or open binary files.

Each takes paths (``str``/``PathLike``) or binary file objects. Output given
as a path is written to a temporary file in the same directory, named
``.<name>.<random>.!clearsky``, flushed and fsynced, and renamed over the
target only when complete -- a failure (corrupt delta, full disk) leaves the
target untouched and removes the temporary file (``fsync=False`` skips the
fsync, e.g. to compare with rdiff, which never syncs). Inputs are read in
chunks (``chunk_size``), never whole.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from types import ModuleType
from typing import BinaryIO

from csembed.atomic_file import atomic_output as write_file_atomically
from csembed.rsync.delta import DeltaStats, DeltaWriter
from csembed.rsync.params import SignatureParams
from csembed.rsync.patch import Patcher
from csembed.rsync.signature import (
    DEFAULT_MAX_SIGNATURE,
    Signature,
    SignatureWriter,
    file_size,
)

PathOrFile = str | os.PathLike[str] | BinaryIO
DEFAULT_CHUNK = 128 << 10
TEMP_SUFFIX = ".!clearsky"
#: Largest read used to give the signature writer four blocks at a time.
MAX_SIGNATURE_CHUNK = 4 << 20


def atomic_output(path: str | os.PathLike[str], *, fsync: bool = True,
                  ) -> contextlib.AbstractContextManager[BinaryIO]:
    """Open a temp file beside ``path``; rename it onto ``path`` only if the block succeeds.

    :func:`csembed.atomic_file.atomic_output` with rdiff's file mode (0666
    less the umask) and our ``.!clearsky`` temp suffix.
    """
    return write_file_atomically(path, mode=0o666, fsync=fsync, suffix=TEMP_SUFFIX)


@contextlib.contextmanager
def _reader(src: PathOrFile) -> Iterator[BinaryIO]:
    if isinstance(src, (str, os.PathLike)):
        with open(src, "rb") as f:
            yield f
    else:
        yield src


@contextlib.contextmanager
def _writer(dst: PathOrFile, fsync: bool) -> Iterator[BinaryIO]:
    if isinstance(dst, (str, os.PathLike)):
        with atomic_output(dst, fsync=fsync) as f:
            yield f
    else:
        yield dst


def _chunks(f: BinaryIO, chunk_size: int) -> Iterator[memoryview]:
    """Read f to its end in pieces, all in one reused buffer.

    Each piece is only valid until the next is read; every consumer here
    (the writers and the patcher) copies or writes it out before asking.
    """
    buf = bytearray(chunk_size)
    view = memoryview(buf)
    readinto = getattr(f, "readinto", None)
    while True:
        if readinto is not None:
            n = readinto(view)
        else:
            data = f.read(chunk_size)
            n = len(data)
            view[:n] = data
        if not n:
            return
        yield view[:n]


def signature_file(basis: PathOrFile, sig: PathOrFile, *, block_len: int = 0,
                   strong_len: int = 0, hash: str = "blake2", rollsum: str = "rabinkarp",
                   backend: ModuleType | str | None = None, chunk_size: int = DEFAULT_CHUNK,
                   fsync: bool = True) -> SignatureParams:
    """Write the signature of ``basis`` to ``sig`` with rdiff's parameter rules.

    ``block_len``/``strong_len`` 0 pick rdiff's defaults from the basis size
    (or the unknown-size defaults for a pipe); ``strong_len`` -1 the minimum.
    Returns the parameters used.
    """
    with _reader(basis) as bf:
        params = SignatureParams.for_basis(file_size(bf), block_len=block_len,
                                           strong_len=strong_len, hash=hash, rollsum=rollsum)
        writer = SignatureWriter.from_params(params, backend=backend)
        # Whole groups of four blocks per read let BLAKE2b hash them together.
        chunk_size = max(chunk_size, min(4 * params.block_len, MAX_SIGNATURE_CHUNK))
        with _writer(sig, fsync) as out:
            for chunk in _chunks(bf, chunk_size):
                out.write(writer.update(chunk))
            out.write(writer.finish())
    return params


def load_signature(sig: PathOrFile, *, max_size: int = DEFAULT_MAX_SIGNATURE,
                   backend: ModuleType | str | None = None,
                   chunk_size: int = DEFAULT_CHUNK) -> Signature:
    """Read and index a signature file (at most ``max_size`` bytes)."""
    with _reader(sig) as f:
        return Signature.from_file(f, chunk_size, max_size=max_size, backend=backend)


def delta_file(sig: PathOrFile | Signature, new: PathOrFile, delta: PathOrFile, *,
               max_signature: int = DEFAULT_MAX_SIGNATURE,
               backend: ModuleType | str | None = None, chunk_size: int = DEFAULT_CHUNK,
               fsync: bool = True) -> DeltaStats:
    """Write the delta from the signature's basis to ``new`` into ``delta``."""
    signature = sig if isinstance(sig, Signature) else load_signature(
        sig, max_size=max_signature, backend=backend, chunk_size=chunk_size)
    writer = DeltaWriter(signature)
    with _reader(new) as nf, _writer(delta, fsync) as out:
        for chunk in _chunks(nf, chunk_size):
            out.write(writer.update(chunk))
        out.write(writer.finish())
    return writer.stats


def patch_file(basis: PathOrFile, delta: PathOrFile, out: PathOrFile, *,
               max_output: int | None = None, backend: ModuleType | str | None = None,
               chunk_size: int = DEFAULT_CHUNK, fsync: bool = True) -> int:
    """Apply ``delta`` to ``basis``, writing the new file to ``out``; returns its size.

    With a path for ``out`` the result appears only once complete and valid.
    """
    with _reader(basis) as bf, _reader(delta) as df, _writer(out, fsync) as of:
        patcher = Patcher(bf, max_output=max_output, backend=backend)
        for chunk in _chunks(df, chunk_size):
            patcher.feed(chunk, of.write)
            if patcher.done:
                break
        patcher.finish()
    return patcher.written
