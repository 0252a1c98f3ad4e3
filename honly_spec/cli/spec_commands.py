"""`honly validate`, `honly plan` (with `--explain`) and `honly diff`, and the planning step
`honly-run` starts with. Imports only the spec core: no torch, MLflow or pandas."""

from __future__ import annotations

import argparse
from pathlib import Path

from honly_spec.cli.common import (
    check_node_names,
    load_profile,
    native_compiler,
    selected_cells,
    store_for,
)
from honly_spec.plan.decide import decide
from honly_spec.plan.diff import MISSING, node_verdicts, spec_changes
from honly_spec.plan.graph import Graph, compile_graph
from honly_spec.plan.write import distinct_nodes, plan_table, write_plan
from honly_spec.report.display import emit_json, short, table
from honly_spec.spec.check import check_cells, check_spec
from honly_spec.spec.errors import Diagnostic, Pos, SpecError
from honly_spec.spec.loader import display_path
from honly_spec.spec.paths import format_path, get_path, parse_path
from honly_spec.store.store import Store

EXIT_USER_ERROR = 2


def cmd_validate(args: argparse.Namespace) -> int:
    problems: list[Diagnostic] = []
    for spec in args.specs:
        try:
            check_cells(spec, args.overrides)
        except SpecError as error:
            problems.extend(error.diagnostics)
    if args.display == "json":
        emit_json(
            {
                "ok": not problems,
                "errors": [
                    {
                        "where": str(d.pos) if d.pos else None,
                        "path": format_path(d.path),
                        "message": d.message,
                    }
                    for d in problems
                ],
            }
        )
        return EXIT_USER_ERROR if problems else 0
    if problems:
        raise SpecError(problems)
    for spec in args.specs:
        print(f"ok  {display_path(spec)}")
    return 0


def plan_only(args: argparse.Namespace, force: list[str], only: list[str] | None) -> int:
    return plan_and_show(args, force, only)[0]


def plan_and_show(
    args: argparse.Namespace, force: list[str], only: list[str] | None, quiet_json: bool = False
) -> tuple[int, list, Store, dict]:
    """Validate, key, decide, write the plan directory and show the table."""
    excluded = [n for n in force if only and n not in only]
    if excluded:
        raise SpecError(
            [
                Diagnostic(
                    Pos(f"--force {n}"),
                    (),
                    f"names a node that --only leaves out; add `--only {n}` too",
                )
                for n in excluded
            ]
        )
    graphs = selected_cells(
        [compile_graph(ctx) for ctx in check_cells(args.spec, args.overrides)], args.cell
    )
    for graph in graphs:
        check_node_names(graph, "force", force)
        check_node_names(graph, "only", only or [])
    profile = load_profile(args.profile)
    store = store_for(profile)
    plans = [(g, decide(g, store, set(force), set(only) if only else None)) for g in graphs]
    family = graphs[0].ctx.data["name"]
    out = Path(args.out) if args.out else Path(".honly/plans") / family
    written = write_plan(plans, out, native_compiler(profile, store))
    if args.display == "json" and quiet_json:
        return 0, plans, store, profile
    if args.display == "json":
        emit_json(
            {
                "spec": family,
                "store": str(store.root),
                "plan_dir": str(written),
                "cells": [
                    {"cell": g.name, "spec_hash": g.spec_hash, "nodes": plan_table(g, d)}
                    for g, d in plans
                ],
                "distinct": distinct_nodes(plans),
            }
        )
        return 0, plans, store, profile
    matrix = len(plans) > 1 or graphs[0].ctx.spec.cell is not None
    print(f"honly plan · {family} ({display_path(args.spec)})", end="")
    print(f" · {len(plans)} matrix cells" if matrix else f" · spec {graphs[0].spec_hash[:12]}")
    print(f"store: {store.root}")
    print()
    headers = ["node", "kind", "backend", "from", "key", "status", "rows"]
    rows = []
    for graph, decisions in plans:
        for r in plan_table(graph, decisions):
            detail = ", ".join(f"{s} {n if n is not None else '?'}" for s, n in r["rows"].items())
            if r["kind"] == "eval":
                detail = "suites: " + ", ".join(r.get("suites", []))
            row = [
                r["node"],
                r["kind"],
                r["backend"],
                r["starts_from"],
                r["key"][:12],
                r["status"],
                detail,
            ]
            rows.append([graph.ctx.spec.cell.folder, *row] if matrix else row)
    print(table(["cell", *headers] if matrix else headers, rows))
    for graph, _ in plans:
        if graph.disabled:
            cell = f"{graph.name}: " if matrix else ""
            print(f"  {cell}disabled (enabled: false): {', '.join(graph.disabled)}")
    for graph, decisions in plans:
        for node, decision in decisions.items():
            for reason in decision.reasons:
                cell = f"{graph.name}: " if matrix else ""
                print(f"  {cell}{node}: stale because {reason}")
    if matrix:
        counts = distinct_nodes(plans)
        print(
            f"\n{counts['stage_runs']} stage runs across cells, {counts['distinct_stages']} "
            f"distinct; {counts['eval_runs']} eval runs, {counts['distinct_evals']} distinct"
        )
    print()
    print(f"plan written to {display_path(written)}/")
    return 0, plans, store, profile


