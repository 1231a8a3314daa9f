"""What became of each attach: the answer ``csembed attach`` gives the user.

Theory of operation
-------------------
An attach (``add_share``) holds a code and waits for the sharer's keys. The
connection manager reports how each dial of it ended
(:meth:`AttachWatch.dial_ended`): no answer, a failed handshake, or a link.
:meth:`AttachWatch.outcome` folds the latest result of every current dial
target into one state and sentence:

* ``looking`` -- no peer known under the code yet (tracker, LAN, ``--peer``);
* ``dialling`` -- a dial is under way or has not ended yet;
* ``unreachable`` -- every target was tried and none answered (still trying);
* ``refused`` -- every target answered and refused the code. The handshake
  does not tell a wrong code from an expired, used or revoked one -- on
  purpose, so that it gives a guesser nothing -- so neither do we.

An attach that ended without joining (the keys were those of a share this
device already runs) is remembered by path with its reason until cleared.

:func:`check_folder` is the rule for attaching into a folder that holds files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from csembed.runtime.connection_manager import LinkRecord, Target
from csembed.runtime.errors import FolderNotEmpty

__all__ = ["AttachWatch", "check_folder"]

_AUTH_FAILED = "authentication failed"  # the handshake's words for a refused secret


def _hostport(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class AttachWatch:
    """Dial results and final answers of attaches; see the module docstring."""

    def __init__(self) -> None:
        self._dials: dict[str, dict[tuple[str, str, str], dict[str, str]]] = {}
        self.results: dict[str, dict[str, Any]] = {}  #: path -> the attach that ended

    def dial_ended(self, target: Target, record: LinkRecord | None) -> str | None:
        """Note how a dial of an attach ended; returns a sentence when it is news."""
        if record is None:
            where = ", ".join(_hostport(a) for a in target.addresses)
            outcome = {"state": "unreachable", "message": f"no answer at {where}"}
        elif record.ready is None and _AUTH_FAILED in (record.ended or ""):
            outcome = {"state": "refused",
                       "message": f"{record.address} refused the code: it has expired, was "
                                  "already used or revoked, or was never issued there"}
        elif record.ready is None:
            outcome = {"state": "unreachable", "message": f"{record.address}: {record.ended}"}
        else:
            return None
        dials = self._dials.setdefault(target.club, {})
        news = dials.get(target.key) != outcome
        dials[target.key] = outcome
        return outcome["message"] if news else None

    def forget(self, access_id: str) -> None:
        """The attach joined or was cancelled."""
        self._dials.pop(access_id, None)

    def failed(self, path: str, reason: str) -> None:
        """The attach at ``path`` ended without joining."""
        self.results[path] = {"path": path, "status": "attach_failed",
                              "attach_state": "failed", "reason": reason}

    def clear(self, path: str) -> bool:
        """Forget an ended attach (``remove_share`` on its path); True if there was one."""
        return self.results.pop(path, None) is not None

    def outcome(self, access_id: str, targets: Iterable[Target]) -> dict[str, str]:
        """``attach_state`` and ``reason`` of a waiting attach, given the current targets."""
        wanted = {t.key for t in targets if t.kind == "attach" and t.club == access_id}
        if not wanted:
            return {"attach_state": "looking",
                    "reason": "the sharer is not reachable yet: no peer found under this "
                              "code (tracker, LAN or --peer); still looking"}
        dials = self._dials.get(access_id, {})
        current = [outcome for key, outcome in dials.items() if key in wanted]
        if len(current) < len(wanted):
            return {"attach_state": "dialling", "reason": "contacting the sharer"}
        if all(o["state"] == "refused" for o in current):
            return {"attach_state": "refused",
                    "reason": "; ".join(o["message"] for o in current)}
        unreachable = [o["message"] for o in current if o["state"] == "unreachable"]
        return {"attach_state": "unreachable",
                "reason": f"the sharer is not reachable yet ({'; '.join(unreachable)}); "
                          "still trying"}


def _count_entries(path: str, limit: int = 10_000) -> int:
    count = 0
    for _root, dirs, files in os.walk(path):
        count += len(dirs) + len(files)
        if count >= limit:
            break
    return count


def check_folder(real: str, merge: bool) -> None:
    """Refuse (:class:`FolderNotEmpty`) to attach into a folder holding files, unless
    ``merge``; the message says what a merge does to them."""
    if merge or not os.path.isdir(real):
        return
    held = _count_entries(real)
    if held:
        raise FolderNotEmpty(
            f"{real} already holds {held} file(s) or folder(s). Attaching merges them "
            "into the share: they stay, and are sent to the share's other members "
            "(read-write) or left unsent (read-only); where the share has a different "
            "file under the same name, both are kept, one renamed "
            "NAME.CONFLICT.xxxxxxxx.ext. Attach with --merge to go ahead, or choose an "
            "empty folder.")
