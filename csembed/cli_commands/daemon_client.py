"""The CLI commands that drive a running daemon through its control socket.

``share``, ``attach``, ``list``, ``status``, ``peers``, ``codes``,
``transfers``, ``stop``, ``detach``, ``cat``,
``rescan`` and ``config``. Each takes ``--data-dir`` (to find ``<data dir>/control``) and
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
from csembed.units import format_rate, format_size, parse_duration

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
    p.add_argument("--sync-mode", choices=("send-receive", "send-only", "receive-only"),
                   help="this device's sync mode for the share (default: send-receive for "
                        "a new share, unchanged for an existing one; see `csembed mode`)")
    _common(p)
    p.set_defaults(handler=run_share)

    p = subparsers.add_parser("attach", help="join a share with an access code",
                              description="Join the share an access code was made for, "
                              "syncing it into PATH.")
    p.add_argument("code", help="the access code (or its clearskies:// URL); with "
                   "--cancel, the path of the attach to cancel")
    p.add_argument("path", nargs="?", help="where to keep the share (created if missing)")
    p.add_argument("--cancel", action="store_true",
                   help="cancel the attach waiting at the path given")
    p.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                   help="how long to wait for the share's keys (default %(default)s; "
                        "0: do not wait)")
    p.add_argument("--merge", action="store_true",
                   help="PATH may already hold files: they stay and join the share")
    p.add_argument("--sync-mode", choices=("send-receive", "send-only", "receive-only"),
                   default="send-receive",
                   help="this device's sync mode for the share, from its first scan "
                        "(default %(default)s; see `csembed mode`)")
    _common(p)
    p.set_defaults(handler=run_attach)

    p = subparsers.add_parser("peers", help="list peers, or remove one from a share",
                              description="Without arguments: connected and known peers, "
                              "with their device names. 'peers remove SHARE_PATH PEER': this "
                              "device closes that peer's connection and never syncs the "
                              "share with it again (PEER: its ID or the start of it, as "
                              "listed; it keeps its copy and keys, and other members may "
                              "still sync with it). 'peers allow SHARE_PATH PEER' undoes it.")
    p.add_argument("action", nargs="?", choices=("remove", "allow"))
    p.add_argument("share_path", nargs="?")
    p.add_argument("peer", nargs="?")
    _common(p)
    p.set_defaults(handler=run_peers)

    p = subparsers.add_parser("codes", help="list issued access codes, or revoke one",
                              description="Without arguments: the access codes this daemon "
                              "issued (mode, uses, expiry) and the last ones that ended. "
                              "'codes revoke CODE': stop CODE (or the start of it) working now.")
    p.add_argument("action", nargs="?", choices=("revoke",))
    p.add_argument("code", nargs="?")
    _common(p)
    p.set_defaults(handler=run_codes)

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


# -- commands -----------------------------------------------------------------------------


def _expires(text: str) -> float | None:
    """``--expires``: a duration, or never."""
    if text.strip().lower() in ("never", "none", "0"):
        return None
    try:
        seconds = parse_duration(text)
    except ValueError:
        raise UsageError(f"--expires {text[:40]!r}: expected a duration such as 30min, 24h "
                         "or 7d, or 'never'") from None
    if not 0 < seconds < 1e9:
        raise UsageError(f"--expires {text[:40]!r}: must be more than 0 and less than about "
                         "31 years (or 'never')")
    return seconds


def run_share(args: argparse.Namespace) -> int:
    path = _abs(args.path)
    expires = _expires(args.expires)
    mode = args.mode.replace("-", "_")
    with connected(args) as daemon:
        shares = daemon.call("list_shares")["shares"]
        created = False
        sync_mode = {} if args.sync_mode is None else {
            "sync_mode": args.sync_mode.replace("-", "_")}
        if not any(s["path"] == os.path.realpath(path) for s in shares):
            daemon.call("create_share", path=path, **sync_mode)
            created = True
        elif sync_mode:
            daemon.call("set_share_mode", path=path, mode=sync_mode["sync_mode"])
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


def _entry_at(daemon: ControlClient, path: str) -> dict[str, Any] | None:
    shares = daemon.call("list_shares")["shares"]
    return next((s for s in shares if s["path"] == os.path.realpath(path)), None)


def _ask(question: str) -> bool:
    """Ask on the terminal; ``False`` when there is no one to ask."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        return False
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def _cancel_attach(args: argparse.Namespace, path: str) -> int:
    with connected(args) as daemon:
        entry = _entry_at(daemon, path)
        if entry is None or entry["status"] not in ("attaching", "attach_failed"):
            raise UsageError(f"no attach is waiting at {path}" + (
                " (it is a share; `csembed detach` stops syncing it)" if entry else ""))
        daemon.call("remove_share", path=path)
    if args.json:
        _print_json({"path": path, "status": "cancelled"})
    else:
        print(f"cancelled the attach of {path}")
    return 0


