"""Plain-text rendering shared by the CLI commands (tables and short values)."""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml

from honly_spec.spec.loader import display_path


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns separated by two spaces."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(headers, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(lines)


def short(value: Any, limit: int = 70) -> str:
    """A value on one line, absolute file paths shown relative to the working directory."""
    if isinstance(value, str) and value.startswith("/"):
        return display_path(value)
    text = yaml.safe_dump(_readable(value), default_flow_style=True, width=10_000).strip()
    text = text.removesuffix("\n...").removesuffix("...").strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _readable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _readable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_readable(v) for v in value]
    if isinstance(value, str) and value.startswith("/"):
        return display_path(value)
    return value


def emit_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")
