"""Private JSON files (keys, peer IDs) written atomically with mode 0600.

This is the only module of :mod:`csembed.security` that touches the
filesystem; the protocol code never calls it. Files are written with
:func:`csembed.atomic_file.atomic_output`: a fresh temporary file created with
mode 0600 from the start (so the secret is never readable by others, not even
briefly), fsynced, renamed over the target, folder fsynced -- a board may
lose power at any moment. Reading refuses a file that group or others may read:
a key that leaked to other users must be noticed, not used silently.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any

from csembed.atomic_file import atomic_output
from csembed.security.errors import KeyFormatError

PRIVATE_MODE = 0o600


def write_private_json(path: str | os.PathLike[str], record: Any) -> None:
    """Atomically replace ``path`` with ``record`` as JSON, mode 0600."""
    data = (json.dumps(record, indent=1, sort_keys=True) + "\n").encode()
    with atomic_output(path, mode=PRIVATE_MODE) as f:
        f.write(data)


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
