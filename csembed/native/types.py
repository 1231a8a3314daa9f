"""Type names shared by both backends."""

from __future__ import annotations

from typing import TypeAlias

#: Anything exposing contiguous bytes (Python 3.11 has no ``collections.abc.Buffer``).
BytesLike: TypeAlias = bytes | bytearray | memoryview
