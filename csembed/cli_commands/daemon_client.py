"""The CLI commands that drive a running daemon through its control socket.

``share``, ``attach``, ``list``, ``status``, ``peers``, ``transfers``,
``pause``, ``resume``, ``stop``, ``detach``, ``cat``, ``rescan`` and
``config``. Each takes ``--data-dir`` (to find ``<data dir>/control``) and
``--json`` (print the daemon's reply as JSON instead of text). Nothing here
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

from csembed.access_code import AccessCode
from csembed.control.client import ControlClient
from csembed.control.errors import ControlClientError, ControlReplyError
from csembed.errors import CsembedError
from csembed.runtime.data_dir import default_data_dir
from csembed.units import format_rate, format_size, parse_duration

__all__ = ["NoDaemonError", "register"]


class NoDaemonError(CsembedError):
    """No daemon answers on the control socket."""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                   help=f"the daemon's data directory (default {default_data_dir()})")
    p.add_argument("--json", action="store_true", help="print the daemon's reply as JSON")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("share", help="share a directory and print an access code",
                              description="Share PATH (created as a share if it is not one "
                              "yet) and print a new access code for it.")
    p.add_argument("path", help="the directory to share")
    p.add_argument("--mode", choices=("read-write", "read-only"), default="read-write",
                   help="what the code grants (default %(default)s)")
    p.add_argument("--multi-use", action="store_true",
                   help="the code may be used any number of times until it expires")
    p.add_argument("--expires", default="24h", metavar="DURATION",
                   help="lifetime of the code, e.g. 30min, 24h, 7d, or 'never' (default 24h)")
    _common(p)
    p.set_defaults(handler=run_share)

    p = subparsers.add_parser("attach", help="join a share with an access code",
                              description="Join the share an access code was made for, "
                              "syncing it into PATH.")
    p.add_argument("code", help="the access code (or its clearskies:// URL)")
    p.add_argument("path", help="where to keep the share (created if missing)")
    p.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                   help="how long to wait for the share's keys (default %(default)s; "
                        "0: do not wait)")
    _common(p)
    p.set_defaults(handler=run_attach)

    for name, help_text in (("list", "list the shares"),
                            ("peers", "list connected and known peers"),
                            ("transfers", "list transfers in progress"),
                            ("pause", "suspend syncing"), ("resume", "resume syncing"),
                            ("stop", "stop the daemon")):
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
                              description="Stop syncing the share at PATH; its files stay.")
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
                   help=f"the daemon's data directory (default {default_data_dir()})")
    p.set_defaults(handler=run_cat, json=False)

    p = subparsers.add_parser("rescan", help="look for local changes now",
                              description="Ask the daemon to rescan one share (or all) now.")
    p.add_argument("path", nargs="?")
    _common(p)
    p.set_defaults(handler=run_rescan)

    p = subparsers.add_parser("config", help="show or change the daemon's settings",
                              description="Without KEY: every setting. With KEY: its value. "
                              "With KEY VALUE: set it (VALUE is JSON, or a plain string).")
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


# -- commands -----------------------------------------------------------------------------


def run_share(args: argparse.Namespace) -> int:
    path = _abs(args.path)
    if args.expires.strip().lower() in ("never", "none", "0"):
        expires = None
    else:
        expires = parse_duration(args.expires)
    mode = args.mode.replace("-", "_")
    with connected(args) as daemon:
        shares = daemon.call("list_shares")["shares"]
        created = False
        if not any(s["path"] == os.path.realpath(path) for s in shares):
            daemon.call("create_share", path=path)
            created = True
        reply = daemon.call("create_access_code", path=path, mode=mode,
                            max_uses=None if args.multi_use else 1, expires=expires)
    code = AccessCode.parse(reply["access_code"])
    if args.json:
        _print_json({"path": path, "created": created, "access_code": code.text,
                     "url": code.url, "mode": mode, "multi_use": args.multi_use,
                     "expires": expires})
        return 0
    if created:
        print(f"now sharing {path}")
    uses = "any number of times" if args.multi_use else "once"
    life = "never expires" if expires is None else f"expires in {_duration(expires)}"
    print(f"access code ({args.mode}, usable {uses}, {life}):")
    print(f"  {code.text}")
    print(f"  {code.url}")
    return 0


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} s"


def run_attach(args: argparse.Namespace) -> int:
    path = _abs(args.path)
    with connected(args) as daemon:
        daemon.call("add_share", code=args.code, path=path)
        if not args.json:
            print(f"attaching {path}; looking for the share's creator…", flush=True)
        deadline = time.monotonic() + args.timeout
        entry: dict[str, Any] | None = None
        while args.timeout > 0:
            shares = daemon.call("list_shares")["shares"]
            entry = next((s for s in shares if s["path"] == os.path.realpath(path)), None)
            if entry is None or entry["status"] != "attaching":
                break
            if time.monotonic() > deadline:
                if args.json:
                    _print_json({"path": path, "status": "attaching"})
                else:
                    print(f"still waiting for the share's keys after {args.timeout:g} s; "
                          "the daemon keeps trying (see `csembed list`)")
                return 1
            time.sleep(0.2)
    if args.json:
        _print_json(entry or {"path": path, "status": "attaching"})
    elif entry is None:
        print("the attach was cancelled")
        return 1
    elif entry["status"] != "attaching":
        print(f"joined: {path} ({entry.get('access_level', '?').replace('_', '-')}); "
              "syncing — see `csembed status`")
    return 0


def run_list(args: argparse.Namespace) -> int:
    reply = _query(args, "list_shares")
    if reply is None:
        return 0
    shares = reply["shares"]
    if not shares:
        print("no shares; `csembed share PATH` starts one, `csembed attach CODE PATH` "
              "joins one")
        return 0
    print(f"{'STATUS':<10} {'ACCESS':<11} {'PEERS':>5} {'TO SYNC':>16}  PATH")
    for share in shares:
        todo = ""
        if share.get("files_to_sync"):
            todo = f"{share['files_to_sync']} / {format_size(share.get('bytes_to_sync', 0))}"
        level = str(share.get("access_level", "")).replace("_", "-")
        print(f"{share['status']:<10} {level:<11} {share.get('peers', 0):>5} {todo:>16}  "
              f"{share['path']}")
    return 0


def _bar(done: int, total: int, width: int = 24) -> str:
    fraction = 1.0 if total <= 0 else min(1.0, done / total)
    filled = int(round(fraction * width))
    return "[" + "#" * filled + "-" * (width - filled) + f"] {fraction * 100:5.1f}%"


def render_status(reply: dict[str, Any]) -> str:
    """The ``status`` reply as text for people."""
    lines = []
    board = reply.get("board", {})
    state = "paused" if reply.get("paused") else "running"
    tracker = reply.get("tracker")
    lines.append(f"daemon {state}, {reply.get('software', '')}, listening on "
                 f"{reply.get('listen', '?')}, {reply.get('connections', 0)} connection(s)")
    track = "no tracker" if not tracker else (
        f"tracker {tracker['address']} ({tracker['state']})")
    lines.append(f"discovery: {track}; LAN broadcast "
                 f"{'on' if reply.get('lan_broadcast') else 'off'}")
    lines.append(f"measured rates: up {format_size(reply.get('upload_rate', 0))}/s, "
                 f"down {format_size(reply.get('download_rate', 0))}/s")
    if board:
        limits = ", ".join(f"{k} {v}" for k, v in board.get("summary", {}).items())
        lines.append(f"board {board.get('name')}: {limits}")
        lines.append(f"  limits now: up {format_rate(board.get('upload_limit', 0))}, "
                     f"down {format_rate(board.get('download_limit', 0))}, "
                     f"{board.get('max_connections')} connections, "
                     f"{board.get('max_open_transfers')} transfers")
    for share in reply.get("shares", []):
        line = f"share {share['path']}: {share['status']}"
        if share.get("peers") is not None:
            line += f", {share['peers']} peer(s)"
        if share.get("files_to_sync"):
            line += (f", {share['files_to_sync']} file(s) / "
                     f"{format_size(share.get('bytes_to_sync', 0))} to sync")
        if share.get("reason"):
            line += f" ({share['reason']})"
        lines.append(line)
        for transfer in share.get("transfers", []):
            lines.append(f"    {_bar(transfer['done'], transfer['total'])} "
                         f"{format_size(transfer['done'])} / {format_size(transfer['total'])}"
                         f"  {transfer['key']}")
        for limit in share.get("limits", [])[:5]:
            lines.append(f"    not downloaded: {limit['message']}")
    return "\n".join(lines)


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


def run_peers(args: argparse.Namespace) -> int:
    reply = _query(args, "list_peers")
    if reply is None:
        return 0
    if not reply["peers"]:
        print("no peers known yet")
    for peer in reply["peers"]:
        who = (peer.get("peer_id") or "?")[:12]
        if peer.get("state") == "dialling":
            where = ", ".join(peer.get("addresses", []))
            what = peer.get("share") or f"attaching {peer.get('attaching')}"
            print(f"{who:<12}  dialling   {where}  ({peer.get('source')}) for {what}")
        else:
            level = str(peer.get("access_level") or "").replace("_", "-")
            print(f"{who:<12}  {peer.get('state', ''):<10} {peer.get('address')} "
                  f"{peer.get('direction')} {level} {peer.get('software') or ''} "
                  f"for {peer.get('share')}")
    return 0


def run_transfers(args: argparse.Namespace) -> int:
    reply = _query(args, "list_transfers")
    if reply is None:
        return 0
    if not reply["transfers"]:
        print("no transfers in progress")
    for transfer in reply["transfers"]:
        print(f"{_bar(transfer['done'], transfer['total'])}  {transfer['share']}"
              f"{transfer['key']}")
    return 0


def run_pause(args: argparse.Namespace) -> int:
    return _simple(args, "pause", "paused")


def run_resume(args: argparse.Namespace) -> int:
    return _simple(args, "resume", "resumed")


def run_stop(args: argparse.Namespace) -> int:
    return _simple(args, "stop", "the daemon is stopping")


def run_detach(args: argparse.Namespace) -> int:
    path = _abs(args.path)
    return _simple(args, "remove_share", f"stopped syncing {path} (its files stay)", path=path)


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


def run_config(args: argparse.Namespace) -> int:
    with connected(args) as daemon:
        if args.key is None:
            reply = daemon.call("get_config")
            if args.json:
                _print_json(reply)
            else:
                for key, value in sorted(reply["config"].items()):
                    print(f"{key} = {json.dumps(value)}")
            return 0
        if args.value is None:
            value = daemon.call("get_config_value", key=args.key)["value"]
            print(json.dumps(value) if args.json else (
                value if isinstance(value, str) else json.dumps(value)))
            return 0
        try:
            parsed = json.loads(args.value)
        except ValueError:
            parsed = args.value
        daemon.call("set_config_value", key=args.key, value=parsed)
    if args.json:
        _print_json({})
    else:
        print(f"{args.key} = {json.dumps(parsed)}")
    return 0
