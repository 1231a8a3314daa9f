"""Shared helpers for the session and core tests (no tests of its own).

``FakeClock`` and ``DeterministicRng`` are the injected clock and RNG;
``pump`` connects two sans-I/O endpoints in memory, moving bytes both ways
until neither has anything more to say, and returns each side's events.
``World`` is a code creator with one share; ``RawPeer`` is a client that
sends hand-made wire messages, for what csembed itself would never send.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import nacl.bindings as sodium

from csembed.access_code import AccessCode, Credentials
from csembed.protocol.core import CoreConfig, KeysReceived, PeerConnection
from csembed.protocol.core_access import CredentialRegistry, Grant
from csembed.protocol.wire import NEED_DATA, encode_message
from csembed.security.handshake import SecureSession
from csembed.security.keys import READ_ONLY, ShareKeys, new_peer_id


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class DeterministicRng:
    """A reproducible byte stream (BLAKE2b in counter mode) standing in for the OS CSPRNG."""

    def __init__(self, seed: bytes | str) -> None:
        self.seed = seed.encode() if isinstance(seed, str) else seed
        self.counter = 0
        self.drawn: list[bytes] = []

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += sodium.crypto_generichash_blake2b_salt_personal(
                self.counter.to_bytes(8, "little"), digest_size=64, key=self.seed)
            self.counter += 1
        self.drawn.append(out[:n])
        return out[:n]


class Endpoint(Protocol):
    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> None: ...
    def next_event(self) -> Any: ...
    def data_to_send(self) -> bytes | bytearray: ...


@dataclass
class Wire:
    """Bytes that went each way, for tests that inspect or tamper with them."""

    a_to_b: list[bytes | bytearray] = field(default_factory=list)
    b_to_a: list[bytes | bytearray] = field(default_factory=list)


def drain(endpoint: Endpoint, auto_ack: bool = True) -> list[Any]:
    """Every event ``endpoint`` has now; acknowledges received keys if ``auto_ack``."""
    events = []
    while (event := endpoint.next_event()) is not NEED_DATA:
        events.append(event)
        if auto_ack and isinstance(event, KeysReceived) and isinstance(endpoint, PeerConnection):
            endpoint.acknowledge_keys()
    return events


def _move(src: Endpoint, dst: Endpoint, log: list[bytes | bytearray] | None) -> bool:
    data = src.data_to_send()
    if not data:
        return False
    if log is not None:
        log.append(data)
    dst.receive_data(data, now_of(dst))
    return True


def now_of(endpoint: object) -> float:
    """The time of the fake clock ``endpoint`` runs on (see :func:`on_clock`)."""
    return getattr(endpoint, "fake_clock", FakeClock()).now


def on_clock(endpoint: Any, clock: FakeClock) -> Any:
    """Mark ``endpoint`` as running on ``clock``: :func:`pump` feeds it that time."""
    endpoint.fake_clock = clock
    return endpoint


def pump(a: Endpoint, b: Endpoint, wire: Wire | None = None, auto_ack: bool = True,
         rounds: int = 1000) -> tuple[list[Any], list[Any]]:
    """Run ``a`` and ``b`` against each other in memory until both are quiet."""
    events_a: list[Any] = []
    events_b: list[Any] = []
    for _ in range(rounds):
        events_a += drain(a, auto_ack)
        events_b += drain(b, auto_ack)
        moved_ab = _move(a, b, wire.a_to_b if wire else None)
        moved_ba = _move(b, a, wire.b_to_a if wire else None)
        if not (moved_ab or moved_ba):
            return events_a, events_b
    raise AssertionError(f"endpoints still talking after {rounds} rounds")


def of_type(events: list[Any], kind: type) -> list[Any]:
    """The events of one type, in order."""
    return [e for e in events if isinstance(e, kind)]


class World:
    """A code creator (the server side) with one share, and a fake clock."""

    def __init__(self, seed: str = "world", config: CoreConfig | None = None) -> None:
        self.rng = DeterministicRng(seed)
        self.clock = FakeClock()
        self.config = config or CoreConfig(gzip_level=6)
        self.share = ShareKeys.generate(self.rng)
        self.creator_peer = new_peer_id(self.rng)
        self.joiner_peer = new_peer_id(self.rng)
        self.registry = CredentialRegistry()
        self.registry.add_share(self.share, self.creator_peer, tag="share-A")

    def issue(self, level: str = READ_ONLY, **terms: Any) -> AccessCode:
        code = AccessCode.generate(self.rng)
        self.registry.codes.issue(code, self.share, level, self.creator_peer,
                                  now=self.clock.now, **terms)
        return code

    def server(self, config: CoreConfig | None = None) -> PeerConnection:
        return on_clock(PeerConnection.server(self.registry, config or self.config,
                                              now=self.clock.now, rng=self.rng), self.clock)

    def client(self, grant: Grant, config: CoreConfig | None = None) -> PeerConnection:
        return on_clock(PeerConnection.client(grant, config or self.config,
                                              now=self.clock.now, rng=self.rng), self.clock)

    def join(self, code: AccessCode | Credentials) -> tuple[list[Any], list[Any]]:
        client = self.client(Grant.code_holder(code, self.joiner_peer))
        server = self.server()
        return pump(client, server)


class RawPeer:
    """A secure session sending raw wire messages, to send what csembed would not."""

    def __init__(self, world: World, grant: Grant) -> None:
        self.fake_clock = world.clock
        self.session = SecureSession.client(grant.id_hex, grant.password, now=world.clock.now,
                                            rng=world.rng)

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> None:
        self.session.receive_data(data, now)

    def data_to_send(self) -> bytes | bytearray:
        return self.session.data_to_send()

    def next_event(self) -> Any:
        return self.session.next_event()  # what the server says is not needed here

    def send(self, body: dict[str, Any], payload: bytes | None = None) -> None:
        self.session.send_plaintext(encode_message(body, payload=payload is not None))
        if payload is not None:
            self.session.send_plaintext(b"%d\n%s0\n" % (len(payload), payload))


def start_body(peer: str, **extra: Any) -> dict[str, Any]:
    return {"type": "core.start", "protocol": 1, "extensions": [], "peer": peer, **extra}
