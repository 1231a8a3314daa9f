"""Loader for the known-answer vectors in this folder (shared by both backends' tests)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def load(name: str) -> Any:
    """The parsed JSON document ``tests/vectors/<name>.json``."""
    return json.loads((HERE / f"{name}.json").read_text())


def materialize(spec: dict[str, Any]) -> bytes:
    """The bytes an input description stands for (same rules as generate.py)."""
    if "hex" in spec:
        return bytes.fromhex(spec["hex"])
    if "repeat_hex" in spec:
        return bytes.fromhex(spec["repeat_hex"]) * spec["count"]
    return random.Random(spec["random_seed"]).randbytes(spec["length"])
