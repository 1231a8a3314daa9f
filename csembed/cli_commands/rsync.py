"""``csembed rdiff``: a drop-in for librsync's ``rdiff`` command.

Same actions, argument order and options as rdiff 2.3::

    csembed rdiff [OPTIONS] signature [BASIS [SIGNATURE]]
    csembed rdiff [OPTIONS] delta SIGNATURE [NEWFILE [DELTA]]
    csembed rdiff [OPTIONS] patch BASIS [DELTA [NEWFILE]]

A missing file or ``-`` means stdin/stdout (BASIS for ``patch`` must be a real
file: it is read at random offsets). Options: ``-b`` block size (0 =
recommended), ``-S`` strong sum size (0 = maximum, -1 = minimum), ``-H
blake2|md4``, ``-R rabinkarp|rollsum``, ``-f`` overwrite existing output,
``-s`` statistics to stderr; ``-I``/``-O``/``-v`` are accepted and ignored.
Options may also follow the action, as rdiff allows. Exit status is rdiff's
for the same failure (100 I/O error, 101 usage, 103 input ended, 104 bad
magic, 106 corrupt, 108 bad parameter), so scripts that check it keep
working. Output files are written to a temp file and renamed when complete,
so a failure never leaves a partial file behind (rdiff does leave one).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO, NoReturn

from csembed.native.errors import RsyncError, RsyncParamError
from csembed.rsync.files import delta_file, patch_file, signature_file
from csembed.rsync.params import default_block_len, min_strong_len
from csembed.rsync.signature import DEFAULT_MAX_SIGNATURE, file_size

RS_IO_ERROR = 100
RS_SYNTAX_ERROR = 101

#: Options that take a value (needed to move options that follow the action).
_VALUE_OPTIONS = {"-b", "--block-size", "-S", "--sum-size", "-H", "--hash", "-R", "--rollsum",
                  "-I", "--input-size", "-O", "--output-size", "--max-signature"}
_USAGE = """csembed rdiff [OPTIONS] signature [BASIS [SIGNATURE]]
       csembed rdiff [OPTIONS] delta SIGNATURE [NEWFILE [DELTA]]
       csembed rdiff [OPTIONS] patch BASIS [DELTA [NEWFILE]]"""
#: Positional file names per action: (inputs..., output).
_FILES = {"signature": ("BASIS", "SIGNATURE"), "delta": ("SIGNATURE", "NEWFILE", "DELTA"),
          "patch": ("BASIS", "DELTA", "NEWFILE")}


def options_first(argv: Sequence[str]) -> list[str]:
    """Move options (with their values) ahead of the positional words, as rdiff's popt allows."""
    opts: list[str] = []
    words: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            words.extend(args[i + 1:])
            break
        if arg.startswith("-") and arg != "-":
            opts.append(arg)
            if arg in _VALUE_OPTIONS and i + 1 < len(args):
                opts.append(args[i + 1])
                i += 1
        else:
            words.append(arg)
        i += 1
    return opts + words


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``rdiff`` sub-command to the ``csembed`` parser."""
    p = subparsers.add_parser(
        "rdiff", usage=_USAGE, help="librsync-compatible signature/delta/patch (rdiff drop-in)",
        description="Compute signatures and deltas and apply patches in librsync's formats, "
                    "with rdiff's arguments and exit codes.")
    p.add_argument("-b", "--block-size", type=int, default=0, metavar="BYTES",
                   help="signature block size, 0 (default) for recommended")
    p.add_argument("-S", "--sum-size", type=int, default=0, metavar="BYTES",
                   help="signature strength, 0 (default) for max, -1 for min")
    p.add_argument("-H", "--hash", default="blake2", metavar="ALG",
                   help="strong hash: blake2 (default), md4")
    p.add_argument("-R", "--rollsum", default="rabinkarp", metavar="ALG",
                   help="weak rolling sum: rabinkarp (default), rollsum")
    p.add_argument("-f", "--force", action="store_true", help="overwrite existing files")
    p.add_argument("-s", "--statistics", action="store_true", help="show statistics on stderr")
    p.add_argument("-v", "--verbose", action="store_true", help="accepted, ignored")
    p.add_argument("-I", "--input-size", type=int, default=0, metavar="BYTES",
                   help="input chunk size (default 256 KiB)")
    p.add_argument("-O", "--output-size", type=int, default=0, metavar="BYTES",
                   help="accepted, ignored")
    p.add_argument("--max-signature", type=int, default=DEFAULT_MAX_SIGNATURE, metavar="BYTES",
                   help=f"refuse signatures larger than this (default {DEFAULT_MAX_SIGNATURE})")
    p.add_argument("action", choices=tuple(_FILES), help="signature, delta or patch")
    p.add_argument("files", nargs="*", metavar="FILE", help="see usage; - or absent = stdio")
    p.set_defaults(handler=run)
    parse = p.parse_known_args

    def usage_error(message: str) -> NoReturn:
        p.print_usage(sys.stderr)
        _note(message)
        sys.exit(RS_SYNTAX_ERROR)  # rdiff's status for bad usage, not argparse's 2

    def parse_options_anywhere(args: Sequence[str] | None = None,
                               namespace: argparse.Namespace | None = None) -> Any:
        return parse(options_first(sys.argv[1:] if args is None else args), namespace)

    p.parse_known_args = parse_options_anywhere  # type: ignore[method-assign]
    p.error = usage_error  # type: ignore[method-assign]


def _is_stdio(name: str | None) -> bool:
    return name is None or name == "-"


@contextlib.contextmanager
def _input(name: str | None) -> Iterator[BinaryIO]:
    if _is_stdio(name):
        yield sys.stdin.buffer
    else:
        assert name is not None
        with open(name, "rb") as f:
            yield f


def _output(name: str | None, force: bool) -> str | BinaryIO:
    if _is_stdio(name):
        return sys.stdout.buffer
    assert name is not None
    if not force and os.path.lexists(name):
        raise FileExistsError(f"{name}: file exists (use -f to overwrite)")
    return name


def _note(message: str) -> None:
    print(f"csembed rdiff: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Handler of ``csembed rdiff``; returns rdiff's exit status."""
    names = _FILES[args.action]
    if args.hash not in ("blake2", "md4") or args.rollsum not in ("rabinkarp", "rollsum"):
        _note(f"unknown hash {args.hash!r} or rollsum {args.rollsum!r}; expected "
              "-H blake2|md4 and -R rabinkarp|rollsum")
        return RS_SYNTAX_ERROR
    if len(args.files) > len(names):
        _note(f"too many file names for {args.action}; usage:\n{_USAGE}")
        return RS_SYNTAX_ERROR
    files: list[str | None] = [*args.files, *[None] * (len(names) - len(args.files))]
    chunk = args.input_size if args.input_size > 0 else 256 << 10
    try:
        if args.action == "signature":
            return _signature(args, files[0], files[1], chunk)
        if args.action == "delta":
            return _delta(args, files[0], files[1], files[2], chunk)
        return _patch(args, files[0], files[1], files[2], chunk)
    except RsyncError as exc:
        _note(str(exc))
        return exc.exit_code
    except OSError as exc:
        _note(str(exc))
        return RS_IO_ERROR


