"""Core protocol over a ``clearskies:2`` session: greeting, start, keys, ping, gzip.

Theory of operation. :class:`PeerConnection` stacks, for one TCP (or other
byte-stream) connection, the secure session
(:class:`~csembed.security.handshake.SecureSession`), an optional gzip layer
(:mod:`csembed.protocol.gzip_stream`) and the wire decoder
(:mod:`csembed.protocol.wire`), and runs core.md's messages on top. It is
sans-I/O like its parts: raw socket bytes in with :meth:`~PeerConnection.receive_data`,
events out with :meth:`~PeerConnection.next_event`, bytes for the socket from
:meth:`~PeerConnection.data_to_send`, timers via ``get_timer``/``handle_timer``.
Time comes in as ``now`` with the bytes, at construction and in
``handle_timer``; what ``next_event`` and the sending methods do is dated by
the latest ``now`` given (the connection never reads a clock).
Work is done lazily in ``next_event``: at most one record is decrypted and at
most ``Limits.max_delivery`` bytes inflated per step, so memory stays bounded
whatever the peer sends, and a caller that reads only on ``NEED_DATA`` gets
back-pressure.

Phases (:class:`Phase`, dispatch in :data:`_HANDLERS`)::

    HANDSHAKE --HandshakeComplete--> server: send core.greeting, AWAIT_START
                                     client: AWAIT_GREETING
    AWAIT_GREETING --core.greeting--> send core.start --> keys phase
    AWAIT_START    --core.start-----> keys phase
    keys phase: SHARE_KEY grant -> READY
                CODE_CREATOR    -> send core.keys, AWAIT_ACK --ack--> spend code, READY
                CODE_HOLDER     -> AWAIT_KEYS --core.keys--> KeysReceived event,
                                   AWAIT_LOCAL_ACK --acknowledge_keys()--> send ack, READY

Beside this module: its configuration (:mod:`.core_config`), the events it
reports (:mod:`.core_events`), who may connect (:mod:`.core_access`) and
signed messages (:mod:`.core_signing`).

The messages are :mod:`csembed.protocol.core_messages` classes: a handler
gets the message already checked by its ``from_body``, and replies are built
with ``to_body``. Rules beside the table: the first message each side receives must be the
greeting (client) or the start (server); until READY every other message is
dropped unread (core.md: take no action before the key exchange); once READY,
``core.*`` messages the core does not know are dropped and everything else
(with its payload) goes to the caller, who ignores types it does not know.
Negotiation picks the highest common protocol version and the intersection
of extensions (unofficial names start with ``.``); a peer announcing our own
peer ID is a loopback and ends the connection. With ``gzip`` negotiated,
everything after ``core.start`` is compressed in both directions (client to
server: from the message after the start; server to client: from the message
after the greeting, as the server sends nothing between the two).

Keep-alive (core.md): each side sends ``core.ping`` with its timeout every
``ping_interval``; when the peer announces a larger timeout we adopt it and
stretch our interval in proportion. The peer is dead when nothing at all has
arrived for the (adopted) timeout.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final

from csembed.errors import CsembedError
from csembed.need_data import NEED_DATA, NeedData
from csembed.protocol.body_message import encode
from csembed.protocol.core_access import (
    AccessCodeTable,
    CredentialRegistry,
    Grant,
    GrantKind,
)
from csembed.protocol.core_config import GZIP, PROTOCOL_VERSION, CoreConfig
from csembed.protocol.core_events import (
    CoreEvent,
    CoreStateError,
    KeysAcknowledged,
    KeysReceived,
    PeerTimedOut,
    Ready,
)
from csembed.protocol.core_messages import (
    MESSAGES,
    CoreError,
    CoreGreeting,
    CoreKeys,
    CoreKeysAcknowledgment,
    CorePing,
    CoreStart,
    LoopbackDetected,
)
from csembed.protocol.core_signing import SignatureError, sign_message, verify_message
from csembed.protocol.gzip_stream import GzipDecoder, GzipEncoder, GzipError
from csembed.protocol.wire import (
    Decoder,
    Message,
    PayloadChunk,
    PayloadEnd,
    WireError,
    encode_chunk_header,
    encode_message,
    encode_payload_end,
)
from csembed.security.handshake import (
    Credential,
    HandshakeComplete,
    PlaintextReceived,
    SecureSession,
    SessionClosed,
    SessionFailed,
)
from csembed.security.keys import Rng, ShareKeys, default_rng
from csembed.security.rate_limit import RateLimiter

__all__ = [
    "GZIP", "PROTOCOL_VERSION", "AccessCodeTable", "CoreConfig", "CoreError", "CoreStateError",
    "CredentialRegistry", "Grant", "GrantKind", "KeysAcknowledged", "KeysReceived",
    "LoopbackDetected", "PeerConnection", "PeerTimedOut", "Phase", "Ready", "SessionClosed",
    "SessionFailed", "SignatureError", "sign_message", "verify_message",
]

_MANAGED_TYPES: Final = frozenset(MESSAGES)
_DEFAULT_CONFIG: Final = CoreConfig()


class Phase(enum.Enum):
    """Where a :class:`PeerConnection` stands."""

    HANDSHAKE = "handshake"
    AWAIT_GREETING = "waiting for core.greeting"
    AWAIT_START = "waiting for core.start"
    AWAIT_KEYS = "waiting for core.keys"
    AWAIT_LOCAL_ACK = "waiting for the keys to be stored"
    AWAIT_ACK = "waiting for core.keys_acknowledgment"
    READY = "ready"
    CLOSED = "closed"
    FAILED = "failed"


# phase -> {message type -> handler, given the checked message (core_messages.MESSAGES)};
# other messages: see the module docstring.
_HANDLERS: Final[Mapping[Phase, Mapping[str, str]]] = {
    Phase.AWAIT_GREETING: {CoreGreeting.TYPE: "_on_greeting"},
    Phase.AWAIT_START: {CoreStart.TYPE: "_on_start"},
    Phase.AWAIT_KEYS: {CoreKeys.TYPE: "_on_keys"},
    Phase.AWAIT_ACK: {CoreKeysAcknowledgment.TYPE: "_on_keys_acknowledgment"},
    Phase.READY: {CorePing.TYPE: "_on_ping"},
}
_FIRST_MESSAGE: Final = {Phase.AWAIT_GREETING: CoreGreeting.TYPE,
                         Phase.AWAIT_START: CoreStart.TYPE}
_TERMINAL: Final = (Phase.CLOSED, Phase.FAILED)


class PeerConnection:
    """One peer connection: secure session + core protocol. Build with
    :meth:`client` or :meth:`server`."""

    def __init__(self, session: SecureSession, config: CoreConfig, now: float):
        self.config = config
        self._session = session
        self._now = now  # the latest time the caller gave
        self.phase = Phase.HANDSHAKE
        self.grant: Grant | None = None
        self.protocol: int | None = None
        self.extensions: tuple[str, ...] = ()
        self.peer_id: str | None = None
        self.peer_name: str | None = None
        self.peer_software: str | None = None
        self.share: ShareKeys | None = None
        self.access_level: str | None = None
        self._events: deque[CoreEvent] = deque()
        self._decoder = Decoder(config.limits)
        self._fed_total = 0
        self._last_fed = b""
        self._inflater: GzipDecoder | None = None
        self._deflater: GzipEncoder | None = None
        self._payload_mode: str | None = None  # inbound payload: "deliver" or "drop"
        self._sending_payload = False
        self._peer_finished = False  # the peer's FINAL record arrived
        self._input_done = False  # ... and everything before it was consumed
        self._local_closed = False
        self._claimed = False
        self._pending_keys: ShareKeys | None = None
        self._pending_level: str | None = None
        self._exchange_deadline: float | None = None
        self.timeout = config.timeout
        self._ping_ratio = config.ping_interval / config.timeout
        self._next_ping: float | None = None
        self._last_ping_at = 0.0
        self._last_received = now

    # ----------------------------------------------------------- construction

    @classmethod
    def client(cls, grant: Grant, config: CoreConfig = _DEFAULT_CONFIG, *,
               now: float, rng: Rng = default_rng) -> PeerConnection:
        """Connect at ``now`` under ``grant`` (a share key, a code we hold, or a code
        we issued)."""
        session = SecureSession.client(grant.id_hex, grant.credential(), now=now, rng=rng,
                                       config=config.session)
        return cls(session, config, now)

    @classmethod
    def server(cls, registry: CredentialRegistry | Callable[[str, float], Credential | None],
               config: CoreConfig = _DEFAULT_CONFIG, *, now: float,
               rng: Rng = default_rng, limiter: RateLimiter | None = None,
               source: str = "") -> PeerConnection:
        """Accept a connection at ``now``, looking IDs up in ``registry`` (or
        ``lookup(id_hex, now)``); ``limiter`` throttles failed attempts from
        ``source`` (the peer's address)."""
        lookup = registry.lookup if isinstance(registry, CredentialRegistry) else registry
        session = SecureSession.server(lookup, now=now, rng=rng, config=config.session,
                                       limiter=limiter, source=source)
        return cls(session, config, now)

    # ------------------------------------------------------------- public API

    @property
    def role(self) -> str:
        """``client`` or ``server``."""
        return self._session.role

    @property
    def handshake_complete(self) -> bool:
        """True once the peer proved its secret (and still after the connection ended)."""
        return self._session.handshake_complete

    @property
    def ready(self) -> bool:
        """True once application messages may be sent."""
        return self.phase is Phase.READY and not self._local_closed

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> None:
        """Raw bytes from the socket, arrived at ``now``; ``b""`` when the peer closed it."""
        if self.phase in _TERMINAL:
            return
        self._now = now
        if data:
            self._last_received = now
        self._session.receive_data(data, now)

    def get_buffer(self, size: int) -> memoryview:
        """Zero-copy receiving: see :meth:`SecureSession.get_buffer`."""
        return self._session.get_buffer(size)

    def buffer_updated(self, nbytes: int, now: float) -> None:
        """``nbytes`` arrived in the last :meth:`get_buffer` view at ``now``."""
        if nbytes and self.phase not in _TERMINAL:
            self._now = self._last_received = now
            self._session.buffer_updated(nbytes, now)

    def next_event(self) -> CoreEvent | NeedData:
        """The next event, or :data:`NEED_DATA`."""
        while not self._events:
            if self.phase in _TERMINAL or not self._pump():
                return NEED_DATA
        return self._events.popleft()

    def data_to_send(self) -> bytes | bytearray:
        """Bytes for the socket (nothing once the connection failed)."""
        data = self._session.data_to_send()
        return b"" if self.phase is Phase.FAILED else data

    def send_message(self, body_or_raw: Mapping[str, Any] | bytes, *,
                     sign_with: Any = None, payload: bool = False) -> None:
        """Send an application message; ``sign_with`` (a level's
        :class:`~csembed.security.keys.LevelKeys`) makes it ``s``/``$``.
        With ``payload``, follow with :meth:`send_chunk` and :meth:`send_payload_end`."""
        self._check_can_send()
        if self._sending_payload:
            raise CoreStateError("finish the current payload before sending another message")
        if isinstance(body_or_raw, Mapping) and body_or_raw.get("type") in _MANAGED_TYPES:
            raise CoreStateError(f"{body_or_raw['type']} is sent by the core itself")
        if sign_with is not None:
            unit = sign_message(body_or_raw, sign_with, payload=payload)
        else:
            unit = encode_message(body_or_raw, payload=payload)
        self._send_unit(unit)
        self._sending_payload = payload

    def send_chunk(self, data: bytes) -> None:
        """One chunk of the current message's payload (non-empty, <= 16 MiB)."""
        self._check_can_send()
        if not self._sending_payload:
            raise CoreStateError("no payload message is open")
        self._send_unit(encode_chunk_header(len(data)), data)

    def send_payload_end(self) -> None:
        """End the current message's payload."""
        self._check_can_send()
        if not self._sending_payload:
            raise CoreStateError("no payload message is open")
        self._send_unit(encode_payload_end())
        self._sending_payload = False
        self._send_deferred_ping()

    def send_encoded(self, unit: bytes) -> None:
        """Send one wire unit the caller framed itself: a whole message (``m``/``s``),
        the header of a payload message (``!``/``$``; its chunks follow as units of
        their own), one payload chunk, or the payload end (``0`` LF). Lets a relay
        send a stored signed update with its original signature, and a sender
        stream payload chunks it framed straight from a file."""
        self._check_can_send()
        head = unit[:1]
        if head in (b"m", b"s", b"!", b"$"):
            if self._sending_payload:
                raise CoreStateError("finish the current payload before sending another message")
            self._send_unit(unit)
            self._sending_payload = head in (b"!", b"$")
            return
        if not self._sending_payload:
            raise CoreStateError("no payload message is open")
        self._send_unit(unit)
        if unit == b"0\n":
            self._sending_payload = False
            self._send_deferred_ping()

    def _send_deferred_ping(self) -> None:
        # A ping that fell due while a payload was open goes out right after it.
        if self.phase is Phase.READY and not self._local_closed \
                and self._next_ping is not None and self._now >= self._next_ping:
            self._send_ping(self._now)

    def acknowledge_keys(self) -> None:
        """After :class:`KeysReceived` was stored: acknowledge and become READY."""
        if self.phase is not Phase.AWAIT_LOCAL_ACK:
            raise CoreStateError(f"no keys to acknowledge ({self.phase.value})")
        assert self._pending_keys is not None and self._pending_level is not None
        self._send_unit(encode(CoreKeysAcknowledgment()))
        self._go_ready(self._pending_level, self._pending_keys)

    def close(self) -> None:
        """Close cleanly: our stream ends with a FINAL record."""
        if self.phase in _TERMINAL or self._local_closed:
            return
        self._local_closed = True
        self._release_claim()
        self._session.close()
        if self._input_done or not self._session.handshake_complete:
            self.phase = Phase.CLOSED

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called, or ``None``."""
        if self.phase in _TERMINAL:
            return None
        times = [self._session.get_timer(), self._exchange_deadline]
        if self.phase is Phase.READY and not self._peer_finished:
            times += [self._last_received + self.timeout]
            if not self._local_closed and not self._sending_payload:
                times.append(self._next_ping)
        present = [t for t in times if t is not None]
        return min(present) if present else None

    def handle_timer(self, now: float) -> None:
        """Time out a stalled exchange or a silent peer; send a due ping."""
        if self.phase in _TERMINAL:
            return
        self._now = now
        self._session.handle_timer(now)
        if self._exchange_deadline is not None and now >= self._exchange_deadline:
            self._fail(CoreError(f"the peer did not complete the core handshake and key "
                                 f"exchange within {self.config.exchange_timeout:g} s "
                                 f"({self.phase.value})"))
        elif self.phase is Phase.READY and not self._peer_finished:
            if now >= self._last_received + self.timeout:
                self._fail(PeerTimedOut(f"nothing received from the peer for "
                                        f"{self.timeout:g} s (ping timeout)"))
            elif self._next_ping is not None and now >= self._next_ping \
                    and not self._local_closed and not self._sending_payload:
                # never inside an open payload: the ping would land between chunks
                self._send_ping(now)

    # -------------------------------------------------------- inbound pipeline

    def _pump(self) -> bool:
        """Advance by one step; False when nothing can happen without input."""
        try:
            event = self._decoder.next_event()
            if not isinstance(event, NeedData):
                self._on_wire(event)
                return True
            if self._inflater is not None:
                inflated = self._inflater.read()
                if inflated:
                    self._decoder.receive_data(inflated)
                    return True
            if self._peer_finished:
                return False if self._input_done else self._finish_input()
            session_event = self._session.next_event()
            if isinstance(session_event, NeedData):
                return False
            self._on_session(session_event)
        except (WireError, GzipError, CoreError) as exc:
            self._fail(exc)
        return True

    def _on_session(self, event: HandshakeComplete | PlaintextReceived | SessionClosed
                    | SessionFailed) -> None:
        if isinstance(event, PlaintextReceived):
            if self._inflater is not None:
                self._inflater.receive_data(event.data)
            else:
                self._decoder.receive_data(event.data)
                self._fed_total += len(event.data)
                self._last_fed = event.data
        elif isinstance(event, HandshakeComplete):
            self._on_handshake(event)
        elif isinstance(event, SessionClosed):
            self._peer_finished = True
            if self._inflater is not None:
                self._inflater.receive_data(b"")
        else:
            self._fail_with(event)

    def _finish_input(self) -> bool:
        """The peer's stream ended cleanly and everything before it is consumed."""
        if self._inflater is not None:
            self._inflater.read()  # raises if the stream stopped inside a frame
        self._decoder.receive_data(b"")
        if not isinstance(self._decoder.next_event(), NeedData):  # pragma: no cover
            raise CoreError("data after the end of stream")
        if self.phase is not Phase.READY:
            raise CoreError(f"the peer closed the connection before the key exchange "
                            f"completed ({self.phase.value})")
        self._input_done = True
        self._events.append(SessionClosed())
        if self._local_closed:
            self.phase = Phase.CLOSED
        return True

    def _on_handshake(self, event: HandshakeComplete) -> None:
        grant = event.context
        if not isinstance(grant, Grant):
            raise CoreError("internal: the session's credential carries no Grant")
        self.grant = grant
        self._exchange_deadline = self._now + self.config.exchange_timeout
        if self.role == "server":
            self._send_unit(encode(CoreGreeting(
                grant.peer_id, self.config.protocols, self.config.offered_extensions,
                self.config.software, self.config.name)))
            self.phase = Phase.AWAIT_START
        else:
            self.phase = Phase.AWAIT_GREETING

    def _on_wire(self, event: Message | PayloadChunk | PayloadEnd) -> None:
        if not isinstance(event, Message):
            if self._payload_mode is None:  # pragma: no cover - the decoder forbids it
                raise CoreError("payload data outside a payload message")
            if self._payload_mode == "deliver":
                self._events.append(event)
            if isinstance(event, PayloadEnd):
                self._payload_mode = None
            return
        handler = _HANDLERS.get(self.phase, {}).get(event.type)
        expected = _FIRST_MESSAGE.get(self.phase)
        if handler is None and expected is not None:
            raise CoreError(f"expected {expected} as the first message, got {event.type!r}")
        deliver = handler is None and self.phase is Phase.READY \
            and not event.type.startswith("core.")
        if event.has_payload:
            self._payload_mode = "deliver" if deliver else "drop"
        if handler is not None:
            getattr(self, handler)(MESSAGES[event.type].from_body(event.body))
        elif deliver:
            self._events.append(event)

    # ------------------------------------------------------------ core messages

    def _read_hello(self, hello: CoreGreeting | CoreStart) -> None:
        """What greeting and start share: the peer's ID (not our own), name, software."""
        assert self.grant is not None
        if hello.peer == self.grant.peer_id:
            raise LoopbackDetected(f"{hello.TYPE} carries our own peer ID {hello.peer}: "
                                   "this connection loops back to ourselves")
        self.peer_id = hello.peer
        self.peer_name = hello.name
        self.peer_software = hello.software

    def _on_greeting(self, greeting: CoreGreeting) -> None:
        self._read_hello(greeting)
        common = [v for v in greeting.protocol if v in self.config.protocols]
        if not common:
            raise CoreError(f"no common protocol version: the peer offers "
                            f"{list(greeting.protocol[:8])}, "
                            f"we speak {list(self.config.protocols)}")
        self.protocol = max(common)
        self.extensions = tuple(e for e in self.config.offered_extensions
                                if e in greeting.extensions)
        assert self.grant is not None
        self._send_unit(encode(CoreStart(self.grant.peer_id, self.protocol, self.extensions,
                                         self.config.software, self.config.name)))
        if GZIP in self.extensions:
            self._start_gzip()
        self._begin_key_exchange()

    def _on_start(self, start: CoreStart) -> None:
        self._read_hello(start)
        if start.protocol not in self.config.protocols:
            raise CoreError(f"core.start chose protocol {start.protocol!r}, which we did not "
                            f"offer (we offered {list(self.config.protocols)})")
        self.protocol = start.protocol
        self.extensions = tuple(e for e in self.config.offered_extensions
                                if e in start.extensions)
        if GZIP in self.extensions:
            self._start_gzip()
        self._begin_key_exchange()

    def _start_gzip(self) -> None:
        """Compress from the next unit on, both ways. Whatever the decoder was fed
        beyond the message just decoded is already compressed: move it over."""
        extra = self._fed_total - self._decoder.offset
        if not 0 <= extra <= len(self._last_fed):  # pragma: no cover - see docstring
            raise CoreError("internal: cannot locate the start of the compressed stream")
        self._deflater = GzipEncoder(self.config.gzip_level)
        self._inflater = GzipDecoder(self.config.limits.max_delivery)
        self._decoder = Decoder(self.config.limits)
        if extra:
            self._inflater.receive_data(self._last_fed[len(self._last_fed) - extra:])
        self._last_fed = b""

    def _begin_key_exchange(self) -> None:
        grant = self.grant
        assert grant is not None
        if grant.kind is GrantKind.CODE_HOLDER:
            self.phase = Phase.AWAIT_KEYS
        elif grant.kind is GrantKind.CODE_CREATOR:
            assert grant.code_table is not None and grant.share is not None
            assert grant.access_level is not None
            if not grant.code_table.claim(grant.id_hex, self, self._now):
                raise CoreError("the access code was used, cancelled or expired meanwhile")
            self._claimed = True
            self._send_unit(encode(CoreKeys(grant.access_level,
                                            grant.share.grant(grant.access_level))))
            self.phase = Phase.AWAIT_ACK
        else:
            assert grant.access_level is not None and grant.share is not None
            self._go_ready(grant.access_level, grant.share)

    def _on_keys(self, keys: CoreKeys) -> None:
        assert self.grant is not None
        self._pending_keys = keys.share
        self._pending_level = keys.access_level
        self.phase = Phase.AWAIT_LOCAL_ACK
        self._events.append(KeysReceived(keys.access_level, keys.share, self.grant))

    def _on_keys_acknowledgment(self, ack: CoreKeysAcknowledgment) -> None:
        grant = self.grant
        assert grant is not None and grant.code_table is not None
        assert grant.access_level is not None and grant.share is not None
        issued = grant.code_table.spend(grant.id_hex, self)
        self._claimed = False
        self._events.append(KeysAcknowledged(grant.id_hex, grant.access_level, issued))
        self._go_ready(grant.access_level, grant.share)

    def _go_ready(self, access_level: str, share: ShareKeys) -> None:
        assert self.grant is not None and self.protocol is not None
        assert self.peer_id is not None
        self.phase = Phase.READY
        self.access_level = access_level
        self.share = share
        self._exchange_deadline = None
        self._events.append(Ready(self.protocol, self.extensions, self.peer_id, self.peer_name,
                                  self.peer_software, access_level, share, self.grant))
        self._send_ping(self._now)

    def _on_ping(self, ping: CorePing) -> None:
        adopted = min(float(ping.timeout), self.config.max_ping_timeout)
        if adopted > self.timeout:
            self.timeout = adopted
            self._next_ping = self._last_ping_at + self._ping_ratio * self.timeout

    def _send_ping(self, now: float) -> None:
        self._send_unit(encode(CorePing(self.timeout)))
        self._last_ping_at = now
        self._next_ping = now + self._ping_ratio * self.timeout

    # ---------------------------------------------------------------- helpers

    def _check_can_send(self) -> None:
        if not self.ready:
            raise CoreStateError(f"cannot send application messages now ({self.phase.value}"
                                 + (", closed locally" if self._local_closed else "") + ")")

    def _send_unit(self, *parts: bytes) -> None:
        """One message, chunk or payload end: a gzip frame of its own once compressed."""
        if self._deflater is not None:
            self._session.send_plaintext(self._deflater.encode(*parts))
        else:
            self._session.send_plaintext(*parts)

    def _release_claim(self) -> None:
        if self._claimed and self.grant is not None and self.grant.code_table is not None:
            self.grant.code_table.release(self.grant.id_hex, self)
            self._claimed = False

    def _fail(self, exc: CsembedError) -> None:
        self._fail_with(SessionFailed(str(exc), exc))

    def _fail_with(self, event: SessionFailed) -> None:
        if self.phase in _TERMINAL:
            return
        self.phase = Phase.FAILED
        self._release_claim()
        self._events.append(event)
