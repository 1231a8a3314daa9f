"""The daemon's data directory: layout, configuration, shares, keys and issued codes.

Theory of operation
-------------------
Everything the daemon must remember across a restart lives under one data
directory (``--data-dir``; default ``$XDG_DATA_HOME/clearskies``, or
``~/.local/share/clearskies``), created with mode 0700::

    config.json              the control protocol's configuration (get/set_config)
    shares.json              the shares (path, share ID, our peer ID, level) and the
                             attaches still waiting for their keys (they hold a code)
    codes.json               access codes we issued and their remaining uses
    removed_peers.json       peers the user removed from a share (never synced with again)
    keys/<share id>.json     each share's keys
    shares/<share id>/       each share's local state (scan cache, archive, partials)
    databases/<share id>.sqlite3   each share's replicated records
    control                  the control socket (made by the control server)

Files holding secrets (``shares.json``: codes being redeemed, ``codes.json``,
``keys/*``) are written by :func:`csembed.security.key_file.write_private_json`:
mode 0600, atomically, fsynced; they are refused on load if others may read
them. ``config.json`` holds nothing secret but is written the same way, so a
power cut never leaves half a file.

A share is named by its *share ID*: the key ID of its ``read_only`` level,
which every member holds in full whatever its own level, so all members of a
share -- and this device after a restart -- agree on it without another
identifier.

Times in ``codes.json`` are wall-clock seconds (``time.time()``), so that a
code's 24 hours keep running while the daemon is stopped; the daemon converts
them to its loop clock when it loads them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from csembed.errors import CsembedError
from csembed.hex_ids import ID_DIGITS, is_lower_hex
from csembed.protocol.jsonvalues import is_strict_int
from csembed.security.errors import KeyFormatError
from csembed.security.key_file import read_private_json, write_private_json
from csembed.security.keys import ACCESS_LEVELS, READ_ONLY, ShareKeys, check_peer_id
from csembed.units import parse_duration, parse_size

__all__ = [
    "CONFIG_KEYS", "DataDir", "DataDirError", "PendingAttach", "ShareEntry", "StoredCode",
    "DATA_DIR_VARIABLE", "check_config_value", "data_dir_source", "default_data_dir",
    "parse_host_port",
]

SHARES_FORMAT: Final = "csembed-shares"
CODES_FORMAT: Final = "csembed-codes"
REMOVED_FORMAT: Final = "csembed-removed-peers"
FILE_VERSION: Final = 1


class DataDirError(CsembedError):
    """The data directory or one of its files is unusable; the message names which."""


DATA_DIR_VARIABLE: Final = "CSEMBED_DATA_DIR"


def default_data_dir() -> Path:
    """``$CSEMBED_DATA_DIR``, else ``$XDG_DATA_HOME/clearskies`` (``~/.local/share/clearskies``
    when unset)."""
    chosen = os.environ.get(DATA_DIR_VARIABLE)
    if chosen:
        return Path(chosen).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / "clearskies"


def data_dir_source(given: object) -> str:
    """Where the data directory in use comes from, for ``config`` to show."""
    if given is not None:
        return "command line (--data-dir)"
    if os.environ.get(DATA_DIR_VARIABLE):
        return f"environment ({DATA_DIR_VARIABLE})"
    return "default ($XDG_DATA_HOME/clearskies)"


def parse_host_port(text: str, what: str = "address") -> tuple[str, int]:
    """Split ``HOST:PORT`` or ``[V6]:PORT``; ``:PORT`` means all interfaces."""
    if not isinstance(text, str):
        raise DataDirError(f"{what}: expected 'HOST:PORT', got {text!r:.60}")
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
        if ":" in host:
            raise DataDirError(f"{what} {text!r}: put an IPv6 address in brackets, "
                               "e.g. [::1]:40121")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise DataDirError(f"{what} {text!r}: expected HOST:PORT, e.g. 192.168.1.7:40121")
    return host or "0.0.0.0", int(port)


# -- configuration -------------------------------------------------------------------


def _optional(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    def run(key: str, value: Any) -> Any:
        return None if value is None else check(key, value)
    return run


def _rate(key: str, value: Any) -> int:
    if isinstance(value, str):
        text = value.strip()
        for suffix in ("/s", "ps", "/sec"):
            if text.lower().endswith(suffix):
                text = text[:-len(suffix)]
                break
        try:
            value = parse_size(text)
        except ValueError:
            raise DataDirError(f"{key} must be a rate such as '500 kB/s', '1 MB/s' or a "
                               f"number of bytes per second (0 = no limit), got "
                               f"{value[:40]!r}") from None
    if not is_strict_int(value) or value < 0:
        raise DataDirError(f"{key} must be a whole number of bytes per second (0 = no "
                           f"limit) or null for the board's, got {str(value)[:40]!r}")
    return value


def _address(key: str, value: Any) -> str:
    parse_host_port(value, key)
    return str(value)


def _addresses(key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or len(value) > 64:
        raise DataDirError(f"{key} must be a list of at most 64 'HOST:PORT' strings")
    return [_address(key, item) for item in value]


def _flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise DataDirError(f"{key} must be true or false (or null for the board's)")
    return value


def _name(key: str, value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 64 \
            or any(ord(c) < 0x20 for c in value):
        raise DataDirError(f"{key} must be a name of 1-64 printable characters")
    return value


def _seconds(key: str, value: Any) -> float:
    if isinstance(value, str):
        try:
            value = parse_duration(value)
        except ValueError:
            raise DataDirError(f"{key} must be a duration such as '90 s' or '5 min', got "
                               f"{value[:40]!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not 1 <= value <= 86400:
        raise DataDirError(f"{key} must be a number of seconds from 1 to 86400 "
                           "(or null for the board's)")
    return float(value)


def _secret(key: str, value: Any) -> str:
    if not isinstance(value, str) or not 8 <= len(value) <= 256:
        raise DataDirError(f"{key} must be a string of 8 to 256 characters")
    return value


CONFIG_KEYS: Final[Mapping[str, tuple[Callable[[str, Any], Any], Any, str]]] = {
    "device_name": (_optional(_name), None, "name sent to peers in the greeting"),
    "upload_limit": (_optional(_rate), None, "bytes/s up, 0 = none, null = board's"),
    "download_limit": (_optional(_rate), None, "bytes/s down, 0 = none, null = board's"),
    "tracker": (_optional(_address), None, "tracker HOST:PORT, null = none"),
    "lan_broadcast": (_optional(_flag), None, "LAN broadcast on/off, null = board's"),
    "peers": (_addresses, [], "manual peers, HOST:PORT each"),
    "scan_interval": (_optional(_seconds), None, "seconds between rescans, null = board's"),
    "web": (_optional(_address), None, "web page HOST:PORT (read at start), null = off"),
    "web_password": (_optional(_secret), None, "web page password (8-256 characters)"),
}
"""Every configuration key: check, default, one-line meaning."""


def check_config_value(key: str, value: Any) -> Any:
    """The checked value for ``key``; :class:`DataDirError` for an unknown key or bad value."""
    spec = CONFIG_KEYS.get(key)
    if spec is None:
        raise DataDirError(f"no configuration key {key!r:.80}; known keys: "
                           + ", ".join(CONFIG_KEYS))
    return spec[0](key, value)


# -- records ---------------------------------------------------------------------


@dataclass(frozen=True)
class ShareEntry:
    """One share this device is a member of (its keys live in their own file)."""

    share_id: str  #: key ID of the share's read_only level
    path: str  #: absolute path of the shared directory
    peer_id: str  #: our peer ID in this share
    access_level: str  #: the level we hold: read_write or read_only

    def __post_init__(self) -> None:
        if not is_lower_hex(self.share_id, ID_DIGITS):
            raise DataDirError(f"bad share ID {self.share_id!r:.80}")
        if not os.path.isabs(self.path):
            raise DataDirError(f"share path {self.path!r:.200} is not absolute")
        check_peer_id(self.peer_id, "share peer ID")
        if self.access_level not in ACCESS_LEVELS:
            raise DataDirError(f"unknown access level {self.access_level!r:.40}")


@dataclass(frozen=True)
class PendingAttach:
    """An ``add_share`` still waiting for the code's creator to hand over the keys."""

    code: str  #: the access code as text (secret)
    access_id: str
    path: str
    peer_id: str  #: the peer ID we use, and keep for the share once joined
    created_at: float  #: wall-clock seconds
    sync_mode: str = "send_receive"  #: the share's mode once joined (directory/share_policy.py)

    def __post_init__(self) -> None:
        if not is_lower_hex(self.access_id, ID_DIGITS):
            raise DataDirError(f"bad access ID {self.access_id!r:.80}")
        if not os.path.isabs(self.path):
            raise DataDirError(f"attach path {self.path!r:.200} is not absolute")
        check_peer_id(self.peer_id, "attach peer ID")
        if self.sync_mode not in ("send_receive", "send_only", "receive_only"):
            raise DataDirError(f"unknown sync mode {self.sync_mode!r:.40}")


