"""Load + schema + semantic rules: the one entry point that decides whether a spec is valid."""

from __future__ import annotations

from pathlib import Path

from honly_spec.errors import SpecError
from honly_spec.loader import load_profile_document, load_spec
from honly_spec.rules import Context, run_rules
from honly_spec.schema import profile_schema, spec_schema
from honly_spec.validate import schema_diagnostics

SPEC_FORMAT = 1


def check_spec(file: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Context:
    """Load and validate a spec; raise `SpecError` with every problem found."""
    spec = load_spec(file, overrides)
    version = spec.data.get("honly")
    if isinstance(version, int) and not isinstance(version, bool) and version != SPEC_FORMAT:
        problems = schema_diagnostics(spec.data, spec_schema(), spec.pos, spec.key_pos)
        raise SpecError([d for d in problems if d.path == ("honly",)])
    ctx = Context(spec)
    problems = schema_diagnostics(spec.data, spec_schema(), spec.pos, spec.key_pos)
    problems += run_rules(ctx)
    if problems:
        raise SpecError(problems)
    return ctx


def check_profile(file: str | Path) -> dict:
    """Load and validate a runtime profile; raise `SpecError` with every problem found."""
    doc = load_profile_document(file)
    problems = schema_diagnostics(
        doc.data, profile_schema(), doc.pos, lambda p: doc.key_positions.get(p) or doc.pos(p)
    )
    if problems:
        raise SpecError(problems)
    return doc.data
