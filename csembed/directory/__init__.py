"""The directory extension's local engine: everything that touches the share on disk.

The network side (presence exchange, ``directory.get``, the transfer
scheduler) is built on top of these modules; nothing here opens a socket.

* :mod:`.records` -- record values (``size``, ``sha256``, ``mtime``,
  ``unix_mode``, unknown fields kept) and merging local changes into them.
* :mod:`.record_keys` -- a peer's keys checked (no ``..``, NUL, ...).
* :mod:`.paths` -- keys to disk locations, refusing anything unsafe; the
  share root's identity (:mod:`.disk_names`: name encoding and case clashes).
* :mod:`.scanner` (with :mod:`.tree_listing`, :mod:`.move_pairing`,
  :mod:`.scan_cache`, :mod:`.debounce`, :mod:`.pacing`) -- local changes as
  :mod:`.scan_events`: ``Added`` / ``Modified`` / ``Deleted`` / ``Moved``.
* :mod:`.filestore` (with :mod:`.archive`, :mod:`.download`,
  :mod:`.disk_sync`, :mod:`.storage_limits`) -- downloads into temp files,
  verified and renamed into place; deletions, conflicts, deduplication,
  storage limits.
* :mod:`.reader` -- content by hash, streamed in ranges.
* :mod:`.bloom` -- the presence filter.
* :mod:`.selection` -- ignore, partial-copy and subtree settings
  (:mod:`.ignore_file`: the ``.csignore`` file at the share's root).
* :mod:`.share_policy` -- the share's sync mode and pause, stored locally
  (:mod:`.unsent_changes`: what a receive-only share keeps back).
* :mod:`.local_share` -- all of the above wired for one share.

The network side (the sync engine) is built on them:

* :mod:`.engine` -- :class:`~.engine.ShareEngine`: records <-> disk <-> peers.
* :mod:`.sync_messages` -- the directory.* and rsync.* messages, checked.
* :mod:`.transfer_fetch` -- wants, peers' presence, requests in flight.
* :mod:`.transfer_serve` -- per-connection output, made lazily; serving files.
* :mod:`.transfer_stream` -- reading a peer's file by ranges (streaming).

Errors: :mod:`.errors` (one family, :class:`DirectoryError`).
"""
