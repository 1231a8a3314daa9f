"""Record keys: the names a peer gives to files, checked before any use.

A record key (``/photos/cat.jpg``) comes from a peer and is hostile until
checked. :func:`split_key` rejects anything that is not a plain
slash-separated list of names: ``.`` and ``..``, empty components (``//``, a
trailing ``/``), NUL and other control characters, backslashes (a path
separator to Windows peers and to many tools), strings that are not valid
UTF-8, names over :data:`MAX_NAME_BYTES` and keys over :data:`MAX_KEY_BYTES`
or :data:`MAX_DEPTH` levels. Failures are :class:`PathError`. The rest of
this module is arithmetic on keys that are already valid; where a key is on
disk is :mod:`.paths`' business.
"""

from __future__ import annotations

import re

from csembed.directory.errors import PathError

MAX_KEY_BYTES = 8192  #: longest key accepted (UTF-8 bytes)
MAX_NAME_BYTES = 1024  #: longest single name accepted in a key (longer than NAME_MAX on purpose)
MAX_DEPTH = 128  #: most directory levels in a key; bounds the descriptors held by a walk
TEMP_SUFFIX = ".!clearsky"  #: the only names we create inside a share (directory.md)

_BAD_CHAR = re.compile("[\x00-\x1f\x7f\\\\/\ud800-\udfff]")


def split_key(key: object) -> tuple[str, ...]:
    """Validate a file key and return its names (``"/"`` gives ``()``)."""
    if not isinstance(key, str):
        raise PathError(repr(key), "a key must be a string")
    if not key.startswith("/"):
        raise PathError(key, "a file key must start with '/'")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        raise PathError(key, "not valid Unicode (lone surrogate)") from None
    if len(encoded) > MAX_KEY_BYTES:
        raise PathError(key[:64] + "...", f"key longer than {MAX_KEY_BYTES} bytes")
    if key == "/":
        return ()
    parts = tuple(key[1:].split("/"))
    if len(parts) > MAX_DEPTH:
        raise PathError(key, f"deeper than {MAX_DEPTH} levels")
    for part in parts:
        check_name(part, key)
    return parts


def check_name(name: str, key: str | None = None) -> None:
    """Raise :class:`PathError` unless ``name`` is acceptable as one key component."""
    where = key if key is not None else name
    if name == "":
        raise PathError(where, "empty path component ('//' or trailing '/')")
    if name in (".", ".."):
        raise PathError(where, f"{name!r} component")
    bad = _BAD_CHAR.search(name)
    if bad is not None:
        char = bad.group()
        code = ord(char)
        if code < 0x20 or code == 0x7F:
            raise PathError(where, f"control character U+{code:04X} in {name!r}")
        if char == "\\":
            raise PathError(where, f"backslash in {name!r}")
        if char == "/":
            raise PathError(where, f"slash inside name {name!r}")
        if 0xD800 <= code <= 0xDFFF:
            raise PathError(where, f"lone surrogate in {name!r} (not valid Unicode)")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise PathError(where, f"name longer than {MAX_NAME_BYTES} bytes")


def join_key(parent: str, name: str) -> str:
    """The key of ``name`` inside directory key ``parent``."""
    return parent + name if parent == "/" else f"{parent}/{name}"


def parent_key(key: str) -> str:
    """The key of the directory holding ``key`` (``"/"`` for top-level names)."""
    head = key.rsplit("/", 1)[0]
    return head or "/"


def is_temp_name(name: str) -> bool:
    """True for our own in-progress download files (skipped by the scanner)."""
    return name.endswith(TEMP_SUFFIX)
