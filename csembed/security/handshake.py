"""The ``clearskies:2`` secure session (sans-I/O): handshake, then records.

Theory of operation. Bytes in with :meth:`SecureSession.receive_data` (``b""``
means end of stream), events out with :meth:`~SecureSession.next_event`,
bytes to write with :meth:`~SecureSession.data_to_send`; time comes in as
``now`` (monotonic seconds) with the bytes, at construction and in
:meth:`~SecureSession.handle_timer` -- the session never reads a clock --
and randomness from the injected ``rng``. Work happens lazily in
``next_event`` -- one handshake message or one record per step -- so a
caller that reads the socket only when ``next_event`` says :data:`NEED_DATA`
gets back-pressure for free; that work is dated by the latest ``now`` given
(when the bytes it works on arrived). With ``SessionConfig.max_batch`` a
step goes on opening records that are already in the buffer and hands their
plaintext out as one event of up to that many bytes (decrypted side by side
into one buffer, so no extra copy): a bulk receiver then pays the layers
above once per batch instead of once per 64 KiB record.

The connection, byte for byte (``protocol/handshake.md`` has the full text
and test vectors; ``||`` is concatenation)::

    client -> server  ClientHello   "CS2\\n" || u8 len || identity || T (32)
    server -> client  ServerHello   S (32) || server MAC (32)
    client -> server  ClientFinish  client MAC (32) || client stream header (24)
    server -> client                server stream header (24)
    both ways         records       u16 length || secretstream ciphertext ...

``identity`` is ``clearskies:2:<64 hex digits>`` naming an access ID or key ID.
The magic ``CS2\\n`` (0x43 0x53 0x32 0x0a) can never start a TLS ClientHello
(0x16 0x03), so one listening port can later serve TLS-SRP too. The server
looks the ID up with ``lookup(id_hex)``; for an unknown ID (or one the lookup
refuses: expired, spent) it runs SPAKE2 with a random password, so the
client sees exactly what a wrong password shows: a MAC that does not match.
The client checks the server's MAC before sending anything under the new
keys; the server checks the client's MAC before sending its stream header,
and no plaintext flows either way before the sender has verified its peer.

Table of inbound stages (:data:`_INBOUND`): what the parser expects next, how
many bytes it needs and which stage follows. Failures of any kind move the
session to ``FAILED`` with one :class:`SessionFailed` event; after that every
input is ignored and nothing more is sent.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from csembed.errors import CsembedError
from csembed.hex_ids import ID_DIGITS, is_lower_hex
from csembed.need_data import NEED_DATA, NeedData
from csembed.security import sodium
from csembed.security.errors import (
    AuthenticationFailed,
    HandshakeError,
    RecordError,
    SecurityError,
    SessionStateError,
)
from csembed.security.keys import Rng, default_rng
from csembed.security.rate_limit import RateLimiter
from csembed.security.records import (
    HEADER_BYTES,
    LENGTH_BYTES,
    MAX_PLAINTEXT,
    RecordReader,
    RecordWriter,
)
from csembed.security.spake2 import MAC_BYTES, POINT_BYTES, SessionKeys, Spake2

MAGIC: Final = b"CS2\n"
IDENTITY_PREFIX: Final = "clearskies:2:"
CLIENT_HELLO_FIXED: Final = len(MAGIC) + 1
SERVER_HELLO_BYTES: Final = POINT_BYTES + MAC_BYTES
CLIENT_FINISH_BYTES: Final = MAC_BYTES + HEADER_BYTES
DUMMY_PASSWORD_BYTES: Final = 32

def identity_for(id_hex: str) -> str:
    """``clearskies:2:<id_hex>``, checking ``id_hex`` is 64 lowercase hex digits."""
    if not is_lower_hex(id_hex, ID_DIGITS):
        raise SessionStateError(f"an access ID or key ID is 64 lowercase hex digits, "
                                f"got {id_hex!r:.80}")
    return IDENTITY_PREFIX + id_hex


@dataclass(frozen=True, repr=False)
class Credential:
    """The secret for one ID and whatever the caller wants back on success.

    ``password``: an access code's 8-byte secret, an access level's 256-bit
    key, or a username/password pair's password bytes. ``context`` is opaque
    here and returned in :class:`HandshakeComplete` (the core layer keeps its
    grant there).
    """

    password: bytes
    context: object = None

    def __post_init__(self) -> None:
        if not isinstance(self.password, bytes) or not self.password:
            raise SessionStateError("a credential's password must be non-empty bytes")

    def __repr__(self) -> str:
        return f"Credential(password=<{len(self.password)} bytes>, context={self.context!r})"


Lookup = Callable[[str, float], "Credential | bytes | None"]
"""``lookup(id_hex, now)``: the server's credential for an ID, or ``None``."""


