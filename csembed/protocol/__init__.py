"""Sans-I/O protocol layer: wire frames, sessions, core messages, extensions.

Nothing in this package touches sockets, clocks or the OS random generator;
callers feed bytes in and pull events out (see :mod:`csembed.protocol.wire`).
"""
