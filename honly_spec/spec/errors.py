"""Diagnostics: every user-facing problem is a `Diagnostic`, raised together as `SpecError`.

A user mistake must never surface as a Python traceback. Code that finds a problem in a
spec, profile or data file builds a `Diagnostic` (where, which path, what is wrong, what to
change) and either collects it or raises `SpecError` with all diagnostics found so far. The
CLI prints them one per line, sorted by position, and exits with status 2.
"""

from __future__ import annotations

from dataclasses import dataclass

from honly_spec.spec.paths import SpecPath, format_path


@dataclass(frozen=True, order=True)
class Pos:
    """A place in a file: 1-based line and column. `line == 0` means "the file as a whole"."""

    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        if self.line <= 0:
            return self.file
        return f"{self.file}:{self.line}:{self.col}"


def nearest_pos(table: dict[SpecPath, Pos], path: SpecPath, default: Pos) -> Pos:
    """The position recorded for `path`, or for its closest ancestor that has one."""
    for end in range(len(path), -1, -1):
        found = table.get(path[:end])
        if found is not None:
            return found
    return default


@dataclass(frozen=True)
class Diagnostic:
    """One problem: where it is, the dotted spec path it concerns, and a message that says
    what is wrong and what to change."""

    pos: Pos | None
    path: SpecPath
    message: str

    def render(self) -> str:
        where = str(self.pos) if self.pos else "<spec>"
        dotted = format_path(self.path)
        return f"{where}: {dotted}: {self.message}" if dotted else f"{where}: {self.message}"

    def order(self) -> tuple:
        if self.pos is None:
            return ("\uffff", 0, 0, format_path(self.path))
        return (self.pos.file, self.pos.line, self.pos.col, format_path(self.path))


class SpecError(Exception):
    """Raised with every diagnostic found; the CLI turns it into exit code 2."""

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = sorted(diagnostics, key=Diagnostic.order)
        super().__init__("\n".join(d.render() for d in self.diagnostics))
