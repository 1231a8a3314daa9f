"""ClearSkies wire format: framing of JSON messages, signatures and binary payloads.

Theory of operation
-------------------
A connection carries a sequence of messages (``protocol/wire.md`` has the exact
grammar and why it was chosen)::

    m<N>{...N bytes of JSON...}
    !<N>{...JSON...} then chunks  <L>\\n<L bytes> ... 0\\n
    s<N>:<S>{...JSON...}<S base64 chars>\\n
    $<N>:<S>{...JSON...}<S base64 chars>\\n then chunks

:class:`Decoder` is sans-I/O: the caller feeds whatever bytes arrived with
:meth:`Decoder.receive_data` and pulls events with :meth:`Decoder.next_event`
until it returns :data:`NEED_DATA`. Events are a :class:`Message` (header,
JSON body and signature all checked), then for ``!``/``$`` messages any number
of :class:`PayloadChunk` pieces and one :class:`PayloadEnd`. Payload bytes are
handed out as they arrive, at most ``Limits.max_delivery`` at a time, so a
16 MiB chunk never has to sit in memory whole. Only the JSON body (bounded by
``Limits.max_body``) and the signature (``Limits.max_signature``) are buffered.

How the decoder holds received bytes without copying them, and why it stays
broken after a framing error, is told in :mod:`csembed.protocol.wire.decoder`.

The encoder functions produce exactly what the decoder accepts: the body is
compact UTF-8 JSON (``type`` first, other keys sorted) followed by one LF that
the body length counts, as in the draft's examples.

The package's modules: :mod:`.events` (events, limits, the error),
:mod:`.body_json` (a body's JSON, both ways), :mod:`.decoder` and
:mod:`.encoder`. Import from the package itself.
"""

from csembed.need_data import NEED_DATA, NeedData
from csembed.protocol.wire.body_json import check_shape, encode_body, parse_body
from csembed.protocol.wire.decoder import Decoder
from csembed.protocol.wire.encoder import (
    encode_chunk,
    encode_chunk_header,
    encode_message,
    encode_payload_end,
)
from csembed.protocol.wire.events import (
    MAX_BODY,
    MAX_CHUNK,
    MAX_DEPTH,
    MAX_SIGNATURE_TEXT,
    Event,
    Limits,
    Message,
    PayloadChunk,
    PayloadEnd,
    WireError,
    default_max_elements,
)

__all__ = [
    "MAX_BODY",
    "MAX_CHUNK",
    "MAX_DEPTH",
    "MAX_SIGNATURE_TEXT",
    "NEED_DATA",
    "Decoder",
    "NeedData",
    "Event",
    "Limits",
    "Message",
    "PayloadChunk",
    "PayloadEnd",
    "WireError",
    "check_shape",
    "default_max_elements",
    "encode_body",
    "encode_chunk",
    "encode_chunk_header",
    "encode_message",
    "encode_payload_end",
    "parse_body",
]
