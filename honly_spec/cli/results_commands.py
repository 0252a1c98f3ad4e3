"""`honly compare` and `honly report` (results read back from MLflow), and `honly env`
(the pinned per-tool environments)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from honly_spec.cli.common import load_profile, store_for
from honly_spec.report.display import emit_json, table
from honly_spec.spec.check import check_cells
from honly_spec.spec.errors import Diagnostic, Pos, SpecError
from honly_spec.spec.loader import display_path


def _results(args: argparse.Namespace) -> tuple[str, list]:
    """The tracking URI and every measured metric of the runs `args` names."""
    from honly_spec.report import compare
    from honly_spec.run import loop as run

    store = store_for(load_profile(args.profile))
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
    from honly_spec.report import compare

    _, found = _results(args)
    print(compare.render(compare.comparison(found), args.format))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from honly_spec.report import render as report

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

    from honly_spec.adapters import envs

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
    profile = load_profile(args.profile)
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
