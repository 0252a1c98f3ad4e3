"""Command line: `honly validate|plan|diff` and `honly-run`.

User mistakes (anything raised as `SpecError`) print one line per problem to stderr and exit
with status 2, never a traceback. This module imports only the spec core: no torch, MLflow
or pandas on these paths, so validate and plan stay fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from honly_spec import __version__
from honly_spec.check import check_cells, check_profile, check_spec
from honly_spec.diff import MISSING, node_verdicts, spec_changes
from honly_spec.display import emit_json, short, table
from honly_spec.errors import Diagnostic, Pos, SpecError
from honly_spec.loader import display_path
from honly_spec.paths import format_path, get_path, parse_path
from honly_spec.plan import (
    Graph,
    NativeCompiler,
    compile_graph,
    decide,
    distinct_nodes,
    plan_table,
    write_plan,
)
from honly_spec.progress import make_display
from honly_spec.secrets import redact
from honly_spec.store import Store, default_home
from honly_spec.suggest import did_you_mean

EXIT_USER_ERROR = 2
EXIT_NOT_AVAILABLE = 3


def _add_spec_options(parser: argparse.ArgumentParser, live: bool = False) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override a spec value (YAML-typed), e.g. stages.sft.train.learning_rate=2e-5",
    )
    _add_display(parser, live)


def _add_display(parser: argparse.ArgumentParser, live: bool = False) -> None:
    parser.add_argument(
        "--display",
        choices=["auto", "rich", "plain", "json"] if live else ["plain", "json"],
        default="auto" if live else "plain",
        help="live table (rich; auto = on a terminal), log lines (plain) or JSON (json)"
        if live
        else "output for people (plain) or machines (json)",
    )


def _add_plan_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", help="runtime profile YAML (default: local, CPU)")
    parser.add_argument(
        "--cell",
        action="append",
        default=[],
        metavar="NAME",
        help="only this matrix cell (`seed-1/full` or the full name; repeatable)",
    )
    parser.add_argument(
        "--out", help="plan directory (default: .honly/plans/<spec name> in the working dir)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="honly", description="Helpful-only fine-tuning studies from one YAML spec."
    )
    parser.add_argument("--version", action="version", version=f"honly {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = sub.add_parser("validate", help="check specs; every error at once, exit 2 on any")
    validate.add_argument("specs", nargs="+", metavar="SPEC")
    _add_spec_options(validate)

    plan = sub.add_parser("plan", help="stage table with keys and cache decisions; writes the plan")
    plan.add_argument("spec", metavar="SPEC")
    _add_spec_options(plan)
    _add_plan_options(plan)
    plan.add_argument(
        "--explain", metavar="PATH", help="say which file, parent or override set a value"
    )

    diff = sub.add_parser("diff", help="changed paths and which stages each change re-runs")
    diff.add_argument("spec_a", metavar="A", help="a spec, or a matrix cell as SPEC#CELL")
    diff.add_argument("spec_b", metavar="B", help="a spec, or a matrix cell as SPEC#CELL")
    _add_display(diff)

    compare = sub.add_parser(
        "compare", help="eval metrics of arms and checkpoints side by side, from MLflow"
    )
    _add_results_options(compare)
    compare.add_argument("--format", choices=["table", "markdown", "csv", "json"], default="table")
    report = sub.add_parser("report", help="the comparison as a PNG figure and an HTML page")
    _add_results_options(report)
    report.add_argument("--out", default=".honly/report", help="folder for figure and page")

    env = sub.add_parser("env", help="build or check the pinned per-tool environments")
    env_sub = env.add_subparsers(dest="env_command", required=True, metavar="ACTION")
    create = env_sub.add_parser("create", help="build environment sft, rl or eval")
    create.add_argument("name", choices=["sft", "rl", "eval"])
    create.add_argument("--prefix", default="~/.honly/envs", help="parent folder")
    create.add_argument("--dry-run", action="store_true", help="print the commands only")
    check = env_sub.add_parser("check", help="compare a profile's environments with the pins")
    check.add_argument("--profile", required=True, help="runtime profile YAML")
    _add_display(check)
    return parser


def _add_results_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("specs", nargs="*", metavar="SPEC", help="specs whose runs to compare")
    parser.add_argument(
        "--experiment", action="append", default=[], help="an MLflow experiment (repeatable)"
    )
    parser.add_argument("--filter", help="only cells whose name contains this text")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: the spec's)")
    parser.add_argument("--profile", help="runtime profile YAML (for the store location)")


def build_run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="honly-run", description="Validate, compile and run what is not stored yet."
    )
    parser.add_argument("--version", action="version", version=f"honly {__version__}")
    parser.add_argument("spec", metavar="SPEC")
    _add_spec_options(parser, live=True)
    _add_plan_options(parser)
    parser.add_argument("--dry-run", action="store_true", help="plan only: run nothing")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="STAGE",
        help="run only this stage or eval node (repeatable)",
    )
    parser.add_argument(
        "--force",
        action="append",
        default=[],
        metavar="STAGE",
        help="re-run this stage even if stored (repeatable)",
    )
    return parser


def _guarded(body: Callable[[], int]) -> int:
    try:
        return body()
    except SpecError as error:
        for diagnostic in error.diagnostics:
            print(diagnostic.render(), file=sys.stderr)
        count = len(error.diagnostics)
        print(f"{count} problem{'s' if count != 1 else ''} found", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `honly plan ... | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {
        "validate": cmd_validate,
        "plan": cmd_plan,
        "diff": cmd_diff,
        "env": cmd_env,
        "compare": cmd_compare,
        "report": cmd_report,
    }
    return _guarded(lambda: commands[args.command](args))


def run_main(argv: list[str] | None = None) -> int:
    args = build_run_parser().parse_args(argv)
    return _guarded(lambda: cmd_run(args))


def _results(args: argparse.Namespace) -> tuple[str, list]:
    """The tracking URI and every measured metric of the runs `args` names."""
    from honly_spec import compare, run

    store = _store_for(_profile(args.profile))
    experiments, uri = list(args.experiment), args.tracking_uri
    for spec in args.specs:
        data = check_cells(spec, [])[0].data
        experiments.append(run.experiment_name(data))
        uri = uri or run.tracking_uri(data, store)
    uri = uri or f"sqlite:///{store.root / 'mlflow.db'}"
    if not experiments:
        raise SpecError([Diagnostic(Pos("honly compare"), (), "name specs or --experiment")])
    found = compare.fetch(uri, sorted(set(experiments)), args.filter)
    if not found:
        names = ", ".join(sorted(set(experiments)))
        raise SpecError(
            [Diagnostic(Pos(uri), (), f"no evaluated runs in experiment(s) {names}; run them")]
        )
    return uri, found


def cmd_compare(args: argparse.Namespace) -> int:
    from honly_spec import compare

    _, found = _results(args)
    print(compare.render(compare.comparison(found), args.format))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from honly_spec import report

    uri, found = _results(args)
    written = report.write_report(found, Path(args.out), uri)
    for path in written:
        print(f"wrote {display_path(path)}")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    """`env create NAME` runs the pinned install commands; `env check` reports, per
    environment of the profile, what it holds next to the pins (exit 1 on a mismatch)."""
    import shlex
    import subprocess

    from honly_spec import envs

    if args.env_command == "create":
        commands = envs.create_commands(args.name, Path(os.path.expanduser(args.prefix)))
        for command in commands:
            print("$ " + shlex.join(command), flush=True)
            if args.dry_run:
                continue
            try:
                if subprocess.run(command).returncode != 0:
                    return 1
            except OSError as error:
                print(f"honly env create: cannot run `{command[0]}`: {error}", file=sys.stderr)
                return 1
        return 0
    profile = _profile(args.profile)
    reports = [
        envs.check_env(backend, env["python"])
        for backend, env in (profile.get("envs") or {}).items()
        if backend in envs.PINS and "python" in env
    ]
    if args.display == "json":
        emit_json([{**r.__dict__, "ok": r.ok} for r in reports])
    else:
        rows = [
            [
                r.backend,
                r.python,
                "ok" if r.ok else (r.problem or "differs"),
                ", ".join(
                    f"{name} {r.packages.get(name) or 'missing'}"
                    + ("" if r.packages.get(name) == pin else f" (want {pin})")
                    for name, pin in envs.PINS[r.backend].items()
                ),
            ]
            for r in reports
        ]
        print(table(["backend", "python", "status", "packages"], rows))
    return 0 if all(r.ok for r in reports) else 1


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


def _profile(profile_file: str | None) -> dict:
    """The runtime profile (validated), with `store` made absolute; {} for the default."""
    if profile_file is None:
        return {}
    profile = check_profile(profile_file)
    base = Path(profile_file).parent
    if "store" in profile:
        profile["store"] = str((base / Path(profile["store"]).expanduser()).resolve())
    for env in (profile.get("envs") or {}).values():  # interpreters: relative to the profile
        if "python" in env and "/" in env["python"]:
            env["python"] = str((base / Path(env["python"]).expanduser()).absolute())
    return profile


def _selected_cells(graphs: list[Graph], wanted: list[str]) -> list[Graph]:
    """The cells `--cell` names (by full name or by the part after the spec name)."""
    if not wanted:
        return graphs
    names = {g.name: g for g in graphs}
    for g in graphs:
        if g.ctx.spec.cell is not None:
            names.setdefault(g.ctx.spec.cell.folder, g)
    unknown = [w for w in wanted if w not in names]
    if unknown:
        cells = [g.ctx.spec.cell.folder for g in graphs if g.ctx.spec.cell is not None]
        raise SpecError(
            [
                Diagnostic(
                    Pos(f"--cell {w}"),
                    (),
                    f"no such matrix cell{did_you_mean(w, cells)} (cells: {', '.join(cells)})"
                    if cells
                    else "this spec has no `matrix`",
                )
                for w in unknown
            ]
        )
    chosen = {names[w].name for w in wanted}
    return [g for g in graphs if g.name in chosen]


def _native_compiler(profile: dict, store: Store) -> NativeCompiler | None:
    """Compiles GPU stages into native jobs when the profile has GPUs (their batch and
    placement depend on the GPU count); None on a CPU profile."""
    if not (profile.get("resources") or {}).get("gpus_per_node"):
        return None
    from honly_spec.adapters.compile import native_jobs
    from honly_spec.adapters.native import Resources

    resources = Resources.from_profile(profile)
    return lambda graph: native_jobs(graph, store.root, resources)


def _store_for(profile: dict) -> Store:
    return Store(Path(profile["store"]) if "store" in profile else default_home() / "store")


def _check_node_names(graph: Graph, option: str, names: list[str]) -> None:
    known = graph.node_names()
    problems = [
        Diagnostic(
            Pos(f"--{option} {n}"),
            (),
            f"no stage or eval named `{n}`{did_you_mean(n, known)} (nodes: {', '.join(known)})",
        )
        for n in names
        if n not in known
    ]
    if problems:
        raise SpecError(problems)


def _plan(args: argparse.Namespace, force: list[str], only: list[str] | None) -> int:
    return _plan_and_show(args, force, only)[0]


def _plan_and_show(
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
    graphs = _selected_cells(
        [compile_graph(ctx) for ctx in check_cells(args.spec, args.overrides)], args.cell
    )
    for graph in graphs:
        _check_node_names(graph, "force", force)
        _check_node_names(graph, "only", only or [])
    profile = _profile(args.profile)
    store = _store_for(profile)
    plans = [(g, decide(g, store, set(force), set(only) if only else None)) for g in graphs]
    family = graphs[0].ctx.data["name"]
    out = Path(args.out) if args.out else Path(".honly/plans") / family
    written = write_plan(plans, out, _native_compiler(profile, store))
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
    return _plan(args, [], None)


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
        return _selected_cells(graphs, [cell])[0]
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


def cmd_run(args: argparse.Namespace) -> int:
    if args.dry_run:
        return _plan(args, args.force, args.only or None)
    from honly_spec import run
    from honly_spec.adapters.ray_jobs import RayJobError
    from honly_spec.judges import JudgeError
    from honly_spec.launch import StageFailed

    _, plans, store, profile = _plan_and_show(args, args.force, args.only or None, quiet_json=True)
    display = make_display(args.display)
    store.on_wait = lambda name, holder: display.message(
        f"waiting for {name} (another run is building it): held by {holder}"
    )
    try:
        for graph, decisions in plans:
            run.check_runnable(graph, decisions, profile)
            run.check_selection(graph, decisions, store)
        resources = profile.get("resources") or {}
        runtime = run.Runtime(
            store=store,
            python=run.default_python(profile),
            tracking_uri=run.tracking_uri(plans[0][0].ctx.data, store),
            display=display,
            launcher=profile.get("launcher", "python"),
            profile=profile,
            processes=resources.get("processes_per_node") or resources.get("gpus_per_node") or 1,
        )
        tracker = run.Tracker(
            runtime.tracking_uri,
            run.experiment_name(plans[0][0].ctx.data),
            store.root / "mlartifacts",
        )
        results = {}
        for graph, decisions in plans:
            for node in graph.node_names():
                status = decisions[node].status
                kind = "eval" if node.startswith("eval[") else graph.stage(node).kind
                display.add(node, kind, status)
            results[graph.name] = run.CellRun(graph, decisions, runtime, tracker).run()
    except run.NotAvailable as error:
        print(redact(f"honly-run: {error}"), file=sys.stderr)
        return EXIT_NOT_AVAILABLE
    except (StageFailed, JudgeError, RayJobError, OSError) as error:
        # a tool that failed, a judge that could not answer, a cluster or file that is
        # not there: the run stops with what was finished kept, and says why
        print(redact(f"honly-run: {error}"), file=sys.stderr)
        return run.EXIT_FAILED
    finally:
        display.close()
    for cell, per_checkpoint in results.items():
        if not per_checkpoint:
            continue
        display.message(f"\nresults · {cell} (mean [95% interval] n)")
        display.message(table(["metric", *per_checkpoint], run.results_table(per_checkpoint)))
    display.message(f"\nMLflow: mlflow ui --backend-store-uri {runtime.tracking_uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
