"""Wire events, the decoder's limits and the wire layer's error.

Theory of operation
-------------------
What the :class:`~csembed.protocol.wire.decoder.Decoder` hands out: a
:class:`Message` (header, JSON body and signature checked), then for ``!``/``$``
messages :class:`PayloadChunk` pieces and one :class:`PayloadEnd`; the
ceilings it enforces on a peer (:class:`Limits`, the draft's maxima by
default); and :class:`WireError`, which names the stream offset of the byte
that broke the format.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from csembed.errors import ProtocolError
from csembed.protocol.jsonvalues import is_strict_int

MIB: Final = 1 << 20
MAX_BODY: Final = 16 * MIB
"""core.md: "The maximum size for the JSON body is 16777216 bytes"."""
MAX_CHUNK: Final = 16 * MIB
"""core.md: "The size for each chunk shall be no greater than 16777216 bytes"."""
MAX_SIGNATURE_TEXT: Final = 1024
"""Our bound on the base64 signature text; Ed25519 needs 88 characters."""
MAX_DEPTH: Final = 64
"""Our bound on the nesting of arrays and objects in a body (the draft's use 3 or 4)."""
MIN_BODY: Final = 2
"""The shortest JSON object, ``{}``."""


class WireError(ProtocolError):
    """The peer's byte stream breaks the wire format.

    ``offset`` is the absolute stream offset (0 = first byte ever received) of
    the byte that was wrong, or of the end of the stream for a truncation.
    ``reason`` is the message without the offset suffix.
    """

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(f"{reason} (at byte {offset})")
        self.reason = reason
        self.offset = offset


@dataclass(frozen=True)
class Message:
    """One message: its JSON body and, for signed kinds, the signature.

    ``raw`` holds the exact body bytes as received or sent -- a signature
    covers exactly these bytes, never a re-encoding of ``body``.
    ``signature`` is the decoded signature (``s`` and ``$``), else ``None``.
    ``has_payload`` is true for ``!`` and ``$``; the decoder then follows the
    message with :class:`PayloadChunk` events and one :class:`PayloadEnd`.
    """

    body: dict[str, Any]
    raw: bytes
    signature: bytes | None = None
    has_payload: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.body, dict):
            raise TypeError("Message.body must be a dict")
        if not isinstance(self.body.get("type"), str) or not self.body["type"]:
            raise ValueError('Message.body needs a non-empty string "type"')
        if not isinstance(self.raw, bytes):
            raise TypeError("Message.raw must be bytes")
        if self.signature is not None and (
            not isinstance(self.signature, bytes) or not self.signature
        ):
            raise ValueError("Message.signature must be non-empty bytes or None")

    @property
    def kind(self) -> str:
        """The header prefix: ``m``, ``!``, ``s`` or ``$``."""
        if self.signature is None:
            return "!" if self.has_payload else "m"
        return "$" if self.has_payload else "s"

    @property
    def type(self) -> str:
        """The body's ``type`` member, e.g. ``"core.greeting"``."""
        return str(self.body["type"])


@dataclass(frozen=True)
class PayloadChunk:
    """Payload bytes, in arrival order; a piece of a wire chunk, never empty."""

    data: bytes


@dataclass(frozen=True)
class PayloadEnd:
    """The zero-length chunk that ends a binary payload."""


Event = Message | PayloadChunk | PayloadEnd
"""What :meth:`Decoder.next_event` returns besides :data:`NEED_DATA`."""


@dataclass(frozen=True)
class Limits:
    """Ceilings the decoder enforces on a peer.

    The defaults are the draft's maxima; a constrained board passes smaller
    ``max_body``/``max_chunk`` and ``max_delivery`` (the largest piece of
    payload handed out at once, i.e. the most payload bytes copied per event).
    ``max_elements`` (0: :func:`default_max_elements` of ``max_body``) and
    ``max_depth`` bound the shape of a JSON body (see :func:`parse_body`).
    """

    max_body: int = MAX_BODY
    max_chunk: int = MAX_CHUNK
    max_delivery: int = 64 * 1024
    max_signature: int = MAX_SIGNATURE_TEXT
    max_elements: int = 0
    max_depth: int = MAX_DEPTH

    def __post_init__(self) -> None:
        checks = (
            ("max_body", self.max_body, MIN_BODY, MAX_BODY),
            ("max_chunk", self.max_chunk, 1, MAX_CHUNK),
            ("max_delivery", self.max_delivery, 1, MAX_CHUNK),
            ("max_signature", self.max_signature, 4, MAX_SIGNATURE_TEXT),
            ("max_elements", self.max_elements, 0, MAX_BODY),
            ("max_depth", self.max_depth, 1, 1000),
        )
        for name, value, low, high in checks:
            if not is_strict_int(value):
                raise TypeError(f"Limits.{name} must be an int")
            if not low <= value <= high:
                raise ValueError(f"Limits.{name}={value} is outside {low}..{high}")

    @property
    def element_limit(self) -> int:
        """``max_elements``, or its default for ``max_body``."""
        return self.max_elements or default_max_elements(self.max_body)


def default_max_elements(max_body: int) -> int:
    """Values and keys a body of ``max_body`` bytes may hold by default: one per
    16 bytes (at least 1024). Real messages average far more bytes per element
    (hex digests, names, timestamps); a body of ``{},{},...`` would otherwise
    cost about 25 times its size in Python objects, this caps it near 5 times."""
    return max(1024, max_body // 16)
