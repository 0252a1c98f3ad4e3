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

from honly_spec.spec.paths import parse_path

UNSAFE = re.compile(r"[^\w.\-]+")


@dataclass(frozen=True)
class Cell:
    """One combination: (axis path, index of the value on that axis, value) per axis; for
    the `paired` axis the value is the variant's name."""

    name: str
    assignments: tuple[tuple[str, int, Any], ...]

    @property
    def folder(self) -> str:
        """The cell's name without the spec name: `seed-0/fraction-1.0`."""
        return self.name.split("/", 1)[1]


def _label(axis: str, axes: list[str]) -> str:
    last = str(parse_path(axis)[-1])
    clashes = [a for a in axes if str(parse_path(a)[-1]) == last]
    return last if len(clashes) == 1 else axis


def value_label(value: Any) -> str:
    """How a value appears in a cell name."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return UNSAFE.sub("_", text).strip("_") or "_"


PAIRED = "paired"


def _part(axis: str, value: Any, axes: list[str]) -> str:
    """A cell-name part: `seed-1`, or a paired variant's own name."""
    return value if axis == PAIRED else f"{_label(axis, axes)}-{value_label(value)}"


def axis_values(matrix: dict[str, Any], axis: str) -> list[Any]:
    """The values of an axis; the `paired` axis's values are its variant names."""
    return list(matrix[axis]) if axis == PAIRED else matrix[axis]


def expand(spec_name: str, matrix: dict[str, Any]) -> list[Cell]:
    """All cells in axis order (first axis varies slowest). A `paired` axis contributes one
    variant per cell (its paths are applied together by the loader)."""
    axes = list(matrix)
    cells = []
    for values in itertools.product(*(axis_values(matrix, a) for a in axes)):
        parts = [_part(a, v, axes) for a, v in zip(axes, values, strict=True)]
        assignments = tuple(
            (axis, axis_values(matrix, axis).index(value), value)
            for axis, value in zip(axes, values, strict=True)
        )
        cells.append(Cell("/".join([spec_name, *parts]), assignments))
    return cells
