"""`matrix:` expansion: every combination of axis values is a full spec instance (a cell).

Cells are named after the spec and their axis values (`mitigated/seed-1/fraction-0.5`), so a
name is readable, stable across runs, and safe for MLflow (letters, digits, `_`, `-`, `.`,
`/`). Cells that share a stage prefix share its key, so the store trains it once.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from typing import Any

from honly_spec.paths import parse_path

UNSAFE = re.compile(r"[^\w.\-]+")


@dataclass(frozen=True)
class Cell:
    name: str
    assignments: tuple[tuple[str, Any], ...]

    def overrides(self) -> list[str]:
        """The cell's values as `path=value` assignments (JSON is valid YAML)."""
        return [f"{path}={json.dumps(value)}" for path, value in self.assignments]


def _label(axis: str, axes: list[str]) -> str:
    last = str(parse_path(axis)[-1])
    clashes = [a for a in axes if str(parse_path(a)[-1]) == last]
    return last if len(clashes) == 1 else axis


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return UNSAFE.sub("_", text).strip("_") or "_"


def expand(spec_name: str, matrix: dict[str, list[Any]]) -> list[Cell]:
    """All cells in axis order (first axis varies slowest)."""
    axes = list(matrix)
    cells = []
    for values in itertools.product(*(matrix[a] for a in axes)):
        parts = [f"{_label(a, axes)}-{_show(v)}" for a, v in zip(axes, values, strict=True)]
        cells.append(Cell("/".join([spec_name, *parts]), tuple(zip(axes, values, strict=True))))
    return cells
