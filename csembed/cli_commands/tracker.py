"""``csembed tracker``: run a tracker server (tracker protocol v1) in the foreground.

Prints one line ``tracker listening on HOST:PORT`` per socket once it is
listening (so ``--listen 127.0.0.1:0`` is usable from scripts), logs client
drops at ``--verbose``, and stops cleanly on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from csembed.discovery.tracker_registry import TrackerServerConfig
from csembed.errors import CsembedError
from csembed.runtime.tracker_server import DEFAULT_TRACKER_PORT, TrackerServer

__all__ = ["parse_listen", "register", "run"]


class ListenError(CsembedError):
    """A ``--listen`` value is not ``HOST:PORT``."""


def parse_listen(text: str) -> tuple[str, int]:
    """Split ``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` (all interfaces)."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
        if ":" in host:
            raise ListenError(f"--listen {text!r}: put an IPv6 address in brackets, "
                              "e.g. [::]:49200")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ListenError(f"--listen {text!r}: expected HOST:PORT, e.g. 0.0.0.0:49200")
    return host or "0.0.0.0", int(port)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    defaults = TrackerServerConfig()
    p = subparsers.add_parser(
        "tracker", help="run a tracker server",
        description="Run a ClearSkies tracker (tracker protocol v1) until interrupted.")
    p.add_argument("--listen", default=f"0.0.0.0:{DEFAULT_TRACKER_PORT}", metavar="HOST:PORT",
                   help="address to listen on (default %(default)s; port 0 picks a free one)")
    p.add_argument("--min-ttl", type=int, default=defaults.min_ttl, metavar="SECONDS",
                   help="shortest TTL clients may choose (default %(default)s)")
    p.add_argument("--max-ttl", type=int, default=defaults.max_ttl, metavar="SECONDS",
                   help="longest TTL clients may choose (default %(default)s)")
    p.add_argument("--max-clients", type=int, default=defaults.max_clients, metavar="N",
                   help="most simultaneous clients (default %(default)s)")
    p.add_argument("--open-registration", action="store_true",
                   help="register IDs without a registration proof (the draft's behaviour; "
                        "lets anyone list peers for any club)")
    p.add_argument("--verbose", "-v", action="store_true", help="log connections and drops")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    host, port = parse_listen(args.listen)
    try:
        config = TrackerServerConfig(min_ttl=args.min_ttl, max_ttl=args.max_ttl,
                                     max_clients=args.max_clients,
                                     require_proof=not args.open_registration)
    except (TypeError, ValueError) as exc:
        raise ListenError(str(exc)) from None
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    asyncio.run(_serve(host, port, config))
    return 0


async def _serve(host: str, port: int, config: TrackerServerConfig) -> None:
    server = TrackerServer(config)
    try:
        await server.start(host, port)
    except OSError as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    for bound_host, bound_port in server.addresses:
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        print(f"tracker listening on {shown}:{bound_port}", flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.close()
