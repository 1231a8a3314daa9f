"""The CLI's per-share controls: ``pause [PATH]``, ``resume [PATH]``, ``mode PATH [MODE]``,
``override PATH`` and ``revert PATH``.

Like every command that drives the daemon, each is one control command
(``pause``/``resume`` with an optional ``path``, ``set_share_mode``,
``override_changes``, ``revert_changes``), so a
GUI or a host on a serial line can do the same. Without PATH, ``pause`` and
``resume`` act on the whole daemon, as they always did.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from csembed.cli_commands.daemon_client import _abs, _common, _print_json, connected
from csembed.errors import CsembedError

MODES = ("send-receive", "send-only", "receive-only")

__all__ = ["MODES", "register"]


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    for name, verb in (("pause", "suspend"), ("resume", "resume")):
        p = subparsers.add_parser(
            name, help=f"{verb} syncing (of every share, or of the share at PATH)",
            description=f"{verb.capitalize()} syncing. With PATH only that share: "
            + ("its connections close, nothing is scanned or transferred, and it stays "
               "paused across daemon restarts until resumed." if name == "pause" else
               "it connects again and scans for what changed while it was paused."))
        p.add_argument("path", nargs="?", help="a share (default: the whole daemon)")
        _common(p)
        p.set_defaults(handler=run_pause_resume, command_name=name)

    p = subparsers.add_parser(
        "mode", help="show or set a share's sync mode (send-receive, send-only, receive-only)",
        description="Without MODE: the share's sync mode. send-only: local changes are sent, "
        "peers' changes are not applied here (listed as out of sync in `csembed status`). "
        "receive-only: peers' changes are applied, local changes are not sent (listed as "
        "not sent) until a peer changes the same file, or the mode sends again. Unlike a "
        "read-only access code this is this device's own policy, kept across restarts.")
    p.add_argument("path", help="the share")
    p.add_argument("mode", nargs="?", choices=MODES)
    _common(p)
    p.set_defaults(handler=run_mode)

    p = subparsers.add_parser(
        "override", help="send-only share: make the peers' copies match this device",
        description="On a send-only share: send this device's state of every file the "
        "peers changed (listed as out of sync): their edits are replaced, their deletions "
        "and additions undone. The peers archive what is replaced.")
    p.add_argument("path", help="the share")
    _common(p)
    p.set_defaults(handler=run_override_revert, command_name="override_changes")

    p = subparsers.add_parser(
        "revert", help="receive-only share: give up the local changes not sent",
        description="On a receive-only share: the share's versions of the files changed "
        "here come back, and files added here are removed; every local version is "
        "archived first (`csembed versions`).")
    p.add_argument("path", help="the share")
    _common(p)
    p.set_defaults(handler=run_override_revert, command_name="revert_changes")


def _share_entry(shares: list[dict[str, Any]], path: str) -> dict[str, Any] | None:
    return next((s for s in shares if s.get("path") == path), None)


def run_pause_resume(args: argparse.Namespace) -> int:
    name = args.command_name
    params = {} if args.path is None else {"path": _abs(args.path)}
    with connected(args) as daemon:
        reply = daemon.call(name, **params)
    if args.json:
        _print_json(reply)
    elif args.path is None:
        print("paused" if name == "pause" else "resumed")
    else:
        print(f"{'paused' if reply.get('paused') else 'resumed'} {reply.get('path')}")
    return 0


def run_mode(args: argparse.Namespace) -> int:
    path = _abs(args.path)
    with connected(args) as daemon:
        if args.mode is not None:
            reply = daemon.call("set_share_mode", path=path, mode=args.mode.replace("-", "_"))
        else:
            found = _share_entry(daemon.call("list_shares")["shares"], os.path.realpath(path))
            if found is None or "sync_mode" not in found:
                raise CsembedError(f"no share at {path}")
            reply = {"path": found["path"], "sync_mode": found["sync_mode"],
                     "paused": found.get("paused", False)}
    if args.json:
        _print_json(reply)
    else:
        paused = ", paused" if reply.get("paused") else ""
        print(f"{reply['path']}: {reply['sync_mode'].replace('_', '-')}{paused}")
    return 0


def run_override_revert(args: argparse.Namespace) -> int:
    with connected(args) as daemon:
        reply = daemon.call(args.command_name, path=_abs(args.path))
    if args.json:
        _print_json(reply)
        return 0
    mode = reply["sync_mode"].replace("_", "-")
    if args.command_name == "override_changes":
        print(f"{reply['path']} ({mode}): sent this device's state of {reply['files']} "
              "file(s) changed by peers")
    else:
        print(f"{reply['path']} ({mode}): reverted {reply['files']} local change(s); "
              "local versions are archived (`csembed versions`)")
    return 0
