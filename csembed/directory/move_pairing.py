"""Which vanished paths and new paths of one scan batch are moves.

A scan sees a move as a path gone and a path new. :func:`pair_moves` pairs
them in three rounds, each only over what the earlier rounds left:

1. the same inode (and kind): a rename within the filesystem;
2. the same size and SHA-256, non-empty files only: a copy-and-delete or a
   move across filesystems; of several candidates the one with the same
   name wins, then one in the same folder, then the first in key order;
3. directories: a vanished and a new folder are a rename when the file
   moves already paired say so, one vote per file whose relative name is
   the same under both; the folder with most votes wins.

Everything is in key order, so two devices scanning the same change pair it
the same way. The scanner holds back half-seen moves itself; this module
only sees a settled batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from csembed.directory.record_keys import parent_key
from csembed.directory.scan_cache import CachedEntry


class Listed(Protocol):
    """What pairing needs of a listed path."""

    @property
    def is_dir(self) -> bool: ...
    @property
    def inode(self) -> int: ...
    @property
    def size(self) -> int: ...


def pair_moves(additions: Mapping[str, Listed], missing: Mapping[str, CachedEntry],
               hashed: Mapping[str, str]) -> list[tuple[str, str]]:
    """``(old, new)`` pairs: by inode, then by content, then directory renames.

    ``hashed`` maps each new file's key to its SHA-256 (hex)."""
    pairs: list[tuple[str, str]] = []
    if not missing or not additions:
        return pairs
    taken: set[str] = set()
    by_inode: dict[tuple[bool, int], str] = {}
    for key in sorted(additions):
        by_inode.setdefault((additions[key].is_dir, additions[key].inode), key)
    for key in sorted(missing):
        old = missing[key]
        new = by_inode.get((old.is_dir, old.inode))
        if new is not None and new not in taken:
            pairs.append((key, new))
            taken.add(new)
    gone = {k for k, _ in pairs}
    by_content: dict[tuple[int, str], list[str]] = {}
    for key in sorted(additions):
        entry = additions[key]
        if key not in taken and not entry.is_dir and entry.size > 0:
            by_content.setdefault((entry.size, hashed[key]), []).append(key)
    for key in sorted(missing):
        old = missing[key]
        if key in gone or old.is_dir or old.size == 0 or old.sha256 is None:
            continue
        candidates = by_content.get((old.size, old.sha256))
        if not candidates:
            continue
        chosen = _best_candidate(key, candidates)
        candidates.remove(chosen)
        pairs.append((key, chosen))
        taken.add(chosen)
        gone.add(key)
    pairs += _directory_renames(pairs, [k for k in missing if missing[k].is_dir
                                        and k not in gone],
                                [k for k in additions if additions[k].is_dir
                                 and k not in taken])
    return pairs


def _best_candidate(old: str, candidates: list[str]) -> str:
    name, parent = old.rsplit("/", 1)[1], parent_key(old)
    for want in (lambda c: c.rsplit("/", 1)[1] == name, lambda c: parent_key(c) == parent):
        for candidate in candidates:
            if want(candidate):
                return candidate
    return candidates[0]


def _directory_renames(moves: Iterable[tuple[str, str]], gone_dirs: list[str],
                       new_dirs: list[str]) -> list[tuple[str, str]]:
    """Vanished and new directories explained by file moves keeping relative names."""
    gone, new = set(gone_dirs), set(new_dirs)
    votes: dict[str, dict[str, int]] = {}
    for old_key, new_key in moves:
        old_parts, new_parts = old_key.split("/"), new_key.split("/")
        while len(old_parts) > 2 and len(new_parts) > 2 and old_parts[-1] == new_parts[-1]:
            old_parts, new_parts = old_parts[:-1], new_parts[:-1]
            old_dir, new_dir = "/".join(old_parts), "/".join(new_parts)
            if old_dir in gone and new_dir in new:
                votes.setdefault(old_dir, {}).setdefault(new_dir, 0)
                votes[old_dir][new_dir] += 1
    pairs: list[tuple[str, str]] = []
    used: set[str] = set()
    for old_dir in sorted(votes):
        ranked = sorted(votes[old_dir].items(), key=lambda kv: (-kv[1], kv[0]))
        best = ranked[0][0]
        if best not in used:
            pairs.append((old_dir, best))
            used.add(best)
    return pairs
