"""Sans-I/O protocol layer: wire frames, sessions, core messages, extensions.

Nothing in this package touches sockets, clocks or the OS random generator;
callers feed bytes in and pull events out (see :mod:`csembed.protocol.wire`).

How time gets in -- the one convention for every sans-I/O machine
(``protocol/``, ``security/``, ``discovery/``, ``nat/``, ``transport/``),
after aioquic:

* every method that reacts to input or time takes ``now: float`` (monotonic
  seconds) as an argument; the machine never reads a clock itself;
* ``get_timer() -> float | None`` says when the machine next wants to be
  woken (``None``: no timer), and ``handle_timer(now)`` is that wake-up; the
  runtime re-arms one asyncio timer from ``get_timer()`` after every call
  (:mod:`csembed.runtime.session_stream` is the model adapter).

Two older forms remain and are not to be copied: an injected ``clock``
callable (:class:`~csembed.security.handshake.SecureSession` and
:class:`~csembed.protocol.core.PeerConnection` read it for their pre-auth and
ping deadlines, and expose ``get_timer``/``handle_timer`` on top), and the
directory engine's ``tick(now)``/``next_deadline()``, which are the same pair
under other names.
"""
