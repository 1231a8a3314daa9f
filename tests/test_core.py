"""Core protocol in memory: greeting/start, key exchange, one-time and multi-use
codes, loopback, ordering rules, keep-alive, signed messages."""

from __future__ import annotations

import pytest
from test_core_support import RawPeer, World, drain, of_type, on_clock, pump, start_body

from csembed.access_code import AccessCode, Credentials
from csembed.protocol.core import (
    CoreConfig,
    CoreError,
    CoreStateError,
    KeysAcknowledged,
    KeysReceived,
    LoopbackDetected,
    PeerConnection,
    PeerTimedOut,
    Phase,
    Ready,
    SignatureError,
    sign_message,
    verify_message,
)
from csembed.protocol.core_access import (
    DEFAULT_CODE_LIFETIME,
    AccessCodeTable,
    AccessError,
    CredentialRegistry,
    Grant,
    GrantKind,
)
from csembed.protocol.wire import Decoder, Message, PayloadChunk, PayloadEnd, encode_message
from csembed.security.errors import AuthenticationFailed
from csembed.security.handshake import (
    SessionClosed,
    SessionFailed,
)
from csembed.security.keys import READ_ONLY, READ_WRITE, new_peer_id


def test_fresh_code_exchanges_keys_then_is_spent_and_the_key_id_connects() -> None:
    world = World()
    code = world.issue(READ_ONLY)
    joiner, creator = world.join(code)
    assert [type(e) for e in joiner] == [KeysReceived, Ready]
    assert [type(e) for e in creator] == [KeysAcknowledged, Ready]
    received = joiner[1].share
    assert joiner[1].access_level == creator[1].access_level == READ_ONLY
    assert joiner[1].peer_id == world.creator_peer and creator[1].peer_id == world.joiner_peer
    assert creator[0].access_id == code.access_id and creator[0].code.uses == 1
    assert len(world.registry.codes) == 0  # one-time: gone
    # the code no longer works, and fails like a wrong code
    joiner, creator = world.join(code)
    assert isinstance(of_type(joiner, SessionFailed)[0].error, AuthenticationFailed)
    # the key ID received in core.keys connects
    client = world.client(Grant.share_key(received, READ_ONLY, world.joiner_peer))
    joiner, creator = pump(client, world.server())
    assert [type(e) for e in joiner] == [Ready] and [type(e) for e in creator] == [Ready]
    assert creator[0].grant.kind is GrantKind.SHARE_KEY and creator[0].grant.tag == "share-A"


def test_read_only_grant_carries_only_the_read_write_public_key() -> None:
    world = World()
    joiner, _ = world.join(world.issue(READ_ONLY))
    share = joiner[0].share
    ro, rw = share.level(READ_ONLY), share.level(READ_WRITE)
    assert ro.key == world.share.level(READ_ONLY).key
    assert ro.signing_key == world.share.level(READ_ONLY).signing_key
    assert rw.key is None and rw.key_id is None and rw.signing_key is None
    assert rw.verify_key == world.share.level(READ_WRITE).verify_key


def test_read_write_grant_carries_both_levels() -> None:
    world = World()
    joiner, _ = world.join(world.issue(READ_WRITE))
    assert joiner[0].access_level == READ_WRITE
    assert joiner[0].share.to_record() == world.share.to_record()


def test_multi_use_code_works_twice_and_counts_uses() -> None:
    world = World()
    code = world.issue(READ_WRITE, max_uses=None)
    for use in (1, 2):
        joiner, creator = world.join(code)
        assert of_type(joiner, Ready) and of_type(creator, KeysAcknowledged)[0].code.uses == use
    issued = world.registry.codes.get(code.access_id)
    assert issued is not None and issued.uses == 2


def test_code_with_two_uses_is_gone_after_the_second() -> None:
    world = World()
    code = world.issue(max_uses=2)
    assert of_type(world.join(code)[0], Ready)
    assert of_type(world.join(code)[0], Ready)
    assert of_type(world.join(code)[0], SessionFailed)


def test_expired_code_fails() -> None:
    world = World()
    code = world.issue()
    world.clock.advance(DEFAULT_CODE_LIFETIME)
    joiner, creator = world.join(code)
    assert isinstance(of_type(joiner, SessionFailed)[0].error, AuthenticationFailed)
    assert world.registry.codes.expire(world.clock.now)[0].access_id == code.access_id


