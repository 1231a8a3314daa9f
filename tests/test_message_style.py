"""Every protocol message class round-trips, and a few are pinned to their exact bytes.

The pinned bytes were produced by the encoders these classes replaced (inline
dicts in core.py, the sync_messages functions, build_update, the LAN codec):
moving to one message style must not change a byte on the wire.
"""

from __future__ import annotations

import importlib
import json
import random

import pytest

from csembed.database.record import MESSAGES as DATABASE_MESSAGES
from csembed.database.record import GetUpdates, Record
from csembed.database.vector_clock import VectorClock
from csembed.directory import sync_messages as sync
from csembed.discovery import tracker_messages as tracker
from csembed.discovery.lan_broadcast import (
    Announcement,
    decode_announcement,
    encode_announcement,
)
from csembed.protocol import core_messages as core
from csembed.protocol.body_message import (
    BodyMessage,
    build_from_body,
    encode,
    message_table,
)
from csembed.protocol.wire import Decoder, Message, encode_body
from csembed.security.keys import ShareKeys

SHA = "ab" * 32
PEER = "12" * 16
CLUB = "ef" * 32


def _share() -> ShareKeys:
    seeded = random.Random(7)
    return ShareKeys.generate(lambda n: seeded.randbytes(n)).grant("read_only")


def _update() -> Record:
    record = Record(key="/a.txt", value={"sha256": SHA, "size": 3}, uuid="0" * 31 + "1",
                    last_updated_by="a" * 32, last_updated_rev=2,
                    update_time=1396182929113243778,
                    vector_clock=VectorClock({"a" * 32: 2, "b" * 32: 1}), deleted=False,
                    raw=b"")
    return Record.from_body(record.to_body())


SAMPLES: list[BodyMessage] = [
    sync.GetPresence(), sync.BloomFilterHeader(3), sync.Present(SHA),
    sync.PresentMany((SHA, "cd" * 32)), sync.Get(SHA),
    sync.Get(SHA, (5, 10)), sync.DataHeader(SHA), sync.DataHeader(SHA, (0, 3)),
    sync.NotPresent(SHA), sync.GetError(SHA, "gone"), sync.SignatureHeader(SHA),
    sync.SignatureHeader(SHA, "cd" * 32), sync.PatchHeader(SHA),
    core.CoreGreeting(PEER, (1,), ("gzip",), "csembed 9", "Piano"),
    core.CoreStart(PEER, 1, (), "csembed 9"),
    core.CoreKeys("read_only", _share()), core.CoreKeysAcknowledgment(),
    core.CorePing(180), core.CorePing(7.5),
    _update(), GetUpdates({"a" * 32: 2}),
    tracker.TrackerGreeting(min_ttl=60, max_ttl=3600, your_ip="127.0.0.1", software="t 1"),
    tracker.TrackerStart(ttl=600, extensions=("x",)),
    tracker.TrackerConnection(("tcp:127.0.0.1:40121",)),
    tracker.TrackerRegister({CLUB: PEER}),
    tracker.TrackerPeers(CLUB, {PEER: ("tcp:127.0.0.1:1",)}),
    tracker.TrackerPing(),
    Announcement(CLUB, PEER, 40121),
]

TABLES = [sync.MESSAGES, core.MESSAGES, DATABASE_MESSAGES, tracker.MESSAGES,
          message_table([Announcement])]


def _decoded(data: bytes) -> Message:
    decoder = Decoder()
    decoder.receive_data(data)
    (message, *_) = decoder.events()
    assert isinstance(message, Message)
    return message


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips_through_its_body_and_the_wire(message: BodyMessage) -> None:
    body = message.to_body()
    assert body.get("type", body.get("name")) == message.TYPE
    assert type(message).from_body(body) == message
    if isinstance(message, Announcement):
        assert decode_announcement(encode_announcement(message)) == message
        return
    received = _decoded(encode(message))
    assert received.has_payload == message.PAYLOAD
    table = next(t for t in TABLES if message.TYPE in t)
    again = build_from_body(table, received.body)
    assert again == message and again is not None
    assert again.to_body() == json.loads(json.dumps(body))


