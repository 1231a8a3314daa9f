"""The runtime's domain errors: what a daemon request can fail with.

Each names a kind of refusal in the daemon's own terms (no such share, the
path overlaps another share, ...). The runtime raises them; only the control
handler (:mod:`csembed.runtime.control_handler`) turns them into control
protocol error codes, by class, in one table.
"""

from __future__ import annotations

from csembed.errors import CsembedError

__all__ = [
    "BadAccessCode", "BadSetting", "DaemonError", "FolderNotEmpty", "ModeNotSupported",
    "NoSuchCode", "NoSuchPeer", "NoSuchSetting", "NoSuchShare", "NotAvailable", "NotPermitted",
    "ShareExists", "ShareOverlaps",
]


class DaemonError(CsembedError):
    """The daemon cannot start or cannot carry out a request."""


class NoSuchShare(DaemonError):
    """No share (or attach) at the path given."""


class ShareExists(DaemonError):
    """The path is already a share, or a code is already being redeemed."""


class ShareOverlaps(DaemonError):
    """The path is inside another share (or the data directory), or holds one."""


class FolderNotEmpty(DaemonError):
    """Attaching into a folder that already holds files, without saying merge."""


class BadAccessCode(DaemonError):
    """An access code that cannot be used here (malformed, or issued by us)."""


class ModeNotSupported(DaemonError):
    """An access mode this daemon does not implement."""


class NotPermitted(DaemonError):
    """This device's access level does not allow the request."""


class NoSuchCode(DaemonError):
    """No live issued code matches."""


class NoSuchPeer(DaemonError):
    """No known peer of the share matches."""


class NotAvailable(DaemonError):
    """The file asked for cannot be read now (nobody holds it, or it is gone)."""


class BadSetting(DaemonError):
    """A configuration value of the wrong type or out of range."""


class NoSuchSetting(DaemonError):
    """A configuration key the daemon does not know."""
