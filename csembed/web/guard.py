"""Who may use the web page, and which requests may change anything.

Theory of operation
-------------------
:class:`Guard` checks every request before it reaches a route, in this order:

1. **Host** (against DNS rebinding): when the page is bound to a loopback
   address, the ``Host`` header must name a loopback host (``127.0.0.1``,
   ``localhost``, ``[::1]`` or the bound address) and our port. A page on evil.example whose name
   was re-pointed at 127.0.0.1 sends ``Host: evil.example`` and is refused.
   When bound elsewhere, a password is required, and a rebinding page cannot
   supply it (the browser keeps credentials per origin), so any Host is let
   through to step 2.
2. **Password** (HTTP Basic; required unless bound to loopback): compared in
   constant time. Failed attempts are rate-limited per client address and
   globally (:class:`FailureBudget`), so guessing is slow, while a client that
   has the password is never refused on account of someone else's guesses
   from another address -- unless the global budget is spent.
3. **CSRF** on state-changing requests (POST): the request must carry
   ``X-CSRF-Token`` equal to the token embedded in the page (only readable by
   a same-origin script that passed steps 1-2), be ``application/json`` (a
   cross-site form cannot send that without a CORS preflight, which we never
   grant), and if the browser sends ``Origin`` or ``Sec-Fetch-Site``, they
   must say same-origin.

The token is an HMAC of a per-process random secret, so it changes on every
daemon start and is never stored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from csembed.web.http import HttpError, Request

__all__ = ["FailureBudget", "Guard", "WebOptions", "is_loopback"]

_LOOPBACK_NAMES: Final = ("127.0.0.1", "localhost", "[::1]")


def is_loopback(host: str) -> bool:
    """True for a loopback address or ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class WebOptions:
    """Where the page listens and the password that guards it (``None``: none)."""

    host: str = "127.0.0.1"
    port: int = 8384
    password: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"web port out of range: {self.port}")
        if not is_loopback(self.host) and not self.password:
            raise ValueError(f"the web page on {self.host} would face the network: "
                             "set a password (--web-password) or bind it to 127.0.0.1")
        if self.password is not None and not 8 <= len(self.password) <= 256:
            raise ValueError("the web password must be 8 to 256 characters long")


class FailureBudget:
    """Token buckets of failed logins: one per client address, one overall.

    ``burst`` failures are allowed at once, then one more every ``every``
    seconds. Only the ``max_clients`` most recent addresses are tracked. Every
    call takes ``now`` (monotonic seconds); nothing here reads a clock.
    """

    def __init__(self, *, burst: int = 5, every: float = 6.0,
                 global_burst: int = 30, global_every: float = 1.0,
                 max_clients: int = 256) -> None:
        self._burst, self._every = burst, every
        self._global_burst, self._global_every = global_burst, global_every
        self._max_clients = max_clients
        self._clients: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._global = (float(global_burst), float("-inf"))  # full, whenever asked

    @staticmethod
    def _refill(state: tuple[float, float], burst: int, every: float,
                now: float) -> float:
        tokens, since = state
        return min(float(burst), tokens + (now - since) / every)

    def allowed(self, client: str, now: float) -> bool:
        """May ``client`` try a password at ``now``?"""
        state = self._clients.get(client, (float(self._burst), now))
        return (self._refill(state, self._burst, self._every, now) >= 1.0 and
                self._refill(self._global, self._global_burst, self._global_every, now) >= 1.0)

    def failed(self, client: str, now: float) -> None:
        """Count one failed attempt from ``client`` at ``now``."""
        state = self._clients.pop(client, (float(self._burst), now))
        tokens = self._refill(state, self._burst, self._every, now) - 1.0
        self._clients[client] = (max(tokens, 0.0), now)
        while len(self._clients) > self._max_clients:
            self._clients.popitem(last=False)
        left = self._refill(self._global, self._global_burst, self._global_every, now) - 1.0
        self._global = (max(left, 0.0), now)


class Guard:
    """Checks requests against :class:`WebOptions`; see the module docstring."""

    def __init__(self, options: WebOptions, port: int, secret: bytes) -> None:
        self.options = options
        self.port = port
        self.loopback = is_loopback(options.host)
        self.csrf_token = hmac.new(secret, b"csembed web csrf", hashlib.sha256).hexdigest()
        bound = f"[{options.host}]" if ":" in options.host else options.host
        self._hosts = frozenset(f"{name}:{port}".lower() for name in (*_LOOPBACK_NAMES, bound))
        self._failures = FailureBudget()

    def check(self, request: Request, client: str, now: float) -> None:
        """Raise :class:`HttpError` (403, 401 or 429) unless the request, arrived at
        ``now``, may proceed."""
        host = request.header("host")
        if host is None:
            raise HttpError(400, "a request needs a Host header")
        if self.loopback and host.lower() not in self._hosts:
            raise HttpError(403, f"this page answers only to "
                            f"127.0.0.1:{self.port} or localhost:{self.port}")
        if self.options.password:
            self._check_password(request, client, now)
        if request.method == "POST":
            self._check_csrf(request, host)

    def _check_password(self, request: Request, client: str, now: float) -> None:
        assert self.options.password is not None
        if not self._failures.allowed(client, now):
            raise HttpError(429, "too many wrong passwords; wait a minute")
        given = _basic_password(request.header("authorization"))
        if given is None:
            raise HttpError(401, "a password is required")
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                                   self.options.password.encode("utf-8")):
            self._failures.failed(client, now)
            raise HttpError(401, "wrong password")

    def _check_csrf(self, request: Request, host: str) -> None:
        token = request.header("x-csrf-token") or ""
        if not hmac.compare_digest(token.encode("latin-1"), self.csrf_token.encode("ascii")):
            raise HttpError(403, "missing or wrong CSRF token; reload the page")
        content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise HttpError(415, "state-changing requests must be application/json")
        origin = request.header("origin")
        if origin is not None and origin.lower() != f"http://{host.lower()}":
            raise HttpError(403, "cross-origin request refused")
        site = request.header("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            raise HttpError(403, "cross-site request refused")


def _basic_password(header: str | None) -> str | None:
    if header is None:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or len(encoded) > 1024:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    _, sep, password = decoded.partition(":")
    return password if sep else None
