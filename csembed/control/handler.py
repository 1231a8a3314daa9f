"""What the daemon implements to be controlled: :class:`ControlHandler`.

The control server validates every request against the command table
(``csembed.control.commands``) and then calls the handler method of the same
name with typed keyword arguments, so a handler never sees malformed input.
A method returns the value its docstring names; the server turns it into the
reply object. To refuse, raise
:class:`~csembed.control.errors.ControlRequestError` (``code`` is machine
readable, e.g. ``"no_such_share"``); an ``OSError`` becomes an error named by
its errno (``"EPERM"``, as in control.md's example); anything else becomes
``"internal_error"`` and is logged.

Every method of this base class refuses with ``"not_supported"``, so a
partial daemon (or a test double) overrides only what it implements, and a
command added to the table later does not break existing handlers.

Optional arguments absent from a request are not passed at all, so the
defaults in these method signatures are the protocol's defaults
(``protocol/control.md``), and an override that leaves out an optional
argument still serves every request that does not use it.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from csembed.control.errors import ControlRequestError

__all__ = [
    "DEFAULT_CODE_LIFETIME",
    "DEFAULT_CODE_USES",
    "MAX_READ",
    "AccessMode",
    "ShareMode",
    "ControlHandler",
    "DaemonStatus",
    "FileChunk",
    "ShareInfo",
]

DEFAULT_CODE_USES: Final = 1
"""``create_access_code``: how many times a code may be redeemed when ``max_uses`` is absent."""

DEFAULT_CODE_LIFETIME: Final = 24 * 3600.0
"""``create_access_code``: seconds a code stays valid when ``expires`` is absent."""

MAX_READ: Final = 1 << 20
"""``read_file``: the largest ``count`` (bytes), and the default."""


class AccessMode(StrEnum):
    """The access level an access code grants (control.md ``create_access_code``)."""

    READ_WRITE = "read_write"
    READ_ONLY = "read_only"
    UNTRUSTED = "untrusted"


@dataclass(frozen=True)
class DaemonStatus:
    """The ``status`` reply: control.md's five fields plus anything in ``extra``."""

    paused: bool
    tracking: bool  #: connected to a tracker
    nat_punctured: bool
    upload_rate: int  #: bytes per second, measured
    download_rate: int  #: bytes per second, measured
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_reply(self) -> dict[str, Any]:
        reply = dict(self.extra)
        reply.update(paused=self.paused, tracking=self.tracking,
                     nat_punctured=self.nat_punctured, upload_rate=int(self.upload_rate),
                     download_rate=int(self.download_rate))
        return reply


@dataclass(frozen=True)
class ShareInfo:
    """One entry of the ``list_shares`` reply: ``path``, ``status``, anything in ``extra``.

    ``status`` is a short word such as ``"synced"``, ``"syncing"``,
    ``"paused"`` or ``"error"``; ``extra`` carries e.g. ``files`` and ``synced``.
    """

    path: str
    status: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_reply(self) -> dict[str, Any]:
        reply = dict(self.extra)
        reply.update(path=self.path, status=self.status)
        return reply


@dataclass(frozen=True)
class FileChunk:
    """The ``read_file`` reply: ``data`` read at ``offset`` of a file of ``size`` bytes.

    ``eof`` is true when the read reached the end of the file.
    """

    size: int
    offset: int
    data: bytes
    eof: bool

    def __post_init__(self) -> None:
        if self.size < 0 or self.offset < 0 or len(self.data) > MAX_READ:
            raise ValueError(f"bad FileChunk: size {self.size}, offset {self.offset}, "
                             f"{len(self.data)} bytes of data")

    def to_reply(self) -> dict[str, Any]:
        return {"size": self.size, "offset": self.offset,
                "data": base64.b64encode(self.data).decode("ascii"), "eof": self.eof}


class ShareMode(StrEnum):
    """Which way a share's changes flow on this device (``set_share_mode``; ours)."""

    SEND_RECEIVE = "send_receive"
    SEND_ONLY = "send_only"
    RECEIVE_ONLY = "receive_only"


def _unsupported(command: str) -> ControlRequestError:
    return ControlRequestError("not_supported", f"this daemon does not support {command!r}")