def test_cancelled_code_fails() -> None:
    world = World()
    code = world.issue()
    assert world.registry.codes.cancel(code.access_id)
    assert of_type(world.join(code)[0], SessionFailed)


def test_username_and_password_work_like_a_code() -> None:
    world = World()
    creds = Credentials.from_username_password("piano", "let me in")
    world.registry.codes.issue(creds, world.share, READ_ONLY, world.creator_peer,
                               now=world.clock.now)
    joiner, _ = world.join(creds)
    assert of_type(joiner, Ready)
    wrong = Credentials.from_username_password("piano", "let me out")
    world.registry.codes.issue(creds, world.share, READ_ONLY, world.creator_peer,
                               now=world.clock.now)
    assert of_type(world.join(wrong)[0], SessionFailed)


def test_one_time_code_cannot_be_used_by_two_connections_at_once() -> None:
    world = World()
    code = world.issue()
    first_client = world.client(Grant.code_holder(code, world.joiner_peer))
    first_server = world.server()
    second_client = world.client(Grant.code_holder(code, new_peer_id(world.rng)))
    second_server = world.server()
    # both hellos arrive before either connection finished its exchange
    first_server.receive_data(first_client.data_to_send(), world.clock.now)
    second_server.receive_data(second_client.data_to_send(), world.clock.now)
    drain(first_server)
    drain(second_server)
    joiner1, creator1 = pump(first_client, first_server, auto_ack=False)
    assert of_type(joiner1, KeysReceived)  # first claimed the code, waits for storage
    joiner2, creator2 = pump(second_client, second_server)
    assert "used, cancelled or expired meanwhile" in of_type(creator2, SessionFailed)[0].reason
    assert not of_type(joiner2, KeysReceived)
    first_client.acknowledge_keys()
    joiner1, creator1 = pump(first_client, first_server)
    assert of_type(creator1, KeysAcknowledged) and len(world.registry.codes) == 0


def test_exchange_that_never_finishes_times_out_and_frees_the_code() -> None:
    world = World(config=CoreConfig(exchange_timeout=20))
    code = world.issue()
    client = world.client(Grant.code_holder(code, world.joiner_peer))
    server = world.server()
    joiner, _ = pump(client, server, auto_ack=False)  # keys received, never acknowledged
    assert of_type(joiner, KeysReceived) and server.phase is Phase.AWAIT_ACK
    assert world.registry.codes.lookup(code.access_id, world.clock.now) is None  # claimed
    world.clock.advance(20)
    server.handle_timer(world.clock.now)
    assert "within 20 s" in of_type(drain(server), SessionFailed)[0].reason
    assert world.registry.codes.lookup(code.access_id, world.clock.now) is not None
    assert of_type(world.join(code)[0], Ready)


def test_creator_can_be_the_client() -> None:
    """The code's creator connects out to the device that holds the code."""
    world = World()
    code = world.issue(READ_WRITE)
    holder_registry = CredentialRegistry()
    holder_registry.hold_code(code, world.joiner_peer, tag="new share")
    creator_grant = world.registry.codes.lookup(code.access_id, world.clock.now)
    assert creator_grant is not None and creator_grant.sends_keys
    client = world.client(creator_grant)
    server = on_clock(PeerConnection.server(holder_registry, world.config,
                                            now=world.clock.now, rng=world.rng), world.clock)
    creator, holder = pump(client, server)
    assert [type(e) for e in holder] == [KeysReceived, Ready]
    assert holder[0].grant.tag == "new share"
    assert [type(e) for e in creator] == [KeysAcknowledged, Ready]
    assert len(world.registry.codes) == 0


def test_negotiation_picks_highest_common_version_and_common_extensions() -> None:
    world = World()
    server_cfg = CoreConfig(protocols=(1, 2, 5), extensions=("database", ".org.example.x"),
                            gzip_level=1, name="Piano")
    client_cfg = CoreConfig(protocols=(1, 2, 3), extensions=(".org.example.x", "rsync"),
                            software="other 1.0")
    client = world.client(Grant.share_key(world.share, READ_WRITE, world.joiner_peer),
                          client_cfg)
    c, s = pump(client, world.server(server_cfg))
    assert c[0].protocol == s[0].protocol == 2
    assert c[0].extensions == s[0].extensions == (".org.example.x",)
    assert c[0].peer_name == "Piano" and s[0].peer_software == "other 1.0"


