"""``csembed boards``: list the bundled board profiles and their main limits.

``csembed boards check FILE`` validates a profile of the maker's own with the
same loader the daemon uses (so an error names the file and the key exactly
as the daemon would), then adds advice the schema cannot express: a memory
budget for data in motion set against the board's RAM.
"""

from __future__ import annotations

import argparse
import json
import sys

from csembed.board_profile import BoardError, BoardProfile, iter_boards, load_board
from csembed.units import format_size


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("boards", help="list board profiles and their limits",
                              description="List the bundled board profiles, or show one.")
    p.add_argument("name", nargs="?", help="show every limit of this board (name or .toml "
                   "path), or 'check' to validate FILE")
    p.add_argument("file", nargs="?", help="with 'check': the profile to validate")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=run)


# Share of the board's RAM the daemon's data in motion should stay under: the rest
# belongs to the application (the piano's sound engine), Python and the kernel.
_RAM_SHARE = 0.25


def advice(board: BoardProfile) -> list[str]:
    """Warnings about a valid profile whose limits do not fit together."""
    mem = board.memory
    notes = []
    # worst case held at once: a receive buffer and a message per connection,
    # the bytes in flight, one signature, one I/O buffer per transfer
    budget = (mem.max_connections * (mem.max_message + mem.chunk_size) + mem.max_bytes_in_flight
              + mem.max_signature + mem.max_open_transfers * mem.io_buffer)
    if budget > board.ram * _RAM_SHARE:
        notes.append(f"memory: up to {format_size(budget)} for data in motion is more than "
                     f"{_RAM_SHARE:.0%} of board.ram ({format_size(board.ram)}); lower "
                     f"memory.max_connections, max_message or max_bytes_in_flight")
    if mem.max_bytes_in_flight < mem.chunk_size * mem.max_open_transfers:
        notes.append("memory: max_bytes_in_flight is below one chunk per open transfer, so "
                     "transfers will wait on each other")
    if board.storage.quota and board.storage.max_file_size > board.storage.quota:
        notes.append("storage: max_file_size is larger than the quota")
    return notes


def check(path: str, as_json: bool) -> int:
    """Validate one profile file; 0 when valid, 1 when not."""
    if "/" not in path and not path.endswith(".toml"):
        path = f"./{path}"  # a file, never a bundled name
    try:
        board = load_board(path)
    except BoardError as exc:
        if as_json:
            print(json.dumps({"file": path, "valid": False, "error": str(exc)}, indent=2))
        else:
            print(f"{exc}", file=sys.stderr)
        return 1
    notes = advice(board)
    if as_json:
        print(json.dumps({"file": path, "valid": True, "board": board.name, "advice": notes},
                         indent=2))
    else:
        print(f"{path}: valid profile for board {board.name!r}")
        for note in notes:
            print(f"  advice: {note}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.name == "check":
        if not args.file:
            raise BoardError("boards check: give the profile FILE to check")
        return check(args.file, args.json)
    if args.file:
        raise BoardError(f"boards: unexpected argument {args.file!r}")
    boards: list[BoardProfile] = [load_board(args.name)] if args.name else list(iter_boards())
    if args.json:
        out = [b.as_dict() for b in boards]
        print(json.dumps(out[0] if args.name else out, indent=2))
        return 0
    if args.name:
        board = boards[0]
        print(f"{board.name}: {board.description}\n  file: {board.source}")
        for table, values in board.as_dict().items():
            if isinstance(values, dict):
                print(f"  [{table}]")
                for key, value in values.items():
                    print(f"    {key} = {value}")
        return 0
    columns = ["board", *boards[0].summary()] if boards else ["board"]
    rows = [[b.name, *b.summary().values()] for b in boards]
    widths = [max(len(str(r[i])) for r in [columns, *rows]) for i in range(len(columns))]
    for row in [columns, *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0
