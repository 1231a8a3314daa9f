"""The web page's HTTP parser and guard against hostile input (no sockets).

The parser must refuse, with the right status and before buffering more than
its bounds, everything a LAN attacker might send; the guard must refuse
foreign Host headers (DNS rebinding), wrong passwords (rate-limited) and
state-changing requests without the page's CSRF token.
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from csembed.web.guard import FailureBudget, Guard, WebOptions
from csembed.web.http import NEED_DATA, HttpError, Limits, Request, RequestParser


def parse(data: bytes, limits: Limits | None = None, step: int = 0) -> Request:
    parser = RequestParser(limits)
    chunks = [data] if step == 0 else [data[i:i + step] for i in range(0, len(data), step)]
    for chunk in chunks:
        parser.receive_data(chunk)
        event = parser.next_event()
        if event is not NEED_DATA:
            assert isinstance(event, Request)
            return event
    raise AssertionError("request incomplete")


def refused(data: bytes, limits: Limits | None = None) -> int:
    parser = RequestParser(limits)
    with pytest.raises(HttpError) as info:
        parser.receive_data(data)
        assert parser.next_event() is NEED_DATA
        raise AssertionError("accepted as incomplete")
    return info.value.status


def test_a_plain_get_and_a_post_parse_byte_by_byte() -> None:
    get = parse(b"GET /api/status?x=1&y=%20 HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n", step=1)
    assert (get.method, get.path, get.query) == ("GET", "/api/status", (("x", "1"), ("y", " ")))
    assert get.header("HOST") == "127.0.0.1:80" and get.body == b""
    post = parse(b"POST /api/code HTTP/1.1\nHost: h\nContent-Length: 5\n\nhello", step=3)
    assert post.body == b"hello"


def test_bytes_after_the_request_are_ignored_not_served() -> None:
    request = parse(b"POST /a HTTP/1.1\r\nContent-Length: 2\r\nHost: h\r\n\r\nokGET /b HTTP/1.1")
    assert request.body == b"ok" and request.path == "/a"


@pytest.mark.parametrize(("data", "status"), [
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),           # two Hosts
    (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),  # smuggling vector
    (b"POST / HTTP/1.1\r\nHost: a\r\n\r\n", 411),
    (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: 4097\r\n\r\n", 413),
    (b"DELETE / HTTP/1.1\r\n\r\n", 405),
    (b"get / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\n\r\n", 505),
    (b"GET / HTTP/1.1 extra\r\n\r\n", 400),
    (b"GET http://evil/ HTTP/1.1\r\n\r\n", 400),                     # absolute-form
    (b"GET /a\x00b HTTP/1.1\r\n\r\n", 400),
    (b"GET /%ff HTTP/1.1\r\n\r\n", 400),                             # not UTF-8
    (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", 400),                    # NUL in a value
    (b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", 400),                      # bare CR
    (b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", 400),              # obs-fold
    (b"GET / HTTP/1.1\r\nBad Name: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nnocolon\r\n\r\n", 400),
    (b"GET /?" + b"&".join([b"a=1"] * 17) + b" HTTP/1.1\r\n\r\n", 400),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),  # a TLS ClientHello
])
def test_malformed_requests_get_the_right_status(data: bytes, status: int) -> None:
    assert refused(data) == status


def test_oversized_heads_are_refused_before_they_are_complete() -> None:
    # a request line that never ends: refused once it passes the bound
    assert refused(b"GET /" + b"a" * 3000) == 414
    # endless headers without the blank line: refused at the head bound
    assert refused(b"GET / HTTP/1.1\r\n" + b"X-A: " + b"b" * 9000) == 431
    # too many small header fields
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(40))
    assert refused(b"GET / HTTP/1.1\r\n" + many) == 431
    assert refused(b"GET / HTTP/1.1\r\n" + many + b"\r\n") == 431


def test_the_parser_holds_no_more_than_its_bounds() -> None:
    parser = RequestParser(Limits(body=10))
    parser.receive_data(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n")
    assert parser.next_event() is NEED_DATA
    for _ in range(100):
        parser.receive_data(b"x" * 1000)  # a flood after the body
    request = parser.next_event()
    assert isinstance(request, Request) and request.body == b"x" * 10
    assert len(parser._buffer) <= 10


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(min_value=1, max_value=64))
def test_random_bytes_give_a_request_an_error_or_need_data(data: bytes, step: int) -> None:
    parser = RequestParser(Limits(request_line=128, head=256, headers=4, body=32))
    try:
        for i in range(0, len(data), step):
            parser.receive_data(data[i:i + step])
            event = parser.next_event()
            if event is not NEED_DATA:
                assert isinstance(event, Request)
                assert len(event.body) <= 32 and len(event.headers) <= 4
                return
    except HttpError as exc:
        assert 400 <= exc.status < 600
    assert len(parser._buffer) <= 600


# -- guard ------------------------------------------------------------------------------


def request(method: str = "GET", host: str = "127.0.0.1:8000", **headers: str) -> Request:
    lines = [f"{method} /api/code HTTP/1.1", f"Host: {host}"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    if method == "POST":
        lines.append("Content-Length: 0")
    return parse(("\r\n".join(lines) + "\r\n\r\n").encode())


def status_of(guard: Guard, req: Request, client: str = "10.0.0.9", now: float = 0.0) -> int:
    try:
        guard.check(req, client, now)
    except HttpError as exc:
        return exc.status
    return 200


def test_loopback_page_refuses_foreign_host_names() -> None:
    guard = Guard(WebOptions("127.0.0.1", 0), 8000, b"k" * 32)
    for host in ("127.0.0.1:8000", "localhost:8000", "LOCALHOST:8000", "[::1]:8000"):
        assert status_of(guard, request(host=host)) == 200
    for host in ("evil.example:8000", "127.0.0.1:9999", "127.0.0.1", "localhost.evil:8000"):
        assert status_of(guard, request(host=host)) == 403
    assert status_of(guard, parse(b"GET / HTTP/1.0\r\n\r\n")) == 400
    other = Guard(WebOptions("127.0.0.2", 0), 8000, b"k" * 32)
    assert status_of(other, request(host="127.0.0.2:8000")) == 200
    assert status_of(other, request(host="127.0.0.3:8000")) == 403


def test_post_needs_the_csrf_token_json_and_same_origin() -> None:
    guard = Guard(WebOptions("127.0.0.1", 0), 8000, b"k" * 32)
    token = guard.csrf_token
    good = {"X_CSRF_Token": token, "Content_Type": "application/json"}
    assert status_of(guard, request("POST", **good)) == 200
    assert status_of(guard, request("POST", **good, Origin="http://127.0.0.1:8000")) == 200
    assert status_of(guard, request("POST", Content_Type="application/json")) == 403
    assert status_of(guard, request("POST", X_CSRF_Token=token[:-1] + "0",
                                    Content_Type="application/json")) == 403
    assert status_of(guard, request("POST", X_CSRF_Token=token,
                                    Content_Type="text/plain")) == 415
    assert status_of(guard, request("POST", **good, Origin="http://evil.example")) == 403
    assert status_of(guard, request("POST", **good, Sec_Fetch_Site="cross-site")) == 403
    other = Guard(WebOptions("127.0.0.1", 0), 8000, b"j" * 32)
    assert other.csrf_token != token


def test_a_lan_page_needs_a_password() -> None:
    with pytest.raises(ValueError, match="password"):
        WebOptions("0.0.0.0", 8000)
    with pytest.raises(ValueError, match="8 to 256"):
        WebOptions("0.0.0.0", 8000, "short")
    guard = Guard(WebOptions("0.0.0.0", 8000, "piano-secret"), 8000, b"k" * 32)

    def basic(password: str) -> str:
        return "Basic " + base64.b64encode(f"me:{password}".encode()).decode()

    # any Host is let through on the LAN: the password is what guards it
    assert status_of(guard, request(host="192.168.1.5:8000")) == 401
    assert status_of(guard, request(host="x:1", Authorization=basic("piano-secret"))) == 200
    assert status_of(guard, request(Authorization="Basic !!!")) == 401
    assert status_of(guard, request(Authorization="Bearer piano-secret")) == 401
    for _ in range(5):
        assert status_of(guard, request(Authorization=basic("guess"))) == 401
    # the guesser is now held back, even with the right password...
    assert status_of(guard, request(Authorization=basic("piano-secret"))) == 429
    # ...but another address is not
    assert status_of(guard, request(Authorization=basic("piano-secret")), "10.0.0.7") == 200
    assert status_of(guard, request(Authorization=basic("piano-secret")), now=6.0) == 200


def test_the_failure_budget_has_a_global_bound_and_forgets_old_clients() -> None:
    budget = FailureBudget(burst=2, every=10.0, global_burst=3, global_every=10.0,
                           max_clients=2)
    for client in ("a", "b", "c"):
        assert budget.allowed(client, 0.0)
        budget.failed(client, 0.0)
    assert not budget.allowed("d", 0.0)  # global budget spent
    assert budget.allowed("d", 10.0)
    assert len(budget._clients) == 2
