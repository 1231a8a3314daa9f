"""PCP (RFC 6887) MAP codec and the port mapper against a PCP server on loopback."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from csembed.nat import natpmp, pcp
from csembed.runtime.port_mapping import PortMapper

NONCE = bytes(range(1, 13))
SLOW = 5.0
"""First resend on loopback: no resend on a loaded machine, and a refusal not taken as
final would wait ~75 s and hit the tests' 30 s limit."""

# RFC 6887 7.1 + 11.1, field by field: version 2, opcode MAP, reserved, lifetime 3600,
# client ::ffff:192.0.2.33, nonce, protocol 6, reserved, internal port 40121,
# suggested external port 40121, suggested external address ::ffff:0.0.0.0.
REQUEST = bytes.fromhex(
    "02" "01" "0000" "00000e10"
    "00000000" "00000000" "0000ffff" "c0000221"
    "0102030405060708090a0b0c"
    "06" "000000" "9cb9" "9cb9"
    "00000000" "00000000" "0000ffff" "00000000")
# RFC 6887 7.2 + 11.1: version 2, R=1|MAP, reserved, result 0, lifetime 1800, epoch 77,
# 96 reserved bits, then the MAP body with assigned port 40122 at ::ffff:203.0.113.5.
RESPONSE = bytes.fromhex(
    "02" "81" "00" "00" "00000708" "0000004d" "000000000000000000000000"
    "0102030405060708090a0b0c"
    "06" "000000" "9cb9" "9cba"
    "00000000" "00000000" "0000ffff" "cb007105")


def parse(data: bytes) -> pcp.PcpMapResponse:
    return pcp.parse_map_response(data, nonce=NONCE, protocol="tcp", internal_port=40121)


def test_map_request_known_answer() -> None:
    assert pcp.map_request(client_ip="192.0.2.33", nonce=NONCE, protocol="tcp",
                           internal_port=40121, lifetime=3600,
                           external_port=40121) == REQUEST
    delete = pcp.map_request(client_ip="2001:db8::7", nonce=NONCE, protocol="udp",
                             internal_port=40121, lifetime=0, external_port=40122,
                             external_ip="203.0.113.5")
    assert len(delete) == 60
    assert delete[4:8] == b"\0\0\0\0"
    assert delete[8:24] == bytes.fromhex("20010db8000000000000000000000007")
    assert delete[36] == 17 and delete[40:44] == bytes.fromhex("9cb99cba")
    assert delete[44:60] == bytes.fromhex("00000000000000000000ffffcb007105")


def test_map_response_known_answer() -> None:
    answer = parse(RESPONSE)
    assert answer == pcp.PcpMapResponse(lifetime=1800, epoch=77, nonce=NONCE, protocol=6,
                                        internal_port=40121, external_port=40122,
                                        external_ip="203.0.113.5")
    # an option after the body (code 1 THIRD_PARTY, 16 bytes of address) is skipped
    option = bytes.fromhex("01000010") + bytes(16)
    assert parse(RESPONSE + option) == answer


def test_nonce_comes_from_the_injected_rng() -> None:
    assert pcp.new_nonce(lambda n: b"\x07" * n) == b"\x07" * 12
    with pytest.raises(ValueError):
        pcp.new_nonce(lambda n: b"\x07")
    with pytest.raises(ValueError):
        pcp.map_request(client_ip="192.0.2.33", nonce=b"short", protocol="tcp",
                        internal_port=1, lifetime=1)


def _with(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value):]


@pytest.mark.parametrize(("data", "message"), [
    (b"", "0 bytes"),
    (b"\x02\x81\x00", "3 bytes"),
    (RESPONSE[:59], "59 bytes"),
    (RESPONSE[:56], "MAP answer of 56"),
    (RESPONSE[:58], "58 bytes"),
    (RESPONSE[:8], "8 bytes"),  # a header cut short
    (RESPONSE[:20], "20 bytes"),
    (RESPONSE + b"\0" * 1100, "bytes"),
    (_with(RESPONSE, 1, b"\x01"), "not a PCP MAP answer"),  # a request, not an answer
    (_with(RESPONSE, 1, b"\x82"), "not a PCP MAP answer"),  # PEER, not MAP
    (_with(RESPONSE, 0, b"\x03"), "version 3"),
    (_with(RESPONSE, 24, b"\xff"), "another mapping"),  # nonce
    (_with(RESPONSE, 36, b"\x11"), "another mapping"),  # protocol
    (_with(RESPONSE, 40, b"\x00\x01"), "another mapping"),  # internal port
    (_with(RESPONSE, 42, b"\x00\x00"), "external port 0"),
    (RESPONSE + bytes.fromhex("01000020") + bytes(16), "past the end"),
])
def test_hostile_answers_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(pcp.PcpError, match=message):
        parse(data)