def _signature(args: argparse.Namespace, basis: str | None, sig: str | None, chunk: int) -> int:
    if args.sum_size < -1:
        raise RsyncParamError(f"invalid strong sum size {args.sum_size}")
    with _input(basis) as bf:
        size = file_size(bf)
        if args.sum_size > 0:
            minimum = min_strong_len(size, args.block_size or default_block_len(size))
            if args.sum_size < minimum:
                _note(f"warning: strong sum size {args.sum_size} is below the recommended "
                      f"minimum {minimum} for this basis")
        params = signature_file(bf, _output(sig, args.force), block_len=args.block_size,
                                strong_len=args.sum_size, hash=args.hash,
                                rollsum=args.rollsum, chunk_size=chunk)
    if args.statistics:
        _note(f"signature statistics: magic 0x{params.magic:08x}, block length "
              f"{params.block_len}, strong sum length {params.strong_len}")
    return 0


def _delta(args: argparse.Namespace, sig: str | None, new: str | None, delta: str | None,
           chunk: int) -> int:
    if _is_stdio(sig):
        _note(f"delta needs a SIGNATURE file; usage:\n{_USAGE}")
        return RS_SYNTAX_ERROR
    assert sig is not None
    with _input(new) as nf:
        stats = delta_file(sig, nf, _output(delta, args.force),
                           max_signature=args.max_signature, chunk_size=chunk)
    if args.statistics:
        _note(f"delta statistics: {stats.commands} commands, literal {stats.literal_bytes} "
              f"bytes, copy {stats.copy_bytes} bytes")
    return 0


def _patch(args: argparse.Namespace, basis: str | None, delta: str | None, new: str | None,
           chunk: int) -> int:
    if _is_stdio(basis):
        _note(f"patch needs a BASIS file (it is read at random offsets); usage:\n{_USAGE}")
        return RS_SYNTAX_ERROR
    assert basis is not None
    with _input(delta) as df:
        written = patch_file(basis, df, _output(new, args.force), chunk_size=chunk)
    if args.statistics:
        _note(f"patch statistics: wrote {written} bytes")
    return 0
