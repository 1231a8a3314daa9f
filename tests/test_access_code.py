"""Access codes (core.md "Access Codes") and username/password credentials."""

from __future__ import annotations

import base64
import hashlib
import random
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from csembed.access_code import (
    ALPHABET,
    AccessCode,
    AccessCodeError,
    Credentials,
    luhn32_check_char,
)
from csembed.errors import CsembedError


def luhn32_valid(code: str) -> bool:
    """Luhn mod N validation written from the verifier's side (check char included)."""
    total = 0
    for index, char in enumerate(reversed(code)):
        addend = ALPHABET.index(char) * (2 if index % 2 else 1)
        total += addend // 32 + addend % 32
    return total % 32 == 0


def seeded_codes(count: int, seed: int) -> list[AccessCode]:
    rng = random.Random(seed)
    return [AccessCode.generate(rng.randbytes) for _ in range(count)]


@given(st.binary(min_size=16, max_size=16))
def test_layout_and_round_trip(raw: bytes) -> None:
    code = AccessCode.from_bytes(raw)
    text = code.text
    assert len(text) == 33 and text.startswith("SYNC")
    assert base64.b32decode(text[:32]) == bytes([0x96, 0x1A, 0x2F, 0xF3]) + raw
    assert luhn32_valid(text)
    assert code.access_id == hashlib.sha256(raw[:8]).hexdigest()
    assert code.secret == raw[8:]
    assert code.credentials == Credentials(code.access_id, raw[8:])
    assert code.url == "clearskies://directory/" + text
    assert AccessCode.parse(text) == code == AccessCode.parse(code.url)
    assert AccessCode.parse(text).raw == raw


def test_generate_uses_the_injected_rng() -> None:
    asked: list[int] = []

    def rng(n: int) -> bytes:
        asked.append(n)
        return bytes(range(n))

    assert AccessCode.generate(rng).raw == bytes(range(16)) and asked == [16]
    with pytest.raises(ValueError):
        AccessCode.generate(lambda n: bytes(n - 1))
    fresh = {AccessCode.generate().raw for _ in range(8)}  # OS CSPRNG by default
    assert len(fresh) == 8


def test_secret_stays_out_of_repr() -> None:
    code = AccessCode.from_bytes(bytes(range(16)))
    assert code.secret.hex() not in repr(code) and code.text not in repr(code)
    creds = Credentials.from_username_password("alice", "hunter2")
    assert "hunter2" not in repr(creds)


def test_forgiving_parse() -> None:
    code = seeded_codes(1, seed=5)[0]
    text = code.text
    grouped = "-".join(text[i : i + 4] for i in range(0, 33, 4))
    typed = grouped.lower().replace("o", "0").replace("l", "1")
    for form in (
        text.lower(),
        grouped,
        " ".join(grouped.split("-")),
        typed,
        f"  Clearskies://Directory/{typed}  ",
        f"clearskies://directory/{text}/",
        "\t" + text + "\n",
    ):
        assert AccessCode.parse(form) == code, form


def test_zero_and_one_are_read_as_o_and_l() -> None:
    codes = seeded_codes(200, seed=6)
    code = next(c for c in codes if "O" in c.text[4:] and "L" in c.text[4:])
    assert AccessCode.parse(code.text.replace("O", "0").replace("L", "1")) == code


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda t: t[:-1], "33 characters, this one has 32"),
        (lambda t: t + "A", "33 characters, this one has 34"),
        (lambda t: "", "33 characters, this one has 0"),
        (lambda t: t[:10] + "8" + t[11:], "character 11 of the code"),
        (lambda t: t[:10] + "9" + t[11:], "'9', is not a letter"),
        (lambda t: t[:5] + "_" + t[6:], "character 6"),
        (lambda t: t[:20] + "é" + t[21:], "character 21"),
        (lambda t: "T" + t[1:], "must start with SYNC74"),
        (lambda t: t[:6] + "A" + t[7:], "must start with SYNC74"),
        (lambda t: t[:-1] + ("B" if t[-1] == "A" else "A"), "check character"),
        (lambda t: "https://example.com/" + t, "unsupported URL"),
        (lambda t: "clearskies://database/" + t, "unsupported URL"),
    ],
)
def test_parse_errors_say_what_is_wrong(mangle, message: str) -> None:  # type: ignore[no-untyped-def]
    text = seeded_codes(1, seed=7)[0].text
    with pytest.raises(AccessCodeError, match=message):
        AccessCode.parse(mangle(text))


