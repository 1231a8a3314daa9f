"""The ``clearskies:2`` secure session in memory: success, every failure mode, tampering."""

from __future__ import annotations

from typing import Any

import pytest
from test_core_support import DeterministicRng, FakeClock, drain, now_of, on_clock, pump

from csembed.access_code import AccessCode, Credentials
from csembed.security.errors import (
    AuthenticationFailed,
    HandshakeError,
    RecordError,
    SessionStateError,
)
from csembed.security.handshake import (
    MAGIC,
    Credential,
    HandshakeComplete,
    PlaintextReceived,
    SecureSession,
    SessionClosed,
    SessionConfig,
    SessionFailed,
    State,
)
from csembed.security.records import MAX_PLAINTEXT

ID = "5a" * 32
PASSWORD = b"\x01\x02\x03\x04\x05\x06\x07\x08"


def lookup_for(table: dict[str, Any]) -> Any:
    return lambda id_hex, now: table.get(id_hex)


def make_pair(client_password: bytes = PASSWORD, *, table: dict[str, Any] | None = None,
              id_hex: str = ID, seed: str = "pair", clock: FakeClock | None = None,
              **server_kwargs: Any) -> tuple[SecureSession, SecureSession, FakeClock]:
    clock = clock or FakeClock()
    table = {ID: PASSWORD} if table is None else table
    client = on_clock(SecureSession.client(id_hex, client_password, now=clock.now,
                                           rng=DeterministicRng(seed + " client")), clock)
    server = on_clock(SecureSession.server(lookup_for(table), now=clock.now,
                                           rng=DeterministicRng(seed + " server"),
                                           **server_kwargs), clock)
    return client, server, clock


def plaintexts(events: list[Any]) -> list[bytes]:
    return [e.data for e in events if isinstance(e, PlaintextReceived)]


def failures(events: list[Any]) -> list[SessionFailed]:
    return [e for e in events if isinstance(e, SessionFailed)]


@pytest.mark.parametrize("password", [
    AccessCode.from_bytes(bytes(range(16))).secret,  # an access code's secret half
    bytes(range(32)),  # an access level's key
    Credentials.from_username_password("alice", "correct horse").secret,
], ids=["access-code", "level-key", "username-password"])
def test_handshake_completes_and_carries_data_both_ways(password: bytes) -> None:
    client, server, _ = make_pair(password, table={ID: Credential(password, "ctx")})
    ce, se = pump(client, server)
    assert [type(e) for e in ce] == [HandshakeComplete]
    assert [type(e) for e in se] == [HandshakeComplete]
    assert ce[0].role == "client" and se[0].role == "server"
    assert ce[0].identity == se[0].identity == "clearskies:2:" + ID
    assert ce[0].channel_binding == se[0].channel_binding
    assert se[0].context == "ctx"
    big = bytes(range(256)) * 600  # several records
    client.send_plaintext(b"hello server")
    client.send_plaintext(big)
    server.send_plaintext(b"hello client")
    ce, se = pump(client, server)
    assert b"".join(plaintexts(se)) == b"hello server" + big
    assert plaintexts(ce) == [b"hello client"]
    client.close()
    ce, se = pump(client, server)
    assert se == [SessionClosed()]
    server.close()
    ce, se = pump(client, server)
    assert ce == [SessionClosed()]
    assert client.state is State.CLOSED and server.state is State.CLOSED


def test_first_bytes_are_the_magic_not_tls() -> None:
    client, _, _ = make_pair()
    hello = client.data_to_send()
    assert hello.startswith(MAGIC) and hello[:2] != b"\x16\x03"
    assert hello[4] == len("clearskies:2:" + ID)