class ControlHandler:
    """Base class of the daemon's control handler; see the module docstring."""

    async def stop(self) -> None:
        """Shut the daemon down.

        Schedule the shutdown and return: the ``{}`` reply is written when this
        returns, and awaiting the control listener's ``close()`` from here
        would cancel this very request.
        """
        raise _unsupported("stop")

    async def pause(self, path: str | None = None) -> Mapping[str, Any] | None:
        """Suspend syncing: every share, or only the share at ``path`` (kept across
        restarts)."""
        raise _unsupported("pause")

    async def resume(self, path: str | None = None) -> Mapping[str, Any] | None:
        """Resume syncing: every share, or only the share at ``path``."""
        raise _unsupported("resume")

    async def set_share_mode(self, path: str, mode: ShareMode) -> Mapping[str, Any]:
        """Make the share at ``path`` send-receive, send-only or receive-only."""
        raise _unsupported("set_share_mode")

    async def override_changes(self, path: str) -> Mapping[str, Any]:
        """Send-only share: send this device's state of the files peers changed."""
        raise _unsupported("override_changes")

    async def revert_changes(self, path: str) -> Mapping[str, Any]:
        """Receive-only share: give up the local changes not sent."""
        raise _unsupported("revert_changes")

    async def status(self) -> DaemonStatus:
        """Connection and transfer status."""
        raise _unsupported("status")

    async def status_detail(self) -> DaemonStatus:
        """``status`` with everything else the daemon reports (board, shares, problems)."""
        raise _unsupported("status_detail")

    async def create_share(self, path: str, sync_mode: ShareMode | None = None) -> None:
        """Start sharing the directory at absolute ``path`` (in ``sync_mode``, default
        send-receive)."""
        raise _unsupported("create_share")

    async def list_shares(self) -> Sequence[ShareInfo]:
        """Every share, one :class:`ShareInfo` each."""
        raise _unsupported("list_shares")

    async def add_share(self, code: str, path: str, merge: bool = True,
                        sync_mode: ShareMode = ShareMode.SEND_RECEIVE) -> None:
        """Join a remote share with access ``code``, syncing into absolute ``path``.

        ``merge=False`` refuses a folder that already holds files; ``sync_mode``
        is the share's mode from its first scan.
        """
        raise _unsupported("add_share")

    async def remove_share(self, path: str) -> None:
        """Stop sharing ``path`` (files stay on disk)."""
        raise _unsupported("remove_share")

    async def create_access_code(self, path: str, mode: AccessMode, *,
                                 max_uses: int | None = DEFAULT_CODE_USES,
                                 expires: float | None = DEFAULT_CODE_LIFETIME) -> str:
        """A new access code for the share at ``path`` granting ``mode``.

        It may be redeemed ``max_uses`` times (``None``: any number) within
        ``expires`` seconds (``None``: no expiry).
        """
        raise _unsupported("create_access_code")

    async def list_codes(self) -> Sequence[Mapping[str, Any]]:
        """Issued access codes, one JSON object each."""
        raise _unsupported("list_codes")

    async def revoke_code(self, code: str) -> Mapping[str, Any] | None:
        """Revoke the issued code ``code`` (its text or its start)."""
        raise _unsupported("revoke_code")

    async def config_sources(self) -> Sequence[Mapping[str, Any]]:
        """Every setting in force: ``key``, ``value`` and ``source``."""
        raise _unsupported("config_sources")

    async def get_config(self) -> Mapping[str, Any]:
        """The whole configuration as a JSON object."""
        raise _unsupported("get_config")

    async def set_config(self, config: Mapping[str, Any]) -> None:
        """Apply the given configuration keys (others keep their values)."""
        raise _unsupported("set_config")

    async def get_config_value(self, key: str) -> Any:
        """One configuration value (any JSON value)."""
        raise _unsupported("get_config_value")

    async def set_config_value(self, key: str, value: Any) -> None:
        """Set one configuration value."""
        raise _unsupported("set_config_value")

    async def list_peers(self) -> Sequence[Mapping[str, Any]]:
        """Known peers, one JSON object each."""
        raise _unsupported("list_peers")

    async def remove_peer(self, path: str, peer: str) -> Mapping[str, Any] | None:
        """Remove ``peer`` (a peer ID or its start) from the share at ``path``: close its
        links and sync that share with it no more."""
        raise _unsupported("remove_peer")

    async def allow_peer(self, path: str, peer: str) -> Mapping[str, Any] | None:
        """Undo ``remove_peer``."""
        raise _unsupported("allow_peer")

    async def list_transfers(self) -> Sequence[Mapping[str, Any]]:
        """Transfers in progress, one JSON object each."""
        raise _unsupported("list_transfers")

    async def rescan(self, path: str | None = None) -> int:
        """Look for local changes now in the share at ``path`` (``None``: every share).

        Returns how many shares will rescan.
        """
        raise _unsupported("rescan")

    async def read_file(self, path: str, file: str, offset: int = 0,
                        count: int = MAX_READ) -> FileChunk:
        """Up to ``count`` bytes at ``offset`` of ``file`` (a path inside the share at
        ``path``), from this device's copy or streamed from a peer that has it."""
        raise _unsupported("read_file")

    async def versions(self, path: str) -> Mapping[str, Any]:
        """The archived versions of the file at absolute ``path`` (inside a share):
        ``{"share", "file", "versions": [{"version", "archived_at", "mtime", "size",
        "sha256"}, ...]}``, newest first."""
        raise _unsupported("versions")

    async def restore(self, path: str, version: int | None = None, at: float | None = None,
                      to: str | None = None) -> Mapping[str, Any]:
        """Put an archived version of ``path`` back (at ``to`` if given): version number
        ``version``, or the one in place at time ``at``, else the newest."""
        raise _unsupported("restore")
