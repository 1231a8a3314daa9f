"""On-disk names: which name a record's name gets in a share's filesystem.

Usually the disk name is the record's name. Three cases need another name,
chosen by :func:`natural_name` under the share's :class:`NameRules`:

* characters the filesystem rejects (FAT/exFAT/NTFS: ``\\ : * ? " < > |``,
  a trailing dot or space, device names such as ``CON``) are percent-encoded
  as directory.md suggests (``a:b`` -> ``a%3Ab``);
* names longer than the filesystem's ``NAME_MAX`` bytes are shortened to
  ``<head>%<16 hex digits of the name's SHA-256><extension>`` (percent
  encoding would only make them longer);
* a name ending in ``.!clearsky`` -- reserved for our temp files -- gets its
  ``!`` encoded, so the file still syncs.

On a case-insensitive filesystem, two keys differing only in case
(``Secret.txt``, ``secret.txt``) cannot both exist; the later one is stored
as ``_secret.txt`` (more underscores if needed), as directory.md suggests.
The same rule settles any other clash, e.g. a file literally named
``a%3Ab`` next to the encoded ``a:b``.

Every disk name that differs from the record's name is kept in the
:class:`~.paths.NameTable` (a table in the share's local SQLite state, see
:mod:`.localdb`), keyed by parent key and disk name, so the mapping back is
exact and survives restarts. Names equal to their key are not stored, so the
table stays tiny on Linux. If the table is lost, encoded files simply show up
under their encoded names.

The rules (name length, case sensitivity, forbidden characters) are probed
once at share creation with ``.!clearsky`` temp files in the root and then
stored, so the mapping never changes under a running share.
"""

from __future__ import annotations

import errno
import os
import unicodedata
from dataclasses import dataclass

from csembed import digests
from csembed.directory.record_keys import TEMP_SUFFIX

_WINDOWS_FORBIDDEN = frozenset('\\:*?"<>|')
_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"COM{i}" for i in range(1, 10)] + [f"LPT{i}" for i in range(1, 10)])


@dataclass(frozen=True)
class NameRules:
    """What names the filesystem under a share can store."""

    name_max: int = 255  #: NAME_MAX in bytes
    case_insensitive: bool = False  #: ``A`` and ``a`` are the same entry
    windows_names: bool = False  #: FAT/NTFS rules: no ``\\:*?"<>|``, no trailing dot/space

    def __post_init__(self) -> None:
        if not 48 <= self.name_max <= 4096:
            raise ValueError(f"name_max must be 48..4096, got {self.name_max}")

    def fold(self, name: str) -> str:
        """The form under which the filesystem compares names."""
        if not self.case_insensitive:
            return name
        return unicodedata.normalize("NFC", name).casefold()

    def encode(self) -> str:
        """Serialised form kept in the share's local state."""
        return f"{self.name_max}:{int(self.case_insensitive)}:{int(self.windows_names)}"

    @classmethod
    def decode(cls, text: str) -> NameRules:
        """Inverse of :meth:`encode`."""
        size, case, win = text.split(":")
        return cls(name_max=int(size), case_insensitive=case == "1", windows_names=win == "1")


def _percent(char: str) -> str:
    return "".join(f"%{byte:02X}" for byte in char.encode("utf-8"))


def _truncate_utf8(text: str, limit: int) -> str:
    """The longest prefix of ``text`` that fits ``limit`` UTF-8 bytes."""
    data = text.encode("utf-8")[:max(limit, 0)]
    return data.decode("utf-8", errors="ignore")


def natural_name(name: str, rules: NameRules) -> str:
    """The disk name for key component ``name`` before any clash is resolved."""
    out = name
    if rules.windows_names:
        out = "".join(_percent(c) if c in _WINDOWS_FORBIDDEN else c for c in out)
        if out.split(".", 1)[0].upper() in _WINDOWS_RESERVED:
            out = _percent(out[0]) + out[1:]
        if out[-1] in ". ":
            out = out[:-1] + _percent(out[-1])
    if out.endswith(TEMP_SUFFIX):
        out = out[: -len(TEMP_SUFFIX)] + ".%21clearsky"
    if len(out.encode("utf-8")) > rules.name_max:
        marker = "%" + digests.sha256(name.encode("utf-8")).hexdigest()[:16]
        stem, dot, ext = out.rpartition(".")
        suffix = "." + ext if dot and stem and len(ext.encode("utf-8")) <= 16 else ""
        body = out[: -len(suffix)] if suffix else out
        head = _truncate_utf8(body, rules.name_max - len(marker) - len(suffix.encode("utf-8")))
        out = head + marker + suffix
    return out


def probe_rules(root_fd: int) -> NameRules:
    """Find out the name rules of the filesystem holding directory ``root_fd``.

    Creates and removes two ``.!clearsky`` files (the only names we may put in
    a share). ``NAME_MAX`` comes from ``fpathconf``.
    """
    try:
        name_max = int(os.fpathconf(root_fd, "PC_NAME_MAX"))
    except (OSError, ValueError):
        name_max = 255
    name_max = max(48, min(name_max, 4096))
    token = os.urandom(6).hex()
    upper = f".csProbe-{token}-Aa{TEMP_SUFFIX}"
    lower = f".csprobe-{token}-aa{TEMP_SUFFIX}"
    _create_empty(root_fd, upper)
    try:
        case_insensitive = lexists(root_fd, lower)
    finally:
        os.unlink(upper, dir_fd=root_fd)
    windows = False
    odd = f".csprobe-{token}-:?{TEMP_SUFFIX}"
    try:
        _create_empty(root_fd, odd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EILSEQ, errno.ENOENT, errno.EPERM):
            raise
        windows = True
    else:
        os.unlink(odd, dir_fd=root_fd)
    return NameRules(name_max=name_max, case_insensitive=case_insensitive,
                     windows_names=windows)


def _create_empty(dir_fd: int, name: str) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600, dir_fd=dir_fd)
    os.close(fd)


def lexists(dir_fd: int, name: str) -> bool:
    """Whether ``name`` is an entry of folder ``dir_fd`` (a link counts; it is not followed)."""
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True