def test_tls_client_hello_is_refused_clearly() -> None:
    _, server, _ = make_pair()
    server.receive_data(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", now_of(server))
    (event,) = drain(server)
    assert isinstance(event, SessionFailed)
    assert isinstance(event.error, HandshakeError)
    assert "not a clearskies:2 connection" in event.reason


def _client_view_of_failure(client: SecureSession, server: SecureSession) -> tuple[str, int]:
    hello = client.data_to_send()
    server.receive_data(hello, now_of(server))
    assert drain(server) == []
    answer = server.data_to_send()
    client.receive_data(answer, now_of(client))
    (event,) = drain(client)
    assert isinstance(event, SessionFailed) and isinstance(event.error, AuthenticationFailed)
    assert client.data_to_send() == b""  # the client sends nothing after a bad MAC
    return event.reason, len(answer)


def test_wrong_password_and_unknown_id_look_identical_to_the_client() -> None:
    wrong = _client_view_of_failure(*make_pair(b"wrong pw")[:2])
    unknown = _client_view_of_failure(*make_pair(PASSWORD, table={})[:2])
    refused = _client_view_of_failure(*make_pair(PASSWORD, table={ID: None})[:2])
    assert wrong == unknown == refused
    assert wrong[1] == 64  # S and MAC, as on success


def test_server_fails_when_client_gives_up_after_its_answer() -> None:
    client, server, _ = make_pair(b"wrong pw")
    ce, se = pump(client, server)
    assert failures(ce) and not se  # the server is still waiting for the client's MAC
    server.receive_data(b"", now_of(server))
    (event,) = drain(server)
    assert isinstance(event.error, HandshakeError)
    assert "closed during the handshake" in event.reason


def test_handshake_times_out() -> None:
    client, server, clock = make_pair(config=SessionConfig(handshake_timeout=5))
    server.receive_data(client.data_to_send(), now_of(server))
    drain(server)
    assert server.get_timer() == clock.now + 5
    clock.advance(5)
    server.handle_timer(clock.now)
    (event,) = drain(server)
    assert "timed out after 5 s" in event.reason
    assert server.get_timer() is None and server.state is State.FAILED


def test_client_handshake_deadline() -> None:
    clock = FakeClock(50.0)
    client = SecureSession.client(ID, PASSWORD, now=clock.now, rng=DeterministicRng("c"),
                                  config=SessionConfig(handshake_timeout=7))
    assert client.get_timer() == 57.0
    client.handle_timer(56.9)
    assert drain(client) == []
    client.handle_timer(57.0)
    assert "timed out" in drain(client)[0].reason


def test_sending_before_the_handshake_is_a_local_error() -> None:
    client, server, _ = make_pair()
    with pytest.raises(SessionStateError, match="handshake not complete"):
        client.send_plaintext(b"too early")
    with pytest.raises(SessionStateError, match="64 lowercase hex"):
        SecureSession.client("ABC", PASSWORD, now=FakeClock().now)


def test_invalid_points_are_refused() -> None:
    # identity element and a non-canonical encoding in place of T
    for bad in (bytes([1]) + bytes(31), b"\xff" * 32):
        client, server, _ = make_pair()
        hello = client.data_to_send()
        server.receive_data(hello[:-32] + bad, now_of(server))
        (event,) = drain(server)
        assert isinstance(event.error, HandshakeError)
        assert "not a valid edwards25519 point" in event.reason


def test_bad_identity_is_refused() -> None:
    _, server, _ = make_pair()
    ident = b"clearskies:1:" + ID.encode()
    server.receive_data(MAGIC + bytes([len(ident)]) + ident + bytes(32), now_of(server))
    (event,) = drain(server)
    assert "identity" in event.reason


# --------------------------------------------------------------- tampering


def record_transcript(seed: str) -> tuple[bytes, bytes]:
    """A complete short session: both directions' bytes, each ending with FINAL."""
    client, server, _ = make_pair(seed=seed)
    wire_c: list[bytes | bytearray] = []
    wire_s: list[bytes | bytearray] = []

    def move() -> None:
        for src, dst, log in ((client, server, wire_c), (server, client, wire_s)):
            data = src.data_to_send()
            if data:
                log.append(data)
                dst.receive_data(data, now_of(dst))
            drain(dst)

    for _ in range(3):
        move()
    client.send_plaintext(b"client says hi")
    server.send_plaintext(b"server says hi")
    client.close()
    server.close()
    move()
    move()
    assert client.state is State.CLOSED and server.state is State.CLOSED
    return b"".join(wire_c), b"".join(wire_s)


def replay(receiver: str, stream: bytes | bytearray, seed: str) -> list[Any]:
    """Feed ``stream`` (all of it, then EOF) to a fresh endpoint in the same seeded
    state as the original one; return its events."""
    client, server, _ = make_pair(seed=seed)
    if receiver == "server":
        endpoint = server
    else:
        endpoint = client
        client.data_to_send()
    events: list[Any] = []
    endpoint.receive_data(stream, now_of(endpoint))
    events += drain(endpoint)
    if endpoint.state not in (State.FAILED, State.CLOSED):
        endpoint.receive_data(b"", now_of(endpoint))
        events += drain(endpoint)
    return events


@pytest.mark.parametrize("direction", ["client_to_server", "server_to_client"])
def test_untampered_replay_reproduces_the_session(direction: str) -> None:
    c2s, s2c = record_transcript("tamper")
    receiver, stream, expected = (("server", c2s, b"client says hi") if direction ==
                                  "client_to_server" else ("client", s2c, b"server says hi"))
    events = replay(receiver, stream, "tamper")
    assert plaintexts(events) == [expected]
    assert isinstance(events[-1], SessionClosed) and not failures(events)


@pytest.mark.parametrize("direction", ["client_to_server", "server_to_client"])
def test_flipping_any_bit_of_any_byte_ends_the_session(direction: str) -> None:
    c2s, s2c = record_transcript("tamper")
    receiver, stream, expected = (("server", c2s, b"client says hi") if direction ==
                                  "client_to_server" else ("client", s2c, b"server says hi"))
    for position in range(len(stream)):
        for mask in (0x01, 0x80):
            tampered = bytearray(stream)
            tampered[position] ^= mask
            events = replay(receiver, bytes(tampered), "tamper")
            assert failures(events), (position, mask)
            assert not any(isinstance(e, SessionClosed) for e in events), (position, mask)
            # whatever was delivered is authentic: the data record arrives intact or not at all
            assert plaintexts(events) in ([], [expected]), (position, mask)
            if plaintexts(events):  # only possible when the flip is after the data record
                assert position >= len(stream) - 19, (position, mask)  # the FINAL record


def _split_records(rest: bytes | bytearray) -> list[bytes | bytearray]:
    records = []
    while rest:
        n = 2 + int.from_bytes(rest[:2], "big")
        records.append(rest[:n])
        rest = rest[n:]
    return records


def test_replayed_dropped_reordered_and_truncated_records_fail() -> None:
    client, server, _ = make_pair(seed="records")
    wire_hello = client.data_to_send()
    server.receive_data(wire_hello, now_of(server))
    drain(server)
    client.receive_data(server.data_to_send(), now_of(client))
    drain(client)
    finish = client.data_to_send()
    for text in (b"one", b"two", b"three"):
        client.send_plaintext(text)
    client.close()
    records_blob = client.data_to_send()
    records = _split_records(records_blob)
    assert len(records) == 4
    prefix = wire_hello + finish
    cases = {
        "replayed": [records[0], records[0], records[1], records[2], records[3]],
        "dropped": [records[0], records[2], records[3]],
        "reordered": [records[1], records[0], records[2], records[3]],
        "truncated": [records[0], records[1], records[2]],
        "data after close": [*records, records[3]],
    }
    for name, sequence in cases.items():
        events = replay("server", prefix + b"".join(sequence), "records")
        assert failures(events), name
        # only "data after close" may see the authentic close before the junk after it
        closed = any(isinstance(e, SessionClosed) for e in events)
        assert closed == (name == "data after close"), name
        got = plaintexts(events)
        assert got == [b"one", b"two", b"three"][:len(got)], name
        reason = failures(events)[0].reason
        if name == "truncated":
            assert "truncated" in reason
        elif name == "data after close":
            assert "after the peer's close" in reason
        else:
            assert "failed authentication" in reason
        assert isinstance(failures(events)[0].error, RecordError)


def test_short_record_length_is_refused() -> None:
    client, server, _ = make_pair()
    pump(client, server)
    server.receive_data(b"\x00\x05hello", now_of(server))
    (event,) = drain(server)
    assert "shorter than the 17-byte authentication overhead" in event.reason


def test_records_are_split_at_the_maximum() -> None:
    client, server, _ = make_pair()
    pump(client, server)
    client.send_plaintext(b"x" * (MAX_PLAINTEXT + 1))
    server.receive_data(client.data_to_send(), now_of(server))
    assert [len(p) for p in plaintexts(drain(server))] == [MAX_PLAINTEXT, 1]


def test_nothing_happens_after_failure() -> None:
    client, server, _ = make_pair(b"bad")
    pump(client, server)
    assert client.state is State.FAILED
    client.receive_data(b"more bytes", now_of(client))
    assert drain(client) == [] and client.data_to_send() == b""
    with pytest.raises(SessionStateError):
        client.send_plaintext(b"x")


def _batching_pair(max_batch: int) -> tuple[SecureSession, SecureSession]:
    clock = FakeClock()
    config = SessionConfig(max_batch=max_batch)
    client = on_clock(SecureSession.client(ID, PASSWORD, now=clock.now, config=config,
                                           rng=DeterministicRng("batch client")), clock)
    server = on_clock(SecureSession.server(lookup_for({ID: PASSWORD}), now=clock.now,
                                           config=config, rng=DeterministicRng("batch server")),
                      clock)
    pump(client, server)
    return client, server


def test_records_already_received_come_out_together_up_to_max_batch() -> None:
    client, server = _batching_pair(3 * MAX_PLAINTEXT)
    data = bytes(range(256)) * (7 * MAX_PLAINTEXT // 256 + 1)  # 8 records
    client.send_plaintext(data)
    server.receive_data(client.data_to_send(), now_of(server))
    got = plaintexts(drain(server))
    assert [len(p) for p in got] == [3 * MAX_PLAINTEXT, 3 * MAX_PLAINTEXT,
                                     len(data) - 6 * MAX_PLAINTEXT]
    assert b"".join(got) == data
    # only what has arrived: half a record more waits for the rest
    client.send_plaintext(b"a" * 10, b"b" * MAX_PLAINTEXT)
    wire = client.data_to_send()
    server.receive_data(wire[:-5], now_of(server))  # the second record is 29 bytes
    assert plaintexts(drain(server)) == [b"a" * 10 + b"b" * (MAX_PLAINTEXT - 10)]
    server.receive_data(wire[-5:], now_of(server))
    assert plaintexts(drain(server)) == [b"b" * 10]


def test_a_bad_record_in_a_batch_fails_after_the_good_ones_are_out() -> None:
    client, server = _batching_pair(4 * MAX_PLAINTEXT)
    for text in (b"one", b"two", b"three"):
        client.send_plaintext(text)
    records = _split_records(client.data_to_send())
    bad = bytearray(records[2])
    bad[-1] ^= 1
    server.receive_data(records[0] + records[1] + bad, now_of(server))
    events = drain(server)
    assert plaintexts(events) == [b"onetwo"]
    assert isinstance(events[-1], SessionFailed) and "record 3 failed" in events[-1].reason
    # and the close record ends a batch, as it ends the stream
    client, server = _batching_pair(4 * MAX_PLAINTEXT)
    client.send_plaintext(b"last words")
    client.close()
    server.receive_data(client.data_to_send(), now_of(server))
    assert drain(server) == [PlaintextReceived(b"last words"), SessionClosed()]
