"""`honly env`: the pinned per-tool environments GPU stages run in.

Axolotl, OpenRLHF and vLLM pin conflicting versions of transformers, torch and Ray, so each
gets its own environment, named in the profile (`envs.<backend>.python`). `create` builds
one with the pins honly compiles for; `check` asks each environment of a profile what it
holds and compares that with the pins, so a wrong environment is found before a GPU job
starts rather than an hour into it.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

# package → the version honly's compilers were written and checked against
PINS = {
    "axolotl": {"axolotl": "0.21.0", "transformers": "5.20.1", "mlflow": "3.17.2"},
    "openrlhf": {"openrlhf": "0.11.2", "vllm": "0.29.0", "ray": "2.55.0", "torch": "2.13.0"},
    "vllm": {"vllm": "0.33.0", "lm_eval": "0.4.13", "mlflow": "3.17.2"},
}

# profile backend → (environment name for `create`, Python, pip steps in order)
RECIPES = {
    "axolotl": (
        "sft",
        "python3.12",
        [["axolotl[deepspeed]==0.21.0", "mlflow==3.17.2"]],
    ),
    "openrlhf": (
        "rl",
        "python3.11",
        [
            ["torch==2.13.0"],
            ["openrlhf[vllm]==0.11.2", "mlflow==3.17.2"],
            ["--no-build-isolation", "flash-attn==2.8.3"],
        ],
    ),
    "vllm": (
        "eval",
        "python3.11",
        [["vllm==0.33.0", "lm-eval[hf,vllm]==0.4.13", "mlflow==3.17.2"]],
    ),
}
NAMES = {name: backend for backend, (name, _, _) in RECIPES.items()}

PROBE = (
    "import json, sys\n"
    "from importlib import metadata\n"
    "found = {}\n"
    "for name in sys.argv[1:]:\n"
    "    try:\n"
    "        found[name] = metadata.version(name.replace('_', '-'))\n"
    "    except metadata.PackageNotFoundError:\n"
    "        found[name] = None\n"
    "print(json.dumps({'python': sys.version.split()[0], 'packages': found}))\n"
)


@dataclass(frozen=True)
class EnvReport:
    backend: str
    python: str
    python_version: str | None
    packages: dict[str, str | None]
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None and all(
            self.packages.get(name) == version for name, version in PINS[self.backend].items()
        )


def check_env(backend: str, python: str) -> EnvReport:
    """What the environment at `python` holds, compared with honly's pins for `backend`."""
    python = os.path.expanduser(python)
    if not Path(python).exists():
        return EnvReport(backend, python, None, {}, "interpreter not found")
    try:
        done = subprocess.run(
            [python, "-c", PROBE, *PINS[backend]], capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            return EnvReport(backend, python, None, {}, done.stderr.strip()[-300:] or "failed")
        found = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as error:
        return EnvReport(backend, python, None, {}, f"cannot run it: {error}")
    return EnvReport(backend, python, found["python"], found["packages"])


def create_commands(name: str, prefix: Path) -> list[list[str]]:
    """The commands that build environment `name` (sft, rl, eval) under `prefix`."""
    _, python, steps = RECIPES[NAMES[name]]
    folder = prefix / name
    pip = [str(folder / "bin" / "python"), "-m", "pip", "install"]
    return [
        [python, "-m", "venv", str(folder)],
        [*pip, "--upgrade", "pip"],
        *[[*pip, *step] for step in steps],
    ]
