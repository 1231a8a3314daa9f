"""Moved to :mod:`csembed.atomic_file`; an alias while a parallel branch still imports it."""

from csembed.atomic_file import fsync_dir, write_atomic

__all__ = ["fsync_dir", "write_atomic"]
