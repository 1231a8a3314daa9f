"""The control command table: arguments, their checks, and reply shapes.

Theory of operation
-------------------
:data:`COMMANDS` maps each command ``type`` to a :class:`Command`: the
arguments it takes (name, check, required), and the function that turns the
handler's return value into the reply object. :func:`parse_request` turns one
request line into a :class:`Request` -- the command and its checked, typed
arguments -- or raises :class:`~csembed.control.errors.ControlRequestError`
with one of these codes:

==================  ==========================================================
``invalid_json``    the line is not UTF-8 JSON
``invalid_request`` the JSON is not an object, or has no string ``type``
``not_understood``  ``type`` names no command we know (control.md's code)
``invalid_argument`` an argument is missing or has the wrong type or value
==================  ==========================================================

Keys a command does not know are ignored (control.md: "unrecognized keys
should be ignored"). Paths must be absolute: the daemon's working directory
means nothing to the client. An optional argument that is absent is not
passed to the handler, whose method signature holds its default; an explicit
``null`` is checked like any other value (for ``max_uses`` and ``expires`` it
means "no limit").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from csembed.control.errors import ControlRequestError
from csembed.control.handler import (
    MAX_READ,
    AccessMode,
    DaemonStatus,
    FileChunk,
    ShareInfo,
    ShareMode,
)
from csembed.control.lines import parse_json_line
from csembed.protocol.jsonvalues import is_strict_int

__all__ = ["COMMANDS", "Arg", "Command", "Request", "parse_request"]

MAX_PATH: Final = 4096
MAX_TEXT: Final = 1024
MAX_OFFSET: Final = (1 << 63) - 1  # the largest 64-bit off_t
MAX_SECONDS: Final = 1e9  # ~31 years: beyond that "expires" is a mistake, not a plan


def _bad(command: str, name: str, why: str) -> ControlRequestError:
    return ControlRequestError("invalid_argument", f"{command}: '{name}' {why}")


def _text(command: str, name: str, value: Any, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str):
        raise _bad(command, name, f"must be a string, not {_json_type(value)}")
    if not value:
        raise _bad(command, name, "must not be empty")
    if len(value) > limit:
        raise _bad(command, name, f"is longer than {limit} characters")
    if any(ord(c) < 0x20 for c in value):
        raise _bad(command, name, "must not contain control characters")
    return value


def _path(command: str, name: str, value: Any) -> str:
    text = _text(command, name, value, MAX_PATH)
    if not text.startswith("/"):
        raise _bad(command, name, f"must be an absolute path, got {text[:80]!r}")
    return text


def _mode(command: str, name: str, value: Any) -> AccessMode:
    try:
        return AccessMode(value)
    except ValueError:
        choices = ", ".join(m.value for m in AccessMode)
        raise _bad(command, name, f"must be one of {choices}, got {str(value)[:40]!r}") from None


def _share_mode(command: str, name: str, value: Any) -> ShareMode:
    if isinstance(value, str):
        try:
            return ShareMode(value.replace("-", "_"))
        except ValueError:
            pass
    choices = ", ".join(m.value for m in ShareMode)
    raise _bad(command, name, f"must be one of {choices}, got {str(value)[:40]!r}")


def _object(command: str, name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(command, name, f"must be an object, not {_json_type(value)}")
    return value


def _any(command: str, name: str, value: Any) -> Any:
    return value


def _flag(command: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _bad(command, name, f"must be true or false, not {_json_type(value)}")
    return value


def _file(command: str, name: str, value: Any) -> str:
    # A path inside a share, relative to its root (a leading "/" is allowed).
    return _text(command, name, value, MAX_PATH)


def _integer(low: int, high: int | None = None, *,
             nullable: bool = False) -> Callable[[str, str, Any], int | None]:
    """A check for a JSON integer in ``low..high`` (``None``: no upper bound)."""
    span = f"from {low}" + (f" to {high}" if high is not None else " up")
    wanted = f"an integer {span}" + (" or null" if nullable else "")

    def check(command: str, name: str, value: Any) -> int | None:
        if value is None and nullable:
            return None
        # bool is an int subclass, but true is not a count.
        if not is_strict_int(value):
            raise _bad(command, name, f"must be {wanted}, not {_json_type(value)}")
        if value < low or (high is not None and value > high):
            raise _bad(command, name, f"must be {wanted}, got {value}")
        return value
    return check


def _seconds(command: str, name: str, value: Any) -> float | None:
    """A positive number of seconds, or ``null`` for never."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(command, name, f"must be a number of seconds or null, not {_json_type(value)}")
    if not 0 < value < MAX_SECONDS:
        raise _bad(command, name, f"must be more than 0 and less than {int(MAX_SECONDS)} "
                   f"seconds, got {value:.6g}")
    return float(value)


