"""The control protocol: how front ends (the CLI, GUIs, a host on a serial line) drive the daemon.

Newline-delimited JSON (control.md; ``protocol/control.md`` is our
specification). Layers, bottom up:

* ``lines`` -- sans-I/O line framing with a length limit;
* ``commands`` -- the command table: every command's arguments, their types
  and checks, and how a handler's result becomes the reply;
* ``handler`` -- :class:`~csembed.control.handler.ControlHandler`, the base the
  daemon implements, one async method per command, receiving validated args;

Everything here is sans-I/O. The asyncio adapters live a layer up:
:mod:`csembed.runtime.control_server` serves a handler over a UNIX socket
(mode 0600, stale socket clean-up, refusal when another daemon answers) or a
serial line (:mod:`csembed.runtime.control_serial`), and
:mod:`csembed.cli_commands.control_client` is the small synchronous client for
the CLI.
"""
