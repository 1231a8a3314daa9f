"""The ``csembed`` command line.

Each sub-command lives beside the code it drives and registers itself through
a ``register(subparsers)`` function listed in ``_COMMANDS``; this module only
builds the parser, dispatches, and turns csembed's own errors into a one-line
message and exit status 2 (1 is left for "the operation ran and failed",
e.g. a failed check).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from csembed import __version__
from csembed.errors import CsembedError

# Modules that add sub-commands, in the order they appear in --help.
_COMMANDS = (
    "csembed.cli_commands.demo",
    "csembed.cli_commands.daemon",
    "csembed.cli_commands.daemon_client",
    "csembed.cli_commands.share_controls",
    "csembed.cli_commands.versions",
    "csembed.cli_commands.boards",
    "csembed.cli_commands.code",
    "csembed.cli_commands.rsync",
    "csembed.cli_commands.tracker",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every available sub-command."""
    parser = argparse.ArgumentParser(
        prog="csembed",
        description="ClearSkies friend-to-friend directory sync for small devices.",
    )
    parser.add_argument("--version", action="version", version=f"csembed {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``csembed`` console script."""
    if (sys.argv[1:] if argv is None else list(argv))[:1] == ["daemon"]:
        # Before the sub-command modules load: some import asyncio, which
        # would pull in ssl, which the daemon never needs.
        from csembed.cli_commands.daemon import without_tls
        without_tls()
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except CsembedError as exc:
        print(f"csembed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
