#!/usr/bin/env python3
"""Check that csembed's imports follow the layers of DESIGN.md §1.

Theory of operation: every ``import``/``from … import`` in ``csembed/`` is
read with :mod:`ast` (the code is never run; imports inside functions count
too, ``if TYPE_CHECKING:`` blocks do not, since they vanish at run time). Each
module belongs to a *package* (the first name under ``csembed``) and each
package to a *layer* in :data:`LAYERS`. An import fails the check when

* it goes **up**: the imported package's layer is above the importer's; or
* it closes a **cycle** between packages (package A imports B and B, directly
  or through others, imports A), whatever their layers; or
* a module of a **sans-I/O** layer (:data:`SANS_IO_LAYERS`) imports the event
  loop, sockets or the clock (:data:`IO_MODULES`): their adapters belong in
  ``runtime/``.

Imports within a package are free, and so are imports sideways within a
layer as long as they make no cycle. Every failure names the file, the line
and the two packages with their layers; the exit status is 1 if any, 0 if
none, 2 for a package missing from the map (add it to :data:`LAYERS`).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

# The layer map, top to bottom, as in DESIGN.md §1. A package may import its
# own layer (without cycles) and any layer below it.
LAYERS: dict[str, tuple[str, ...]] = {
    "front ends": ("__main__", "cli", "cli_commands", "lab"),
    "runtime": ("runtime",),
    "engines": ("directory", "database"),
    "protocol": ("protocol", "security", "rsync", "discovery", "control", "web",
                 "nat", "transport"),
    "native": ("native", "_native"),
    # Leaf modules every layer may use: errors, units, parsed settings, sentinels.
    "base": ("__init__", "errors", "units", "access_code", "board_profile", "need_data",
             "atomic_file", "hex_ids", "digests", "libc_calls",
             "transient_modules"),
}

# Layers whose code takes bytes and ``now`` in and gives bytes, events and
# deadlines out (DESIGN.md §1: "Only the runtime touches sockets, the clock ...").
SANS_IO_LAYERS: tuple[str, ...] = ("protocol", "native")
IO_MODULES: tuple[str, ...] = ("asyncio", "socket", "selectors", "time")

ROOT_PACKAGE = "csembed"
ROOT_INIT = "__init__"  # csembed/__init__.py itself (the version string)


@dataclass(frozen=True)
class Edge:
    """One import of package ``target`` by a module of package ``source``."""

    source: str
    target: str
    path: Path
    line: int


@dataclass(frozen=True)
class Failure:
    """One import that breaks the layering, as printed."""

    edge: Edge
    why: str

    def __str__(self) -> str:
        return f"{self.edge.path}:{self.edge.line}: {self.why}"


def layer_of() -> dict[str, tuple[int, str]]:
    """Package name → (rank, layer name); rank 0 is the top layer."""
    return {pkg: (rank, name)
            for rank, (name, pkgs) in enumerate(LAYERS.items()) for pkg in pkgs}


def _module_name(tree_root: Path, path: Path) -> list[str]:
    parts = list(path.relative_to(tree_root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return [ROOT_PACKAGE, *parts]


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _targets(node: ast.Import | ast.ImportFrom, module: list[str], is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level == 0:
        base = node.module or ""
    else:
        anchor = module if is_package else module[:-1]
        anchor = anchor[:len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([node.module] if node.module else []))
    if node.module is None or base == ROOT_PACKAGE:
        # ``from . import x`` / ``from csembed import x``: x may be a subpackage.
        return [f"{base}.{alias.name}" for alias in node.names]
    return [base]


def collect_edges(tree_root: Path, io_imports: list[Edge] | None = None) -> list[Edge]:
    """Every import between two different packages under ``tree_root``.

    Imports of :data:`IO_MODULES` are appended to ``io_imports`` if given
    (as edges whose target is the I/O module's name).
    """
    edges = []
    for path in sorted(tree_root.rglob("*.py")):
        module = _module_name(tree_root, path)
        source = module[1] if len(module) > 1 else ROOT_INIT
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _imports(tree):
            for name in _targets(node, module, path.name == "__init__.py"):
                parts = name.split(".")
                if parts[0] in IO_MODULES and io_imports is not None:
                    io_imports.append(Edge(source, parts[0], path, node.lineno))
                if parts[0] != ROOT_PACKAGE:
                    continue
                target = parts[1] if len(parts) > 1 else ROOT_INIT
                if not ((tree_root / target).is_dir() or (tree_root / f"{target}.py").is_file()
                        or target == "_native"):
                    target = ROOT_INIT  # a name defined in csembed/__init__.py
                if target != source:
                    edges.append(Edge(source, target, path, node.lineno))
    return edges


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, stack = {start}, [start]
    while stack:
        node = stack.pop()
        if node == goal:
            return True
        for nxt in graph.get(node, ()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return False


def check(tree_root: Path) -> tuple[list[Failure], set[str]]:
    """The failures under ``tree_root``, and the packages missing from the map."""
    layers = layer_of()
    io_imports: list[Edge] = []
    edges = collect_edges(tree_root, io_imports)
    packages = {e.source for e in edges} | {e.target for e in edges}
    unknown = {p for p in packages if p not in layers}
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, set()).add(edge.target)
    failures = []
    for edge in edges:
        if edge.source in unknown or edge.target in unknown:
            continue
        (src_rank, src_layer), (dst_rank, dst_layer) = layers[edge.source], layers[edge.target]
        pair = f"{edge.source} ({src_layer}) imports {edge.target} ({dst_layer})"
        if dst_rank < src_rank:
            failures.append(Failure(edge, f"up a layer: {pair}"))
        elif _reaches(graph, edge.target, edge.source):
            failures.append(Failure(edge, f"package cycle: {pair}, which imports it back"))
    for edge in io_imports:
        if edge.source in layers and layers[edge.source][1] in SANS_IO_LAYERS:
            failures.append(Failure(edge, f"I/O in a sans-I/O layer: {edge.source} "
                                          f"({layers[edge.source][1]}) imports {edge.target}"))
    return failures, unknown


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Fail on an import in csembed/ that goes up a layer (DESIGN.md §1) "
                    "or makes a cycle between packages.",
        epilog="Layers, top to bottom: " + "; ".join(
            f"{name}: {', '.join(pkgs)}" for name, pkgs in LAYERS.items()))
    parser.add_argument("tree", nargs="?", type=Path,
                        default=Path(__file__).resolve().parent.parent / ROOT_PACKAGE,
                        help="the csembed package directory (default: the one beside tools/)")
    args = parser.parse_args(argv)
    if not args.tree.is_dir():
        parser.error(f"{args.tree} is not a directory")
    failures, unknown = check(args.tree)
    for failure in failures:
        print(failure)
    if unknown:
        print(f"packages missing from the layer map: {', '.join(sorted(unknown))}")
        return 2
    if failures:
        print(f"{len(failures)} import(s) break the layering")
        return 1
    print("layers ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
