"""Which paths a share sends and fetches: ignore, partial copy and subtree copy.

Theory of operation
-------------------
Three optional, per-share, purely local settings (directory.md: "Ignoring
Files", "Partial Copy", "Subtree Copy"; none needs the peer's cooperation):

* **ignore** patterns name local paths that are never sent to peers. An
  ignored path is local-only both ways: the scanner neither reports it nor
  reports it deleted, and we do not fetch a remote file onto it either (that
  would overwrite the local-only file).
* **partial** patterns name remote paths we do not fetch. They do not hide
  local files: a file the user puts there is scanned and sent as usual.
* **subtree** (a key, default ``/``) syncs only that directory of the share;
  the local root then holds its contents (:class:`csembed.directory.paths.PathMapper`).

Patterns use gitignore syntax, matched against the key without its leading
slash, relative to the share root: ``*`` (any run within one name), ``?``,
``[a-z]`` / ``[!a-z]`` classes, ``**`` (``**/x`` anywhere, ``x/**``
everything inside, ``a/**/b`` any depth between), a leading ``/`` (or any
inner slash) anchors at the root while a pattern with no slash matches a name
at any depth, a trailing ``/`` matches directories only, ``!`` re-includes,
``#`` starts a comment, ``\\`` escapes the next character, trailing blanks
are dropped unless escaped. The last matching pattern wins, and as in git a
path inside an excluded directory stays excluded whatever later patterns say
(so walkers can prune whole directories).

Settings are stored as JSON (``selection.json``) in the share's state
directory, replaced atomically (temp file, fsync, rename, fsync folder).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from csembed.atomic_file import write_atomic
from csembed.directory.errors import PathError, SelectionError
from csembed.directory.record_keys import split_key

SELECTION_FILE = "selection.json"
MAX_PATTERNS = 10_000  #: patterns per list
MAX_PATTERN_CHARS = 4096  #: characters per pattern


@dataclass(frozen=True)
class Pattern:
    """One compiled pattern line."""

    text: str  #: the line as written
    negated: bool  #: a ``!`` line: re-include what it matches
    dir_only: bool  #: a trailing ``/``: matches directories only
    regex: re.Pattern[str]  #: matches the slash-free-prefixed relative path


def _class(glob: str, start: int) -> tuple[str, int] | None:
    """Translate the ``[...]`` class opening at ``start``; ``None`` if unclosed."""
    i = start + 1
    negate = i < len(glob) and glob[i] in "!^"
    if negate:
        i += 1
    body: list[str] = []
    first = True
    while i < len(glob):
        char = glob[i]
        if char == "]" and not first:
            inner = "".join(body)
            return (f"[^/{inner}]" if negate else f"[{inner}]"), i + 1
        if char == "\\" and i + 1 < len(glob):
            i += 1
            char = glob[i]
        if char == "-" and body and i + 1 < len(glob) and glob[i + 1] != "]":
            body.append("-")
        else:
            body.append(re.escape(char))
        first = False
        i += 1
    return None


def _translate(glob: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(glob):
        char = glob[i]
        if glob.startswith("**", i):
            at_start = i == 0 or glob[i - 1] == "/"
            after = glob[i + 2:i + 3]
            if at_start and after == "/":
                out.append("(?:.*/)?")
                i += 3
                continue
            if at_start and after == "":
                out.append(".*")
                i += 2
                continue
            out.append("[^/]*")
            i += 2
        elif char == "*":
            out.append("[^/]*")
            i += 1
        elif char == "?":
            out.append("[^/]")
            i += 1
        elif char == "[":
            translated = _class(glob, i)
            if translated is None:
                out.append(re.escape(char))
                i += 1
            else:
                out.append(translated[0])
                i = translated[1]
        elif char == "\\" and i + 1 < len(glob):
            out.append(re.escape(glob[i + 1]))
            i += 2
        else:
            out.append(re.escape(char))
            i += 1
    return "".join(out)


def compile_pattern(line: str) -> Pattern | None:
    """Compile one gitignore-style line; ``None`` for blank lines and comments."""
    if not isinstance(line, str):
        raise SelectionError(f"a pattern must be a string, got {line!r}")
    if len(line) > MAX_PATTERN_CHARS:
        raise SelectionError(f"pattern longer than {MAX_PATTERN_CHARS} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in line):
        raise SelectionError(f"control character in pattern {line!r}")
    text = line
    if text.startswith("#"):
        return None
    # Trailing blanks go unless the last one is escaped.
    stripped = text.rstrip(" ")
    if stripped.endswith("\\") and len(stripped) < len(text):
        stripped += " "
    body = stripped
    negated = body.startswith("!")
    if negated:
        body = body[1:]
    elif body.startswith("\\!") or body.startswith("\\#"):
        body = body[1:]
    dir_only = body.endswith("/") and not body.endswith("\\/")
    if dir_only:
        body = body.rstrip("/")
    if not body:
        return None
    anchored = "/" in body
    body = body.lstrip("/")
    if not body:
        return None
    regex = _translate(body)
    if not anchored:
        regex = "(?:.*/)?" + regex
    try:
        compiled = re.compile(f"(?s:{regex})\\Z")
    except re.error as exc:
        raise SelectionError(f"pattern {line!r} cannot be compiled: {exc}") from None
    return Pattern(text=line, negated=negated, dir_only=dir_only, regex=compiled)


class PatternSet:
    """An ordered list of patterns; :meth:`excludes` decides, last match wins."""

    def __init__(self, lines: Iterable[str] = ()) -> None:
        self.lines: tuple[str, ...] = tuple(lines)
        if len(self.lines) > MAX_PATTERNS:
            raise SelectionError(f"more than {MAX_PATTERNS} patterns")
        compiled = (compile_pattern(line) for line in self.lines)
        self.patterns: tuple[Pattern, ...] = tuple(p for p in compiled if p is not None)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PatternSet) and other.lines == self.lines

    def __hash__(self) -> int:
        return hash(self.lines)

    def __repr__(self) -> str:
        return f"PatternSet({list(self.lines)!r})"

    def excludes_entry(self, key: str, is_dir: bool) -> bool:
        """Whether the patterns themselves match ``key`` (parents not considered).

        For walkers that never descend into an excluded directory.
        """
        rel = key[1:]
        result = False
        for pattern in self.patterns:
            if pattern.dir_only and not is_dir:
                continue
            if result != (not pattern.negated) and pattern.regex.match(rel):
                result = not pattern.negated
        return result

    def excludes(self, key: str, is_dir: bool) -> bool:
        """Whether ``key`` is excluded, itself or through an excluded parent directory."""
        if not self.patterns or key == "/":
            return False
        parts = key[1:].split("/")
        for depth in range(1, len(parts)):
            if self.excludes_entry("/" + "/".join(parts[:depth]), True):
                return True
        return self.excludes_entry(key, is_dir)


def _in_subtree(key: str, subtree: str) -> bool:
    return subtree == "/" or key == subtree or key.startswith(subtree + "/")


@dataclass(frozen=True)
class Selection:
    """A share's ignore, partial-copy and subtree settings."""

    ignore: PatternSet = PatternSet()
    partial: PatternSet = PatternSet()
    subtree: str = "/"

    def __post_init__(self) -> None:
        try:
            split_key(self.subtree)
        except PathError as exc:
            raise SelectionError(f"subtree: {exc}") from None

    def in_subtree(self, key: str) -> bool:
        """Whether ``key`` lies in the synced subtree (the subtree root included)."""
        return _in_subtree(key, self.subtree)

    def sends(self, key: str, is_dir: bool) -> bool:
        """Whether a local change at ``key`` is reported to peers."""
        return self.in_subtree(key) and not self.ignore.excludes(key, is_dir)

    def fetches(self, key: str, is_dir: bool) -> bool:
        """Whether a remote record at ``key`` is downloaded here."""
        return (self.in_subtree(key) and not self.ignore.excludes(key, is_dir)
                and not self.partial.excludes(key, is_dir))

    def to_json(self) -> dict[str, Any]:
        """The stored form."""
        return {"version": 1, "ignore": list(self.ignore.lines),
                "partial": list(self.partial.lines), "subtree": self.subtree}

    @classmethod
    def from_json(cls, data: object) -> Selection:
        """Read the stored form (:class:`SelectionError` if malformed)."""
        if not isinstance(data, dict) or data.get("version") != 1:
            raise SelectionError("selection settings must be an object with version 1")
        ignore, partial, subtree = data.get("ignore", []), data.get("partial", []), \
            data.get("subtree", "/")
        for name, value in (("ignore", ignore), ("partial", partial)):
            if not isinstance(value, list):
                raise SelectionError(f"{name} must be a list of patterns")
        if not isinstance(subtree, str):
            raise SelectionError("subtree must be a key string")
        return cls(ignore=PatternSet(ignore), partial=PatternSet(partial), subtree=subtree)


def load_selection(state_dir: Path) -> Selection:
    """The share's stored settings, or the defaults (send and fetch everything)."""
    path = Path(state_dir) / SELECTION_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Selection()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SelectionError(f"{path}: not valid JSON: {exc}") from None
    return Selection.from_json(data)


def save_selection(state_dir: Path, selection: Selection) -> None:
    """Store the settings atomically."""
    data = json.dumps(selection.to_json(), indent=1, ensure_ascii=False).encode("utf-8")
    write_atomic(Path(state_dir) / SELECTION_FILE, data + b"\n")
