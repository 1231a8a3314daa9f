"""Ignore / partial-copy patterns (gitignore syntax), subtree, and their storage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from csembed.directory.errors import SelectionError
from csembed.directory.selection import (
    SELECTION_FILE,
    PatternSet,
    Selection,
    compile_pattern,
    load_selection,
    save_selection,
)

# (patterns, key, is_dir, excluded)
CASES = [
    (["*.tmp"], "/a.tmp", False, True),
    (["*.tmp"], "/deep/er/a.tmp", False, True),
    (["*.tmp"], "/a.tmpx", False, False),
    (["*.tmp"], "/dir.tmp/file", False, True),  # through its excluded parent
    (["/*.tmp"], "/a.tmp", False, True),
    (["/*.tmp"], "/sub/a.tmp", False, False),
    (["build/"], "/build", True, True),
    (["build/"], "/build", False, False),  # dir-only pattern, plain file
    (["build/"], "/x/build/out.o", False, True),
    (["doc/frotz"], "/doc/frotz", False, True),
    (["doc/frotz"], "/a/doc/frotz", False, False),  # inner slash anchors
    (["**/logs"], "/logs", True, True),
    (["**/logs"], "/a/b/logs", True, True),
    (["**/logs/*.log"], "/x/logs/today.log", False, True),
    (["logs/**"], "/logs/a/b.txt", False, True),
    (["logs/**"], "/logs", True, False),
    (["a/**/b"], "/a/b", False, True),
    (["a/**/b"], "/a/x/y/b", False, True),
    (["a/**/b"], "/a/xb", False, False),
    (["?.txt"], "/a.txt", False, True),
    (["?.txt"], "/ab.txt", False, False),
    (["[abc].txt"], "/b.txt", False, True),
    (["[abc].txt"], "/d.txt", False, False),
    (["[!abc].txt"], "/d.txt", False, True),
    (["[!abc].txt"], "/a.txt", False, False),
    (["[a-c]x"], "/bx", False, True),
    (["[a-c]x"], "/dx", False, False),
    (["*.log", "!keep.log"], "/keep.log", False, False),
    (["*.log", "!keep.log"], "/drop.log", False, True),
    (["!keep.log", "*.log"], "/keep.log", False, True),  # last match wins
    (["secret/", "!secret/ok.txt"], "/secret/ok.txt", False, True),  # parent excluded
    (["# comment", "", "   "], "/# comment", False, False),
    (["\\#hash"], "/#hash", False, True),
    (["\\!bang"], "/!bang", False, True),
    (["trail   "], "/trail", False, True),
    (["trail\\ "], "/trail ", False, True),
    (["a*b"], "/a/b", False, False),  # * does not cross /
    (["*"], "/anything/at/all", False, True),
    (["[unclosed"], "/[unclosed", False, True),
    (["f.o"], "/fxo", False, False),  # dots are literal
    (["ü*"], "/über", False, True),
]


@pytest.mark.parametrize(("patterns", "key", "is_dir", "excluded"), CASES)
def test_pattern_table(patterns: list[str], key: str, is_dir: bool, excluded: bool) -> None:
    assert PatternSet(patterns).excludes(key, is_dir) is excluded


def test_blank_and_comment_lines_compile_to_nothing() -> None:
    assert compile_pattern("# x") is None and compile_pattern("") is None
    assert compile_pattern("/") is None
    assert not PatternSet(["#only a comment"])


@pytest.mark.parametrize("bad", ["a\x00b", "x" * 5000, 7])
def test_bad_patterns(bad) -> None:
    with pytest.raises(SelectionError):
        PatternSet([bad])


def test_sends_and_fetches() -> None:
    selection = Selection(ignore=PatternSet(["*.tmp"]), partial=PatternSet(["/Videos/"]),
                          subtree="/")
    assert selection.sends("/a.txt", False) and selection.fetches("/a.txt", False)
    assert not selection.sends("/a.tmp", False) and not selection.fetches("/a.tmp", False)
    assert selection.sends("/Videos/v.mp4", False)  # partial copy does not hide local files
    assert not selection.fetches("/Videos/v.mp4", False)
    sub = Selection(subtree="/Music")
    assert sub.fetches("/Music/a.mp3", False) and sub.in_subtree("/Music")
    assert not sub.fetches("/Musical/a.mp3", False) and not sub.sends("/", True)


def test_storage_round_trip(tmp_path: Path) -> None:
    assert load_selection(tmp_path) == Selection()
    selection = Selection(ignore=PatternSet(["*.tmp", "!a.tmp"]),
                          partial=PatternSet(["/big/"]), subtree="/Music")
    save_selection(tmp_path, selection)
    assert load_selection(tmp_path) == selection
    assert [p.name for p in tmp_path.iterdir()] == [SELECTION_FILE]  # temp file gone
    stored = json.loads((tmp_path / SELECTION_FILE).read_text())
    assert stored["version"] == 1 and stored["ignore"] == ["*.tmp", "!a.tmp"]


@pytest.mark.parametrize("content", [b"{not json", b"[]", b'{"version": 2}',
                                     b'{"version": 1, "ignore": "x"}',
                                     b'{"version": 1, "subtree": "/a/../b"}',
                                     b'{"version": 1, "subtree": 3}'])
def test_bad_storage(tmp_path: Path, content: bytes) -> None:
    (tmp_path / SELECTION_FILE).write_bytes(content)
    with pytest.raises(SelectionError):
        load_selection(tmp_path)
