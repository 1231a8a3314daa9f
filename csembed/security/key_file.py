"""Private JSON files (keys, peer IDs) written atomically with mode 0600.

This is the only module of :mod:`csembed.security` that touches the
filesystem; the protocol code never calls it. A file is written to a fresh
temporary name in the same directory, created with ``O_EXCL`` and mode 0600
from the start (so the secret is never readable by others, not even
briefly), flushed and fsynced, then renamed over the target, and the
directory is fsynced so the rename survives a power cut -- a board may lose
power at any moment. Reading refuses a file that group or others may read:
a key that leaked to other users must be noticed, not used silently.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from csembed.security.errors import KeyFormatError

PRIVATE_MODE = 0o600


def write_private_json(path: str | os.PathLike[str], record: Any) -> None:
    """Atomically replace ``path`` with ``record`` as JSON, mode 0600."""
    target = Path(path)
    data = (json.dumps(record, indent=1, sort_keys=True) + "\n").encode()
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                 PRIVATE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_private_json(path: str | os.PathLike[str]) -> Any:
    """Load a file written by :func:`write_private_json`.

    Raises :class:`KeyFormatError` if group or others have any access to it
    or it is not valid JSON.
    """
    with open(path, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFormatError(
                f"{path}: mode {stat.S_IMODE(mode):04o} gives other users access to a private key "
                f"file; treat the keys as exposed, or if no one else could have read it, "
                f"run 'chmod 600 {path}'")
        data = f.read()
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeyFormatError(f"{path}: not valid JSON ({exc})") from exc
