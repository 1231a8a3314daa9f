"""UPnP IGD and NAT-PMP messages (sans-I/O), including hostile answers."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from csembed.nat import natpmp, upnp
from csembed.runtime.port_mapping import default_gateway

DESCRIPTION = b"""<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0"><device>
<deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>
<deviceList><device><deviceList><device><serviceList>
<service><serviceType>urn:schemas-upnp-org:service:WANPPPConnection:1</serviceType>
<controlURL>/ppp</controlURL></service>
<service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>
<controlURL>/ctl/IPConn</controlURL></service>
</serviceList></device></deviceList></device></deviceList></device></root>"""


def test_ssdp_search_and_answer() -> None:
    request = upnp.msearch_request().decode()
    assert request.startswith("M-SEARCH * HTTP/1.1\r\n") and 'MAN: "ssdp:discover"' in request
    answer = (b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\n"
              b"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n"
              b"LOCATION: http://10.0.0.1:5555/rootDesc.xml\r\n\r\n")
    assert upnp.parse_ssdp_response(answer) == "http://10.0.0.1:5555/rootDesc.xml"
    assert upnp.parse_ssdp_response(answer.replace(b"InternetGateway", b"Media")) is None
    assert upnp.parse_ssdp_response(answer.replace(b"http://", b"file://")) is None
    assert upnp.parse_ssdp_response(b"NOTIFY * HTTP/1.1\r\n\r\n") is None


def test_description_picks_the_ip_connection_and_resolves_its_url() -> None:
    gateway = upnp.parse_description(DESCRIPTION, "http://10.0.0.1:5555/rootDesc.xml")
    assert gateway.control_url == "http://10.0.0.1:5555/ctl/IPConn"
    assert gateway.service_type.endswith("WANIPConnection:1")
    assert gateway.host_port == ("10.0.0.1", 5555)
    with pytest.raises(upnp.UpnpError, match="no WANIPConnection"):
        upnp.parse_description(b"<root/>", "http://10.0.0.1/")
    bomb = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]><r>&a;</r>'
    with pytest.raises(upnp.UpnpError, match="DOCTYPE"):
        upnp.parse_description(bomb, "http://10.0.0.1/")
    with pytest.raises(upnp.UpnpError, match="over"):
        upnp.parse_description(b"<r>" + b" " * upnp.MAX_DOCUMENT + b"</r>", "http://x/")
    with pytest.raises(upnp.UpnpError, match="not XML"):
        upnp.parse_description(b"<r>", "http://x/")


def test_soap_call_and_answers() -> None:
    gateway = upnp.Gateway("http://10.0.0.1:5555/ctl/IPConn",
                           "urn:schemas-upnp-org:service:WANIPConnection:1")
    request = upnp.soap_request(gateway, "AddPortMapping", {"NewExternalPort": 40121,
                                                           "NewPortMappingDescription": "a<b"})
    head, _, body = request.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /ctl/IPConn HTTP/1.1\r\nHost: 10.0.0.1:5555")
    assert b'SOAPAction: "urn:schemas-upnp-org:service:WANIPConnection:1#AddPortMapping"' in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert b"<NewExternalPort>40121</NewExternalPort>" in body and b"a&lt;b" in body
    parts = [b"<s:Envelope xmlns:s=\"x\"><s:Body><u:GetExternalIPAddressResponse xmlns:u=\"y\">"
             b"<NewExternalIPAddress>1.2.3.4</NewExternalIPAddress>",
             b"</u:GetExternalIPAddressResponse></s:Body></s:Envelope>"]
    ok = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"".join(
        b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    response = upnp.parse_http_response(ok)
    assert upnp.parse_soap_response(response, "GetExternalIPAddress") == {
        "NewExternalIPAddress": "1.2.3.4"}
    fault = (b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 200\r\n\r\n"
             b"<s:Envelope xmlns:s=\"x\"><s:Body><s:Fault><detail><UPnPError>"
             b"<errorCode>718</errorCode><errorDescription>ConflictInMappingEntry"
             b"</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>")
    with pytest.raises(upnp.UpnpError, match="718 ConflictInMappingEntry"):
        upnp.parse_soap_response(upnp.parse_http_response(fault), "AddPortMapping")
    with pytest.raises(upnp.UpnpError, match="header end"):
        upnp.parse_http_response(b"HTTP/1.1 200 OK\r\n")


def test_natpmp_requests_and_answers() -> None:
    assert natpmp.external_address_request() == b"\x00\x00"
    assert natpmp.mapping_request("tcp", 40121, 40121, 3600) == \
        struct.pack("!BBHHHI", 0, 2, 0, 40121, 40121, 3600)
    address = natpmp.parse_response(struct.pack("!BBHI4B", 0, 128, 0, 77, 203, 0, 113, 5))
    assert address.external_ip == "203.0.113.5" and address.epoch == 77
    mapped = natpmp.parse_response(struct.pack("!BBHIHHI", 0, 130, 0, 1, 40121, 50000, 7200))
    assert (mapped.internal_port, mapped.external_port, mapped.lifetime) == (40121, 50000, 7200)
    with pytest.raises(natpmp.NatPmpError, match="not authorized"):
        natpmp.parse_response(struct.pack("!BBHI", 0, 130, 2, 1) + bytes(8))
    for bad in (b"", b"\x00\x02" + bytes(10), struct.pack("!BBHI", 0, 128, 0, 0),
                struct.pack("!BBHI", 0, 131, 0, 0) + bytes(8)):
        with pytest.raises(natpmp.NatPmpError):
            natpmp.parse_response(bad)


def test_default_gateway_from_the_route_table(tmp_path: Path) -> None:
    table = tmp_path / "route"
    table.write_text("Iface\tDestination\tGateway\tFlags\n"
                     "eth0\t0002A8C0\t00000000\t0001\n"
                     "eth0\t00000000\t0102A8C0\t0003\n")
    assert default_gateway(table) == "192.168.2.1"
    table.write_text("Iface\tDestination\tGateway\tFlags\n")
    assert default_gateway(table) is None
    assert default_gateway(tmp_path / "missing") is None