@dataclass(frozen=True)
class SessionConfig:
    """Tunables of a secure session (and of a listener's unauthenticated ones)."""

    handshake_timeout: float = 30.0
    """Seconds the handshake may take (excluding a rate-limit hold on the server)."""
    hold_limit: float = 10.0
    """Server: longest a client hello is held by the rate limiter. When the limiter
    asks for more, or the hold runs out, the connection is closed unanswered
    (the client retries later), so a held hello never pins memory for long."""
    max_pending: int = 64
    """Listener: connections at most that have not authenticated yet (see
    :func:`csembed.runtime.session_stream.serve`); the board's
    ``memory.max_handshakes``."""
    max_batch: int = 0
    """Most plaintext bytes one :class:`PlaintextReceived` gathers from records
    already received (0: one record per event); the board's ``memory.io_buffer``."""

    def __post_init__(self) -> None:
        if not self.handshake_timeout > 0:
            raise ValueError("handshake_timeout must be positive")
        if not self.hold_limit >= 0:
            raise ValueError("hold_limit must not be negative")
        if isinstance(self.max_pending, bool) or not isinstance(self.max_pending, int) \
                or self.max_pending < 1:
            raise ValueError("max_pending must be a positive whole number")
        if isinstance(self.max_batch, bool) or not isinstance(self.max_batch, int) \
                or self.max_batch < 0:
            raise ValueError("max_batch must be a whole number, 0 or more")


@dataclass(frozen=True)
class HandshakeComplete:
    """Both sides proved they hold the same secret; records may flow."""

    role: str
    identity: str
    id_hex: str
    channel_binding: bytes = field(repr=False)
    context: object = None


@dataclass(frozen=True)
class PlaintextReceived:
    """Authenticated plaintext of one record (or of several in a row, up to
    ``SessionConfig.max_batch`` bytes), in order."""

    data: bytes


@dataclass(frozen=True)
class SessionClosed:
    """The peer closed its direction cleanly (a FINAL record)."""


@dataclass(frozen=True)
class SessionFailed:
    """The session ended with an error; nothing more is delivered or sent."""

    reason: str
    error: CsembedError = field(compare=False, repr=False)

    def __post_init__(self) -> None:
        # The event outlives the call that failed (it is queued, then returned to
        # the adapter); a traceback would keep that call's frames, the adapter's
        # among them, and so the whole connection alive until a full gc pass.
        error: BaseException | None = self.error
        for _ in range(8):  # the error, its causes; a bounded walk
            if error is None:
                break
            error.__traceback__ = None
            error = error.__cause__ or error.__context__


SessionEvent = HandshakeComplete | PlaintextReceived | SessionClosed | SessionFailed


class State(enum.Enum):
    """Overall session state."""

    HANDSHAKE = "handshake"
    HOLDING = "holding"  # server: hello received, answer held back by the rate limiter
    OPEN = "open"
    CLOSED = "closed"
    FAILED = "failed"


class _Stage(enum.Enum):
    CLIENT_HELLO = "client hello"
    SERVER_HELLO = "server hello"
    CLIENT_FINISH = "client finish"
    STREAM_HEADER = "server stream header"
    RECORDS = "records"
    DONE = "nothing (peer closed)"


