"""Command line: `honly validate|plan|diff|compare|report|env` and `honly-run`.

This package only parses arguments and prints; each command's module calls the layer that
does the work. User mistakes (anything raised as `SpecError`) print one line per problem to
stderr and exit with status 2, never a traceback.

May import: every other subpackage. The spec commands (`validate`, `plan`, `diff`) import
only the spec core (no torch, MLflow or pandas), so they stay fast; the run and results
commands import the runtime lazily.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from honly_spec import __version__
from honly_spec.cli.results_commands import cmd_compare, cmd_env, cmd_report
from honly_spec.cli.run_command import cmd_run
from honly_spec.cli.spec_commands import cmd_diff, cmd_plan, cmd_validate
from honly_spec.spec.errors import SpecError

EXIT_USER_ERROR = 2


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
