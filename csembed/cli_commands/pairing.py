"""The CLI's pairing commands: ``share`` (issue an access code), ``attach``
(redeem one), ``codes`` (list or revoke issued codes) and ``peers`` (list the
devices, remove one from a share or allow it back).

Each is one or two control commands, as everywhere in the CLI. ``attach`` is
the one that waits: it polls the share's entry until the keys have arrived
or the attach ended, and turns the daemon's reason into a definite answer
-- refused, already a member, not reachable yet (the daemon keeps trying),
cancelled -- with an exit status to match. A folder that already holds
files is joined only with ``--merge``, or after a yes on a terminal.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from csembed.access_code import AccessCode
from csembed.cli_commands.daemon_client import (
    UsageError,
    _abs,
    _common,
    _duration,
    _entry_at,
    _print_json,
    _query,
    connected,
)
from csembed.control.errors import ControlReplyError
from csembed.units import parse_duration

__all__ = ["register"]


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
