"""Key validation, safe disk access, name encoding, case clashes, the share root."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_directory_support import make_share

from csembed.directory.disk_names import NameRules, natural_name
from csembed.directory.errors import PathError, ShareUnavailable
from csembed.directory.localdb import open_local_db
from csembed.directory.paths import NameTable, PathMapper, ShareRoot
from csembed.directory.record_keys import MAX_DEPTH, MAX_KEY_BYTES, MAX_NAME_BYTES, split_key

WINDOWS = NameRules(windows_names=True)


@pytest.mark.parametrize(("key", "parts"), [
    ("/", ()), ("/a", ("a",)), ("/a/b c/ü.txt", ("a", "b c", "ü.txt")),
    ("/...", ("...",)), ("/.hidden", (".hidden",)), ("/a:b*?", ("a:b*?",)),
])
def test_split_key_accepts(key: str, parts: tuple[str, ...]) -> None:
    assert split_key(key) == parts


@pytest.mark.parametrize("key", [
    "a/b", "", "//", "/a//b", "/a/", "/..", "/a/../b", "/.", "/a/./b", "/a\x00b", "/a\\b",
    "/a\nb", "/a\x7fb", "/a\x1b[31m", "/\ud800", "/" + "x" * (MAX_NAME_BYTES + 1),
    "/" + "/".join(["d"] * (MAX_DEPTH + 1)), "/" + "/".join(["x" * 200] * 50),
    None, b"/a",
])
def test_split_key_rejects(key) -> None:
    with pytest.raises(PathError):
        split_key(key)
    assert len("/" + "/".join(["x" * 200] * 50)) > MAX_KEY_BYTES


@pytest.mark.parametrize(("name", "rules", "disk"), [
    ("a:b?.txt", WINDOWS, "a%3Ab%3F.txt"),
    ('<>|"*\\', WINDOWS, "%3C%3E%7C%22%2A%5C"),
    ("CON", WINDOWS, "%43ON"), ("con.txt", WINDOWS, "%63on.txt"), ("console", WINDOWS, "console"),
    ("dots.", WINDOWS, "dots%2E"), ("space ", WINDOWS, "space%20"),
    ("a:b", NameRules(), "a:b"),
    ("x.!clearsky", NameRules(), "x.%21clearsky"),
    ("plain.txt", WINDOWS, "plain.txt"),
])
def test_natural_name(name: str, rules: NameRules, disk: str) -> None:
    assert natural_name(name, rules) == disk


def test_long_names_are_shortened_with_a_hash() -> None:
    rules = NameRules(name_max=64)
    long_a = "α" * 100 + ".flac"
    long_b = "α" * 99 + "β.flac"
    disk_a, disk_b = natural_name(long_a, rules), natural_name(long_b, rules)
    assert len(disk_a.encode()) <= 64 and len(disk_b.encode()) <= 64
    assert disk_a.endswith(".flac") and "%" in disk_a
    assert disk_a != disk_b
    assert natural_name(long_a, rules) == disk_a


def test_share_root_identity(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    os.close(share.share_root.open_fd())
    share.root.rename(tmp_path / "elsewhere")
    with pytest.raises(ShareUnavailable, match="missing"):
        share.share_root.open_fd()
    share.root.mkdir()  # same path, different directory (as an unmounted mount point)
    with pytest.raises(ShareUnavailable, match="not the directory"):
        share.share_root.open_fd()


def test_unmounted_device_is_unavailable(tmp_path: Path) -> None:
    from test_directory_support import tmpfs

    with tmpfs(tmp_path / "mnt"):
        share = make_share(tmp_path / "mnt", name="share")
        os.close(share.share_root.open_fd())
        root = share.root
    (tmp_path / "mnt" / "share").mkdir()  # the bare mount point's own folder
    assert root == tmp_path / "mnt" / "share"
    with pytest.raises(ShareUnavailable, match="not the directory"):
        share.share_root.open_fd()


def test_probed_rules_on_this_filesystem(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    assert share.share_root.rules == NameRules(name_max=255)  # ext4/tmpfs-like
    assert os.listdir(share.root) == []  # the probe cleaned up


def test_symlinked_component_is_refused_and_nothing_escapes(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (share.root / "music").symlink_to(outside)
    for create in (False, True):
        with pytest.raises(PathError, match="symbolic link"):
            with share.mapper.locate("/music/x.mp3", create_dirs=create, allocate=create):
                pass
    with pytest.raises(PathError, match="symbolic link"):
        share.mapper.open_dir("/music")
    assert list(outside.iterdir()) == []


def test_file_in_place_of_directory(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    (share.root / "a").write_text("file")
    with pytest.raises(PathError, match="not a directory"):
        with share.mapper.locate("/a/b", create_dirs=True):
            pass


def test_held_directory_swapped_for_symlink_stays_inside(tmp_path: Path) -> None:
    # TOCTOU: the directory is replaced by a link after we opened it; writes
    # through the descriptor land in the real (moved) directory, never outside.
    share = make_share(tmp_path)
    (share.root / "d").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    with share.mapper.locate("/d/f", allocate=True) as loc:
        os.rename(share.root / "d", share.root / "moved")
        (share.root / "d").symlink_to(outside)
        fd = os.open(loc.name, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600,
                     dir_fd=loc.dir_fd)
        os.close(fd)
    assert list(outside.iterdir()) == []
    assert (share.root / "moved" / "f").exists()


def test_child_key_rejects_names_that_cannot_be_keys(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    with pytest.raises(PathError, match="UTF-8"):
        share.mapper.child_key("/", os.fsdecode(b"\xff.txt"))
    with pytest.raises(PathError, match="backslash"):
        share.mapper.child_key("/", "a\\b")
    assert share.mapper.child_key("/a", "b") == "/a/b"


def test_windows_names_map_back_and_persist(tmp_path: Path) -> None:
    share = make_share(tmp_path, rules=WINDOWS)
    with share.mapper.locate("/dir:1/a?.txt", create_dirs=True, allocate=True) as loc:
        assert loc.name == "a%3F.txt"
        os.close(os.open(loc.name, os.O_CREAT | os.O_WRONLY, dir_fd=loc.dir_fd))
    assert sorted(os.listdir(share.root)) == ["dir%3A1"]
    conn = open_local_db(share.state / "local.sqlite")
    again = PathMapper(ShareRoot.load(share.root, conn), NameTable(conn))
    assert again.child_key("/", "dir%3A1") == "/dir:1"
    assert again.child_key("/dir:1", "a%3F.txt") == "/dir:1/a?.txt"
    with again.locate("/dir:1/a?.txt") as loc:
        assert loc.lstat() is not None


def test_literal_percent_name_does_not_clash_with_encoded_one(tmp_path: Path) -> None:
    share = make_share(tmp_path, rules=WINDOWS)
    with share.mapper.locate("/a:b", allocate=True) as loc:
        assert loc.name == "a%3Ab"
        os.close(os.open(loc.name, os.O_CREAT | os.O_WRONLY, dir_fd=loc.dir_fd))
    with share.mapper.locate("/a%3Ab", allocate=True) as loc:
        assert loc.name == "_a%3Ab"
    assert share.mapper.child_key("/", "_a%3Ab") == "/a%3Ab"


def test_case_insensitive_clash_gets_underscore(tmp_path: Path) -> None:
    share = make_share(tmp_path, rules=NameRules(case_insensitive=True))
    (share.root / "Secret.txt").write_text("first")
    with share.mapper.locate("/secret.txt", allocate=True) as loc:
        assert loc.name == "_secret.txt"
        os.close(os.open(loc.name, os.O_CREAT | os.O_WRONLY, dir_fd=loc.dir_fd))
    with share.mapper.locate("/SECRET.txt", allocate=True) as loc:
        assert loc.name == "__SECRET.txt"
    assert share.mapper.child_key("/", "_secret.txt") == "/secret.txt"
    assert share.mapper.child_key("/", "Secret.txt") == "/Secret.txt"
    # The key that owns the plain name keeps it.
    with share.mapper.locate("/Secret.txt", allocate=True) as loc:
        assert loc.name == "Secret.txt"
    # Looking up a key whose folded name belongs to another key finds nothing.
    with pytest.raises(FileNotFoundError):
        with share.mapper.locate("/sEcReT.txt"):
            pass


def test_case_sensitive_filesystem_needs_no_mapping(tmp_path: Path) -> None:
    share = make_share(tmp_path)
    (share.root / "Secret.txt").write_text("first")
    with share.mapper.locate("/secret.txt", allocate=True) as loc:
        assert loc.name == "secret.txt"
    assert len(share.mapper.names) == 0


def test_subtree_maps_prefix(tmp_path: Path) -> None:
    share = make_share(tmp_path, subtree="/Music")
    with share.mapper.locate("/Music/a/b.mp3", create_dirs=True, allocate=True) as loc:
        assert loc.parent_key == "/Music/a"
    assert (share.root / "a").is_dir()
    assert share.mapper.child_key("/Music", "a") == "/Music/a"
    with pytest.raises(PathError, match="subtree"):
        share.mapper.local_parts("/Other/x")
    with pytest.raises(PathError, match="subtree"):
        share.mapper.local_parts("/Musical")


_NAME = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\"),
    min_size=1, max_size=90).filter(lambda n: n not in (".", ".."))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names=st.lists(_NAME, min_size=1, max_size=4, unique=True),
       rules=st.sampled_from([NameRules(), WINDOWS, NameRules(name_max=64),
                              NameRules(name_max=64, case_insensitive=True, windows_names=True)]))
def test_key_path_round_trip(names: list[str], rules: NameRules) -> None:
    """Every valid name is stored somewhere, and reads back as exactly its key."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "share"
        root.mkdir()
        conn = open_local_db(":memory:")
        mapper = PathMapper(ShareRoot.initialize(root, conn, rules), NameTable(conn))
        for name in names:
            key = "/d/" + name
            with mapper.locate(key, create_dirs=True, allocate=True) as loc:
                assert len(loc.name.encode()) <= rules.name_max
                os.close(os.open(loc.name, os.O_CREAT | os.O_EXCL | os.O_WRONLY,
                                 dir_fd=loc.dir_fd))
        on_disk = os.listdir(root / "d")
        assert len(on_disk) == len(names)
        assert sorted(mapper.child_key("/d", n) for n in on_disk) == sorted(
            "/d/" + n for n in names)
        for name in names:
            with mapper.locate("/d/" + name) as loc:
                assert loc.lstat() is not None
        conn.close()
