"""Tracker protocol v1, sans-I/O: messages, the client session and the server registry.

Clients and the registry are piped together in memory with a fake clock, so
TTL expiry and ping schedules are exact and no test sleeps.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from csembed.discovery.addresses import (
    PeerAddress,
    check_address_text,
    format_ip,
    parse_address,
    parse_ip,
    parse_known_addresses,
    read_club_id,
)
from csembed.discovery.errors import AddressError, TrackerError
from csembed.discovery.tracker_messages import (
    TrackerConnection,
    TrackerGreeting,
    TrackerPeers,
    TrackerPing,
    TrackerRegister,
    TrackerStart,
    encode,
    message_from_body,
)
from csembed.discovery.tracker_registry import (
    CloseConnection,
    SendData,
    TrackerRegistry,
    TrackerServerConfig,
)
from csembed.discovery.tracker_session import (
    PeersUpdate,
    SessionState,
    TrackerGreeted,
    TrackerSession,
)
from csembed.protocol.wire import NEED_DATA, Decoder, Message, encode_message

# Club IDs with known registration proofs (SHA-256 preimages), as a csembed
# tracker requires them; sessions of the harness send the proofs.
PROOFS = {hashlib.sha256(name).hexdigest(): name for name in (b"club x", b"club y", b"club z")}
CLUB_X, CLUB_Y, CLUB_Z = PROOFS


def peer(n: int) -> str:
    return f"{n:032x}"


def addr(n: int, port: int = 4000) -> str:
    return f"tcp:192.0.2.{n}:{port}"


# -- addresses and IDs --------------------------------------------------------


def test_parse_addresses_of_every_form() -> None:
    assert parse_address("tcp:192.168.1.2:49221") == PeerAddress("tcp", "192.168.1.2", 49221)
    v6 = parse_address("tcp:[2600:3c01::f03c:91ff:feae:914c]:49221")
    assert v6 == PeerAddress("tcp", "2600:3c01::f03c:91ff:feae:914c", 49221)
    assert str(v6) == "tcp:[2600:3c01::f03c:91ff:feae:914c]:49221"
    assert parse_address("utp:1.2.1.1:3824").scheme == "utp"
    assert parse_address("tcp:Peer.Example.org:80").host == "peer.example.org"
    assert str(parse_address("tcp:[2001:DB8:0::1]:5")) == "tcp:[2001:db8::1]:5"


@pytest.mark.parametrize("text, fragment", [
    ("tcp:192.0.2.1:0", "bad port"),
    ("tcp:192.0.2.1:65536", "outside 1..65535"),
    ("tcp:192.0.2.1:080", "bad port"),
    ("tcp:192.0.2.1:", "bad port"),
    ("tcp:2001:db8::1:80", "brackets"),
    ("tcp:[2001:db8::1:80", r"\[IPv6\]:PORT"),
    ("tcp:[not-v6]:80", "not an IPv6"),
    ("tcp:300.1.2.3:80", "not a valid IPv4"),
    ("tcp:bad_host:80", "not an IP address or a DNS name"),
    ("http:192.0.2.1:80", "unknown address scheme"),
    ("tcp:192.0.2.1 :80", "scheme:host:port"),
    ("tcp:" + "a" * 400 + ":1", "over the limit"),
    (42, "must be a string"),
])
def test_bad_addresses_are_refused_with_reason(text: Any, fragment: str) -> None:
    with pytest.raises(AddressError, match=fragment):
        parse_address(text)


def test_tracker_level_check_passes_unknown_schemes_but_not_junk() -> None:
    assert check_address_text("stun+x:whatever/1") == "stun+x:whatever/1"
    for bad in ("", "nocolon", "TCP:1.2.3.4:5", "tcp:", "tcp:a b", "tcp:\x00", "x" * 20 + ":1"):
        with pytest.raises(AddressError):
            check_address_text(bad)


def test_parse_known_addresses_skips_unknown_and_malformed_and_duplicates() -> None:
    good, skipped = parse_known_addresses(
        ["tcp:192.0.2.1:5", "quic:192.0.2.1:5", "tcp:nonsense", 7, "tcp:192.0.2.1:5",
         "utp:[2001:db8::2]:9"])
    assert [str(a) for a in good] == ["tcp:192.0.2.1:5", "utp:[2001:db8::2]:9"]
    assert skipped == 3


def test_ids_are_hex_of_the_right_length_and_come_out_lower_case() -> None:
    assert read_club_id("AB" * 32) == "ab" * 32
    for bad in ("ab" * 31, "ab" * 33, "g" * 64, None, 5):
        with pytest.raises(AddressError, match="club ID"):
            read_club_id(bad)


def test_your_ip_forms() -> None:
    assert format_ip("192.0.2.7") == "192.0.2.7"
    assert format_ip("2001:db8::7") == "[2001:db8::7]"
    assert format_ip("::ffff:192.0.2.7") == "192.0.2.7"
    assert parse_ip("[2001:db8::7]") == "2001:db8::7"
    assert parse_ip("192.0.2.7") == "192.0.2.7"
    with pytest.raises(AddressError):
        parse_ip("[nope]")


# -- messages -----------------------------------------------------------------


def decode_one(data: bytes) -> Any:
    decoder = Decoder()
    decoder.receive_data(data)
    event = decoder.next_event()
    assert isinstance(event, Message)
    assert decoder.next_event() is NEED_DATA
    return message_from_body(event.body)


@pytest.mark.parametrize("message", [
    TrackerGreeting(min_ttl=60, max_ttl=3600, your_ip="2001:db8::1", software="t 1"),
    TrackerStart(ttl=120, software="csembed"),
    TrackerConnection((addr(1), "utp:[2001:db8::1]:3824")),
    TrackerRegister({CLUB_X: peer(1), CLUB_Y: peer(2)}),
    TrackerPeers(CLUB_X, {peer(1): (addr(1),), peer(2): ()}),
    TrackerPing(),
])
def test_every_message_round_trips(message: Any) -> None:
    assert decode_one(encode(message)) == message


def test_greeting_matches_the_draft_example() -> None:
    body = {"type": "tracker.greeting", "software": "clearskies tracker build 143",
            "max_ttl": 3600, "min_ttl": 60, "your_ip": "1.22.1.184", "protocol": [1],
            "extensions": []}
    greeting = message_from_body(body)
    assert isinstance(greeting, TrackerGreeting)
    assert greeting.your_ip == "1.22.1.184" and greeting.protocol == (1,)
    assert greeting.clamp_ttl(5) == 60 and greeting.clamp_ttl(10**6) == 3600
    assert greeting.to_body() == body


def test_unknown_type_is_none_and_unknown_members_are_ignored() -> None:
    assert message_from_body({"type": "tracker.future"}) is None
    ping = message_from_body({"type": "tracker.ping", "extra": [1, 2]})
    assert ping == TrackerPing()


@pytest.mark.parametrize("body, fragment", [
    ({"type": "tracker.greeting", "min_ttl": 60, "protocol": [1]}, "max_ttl"),
    ({"type": "tracker.greeting", "min_ttl": 90, "max_ttl": 60, "protocol": [1]},
     "above max_ttl"),
    ({"type": "tracker.greeting", "min_ttl": True, "max_ttl": 60, "protocol": [1]},
     "min_ttl must be an integer"),
    ({"type": "tracker.greeting", "min_ttl": 1, "max_ttl": 60, "protocol": "1"},
     "must be a list"),
    ({"type": "tracker.start", "protocol": 1, "ttl": 6.5}, "ttl must be an integer"),
    ({"type": "tracker.start", "protocol": 1}, "ttl"),
    ({"type": "tracker.start", "protocol": 1, "ttl": 60, "extensions": [3]},
     r"extensions\[0\] must be a string"),
    ({"type": "tracker.connection", "addresses": "tcp:1.2.3.4:5"}, "must be a list"),
    ({"type": "tracker.connection", "addresses": ["x y"]}, "scheme:host:port"),
    ({"type": "tracker.connection", "addresses": [addr(1)] * 65}, "over the limit of 64"),
    ({"type": "tracker.register", "ids": [CLUB_X]}, "must be an object"),
    ({"type": "tracker.register", "ids": {CLUB_X[:-1]: peer(1)}}, "club ID"),
    ({"type": "tracker.register", "ids": {CLUB_X: peer(1) + "0"}}, "peer ID"),
    ({"type": "tracker.peers", "id": CLUB_X, "peers": {peer(1): "tcp:1.2.3.4:5"}},
     "must be a list"),
    ({"type": "tracker.peers", "id": CLUB_X, "peers": {peer(1): [5]}}, "must be a string"),
    ({"type": "tracker.peers", "peers": {}}, "id"),
])
def test_malformed_messages_name_the_field(body: dict[str, Any], fragment: str) -> None:
    with pytest.raises(TrackerError, match=fragment):
        message_from_body(body)


# -- the in-memory harness ----------------------------------------------------


class Harness:
    """A registry and named client sessions, piped together, with a fake clock."""

    def __init__(self, config: TrackerServerConfig | None = None) -> None:
        self.registry = TrackerRegistry(config)
        self.now = 1000.0
        self.sessions: dict[str, tuple[int, TrackerSession]] = {}
        self.names: dict[int, str] = {}
        self.closed: dict[str, str] = {}
        self.events: dict[str, list[Any]] = defaultdict(list)
        self.raw_peers: dict[str, list[TrackerPeers]] = defaultdict(list)
        self.silent: set[str] = set()

    def connect(self, name: str, ids: dict[str, str] | None = None,
                addresses: tuple[str, ...] = (), ttl: int = 300,
                ip: str = "192.0.2.200") -> TrackerSession:
        conn = self.registry.open(ip, self.now)
        session = TrackerSession(ids=ids or {}, addresses=addresses, ttl=ttl, software=name,
                                 proofs=PROOFS)
        self.sessions[name] = (conn, session)
        self.names[conn] = name
        self.pump()
        return session

    def session(self, name: str) -> TrackerSession:
        return self.sessions[name][1]

    def pump(self) -> None:
        for _ in range(1000):
            moved = False
            for out in self.registry.pop_outputs():
                moved = True
                name = self.names[out.conn]
                session = self.sessions[name][1]
                if isinstance(out, CloseConnection):
                    self.closed[name] = out.reason
                    session.receive_data(b"", self.now)
                    continue
                assert isinstance(out, SendData)
                message = decode_one(out.data)
                if isinstance(message, TrackerPeers):
                    # The registry never tells a client about a club it has not registered.
                    assert message.id in session.ids, (name, message.id)
                    self.raw_peers[name].append(message)
                session.receive_data(out.data, self.now)
                while (event := session.next_event()) is not NEED_DATA:
                    self.events[name].append(event)
            for name, (conn, session) in self.sessions.items():
                data = session.data_to_send()
                if data and name not in self.closed:
                    moved = True
                    self.registry.receive_data(conn, data, self.now)
            if not moved:
                return
        raise AssertionError("harness did not settle")

    def send_raw(self, name: str, data: bytes) -> None:
        self.registry.receive_data(self.sessions[name][0], data, self.now)
        self.pump()

    def advance(self, seconds: float) -> None:
        """Move the clock in steps, running every timer that falls due."""
        target = self.now + seconds
        while True:
            timers = [self.registry.get_timer()]
            timers += [s.get_timer() for n, (_, s) in self.sessions.items()
                       if n not in self.silent and n not in self.closed]
            due = [t for t in timers if t is not None and t <= target]
            self.now = max(self.now, min(due)) if due else target
            self.registry.handle_timer(self.now)
            for name, (_, session) in self.sessions.items():
                if name not in self.silent:
                    session.handle_timer(self.now)
            self.pump()
            if not due:
                return

    def view(self, name: str, club: str) -> dict[str, list[str]] | None:
        """The latest peers update ``name`` got for ``club``, as plain strings."""
        for event in reversed(self.events[name]):
            if isinstance(event, PeersUpdate) and event.club_id == club:
                return {p: [str(a) for a in addrs] for p, addrs in event.peers.items()}
        return None


def test_greeting_start_and_ttl_clamping() -> None:
    h = Harness(TrackerServerConfig(min_ttl=60, max_ttl=600, software="test tracker"))
    low = h.connect("low", ttl=5, ip="2001:db8::9")
    high = h.connect("high", ttl=10**6)
    greeted = h.events["low"][0]
    assert isinstance(greeted, TrackerGreeted)
    assert greeted.greeting.software == "test tracker"
    assert greeted.greeting.your_ip == "2001:db8::9"
    assert (low.ttl, high.ttl) == (60, 600)
    assert low.state is SessionState.ACTIVE
    assert h.registry.client_count == 2


def test_peers_are_learned_only_within_a_club() -> None:
    h = Harness()
    h.connect("a", {CLUB_X: peer(1)}, (addr(1),))
    h.connect("b", {CLUB_X: peer(2), CLUB_Y: peer(22)}, (addr(2), "utp:192.0.2.2:9"))
    h.connect("c", {CLUB_Y: peer(3)}, (addr(3),))
    h.connect("d", {CLUB_Z: peer(4)}, (addr(4),))

    assert h.view("a", CLUB_X) == {peer(2): [addr(2), "utp:192.0.2.2:9"]}
    assert h.view("b", CLUB_X) == {peer(1): [addr(1)]}
    assert h.view("b", CLUB_Y) == {peer(3): [addr(3)]}
    assert h.view("c", CLUB_Y) == {peer(22): [addr(2), "utp:192.0.2.2:9"]}
    assert h.view("d", CLUB_Z) == {}  # a new club is answered even when empty
    assert {m.id for m in h.raw_peers["a"]} == {CLUB_X}
    assert {m.id for m in h.raw_peers["c"]} == {CLUB_Y}
    assert {m.id for m in h.raw_peers["d"]} == {CLUB_Z}
    # b's identity in club Y never reaches a, nor its club X identity c.
    assert all(peer(22) not in m.peers for m in h.raw_peers["a"])
    assert all(peer(2) not in m.peers for m in h.raw_peers["c"])


def test_a_client_never_sees_itself_even_from_an_older_connection() -> None:
    h = Harness()
    h.connect("old", {CLUB_X: peer(1)}, (addr(1),))
    h.connect("new", {CLUB_X: peer(1)}, (addr(11),))  # same daemon, reconnected
    h.connect("other", {CLUB_X: peer(2)}, (addr(2),))
    assert h.view("new", CLUB_X) == {peer(2): [addr(2)]}
    assert h.view("old", CLUB_X) == {peer(2): [addr(2)]}
    # The registry itself leaves the asker's own peer ID out (not only the session).
    assert all(peer(1) not in m.peers for m in h.raw_peers["new"] + h.raw_peers["old"])
    # Others see one peer with both connections' addresses, oldest first.
    assert h.view("other", CLUB_X) == {peer(1): [addr(1), addr(11)]}


def test_members_without_addresses_are_not_listed_until_they_announce() -> None:
    h = Harness()
    h.connect("a", {CLUB_X: peer(1)}, (addr(1),))
    quiet = h.connect("quiet", {CLUB_X: peer(2)})
    assert h.view("a", CLUB_X) == {}
    assert h.view("quiet", CLUB_X) == {peer(1): [addr(1)]}
    quiet.set_addresses([addr(2)])
    h.pump()
    assert h.view("a", CLUB_X) == {peer(2): [addr(2)]}


def test_address_change_is_pushed_and_replaces_the_old_list() -> None:
    h = Harness()
    h.connect("a", {CLUB_X: peer(1)}, (addr(1),))
    b = h.connect("b", {CLUB_X: peer(2), CLUB_Y: peer(2)}, (addr(2),))
    h.connect("c", {CLUB_Y: peer(3)}, (addr(3),))
    before, before_b = len(h.raw_peers["a"]), len(h.raw_peers["b"])
    assert not b.set_addresses([addr(2)])  # unchanged: nothing sent
    h.pump()
    assert len(h.raw_peers["a"]) == before
    assert b.set_addresses([addr(2, 5000), PeerAddress("utp", "2001:db8::2", 7)])
    h.pump()
    expected = [addr(2, 5000), "utp:[2001:db8::2]:7"]
    assert h.view("a", CLUB_X) == {peer(2): expected}
    assert h.view("c", CLUB_Y) == {peer(2): expected}
    assert len(h.raw_peers["a"]) == before + 1
    assert len(h.raw_peers["b"]) == before_b  # b's own views did not change: nothing re-sent


def test_register_is_a_full_replacement() -> None:
    h = Harness()
    h.connect("a", {CLUB_X: peer(1)}, (addr(1),))
    b = h.connect("b", {CLUB_X: peer(2)}, (addr(2),))
    h.connect("c", {CLUB_Y: peer(3)}, (addr(3),))
    assert b.set_ids({CLUB_Y: peer(2)})
    h.pump()
    assert h.view("a", CLUB_X) == {}
    assert h.view("c", CLUB_Y) == {peer(2): [addr(2)]}
    assert h.view("b", CLUB_Y) == {peer(3): [addr(3)]}
    assert h.registry.members(CLUB_X) == {h.sessions["a"][0]: peer(1)}
    # A peers message for X still in flight after b left X is dropped by b's session.
    b.receive_data(encode(TrackerPeers(CLUB_X, {peer(1): (addr(1),)})), h.now)
    assert b.next_event() is NEED_DATA
    # Rejoining X is answered afresh, though the view is what b was sent before.
    sent_before = len(h.raw_peers["b"])
    b.set_ids({CLUB_X: peer(2), CLUB_Y: peer(2)})
    h.pump()
    assert [m.id for m in h.raw_peers["b"][sent_before:]] == [CLUB_X]
    assert h.view("b", CLUB_X) == {peer(1): [addr(1)]}


def test_changing_the_peer_id_of_a_club_is_seen_by_the_others() -> None:
    h = Harness()
    h.connect("a", {CLUB_X: peer(1)}, (addr(1),))
    b = h.connect("b", {CLUB_X: peer(2)}, (addr(2),))
    b.set_ids({CLUB_X: peer(7)})
    h.pump()
    assert h.view("a", CLUB_X) == {peer(7): [addr(2)]}


def test_silent_client_expires_after_its_ttl_and_the_club_is_told() -> None:
    h = Harness(TrackerServerConfig(min_ttl=60, max_ttl=60))
    h.connect("a", {CLUB_X: peer(1)}, (addr(1),), ttl=60)
    h.connect("b", {CLUB_X: peer(2)}, (addr(2),), ttl=60)
    h.silent.add("a")  # a stops pinging; b pings every 30 s
    h.advance(59.9)
    assert "a" not in h.closed
    assert h.view("b", CLUB_X) == {peer(1): [addr(1)]}
    h.advance(0.1)
    assert "TTL" in h.closed["a"]
    assert h.view("b", CLUB_X) == {}
    h.advance(600)  # b keeps itself alive with pings
    assert "b" not in h.closed and h.registry.client_count == 1
    assert h.session("b").state is SessionState.ACTIVE


def test_a_ttl_shorter_than_the_start_timeout_is_honoured() -> None:
    h = Harness(TrackerServerConfig(start_timeout=30, min_ttl=10, max_ttl=10))
    h.connect("a", {CLUB_X: peer(1)}, (addr(1),), ttl=10)
    h.silent.add("a")
    assert h.registry.get_timer() == h.now + 10
    h.advance(10)
    assert "TTL" in h.closed["a"]
    assert h.registry.get_timer() is None


def test_session_pings_every_half_ttl() -> None:
    h = Harness(TrackerServerConfig(min_ttl=60, max_ttl=60))
    a = h.connect("a", {}, (), ttl=60)
    start = h.now
    assert a.get_timer() == start + 30
    a.handle_timer(start + 29)
    assert a.data_to_send() == b""
    a.handle_timer(start + 30)
    assert a.data_to_send() == encode(TrackerPing())
    assert a.get_timer() == start + 60


def test_connection_without_start_is_dropped_after_the_start_timeout() -> None:
    h = Harness(TrackerServerConfig(start_timeout=10))
    conn = h.registry.open("192.0.2.1", h.now)
    assert h.registry.get_timer() == h.now + 10
    h.registry.handle_timer(h.now + 9.99)
    assert not any(isinstance(o, CloseConnection) for o in h.registry.pop_outputs())
    h.registry.handle_timer(h.now + 10)
    assert h.registry.pop_outputs() == [CloseConnection(conn, "no tracker.start in time")]
    assert h.registry.get_timer() is None


def start_bytes(ttl: int = 60) -> bytes:
    return encode(TrackerStart(ttl=ttl))


@pytest.mark.parametrize("data, fragment", [
    (encode(TrackerPeers(CLUB_X, {})), "not allowed"),
    (encode(TrackerGreeting(min_ttl=1, max_ttl=2)), "not allowed"),
    (encode_message({"type": "tracker.ping"}, signature=b"sig!"), "signature length"),
    (encode_message({"type": "tracker.ping"}, payload=True), "plain 'm'"),
    (b"x1{}", "unknown message prefix"),
    (encode_message({"type": "tracker.register", "ids": {"zz": peer(1)}}), "club ID"),
    (encode(TrackerStart(ttl=60)), "not allowed"),
])
def test_protocol_violations_end_the_connection_and_the_club_is_told(
        data: bytes, fragment: str) -> None:
    h = Harness()
    h.connect("a", {CLUB_X: peer(1)}, (addr(1),))
    h.connect("bad", {CLUB_X: peer(2)}, (addr(2),))
    assert h.view("a", CLUB_X) == {peer(2): [addr(2)]}
    h.send_raw("bad", data)
    assert fragment in h.closed["bad"]
    assert h.view("a", CLUB_X) == {}
    assert "a" not in h.closed


@pytest.mark.parametrize("data, fragment", [
    (encode(TrackerPing()), "awaiting tracker.start"),
    (encode_message({"type": "tracker.hello"}), "expected tracker.start"),
    (encode(TrackerStart(ttl=60, protocol=2)), "protocol 2"),
    (b"m9999999999{", "exceeds the limit"),
])
def test_anything_but_a_valid_start_first_is_refused(data: bytes, fragment: str) -> None:
    registry = TrackerRegistry()
    conn = registry.open("192.0.2.1", 0.0)
    registry.pop_outputs()
    registry.receive_data(conn, data, 0.0)
    (out,) = registry.pop_outputs()
    assert isinstance(out, CloseConnection) and fragment in out.reason
    assert registry.client_count == 0


def test_unknown_types_while_active_are_ignored() -> None:
    h = Harness()
    h.connect("a", {CLUB_X: peer(1)}, (addr(1),))
    h.send_raw("a", encode_message({"type": "tracker.future", "x": 1}))
    assert "a" not in h.closed


def test_configured_limits_on_ids_addresses_and_update_rate() -> None:
    h = Harness(TrackerServerConfig(max_ids=2, max_addresses=2, max_updates=3,
                                    update_window=60))
    h.connect("ids", {CLUB_X: peer(1), CLUB_Y: peer(1), CLUB_Z: peer(1)})
    assert "over this tracker's limit of 2" in h.closed["ids"]
    h.connect("addrs", {}, (addr(1), addr(2), addr(3)))
    assert "over this tracker's limit of 2" in h.closed["addrs"]
    flood = h.connect("flood", {}, (addr(4),))  # start + 2 updates used
    flood.set_addresses([addr(5)])
    h.pump()
    assert "flood" not in h.closed
    flood.set_addresses([addr(6)])
    h.pump()
    assert "more than 3" in h.closed["flood"]
    # A fresh window allows updates again.
    slow = h.connect("slow", {}, (addr(7),))
    slow.set_addresses([addr(8)])
    h.advance(60)
    slow.set_addresses([addr(9)])
    slow.set_addresses([addr(10)])
    h.pump()
    assert "slow" not in h.closed


def test_server_full_closes_new_connections() -> None:
    registry = TrackerRegistry(TrackerServerConfig(max_clients=1))
    registry.open("192.0.2.1", 0.0)
    second = registry.open("192.0.2.2", 0.0)
    outputs = registry.pop_outputs()
    assert CloseConnection(second, "server full") in outputs
    assert registry.client_count == 1


def test_peers_list_is_capped_keeping_the_oldest_members() -> None:
    h = Harness(TrackerServerConfig(max_peers_per_message=2))
    for n in range(1, 5):
        h.connect(f"m{n}", {CLUB_X: peer(n)}, (addr(n),))
    assert h.view("m4", CLUB_X) == {peer(1): [addr(1)], peer(2): [addr(2)]}
    assert h.view("m1", CLUB_X) == {peer(2): [addr(2)], peer(3): [addr(3)]}


# -- the client session against hand-made tracker bytes -----------------------


def greeting_bytes(**kw: Any) -> bytes:
    body = {"type": "tracker.greeting", "software": "x", "min_ttl": 60, "max_ttl": 3600,
            "your_ip": "192.0.2.9", "protocol": [1], "extensions": []}
    body.update(kw)
    return encode_message(body)


def greeted_session(**kw: Any) -> TrackerSession:
    session = TrackerSession(ids={CLUB_X: peer(1)}, addresses=[addr(1)], **kw)
    session.receive_data(greeting_bytes(), 0.0)
    assert isinstance(session.next_event(), TrackerGreeted)
    return session


def test_session_sends_start_connection_register_after_the_greeting() -> None:
    session = TrackerSession(ids={CLUB_X.upper(): peer(1)}, addresses=[addr(1)], ttl=90)
    assert session.data_to_send() == b""
    session.receive_data(greeting_bytes(), 0.0)
    event = session.next_event()
    assert isinstance(event, TrackerGreeted) and event.ttl == 90
    decoder = Decoder()
    decoder.receive_data(session.data_to_send())
    sent = [message_from_body(e.body) for e in decoder.events() if isinstance(e, Message)]
    assert sent == [TrackerStart(ttl=90), TrackerConnection((addr(1),)),
                    TrackerRegister({CLUB_X: peer(1)})]


@pytest.mark.parametrize("data, fragment", [
    (greeting_bytes(protocol=[2, 3]), "not 1"),
    (encode(TrackerPing()), "expected tracker.greeting"),
    (greeting_bytes(min_ttl="60"), "min_ttl must be an integer"),
    (b"garbage", "unknown message prefix"),
    (encode_message({"type": "tracker.greeting"}, signature=b"s"), "plain 'm'"),
])
def test_session_refuses_a_bad_start(data: bytes, fragment: str) -> None:
    session = TrackerSession()
    session.receive_data(data, 0.0)
    with pytest.raises(TrackerError, match=fragment):
        session.next_event()
    assert session.state is SessionState.CLOSED
    assert session.get_timer() is None


def test_session_ignores_a_garbled_your_ip_and_unknown_types() -> None:
    session = TrackerSession()
    session.receive_data(greeting_bytes(your_ip="somewhere"), 0.0)
    event = session.next_event()
    assert isinstance(event, TrackerGreeted) and event.greeting.your_ip is None
    session.receive_data(encode_message({"type": "tracker.news"}), 0.0)
    assert session.next_event() is NEED_DATA
    session.receive_data(greeting_bytes(), 0.0)
    with pytest.raises(TrackerError, match="second tracker.greeting"):
        session.next_event()


def test_session_filters_peers() -> None:
    session = greeted_session()
    message = TrackerPeers(CLUB_X, {
        peer(1): (addr(1),),  # ourselves
        peer(2): (addr(2), "quic:192.0.2.2:1", "tcp:bad"),
        peer(3): ("carrier-pigeon:coop",),  # nothing usable
    })
    session.receive_data(encode(message), 0.0)
    update = session.next_event()
    assert isinstance(update, PeersUpdate)
    assert update.club_id == CLUB_X
    assert {p: [str(a) for a in v] for p, v in update.peers.items()} == {peer(2): [addr(2)]}
    assert update.skipped == 3
    session.receive_data(encode(TrackerPeers(CLUB_Y, {peer(2): (addr(2),)})), 0.0)
    assert session.next_event() is NEED_DATA  # a club we never registered


def test_session_survives_any_split_of_the_stream() -> None:
    data = greeting_bytes() + encode(TrackerPeers(CLUB_X, {peer(2): (addr(2),)}))
    for step in (1, 2, 7):
        session = TrackerSession(ids={CLUB_X: peer(1)})
        events = []
        for i in range(0, len(data), step):
            session.receive_data(data[i:i + step], 0.0)
            while (event := session.next_event()) is not NEED_DATA:
                events.append(event)
        assert [type(e) for e in events] == [TrackerGreeted, PeersUpdate]


def test_end_of_stream_closes_the_session() -> None:
    session = greeted_session()
    session.receive_data(b"", 1.0)
    assert session.next_event() is NEED_DATA
    assert session.state is SessionState.CLOSED


def test_set_ids_before_the_greeting_only_changes_what_will_be_sent() -> None:
    session = TrackerSession()
    assert session.set_ids({CLUB_Y: peer(5)})
    assert session.data_to_send() == b""
    with pytest.raises(AddressError):
        session.set_ids({"nothex": peer(5)})
    with pytest.raises(ValueError):
        TrackerSession(ttl=0)


# -- property: every client's view always matches the ground truth -----------

CLUBS = (CLUB_X, CLUB_Y, CLUB_Z)
client_index = st.integers(0, 3)
register_op = st.tuples(st.just("register"), client_index,
                        st.sets(st.integers(0, 2), max_size=2))
addresses_op = st.tuples(st.just("addresses"), client_index, st.integers(0, 3))
operation = st.one_of(  # changes weighted over departures, so clubs fill up
    register_op, addresses_op, register_op, addresses_op,
    st.tuples(st.sampled_from(["disconnect", "silence"]), client_index),
    st.tuples(st.just("wait"), st.sampled_from([10.0, 40.0, 61.0])),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(operation, min_size=3, max_size=40))
def test_views_match_the_ground_truth(ops: list[tuple[Any, ...]]) -> None:
    h = Harness(TrackerServerConfig(min_ttl=60, max_ttl=60))
    generation: dict[int, int] = defaultdict(int)
    live: dict[int, str] = {}

    def name_of(i: int) -> str:
        return f"c{i}.{generation[i]}"

    for op in ops:
        kind, i = op[0], op[1]
        name = live.get(i) if kind != "wait" else None
        if kind in ("register", "addresses") and name is None:
            generation[i] += 1  # a client acts on a fresh connection if it had none
            name = live[i] = name_of(i)
            h.connect(name, {}, (), ttl=60)
        if kind == "register" and name is not None:
            # Peer IDs differ per client and per club, so views are easy to predict.
            h.session(name).set_ids({CLUBS[c]: f"{i:02x}{c:02x}" + "0" * 28 for c in op[2]})
        elif kind == "addresses" and name is not None:
            h.session(name).set_addresses([addr(i, 1000 + k) for k in range(op[2])])
        elif kind == "disconnect" and name is not None:
            h.registry.connection_lost(h.sessions[name][0], h.now)
            h.closed[name] = "lost"
        elif kind == "silence" and name is not None:
            h.silent.add(name)
        elif kind == "wait":
            h.advance(op[1])
        h.pump()
        for j, n in list(live.items()):
            if n in h.closed:
                del live[j]
        # Ground truth from the sessions that are still alive.
        for n in live.values():
            own = h.session(n)
            for club, my_peer in own.ids.items():
                expected = {
                    other.ids[club]: list(other.addresses)
                    for m in live.values() if m != n
                    for other in [h.session(m)]
                    if club in other.ids and other.addresses and other.ids[club] != my_peer
                }
                assert h.view(n, club) == expected, (n, club)
