"""Crash-safe file replacement: the one way csembed writes a whole file.

Theory of operation: the new content goes to a fresh temporary file beside
the target (``.<name>.<random><suffix>``, created with ``O_EXCL`` and
``O_NOFOLLOW`` so a planted link or leftover is never written through, and
with its final mode from the start, so a secret is never readable by others
even briefly); it is flushed and fsynced, renamed over the target, and the
folder is fsynced so the rename survives a power cut. Any failure before the
rename removes the temporary file and leaves the target's old content.

:func:`atomic_output` streams (a context manager yielding a binary file);
:func:`write_atomic` writes bytes already in memory. Downloads into a shared
folder do not use this module: ``directory/filestore.py`` lands them in
batches with its own sync policy.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_output", "fsync_dir", "write_atomic"]

#: Buffer of the yielded file: coalesces small writes into large ones.
OUTPUT_BUFFER = 256 << 10


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, mode: int = 0o600, fsync: bool = True,
                  suffix: str = ".tmp") -> Iterator[BinaryIO]:
    """Open a temp file beside ``path``; rename it onto ``path`` only if the block succeeds.

    ``mode`` is passed to ``open(2)`` (so the umask applies); ``fsync=False``
    skips both fsyncs, for output whose durability does not matter.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.urandom(4).hex()}{suffix}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb", buffering=OUTPUT_BUFFER) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if fsync:
        fsync_dir(target.parent)


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Make ``path`` hold exactly ``data`` (creating its folder), or keep its old content."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(target, mode=mode) as f:
        f.write(data)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename or create inside the folder ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
