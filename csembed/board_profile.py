"""Board profiles: the limits of the device csembed runs on.

A profile is a TOML file (``boards/NAME.toml``) with five tables: ``[board]``
(name, description, RAM), ``[memory]`` (chunk and buffer sizes, bytes in
flight, transfer and connection counts), ``[storage]`` (quota, file size,
free-space reserve, write and database durability policy, archive size,
SQLite page cache),
``[network]`` (rates, ping interval, LAN broadcast, uTP) and ``[cpu]`` (gzip level,
rsync threshold, scan interval and budget, which SHA-256 to use). Every key is
declared once in ``_SCHEMA`` with its parser and bounds, so the loader, the
documentation (``csembed boards --verbose``) and the dataclasses cannot drift
apart. An
unknown table or key, a missing key or a bad value is a :class:`BoardError`
naming the file and the key; only keys added after profiles were in use
(``_DEFAULTS``) may be left out.

Profiles ship inside the package (the repository's ``boards/`` folder is
installed as ``csembed/boards``); ``load_board`` also accepts a path to a
profile of the user's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from csembed.digests import SHA256_IMPLEMENTATIONS
from csembed.errors import CsembedError
from csembed.transient_modules import transient_modules
from csembed.units import format_rate, format_size, parse_duration, parse_size

DEFAULT_BOARD = "desktop"


class BoardError(CsembedError):
    """A board profile is missing or invalid."""


@dataclass(frozen=True)
class MemoryLimits:
    """How much memory the daemon may use for data in motion."""

    chunk_size: int  #: payload chunk sent on the wire and read from disk
    io_buffer: int  #: buffer used when hashing and copying files
    max_message: int  #: largest JSON body or payload chunk accepted from a peer
    max_bytes_in_flight: int  #: requested but not yet received bytes, all transfers
    max_open_transfers: int  #: concurrent file transfers
    max_connections: int  #: concurrent peer connections
    max_handshakes: int  #: incoming connections still authenticating, besides those
    max_signature: int  #: largest rsync signature held in memory

    @property
    def per_connection(self) -> int:
        """One connection's share of the bytes in flight (what its buffers are sized by)."""
        return self.max_bytes_in_flight // self.max_connections


@dataclass(frozen=True)
class StorageLimits:
    """What the shares may occupy and how gently to write."""

    quota: int  #: bytes all shares together may hold; 0 = unlimited
    max_file_size: int  #: largest single file accepted; 0 = unlimited
    free_space_reserve: int  #: never fill the disk beyond this much free space
    write_policy: str  #: "normal", or "flash" to batch writes and avoid rewrites
    db_synchronous: str  #: SQLite synchronous level: off, normal, full
    db_checkpoint_pages: int  #: WAL pages before a checkpoint
    archive_size: int  #: cap of the archive of replaced and deleted files
    db_cache: int = 2000 * 1024  #: SQLite page cache per database connection


@dataclass(frozen=True)
class NetworkLimits:
    """Link budget."""

    upload_rate: int  #: bytes per second; 0 = unlimited
    download_rate: int  #: bytes per second; 0 = unlimited
    ping_interval: float  #: seconds between core.ping messages
    lan_broadcast: bool  #: announce shares on the LAN
    utp: bool = True  #: also listen and dial over uTP (UDP; NAT hole punching)


@dataclass(frozen=True)
class CpuLimits:
    """CPU-heavy features and their settings."""

    gzip_level: int  #: 0 disables the gzip extension, 1-9 zlib level
    rsync_threshold: int  #: files at least this large are fetched by delta
    scan_interval: float  #: seconds between rescans of a share
    scan_budget: float  #: fraction of wall time the scanner may use
    sha256: str = "openssl"  #: SHA-256 from "openssl" (fast) or "builtin" (no libcrypto loaded)


@dataclass(frozen=True)
class BoardProfile:
    """One device's limits, as loaded from its TOML file."""

    name: str
    description: str
    ram: int
    memory: MemoryLimits
    storage: StorageLimits
    network: NetworkLimits
    cpu: CpuLimits
    source: str  #: file the profile was read from

    def summary(self) -> dict[str, str]:
        """The main limits as short human-readable strings."""
        return {
            "ram": format_size(self.ram),
            "chunk": format_size(self.memory.chunk_size),
            "in flight": format_size(self.memory.max_bytes_in_flight),
            "transfers": str(self.memory.max_open_transfers),
            "connections": str(self.memory.max_connections),
            "quota": format_size(self.storage.quota) if self.storage.quota else "unlimited",
            "max file": (format_size(self.storage.max_file_size)
                         if self.storage.max_file_size else "unlimited"),
            "up": format_rate(self.network.upload_rate),
            "down": format_rate(self.network.download_rate),
            "gzip": str(self.cpu.gzip_level) if self.cpu.gzip_level else "off",
        }

    def as_dict(self) -> dict[str, Any]:
        """All limits as plain JSON-friendly values (for ``status`` replies)."""
        out: dict[str, Any] = {"name": self.name, "description": self.description,
                               "ram": self.ram}
        for table in ("memory", "storage", "network", "cpu"):
            group = getattr(self, table)
            out[table] = {f.name: getattr(group, f.name) for f in fields(group)}
        return out


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {value!r}")
        return str(value)
    return parse


def _integer(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"expected a whole number from {low} to {high}, got {value!r}")
        return value
    return parse


def _fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ValueError(f"expected a fraction above 0 and at most 1, got {value!r}")
    return float(value)


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected non-empty text, got {value!r}")
    return value


