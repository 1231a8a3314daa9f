"""A share's local policy: its sync mode and whether it is paused.

Theory of operation
-------------------
Both are this device's choice alone (no peer is told), stored as JSON
(``policy.json``) in the share's state directory and replaced atomically:

* **mode** -- which way changes flow. ``send_receive`` (the default) both
  ways; ``send_only``: local changes are sent, peers' changes are recorded
  but never applied to the disk (the keys they touch are listed as *out of
  sync*); ``receive_only``: peers' changes are applied, local changes stay
  local (listed as *not sent*) until a peer changes the same file or the mode
  becomes a sending one. Unlike a read-only access code, which the share's
  signatures enforce for every member, a mode is a local policy on a
  read-write member; on a read-only member it changes nothing that the
  access level does not already forbid.
* **paused** -- the daemon makes no connection for the share, transfers
  nothing and does not scan it until resumed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from csembed.atomic_file import write_atomic
from csembed.directory.errors import DirectoryError

POLICY_FILE = "policy.json"


class PolicyError(DirectoryError):
    """A stored or requested policy is malformed; the message says what."""


class SyncMode(StrEnum):
    """Which way a share's changes flow (see the module docstring)."""

    SEND_RECEIVE = "send_receive"
    SEND_ONLY = "send_only"
    RECEIVE_ONLY = "receive_only"

    @property
    def sends(self) -> bool:
        """Local changes are written to the records and so reach peers."""
        return self is not SyncMode.RECEIVE_ONLY

    @property
    def receives(self) -> bool:
        """Peers' changes are applied to the disk."""
        return self is not SyncMode.SEND_ONLY

    @classmethod
    def parse(cls, text: object) -> SyncMode:
        """A mode from its name; ``-`` may stand for ``_`` (``send-only``)."""
        if isinstance(text, str):
            try:
                return cls(text.strip().lower().replace("-", "_"))
            except ValueError:
                pass
        choices = ", ".join(m.value for m in cls)
        raise PolicyError(f"unknown sync mode {str(text)[:40]!r}; one of {choices}")


@dataclass(frozen=True)
class SharePolicy:
    """The stored policy of one share."""

    mode: SyncMode = SyncMode.SEND_RECEIVE
    paused: bool = False

    def to_json(self) -> dict[str, Any]:
        """The stored form."""
        return {"version": 1, "mode": self.mode.value, "paused": self.paused}

    @classmethod
    def from_json(cls, data: object) -> SharePolicy:
        """Read the stored form (:class:`PolicyError` if malformed)."""
        if not isinstance(data, dict) or data.get("version") != 1:
            raise PolicyError("share policy must be an object with version 1")
        paused = data.get("paused", False)
        if not isinstance(paused, bool):
            raise PolicyError("share policy: 'paused' must be true or false")
        return cls(mode=SyncMode.parse(data.get("mode", SyncMode.SEND_RECEIVE.value)),
                   paused=paused)


def load_policy(state_dir: Path) -> SharePolicy:
    """The share's stored policy, or the default (send and receive, running)."""
    path = Path(state_dir) / POLICY_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return SharePolicy()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: not valid JSON: {exc}") from None
    return SharePolicy.from_json(data)


def save_policy(state_dir: Path, policy: SharePolicy) -> None:
    """Store the policy atomically (before it takes effect, so a restart keeps it)."""
    data = json.dumps(policy.to_json(), indent=1).encode("utf-8")
    write_atomic(Path(state_dir) / POLICY_FILE, data + b"\n")
