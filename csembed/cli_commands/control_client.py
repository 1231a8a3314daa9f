"""A small synchronous control client, for the CLI and scripts.

::

    with ControlClient() as daemon:          # $XDG_DATA_HOME/clearskies/control
        print(daemon.call("status"))
        daemon.call("create_share", path="/home/me/Music")

:meth:`ControlClient.connect` reads and checks the handshake;
:meth:`ControlClient.request` sends one command and returns the reply object
as it came (an error reply included); :meth:`ControlClient.call` does the
same but raises :class:`ControlReplyError` for an error reply. When no daemon
listens at the path the error says so: "no daemon running at PATH".
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from csembed.control.errors import ControlClientError, ControlReplyError
from csembed.control.lines import encode_line

__all__ = ["ControlClient", "Handshake", "default_socket_path"]

MAX_REPLY: Final = 64 << 20
"""Longest reply line accepted, in bytes."""


def default_socket_path() -> Path:
    """``$XDG_DATA_HOME/clearskies/control`` (``~/.local/share`` when unset)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / "clearskies" / "control"


@dataclass(frozen=True)
class Handshake:
    """What the daemon said on connection."""

    service: str
    software: str
    protocol: int


class ControlClient:
    """One connection to a daemon's control socket."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *,
                 timeout: float | None = 30.0) -> None:
        self.path = Path(path) if path is not None else default_socket_path()
        self.timeout = timeout
        self.handshake: Handshake | None = None
        self._sock: socket.socket | None = None
        self._file: Any = None

    def connect(self) -> Handshake:
        """Connect and read the handshake."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            raise ControlClientError(f"no daemon running at {self.path}") from None
        except OSError as exc:
            sock.close()
            raise ControlClientError(f"cannot connect to {self.path}: {exc}") from None
        self._sock = sock
        self._file = sock.makefile("rb")
        hello = self._read()
        if hello.get("service") != "ClearSkies Control":
            self.close()
            raise ControlClientError(f"{self.path} is not a ClearSkies control socket")
        protocol = hello.get("protocol")
        if protocol != 1:
            self.close()
            raise ControlClientError(f"daemon speaks control protocol {protocol!r}, not 1")
        self.handshake = Handshake("ClearSkies Control", str(hello.get("software", "")), 1)
        return self.handshake

    def _read(self) -> dict[str, Any]:
        try:
            line = self._file.readline(MAX_REPLY + 1)
        except OSError as exc:
            raise ControlClientError(f"lost the daemon at {self.path}: {exc}") from None
        if not line.endswith(b"\n"):
            if len(line) > MAX_REPLY:
                raise ControlClientError(f"reply longer than {MAX_REPLY} bytes")
            raise ControlClientError(f"the daemon at {self.path} closed the connection")
        try:
            reply = json.loads(line)
        except ValueError:
            raise ControlClientError("the daemon sent a line that is not JSON") from None
        if not isinstance(reply, dict):
            raise ControlClientError("the daemon sent JSON that is not an object")
        return reply

    def request(self, type_: str, **args: Any) -> dict[str, Any]:
        """Send one command; return the reply object (which may be an error reply)."""
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        try:
            self._sock.sendall(encode_line({"type": type_, **args}))
        except OSError as exc:
            raise ControlClientError(f"lost the daemon at {self.path}: {exc}") from None
        return self._read()

    def call(self, type_: str, **args: Any) -> dict[str, Any]:
        """Like :meth:`request`, but raise :class:`ControlReplyError` on an error reply."""
        reply = self.request(type_, **args)
        if "error" in reply:
            raise ControlReplyError(str(reply["error"]), str(reply.get("message", "")))
        return reply

    def close(self) -> None:
        """Close the connection."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> ControlClient:
        if self._sock is None:
            self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
