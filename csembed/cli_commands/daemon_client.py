"""The CLI commands that drive a running daemon through its control socket.

``list``, ``status``, ``transfers``, ``stop``, ``detach``, ``cat``,
``rescan`` and ``config``, and the plumbing every such command shares
(:func:`connected`); pairing -- ``share``, ``attach``, ``peers``, ``codes``
-- is in :mod:`.pairing`. Each takes ``--data-dir`` (to find
``<data dir>/control``) and ``--json`` (print the daemon's reply as JSON
instead of text). Nothing here
touches shares directly: every action is a control command, so what the CLI
can do, a GUI or a host on a serial line can do too.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from csembed.cli_commands.control_client import ControlClient
from csembed.cli_commands.status_text import (
    RateMeter,
    render_status,
    share_progress,
    transfer_line,
)
from csembed.control.errors import ControlClientError, ControlReplyError
from csembed.errors import CsembedError
from csembed.runtime.data_dir import default_data_dir
from csembed.units import format_rate, format_size

__all__ = ["NoDaemonError", "UsageError", "register", "render_status"]


class NoDaemonError(CsembedError):
    """No daemon answers on the control socket."""


class UsageError(CsembedError):
    """A command-line value that cannot be used; the message says what is expected."""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                   help="the daemon's data directory (default $CSEMBED_DATA_DIR, else "
                        "$XDG_DATA_HOME/clearskies)")
    p.add_argument("--json", action="store_true", help="print the daemon's reply as JSON")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("transfers", help="list transfers in progress",
                              description="List transfers in progress (downloads and "
                              "uploads). With --watch: one updating line per transfer "
                              "on a terminal, plain lines otherwise.")
    p.add_argument("--watch", action="store_true", help="keep showing progress until "
                   "interrupted (or, with --until-idle, until nothing is moving)")
    p.add_argument("--until-idle", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    _common(p)
    p.set_defaults(handler=run_transfers)

    for name, help_text in (("list", "list the shares"), ("stop", "stop the daemon")):
        p = subparsers.add_parser(name, help=help_text, description=help_text.capitalize()
                                  + ".")
        _common(p)
        p.set_defaults(handler=globals()[f"run_{name}"])

    p = subparsers.add_parser("status", help="daemon status, board limits, share progress",
                              description="Show the daemon's status: board and limits, "
                              "rates, and each share's progress.")
    p.add_argument("--watch", action="store_true",
                   help="keep refreshing, with progress bars, until interrupted")
    p.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    _common(p)
    p.set_defaults(handler=run_status)

    p = subparsers.add_parser("detach", help="stop syncing a share (its files stay)",
                              description="Stop syncing the share at PATH (or cancel the "
                              "attach waiting there); its files stay.")
    p.add_argument("path")
    _common(p)
    p.set_defaults(handler=run_detach)

    p = subparsers.add_parser("cat", help="print a file of a share, streamed from a peer "
                              "if needed", description="Write FILE of the share at "
                              "SHARE_PATH to stdout, streamed from a peer if this device "
                              "does not hold it.")
    p.add_argument("share_path")
    p.add_argument("file", help="path of the file inside the share")
    p.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                   help="the daemon's data directory (default $CSEMBED_DATA_DIR, else "
                        "$XDG_DATA_HOME/clearskies)")
    p.set_defaults(handler=run_cat, json=False)

    p = subparsers.add_parser("rescan", help="look for local changes now",
                              description="Ask the daemon to rescan one share (or all) now.")
    p.add_argument("path", nargs="?")
    _common(p)
    p.set_defaults(handler=run_rescan)

    p = subparsers.add_parser("config", help="show or change the daemon's settings",
                              description="Without KEY: every setting in force and where it "
                              "comes from (command line, board or stored setting). With KEY: "
                              "its value. With KEY VALUE: set it (VALUE is JSON or plain "
                              "text; rates take units, e.g. '500KB' or '1 MB/s', durations "
                              "e.g. '5 min'; 'null' restores the board's).")
    p.add_argument("key", nargs="?")
    p.add_argument("value", nargs="?")
    _common(p)
    p.set_defaults(handler=run_config)


# -- plumbing ---------------------------------------------------------------------------


def socket_path(args: argparse.Namespace) -> Path:
    """The control socket the command talks to."""
    return (args.data_dir or default_data_dir()).absolute() / "control"


@contextmanager
def connected(args: argparse.Namespace) -> Iterator[ControlClient]:
    """A control connection, or :class:`NoDaemonError` with advice."""
    path = socket_path(args)
    client = ControlClient(path, timeout=120.0)
    try:
        client.connect()
    except ControlClientError as exc:
        if not path.exists() or "no daemon running" in str(exc):
            raise NoDaemonError(f"no csembed daemon is running (no control socket at {path}); "
                                "start one with `csembed daemon`") from None
        raise
    try:
        yield client
    finally:
        client.close()


def _abs(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=1, sort_keys=True))


def _query(args: argparse.Namespace, command: str, **params: Any) -> dict[str, Any] | None:
    """Send one command; with ``--json`` print the reply and return ``None``,
    otherwise return the reply for the caller to render as text."""
    with connected(args) as daemon:
        reply: dict[str, Any] = daemon.call(command, **params)
    if args.json:
        _print_json(reply)
        return None
    return reply


def _simple(args: argparse.Namespace, command: str, done: str, **params: Any) -> int:
    if _query(args, command, **params) is not None:
        print(done)
    return 0


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} s"


def _entry_at(daemon: ControlClient, path: str) -> dict[str, Any] | None:
    shares = daemon.call("list_shares")["shares"]
    return next((s for s in shares if s["path"] == os.path.realpath(path)), None)


# -- commands -----------------------------------------------------------------------------


def run_list(args: argparse.Namespace) -> int:
    reply = _query(args, "list_shares")
    if reply is None:
        return 0
    shares = reply["shares"]
    if not shares:
        print("no shares; `csembed share PATH` starts one, `csembed attach CODE PATH` "
              "joins one")
        return 0
    print(f"{'STATUS':<14} {'ACCESS':<11} {'PEERS':>5} {'TO SYNC':>16}  PATH")
    for share in shares:
        todo = ""
        if share.get("files_to_sync"):
            todo = f"{share['files_to_sync']} / {format_size(share.get('bytes_to_sync', 0))}"
        level = str(share.get("access_level", "")).replace("_", "-")
        line = (f"{share['status']:<14} {level:<11} {share.get('peers', 0):>5} {todo:>16}  "
                f"{share['path']}")
        why = "; ".join(share.get("missing") or [])
        if not why and share["status"] in ("attaching", "attach_failed", "error"):
            why = share.get("reason") or ""
        if share.get("problem_count"):
            why = "; ".join(filter(None, [why, f"{share['problem_count']} problem(s), "
                                               "see `csembed status`"]))
        print(line + (f"  ({why})" if why else ""))
    return 0


def run_status(args: argparse.Namespace) -> int:
    with connected(args) as daemon:
        if not args.watch:
            reply = daemon.call("status_detail")
            if args.json:
                _print_json(reply)
            else:
                print(render_status(reply))
            return 0
        tty = sys.stdout.isatty()
        try:
            while True:
                reply = daemon.call("status_detail")
                if args.json:
                    print(json.dumps(reply, sort_keys=True), flush=True)
                else:
                    text = render_status(reply)
                    if tty:
                        width = shutil.get_terminal_size().columns
                        text = "\n".join(line[:width] for line in text.splitlines())
                        sys.stdout.write("\x1b[H\x1b[2J" + text + "\n")
                    else:
                        sys.stdout.write(text + "\n\n")
                    sys.stdout.flush()
                time.sleep(args.interval)
        except KeyboardInterrupt:
            return 0


def run_transfers(args: argparse.Namespace) -> int:
    if not args.watch:
        reply = _query(args, "list_transfers")
        if reply is None:
            return 0
        if not reply["transfers"]:
            print("no transfers in progress")
        for transfer in reply["transfers"]:
            print(transfer_line(transfer, None))
        return 0
    return _watch_transfers(args)


def _watch_transfers(args: argparse.Namespace) -> int:
    """One updating line per transfer on a terminal; plain lines otherwise."""
    tty = sys.stdout.isatty()
    meter = RateMeter()
    shown = 0
    last_plain: dict[str, int] = {}
    seen_any = False
    with connected(args) as daemon:
        try:
            while True:
                transfers = daemon.call("list_transfers")["transfers"]
                shares = daemon.call("list_shares")["shares"]
                lines: list[tuple[str, int, str]] = []
                for t in transfers:
                    key = ":".join(str(t.get(k)) for k in ("direction", "peer", "share", "key"))
                    done, total = int(t.get("done", 0)), int(t.get("total", 0))
                    tenth = 10 if total <= 0 else min(10, done * 10 // total)
                    lines.append((key, tenth, transfer_line(t, meter.rate(key, done))))
                for share in shares:
                    progress = share_progress(share)
                    if progress:
                        lines.append((f"share:{share['path']}", 0,
                                      f"  {share['path']}: {progress}"))
                if tty:
                    if shown:
                        sys.stdout.write(f"\x1b[{shown}F")
                    width = shutil.get_terminal_size().columns
                    for _, _, text in lines:
                        sys.stdout.write("\x1b[2K" + text[:width - 1] + "\n")
                    for _ in range(shown - len(lines)):
                        sys.stdout.write("\x1b[2K\n")
                    shown = max(shown, len(lines))
                else:
                    for key, tenth, text in lines:
                        # A plain line when a transfer starts and at each tenth done.
                        if last_plain.get(key) != tenth:
                            last_plain[key] = tenth
                            sys.stdout.write(text + "\n")
                sys.stdout.flush()
                seen_any = seen_any or bool(transfers)
                if args.until_idle and seen_any and not transfers and \
                        not any(s.get("files_to_sync") for s in shares):
                    print("all transfers done")
                    return 0
                time.sleep(args.interval)
        except KeyboardInterrupt:
            return 0


def run_stop(args: argparse.Namespace) -> int:
    return _simple(args, "stop", "the daemon is stopping")


def run_detach(args: argparse.Namespace) -> int:
    path = _abs(args.path)
    with connected(args) as daemon:
        entry = _entry_at(daemon, path)
        daemon.call("remove_share", path=path)
    if args.json:
        _print_json({})
    elif entry is not None and entry["status"] in ("attaching", "attach_failed"):
        print(f"cancelled the attach of {path}")
    else:
        print(f"stopped syncing {path} (its files stay)")
    return 0


def run_rescan(args: argparse.Namespace) -> int:
    params = {} if args.path is None else {"path": _abs(args.path)}
    reply = _query(args, "rescan", **params)
    if reply is not None:
        print(f"rescanning {reply['shares']} share(s)")
    return 0


def run_cat(args: argparse.Namespace) -> int:
    path = _abs(args.share_path)
    out = sys.stdout.buffer
    offset = 0
    with connected(args) as daemon:
        while True:
            try:
                reply = daemon.call("read_file", path=path, file=args.file, offset=offset)
            except ControlReplyError as exc:
                raise CsembedError(exc.message) from None
            data = base64.b64decode(reply["data"])
            out.write(data)
            offset += len(data)
            if reply["eof"] or not data:
                break
    out.flush()
    return 0


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def run_config(args: argparse.Namespace) -> int:
    with connected(args) as daemon:
        if args.key is None:
            reply = daemon.call("config_sources")
            if args.json:
                reply["stored"] = daemon.call("get_config")["config"]
                _print_json(reply)
                return 0
            width = max(len(s["key"]) for s in reply["settings"])
            for setting in reply["settings"]:
                value = setting["value"]
                if setting["key"] in ("upload_limit", "download_limit") and \
                        isinstance(value, int):
                    value = f"{value} ({format_rate(value)})"
                elif value is None:
                    value = "none"
                print(f"{setting['key']:<{width}} = {_shown(value)}  ({setting['source']})")
            return 0
        if args.value is None:
            value = daemon.call("get_config_value", key=args.key)["value"]
            print(json.dumps(value) if args.json else _shown(value))
            return 0
        try:
            parsed = json.loads(args.value)
        except ValueError:
            parsed = args.value
        daemon.call("set_config_value", key=args.key, value=parsed)
        stored = daemon.call("get_config_value", key=args.key)["value"]
    if args.json:
        _print_json({"key": args.key, "value": stored})
    else:
        print(f"{args.key} = {json.dumps(stored)}")
    return 0
