"""The one shape of a protocol message: a frozen dataclass that builds and checks its body.

Theory of operation
-------------------
Every message csembed sends or reads -- ``core.*``, ``database.*``,
``directory.*``, ``rsync.*``, ``tracker.*`` and the LAN announcement -- is one
frozen dataclass deriving from :class:`BodyMessage`:

* ``TYPE`` is its ``type`` string, ``PAYLOAD`` whether a binary payload
  follows it on the wire (``!``/``$`` rather than ``m``/``s``);
* ``to_body()`` returns the JSON body, members in the order they go on the
  wire (the order is part of the wire bytes, so it never changes);
* ``from_body(body)`` is the one gate for a peer's body: it checks every
  member it reads and raises its layer's error naming the message and the
  member; unknown members are ignored.

A module holding a family of messages builds one :func:`message_table` from
its classes and reads peer bodies with :func:`build_from_body`, which
dispatches on ``type``. :func:`encode` frames any message for the wire.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Self, TypeVar

from csembed.protocol.wire import encode_message

__all__ = ["BodyMessage", "build_from_body", "encode", "message_table"]


class BodyMessage:
    """Base of every message class; see the module docstring."""

    __slots__ = ()

    TYPE: ClassVar[str]
    PAYLOAD: ClassVar[bool] = False

    def to_body(self) -> dict[str, Any]:
        """The JSON body, members in wire order."""
        raise NotImplementedError

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        """Check a peer's body and build the message from it."""
        raise NotImplementedError


M = TypeVar("M", bound=BodyMessage)


def message_table(classes: Iterable[type[M]]) -> Mapping[str, type[M]]:
    """``type`` string -> class, refusing two classes with one ``TYPE``."""
    table: dict[str, type[M]] = {}
    for cls in classes:
        if cls.TYPE in table:
            raise ValueError(f"two message classes claim the type {cls.TYPE!r}")
        table[cls.TYPE] = cls
    return table


def build_from_body(table: Mapping[str, type[M]], body: Mapping[str, Any]) -> M | None:
    """The message ``body`` holds, checked; ``None`` when its ``type`` is not in ``table``."""
    cls = table.get(str(body.get("type")))
    return None if cls is None else cls.from_body(body)


def encode(message: BodyMessage) -> bytes:
    """The message framed for the wire (``m``, or ``!`` when a payload follows)."""
    return encode_message(message.to_body(), payload=message.PAYLOAD)