# handshake stage -> (handler method name, stage that follows); sizes come from _need().
_INBOUND: Final = {
    _Stage.CLIENT_HELLO: ("_on_client_hello", _Stage.CLIENT_FINISH),
    _Stage.SERVER_HELLO: ("_on_server_hello", _Stage.STREAM_HEADER),
    _Stage.CLIENT_FINISH: ("_on_client_finish", _Stage.RECORDS),
    _Stage.STREAM_HEADER: ("_on_stream_header", _Stage.RECORDS),
}  # RECORDS repeats until the FINAL record; _on_record opens each in place


class SecureSession:
    """One ``clearskies:2`` connection; build with :meth:`client` or :meth:`server`."""

    def __init__(self, role: str, *, now: float, rng: Rng, config: SessionConfig) -> None:
        self.role = role
        self.config = config
        self._now = now  # the latest time the caller gave
        self._rng = rng
        self.state = State.HANDSHAKE
        self._stage = _Stage.CLIENT_HELLO if role == "server" else _Stage.SERVER_HELLO
        # Received bytes live in _inbox[_used:_end]. The buffer is reused and never
        # shrunk (it stays at one read plus one record), so a bulk transfer does not
        # reallocate, and page-fault, on every read.
        self._inbox = bytearray()
        self._used = 0
        self._end = 0
        self._eof = False
        self._outbox: list[bytes | bytearray] = []
        self._events: deque[SessionEvent] = deque()
        self._deadline: float | None = now + config.handshake_timeout
        self._release_at: float | None = None
        self._hold_until: float | None = None  # server: when a held hello is given up
        self._spake: Spake2 | None = None
        self._keys: SessionKeys | None = None
        self._reader: RecordReader | None = None
        self._writer: RecordWriter | None = None
        self.identity: str | None = None
        self.id_hex: str | None = None
        self._credential: Credential | None = None
        self._real_credential = False
        # server only
        self._lookup: Lookup | None = None
        self._limiter: RateLimiter | None = None
        self._source = ""

    # ----------------------------------------------------------- construction

    @classmethod
    def client(cls, id_hex: str, credential: Credential | bytes, *, now: float,
               rng: Rng = default_rng, config: SessionConfig = SessionConfig()) -> SecureSession:
        """Client side asking for ``id_hex`` at ``now``; the ClientHello is queued at once."""
        self = cls("client", now=now, rng=rng, config=config)
        self.identity = identity_for(id_hex)
        self.id_hex = id_hex
        self._credential = credential if isinstance(credential, Credential) \
            else Credential(credential)
        self._real_credential = True
        self._spake = Spake2("client", self.identity.encode(), self._credential.password, rng)
        identity = self.identity.encode()
        self._outbox.append(MAGIC + bytes([len(identity)]) + identity + self._spake.message)
        return self

    @classmethod
    def server(cls, lookup: Lookup, *, now: float, rng: Rng = default_rng,
               config: SessionConfig = SessionConfig(), limiter: RateLimiter | None = None,
               source: str = "") -> SecureSession:
        """Server side, accepted at ``now``. ``lookup(id_hex, now)`` returns the ID's
        credential (or bare password bytes) or ``None``; ``limiter`` throttles
        failures from ``source``."""
        self = cls("server", now=now, rng=rng, config=config)
        self._lookup = lookup
        self._limiter = limiter
        self._source = source
        return self

    # ------------------------------------------------------------- public API

    @property
    def handshake_complete(self) -> bool:
        """True once this side verified the peer's confirmation MAC."""
        return self._writer is not None

    @property
    def can_send(self) -> bool:
        """True while :meth:`send_plaintext` is allowed."""
        return self.state is State.OPEN and self._writer is not None \
            and not self._writer.finished

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> None:
        """Bytes from the peer, arrived at ``now``; ``b""`` signals end of stream."""
        if self.state in (State.FAILED, State.CLOSED):
            return
        self._now = now
        if self._eof:
            if data:
                raise SessionStateError("receive_data called with data after end of stream")
            return
        if data:
            self._store(data)
        else:
            self._eof = True

    def get_buffer(self, size: int) -> memoryview:
        """Zero-copy receiving (for ``asyncio.BufferedProtocol``): a writable view of
        ``size`` free bytes of the input buffer; report what was written into it with
        :meth:`buffer_updated` and drop the view before calling anything else."""
        if self.state in (State.FAILED, State.CLOSED) or self._eof:
            return memoryview(bytearray(size))  # received into and then ignored
        self._reserve(size)
        return memoryview(self._inbox)[self._end:self._end + size]

    def buffer_updated(self, nbytes: int, now: float) -> None:
        """``nbytes`` were written at the start of the last :meth:`get_buffer` view
        at ``now``."""
        if self.state not in (State.FAILED, State.CLOSED) and not self._eof:
            self._now = now
            self._end += nbytes

    def next_event(self) -> SessionEvent | NeedData:
        """The next event, or :data:`NEED_DATA` when more input (or time) is needed."""
        while not self._events:
            if self.state in (State.FAILED, State.CLOSED) or not self._step():
                return NEED_DATA
        return self._events.popleft()

    def data_to_send(self) -> bytes | bytearray:
        """Everything queued for the peer since the last call (a fresh object,
        never touched again by the session)."""
        outbox = self._outbox
        out = outbox[0] if len(outbox) == 1 else b"".join(outbox)
        outbox.clear()
        return out

    def send_plaintext(self, *parts: bytes | bytearray | memoryview) -> None:
        """Seal the concatenation of ``parts`` into records (split at 65518
        bytes) for the peer; passing pieces saves joining them first."""
        if not self.can_send:
            raise SessionStateError(f"cannot send in state {self.state.value}"
                                    + ("" if self.handshake_complete else
                                       " (handshake not complete)"))
        if any(len(p) for p in parts):
            assert self._writer is not None
            self._outbox.append(self._writer.seal(*parts))

    def close(self) -> None:
        """Close our direction with a FINAL record (or just stop, mid-handshake)."""
        if self.state in (State.FAILED, State.CLOSED):
            return
        if self._writer is not None and not self._writer.finished:
            self._outbox.append(self._writer.seal(final=True))
        if self._writer is None or self._reader is None or self._reader.finished:
            self.state = State.CLOSED

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called, or ``None``."""
        if self.state is State.HOLDING:
            return self._release_at if self._release_at is not None else self._hold_until
        return self._deadline if self._handshake_pending() else None

    def _handshake_pending(self) -> bool:
        # until the peer's stream header arrived (the client may already send before)
        return self.state in (State.HANDSHAKE, State.OPEN) and self._reader is None

    def handle_timer(self, now: float) -> None:
        """Act on time passing: release a held answer, or time the handshake out."""
        self._now = now
        if self.state is State.HOLDING:
            if self._release_at is not None and now >= self._release_at:
                self._try_answer(now)
        elif self._handshake_pending() and self._deadline is not None \
                and now >= self._deadline:
            self._fail(HandshakeError(
                f"handshake timed out after {self.config.handshake_timeout:g} s"))

    # -------------------------------------------------------------- internals

    def _reserve(self, size: int) -> None:
        """Make room for ``size`` more bytes after ``_end``."""
        inbox, used, end = self._inbox, self._used, self._end
        if end + size > len(inbox):
            inbox[:end - used] = inbox[used:end]  # same-size slice: a move, no realloc
            self._end = end = end - used
            self._used = 0
            if end + size > len(inbox):
                inbox.extend(bytes(end + size - len(inbox)))

    def _store(self, data: bytes | bytearray | memoryview) -> None:
        size = len(data)
        self._reserve(size)
        self._inbox[self._end:self._end + size] = data
        self._end += size

    def _need(self, start: int, available: int) -> int | None:
        """Bytes the current stage needs, or None if not yet known."""
        if self._stage is _Stage.CLIENT_HELLO:
            if available < CLIENT_HELLO_FIXED:
                return None
            return CLIENT_HELLO_FIXED + self._inbox[start + len(MAGIC)] + POINT_BYTES
        if self._stage is _Stage.SERVER_HELLO:
            return SERVER_HELLO_BYTES
        if self._stage is _Stage.CLIENT_FINISH:
            return CLIENT_FINISH_BYTES
        if self._stage is _Stage.STREAM_HEADER:
            return HEADER_BYTES
        if available < LENGTH_BYTES:
            return None
        return LENGTH_BYTES + RecordReader.frame_length(self._inbox[start:start + LENGTH_BYTES])

    def _step(self) -> bool:
        """Consume one inbound unit; False when nothing can be done yet."""
        start = self._used
        available = self._end - start
        try:
            if self.state is State.HOLDING or (self._stage is _Stage.CLIENT_FINISH
                                               and self._keys is None):
                # Until our answer went out, the client has nothing valid to send:
                # refuse extra bytes rather than buffer them unauthenticated.
                if available:
                    raise HandshakeError("client sent data before the server hello")
                return self._check_eof()
            if self._stage is _Stage.CLIENT_HELLO:
                head = bytes(self._inbox[start:start + min(available, len(MAGIC))])
                if head != MAGIC[:len(head)]:
                    raise HandshakeError(f"not a clearskies:2 connection: first bytes "
                                         f"{head!r}, expected {MAGIC!r}")
            if self._stage is _Stage.DONE:
                if available:
                    raise RecordError("data after the peer's close (FINAL) record")
                return False
            need = self._need(start, available)
            if need is None or available < need:
                return self._check_eof()
            if self._stage is _Stage.RECORDS:
                self._open_records(start, need)
            else:
                handler, self._stage = _INBOUND[self._stage]
                getattr(self, handler)(bytes(self._inbox[start:start + need]))
                self._used += need
        except SecurityError as exc:
            self._fail(exc)
        return True

    def _check_eof(self) -> bool:
        if not self._eof:
            return False
        if not self.handshake_complete or self._stage is not _Stage.RECORDS:
            raise HandshakeError(f"connection closed during the handshake "
                                 f"(waiting for the {self._stage.value})")
        raise RecordError("connection ended without a close record: the stream was truncated")

    def _fail(self, exc: SecurityError) -> None:
        self.state = State.FAILED
        self._inbox = bytearray()
        self._used = self._end = 0
        self._outbox.clear()
        self._spake = None
        self._events.append(SessionFailed(str(exc), exc))

    def _on_client_hello(self, unit: bytes) -> None:
        raw_identity = unit[CLIENT_HELLO_FIXED:-POINT_BYTES]
        try:
            identity = raw_identity.decode("ascii")
        except UnicodeDecodeError:
            identity = ""
        if not identity.startswith(IDENTITY_PREFIX) or \
                not is_lower_hex(identity[len(IDENTITY_PREFIX):], ID_DIGITS):
            raise HandshakeError(f"client hello: identity {raw_identity[:80]!r} is not "
                                 f"'{IDENTITY_PREFIX}' followed by 64 lowercase hex digits")
        self.identity = identity
        self.id_hex = identity[len(IDENTITY_PREFIX):]
        self._client_point = unit[-POINT_BYTES:]
        self.state = State.HOLDING
        self._deadline = None
        now = self._now
        self._hold_until = now + self.config.hold_limit
        self._try_answer(now)

    def _try_answer(self, now: float) -> None:
        """Server: answer the client hello unless the rate limiter says wait."""
        assert self.id_hex is not None and self.identity is not None
        if self._limiter is not None:
            wait = self._limiter.check(self._source, self.id_hex, now)
            if wait > 0:
                assert self._hold_until is not None
                if now + wait > self._hold_until:
                    self._fail(HandshakeError(
                        f"rate limited: attempts on this ID from {self._source or 'here'} "
                        f"must wait {wait:.0f} s; closed unanswered"))
                    return
                self._release_at = now + wait
                return
            self._limiter.record_failure(self._source, self.id_hex, now)
        self._release_at = None
        self.state = State.HANDSHAKE
        self._deadline = now + self.config.handshake_timeout
        assert self._lookup is not None
        found = self._lookup(self.id_hex, now)
        if isinstance(found, bytes):
            found = Credential(found)
        self._real_credential = found is not None
        self._credential = found or Credential(self._rng(DUMMY_PASSWORD_BYTES))
        try:
            spake = Spake2("server", self.identity.encode(), self._credential.password,
                           self._rng)
            self._keys = spake.finish(self._client_point)
        except SecurityError as exc:
            self._fail(exc)
            return
        self._outbox.append(spake.message + self._keys.server_mac)

    def _on_server_hello(self, unit: bytes) -> None:
        assert self._spake is not None and self.identity is not None
        keys = self._spake.finish(unit[:POINT_BYTES])
        self._spake = None
        if not sodium.memory_equal(unit[POINT_BYTES:], keys.server_mac):
            raise AuthenticationFailed()
        self._keys = keys
        self._writer = RecordWriter(keys.client_to_server_key)
        self._outbox.append(keys.client_mac + self._writer.header)
        self._complete()

    def _on_client_finish(self, unit: bytes) -> None:
        keys = self._keys
        assert keys is not None and self.id_hex is not None
        if not sodium.memory_equal(unit[:MAC_BYTES], keys.client_mac) \
                or not self._real_credential:
            raise AuthenticationFailed()
        if self._limiter is not None:
            self._limiter.record_success(self._source, self.id_hex, self._now)
        self._reader = RecordReader(keys.client_to_server_key, unit[MAC_BYTES:],
                                    self.config.max_batch)
        self._writer = RecordWriter(keys.server_to_client_key)
        self._outbox.append(self._writer.header)
        self._complete()
        self._keys = None  # both streams keyed: the derived secrets are no longer needed

    def _complete(self) -> None:
        assert self._keys is not None and self.identity is not None and self.id_hex is not None
        assert self._credential is not None
        self.state = State.OPEN
        self._events.append(HandshakeComplete(
            self.role, self.identity, self.id_hex, self._keys.channel_binding,
            self._credential.context))

    def _on_stream_header(self, unit: bytes) -> None:
        assert self._keys is not None
        self._reader = RecordReader(self._keys.server_to_client_key, unit,
                                    self.config.max_batch)
        self._keys = None  # both streams keyed: the derived secrets are no longer needed

    def _open_records(self, start: int, need: int) -> None:
        """Open the complete record at ``start`` (``need`` bytes with its length),
        and the ones after it already here while the plaintext stays within
        ``max_batch``; one :class:`PlaintextReceived` for them all. The
        ciphertext is opened in place, not copied out of the inbox. If a
        record fails, the plaintext before it is handed out first."""
        reader = self._reader
        assert reader is not None
        limit = min(self.config.max_batch, reader.capacity)
        gathered = 0
        final = False
        try:
            while True:
                with memoryview(self._inbox) as view, \
                        view[start + LENGTH_BYTES:start + need] as record:
                    size, final = reader.open_at(record, gathered)
                gathered += size
                self._used = start = start + need
                if final or gathered + MAX_PLAINTEXT > limit:
                    break
                available = self._end - start
                if available < LENGTH_BYTES:
                    break
                need = LENGTH_BYTES + RecordReader.frame_length(
                    self._inbox[start:start + LENGTH_BYTES])
                if available < need:
                    break
        finally:
            if gathered:
                self._events.append(PlaintextReceived(reader.take(gathered)))
        if final:
            self._stage = _Stage.DONE
            self._events.append(SessionClosed())
            if self._writer is not None and self._writer.finished:
                self.state = State.CLOSED
