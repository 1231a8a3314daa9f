"""STUN (RFC 5389): the codec, the retrying probe, NAT classification, and our
endpoint asking a real coturn on loopback."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import pytest
from test_nat_support import TURNSERVER, free_udp_port, stun_server

from csembed.nat.stun import (
    MAGIC_COOKIE,
    StunError,
    StunProbe,
    binding_request,
    classify,
    is_stun,
    parse_response,
)
from csembed.runtime.utp_endpoint import UtpEndpoint

TID = bytes(range(12))


def response(attrs: bytes, kind: int = 0x0101, tid: bytes = TID) -> bytes:
    return struct.pack("!HHI12s", kind, len(attrs), MAGIC_COOKIE, tid) + attrs


def xor_v4(host: bytes, port: int) -> bytes:
    x = bytes(a ^ b for a, b in zip(host, struct.pack("!I", MAGIC_COOKIE), strict=True))
    return struct.pack("!HHBBH", 0x0020, 8, 0, 1, port ^ (MAGIC_COOKIE >> 16)) + x


def test_request_and_xor_mapped_address() -> None:
    request = binding_request(TID)
    assert is_stun(request) and len(request) == 20 and request[:2] == b"\x00\x01"
    parsed = parse_response(response(xor_v4(bytes([203, 0, 113, 9]), 40121)))
    assert parsed.mapped == ("203.0.113.9", 40121) and parsed.transaction_id == TID
    # the old MAPPED-ADDRESS is a fallback; an IPv6 XOR address uses the cookie and ID
    plain = struct.pack("!HHBBH", 0x0001, 8, 0, 1, 5000) + bytes([10, 0, 0, 1])
    assert parse_response(response(plain)).mapped == ("10.0.0.1", 5000)
    raw6 = bytes(15) + b"\x01"
    mask = struct.pack("!I", MAGIC_COOKIE) + TID
    v6 = struct.pack("!HHBBH", 0x0020, 20, 0, 2, 7 ^ (MAGIC_COOKIE >> 16)) + \
        bytes(a ^ b for a, b in zip(raw6, mask, strict=True))
    assert parse_response(response(v6)).mapped == ("::1", 7)


def test_error_and_hostile_responses() -> None:
    err = struct.pack("!HHHBB", 0x0009, 8, 0, 4, 20) + b"Nope"
    assert parse_response(response(err, kind=0x0111)).error == "STUN error 420: Nope"
    assert parse_response(response(b"")).mapped is None
    for bad in (b"", b"\x01" * 20, response(b"\x00\x20\x00\x08\x00"),
                response(struct.pack("!HH", 0x0020, 40)),
                response(struct.pack("!HHBBH", 0x0020, 8, 0, 9, 1) + bytes(4)),
                response(b"", kind=0x0001)):
        with pytest.raises(StunError):
            parse_response(bad)


def test_probe_retries_on_a_doubling_schedule_then_gives_up() -> None:
    probe = StunProbe(("192.0.2.1", 3478), TID, 0.0, first_rto=0.5, tries=3)
    sent = []
    now = 0.0
    while not probe.done:
        if probe.datagrams_to_send(now):
            sent.append(now)
        timer = probe.get_timer()
        assert timer is not None
        now = timer
        probe.handle_timer(now)
    assert sent == [0.0, 0.5, 1.5] and now == 3.5
    assert probe.error is not None and "no answer" in probe.error
    answered = StunProbe(("192.0.2.1", 3478), TID, 0.0)
    assert not answered.receive(parse_response(response(b"", tid=bytes(12))))
    assert answered.receive(parse_response(response(xor_v4(bytes(4), 1))))
    assert answered.done and answered.mapped == ("0.0.0.0", 1)


def test_classify() -> None:
    local = ("192.168.1.5", 40121)
    assert classify(local, []) == "unknown"
    assert classify(local, [local]) == "none"
    assert classify(local, [("203.0.113.1", 40121)]) == "unknown"
    assert classify(local, [("203.0.113.1", 40121)] * 2) == "cone"
    assert classify(local, [("203.0.113.1", 40121), ("203.0.113.1", 5555)]) == "symmetric"


@pytest.mark.skipif(TURNSERVER is None, reason="coturn's turnserver is not installed")
def test_endpoint_asks_a_real_coturn_on_loopback(tmp_path: Path) -> None:
    port = free_udp_port()
    with stun_server(tmp_path, ["127.0.0.1"], port):
        async def main() -> tuple[tuple[str, int], tuple[str, int]]:
            endpoint = await UtpEndpoint.open("127.0.0.1", 0)
            try:
                return endpoint.local_address, await asyncio.wait_for(
                    endpoint.stun(("127.0.0.1", port)), 20)
            finally:
                endpoint.close()
        local, seen = asyncio.run(main())
    assert seen == local  # no NAT on loopback: the server sees our own address
