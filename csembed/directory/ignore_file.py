"""The ignore file at a share's root (``.csignore``): patterns the user edits in place.

Theory of operation
-------------------
A share's ignore rules come from two places, joined into one
:class:`~csembed.directory.selection.Selection`: the patterns stored in the
share's state (``selection.json``, the draft's ignore/partial/subtree
settings) and the lines of ``.csignore`` in the folder itself, in gitignore
syntax (:mod:`.selection` documents it). File lines come after the stored
ones, so they win where both match; ``/.csignore`` is always ignored last of
all, so the file is never sent to peers (each device keeps its own rules,
as with Syncthing's ``.stignore``).

The file is read at the start of every scan pass (:meth:`IgnoreFile.refresh`);
a change takes effect in that pass: newly ignored paths stop being sent and
fetched (their files stay), newly un-ignored ones are scanned and sent and
the records they name are planned again. The file is opened without
following links, must be a regular file, and is read up to a limit from the
board (``memory.io_buffer``, at most :data:`MAX_IGNORE_BYTES`): a larger,
binary or otherwise unusable file is an error the share reports, and the
rules in force stay as they were -- nothing is sent or fetched on the
strength of a file that could not be read.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import replace

from csembed.directory.errors import SelectionError
from csembed.directory.paths import PathMapper
from csembed.directory.selection import PatternSet, Selection

IGNORE_FILE = ".csignore"
MAX_IGNORE_BYTES = 256 * 1024  #: read at most this much, whatever the board allows
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def read_ignore_lines(mapper: PathMapper, limit: int) -> tuple[str, ...] | None:
    """The lines of the local root's ignore file (``None`` when there is none).

    Raises :class:`SelectionError` for a file that is too large, not text, a
    link or not a regular file, or holds a pattern that cannot be used.
    """
    root = mapper.open_root()
    try:
        try:
            fd = os.open(IGNORE_FILE, _OPEN_FLAGS, dir_fd=root)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise SelectionError(f"{IGNORE_FILE} is a symbolic link; not followed") \
                    from None
            raise SelectionError(f"{IGNORE_FILE} cannot be opened: {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise SelectionError(f"{IGNORE_FILE} is not a regular file")
            if info.st_size > limit:
                raise SelectionError(f"{IGNORE_FILE} is {info.st_size} bytes; this board "
                                     f"reads at most {limit}")
            raw = os.read(fd, limit + 1)
        finally:
            os.close(fd)
    finally:
        os.close(root)
    if len(raw) > limit:
        raise SelectionError(f"{IGNORE_FILE} is larger than {limit} bytes (this board's limit)")
    return parse_ignore_text(raw)


def parse_ignore_text(raw: bytes) -> tuple[str, ...]:
    """Split an ignore file into lines, checking each; :class:`SelectionError` if unusable."""
    if b"\0" in raw:
        raise SelectionError(f"{IGNORE_FILE} is not a text file (it holds NUL bytes)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SelectionError(f"{IGNORE_FILE} is not UTF-8 text (byte {exc.start})") from None
    lines = tuple(line.rstrip("\r") for line in text.removeprefix("\ufeff").split("\n"))
    for number, line in enumerate(lines, 1):
        try:
            PatternSet((line,))
        except SelectionError as exc:
            raise SelectionError(f"{IGNORE_FILE} line {number}: {exc}") from None
    return tuple(line for line in lines if line.strip() and not line.startswith("#"))


def ignore_limit(io_buffer: int) -> int:
    """Bytes of ignore file a board reads (its I/O buffer, capped)."""
    return max(4096, min(io_buffer, MAX_IGNORE_BYTES))


def combine(stored: Selection, file_lines: tuple[str, ...] | None,
            root_key: str = "/") -> Selection:
    """The stored selection with the file's patterns after its own, and the file ignored.

    Without a file (``None``) the stored selection is kept as it is: no
    pattern at all costs nothing per path.
    """
    if file_lines is None:
        return stored
    own = "/" + IGNORE_FILE if root_key == "/" else f"{root_key}/{IGNORE_FILE}"
    lines = stored.ignore.lines + file_lines + (own,)
    return replace(stored, ignore=PatternSet(lines))


class IgnoreFile:
    """Keeps a share's selection in step with its ignore file (see the module docstring)."""

    def __init__(self, stored: Selection) -> None:
        self.stored = stored  #: the selection without the file's patterns
        self.loaded = False  #: read successfully at least once
        self.lines: tuple[str, ...] | None = None  #: the file's patterns in force (None: no file)
        self.error: str | None = None  #: why the file could not be used, if it could not

    def refresh(self, mapper: PathMapper, limit: int) -> Selection | None:
        """Read the file; the new selection when its patterns changed, else ``None``.

        Raises :class:`SelectionError` (also kept in :attr:`error`) when the
        file is unusable; the selection in force is then left alone.
        """
        try:
            lines = read_ignore_lines(mapper, limit)
            selection = None if self.loaded and lines == self.lines else \
                combine(self.stored, lines, mapper.root_key())
        except SelectionError as exc:
            self.error = f"{IGNORE_FILE}: {exc}" if IGNORE_FILE not in str(exc) else str(exc)
            raise SelectionError(self.error) from None
        except OSError as exc:
            self.error = f"{IGNORE_FILE} cannot be read: {exc.strerror or exc}"
            raise SelectionError(self.error) from None
        self.error = None
        self.lines, self.loaded = lines, True
        return selection