def test_every_message_class_is_in_a_table_and_sampled() -> None:
    for name in ("csembed.directory.sync_messages", "csembed.protocol.core_messages",
                 "csembed.database.record", "csembed.discovery.tracker_messages",
                 "csembed.discovery.lan_broadcast"):
        importlib.import_module(name)
    classes = set(BodyMessage.__subclasses__())
    assert {type(m) for m in SAMPLES} == classes
    assert {cls for table in TABLES for cls in table.values()} == classes


def test_a_type_claimed_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="directory.present"):
        message_table([sync.Present, sync.Present])


def test_an_unknown_type_builds_nothing() -> None:
    assert build_from_body(sync.MESSAGES, {"type": "directory.future"}) is None


# Bytes as the replaced encoders wrote them (see the module docstring).
PINNED = [
    (sync.Get(SHA, (5, 10)),
     b'm116{"type":"directory.get","range":[5,10],"sha256":"' + SHA.encode() + b'"}\n'),
    (sync.SignatureHeader(SHA, "cd" * 32),
     b'!185{"type":"rsync.signature","basis_sha256":"' + b"cd" * 32
     + b'","sha256":"' + SHA.encode() + b'"}\n'),
    (sync.BloomFilterHeader(3), b'!46{"type":"directory.bloom_filter","k_value":3}\n'),
    (sync.DataHeader(SHA), b'!102{"type":"directory.data","sha256":"' + SHA.encode() + b'"}\n'),
    (core.CoreGreeting(PEER, (1,), ("gzip",), "csembed 9", "Piano"),
     b'm142{"type":"core.greeting","extensions":["gzip"],"name":"Piano","peer":"'
     + PEER.encode() + b'","protocol":[1],"software":"csembed 9"}\n'),
    (core.CoreStart(PEER, 1, (), "csembed 9"),
     b'm116{"type":"core.start","extensions":[],"peer":"' + PEER.encode()
     + b'","protocol":1,"software":"csembed 9"}\n'),
    (core.CorePing(180.0), b'm35{"type":"core.ping","timeout":180}\n'),
    (core.CorePing(7.5), b'm35{"type":"core.ping","timeout":7.5}\n'),
    (core.CoreKeysAcknowledgment(), b'm36{"type":"core.keys_acknowledgment"}\n'),
    (tracker.TrackerGreeting(min_ttl=60, max_ttl=3600, your_ip="127.0.0.1", software="t 1"),
     b'm126{"type":"tracker.greeting","extensions":[],"max_ttl":3600,"min_ttl":60,'
     b'"protocol":[1],"software":"t 1","your_ip":"127.0.0.1"}\n'),
]


@pytest.mark.parametrize("message, wire", PINNED, ids=lambda v: getattr(v, "TYPE", ""))
def test_wire_bytes_are_pinned(message: BodyMessage, wire: bytes) -> None:
    assert encode(message) == wire


def test_get_error_text_is_cut_to_the_same_bytes_as_before() -> None:
    wire = encode(sync.GetError(SHA, "x" * 1100))
    assert len(wire) == 1149 and wire.startswith(b'm1144{"type":"directory.get_error"')


def test_record_and_get_updates_bodies_are_pinned() -> None:
    assert _update().raw == (
        b'{"type":"database.update","deleted":false,"key":"/a.txt","last_updated_by":"'
        + b"a" * 32 + b'","last_updated_rev":2,"update_time":"2014-03-30T12:35:29.113243778Z",'
        b'"uuid":"00000000000000000000000000000001","value":{"sha256":"' + SHA.encode()
        + b'","size":3},"vector_clock":{"' + b"a" * 32 + b'":2,"' + b"b" * 32 + b'":1}}\n')
    assert encode_body(GetUpdates({"a" * 32: 2}).to_body()) == (
        b'{"type":"database.get_updates","since":{"' + b"a" * 32 + b'":2}}\n')


def test_lan_announcement_datagram_is_pinned() -> None:
    assert encode_announcement(Announcement(CLUB, PEER, 40121)) == (
        b'{"name":"ClearSkiesBroadcast","version":1,"id":"' + CLUB.encode()
        + b'","peer":"' + PEER.encode() + b'","myport":40121}')
