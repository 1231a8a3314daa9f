"""The five core.md messages: greeting, start, keys, keys acknowledgment, ping.

Theory of operation
-------------------
Each message is a frozen dataclass in the one message style
(:mod:`csembed.protocol.body_message`): ``to_body()`` gives the JSON body in
wire order, ``from_body()`` checks what a peer sent and raises
:class:`~csembed.errors.ProtocolError`'s core family (:class:`CoreError`)
naming the message and the member. Only checks that need nothing but the
body live here; what depends on the connection -- the loopback test, the
choice of a common version, which message may come when -- stays in
:mod:`csembed.protocol.core`, which reads bodies through :data:`MESSAGES`.

=========================  ==========================================================
type                       members
=========================  ==========================================================
core.greeting              ``software``, ``protocol`` (versions offered),
                           ``extensions``, ``peer``, optional ``name``
core.start                 ``software``, ``protocol`` (the version chosen),
                           ``extensions``, ``peer``, optional ``name``
core.keys                  ``access_level``, ``keys`` (one entry per level)
core.keys_acknowledgment   --
core.ping                  ``timeout`` (seconds, a positive number)
=========================  ==========================================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from csembed.errors import ProtocolError
from csembed.protocol.body_message import BodyMessage, message_table
from csembed.protocol.jsonvalues import INT64_MAX, is_strict_int
from csembed.security.errors import KeyFormatError
from csembed.security.keys import ShareKeys, check_peer_id

__all__ = [
    "MESSAGES", "CoreError", "CoreGreeting", "CoreKeys", "CoreKeysAcknowledgment",
    "CoreMessage", "CorePing", "CoreStart", "LoopbackDetected",
]

MAX_LIST: Final = 64
"""Most entries in a greeting's or start's ``protocol`` or ``extensions``."""
MAX_TEXT: Final = 256
"""Longest ``software`` or ``name``."""


class CoreError(ProtocolError):
    """The peer broke the core protocol (bad greeting/start/keys/ping, wrong order)."""


class LoopbackDetected(CoreError):
    """The peer announced our own peer ID: we connected to ourselves."""


def _hello_members(body: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The members greeting and start share, checked."""
    for key in ("software", "name"):
        value = body.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_TEXT):
            raise CoreError(f"{where}: '{key}' must be a string of at most "
                            f"{MAX_TEXT} characters")
    extensions = body.get("extensions", [])
    if not isinstance(extensions, list) or len(extensions) > MAX_LIST \
            or not all(isinstance(e, str) for e in extensions):
        raise CoreError(f"{where}: 'extensions' must be a list of at most "
                        f"{MAX_LIST} strings")
    try:
        peer = check_peer_id(body.get("peer"), f"{where}: 'peer'")
    except KeyFormatError as exc:
        raise CoreError(str(exc)) from None
    return {"software": body.get("software"), "name": body.get("name"),
            "extensions": tuple(extensions), "peer": peer}


def _hello_body(kind: str, software: str | None, protocol: Any, extensions: tuple[str, ...],
                peer: str, name: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": kind}
    if software is not None:
        body["software"] = software
    body.update(protocol=protocol, extensions=list(extensions), peer=peer)
    if name is not None:
        body["name"] = name
    return body


@dataclass(frozen=True)
class CoreGreeting(BodyMessage):
    """``core.greeting``: the server's versions, extensions and peer ID.

    ``protocol`` holds the integer versions offered (other entries are
    ignored: the client picks the highest one both speak).
    """

    TYPE = "core.greeting"
    peer: str
    protocol: tuple[int, ...]
    extensions: tuple[str, ...] = ()
    software: str | None = None
    name: str | None = None

    def to_body(self) -> dict[str, Any]:
        return _hello_body(self.TYPE, self.software, list(self.protocol), self.extensions,
                           self.peer, self.name)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> CoreGreeting:
        members = _hello_members(body, cls.TYPE)
        offered = body.get("protocol")
        if not isinstance(offered, list) or len(offered) > MAX_LIST:
            raise CoreError("core.greeting: 'protocol' must be a list of version numbers")
        return cls(protocol=tuple(v for v in offered if is_strict_int(v)), **members)


@dataclass(frozen=True)
class CoreStart(BodyMessage):
    """``core.start``: the client's chosen version, its extensions and peer ID."""

    TYPE = "core.start"
    peer: str
    protocol: int
    extensions: tuple[str, ...] = ()
    software: str | None = None
    name: str | None = None

    def to_body(self) -> dict[str, Any]:
        return _hello_body(self.TYPE, self.software, self.protocol, self.extensions,
                           self.peer, self.name)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> CoreStart:
        members = _hello_members(body, cls.TYPE)
        chosen = body.get("protocol")
        if not is_strict_int(chosen):
            raise CoreError(f"core.start: 'protocol' must be the chosen version number, "
                            f"got {chosen!r:.40}")
        return cls(protocol=chosen, **members)


@dataclass(frozen=True)
class CoreKeys(BodyMessage):
    """``core.keys``: the keys an access code grants; ``share`` holds exactly those.

    The granted level must come with its key and signing key.
    """

    TYPE = "core.keys"
    access_level: str
    share: ShareKeys = field(repr=False)

    def to_body(self) -> dict[str, Any]:
        return {"type": self.TYPE, "access_level": self.access_level,
                "keys": [level.to_entry() for level in self.share.levels]}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> CoreKeys:
        level = body.get("access_level")
        if not isinstance(level, str):
            raise CoreError("core.keys: 'access_level' must be a string")
        try:
            share = ShareKeys.from_entries(body.get("keys"), "core.keys: 'keys'")
            granted = share.level(level)
        except KeyFormatError as exc:
            raise CoreError(str(exc)) from None
        if not granted.has_key or granted.signing_key is None:
            raise CoreError(f"core.keys grants {level!r} but does not carry its key "
                            "and signing key")
        return cls(level, share)


@dataclass(frozen=True)
class CoreKeysAcknowledgment(BodyMessage):
    """``core.keys_acknowledgment``: the new member stored the keys."""

    TYPE = "core.keys_acknowledgment"

    def to_body(self) -> dict[str, Any]:
        return {"type": self.TYPE}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> CoreKeysAcknowledgment:
        return cls()


@dataclass(frozen=True)
class CorePing(BodyMessage):
    """``core.ping``: "still here; call me dead after ``timeout`` seconds of silence".

    A whole number of seconds goes on the wire as a JSON integer.
    """

    TYPE = "core.ping"
    timeout: float

    def to_body(self) -> dict[str, Any]:
        timeout: float | int = self.timeout
        if float(timeout).is_integer():
            timeout = int(timeout)
        return {"type": self.TYPE, "timeout": timeout}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> CorePing:
        timeout = body.get("timeout")
        # an integer beyond 64 bits would overflow float(): refused like any bad value
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) \
                or not 0 < timeout <= INT64_MAX or not math.isfinite(timeout):
            raise CoreError(f"core.ping: 'timeout' must be a positive number of seconds, "
                            f"got {timeout!r:.40}")
        return cls(timeout)


CoreMessage = CoreGreeting | CoreStart | CoreKeys | CoreKeysAcknowledgment | CorePing

MESSAGES: Final[Mapping[str, type[CoreMessage]]] = message_table(
    (CoreGreeting, CoreStart, CoreKeys, CoreKeysAcknowledgment, CorePing))
"""``type`` -> class for every message the core sends and handles itself."""
