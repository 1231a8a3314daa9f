"""Errors of the control layer.

* :class:`ControlError` -- root of the family.
* :class:`ControlRequestError` -- a request cannot be carried out; becomes the
  reply ``{"error": code, "message": message}``. The control layer raises it
  for malformed requests; a :class:`~csembed.control.handler.ControlHandler`
  raises it to refuse a command.
* :class:`DaemonRunningError` -- a control socket already answers at the path.
* :class:`ControlClientError` -- the client cannot talk to a daemon (none
  running, bad handshake, connection lost).
* :class:`ControlReplyError` -- the daemon answered a command with an error.
"""

from __future__ import annotations

from csembed.errors import CsembedError


class ControlError(CsembedError):
    """Root of the control layer's errors."""


class ControlRequestError(ControlError):
    """A request failed; ``code`` is machine-readable, the text human-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def reply(self) -> dict[str, str]:
        """The error reply object."""
        return {"error": self.code, "message": self.message}


class DaemonRunningError(ControlError):
    """Another daemon already answers on the control socket."""


class ControlClientError(ControlError):
    """The client could not reach or understand the daemon."""


class ControlReplyError(ControlError):
    """The daemon answered with an error reply."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
