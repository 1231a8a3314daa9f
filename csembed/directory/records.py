"""Directory records: what the database value of a file or directory holds.

The directory extension stores one database record per file and per
directory. The record key is the share-relative path with a leading ``/`` and
forward slashes (``/photos/cat.jpg``; the share root is ``/``). Keys without a
leading slash belong to other extensions or future features: the directory
engine leaves them alone (:func:`is_file_key`).

The value is a JSON object. This module turns it into a validated
:class:`FileValue` and back:

``size``
    int64 byte count; ``null`` for a directory.
``sha256``
    64 hex digits of the content's SHA-256; ``null`` for a directory. Read in
    either case, held and written in lower case.
``mtime``
    ISO 8601 text with nanoseconds (core.md "Datetime Values"), e.g.
    ``2014-03-30T12:35:29.113243778Z``, read and written with
    :mod:`csembed.protocol.jsonvalues`; :attr:`FileValue.mtime_ns` gives the
    integer form. Directories carry none: a directory's mtime changes as a
    side effect of every change inside it, so syncing it would only make noise.
``unix_mode``
    The draft says "Unix mode bits, as an octal number" and quotes the
    Windows default as ``'0600'``. JSON has no octal literals, so we *write* a
    string of octal digits, four wide (``"0644"``). We *read* such a string
    (with or without a ``0o`` prefix), and also a JSON integer whose decimal
    digits are the octal digits (``644``), which is the other literal reading
    of the draft. File-type bits (``"100644"``) are dropped; only the
    permission bits ``0o7777`` are kept.
``conflict_source``
    On the losing copy of a conflict: the ``uuid`` of the record it split
    from (directory.md "Conflicts").

Every other field -- an extension's ``.com.example.field`` or anything not
understood -- is kept untouched in :attr:`FileValue.extra`, and so is an
optional field whose value we cannot read (the draft: values set by other
peers "should not be erased"). :func:`merge_value` builds the value for a
local change from the previous value, so those fields survive local edits.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from csembed.directory.errors import RecordError
from csembed.errors import ProtocolError
from csembed.hex_ids import ID_DIGITS, lower_hex_of
from csembed.protocol.jsonvalues import check_int64, format_timestamp, parse_timestamp

MAX_SIZE = (1 << 63) - 1  #: the draft's "64-bit integer" (signed, as JSON peers read it)
ROOT_KEY = "/"
_OCTAL = re.compile(r"(?:0[oO])?([0-7]{1,6})")
_KNOWN = ("size", "sha256", "mtime", "unix_mode", "conflict_source")


def is_file_key(key: object) -> bool:
    """True for keys the directory extension owns (a string with a leading ``/``)."""
    return isinstance(key, str) and key.startswith("/")


def format_unix_mode(mode: int) -> str:
    """The wire form of permission bits: four octal digits, ``0o644`` -> ``"0644"``."""
    return f"{stat.S_IMODE(mode):04o}"


def parse_unix_mode(value: object) -> int:
    """Read ``unix_mode`` from a string of octal digits or an octal-looking integer."""
    if isinstance(value, bool):
        raise ValueError(f"unix_mode must be octal digits, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"unix_mode cannot be negative: {value}")
        value = str(value)
    if not isinstance(value, str):
        raise ValueError(f"unix_mode must be octal digits, got {value!r}")
    match = _OCTAL.fullmatch(value)
    if match is None:
        raise ValueError(f"unix_mode must be octal digits, got {value!r}")
    return stat.S_IMODE(int(match.group(1), 8))


@dataclass(frozen=True)
class FileValue:
    """A directory record's value, validated.

    A directory has ``size`` and ``sha256`` both ``None``; a file has both.
    ``extra`` holds every field this module does not interpret, unchanged.
    """

    size: int | None
    sha256: str | None
    mtime: str | None = None
    unix_mode: int | None = None
    conflict_source: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if (self.size is None) != (self.sha256 is None):
            raise RecordError("size and sha256 must both be set (file) or both null (directory)")
        if self.size is not None:
            try:
                check_int64(self.size, "size", minimum=0)
            except ProtocolError as exc:
                raise RecordError(str(exc)) from None
        if self.sha256 is not None:
            sha = lower_hex_of(self.sha256, ID_DIGITS)
            if sha is None:
                raise RecordError(f"sha256 must be 64 hex digits, got {self.sha256!r}")
            object.__setattr__(self, "sha256", sha)
        if self.mtime is not None:
            try:
                parse_timestamp(self.mtime, "mtime")
            except ProtocolError as exc:
                raise RecordError(str(exc)) from None
        if self.unix_mode is not None and (
                isinstance(self.unix_mode, bool) or not isinstance(self.unix_mode, int)
                or not 0 <= self.unix_mode <= 0o7777):
            raise RecordError(f"unix_mode must be permission bits 0..0o7777, "
                              f"got {self.unix_mode!r}")
        if self.conflict_source is not None and not isinstance(self.conflict_source, str):
            raise RecordError(f"conflict_source must be a string, got {self.conflict_source!r}")
        # A known name may sit in `extra` only as the raw, unreadable form of
        # an optional field that is otherwise absent (kept for other peers).
        clash = sorted(k for k in self.extra
                       if k in _KNOWN and (k in ("size", "sha256") or getattr(self, k) is not None))
        if clash:
            raise RecordError(f"extra fields may not shadow known fields: {clash}")
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    # -- constructors ---------------------------------------------------------

    @classmethod
    def for_file(cls, size: int, sha256: str, mtime_ns: int | None,
                 unix_mode: int | None) -> FileValue:
        """A file's value from local facts (``mtime_ns`` as in ``st_mtime_ns``)."""
        mode = None if unix_mode is None else stat.S_IMODE(unix_mode)
        value = cls(size=size, sha256=sha256, unix_mode=mode)
        if mtime_ns is not None:  # our own formatting needs no re-parsing
            object.__setattr__(value, "mtime", format_timestamp(mtime_ns))
        return value

    @classmethod
    def for_directory(cls, unix_mode: int | None) -> FileValue:
        """A directory's value: null size and sha256, and its permission bits."""
        mode = None if unix_mode is None else stat.S_IMODE(unix_mode)
        return cls(size=None, sha256=None, unix_mode=mode)

    @classmethod
    def from_json(cls, value: object) -> FileValue:
        """Validate a record value received from a peer or read from the database.

        ``size`` and ``sha256`` are required (both null for a directory) and a
        bad one is a :class:`RecordError`. A malformed optional field is not an
        error: it is kept untouched in ``extra`` and otherwise ignored.
        """
        if not isinstance(value, Mapping):
            raise RecordError(f"a directory record value must be a JSON object, "
                              f"got {type(value).__name__}")
        if "size" not in value or "sha256" not in value:
            raise RecordError("a directory record value needs both 'size' and 'sha256'")
        extra = {k: v for k, v in value.items() if k not in _KNOWN}
        mtime = value.get("mtime")
        if mtime is not None:
            try:
                parse_timestamp(mtime, "mtime")
            except ProtocolError:
                extra["mtime"] = mtime
                mtime = None
        mode: int | None = None
        if value.get("unix_mode") is not None:
            try:
                mode = parse_unix_mode(value["unix_mode"])
            except ValueError:
                extra["unix_mode"] = value["unix_mode"]
        source = value.get("conflict_source")
        if source is not None and not isinstance(source, str):
            extra["conflict_source"] = source
            source = None
        return cls(size=value["size"], sha256=value["sha256"], mtime=mtime,
                   unix_mode=mode, conflict_source=source, extra=extra)

    # -- views ----------------------------------------------------------------

    @property
    def is_directory(self) -> bool:
        """True for a directory's value (null size and sha256)."""
        return self.size is None

    @property
    def mtime_ns(self) -> int | None:
        """``mtime`` as nanoseconds since the epoch, or ``None``."""
        return None if self.mtime is None else parse_timestamp(self.mtime, "mtime")

    def to_json(self) -> dict[str, Any]:
        """The JSON object for the database; absent optional fields are omitted."""
        out: dict[str, Any] = dict(self.extra)
        out["size"] = self.size
        out["sha256"] = self.sha256
        if self.mtime is not None:
            out["mtime"] = self.mtime
        if self.unix_mode is not None:
            out["unix_mode"] = format_unix_mode(self.unix_mode)
        if self.conflict_source is not None:
            out["conflict_source"] = self.conflict_source
        return out

    def same_content(self, other: FileValue) -> bool:
        """True when both describe the same bytes (or both are directories)."""
        return self.size == other.size and self.sha256 == other.sha256


def parse_record_value(key: object, value: object) -> FileValue | None:
    """The :class:`FileValue` of a database record, or ``None`` if the key is not ours.

    Records whose key lacks the leading slash are "allowed, but ignored"
    (directory.md); the caller keeps them untouched.
    """
    if not is_file_key(key):
        return None
    return FileValue.from_json(value)


def merge_value(previous: Mapping[str, Any] | None, local: FileValue) -> dict[str, Any]:
    """The value to write for a local change, keeping what other peers set.

    Starts from ``previous`` (the record's current JSON value, possibly with
    fields we do not understand) and overwrites only what the local scan
    knows: ``size`` and ``sha256`` always, ``mtime`` and ``unix_mode`` when
    the local value has them. ``conflict_source`` and unknown fields survive.
    """
    merged: dict[str, Any] = dict(previous) if previous is not None else {}
    fresh = local.to_json()
    for name in ("size", "sha256"):
        merged[name] = fresh[name]
    for name in ("mtime", "unix_mode", "conflict_source"):
        if name in fresh:
            merged[name] = fresh[name]
    for name, item in local.extra.items():
        merged.setdefault(name, item)
    return merged
