"""The daemon's side of the control protocol: every command, plus three of our own.

Theory of operation
-------------------
:class:`DaemonControl` implements :class:`~csembed.control.handler.ControlHandler`
on a running :class:`~csembed.runtime.daemon.Daemon`: the control server has
already checked each request against the command table, so each method only
does the work and returns the value the table turns into the reply.

:class:`DaemonControlServer` serves it, and answers three requests the
shared command table does not (yet) know before handing everything else to
the base server:

==========================  =============================================================
``create_access_code``      the table's command, plus optional ``max_uses`` (integer
                            >= 1, or ``null`` for unlimited; default 1) and ``expires``
                            (seconds > 0, or ``null`` for never; default 86400)
``rescan``                  optional ``path``: rescan that share (or every share) now;
                            replies ``{"shares": n}``
``read_file``               ``path`` (the share), ``file`` (path inside it), optional
                            ``offset`` (default 0) and ``count`` (1..1048576, default
                            1048576): ``{"size", "offset", "data" (base64), "eof"}`` --
                            read from our copy, or streamed from a peer that has it
==========================  =============================================================

Errors follow control.md: ``invalid_argument`` for a bad argument, a
command-specific code or an errno name from the daemon, ``internal_error``
(logged) for a bug; the connection keeps serving after any of them.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from csembed.control.commands import parse_request
from csembed.control.errors import ControlRequestError
from csembed.control.handler import AccessMode, ControlHandler, DaemonStatus, ShareInfo
from csembed.control.lines import encode_line, parse_json_line
from csembed.control.server import ControlServer

if TYPE_CHECKING:
    from csembed.runtime.daemon import Daemon

__all__ = ["EXTRA_COMMANDS", "DaemonControl", "DaemonControlServer"]

log = logging.getLogger("csembed.control")

DEFAULT_CODE_LIFETIME: Final = 24 * 3600.0
MAX_READ: Final = 1 << 20


class DaemonControl(ControlHandler):
    """Control commands carried out on a :class:`Daemon`."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    async def stop(self) -> None:
        asyncio.get_running_loop().call_soon(self.daemon.request_stop)

    async def pause(self) -> None:
        self.daemon.pause()

    async def resume(self) -> None:
        self.daemon.resume()

    async def status(self) -> DaemonStatus:
        daemon = self.daemon
        return DaemonStatus(
            paused=daemon.paused,
            tracking=daemon.finder.tracker is not None and daemon.finder.tracker.connected,
            nat_punctured=False,
            upload_rate=int(daemon.limits.upload.throughput()),
            download_rate=int(daemon.limits.download.throughput()),
            extra=daemon.status())

    async def create_share(self, path: str) -> Mapping[str, Any]:  # type: ignore[override]
        return await self.daemon.create_share(path)

    async def list_shares(self) -> Sequence[ShareInfo]:
        daemon = self.daemon
        out = []
        for share in daemon.shares.values():
            info = daemon.share_status(share)
            out.append(ShareInfo(info.pop("path"), info.pop("status"), info))
        for attach in daemon.pending.values():
            info = daemon.attach_status(attach)
            out.append(ShareInfo(info.pop("path"), info.pop("status"), info))
        for share_id in daemon.unloadable:
            info = daemon.unloadable_status(share_id)
            out.append(ShareInfo(info.pop("path"), info.pop("status"), info))
        return out

    async def add_share(self, code: str, path: str) -> Mapping[str, Any]:  # type: ignore[override]
        return await self.daemon.add_share(code, path)

    async def remove_share(self, path: str) -> None:
        await self.daemon.remove_share(path)

    async def create_access_code(self, path: str, mode: AccessMode, *,
                                 max_uses: int | None = 1,
                                 expires: float | None = DEFAULT_CODE_LIFETIME) -> str:
        return await self.daemon.create_access_code(path, mode.value, max_uses=max_uses,
                                                    lifetime=expires)

    async def get_config(self) -> Mapping[str, Any]:
        return dict(self.daemon.config)

    async def set_config(self, config: Mapping[str, Any]) -> None:
        await self.daemon.set_config(config)

    async def get_config_value(self, key: str) -> Any:
        if key not in self.daemon.config:
            raise ControlRequestError("no_such_key", f"no configuration key {key[:80]!r}; "
                                      "known keys: " + ", ".join(self.daemon.config))
        return self.daemon.config[key]

    async def set_config_value(self, key: str, value: Any) -> None:
        await self.daemon.set_config({key: value})

    async def list_peers(self) -> Sequence[Mapping[str, Any]]:
        return self.daemon.peers()

    async def list_transfers(self) -> Sequence[Mapping[str, Any]]:
        return self.daemon.transfers()

    # -- our own commands

    async def rescan(self, path: str | None = None) -> Mapping[str, Any]:
        return {"shares": self.daemon.rescan(path)}

    async def read_file(self, path: str, file: str, offset: int = 0,
                        count: int = MAX_READ) -> Mapping[str, Any]:
        reply = await self.daemon.read_file(path, file, offset, count)
        reply["data"] = base64.b64encode(reply["data"]).decode("ascii")
        return reply