def _epoch(command: str, name: str, value: Any) -> float:
    """A time as seconds since the epoch (UTC)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            not 0 <= value < 1e11:
        raise _bad(command, name, "must be a time in seconds since 1970 (UTC)")
    return float(value)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


@dataclass(frozen=True)
class Arg:
    """One argument: its key, the check that returns its typed value."""

    name: str
    check: Callable[[str, str, Any], Any]
    required: bool = True


# -- replies -----------------------------------------------------------------


def _empty(result: Any) -> dict[str, Any]:
    if result is None:
        return {}
    if isinstance(result, Mapping):
        return dict(result)  # extra information is welcome
    raise TypeError(f"handler returned {type(result).__name__}, expected None")


def _status(result: Any) -> dict[str, Any]:
    if not isinstance(result, DaemonStatus):
        raise TypeError(f"status returned {type(result).__name__}, expected DaemonStatus")
    return result.to_reply()


def _shares(result: Any) -> dict[str, Any]:
    shares = list(result)
    for share in shares:
        if not isinstance(share, ShareInfo):
            raise TypeError(f"list_shares gave {type(share).__name__}, expected ShareInfo")
    # A list of objects: what GUIs written for the reference daemon read.
    return {"shares": [share.to_reply() for share in shares]}


def _access_code(result: Any) -> dict[str, Any]:
    if not isinstance(result, str):
        raise TypeError(f"create_access_code returned {type(result).__name__}, expected str")
    return {"access_code": result}


def _rescan(result: Any) -> dict[str, Any]:
    if not is_strict_int(result):
        raise TypeError(f"rescan returned {type(result).__name__}, expected int")
    return {"shares": result}


def _chunk(result: Any) -> dict[str, Any]:
    if not isinstance(result, FileChunk):
        raise TypeError(f"read_file returned {type(result).__name__}, expected FileChunk")
    return result.to_reply()


def _config(result: Any) -> dict[str, Any]:
    if not isinstance(result, Mapping):
        raise TypeError(f"get_config returned {type(result).__name__}, expected a mapping")
    return {"config": dict(result)}


def _value(result: Any) -> dict[str, Any]:
    return {"value": result}


def _listing(key: str) -> Callable[[Any], dict[str, Any]]:
    def reply(result: Any) -> dict[str, Any]:
        items = [dict(item) for item in result]
        return {key: items}
    return reply


@dataclass(frozen=True)
class Command:
    """A control command: its ``type``, arguments and reply builder.

    The handler method called is the one named like the command.
    """

    name: str
    args: tuple[Arg, ...]
    reply: Callable[[Any], dict[str, Any]]
    summary: str


def _table(commands: Iterable[Command]) -> dict[str, Command]:
    return {command.name: command for command in commands}


COMMANDS: Final[dict[str, Command]] = _table([
    Command("stop", (), _empty, "shut the daemon down"),
    Command("pause", (Arg("path", _path, required=False),), _empty,
            "suspend syncing, of every share or of one"),
    Command("resume", (Arg("path", _path, required=False),), _empty,
            "resume syncing, of every share or of one"),
    Command("set_share_mode", (Arg("path", _path), Arg("mode", _share_mode)), _empty,
            "make a share send-receive, send-only or receive-only"),
    Command("override_changes", (Arg("path", _path),), _empty,
            "send-only share: send this device's state of the files peers changed"),
    Command("revert_changes", (Arg("path", _path),), _empty,
            "receive-only share: give up the local changes not sent"),
    Command("status", (), _status, "paused, tracking, nat_punctured, upload/download rates "
            "and a few counts (a reply well under 1 KiB)"),
    Command("status_detail", (), _status, "status plus board, discovery and every share's "
            "progress and problems"),
    Command("create_share", (Arg("path", _path), Arg("sync_mode", _share_mode, required=False)),
            _empty, "share a local directory"),
    Command("list_shares", (), _shares, "every share with its path and status"),
    Command("add_share", (Arg("code", _text), Arg("path", _path),
                          Arg("merge", _flag, required=False),
                          Arg("sync_mode", _share_mode, required=False)), _empty,
            "join a remote share with an access code"),
    Command("remove_share", (Arg("path", _path),), _empty, "stop sharing a directory"),
    Command("create_access_code",
            (Arg("path", _path), Arg("mode", _mode),
             Arg("max_uses", _integer(1, nullable=True), required=False),
             Arg("expires", _seconds, required=False)),
            _access_code, "make an access code for a share"),
    Command("list_codes", (), _listing("codes"), "issued access codes: mode, uses, expiry"),
    Command("revoke_code", (Arg("code", _text),), _empty, "revoke an issued access code"),
    Command("get_config", (), _config, "the whole configuration"),
    Command("config_sources", (), _listing("settings"),
            "every setting in force and where it comes from"),
    Command("set_config", (Arg("config", _object),), _empty, "set several configuration keys"),
    Command("get_config_value", (Arg("key", _text),), _value, "one configuration value"),
    Command("set_config_value", (Arg("key", _text), Arg("value", _any)), _empty,
            "set one configuration value"),
    Command("list_peers", (), _listing("peers"), "known peers"),
    Command("remove_peer", (Arg("path", _path), Arg("peer", _text)), _empty,
            "stop syncing one share with a peer"),
    Command("allow_peer", (Arg("path", _path), Arg("peer", _text)), _empty,
            "undo remove_peer"),
    Command("list_transfers", (), _listing("transfers"), "transfers in progress"),
    Command("rescan", (Arg("path", _path, required=False),), _rescan,
            "look for local changes now, in one share or all"),
    Command("read_file",
            (Arg("path", _path), Arg("file", _file),
             Arg("offset", _integer(0, MAX_OFFSET), required=False),
             Arg("count", _integer(1, MAX_READ), required=False)),
            _chunk, "read part of a share's file, from a peer if need be"),
    Command("versions", (Arg("path", _path),), _empty,
            "archived versions of a share's file (the file's absolute path)"),
    Command("restore",
            (Arg("path", _path), Arg("version", _integer(1), required=False),
             Arg("at", _epoch, required=False), Arg("to", _path, required=False)),
            _empty, "put an archived version of a file back (or at 'to')"),
])
"""Every command this daemon understands, by ``type``."""


@dataclass(frozen=True)
class Request:
    """A checked request: the command and its typed keyword arguments."""

    command: Command
    args: Mapping[str, Any]


def parse_request(line: bytes) -> Request:
    """Check one request line against :data:`COMMANDS`.

    Raises :class:`ControlRequestError` (see the module docstring for codes).
    """
    try:
        body = parse_json_line(line)
    except ValueError as exc:
        raise ControlRequestError("invalid_json", f"request is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ControlRequestError("invalid_request",
                                  f"a request must be a JSON object, not {_json_type(body)}")
    kind = body.get("type")
    if not isinstance(kind, str):
        what = "no 'type'" if kind is None else f"a 'type' that is {_json_type(kind)}"
        raise ControlRequestError("invalid_request",
                                  f"a request needs a string 'type', this one has {what}")
    command = COMMANDS.get(kind)
    if command is None:
        raise ControlRequestError("not_understood", f"unknown command {kind[:80]!r}")
    args: dict[str, Any] = {}
    for arg in command.args:
        if arg.name not in body:
            if arg.required:
                raise _bad(kind, arg.name, "is required")
            continue
        args[arg.name] = arg.check(kind, arg.name, body[arg.name])
    return Request(command, args)