@dataclass(frozen=True)
class StoredCode:
    """An access code we issued, as persisted (wall-clock times)."""

    code: str  #: the code as text (secret)
    share_id: str
    access_level: str
    created_at: float
    expires_at: float | None  #: None: never expires
    max_uses: int | None  #: None: unlimited
    uses: int = 0


def _fields(record: Mapping[str, Any], names: tuple[str, ...], where: str) -> dict[str, Any]:
    missing = [n for n in names if n not in record]
    if missing:
        raise DataDirError(f"{where}: missing {', '.join(missing)}")
    return {n: record[n] for n in names}


class DataDir:
    """The files of one data directory; see the module docstring."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()

    # -- paths

    @property
    def control_path(self) -> Path:
        """The control socket."""
        return self.root / "control"

    @property
    def config_path(self) -> Path:
        return self.root / "config.json"

    @property
    def shares_path(self) -> Path:
        return self.root / "shares.json"

    @property
    def codes_path(self) -> Path:
        return self.root / "codes.json"

    @property
    def removed_path(self) -> Path:
        return self.root / "removed_peers.json"

    def keys_path(self, share_id: str) -> Path:
        """Where a share's keys are kept (mode 0600)."""
        return self.root / "keys" / f"{share_id}.json"

    def state_dir(self, share_id: str) -> Path:
        """A share's local state directory (scan cache, archive, partial downloads)."""
        return self.root / "shares" / share_id

    def database_path(self, share_id: str) -> Path:
        """A share's record database."""
        from csembed.database.store import share_database_path
        return share_database_path(self.root, share_id)

    def create(self) -> None:
        """Make the directory (mode 0700) and its sub-folders if missing."""
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            for sub in ("keys", "shares", "databases"):
                (self.root / sub).mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise DataDirError(f"cannot create data directory {self.root}: "
                               f"{exc.strerror or exc}") from None

    # -- generic

    def _read(self, path: Path, fmt: str | None) -> dict[str, Any] | None:
        try:
            data = read_private_json(path)
        except FileNotFoundError:
            return None
        except KeyFormatError as exc:
            raise DataDirError(str(exc)) from None
        except OSError as exc:
            raise DataDirError(f"cannot read {path}: {exc.strerror or exc}") from None
        if not isinstance(data, dict):
            raise DataDirError(f"{path}: expected a JSON object")
        if fmt is not None and (data.get("format") != fmt or data.get("version") != FILE_VERSION):
            raise DataDirError(f"{path}: not a {fmt} file of version {FILE_VERSION}")
        return data

    def _write(self, path: Path, record: Any) -> None:
        try:
            write_private_json(path, record)
        except OSError as exc:
            raise DataDirError(f"cannot write {path}: {exc.strerror or exc}") from None

    # -- configuration

    def load_config(self) -> dict[str, Any]:
        """The stored configuration over the defaults; unknown keys are kept as they are."""
        config = {key: spec[1] for key, spec in CONFIG_KEYS.items()}
        stored = self._read(self.config_path, None) or {}
        for key, value in stored.items():
            if key in CONFIG_KEYS:
                try:
                    config[key] = check_config_value(key, value)
                except DataDirError as exc:
                    raise DataDirError(f"{self.config_path}: {exc}") from None
        return config

    def save_config(self, config: Mapping[str, Any]) -> None:
        self._write(self.config_path, dict(config))

    # -- shares

    def load_shares(self) -> tuple[list[ShareEntry], list[PendingAttach]]:
        """The shares and pending attaches, as last saved."""
        data = self._read(self.shares_path, SHARES_FORMAT)
        if data is None:
            return [], []
        where = str(self.shares_path)
        try:
            shares = [ShareEntry(**_fields(s, ("share_id", "path", "peer_id", "access_level"),
                                           where)) for s in data.get("shares", [])]
            pending = [PendingAttach(**_fields(p, ("code", "access_id", "path", "peer_id",
                                                   "created_at"), where),
                                     **({"sync_mode": p["sync_mode"]} if "sync_mode" in p
                                        else {}))
                       for p in data.get("attaching", [])]
        except (TypeError, AttributeError) as exc:
            raise DataDirError(f"{where}: malformed ({exc})") from None
        return shares, pending

    def save_shares(self, shares: list[ShareEntry], pending: list[PendingAttach]) -> None:
        self._write(self.shares_path, {
            "format": SHARES_FORMAT, "version": FILE_VERSION,
            "shares": [asdict(s) for s in shares],
            "attaching": [asdict(p) for p in pending],
        })

    def write_keys(self, share_id: str, keys: ShareKeys) -> None:
        """Store a share's keys (mode 0600), before anything relies on them."""
        self.keys_path(share_id).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._write(self.keys_path(share_id), keys.to_record())

    def read_keys(self, share_id: str) -> ShareKeys:
        data = self._read(self.keys_path(share_id), None)
        if data is None:
            raise DataDirError(f"keys of share {share_id[:16]}… are missing "
                               f"({self.keys_path(share_id)})")
        try:
            keys = ShareKeys.from_record(data)
        except KeyFormatError as exc:
            raise DataDirError(f"{self.keys_path(share_id)}: {exc}") from None
        if keys.level(READ_ONLY).key_id_hex != share_id:
            raise DataDirError(f"{self.keys_path(share_id)} holds the keys of another share")
        return keys

    def remove_share_files(self, share_id: str) -> None:
        """Forget a share's keys, database and local state (never its files)."""
        import shutil
        self.keys_path(share_id).unlink(missing_ok=True)
        db = self.database_path(share_id)
        for suffix in ("", "-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
        shutil.rmtree(self.state_dir(share_id), ignore_errors=True)

    # -- issued codes

    def load_codes(self) -> list[StoredCode]:
        data = self._read(self.codes_path, CODES_FORMAT)
        if data is None:
            return []
        names = ("code", "share_id", "access_level", "created_at", "expires_at", "max_uses",
                 "uses")
        try:
            return [StoredCode(**_fields(c, names, str(self.codes_path)))
                    for c in data.get("codes", [])]
        except (TypeError, AttributeError) as exc:
            raise DataDirError(f"{self.codes_path}: malformed ({exc})") from None

    def save_codes(self, codes: list[StoredCode]) -> None:
        self._write(self.codes_path, {"format": CODES_FORMAT, "version": FILE_VERSION,
                                      "codes": [asdict(c) for c in codes]})

    # -- removed peers

    def load_removed(self) -> dict[str, set[str]]:
        """Share ID -> peer IDs the user removed from that share."""
        data = self._read(self.removed_path, REMOVED_FORMAT)
        if data is None:
            return {}
        removed = data.get("removed")
        where = str(self.removed_path)
        if not isinstance(removed, dict):
            raise DataDirError(f"{where}: 'removed' must be an object")
        out: dict[str, set[str]] = {}
        for share_id, peers in removed.items():
            if not is_lower_hex(share_id, ID_DIGITS) or not isinstance(peers, list):
                raise DataDirError(f"{where}: malformed entry for {str(share_id)[:80]!r}")
            try:
                out[share_id] = {check_peer_id(p, where) for p in peers}
            except KeyFormatError as exc:
                raise DataDirError(str(exc)) from None
        return out

    def save_removed(self, removed: Mapping[str, set[str]]) -> None:
        self._write(self.removed_path, {
            "format": REMOVED_FORMAT, "version": FILE_VERSION,
            "removed": {sid: sorted(peers) for sid, peers in removed.items() if peers}})
