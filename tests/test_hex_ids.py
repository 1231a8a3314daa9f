"""csembed.hex_ids: the two case rules of the protocol documents, and which ID follows which."""

from __future__ import annotations

import pytest

from csembed.discovery.addresses import AddressError, read_peer_id
from csembed.hex_ids import ID_DIGITS, PEER_ID_DIGITS, is_lower_hex, lower_hex_of
from csembed.security.errors import KeyFormatError
from csembed.security.keys import check_peer_id

PEER = "0123456789abcdef" * 2


@pytest.mark.parametrize("value", [PEER.upper(), PEER[:-1], PEER + "0", "g" * 32, 32, None,
                                   "٠" * 32, PEER[:-1] + "\n"])
def test_strict_rule_refuses_all_but_lower_case_hex_of_the_length(value: object) -> None:
    assert not is_lower_hex(value, PEER_ID_DIGITS)


def test_strict_and_any_case_rules() -> None:
    assert is_lower_hex(PEER, PEER_ID_DIGITS) and is_lower_hex("ab" * 32, ID_DIGITS)
    assert lower_hex_of("AbCd" * 16, ID_DIGITS) == "abcd" * 16
    assert lower_hex_of("AbCd" * 16, PEER_ID_DIGITS) is None
    assert lower_hex_of("٠" * 64, ID_DIGITS) is None  # Arabic-Indic zeros are not hex digits


def test_a_peer_id_is_lower_case_in_records_and_read_in_any_case_from_the_tracker() -> None:
    # database.md: "32 lower-case hex digits"; discovery.md: "accepted in upper or lower case".
    assert check_peer_id(PEER) == PEER
    with pytest.raises(KeyFormatError, match="32 lowercase hex digits"):
        check_peer_id(PEER.upper())
    assert read_peer_id(PEER.upper()) == PEER
    with pytest.raises(AddressError, match="32 hex digits"):
        read_peer_id(PEER + "0")


@pytest.mark.parametrize(("value", "ok"), [(0, True), (-3, True), (1 << 70, True), (True, False),
                                           (False, False), (1.0, False), ("1", False),
                                           (None, False)])
def test_is_strict_int_refuses_json_booleans_and_floats(value: object, ok: bool) -> None:
    from csembed.protocol.jsonvalues import is_strict_int
    assert is_strict_int(value) is ok