# -- the extra commands' arguments ------------------------------------------------------


def _bad(command: str, name: str, why: str) -> ControlRequestError:
    return ControlRequestError("invalid_argument", f"{command}: '{name}' {why}")


def _integer(low: int, high: int | None, nullable: bool) -> Callable[[str, str, Any], Any]:
    def check(command: str, name: str, value: Any) -> int | None:
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < low \
                or (high is not None and value > high):
            bound = f"from {low}" + (f" to {high}" if high is not None else " up")
            raise _bad(command, name, f"must be an integer {bound}"
                       + (" or null" if nullable else "") + f", got {value!r:.40}")
        return value
    return check


def _seconds(command: str, name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e9:
        raise _bad(command, name, f"must be a positive number of seconds or null, "
                   f"got {value!r:.40}")
    return float(value)


def _text(command: str, name: str, value: Any, limit: int = 4096) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= limit \
            or any(ord(c) < 0x20 for c in value):
        raise _bad(command, name, f"must be a string of 1-{limit} characters without "
                   "control characters")
    return value


def _abs_path(command: str, name: str, value: Any) -> str:
    text = _text(command, name, value)
    if not text.startswith("/"):
        raise _bad(command, name, f"must be an absolute path, got {text[:80]!r}")
    return text


@dataclass(frozen=True)
class ExtraArg:
    """An argument of one of our own commands (``default`` when absent)."""

    name: str
    check: Callable[[str, str, Any], Any]
    required: bool = False


EXTRA_COMMANDS: Final[Mapping[str, tuple[ExtraArg, ...]]] = {
    "create_access_code": (ExtraArg("max_uses", _integer(1, None, True)),
                           ExtraArg("expires", _seconds)),
    "rescan": (ExtraArg("path", _abs_path),),
    "read_file": (ExtraArg("path", _abs_path, True), ExtraArg("file", _text, True),
                  ExtraArg("offset", _integer(0, None, False)),
                  ExtraArg("count", _integer(1, MAX_READ, False))),
}
"""Our additions: command -> extra arguments (see the module docstring)."""


def _error_reply(exc: BaseException) -> dict[str, str]:
    if isinstance(exc, ControlRequestError):
        return exc.reply()
    if isinstance(exc, OSError) and exc.errno:
        code = errno.errorcode.get(exc.errno, "EIO")
        where = f" '{exc.filename}'" if exc.filename else ""
        return {"error": code, "message": f"{exc.strerror or code}{where}"}
    return {"error": "internal_error", "message": f"{type(exc).__name__}: {exc}"[:500]}


class DaemonControlServer(ControlServer):
    """The control server with :data:`EXTRA_COMMANDS` (module docstring)."""

    async def dispatch(self, line: bytes) -> bytes:
        try:
            body = parse_json_line(line)
        except ValueError:
            return await super().dispatch(line)
        if not isinstance(body, dict) or body.get("type") not in EXTRA_COMMANDS:
            return await super().dispatch(line)
        kind = str(body["type"])
        try:
            args: dict[str, Any] = {}
            if kind == "create_access_code":
                args.update(parse_request(line).args)  # the table checks path and mode
            for arg in EXTRA_COMMANDS[kind]:
                if arg.name in body:
                    args[arg.name] = arg.check(kind, arg.name, body[arg.name])
                elif arg.required:
                    raise _bad(kind, arg.name, "is required")
            method: Callable[..., Awaitable[Any]] = getattr(self.handler, kind)
            result = await method(**args)
            reply = {"access_code": result} if kind == "create_access_code" else dict(result)
            return encode_line(reply)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not isinstance(exc, ControlRequestError | OSError):
                log.exception("control command %s failed", kind)
            return encode_line(_error_reply(exc))
