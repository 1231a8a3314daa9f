"""``csembed daemon``: run the sync daemon in the foreground.

Logs go to stderr in a plain ``time level name: message`` format, one line
per event with repeats collapsed (:mod:`csembed.cli_commands.daemon_log`;
journald adds its own time stamps; ``--log-level`` picks the detail,
``--log-file`` also appends them to a file). The data directory is
``--data-dir``, else ``$CSEMBED_DATA_DIR``, else ``$XDG_DATA_HOME/clearskies``.
Once the daemon
listens and its control socket is ready it prints one line on stdout::

    csembed daemon ready: listening on 127.0.0.1:40121, control socket /…/control

so that scripts (and ``csembed demo``) can start it with ``--listen HOST:0``
and learn the port. SIGTERM and SIGINT stop it cleanly; so does ``csembed stop``.

The daemon never speaks TLS (sessions are SPAKE2 + secretstream, the web page
is plain HTTP on a local address), yet asyncio imports :mod:`ssl` whenever it
can, and its TLS half (``_ssl``, libssl and the module) costs resident memory
the ``wifi-piano`` board cannot spare. So :func:`without_tls` marks ``ssl``
unavailable (``sys.modules["ssl"] = None``, the documented way to make an
import fail) before anything imports asyncio: :func:`csembed.cli.main` calls
it first thing for ``csembed daemon``, :func:`run` again for other callers;
asyncio then takes its no-TLS path. When asyncio is already loaded (the
command run inside a test process) nothing is changed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from csembed.board_profile import DEFAULT_BOARD, load_board
from csembed.cli_commands.daemon_log import setup_logging
from csembed.runtime.data_dir import data_dir_source, default_data_dir, parse_host_port

if TYPE_CHECKING:  # the daemon's modules load only when it runs: the CLI stays quick
    import argparse  # only while the command line is read (see csembed.cli)

    from csembed.runtime.daemon import DaemonOptions

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "daemon", help="run the sync daemon in the foreground",
        description="Run the csembed daemon: sync every share, answer peers and the "
                    "control socket, until stopped (SIGTERM, SIGINT or 'csembed stop').")
    p.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                   help="shares, keys, config and the control socket (default "
                        "$CSEMBED_DATA_DIR, else $XDG_DATA_HOME/clearskies)")
    p.add_argument("--board", default=DEFAULT_BOARD, metavar="NAME|FILE",
                   help="board profile whose limits to obey (default %(default)s)")
    p.add_argument("--listen", default="0.0.0.0:40121", metavar="HOST:PORT",
                   help="where peers connect (default %(default)s; port 0 picks one)")
    p.add_argument("--tracker", default=None, metavar="HOST:PORT",
                   help="tracker to register with (overrides the 'tracker' setting)")
    p.add_argument("--peer", action="append", default=[], metavar="HOST:PORT",
                   help="a peer to dial for every share (repeatable)")
    p.add_argument("--no-lan", action="store_true", help="no LAN broadcast discovery")
    p.add_argument("--lan-address", default="255.255.255.255", metavar="ADDR",
                   help="broadcast address for LAN announcements (default %(default)s)")
    p.add_argument("--lan-port", type=int, default=60106, metavar="PORT",
                   help="UDP port of LAN announcements (default %(default)s)")
    p.add_argument("--stun", action="append", default=[], metavar="HOST:PORT",
                   help="STUN server to learn our public uTP address from (repeatable; "
                        "default: the tracker's host, port 3478)")
    p.add_argument("--no-utp", action="store_true", help="TCP only: no uTP (UDP) transport")
    p.add_argument("--port-mapping", choices=("auto", "on", "off"), default="auto",
                   help="ask the router for a port mapping by UPnP/NAT-PMP (default "
                        "%(default)s: on with a tracker that is not on loopback)")
    p.add_argument("--control-serial", default=None, metavar="DEVICE[,BAUD]",
                   help="also serve the control protocol on a serial line")
    p.add_argument("--web", default=None, metavar="HOST:PORT",
                   help="serve the status and pairing page (e.g. 127.0.0.1:8384; another "
                        "address needs --web-password); overrides the 'web' setting")
    p.add_argument("--web-password", default=os.environ.get("CSEMBED_WEB_PASSWORD"),
                   metavar="PASSWORD", help="password of the web page (default: "
                   "$CSEMBED_WEB_PASSWORD, else the 'web_password' setting)")
    p.add_argument("--log-level", default="info",
                   choices=("debug", "info", "warning", "error"), help="default %(default)s")
    p.add_argument("--log-file", type=Path, default=None, metavar="FILE",
                   help="also append the log to FILE (one line per event)")
    p.set_defaults(handler=run)


def options_from(args: argparse.Namespace) -> DaemonOptions:
    """Turn the parsed command line into :class:`DaemonOptions`."""
    from csembed.runtime.daemon import DaemonOptions
    from csembed.runtime.reach import ReachConfig
    reach = ReachConfig(utp=not args.no_utp,
                        stun_servers=tuple(parse_host_port(s, "--stun") for s in args.stun),
                        port_mapping={"auto": None, "on": True, "off": False}[args.port_mapping])
    return DaemonOptions(
        data_dir=args.data_dir or default_data_dir(),
        board=load_board(args.board),
        listen=parse_host_port(args.listen, "--listen"),
        tracker=None if args.tracker is None else parse_host_port(args.tracker, "--tracker"),
        peers=[parse_host_port(p, "--peer") for p in args.peer],
        lan=not args.no_lan,
        lan_address=args.lan_address,
        lan_port=args.lan_port,
        control_serial=None if args.control_serial is None
        else _serial_spec(args.control_serial),
        web=None if args.web is None else parse_host_port(args.web, "--web"),
        web_password=args.web_password,
        data_dir_source=data_dir_source(args.data_dir),
        reach=reach,
    )


def _serial_spec(text: str) -> tuple[str, int]:
    from csembed.runtime.control_serial import parse_serial_spec  # pyserial: only when asked
    return parse_serial_spec(text)


def without_tls() -> bool:
    """Make ``import ssl`` fail in this process if asyncio is not loaded yet.

    Returns whether the guard took effect (it cannot once asyncio has bound its
    ``ssl`` name)."""
    if "asyncio" in sys.modules or "ssl" in sys.modules:
        return False
    sys.modules["ssl"] = None  # type: ignore[assignment]
    return True


def run(args: argparse.Namespace) -> int:
    without_tls()
    import asyncio
    options = options_from(args)
    handler = setup_logging(args.log_level, args.log_file)
    try:
        asyncio.run(_serve(options))
    finally:
        handler.close()
    return 0


async def _serve(options: DaemonOptions) -> None:
    import asyncio

    from csembed.runtime.daemon import Daemon
    daemon = Daemon(options)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, daemon.request_stop)
    try:
        await daemon.start()
        assert daemon.listen_address is not None
        host, port = daemon.listen_address
        web = "" if daemon.web is None else f", web page {daemon.web.url}"
        print(f"csembed daemon ready: listening on {host}:{port}, control socket "
              f"{daemon.data.control_path}{web}", flush=True)
        await daemon.wait_stopped()
    finally:
        await daemon.close()
