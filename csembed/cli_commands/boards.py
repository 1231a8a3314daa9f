"""``csembed boards``: list the bundled board profiles and their main limits."""

from __future__ import annotations

import argparse
import json

from csembed.board_profile import BoardProfile, iter_boards, load_board


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("boards", help="list board profiles and their limits",
                              description="List the bundled board profiles, or show one.")
    p.add_argument("name", nargs="?", help="show every limit of this board (name or .toml path)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
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