def _size_between(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        size = parse_size(value)
        if not low <= size <= high:
            raise ValueError(f"expected {format_size(low)} to {format_size(high)}, got {value!r}")
        return size
    return parse


def _duration_between(low: float, high: float) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        seconds = parse_duration(value)
        if not low <= seconds <= high:
            raise ValueError(f"expected {low:g} s to {high:g} s, got {value!r}")
        return seconds
    return parse


_MiB = 1024 * 1024
# A JSON body is buffered whole, then parsed within the wire layer's element bound
# (about 5 times its size in objects, plus a copy while its shape is checked):
# ~8 times its size; all connections at once may use at most half the RAM.
_BODY_COST = 16
_WIRE_MAX = 16 * _MiB  # the draft's limit for a JSON body and for a payload chunk

# table -> key -> parser. The order of keys is the order of the dataclass fields.
_SCHEMA: dict[str, dict[str, Callable[[Any], Any]]] = {
    "board": {"name": _text, "description": _text, "ram": _size_between(16 * _MiB, 1 << 50)},
    "memory": {
        "chunk_size": _size_between(4096, _WIRE_MAX),
        "io_buffer": _size_between(4096, 64 * _MiB),
        "max_message": _size_between(64 * 1024, _WIRE_MAX),
        "max_bytes_in_flight": _size_between(64 * 1024, 1 << 40),
        "max_open_transfers": _integer(1, 1024),
        "max_connections": _integer(1, 4096),
        "max_handshakes": _integer(1, 4096),
        "max_signature": _size_between(64 * 1024, 1 << 32),
    },
    "storage": {
        "quota": parse_size,
        "max_file_size": parse_size,
        "free_space_reserve": parse_size,
        "write_policy": _choice("normal", "flash"),
        "db_synchronous": _choice("off", "normal", "full"),
        "db_checkpoint_pages": _integer(100, 1_000_000),
        "archive_size": parse_size,
        "db_cache": _size_between(64 * 1024, 1 << 30),
    },
    "network": {
        "upload_rate": parse_size,
        "download_rate": parse_size,
        "ping_interval": _duration_between(5, 3600),
        "lan_broadcast": _boolean,
        "utp": _boolean,
    },
    "cpu": {
        "gzip_level": _integer(0, 9),
        "rsync_threshold": parse_size,
        "scan_interval": _duration_between(1, 86400),
        "scan_budget": _fraction,
        "sha256": _choice(*SHA256_IMPLEMENTATIONS),
    },
}
# Keys added after profiles were in use: a profile without one gets this value.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "storage": {"db_cache": 2000 * 1024},  # SQLite's own default
    "network": {"utp": True},
    "cpu": {"sha256": "openssl"},
}
_GROUPS = {"memory": MemoryLimits, "storage": StorageLimits,
           "network": NetworkLimits, "cpu": CpuLimits}


def boards_dir() -> Path:
    """The folder holding the bundled profiles (installed package or source tree)."""
    installed = Path(__file__).resolve().parent / "boards"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parent.parent / "boards"


def available_boards() -> list[str]:
    """Names of the bundled profiles, sorted."""
    return sorted(p.stem for p in boards_dir().glob("*.toml"))


def parse_board(data: dict[str, Any], source: str) -> BoardProfile:
    """Validate the parsed TOML ``data`` of a profile read from ``source``."""
    values: dict[str, dict[str, Any]] = {}
    for table in data:
        if table not in _SCHEMA:
            raise BoardError(f"{source}: unknown table [{table}] "
                             f"(expected {', '.join(_SCHEMA)})")
    for table, keys in _SCHEMA.items():
        given = data.get(table)
        if not isinstance(given, dict):
            raise BoardError(f"{source}: missing table [{table}]")
        for key in given:
            if key not in keys:
                raise BoardError(f"{source}: unknown key {table}.{key}")
        values[table] = {}
        for key, parse in keys.items():
            if key not in given and key in _DEFAULTS.get(table, {}):
                values[table][key] = _DEFAULTS[table][key]
                continue
            if key not in given:
                raise BoardError(f"{source}: missing key {table}.{key}")
            try:
                values[table][key] = parse(given[key])
            except ValueError as exc:
                raise BoardError(f"{source}: bad value for {table}.{key}: {exc}") from None
    mem = values["memory"]
    if mem["chunk_size"] > mem["max_message"]:
        raise BoardError(f"{source}: memory.chunk_size is larger than memory.max_message")
    worst = mem["max_message"] * mem["max_connections"] * _BODY_COST
    if worst > values["board"]["ram"]:
        raise BoardError(
            f"{source}: memory.max_message ({format_size(mem['max_message'])}) times "
            f"memory.max_connections ({mem['max_connections']}) does not fit board.ram: "
            f"a body held and parsed may cost {_BODY_COST // 2} times its size, and all "
            f"connections' bodies together must fit in half the RAM")
    return BoardProfile(
        name=values["board"]["name"],
        description=values["board"]["description"],
        ram=values["board"]["ram"],
        source=source,
        **{table: cls(**values[table]) for table, cls in _GROUPS.items()},  # type: ignore[arg-type]
    )


def load_board(name_or_path: str | Path = DEFAULT_BOARD) -> BoardProfile:
    """Load a bundled profile by name, or a profile file by path."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith(".toml") or "/" in text):
        path = boards_dir() / f"{text}.toml"
        if not path.is_file():
            raise BoardError(f"no board named {text!r} "
                             f"(available: {', '.join(available_boards())})")
    # A daemon reads its profile once: tomllib is not kept resident after that.
    with transient_modules("tomllib"):
        import tomllib

        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise BoardError(f"{path}: no such board profile") from None
        except tomllib.TOMLDecodeError as exc:
            raise BoardError(f"{path}: not valid TOML: {exc}") from None
    return parse_board(data, str(path))


def iter_boards() -> Iterator[BoardProfile]:
    """Every bundled profile, loaded and validated."""
    for name in available_boards():
        yield load_board(name)
