"""Directory record values, unix_mode forms, timestamps, and merging local changes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from csembed.directory.errors import RecordError
from csembed.directory.records import (
    FileValue,
    format_unix_mode,
    is_file_key,
    merge_value,
    parse_record_value,
    parse_unix_mode,
)

SHA = "c16987a16bc7f7dd45e341b855171e8d5c6577a70febd408fbe6d2a194c18224"


def test_file_value_round_trip() -> None:
    value = FileValue.for_file(12, SHA, 1_396_182_929_113_243_778, 0o100644)
    data = value.to_json()
    assert data == {"size": 12, "sha256": SHA, "mtime": "2014-03-30T12:35:29.113243778Z",
                    "unix_mode": "0644"}
    again = FileValue.from_json(data)
    assert again == value
    assert again.mtime_ns == 1_396_182_929_113_243_778
    assert not again.is_directory


def test_directory_value_has_null_size_and_hash() -> None:
    value = FileValue.for_directory(0o40755)
    assert value.to_json() == {"size": None, "sha256": None, "unix_mode": "0755"}
    assert FileValue.from_json({"size": None, "sha256": None}).is_directory


@pytest.mark.parametrize(("given_mode", "expected"), [
    ("0644", 0o644), ("644", 0o644), ("0o755", 0o755), (644, 0o644), ("100644", 0o644),
    ("4755", 0o4755), ("0", 0), (0, 0),
    # An integer is read as written octal digits (the draft's "octal number"),
    # so the decimal value of 0o644 reads as 0o420: documented, not guessed at.
    (420, 0o420),
])
def test_parse_unix_mode(given_mode, expected: int) -> None:
    assert parse_unix_mode(given_mode) == expected


@pytest.mark.parametrize("bad", ["0999", "rw-r--r--", "", 3.5, True, -1, None, "1234567",
                                 33188])
def test_parse_unix_mode_rejects(bad) -> None:
    with pytest.raises(ValueError):
        parse_unix_mode(bad)


def test_format_unix_mode_drops_type_bits() -> None:
    assert format_unix_mode(0o100600) == "0600"
    assert format_unix_mode(0o4755) == "4755"


def test_unknown_fields_survive_round_trip() -> None:
    data = {"size": 3, "sha256": SHA.upper(), ".com.ibm.music.duration": 182.5,
            "mtime": "2014-02-23T23:45:39Z", "future": {"nested": [1, 2]}}
    value = FileValue.from_json(data)
    assert value.sha256 == SHA
    assert value.extra == {".com.ibm.music.duration": 182.5, "future": {"nested": [1, 2]}}
    out = value.to_json()
    assert out[".com.ibm.music.duration"] == 182.5 and out["future"] == {"nested": [1, 2]}
    assert out["mtime"] == "2014-02-23T23:45:39Z"  # the peer's text, untouched


def test_unreadable_optional_fields_are_kept_raw() -> None:
    data = {"size": 1, "sha256": SHA, "mtime": "yesterday", "unix_mode": "rwx",
            "conflict_source": 42}
    value = FileValue.from_json(data)
    assert value.mtime is None and value.unix_mode is None and value.conflict_source is None
    assert value.to_json() == data


@pytest.mark.parametrize("bad", [
    None, [], "x", {"size": 1}, {"sha256": SHA}, {"size": -1, "sha256": SHA},
    {"size": 1 << 63, "sha256": SHA}, {"size": True, "sha256": SHA},
    {"size": 1.0, "sha256": SHA}, {"size": 1, "sha256": "abc"},
    {"size": 1, "sha256": None}, {"size": None, "sha256": SHA},
    {"size": 1, "sha256": "g" * 64},
])
def test_bad_values_are_record_errors(bad) -> None:
    with pytest.raises(RecordError):
        FileValue.from_json(bad)


def test_keys_without_leading_slash_are_ignored() -> None:
    assert parse_record_value("settings", {"whatever": 1}) is None
    assert not is_file_key("photo-1234") and not is_file_key(None) and is_file_key("/")
    assert parse_record_value("/a", {"size": 0, "sha256": SHA}) is not None


def test_merge_keeps_what_other_peers_set() -> None:
    previous = {"size": 1, "sha256": "0" * 64, "mtime": "2014-02-23T23:45:39Z",
                "unix_mode": "0600", ".com.ibm.music.duration": 3, "conflict_source": "ab" * 16}
    local = FileValue.for_file(5, SHA, 1_000_000_000, 0o644)
    merged = merge_value(previous, local)
    assert merged == {"size": 5, "sha256": SHA, "mtime": "1970-01-01T00:00:01.000000000Z",
                      "unix_mode": "0644", ".com.ibm.music.duration": 3,
                      "conflict_source": "ab" * 16}
    assert previous["size"] == 1  # not modified in place


def test_merge_directory_keeps_previous_mtime() -> None:
    previous = {"size": None, "sha256": None, "mtime": "2014-02-23T23:45:39Z"}
    merged = merge_value(previous, FileValue.for_directory(0o700))
    assert merged == {"size": None, "sha256": None, "mtime": "2014-02-23T23:45:39Z",
                      "unix_mode": "0700"}
    assert merge_value(None, FileValue.for_directory(None)) == {"size": None, "sha256": None}


def test_mtime_uses_the_wire_timestamp_form() -> None:
    # Reading and writing are csembed.protocol.jsonvalues'; here only the use.
    assert FileValue.for_file(0, SHA, -1, None).mtime == "1969-12-31T23:59:59.999999999Z"
    value = FileValue.from_json({"size": 0, "sha256": SHA,
                                 "mtime": "2014-03-30T14:35:29.113243778+02:00"})
    assert value.mtime_ns == 1_396_182_929_113_243_778
    with pytest.raises(RecordError, match="mtime"):
        FileValue(size=0, sha256=SHA, mtime="2014-03-30T12:35:29")  # no zone


@given(st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1))
def test_value_mtime_round_trip(ns: int) -> None:
    value = FileValue.for_file(1, SHA, ns, 0o600)
    assert FileValue.from_json(value.to_json()).mtime_ns == ns
