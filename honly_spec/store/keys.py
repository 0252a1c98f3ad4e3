"""Canonical JSON and sha256 keys: the same inputs give the same key on every machine.

Canonical form: keys sorted, no whitespace, UTF-8, and integral floats written as integers
(so `epochs: 1` and `epochs: 1.0` key alike). NaN and infinity are rejected by validation
before anything is keyed.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

STAGE_FORMAT = "honly.stage/1"
EVAL_FORMAT = "honly.eval/1"


def _normalize(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {str(k): _normalize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalize(v) for v in value]
    return value


def canonical_json(value: Any) -> str:
    return json.dumps(
        _normalize(value),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def digest(value: Any) -> str:
    """sha256 hex of the canonical JSON of `value`."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()
