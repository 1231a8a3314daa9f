"""Message bodies as JSON text: the strict parse of a peer's, the canonical encoding of ours.

Theory of operation
-------------------
A body is UTF-8 JSON holding one object with a non-empty string ``type``.
:func:`parse_body` is strict where JSON parsers are lenient (NaN, numbers
overflowing a double, duplicate keys, lone surrogates) and refuses, before
parsing, a body whose shape would cost far more memory than its size
(:func:`check_shape`). :func:`encode_body` writes the one canonical form:
compact, ``type`` first, every other key sorted at every level, then one LF
that the body length counts -- the draft's examples byte for byte.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, Final, NoReturn

from csembed.protocol.wire.events import MAX_BODY, MAX_DEPTH, WireError, default_max_elements


class _JsonRejected(Exception):
    """Raised from JSON parser hooks; carries the reason."""


def _reject_constant(name: str) -> NoReturn:
    raise _JsonRejected(f"{name} is not allowed in JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _JsonRejected(f"number {text[:40]} overflows a double")
    return value


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _JsonRejected(f"duplicate key {key[:60]!r} in a JSON object")
            seen.add(key)
    return obj


_JSON = json.JSONDecoder(
    object_pairs_hook=_unique_object,
    parse_constant=_reject_constant,
    parse_float=_finite_float,
    strict=True,
)


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_ONLY_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")
_EMPTY_PAIR = re.compile(rb"\[\]|\{\}")


def _elements_bound(raw: bytes) -> tuple[int, int]:
    """Upper bounds on (values and keys, opening brackets) in JSON text ``raw``."""
    opening = raw.count(b"[") + raw.count(b"{")
    return raw.count(b",") + raw.count(b":") + opening + 1, opening


def check_shape(raw: bytes, max_elements: int, max_depth: int, offset: int = 0) -> None:
    """Refuse, before parsing, a body with more than ``max_elements`` values and
    keys or nested deeper than ``max_depth``: parsed, each element is a Python
    object many times its size in text. Counting is by bytes.count at C speed;
    only when that coarse bound is exceeded are strings blanked out (they may
    hold commas and brackets) and the structure counted exactly, and nesting
    measured by peeling empty pairs off the brackets, one level per pass."""
    elements, opening = _elements_bound(raw)
    if elements <= max_elements and opening <= max_depth:
        return
    structure = _JSON_STRING.sub(b'""', raw)
    elements, opening = _elements_bound(structure)
    if elements > max_elements:
        raise WireError(f"JSON body refused: more than {max_elements} values and keys "
                        f"(about {elements})", offset)
    if opening <= max_depth:
        return
    brackets = structure.translate(None, _ONLY_BRACKETS)
    for _ in range(max_depth):
        peeled = _EMPTY_PAIR.sub(b"", brackets)
        if len(peeled) == len(brackets):
            return  # unbalanced: the parser reports where
        brackets = peeled
    if brackets and _EMPTY_PAIR.search(brackets):
        raise WireError(f"JSON body refused: nested too deeply (over {max_depth} levels)",
                        offset)


def parse_body(raw: bytes, offset: int = 0, *, max_elements: int | None = None,
               max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """Parse and check a message body; ``offset`` is its position in the stream.

    The body must be UTF-8 JSON text holding one object with a non-empty
    string ``type``; NaN/Infinity, numbers that overflow a double, duplicate
    keys and escapes that leave a lone UTF-16 surrogate are refused, and so
    is a body with more than ``max_elements`` values and keys (default:
    :func:`default_max_elements` of the draft's largest body) or nested deeper than
    ``max_depth`` (:func:`check_shape`, before parsing). Integers are parsed
    exactly. Raises :class:`WireError` naming the offending byte where that
    is known, otherwise the body's first byte.
    """
    check_shape(raw, default_max_elements(MAX_BODY) if max_elements is None else max_elements,
                max_depth, offset)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError("JSON body is not valid UTF-8", offset + exc.start) from None
    if not text.startswith("{"):
        raise WireError("JSON body must start with '{'", offset)
    try:
        value = _JSON.decode(text)
    except json.JSONDecodeError as exc:
        where = offset + len(text[: exc.pos].encode("utf-8"))
        raise WireError(f"invalid JSON body: {exc.msg}", where) from None
    except _JsonRejected as exc:
        raise WireError(f"JSON body refused: {exc}", offset) from None
    except (ValueError, RecursionError) as exc:
        # int() digit limit, or nesting deeper than the interpreter allows.
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:80]
        raise WireError(f"JSON body refused: {reason}", offset) from None
    if b"\\u" in raw and _has_lone_surrogate(value):
        raise WireError("JSON body refused: \\u escape leaves a lone surrogate", offset)
    if not isinstance(value, dict):  # pragma: no cover - guarded by the '{' check
        raise WireError("JSON body is not an object", offset)
    kind = value.get("type")
    if not isinstance(kind, str) or not kind:
        raise WireError('JSON body has no non-empty string "type" member', offset)
    return value


_MAX_DEPTH: Final = 200


def _check_keys(value: Any) -> None:
    """Refuse non-str keys, which ``json`` would silently turn into strings.

    ``{1: "a", "1": "b"}`` would otherwise go out with a duplicate key that
    every peer (and our own decoder) refuses. Types ``json`` cannot encode at
    all, and NaN, are left to the encoder, which raises for them.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > _MAX_DEPTH:
            raise ValueError(f"body is nested more than {_MAX_DEPTH} levels deep")
        if isinstance(item, Mapping):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise TypeError(f"JSON object keys must be str, not {type(key).__name__}")
                if isinstance(child, Mapping | list | tuple):
                    stack.append((child, depth + 1))
        elif isinstance(item, list | tuple):
            stack.extend(
                (child, depth + 1) for child in item if isinstance(child, Mapping | list | tuple)
            )


_ENCODER = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
)


def encode_body(body: Mapping[str, Any]) -> bytes:
    """Encode a body exactly as it goes on the wire.

    Compact JSON, UTF-8, ``type`` first and every other key (at every level)
    sorted, then one LF; the LF is part of the body and counted by its length,
    which reproduces the draft's examples byte for byte. Raises ``TypeError``
    or ``ValueError`` for a body the protocol cannot carry (no string ``type``,
    non-str keys, NaN, lone surrogates, over 16 MiB).
    """
    if not isinstance(body, Mapping):
        raise TypeError("a message body must be a mapping")
    kind = body.get("type")
    if not isinstance(kind, str) or not kind:
        raise ValueError('a message body needs a non-empty string "type"')
    _check_keys(body)
    try:
        rest = _ENCODER.encode({k: v for k, v in body.items() if k != "type"})
        text = '{"type":' + _ENCODER.encode(kind) + ("}" if rest == "{}" else "," + rest[1:])
        raw = (text + "\n").encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("body holds a string with a lone surrogate") from None
    if len(raw) > MAX_BODY:
        raise ValueError(f"encoded body is {len(raw)} bytes, over the {MAX_BODY} limit")
    return raw