def test_no_common_protocol_version_fails_clearly() -> None:
    world = World()
    client = world.client(Grant.share_key(world.share, READ_WRITE, world.joiner_peer),
                          CoreConfig(protocols=(2,)))
    c, _ = pump(client, world.server())
    assert "no common protocol version" in of_type(c, SessionFailed)[0].reason


def test_loopback_is_detected() -> None:
    world = World()
    client = world.client(Grant.share_key(world.share, READ_WRITE, world.creator_peer))
    c, s = pump(client, world.server())
    assert isinstance(of_type(c, SessionFailed)[0].error, LoopbackDetected)


def test_first_message_must_be_start() -> None:
    world = World()
    raw = RawPeer(world, Grant.share_key(world.share, READ_WRITE, world.joiner_peer))
    server = world.server()
    pump(raw, server)
    raw.send({"type": "x.hello"})
    _, s = pump(raw, server)
    assert "expected core.start as the first message, got 'x.hello'" in s[-1].reason


def test_nothing_but_keys_traffic_is_acted_on_before_the_exchange() -> None:
    world = World()
    code = world.issue()
    raw = RawPeer(world, Grant.code_holder(code, world.joiner_peer))
    server = world.server()
    pump(raw, server)
    raw.send(start_body(world.joiner_peer))
    raw.send({"type": "x.early"}, payload=b"early payload")
    raw.send({"type": "core.ping", "timeout": 999})
    _, s = pump(raw, server)
    assert s == [] and server.phase is Phase.AWAIT_ACK and server.timeout == 180
    raw.send({"type": "core.keys_acknowledgment"})
    raw.send({"type": "x.later"}, payload=b"late payload")
    raw.send({"type": "core.future_thing"}, payload=b"dropped")
    raw.send({"type": ".org.example.thing", "n": 1})
    _, s = pump(raw, server)
    assert [type(e) for e in s] == [KeysAcknowledged, Ready, Message, PayloadChunk, PayloadEnd,
                                    Message]
    assert s[2].type == "x.later" and s[3].data == b"late payload"
    assert s[5].type == ".org.example.thing"


def test_malformed_greeting_fields_fail_clearly() -> None:
    world = World()
    raw = RawPeer(world, Grant.share_key(world.share, READ_WRITE, world.joiner_peer))
    server = world.server()
    pump(raw, server)
    raw.send(start_body("not-hex"))
    _, s = pump(raw, server)
    assert isinstance(s[-1].error, CoreError) and "'peer'" in s[-1].reason


def test_unknown_extensions_are_ignored() -> None:
    world = World()
    raw = RawPeer(world, Grant.share_key(world.share, READ_WRITE, world.joiner_peer))
    server = world.server()
    pump(raw, server)
    raw.send(start_body(world.joiner_peer, extensions=["teleport", ".com.x.y", "gzip"],
                        extra_field=[1, 2]))
    _, s = pump(raw, server)
    assert s[0].extensions == ("gzip",)


# ------------------------------------------------------------------ keep-alive


def ready_pair(world: World, config: CoreConfig | None = None,
               server_config: CoreConfig | None = None) -> tuple[PeerConnection,
                                                                  PeerConnection]:
    client = world.client(Grant.share_key(world.share, READ_WRITE, world.joiner_peer),
                          config)
    server = world.server(server_config)
    c, s = pump(client, server)
    assert of_type(c, Ready) and of_type(s, Ready)
    return client, server


def timer(connection: PeerConnection) -> float:
    when = connection.get_timer()
    assert when is not None
    return when


def test_pings_keep_the_connection_alive() -> None:
    world = World()
    client, server = ready_pair(world)
    for _ in range(10):
        when = min(timer(client), timer(server))
        world.clock.now = when
        client.handle_timer(when)
        server.handle_timer(when)
        c, s = pump(client, server)
        assert c == [] and s == []
    assert client.phase is server.phase is Phase.READY
    assert world.clock.now >= 1000 + 9 * 60