def test_result_codes_are_named() -> None:
    with pytest.raises(pcp.PcpResultError, match="NOT_AUTHORIZED") as refused:
        parse(_with(_with(RESPONSE, 3, b"\x02"), 4, b"\x00\x00\x00\x1e"))
    assert refused.value.result == 2 and refused.value.lifetime == 30
    with pytest.raises(pcp.PcpResultError, match="result 99"):
        parse(_with(RESPONSE, 3, bytes([99]))[:24])  # errors may be header-only


def test_version_negotiation_both_ways() -> None:
    # a NAT-PMP-only gateway's answer to a PCP request (RFC 6887 9)
    with pytest.raises(pcp.PcpVersionError, match="NAT-PMP only") as old:
        parse(struct.pack("!BBHI", 0, 129, 1, 500))
    assert old.value.version == 0
    # a PCP gateway of another version saying so
    with pytest.raises(pcp.PcpVersionError, match="version 1"):
        parse(_with(_with(RESPONSE, 0, b"\x01"), 3, b"\x01"))
    # a PCP-only gateway's answer to a NAT-PMP request
    with pytest.raises(natpmp.NatPmpRefused, match="speaks PCP"):
        natpmp.parse_response(_with(RESPONSE, 3, b"\x01")[:24])


@given(st.sampled_from([b"", b"\x02\x81\x00\x00", b"\x00\x81\x00\x01", RESPONSE[:24],
                        RESPONSE]), st.binary(max_size=1200))
def test_garbage_raises_only_pcp_errors(prefix: bytes, data: bytes) -> None:
    try:
        parse(prefix + data)
    except pcp.PcpError:
        pass


# -- a PCP (or NAT-PMP-only) gateway on 127.0.0.1 ------------------------------------------


