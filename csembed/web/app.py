"""The page's routes: each turns one HTTP request into control commands.

Theory of operation
-------------------
:data:`ROUTES` maps ``(method, path)`` to a handler. Handlers never touch the
daemon's internals: they send control requests (the same JSON objects the
CLI sends over the socket) through a :data:`Control` callable, which the
server wires to :meth:`csembed.runtime.control_server.ControlServer.dispatch`
in-process. A control error reply becomes an HTTP error with the control
error's code and message as JSON, so the page can show it.

``GET /api/status`` gathers ``status_detail``, ``list_peers`` and
``list_transfers`` into one object (one poll per refresh);
``POST /api/code`` issues an access code for a share and returns it with a
QR code of the code (an SVG data URI made by ``segno``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from csembed.web.http import HttpError, Request
from csembed.web.page import APP_JS, STYLE_CSS, render_page

__all__ = ["ROUTES", "Control", "Response", "handle"]

Control = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
"""Sends one control request object, returns the reply object."""

_CONTROL_STATUS: Final = {"no_such_share": 404, "not_permitted": 403, "not_supported": 400,
                          "invalid_argument": 400, "internal_error": 500}


@dataclass(frozen=True)
class Response:
    """What a route answers."""

    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = field(default=())


def json_response(value: Any, status: int = 200) -> Response:
    return Response(status, "application/json", json.dumps(value).encode("utf-8"))


async def _call(control: Control, request: dict[str, Any]) -> dict[str, Any]:
    reply = await control(request)
    if "error" in reply:
        code = str(reply["error"])
        raise ControlFailed(_CONTROL_STATUS.get(code, 409), code, str(reply.get("message", "")))
    return reply


class ControlFailed(HttpError):
    """A control command refused; the page shows ``code`` and ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, message)
        self.code = code


async def _page(control: Control, request: Request, token: str) -> Response:
    return Response(200, "text/html; charset=utf-8", render_page(token).encode("utf-8"))


async def _script(control: Control, request: Request, token: str) -> Response:
    return Response(200, "text/javascript; charset=utf-8", APP_JS.encode("utf-8"))


async def _style(control: Control, request: Request, token: str) -> Response:
    return Response(200, "text/css; charset=utf-8", STYLE_CSS.encode("utf-8"))


async def _status(control: Control, request: Request, token: str) -> Response:
    status = await _call(control, {"type": "status_detail"})
    peers = await _call(control, {"type": "list_peers"})
    transfers = await _call(control, {"type": "list_transfers"})
    return json_response({"status": status, "peers": peers.get("peers", []),
                          "transfers": transfers.get("transfers", [])})


async def _code(control: Control, request: Request, token: str) -> Response:
    try:
        body = json.loads(request.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise HttpError(400, "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise HttpError(400, "the body must be a JSON object")
    path, mode = body.get("path"), body.get("mode", "read_write")
    if not isinstance(path, str) or mode not in ("read_write", "read_only"):
        raise HttpError(400, "give 'path' (a share) and 'mode' (read_write or read_only)")
    multi = body.get("multi_use") is True
    reply = await _call(control, {"type": "create_access_code", "path": path, "mode": mode,
                                  "max_uses": None if multi else 1})
    code = str(reply["access_code"])
    return json_response({"access_code": code, "mode": mode, "path": path,
                          "url": "clearskies://directory/" + code, "qr": qr_data_uri(code)})


def qr_data_uri(text: str) -> str:
    """An SVG QR code of ``text`` as a ``data:`` URI (medium error correction)."""
    import segno  # imported when used: the daemon starts without it if the page is off
    return str(segno.make(text, error="m", micro=False).svg_data_uri(scale=6, border=2))


Handler = Callable[[Control, Request, str], Awaitable[Response]]

ROUTES: Final[dict[tuple[str, str], Handler]] = {
    ("GET", "/"): _page,
    ("GET", "/app.js"): _script,
    ("GET", "/style.css"): _style,
    ("GET", "/api/status"): _status,
    ("POST", "/api/code"): _code,
}
"""Every route, by method and path. ``HEAD`` is served wherever ``GET`` is."""


async def handle(control: Control, request: Request, token: str) -> Response:
    """Answer ``request`` (already past the :class:`~csembed.web.guard.Guard`)."""
    method = "GET" if request.method == "HEAD" else request.method
    handler = ROUTES.get((method, request.path))
    if handler is None:
        if any(path == request.path for _, path in ROUTES):
            raise HttpError(405, f"{request.method} is not allowed on {request.path}")
        raise HttpError(404, "no such page")
    return await handler(control, request, token)