def test_silent_peer_is_declared_dead_after_the_timeout() -> None:
    world = World()
    client, server = ready_pair(world, CoreConfig(ping_interval=10, ping_timeout=30))
    start = world.clock.now
    while server.phase is Phase.READY:
        world.clock.now = timer(server)
        server.handle_timer(world.clock.now)
        server.data_to_send()  # pings go nowhere: the client is gone
    (event,) = drain(server)
    assert isinstance(event.error, PeerTimedOut)
    assert world.clock.now - start == 180  # the server's own timeout (3 x 60 s)


def test_larger_peer_timeout_is_adopted() -> None:
    world = World()
    client, server = ready_pair(world, CoreConfig(ping_interval=10, ping_timeout=30),
                                CoreConfig(ping_interval=100, ping_timeout=300))
    assert client.timeout == 300 and server.timeout == 300
    # the client stretched its interval in proportion (10/30 of the adopted 300 s)
    assert client.get_timer() == world.clock.now + 100
    world.clock.advance(100)
    client.handle_timer(world.clock.now)
    server.receive_data(client.data_to_send(), world.clock.now)
    assert drain(server) == []  # a ping, consumed by the core
    server.handle_timer(world.clock.now)  # the server's own ping is due as well
    assert server.get_timer() == world.clock.now + 100
    assert client.get_timer() == world.clock.now + 100


def test_a_due_ping_waits_for_the_open_payload_to_end() -> None:
    world = World(config=CoreConfig(gzip_level=0, ping_interval=10, ping_timeout=30))
    client, server = ready_pair(world)
    client.send_message({"type": "x.file"}, payload=True)
    client.send_chunk(b"first half")
    world.clock.advance(10)  # a ping is due now, in the middle of the payload
    assert timer(client) == world.clock.now + 20  # only the dead-peer deadline
    client.handle_timer(world.clock.now)
    client.send_chunk(b"second half")
    client.send_payload_end()  # the deferred ping follows the end marker
    assert timer(client) == world.clock.now + 10
    _, s = pump(client, server)
    assert [type(e) for e in s] == [Message, PayloadChunk, PayloadChunk, PayloadEnd]
    assert server.phase is Phase.READY


def test_send_encoded_relays_exact_bytes() -> None:
    world = World()
    rw = world.share.level(READ_WRITE)
    client, server = ready_pair(world)
    stored = sign_message(b'{"type":"x.update","n":1}\n', rw)  # as kept by a relay
    client.send_encoded(stored)
    client.send_encoded(encode_message({"type": "x.blob"}, payload=True))
    client.send_encoded(b"3\nabc")
    client.send_encoded(b"0\n")
    _, s = pump(client, server)
    assert [type(e) for e in s] == [Message, Message, PayloadChunk, PayloadEnd]
    assert s[0].raw == b'{"type":"x.update","n":1}\n'
    verify_message(s[0], rw.public())
    with pytest.raises(CoreStateError, match="no payload message is open"):
        client.send_encoded(b"3\nabc")


def test_absurd_ping_timeout_is_capped() -> None:
    world = World()
    raw = RawPeer(world, Grant.share_key(world.share, READ_WRITE, world.joiner_peer))
    server = world.server()
    pump(raw, server)
    raw.send(start_body(world.joiner_peer))
    raw.send({"type": "core.ping", "timeout": 10**12})
    pump(raw, server)
    assert server.timeout == world.config.max_ping_timeout
    raw.send({"type": "core.ping", "timeout": "soon"})
    _, s = pump(raw, server)
    assert "'timeout' must be a positive number" in s[-1].reason


def test_ping_timeout_beyond_64_bits_fails_the_connection_cleanly() -> None:
    # float() of such an integer overflows; it once escaped next_event as OverflowError
    world = World()
    raw = RawPeer(world, Grant.share_key(world.share, READ_WRITE, world.joiner_peer))
    server = world.server()
    pump(raw, server)
    raw.send(start_body(world.joiner_peer))
    raw.send({"type": "core.ping", "timeout": 10**400})
    _, s = pump(raw, server)
    assert isinstance(s[-1], SessionFailed)
    assert "'timeout' must be a positive number" in s[-1].reason


# ------------------------------------------------------------------ messages


