"""Peer discovery: how a daemon learns the addresses of other members of its clubs.

Two sources live here (core.md, "Peer Discovery"); manual peers need no code:

* the **tracker** -- one TCP connection to a server that maps each access or
  key ID to the peers registered under it (``tracker_messages``,
  ``tracker_session`` and ``tracker_registry`` are the sans-I/O client and
  server; :mod:`csembed.runtime.tracker_client` and
  :mod:`csembed.runtime.tracker_server` run them on asyncio;
  :mod:`csembed.cli_commands.tracker` is ``csembed tracker``);
* **LAN broadcast** -- a UDP datagram per ID on port 60106 (``lan_broadcast``
  is the codec and schedule, :mod:`csembed.runtime.lan_service` the asyncio
  announcer and listener).

Everything in this package is sans-I/O (bytes and ``now`` in, bytes, events
and deadlines out); the asyncio adapters named above live in ``runtime/``.

``addresses`` validates the IDs and ``tcp:``/``utp:`` addresses both share,
``errors`` holds the layer's error family. ``protocol/discovery.md`` is the
specification in our words.
"""
