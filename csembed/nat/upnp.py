"""UPnP Internet Gateway Device messages, sans-I/O: SSDP search, the device
description, and the SOAP calls for port mappings (UPnP IGD v1/v2).

Theory of operation
-------------------
Finding a gateway is three exchanges, each built and parsed here and carried
by the runtime (:mod:`csembed.runtime.port_mapping`):

1. an SSDP ``M-SEARCH`` multicast to 239.255.255.250:1900 for
   ``InternetGatewayDevice``; a gateway answers with an HTTP-like datagram
   whose ``LOCATION`` header is its description URL
   (:func:`msearch_request`, :func:`parse_ssdp_response`);
2. an HTTP GET of that URL; the XML names a ``WANIPConnection`` (or
   ``WANPPPConnection``) service and its control URL
   (:func:`parse_description`);
3. SOAP POSTs to the control URL: ``GetExternalIPAddress``,
   ``AddPortMapping`` (with a lease), ``DeletePortMapping``
   (:func:`soap_request`, :func:`parse_soap_response`).

Everything that arrives is bounded (:data:`MAX_DOCUMENT`), and XML with a
DOCTYPE is refused outright, so a hostile "gateway" cannot use entity
expansion; a SOAP fault becomes :class:`UpnpError` with the gateway's code.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Final
from urllib.parse import urljoin, urlsplit
from xml.sax.saxutils import escape

__all__ = [
    "MAX_DOCUMENT",
    "SSDP_ADDRESS",
    "Gateway",
    "HttpResponse",
    "UpnpError",
    "http_get",
    "msearch_request",
    "parse_description",
    "parse_http_response",
    "parse_soap_response",
    "parse_ssdp_response",
    "soap_request",
]

SSDP_ADDRESS: Final = ("239.255.255.250", 1900)
IGD_SEARCH: Final = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
WAN_SERVICES: Final = (
    "urn:schemas-upnp-org:service:WANIPConnection:2",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
)
MAX_DOCUMENT: Final = 64 * 1024
"""Largest description or SOAP answer we read."""


class UpnpError(Exception):
    """A gateway's answer we cannot use (malformed, or a SOAP fault)."""


@dataclass(frozen=True)
class Gateway:
    """A WAN connection service: where to POST and which service type to name."""

    control_url: str
    service_type: str

    @property
    def host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.control_url)
        if parts.scheme != "http" or not parts.hostname:
            raise UpnpError(f"control URL {self.control_url!r:.100} is not plain http")
        return parts.hostname, parts.port or 80


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def msearch_request(mx: int = 2) -> bytes:
    """The SSDP search datagram for an Internet Gateway Device."""
    return ("M-SEARCH * HTTP/1.1\r\n"
            f"HOST: {SSDP_ADDRESS[0]}:{SSDP_ADDRESS[1]}\r\n"
            'MAN: "ssdp:discover"\r\n'
            f"MX: {mx}\r\n"
            f"ST: {IGD_SEARCH}\r\n\r\n").encode("ascii")


def _headers(lines: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


def parse_ssdp_response(data: bytes) -> str | None:
    """The ``LOCATION`` of an SSDP answer from a gateway, or ``None``."""
    if len(data) > 8192:
        return None
    text = data.decode("latin-1")
    lines = text.split("\r\n")
    if not lines[0].startswith("HTTP/1.") or " 200" not in lines[0]:
        return None
    headers = _headers(lines[1:])
    location = headers.get("location", "")
    if "InternetGatewayDevice" not in headers.get("st", "") or \
            not location.startswith("http://"):
        return None
    return location


def http_get(url: str) -> bytes:
    """A GET request for ``url`` (HTTP/1.1, closed after the answer)."""
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return (f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Connection: close\r\n\r\n").encode("ascii")


def parse_http_response(data: bytes) -> HttpResponse:
    """Split a whole HTTP response (read to EOF); handles chunked bodies."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise UpnpError("HTTP response without a header end")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        raise UpnpError(f"bad HTTP status line {lines[0]!r:.80}") from None
    headers = _headers(lines[1:])
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out = bytearray()
        while True:
            size_line, sep, rest = body.partition(b"\r\n")
            try:
                size = int(size_line.split(b";")[0], 16)
            except ValueError:
                raise UpnpError("bad chunk size in HTTP response") from None
            if not sep or size == 0:
                break
            out += rest[:size]
            body = rest[size + 2:]
        body = bytes(out)
    elif "content-length" in headers and headers["content-length"].isdigit():
        body = body[:int(headers["content-length"])]
    return HttpResponse(status, headers, body)


def _parse_xml(document: bytes) -> ET.Element:
    if len(document) > MAX_DOCUMENT:
        raise UpnpError(f"UPnP document of {len(document)} bytes is over {MAX_DOCUMENT}")
    if b"<!DOCTYPE" in document or b"<!ENTITY" in document:
        raise UpnpError("UPnP document with a DOCTYPE refused")
    try:
        return ET.fromstring(document)
    except ET.ParseError as exc:
        raise UpnpError(f"UPnP document is not XML: {exc}") from None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_description(document: bytes, location: str) -> Gateway:
    """Find the WAN connection service in a device description."""
    root = _parse_xml(document)
    base = location
    for element in root.iter():
        if _local(element.tag) == "URLBase" and element.text:
            base = element.text.strip()
    found: dict[str, str] = {}
    for service in root.iter():
        if _local(service.tag) != "service":
            continue
        fields = {_local(child.tag): (child.text or "").strip() for child in service}
        kind = fields.get("serviceType", "")
        if kind in WAN_SERVICES and fields.get("controlURL"):
            found.setdefault(kind, fields["controlURL"])
    for kind in WAN_SERVICES:
        if kind in found:
            return Gateway(urljoin(base, found[kind]), kind)
    raise UpnpError("the gateway's description lists no WANIPConnection service")


def soap_request(gateway: Gateway, action: str, arguments: dict[str, str | int]) -> bytes:
    """A whole HTTP POST calling ``action`` with ``arguments`` (in order)."""
    args = "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in arguments.items())
    body = ('<?xml version="1.0"?>\r\n'
            '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
            's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/">'
            f'<s:Body><u:{action} xmlns:u="{gateway.service_type}">{args}</u:{action}>'
            '</s:Body></s:Envelope>\r\n').encode()
    parts = urlsplit(gateway.control_url)
    head = (f"POST {parts.path or '/'} HTTP/1.1\r\n"
            f"Host: {parts.netloc}\r\n"
            'Content-Type: text/xml; charset="utf-8"\r\n'
            f'SOAPAction: "{gateway.service_type}#{action}"\r\n'
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode("ascii")
    return head + body


def parse_soap_response(response: HttpResponse, action: str) -> dict[str, str]:
    """The output arguments of ``action``; :class:`UpnpError` for a fault."""
    root = _parse_xml(response.body)
    for element in root.iter():
        if _local(element.tag) == "UPnPError":
            fields = {_local(c.tag): (c.text or "").strip() for c in element}
            raise UpnpError(f"gateway refused {action}: error {fields.get('errorCode', '?')} "
                            f"{fields.get('errorDescription', '')}".rstrip())
    if response.status != 200:
        raise UpnpError(f"gateway answered {action} with HTTP {response.status}")
    for element in root.iter():
        if _local(element.tag) == f"{action}Response":
            return {_local(c.tag): (c.text or "").strip() for c in element}
    raise UpnpError(f"gateway's answer has no {action}Response")