def test_every_single_substitution_is_detected() -> None:
    """Exhaustive: all 33 positions x 31 wrong characters, for several codes."""
    for code in seeded_codes(6, seed=8):
        text = code.text
        for position in range(33):
            for char in ALPHABET:
                if char == text[position]:
                    continue
                typo = text[:position] + char + text[position + 1 :]
                with pytest.raises(AccessCodeError):
                    AccessCode.parse(typo)


def test_adjacent_transpositions() -> None:
    """Every swap of two different neighbours is caught, except A7 <-> 7A.

    With N = 32 the doubled value of 'A' (0) and '7' (31) differ from the plain
    value by the same amount mod 32, so exactly that swap slips through, as
    09 <-> 90 does for the decimal Luhn check.
    """
    codes = seeded_codes(400, seed=9)
    tricky = [c for c in codes if "A7" in c.text[7:] or "7A" in c.text[7:]]
    assert tricky, "the seed must produce a code containing A7 or 7A"
    undetected = 0
    for code in codes[:20] + tricky[:3]:
        text = code.text
        for i in range(32):
            a, b = text[i], text[i + 1]
            if a == b:
                continue
            swapped = text[:i] + b + a + text[i + 2 :]
            if {a, b} == {"A", "7"} and i >= 7:
                assert AccessCode.parse(swapped) != code  # valid but different: undetected
                undetected += 1
            else:
                with pytest.raises(AccessCodeError):
                    AccessCode.parse(swapped)
    assert undetected >= 1


def test_luhn_char_matches_validation() -> None:
    rng = random.Random(10)
    for _ in range(500):
        body = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 40)))
        assert luhn32_valid(body + luhn32_check_char(body))


def test_from_bytes_length() -> None:
    for size in (0, 8, 15, 17, 20):
        with pytest.raises(AccessCodeError, match="16 bytes"):
            AccessCode.from_bytes(bytes(size))
    assert issubclass(AccessCodeError, CsembedError)


def test_username_password() -> None:
    creds = Credentials.from_username_password("Jaren's Laptop", "correct horse")
    assert creds.access_id == hashlib.sha256(b"Jaren's Laptop").hexdigest()
    assert creds.secret == b"correct horse"
    composed = unicodedata.normalize("NFC", "José")
    decomposed = unicodedata.normalize("NFD", "José")
    assert composed != decomposed
    assert Credentials.from_username_password(composed, decomposed) == (
        Credentials.from_username_password(decomposed, composed)
    )
    assert Credentials.from_username_password("é", "x").access_id == (
        hashlib.sha256(b"\xc3\xa9").hexdigest()
    )
    for user, password in (("", "pw"), ("user", ""), ("u\ud800", "pw")):
        with pytest.raises(AccessCodeError):
            Credentials.from_username_password(user, password)
    with pytest.raises(AccessCodeError):
        Credentials("not hex", b"x")


def test_known_answer() -> None:
    """The example in protocol/access_codes.md.

    Base32 and SHA-256 cross-checked with coreutils (`base32`, `sha256sum`); the
    check character by the independent validator above.
    """
    code = AccessCode.from_bytes(bytes(range(16)))
    assert code.text == "SYNC74YAAEBAGBAFAYDQQCIKBMGA2DQPP"
    assert luhn32_valid(code.text)
    assert code.access_id == "8a851ff82ee7048ad09ec3847f1ddf44944104d2cbd17ef4e3db22c6785a0d45"
    assert code.secret == bytes(range(8, 16))
