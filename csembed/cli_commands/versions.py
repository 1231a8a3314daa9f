"""``csembed versions`` and ``csembed restore``: a file's archived versions.

Both send one control command (``versions``, ``restore``) to the running
daemon, naming the file by its absolute path inside a share; the daemon finds
the share and reads its archive. ``--at`` takes a time as people write it --
ISO 8601 (``2026-12-04 15:30``, local time unless it carries an offset or
``Z``), seconds since 1970, or a duration ago (``2h ago``) -- and sends
seconds since 1970.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import time
from pathlib import Path
from typing import Any

from csembed.cli_commands.daemon_client import connected
from csembed.control.errors import ControlReplyError
from csembed.errors import CsembedError
from csembed.runtime.data_dir import default_data_dir
from csembed.units import format_size, parse_duration

__all__ = ["parse_time", "register"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                   help=f"the daemon's data directory (default {default_data_dir()})")
    p.add_argument("--json", action="store_true", help="print the daemon's reply as JSON")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "versions", help="list the archived versions of a file",
        description="List the versions of FILE (a path inside a share) that peers "
                    "replaced or deleted and this device archived: number, time, size, "
                    "SHA-256 prefix. Newest first.")
    p.add_argument("file", help="the file, e.g. ~/Piano/takes/etude.mid")
    _common(p)
    p.set_defaults(handler=run_versions)

    p = subparsers.add_parser(
        "restore", help="put an archived version of a file back",
        description="Put an archived version of FILE back: the newest, --version N (as "
                    "`csembed versions` lists them), or the one in place --at a time. "
                    "The current content is archived first; the restored file is then an "
                    "ordinary local change and syncs to the share's peers.")
    p.add_argument("file", help="the file, e.g. ~/Piano/takes/etude.mid")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, metavar="N", help="the version number")
    which.add_argument("--at", metavar="TIME",
                       help="the version in place at TIME: '2026-12-04 15:30', "
                            "'2026-12-04T15:30Z', seconds since 1970, or e.g. '2h ago'")
    p.add_argument("--to", metavar="PATH",
                   help="write it here instead (inside a share, or anywhere; an existing "
                        "file outside the shares is never replaced)")
    _common(p)
    p.set_defaults(handler=run_restore)


def parse_time(text: str, now: float) -> float:
    """Seconds since 1970 for ``text`` (see the module docstring)."""
    value = text.strip()
    try:
        if value.lower().endswith(" ago"):
            return now - parse_duration(value[:-4])
        if value.replace(".", "", 1).isdigit():
            return float(value)
        return _iso(value).timestamp()
    except ValueError:
        raise CsembedError(f"--at: cannot read {text!r} as a time; write e.g. "
                           "'2026-12-04 15:30', '2026-12-04T15:30Z' or '2h ago'") from None


def _iso(value: str) -> datetime.datetime:
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    parsed = datetime.datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.astimezone()


def _call(args: argparse.Namespace, command: str, **params: Any) -> dict[str, Any]:
    with connected(args) as daemon:
        try:
            reply: dict[str, Any] = daemon.call(command, **params)
        except ControlReplyError as exc:
            raise CsembedError(f"{exc.message} ({exc.code})") from None
    return reply


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def run_versions(args: argparse.Namespace) -> int:
    path = os.path.abspath(os.path.expanduser(args.file))
    reply = _call(args, "versions", path=path)
    if args.json:
        print(json.dumps(reply, indent=1, sort_keys=True))
        return 0
    versions = reply["versions"]
    if not versions:
        print(f"no archived versions of {path}")
        return 0
    print(f"{'VERSION':>7}  {'REPLACED AT':<19}  {'MODIFIED':<19}  {'SIZE':>9}  SHA-256")
    for item in versions:
        print(f"{item['version']:>7}  {_when(item['archived_at']):<19}  "
              f"{_when(item['mtime']):<19}  {format_size(item['size']):>9}  "
              f"{item['sha256'][:12]}")
    return 0


def run_restore(args: argparse.Namespace) -> int:
    path = os.path.abspath(os.path.expanduser(args.file))
    params: dict[str, Any] = {"path": path}
    if args.version is not None:
        params["version"] = args.version
    if args.at is not None:
        params["at"] = parse_time(args.at, time.time())
    if args.to is not None:
        params["to"] = os.path.abspath(os.path.expanduser(args.to))
    reply = _call(args, "restore", **params)
    if args.json:
        print(json.dumps(reply, indent=1, sort_keys=True))
        return 0
    print(f"restored version {reply['version']} ({format_size(reply['size'])}, replaced "
          f"{_when(reply['archived_at'])}) to {reply['path']}")
    return 0
