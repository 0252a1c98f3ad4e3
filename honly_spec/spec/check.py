"""Load + schema + semantic rules: the one entry point that decides whether a spec is valid.

Schema validation of a resolved spec that already passed once is skipped: a stamp named by
the sha256 of (schema file, honly version, resolved spec) is kept under
`$HONLY_HOME/cache/valid/`. This keeps `honly validate`/`plan` well under half a second on
a small CPU (importing jsonschema alone costs ~0.1 s there). Semantic rules, which read data
files, always run. Only successes are stamped, so an invalid spec is always fully reported.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from honly_spec import __version__
from honly_spec.spec.errors import Diagnostic, SpecError
from honly_spec.spec.loader import LoadedSpec, load_profile_document, load_spec
from honly_spec.spec.matrix import PAIRED, Cell, expand
from honly_spec.spec.paths import get_path
from honly_spec.spec.rules import Context, run_rules
from honly_spec.spec.schema import SPEC_SCHEMA_FILE, profile_schema, schema_dir, spec_schema
from honly_spec.spec.validate import PosLookup, schema_diagnostics
from honly_spec.store.keys import canonical_json
from honly_spec.store.store import default_home

SPEC_FORMAT = 1


def _stamp(data: Any) -> Path | None:
    try:
        text = canonical_json(data)
    except (TypeError, ValueError):  # NaN/inf: let the validator report it
        return None
    digest = hashlib.sha256()
    digest.update((schema_dir() / SPEC_SCHEMA_FILE).read_bytes())
    digest.update(__version__.encode())
    digest.update(text.encode("utf-8"))
    return default_home() / "cache" / "valid" / digest.hexdigest()


def _spec_schema_problems(data: Any, pos: PosLookup, key_pos: PosLookup) -> list[Diagnostic]:
    stamp = _stamp(data)
    if stamp is not None and stamp.exists():
        return []
    problems = schema_diagnostics(data, spec_schema(), pos, key_pos)
    if not problems and stamp is not None:
        try:
            stamp.parent.mkdir(parents=True, exist_ok=True)
            stamp.touch()
        except OSError:
            pass  # a read-only HONLY_HOME only costs speed
    return problems


def _merge_hint(spec: LoadedSpec, problem: Diagnostic) -> Diagnostic:
    """A mapping whose keys came from different files (a parent and a child) and clash
    usually wants `!replace`; say so."""
    value = get_path(spec.data, problem.path)
    if not problem.message.startswith("pick exactly one") or not isinstance(value, dict):
        return problem
    files = {spec.pos((*problem.path, key)).file for key in value if key != "replace"}
    if len(files) < 2:
        return problem
    hint = (
        f" (its keys come from {', '.join(sorted(files))}: write the entry with `!replace` "
        "to replace the parent's instead of merging into it)"
    )
    return Diagnostic(problem.pos, problem.path, problem.message + hint)


def check_spec(
    file: str | Path, overrides: list[str] | tuple[str, ...] = (), cell: Cell | None = None
) -> Context:
    """Load and validate a spec (or one matrix cell of it); raise `SpecError` with every
    problem found."""
    spec = load_spec(file, overrides, cell)
    version = spec.data.get("honly")
    if isinstance(version, int) and not isinstance(version, bool) and version != SPEC_FORMAT:
        problems = schema_diagnostics(spec.data, spec_schema(), spec.pos, spec.key_pos)
        raise SpecError([d for d in problems if d.path == ("honly",)])
    ctx = Context(spec)
    problems = [
        _merge_hint(spec, d) for d in _spec_schema_problems(spec.data, spec.pos, spec.key_pos)
    ] + run_rules(ctx)
    if problems:
        raise SpecError(problems)
    return ctx


def check_cells(file: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> list[Context]:
    """A spec without `matrix` as one context; with `matrix`, one context per cell. Every
    problem of every cell is reported together (a cell is named in its values' positions)."""
    base = check_spec(file, overrides)
    matrix = base.data.get("matrix")
    if not matrix:
        return [base]
    contexts, problems = [], []
    for cell in expand(base.data["name"], matrix):
        try:
            contexts.append(check_spec(file, overrides, cell))
        except SpecError as error:
            value_positions = set()
            for axis, index, value in cell.assignments:
                origins = (
                    [("matrix", PAIRED, value, path) for path in matrix[PAIRED][value]]
                    if axis == PAIRED
                    else [("matrix", axis, index)]
                )
                value_positions.update(base.spec.pos(origin) for origin in origins)
            problems.extend(
                d
                if d.pos in value_positions
                else Diagnostic(d.pos, d.path, f"{d.message} (in matrix cell {cell.folder})")
                for d in error.diagnostics
            )
    if problems:
        unique = {d.render(): d for d in problems}
        raise SpecError(list(unique.values()))
    return contexts


def check_profile(file: str | Path) -> dict:
    """Load and validate a runtime profile; raise `SpecError` with every problem found."""
    doc = load_profile_document(file)
    problems = schema_diagnostics(
        doc.data, profile_schema(), doc.pos, lambda p: doc.key_positions.get(p) or doc.pos(p)
    )
    if problems:
        raise SpecError(problems)
    return doc.data