def cmd_plan(args: argparse.Namespace) -> int:
    if args.explain:
        return _explain(args)
    return plan_only(args, [], None)


def _explain(args: argparse.Namespace) -> int:
    ctx = check_spec(args.spec, args.overrides)
    spec = ctx.spec
    path = parse_path(args.explain)
    value = get_path(spec.data, path, MISSING)
    if value is MISSING:
        raise SpecError(
            [Diagnostic(Pos(f"--explain {args.explain}"), path, "not set in the resolved spec")]
        )
    history = [(str(pos), short(v)) for pos, v in spec.history(path)]
    origin = str(spec.pos(path))
    if args.display == "json":
        emit_json(
            {
                "path": format_path(path),
                "value": value,
                "set_by": origin,
                "history": [{"where": w, "value": v} for w, v in history],
            }
        )
        return 0
    print(f"{format_path(path)} = {short(value)}")
    print(f"  set by {origin}")
    if history:
        print("  written by (lowest precedence first):")
        print(
            "\n".join("    " + line for line in table(["where", "value"], history).splitlines()[1:])
        )
    return 0


def _diff_side(text: str) -> Graph:
    """A spec, or one cell of a matrix spec written `SPEC#CELL`."""
    file, _, cell = text.partition("#")
    graphs = [compile_graph(ctx) for ctx in check_cells(file)]
    if cell:
        return selected_cells(graphs, [cell])[0]
    if len(graphs) > 1 or graphs[0].ctx.spec.cell is not None:
        cells = ", ".join(g.ctx.spec.cell.folder for g in graphs)
        raise SpecError(
            [
                Diagnostic(
                    Pos(file),
                    ("matrix",),
                    f"a matrix spec: name a cell as `{file}#CELL` (cells: {cells})",
                )
            ]
        )
    return graphs[0]


def cmd_diff(args: argparse.Namespace) -> int:
    problems: list[Diagnostic] = []
    graphs = []
    for spec in (args.spec_a, args.spec_b):
        try:
            graphs.append(_diff_side(spec))
        except SpecError as error:
            problems.extend(error.diagnostics)
    if problems:
        raise SpecError(problems)
    a, b = graphs
    changes = spec_changes(a.ctx.spec, b.ctx.spec)
    verdicts = node_verdicts(a, b)
    if args.display == "json":
        emit_json(
            {
                "a": str(args.spec_a),
                "b": str(args.spec_b),
                "changes": [
                    {
                        "path": format_path(c.path),
                        "old": None if c.old is MISSING else c.old,
                        "new": None if c.new is MISSING else c.new,
                        "change": {"+": "added", "-": "removed", "~": "changed"}[c.sign],
                        "where": str(c.where),
                        "runtime": c.runtime,
                    }
                    for c in changes
                ],
                "nodes": [
                    {"node": v.node, "verdict": v.verdict, "reasons": v.reasons} for v in verdicts
                ],
            }
        )
        return 0
    print(f"honly diff · {display_path(args.spec_a)} → {display_path(args.spec_b)}")
    print()
    print(f"changed paths ({len(changes)}):" if changes else "no changed paths")
    rows = []
    for c in changes:
        old = "(absent)" if c.old is MISSING else short(c.old, 40)
        new = "(absent)" if c.new is MISSING else short(c.new, 40)
        note = f"{c.where}" + ("  [runtime]" if c.runtime else "")
        rows.append([c.sign, format_path(c.path), f"{old} → {new}", note])
    if rows:
        print(
            "\n".join(
                "  " + line
                for line in table(["", "path", "old → new", "set by"], rows).splitlines()
            )
        )
    print()
    print("stages and evals:")
    print(
        "\n".join(
            "  " + line
            for line in table(
                ["node", "verdict", "because"],
                [[v.node, v.verdict, "; ".join(v.reasons)] for v in verdicts],
            ).splitlines()
        )
    )
    reused = sum(v.verdict == "reused" for v in verdicts)
    total = sum(v.verdict != "removed" for v in verdicts)
    print()
    print(f"{reused} of {total} nodes of B reuse A's stored results")
    return 0
