"""Per-share controls on a running daemon: pause, resume and the sync mode.

Theory of operation
-------------------
The control handler calls these with the :class:`~csembed.runtime.daemon.Daemon`
(as it does :mod:`.share_versions`). Each finds the share by path, stores its
new :class:`~csembed.directory.share_policy.SharePolicy` through the share set
(stored first, so a restart keeps it) and makes the daemon follow it:

* **pause**: the share's links are closed, the runtime stops scanning and
  ticking, the share is no longer announced to trackers or on the LAN, and
  the connection manager neither dials for it nor accepts a link for it
  (the daemon's ``runtime_for``/``grant_for`` hooks answer "no" while
  :attr:`OpenShare.syncing` is false). Transfers in progress are cut; their
  partial files stay and resume later.
* **resume**: discovery is told again, the dialers are woken, and the share
  scans at once for what changed while it was paused.
* **mode**: the engine switches at once (:meth:`ShareEngine.set_mode`).
* **override** (send-only) and **revert** (receive-only): the engine
  writes this disk's state over the peers' changes held back, or gives up
  the local changes kept back; the replies count the files.

The daemon-wide ``pause``/``resume`` (no path) are the daemon's own and stop
every link; a share paused on its own stays paused after a daemon-wide resume.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

from csembed.directory.share_policy import SyncMode

if TYPE_CHECKING:
    from csembed.runtime.daemon import Daemon
    from csembed.runtime.share_set import OpenShare

__all__ = ["override_share", "pause_share", "resume_share", "revert_share", "set_share_mode",
           "share_controls_view"]

log = logging.getLogger("csembed.daemon")


def share_controls_view(share: OpenShare) -> dict[str, Any]:
    """What a reply says of a share's controls."""
    return {"path": share.entry.path, "paused": share.policy.paused,
            "sync_mode": share.policy.mode.value}


def pause_share(daemon: Daemon, path: str) -> dict[str, Any]:
    """Pause the share at ``path`` (:class:`NoSuchShare` if there is none running)."""
    share = daemon.running_share(path)
    if not share.policy.paused:
        daemon.share_set.set_policy(share, dataclasses.replace(share.policy, paused=True))
        if daemon.manager is not None:
            daemon.manager.close_share(share.entry.share_id)
        daemon.finder.update()
        log.info("paused share %s", share.entry.path)
    return share_controls_view(share)


def resume_share(daemon: Daemon, path: str) -> dict[str, Any]:
    """Resume the share at ``path`` after :func:`pause_share`."""
    share = daemon.running_share(path)
    if share.policy.paused:
        daemon.share_set.set_policy(share, dataclasses.replace(share.policy, paused=False))
        daemon.finder.update()  # announces it again and wakes the dialers
        log.info("resumed share %s", share.entry.path)
    return share_controls_view(share)


def set_share_mode(daemon: Daemon, path: str, mode: SyncMode) -> dict[str, Any]:
    """Set the sync mode of the share at ``path``."""
    share = daemon.running_share(path)
    if share.policy.mode is not mode:
        daemon.share_set.set_policy(share, dataclasses.replace(share.policy, mode=mode))
        log.info("share %s is now %s", share.entry.path, mode.value.replace("_", "-"))
    return share_controls_view(share)


def override_share(daemon: Daemon, path: str) -> dict[str, Any]:
    """Send this device's state of every file listed out of sync (send-only)."""
    share = daemon.running_share(path)
    assert share.runtime is not None
    files = share.runtime.engine.override_changes(time.time())
    share.runtime.notify()
    log.info("share %s: overrode the peers' changes to %d file(s)", share.entry.path, files)
    return {**share_controls_view(share), "files": files}


def revert_share(daemon: Daemon, path: str) -> dict[str, Any]:
    """Give up the local changes not sent (receive-only); the share's versions return."""
    share = daemon.running_share(path)
    assert share.runtime is not None
    files = share.runtime.engine.revert_changes(time.time())
    share.runtime.notify()
    log.info("share %s: reverted the local changes to %d file(s)", share.entry.path, files)
    return {**share_controls_view(share), "files": files}
