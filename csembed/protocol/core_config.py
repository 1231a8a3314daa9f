"""What a device announces on its connections and how it keeps them alive.

Theory of operation
-------------------
:class:`CoreConfig` is the one configuration of
:class:`~csembed.protocol.core.PeerConnection`: software name and device
name for the greeting/start, the protocol versions and extensions offered
(gzip by level), the keep-alive interval and timeout, how long the core
handshake and key exchange may take, and the wire and session limits. It
checks itself when built, so a connection never starts from a bad one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from csembed import __version__
from csembed.protocol.jsonvalues import is_strict_int
from csembed.protocol.wire import Limits
from csembed.security.handshake import SessionConfig

__all__ = ["GZIP", "PROTOCOL_VERSION", "CoreConfig", "is_extension_name"]

PROTOCOL_VERSION: Final = 1
GZIP: Final = "gzip"
_OFFICIAL_EXTENSION = re.compile(r"[a-z][a-z0-9_]{0,63}")
_UNOFFICIAL_EXTENSION = re.compile(r"\.[A-Za-z0-9_][A-Za-z0-9_.\-]{0,126}")


def is_extension_name(name: object) -> bool:
    """True for an official (``gzip``) or unofficial (``.com.example.x``) extension name."""
    return isinstance(name, str) and bool(
        _OFFICIAL_EXTENSION.fullmatch(name) or _UNOFFICIAL_EXTENSION.fullmatch(name))


@dataclass(frozen=True)
class CoreConfig:
    """What this device announces and how it keeps connections alive.

    ``extensions`` are the extensions besides gzip the caller implements;
    ``gzip_level`` 0 means gzip is not offered (board profiles set 1-9).
    ``ping_timeout`` defaults to three ping intervals.
    """

    software: str = f"csembed {__version__}"
    name: str | None = None
    protocols: tuple[int, ...] = (PROTOCOL_VERSION,)
    extensions: tuple[str, ...] = ()
    gzip_level: int = 0
    ping_interval: float = 60.0
    ping_timeout: float | None = None
    max_ping_timeout: float = 3600.0
    exchange_timeout: float = 60.0
    limits: Limits = Limits()
    session: SessionConfig = SessionConfig()

    def __post_init__(self) -> None:
        if not self.protocols or any(not is_strict_int(p) or p < 1
                                     for p in self.protocols):
            raise ValueError("protocols must be positive integers")
        for ext in self.extensions:
            if not is_extension_name(ext) or ext == GZIP:
                raise ValueError(f"bad extension name {ext!r} (gzip is set by gzip_level)")
        if not 0 <= self.gzip_level <= 9:
            raise ValueError("gzip_level must be 0 (off) or 1-9")
        if not 0 < self.ping_interval < self.timeout <= self.max_ping_timeout:
            raise ValueError("need 0 < ping_interval < ping_timeout <= max_ping_timeout")
        if not self.exchange_timeout > 0:
            raise ValueError("exchange_timeout must be positive")

    @property
    def timeout(self) -> float:
        """The keep-alive timeout we announce in ``core.ping``."""
        return self.ping_timeout if self.ping_timeout is not None else 3 * self.ping_interval

    @property
    def offered_extensions(self) -> tuple[str, ...]:
        """Everything we can negotiate, in our order of preference."""
        return ((GZIP,) if self.gzip_level else ()) + self.extensions
