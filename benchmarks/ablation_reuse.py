"""Stage reuse across an ablation family: executions vs training every cell from scratch.

    .venv/bin/python benchmarks/ablation_reuse.py [--spec specs/ablations/quickstart_grid.yaml]
                                                  [--run --set PATH=VALUE ... --home DIR]

Plans every matrix cell and prints, for stages and for evals, how many runs the family has
(every cell from scratch), how many distinct keys honly builds, and the ratio. With `--run`
it also runs the family in a fresh store (add `--set` to shrink it) and counts the backend
processes that actually trained, next to the distinct keys: they should be equal.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from honly_spec.plan.graph import compile_graph  # noqa: E402
from honly_spec.spec.check import check_cells  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(REPO / "specs/ablations/quickstart_grid.yaml"))
    parser.add_argument("--run", action="store_true", help="run the family in a fresh store")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--home", help="keep the run's HONLY_HOME here (default: a temp dir)")
    args = parser.parse_args()
    graphs = [compile_graph(ctx) for ctx in check_cells(args.spec, args.overrides)]
    stage_runs = [s.key for g in graphs for s in g.stages if s.kind != "generate"]
    generate_runs = [s.key for g in graphs for s in g.stages if s.kind == "generate"]
    eval_runs = [e.key for g in graphs for e in g.evals]
    print(f"{Path(args.spec).name}: {len(graphs)} cells")
    print(f"  {'':8} {'from scratch':>12} {'distinct':>9} {'saved':>7}")
    for what, runs in (("stages", stage_runs), ("generate", generate_runs), ("evals", eval_runs)):
        if not runs:
            continue
        distinct = len(set(runs))
        saved = 1 - distinct / len(runs) if runs else 0.0
        print(f"  {what:8} {len(runs):>12} {distinct:>9} {saved:>6.0%}")
    if not args.run:
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        home = args.home or scratch
        env = {**os.environ, "HONLY_HOME": home}
        overrides = [flag for o in args.overrides for flag in ("--set", o)]
        start = time.perf_counter()
        code = "import sys; from honly_spec.cli import run_main; sys.exit(run_main(sys.argv[1:]))"
        subprocess.run(
            [sys.executable, "-c", code, args.spec, *overrides, "--display", "plain"],
            env=env, check=True,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        stages = {s.name for g in graphs for s in g.stages if s.kind != "generate"}
        logs = (Path(home) / "store" / "logs").rglob("*.log")
        trained = [log for log in logs if log.name.rsplit("-", 3)[0] in stages]
        print(f"  ran in {seconds:.0f} s: {len(trained)} training processes for "
              f"{len(set(stage_runs))} distinct training stage keys")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