class Gateway(asyncio.DatagramProtocol):
    """A small PCP server: grants what is asked (lifetime capped at 120 s)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode  # "pcp" | "nat-pmp" | "refuse" | "noisy"
        self.requests: list[bytes] = []
        self.mappings: dict[tuple[int, int], int] = {}  #: (protocol, internal) -> external
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.requests.append(data)
        if data[0] == 0:
            self.transport.sendto(self._natpmp(data), addr)
        elif self.mode == "nat-pmp":
            self.transport.sendto(struct.pack("!BBHI", 0, 128 + data[1], 1, 9), addr)
        else:
            for answer in self._pcp(data):
                self.transport.sendto(answer, addr)

    def _pcp(self, data: bytes) -> list[bytes]:
        lifetime = min(struct.unpack_from("!I", data, 4)[0], 120)
        protocol, internal, suggested = struct.unpack_from("!B3xHH", data, 36)
        result = 2 if self.mode == "refuse" else 0
        if lifetime == 0:
            self.mappings.pop((protocol, internal), None)
        elif not result:
            self.mappings[(protocol, internal)] = suggested or internal
        external = self.mappings.get((protocol, internal), suggested)
        body = data[24:42] + struct.pack("!H", external) + bytes(10) + b"\xff\xff" \
            + bytes((203, 0, 113, 5))
        answer = struct.pack("!BBBBII", 2, 0x81, 0, result, lifetime, 1234) + bytes(12) + body
        if self.mode != "noisy":
            return [answer]
        wrong_nonce = answer[:24] + bytes(12) + answer[36:]
        return [b"\x02garbage", wrong_nonce, answer]

    def _natpmp(self, data: bytes) -> bytes:
        if self.mode != "nat-pmp":
            return struct.pack("!BBBBII", 2, 0x80 | data[1], 0, 1, 0, 0) + bytes(12)
        if data[1] == 0:
            return struct.pack("!BBHI4B", 0, 128, 0, 9, 198, 51, 100, 7)
        internal, suggested, lifetime = struct.unpack_from("!HHI", data, 4)
        key = (data[1], internal)
        if lifetime == 0:
            self.mappings.pop(key, None)
        else:
            self.mappings[key] = suggested
        return struct.pack("!BBHIHHI", 0, 128 + data[1], 0, 9, internal, suggested,
                           min(lifetime, 120))


async def _gateway(mode: str) -> tuple[Gateway, int, Any]:
    loop = asyncio.get_running_loop()
    transport, gateway = await loop.create_datagram_endpoint(
        lambda: Gateway(mode), local_addr=("127.0.0.1", 0))
    return gateway, transport.get_extra_info("sockname")[1], transport


def _mapper(port: int, gateway_port: int) -> PortMapper:
    counter = iter(range(1, 100))
    return PortMapper(40121, udp=True, lease=600, methods=("pcp", "nat-pmp"),
                      gateway="127.0.0.1", gateway_port=gateway_port,
                      rng=lambda n: bytes([next(counter)]) * n, first_wait=SLOW)


def test_pcp_maps_renews_and_deletes() -> None:
    asyncio.run(asyncio.wait_for(_pcp_maps_renews_and_deletes(), 30))


async def _pcp_maps_renews_and_deletes() -> None:
    gateway, port, transport = await _gateway("pcp")
    try:
        mapper = _mapper(40121, port)
        await mapper.refresh()
        assert mapper.method == "pcp", mapper.error
        assert mapper.external == ("203.0.113.5", 40121) and mapper.udp_mapped
        assert mapper.lease == 120 and mapper.next_refresh() == 60  # half the lifetime
        tcp_request, udp_request = gateway.requests
        assert tcp_request[8:24] == b"\0" * 10 + b"\xff\xff" + bytes((127, 0, 0, 1))
        assert tcp_request[24:36] == b"\x01" * 12 and udp_request[24:36] == b"\x02" * 12
        assert gateway.mappings == {(6, 40121): 40121, (17, 40121): 40121}
        await mapper.refresh()  # renewal: same nonces, the assigned port suggested
        assert [r[24:36] for r in gateway.requests[2:]] == [b"\x01" * 12, b"\x02" * 12]
        assert struct.unpack_from("!I", gateway.requests[2], 4)[0] == 120
        await mapper.remove()
        deletes = gateway.requests[4:]
        assert [struct.unpack_from("!I", r, 4)[0] for r in deletes] == [0, 0]
        assert [r[24:36] for r in deletes] == [b"\x01" * 12, b"\x02" * 12]
        assert gateway.mappings == {} and mapper.external is None
    finally:
        transport.close()


def test_natpmp_only_gateway_gets_natpmp_after_one_pcp_request() -> None:
    asyncio.run(asyncio.wait_for(_natpmp_only_gateway_gets_natpmp_after_one_pcp_request(), 30))


async def _natpmp_only_gateway_gets_natpmp_after_one_pcp_request() -> None:
    gateway, port, transport = await _gateway("nat-pmp")
    try:
        mapper = _mapper(40121, port)
        await mapper.refresh()
        assert mapper.method == "nat-pmp", mapper.error
        assert mapper.external == ("198.51.100.7", 40121) and mapper.udp_mapped
        assert [r[0] for r in gateway.requests] == [2, 0, 0, 0]
        await mapper.refresh()  # PCP is not asked again
        assert [r[0] for r in gateway.requests[4:]] == [0, 0, 0]
        await mapper.remove()
        assert gateway.mappings == {}
    finally:
        transport.close()


def test_pcp_only_gateway_is_named_by_the_natpmp_client() -> None:
    asyncio.run(asyncio.wait_for(_pcp_only_gateway_is_named_by_the_natpmp_client(), 30))


async def _pcp_only_gateway_is_named_by_the_natpmp_client() -> None:
    gateway, port, transport = await _gateway("pcp")
    try:
        mapper = PortMapper(40121, udp=False, methods=("nat-pmp",), gateway="127.0.0.1",
                            gateway_port=port, first_wait=SLOW)
        await mapper.refresh()
        assert mapper.external is None and "speaks PCP version 2" in (mapper.error or "")
        assert len(gateway.requests) == 1  # a refusal ends the exchange: no resends
    finally:
        transport.close()


def test_refusal_is_reported_at_once_and_junk_is_ignored() -> None:
    asyncio.run(asyncio.wait_for(_refusal_is_reported_at_once_and_junk_is_ignored(), 30))


async def _refusal_is_reported_at_once_and_junk_is_ignored() -> None:
    gateway, port, transport = await _gateway("refuse")
    try:
        mapper = PortMapper(40121, udp=False, methods=("pcp",), gateway="127.0.0.1",
                            gateway_port=port, first_wait=SLOW)
        await mapper.refresh()
        assert mapper.external is None and "NOT_AUTHORIZED" in (mapper.error or "")
        assert len(gateway.requests) == 1
        gateway.mode = "noisy"  # garbage and a wrong nonce arrive before the answer
        await mapper.refresh()
        assert mapper.method == "pcp" and mapper.external == ("203.0.113.5", 40121)
    finally:
        transport.close()