def test_application_messages_with_payload_and_clean_close() -> None:
    world = World()
    client, server = ready_pair(world)
    client.send_message({"type": "x.file", "path": "a.txt"}, payload=True)
    client.send_chunk(b"abc")
    client.send_chunk(b"def")
    client.send_payload_end()
    _, s = pump(client, server)
    assert [type(e) for e in s] == [Message, PayloadChunk, PayloadChunk, PayloadEnd]
    assert b"".join(e.data for e in s[1:3]) == b"abcdef"
    client.close()
    c, s = pump(client, server)
    assert s == [SessionClosed()]
    server.close()
    c, s = pump(client, server)
    assert c == [SessionClosed()]
    assert client.phase is Phase.CLOSED and server.phase is Phase.CLOSED


def test_local_misuse_is_refused() -> None:
    world = World()
    client = world.client(Grant.share_key(world.share, READ_WRITE, world.joiner_peer))
    with pytest.raises(CoreStateError, match="cannot send"):
        client.send_message({"type": "x.too_early"})
    client, server = ready_pair(world)
    with pytest.raises(CoreStateError, match="no payload message is open"):
        client.send_chunk(b"x")
    with pytest.raises(CoreStateError, match="sent by the core itself"):
        client.send_message({"type": "core.keys", "keys": []})
    client.send_message({"type": "x.p"}, payload=True)
    with pytest.raises(CoreStateError, match="finish the current payload"):
        client.send_message({"type": "x.q"})
    with pytest.raises(CoreStateError, match="no keys to acknowledge"):
        client.acknowledge_keys()


def test_peer_closing_before_the_exchange_is_an_error() -> None:
    world = World()
    code = world.issue()
    client = world.client(Grant.code_holder(code, world.joiner_peer))
    server = world.server()
    pump(client, server, auto_ack=False)
    client.close()
    _, s = pump(client, server)
    assert "before the key exchange completed" in of_type(s, SessionFailed)[0].reason


def test_signed_messages() -> None:
    world = World()
    rw = world.share.level(READ_WRITE)
    ro = world.share.level(READ_ONLY)
    client, server = ready_pair(world)
    client.send_message({"type": "x.record", "n": 1}, sign_with=rw)
    client.send_message({"type": "x.blob"}, sign_with=rw, payload=True)
    client.send_chunk(b"data")
    client.send_payload_end()
    _, s = pump(client, server)
    signed, blob = s[0], s[1]
    assert signed.kind == "s" and blob.kind == "$"
    verify_message(signed, rw)
    verify_message(blob, rw.public())  # public key is enough
    with pytest.raises(SignatureError, match="does not verify"):
        verify_message(signed, ro)
    forged = Message(signed.body, signed.raw.replace(b"1", b"2"), signed.signature)
    with pytest.raises(SignatureError, match="does not verify"):
        verify_message(forged, rw)
    with pytest.raises(SignatureError, match="not signed"):
        verify_message(Message({"type": "x"}, b'{"type":"x"}\n'), rw)
    with pytest.raises(Exception, match="no signing key"):
        sign_message({"type": "x"}, rw.public())
    assert rw.signing_key is not None
    verify_message(_decode_one(sign_message({"type": "x.y"}, rw.signing_key)), rw.verify_key)


def _decode_one(wire: bytes) -> Message:
    decoder = Decoder()
    decoder.receive_data(wire)
    (message,) = list(decoder.events())
    assert isinstance(message, Message)
    return message


def test_grants_and_tables_refuse_nonsense() -> None:
    world = World()
    table = AccessCodeTable()
    code = AccessCode.generate(world.rng)
    with pytest.raises(AccessError, match="max_uses"):
        table.issue(code, world.share, READ_ONLY, world.creator_peer, now=0, max_uses=0)
    table.issue(code, world.share, READ_ONLY, world.creator_peer, now=0)
    with pytest.raises(AccessError, match="already issued"):
        table.issue(code, world.share, READ_ONLY, world.creator_peer, now=0)
    public_only = world.share.grant(READ_ONLY)
    with pytest.raises(Exception, match="not held in full"):
        table.issue(AccessCode.generate(world.rng), public_only, READ_WRITE,
                    world.creator_peer, now=0)
    with pytest.raises(AccessError, match="is not held"):
        Grant.share_key(public_only, READ_WRITE, world.creator_peer)