def run_attach(args: argparse.Namespace) -> int:
    if args.cancel:
        return _cancel_attach(args, _abs(args.path or args.code))
    if args.path is None:
        raise UsageError("attach needs a CODE and a PATH")
    path = _abs(args.path)
    mode = {} if args.sync_mode == "send-receive" else {
        "sync_mode": args.sync_mode.replace("-", "_")}
    with connected(args) as daemon:
        try:
            daemon.call("add_share", code=args.code, path=path, merge=args.merge, **mode)
        except ControlReplyError as exc:
            if exc.code != "folder_not_empty":
                raise
            if not _ask(f"{exc.message}\nMerge?"):
                raise UsageError(exc.message) from None
            daemon.call("add_share", code=args.code, path=path, merge=True, **mode)
        if args.timeout <= 0:
            if args.json:
                _print_json(_entry_at(daemon, path) or {"path": path, "status": "attaching"})
            else:
                print(f"attaching {path}; the daemon keeps looking for the share's creator "
                      "(see `csembed list`)")
            return 0
        if not args.json:
            print(f"attaching {path}; looking for the share's creator…", flush=True)
        deadline = time.monotonic() + args.timeout
        entry: dict[str, Any] | None = None
        said = ""
        while True:
            entry = _entry_at(daemon, path)
            if entry is None or entry["status"] != "attaching":
                break
            state, reason = entry.get("attach_state"), entry.get("reason") or ""
            if state == "refused":
                daemon.call("remove_share", path=path)
                if args.json:
                    _print_json(entry)
                else:
                    print(f"attach failed: {reason}; gave up (nothing was attached)")
                return 1
            if reason and reason != said and state in ("unreachable", "looking") \
                    and not args.json:
                print(f"  {reason}", flush=True)
                said = reason
            if time.monotonic() > deadline:
                if args.json:
                    _print_json(entry)
                else:
                    print(f"still waiting for the share's keys after {args.timeout:g} s; "
                          "the daemon keeps trying (see `csembed list`; "
                          f"`csembed attach --cancel {path}` gives up)")
                return 1
            time.sleep(0.2)
    if args.json:
        _print_json(entry or {"path": path, "status": "cancelled"})
        return 0 if entry is not None and entry["status"] != "attach_failed" else 1
    if entry is None:
        print(f"the attach of {path} was cancelled (by `csembed attach --cancel` or "
              "`csembed detach`)")
        return 1
    if entry["status"] == "attach_failed":
        print(f"attach failed: {entry.get('reason')}")
        return 1
    if entry["status"] != "attaching":
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


def run_peers(args: argparse.Namespace) -> int:
    if args.action is not None:
        if not args.share_path or not args.peer:
            raise UsageError(f"peers {args.action} needs SHARE_PATH and PEER "
                             "(see `csembed peers`)")
        path = _abs(args.share_path)
        reply = _query(args, f"{args.action}_peer", path=path, peer=args.peer)
        if reply is None:
            return 0
        who = reply["peer_id"][:12]
        if args.action == "remove":
            print(f"removed peer {who} from {path}: closed {reply.get('closed', 0)} "
                  "connection(s); this device will not sync the share with it again "
                  f"(`csembed peers allow {path} {who}` undoes it)")
        else:
            print(f"peer {who} may sync {path} again")
        return 0
    reply = _query(args, "list_peers")
    if reply is None:
        return 0
    if not reply["peers"]:
        print("no peers known yet")
    for peer in reply["peers"]:
        who = (peer.get("peer_id") or "?")[:12]
        if peer.get("state") == "removed":
            print(f"{who:<12}  removed    from {peer.get('share')} (csembed peers allow)")
        elif peer.get("state") == "dialling":
            where = ", ".join(peer.get("addresses", []))
            what = peer.get("share") or f"attaching {peer.get('attaching')}"
            print(f"{who:<12}  dialling   {where}  ({peer.get('source')}) for {what}")
        else:
            level = str(peer.get("access_level") or "").replace("_", "-")
            name = f'"{peer["name"]}" ' if peer.get("name") else ""
            print(f"{who:<12}  {name}{peer.get('state', '')} {peer.get('address')} "
                  f"{peer.get('direction')} {level} {peer.get('software') or ''} "
                  f"for {peer.get('share')}")
    return 0


def _when(wall: float | None) -> str:
    if wall is None:
        return "never expires"
    left = wall - time.time()
    if left <= 0:
        return "expired"
    if left < 60:
        return f"expires in {left:.0f} s"
    return f"expires in {_duration(round(left / 60) * 60)}"


def run_codes(args: argparse.Namespace) -> int:
    if args.action == "revoke":
        if not args.code:
            raise UsageError("codes revoke needs a CODE (or the start of one; see "
                             "`csembed codes`)")
        reply = _query(args, "revoke_code", code=args.code)
        if reply is not None:
            print(f"revoked {reply['code']} ({reply['mode'].replace('_', '-')}); it no longer "
                  "works")
        return 0
    reply = _query(args, "list_codes")
    if reply is None:
        return 0
    codes = reply["codes"]
    if not codes:
        print("no access codes issued; `csembed share PATH` makes one")
    for code in codes:
        mode = str(code.get("mode") or "").replace("_", "-")
        if code.get("state") == "live":
            uses = f"used {code['uses']} of " + (
                "unlimited" if code.get("max_uses") is None else str(code["max_uses"]))
            print(f"{code['code']}  {mode:<10} {uses}, {_when(code.get('expires_at'))}  "
                  f"{code.get('path') or ''}")
        else:
            print(f"{code['code']}  {mode:<10} {code.get('state')}  {code.get('path') or ''}")
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
