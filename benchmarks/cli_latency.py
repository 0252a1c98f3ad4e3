"""CLI latency: `honly validate` and `honly plan` on specs/mitigated.yaml against the cost of
starting Python at all, measured side by side in one run.

    .venv/bin/python benchmarks/cli_latency.py [--repeat 15]

Target: validate + plan < 0.5 s together (no torch, MLflow or pandas import on these paths).
`validate (new)` validates a spec never seen before (full JSON Schema pass); the other rows
are what users see when they re-run a command on an unchanged spec (schema pass cached).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SPEC = "specs/mitigated.yaml"
TARGET_S = 0.5


def wall_times(argv: list[str], repeat: int, env: dict[str, str]) -> list[float]:
    """Wall time per run; `{n}` in an argument becomes the run number (a never-seen spec)."""
    times = []
    for run in range(repeat):
        args = [a.replace("{n}", f"{time.time_ns()}-{run}") for a in argv]
        start = time.perf_counter()
        subprocess.run(args, cwd=REPO, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "HONLY_HOME": home}
        honly = [sys.executable, "-m", "honly_spec.cli"]
        cases = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "validate (new)": [*honly, "validate", SPEC, "--set", "description=run-{n}"],
            "honly validate": [*honly, "validate", SPEC],
            "honly plan": [*honly, "plan", SPEC, "--out", str(Path(home) / "plan")],
        }
        medians = {}
        for name, argv in cases.items():
            wall_times(argv, 2, env)  # warm the page cache and .pyc files
            medians[name] = statistics.median(wall_times(argv, args.repeat, env))
    baseline = medians["python -c pass"]
    print(f"CLI latency on {SPEC}, median of {args.repeat} runs ({os.cpu_count()} CPUs)")
    print(f"{'command':<16} {'wall s':>8} {'x python startup':>18}")
    for name, value in medians.items():
        print(f"{name:<16} {value:>8.3f} {value / baseline:>18.1f}")
    both = medians["honly validate"] + medians["honly plan"]
    verdict = "meets" if both < TARGET_S else "MISSES"
    print(f"validate + plan: {both:.3f} s ({verdict} the {TARGET_S} s target)")


if __name__ == "__main__":
    main()
