"""End-to-end cost of the embedded pipeline, and honly's overhead over plain TRL/transformers.

    .venv/bin/python benchmarks/pipeline_overhead.py [--spec specs/quickstart.yaml]

1. Runs `honly-run SPEC` in a fresh HONLY_HOME and prints the wall time of the whole run and
   of each node (from the store records).
2. Re-runs it: an unchanged spec should execute nothing.
3. Repeats the SFT stage and the base-model eval generation with TRL/transformers directly (a
   standalone script, same data, hyperparameters and LoRA config), and prints honly's time
   over the direct time for each. For the eval, honly's side is its stored generation job
   re-run by hand (`python -m honly_spec.adapters.local.worker job.json`: process start,
   model load, every conversation turn by turn), since the eval node also runs lm-eval and
   grading, whose times are printed from the node's logs separately.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

DIRECT = Path(__file__).resolve().parent / "direct_trl.py"


def honly_run(spec: str, env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from honly_spec.cli import run_main; sys.exit(run_main(sys.argv[1:]))",
            spec,
            "--display",
            "plain",
        ],
        cwd=cwd,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return time.perf_counter() - start


def direct(task: str, model: Path, data: Path, config: dict, env: dict[str, str]) -> float:
    with tempfile.TemporaryDirectory() as out:
        result = subprocess.run(
            [
                sys.executable,
                str(DIRECT),
                task,
                str(model),
                str(data),
                out,
                str(os.cpu_count() or 1),
                json.dumps(config),
            ],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
    return json.loads(result.stdout.strip().splitlines()[-1])["seconds"]


def rerun_job(job_dir: Path, env: dict[str, str]) -> float:
    """Wall time of re-running a stored worker job by hand, in a scratch copy."""
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "job"
        shutil.copytree(job_dir, copy)
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "honly_spec.adapters.local.worker", str(copy / "job.json")],
            cwd=copy,
            env={**env, "HONLY_THREADS": str(os.cpu_count() or 1)},
            check=True,
            capture_output=True,
        )
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(REPO / "specs" / "quickstart.yaml"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home, tempfile.TemporaryDirectory() as cwd:
        env = {**os.environ, "HONLY_HOME": home, "HF_HUB_OFFLINE": "1"}
        first = honly_run(args.spec, env, Path(cwd))
        second = honly_run(args.spec, env, Path(cwd))
        store = Path(home) / "store"
        nodes = []
        for record_file in sorted(store.glob("*/*/record.json")):
            record = json.loads(record_file.read_text())
            if "timings" not in record:  # per-suite entries: timed within their eval node
                continue
            seconds = record["timings"]["seconds"]
            nodes.append((record["node"], record["kind"], seconds, record_file.parent))
        print(f"honly-run {Path(args.spec).name} on {os.cpu_count()} CPUs")
        print(f"  first run (everything built): {first:8.1f} s")
        print(f"  second run (nothing to do):   {second:8.1f} s")
        print(f"\n  {'node':<12} {'kind':<6} {'wall s':>8}")
        for node, kind, seconds, _ in nodes:
            print(f"  {node:<12} {kind:<6} {seconds:>8.1f}")
        model_dir = next(store.glob("model/*/weights"))
        sft = next(n for n in nodes if n[1] == "sft" and n[0] == "sft")
        sft_record = json.loads((sft[3] / "record.json").read_text())
        sft_direct = direct(
            "sft", model_dir, sft[3] / "data" / "chat.jsonl", sft_record["config"], env
        )
        base_eval = next(n for n in nodes if n[0] == "eval[base]")
        job_dir = base_eval[3] / "generate"
        generation = json.loads((job_dir / "job.json").read_text())["generation"]
        eval_direct = direct("generate", model_dir, job_dir / "prompts.jsonl", generation, env)
        eval_ours = rerun_job(job_dir, env)
        print("\n  same work, honly vs TRL/transformers directly:")
        print(f"  {'work':<22} {'honly s':>8} {'direct s':>9} {'ratio':>6}")
        for name, ours, theirs in (
            ("sft", sft[2], sft_direct),
            ("eval[base] generation", eval_ours, eval_direct),
        ):
            print(f"  {name:<22} {ours:>8.1f} {theirs:>9.1f} {ours / theirs:>6.2f}")


if __name__ == "__main__":
    main()
