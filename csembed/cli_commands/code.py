"""``csembed code``: make or check an access code without a daemon.

Device makers use it to print a code on a setup screen or to check what a
user typed: ``csembed code new`` prints a fresh code, ``csembed code check
TEXT`` parses a typed code forgivingly and shows its access ID, or says
exactly what is wrong with it.
"""

from __future__ import annotations

import argparse
import json

from csembed.access_code import AccessCode


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("code", help="generate or check an access code",
                              description="Generate a fresh access code or check a typed one.")
    sub = p.add_subparsers(dest="code_command", metavar="ACTION", required=True)
    new = sub.add_parser("new", help="print a fresh random access code")
    new.add_argument("--json", action="store_true", help="machine-readable output")
    new.set_defaults(handler=run_new)
    check = sub.add_parser("check", help="parse a typed code and show its access ID")
    check.add_argument("text", nargs="+", help="the code, bare or as a clearskies:// URL")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(handler=run_check)


def _show(code: AccessCode, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"code": code.text, "url": code.url, "access_id": code.access_id}))
    else:
        print(f"code:      {code.text}\nurl:       {code.url}\naccess id: {code.access_id}")


def run_new(args: argparse.Namespace) -> int:
    _show(AccessCode.generate(), args.json)
    return 0


def run_check(args: argparse.Namespace) -> int:
    _show(AccessCode.parse(" ".join(args.text)), args.json)
    return 0
