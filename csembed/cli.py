"""The ``csembed`` command line.

Each sub-command lives beside the code it drives and registers itself through
a ``register(subparsers)`` function listed in ``_COMMANDS``; this module only
builds the parser, dispatches, and turns csembed's own errors into a one-line
message and exit status 2 (1 is left for "the operation ran and failed",
e.g. a failed check).

The daemon reads its command line once and then runs for months, so for
``csembed daemon`` :mod:`argparse` (and the :mod:`gettext` it brings) is
imported transiently (:mod:`csembed.transient_modules`): the parser is
dropped and the parsed options are copied into a plain
:class:`types.SimpleNamespace` before the daemon starts, so nothing keeps
argparse resident.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import types
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from csembed import __version__
from csembed.errors import CsembedError
from csembed.transient_modules import transient_modules

if TYPE_CHECKING:
    import argparse

# Modules that add sub-commands, in the order they appear in --help.
_COMMANDS = (
    "csembed.cli_commands.demo",
    "csembed.cli_commands.daemon",
    "csembed.cli_commands.pairing",
    "csembed.cli_commands.daemon_client",
    "csembed.cli_commands.share_controls",
    "csembed.cli_commands.versions",
    "csembed.cli_commands.boards",
    "csembed.cli_commands.code",
    "csembed.cli_commands.rsync",
    "csembed.cli_commands.tracker",
)


def _columns() -> int:
    """The terminal's width as :func:`shutil.get_terminal_size` finds it."""
    try:
        columns = int(os.environ["COLUMNS"])
        if columns > 0:
            return columns
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


def _parser_class() -> type[argparse.ArgumentParser]:
    # Defined on each call, not at module level, so that csembed.cli itself
    # holds no reference to argparse (see the module docstring).
    import argparse

    class Formatter(argparse.HelpFormatter):
        """argparse's help formatter, told the width: left to itself it imports
        :mod:`shutil` for it, and with it bz2 and lzma, which would then stay
        resident in the daemon (argparse formats each argument as it is added)."""

        def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                     width: int | None = None) -> None:
            super().__init__(prog, indent_increment, max_help_position,
                             _columns() - 2 if width is None else width)

    class Parser(argparse.ArgumentParser):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("formatter_class", Formatter)
            super().__init__(*args, **kwargs)

    return Parser


def build_parser(commands: Sequence[str] = _COMMANDS) -> argparse.ArgumentParser:
    """The argument parser with the sub-commands of ``commands`` (default: all)."""
    parser_class = _parser_class()
    parser = parser_class(
        prog="csembed",
        description="ClearSkies friend-to-friend directory sync for small devices.",
    )
    parser.add_argument("--version", action="version", version=f"csembed {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND",
                                       parser_class=parser_class)
    for name in commands:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``csembed`` console script."""
    commands: Sequence[str] = _COMMANDS
    daemon = (sys.argv[1:] if argv is None else list(argv))[:1] == ["daemon"]
    if daemon:
        # Before the sub-command modules load: some import asyncio, which
        # would pull in ssl, which the daemon never needs. And only the
        # daemon's own sub-command: the others' modules would stay resident.
        from csembed.cli_commands.daemon import without_tls
        without_tls()
        commands = ("csembed.cli_commands.daemon",)
    transient = transient_modules("argparse", "gettext") if daemon else contextlib.nullcontext()
    with transient:
        parser = build_parser(commands)
        args: Any = parser.parse_args(argv)
        handler = getattr(args, "handler", None)
        if handler is None:
            parser.print_help()
            return 2
        del parser
        if daemon:
            args = types.SimpleNamespace(**vars(args))
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
