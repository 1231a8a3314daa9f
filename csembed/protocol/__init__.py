"""Sans-I/O protocol layer: wire frames, sessions, core messages, extensions.

Nothing in this package touches sockets, clocks or the OS random generator;
callers feed bytes in and pull events out (see :mod:`csembed.protocol.wire`).

One message style -- for every message of every layer (``core.*`` here,
``database.*``, ``directory.*``/``rsync.*``, ``tracker.*``, the LAN
announcement): a frozen dataclass deriving from
:class:`~csembed.protocol.body_message.BodyMessage`, with ``TYPE`` (and
``PAYLOAD`` when a binary payload follows), ``to_body()`` giving the JSON
body, and a ``from_body()`` classmethod that is the only gate for a peer's
body -- it checks every member it reads and raises its layer's error naming
the message and the member. A family of messages has one table built by
``message_table`` and is read with ``build_from_body`` (dispatch on
``type``); ``encode(message)`` frames one for the wire. Checks that need
state (loopback, version choice, order) stay in the machine, beside its
dispatch table. Code never builds a message body as a bare dict.

One time convention -- for every sans-I/O machine (``protocol/``,
``security/``, ``discovery/``, ``nat/``, ``transport/``, the directory
engine), after aioquic:

* time comes in as ``now: float`` with every input (``receive_data(data,
  now)``), at construction (``client(..., now=...)``) and in
  ``handle_timer(now)``; the machine never reads a clock. Work a machine
  does later (lazily in ``next_event``, or when the caller sends) is dated
  by the latest ``now`` it was given;
* ``get_timer() -> float | None`` says when the machine next wants to be
  woken (``None``: no timer), and ``handle_timer(now)`` is that wake-up; the
  runtime re-arms one timer from ``get_timer()`` after every call
  (:mod:`csembed.runtime.session_stream` is the model adapter).

``now`` is monotonic seconds, except for the directory engine, whose ``now``
is wall-clock seconds because its scanner compares it with file times.
"""
