"""Run a compiled native job in its tool's environment.

The environment is the profile's `envs.<backend>.python`: its `bin/` comes first on PATH,
and the job's commands that name a tool (`axolotl`, `deepspeed`, `ray`, `python`) resolve
there. Commands run in the job's folder with the log appended to a file in the store.
OpenRLHF's Ray runs (`train_ppo_ray`) are submitted as Ray jobs: to the profile's cluster,
or to a head started on 127.0.0.1 for this run and stopped after it. A LoRA stage's merge
command runs after training, in the same environment.
"""

from __future__ import annotations

import collections
import os
import subprocess
import time
from pathlib import Path

from honly_spec.adapters.launch import StageFailed, run_tool
from honly_spec.adapters.native import NativeJob, Resources
from honly_spec.adapters.ray_jobs import RayJobs, start_local_head
from honly_spec.secrets import redact

RAY_MODULES = ("openrlhf.cli.train_ppo_ray",)


def resolve(command: list[str], python: str) -> list[str]:
    """`python` and tool names in the environment's `bin/`; anything else as written."""
    head, *rest = command
    if head == "python":
        return [python, *rest]
    candidate = Path(python).parent / head
    return [str(candidate) if candidate.exists() else head, *rest]


def run_native(
    what: str,
    job: NativeJob,
    folder: Path,
    python: str,
    log: Path,
    resources: Resources,
    env: dict[str, str],
    timeout_s: float | None = None,
) -> None:
    """Write the job's files into `folder`, then run it (and its follow-up commands), each
    local process stopped after `timeout_s` (the profile's `stage_timeout_s`)."""
    job.write(folder)
    bin_dir = str(Path(python).parent)
    full_env = {**job.env, **env, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    if any(module in job.argv for module in RAY_MODULES):
        # the cluster's own PATH stays: commands are absolute paths into the environment
        _run_on_ray(what, resolve(job.argv, python), python, log, resources, {**job.env, **env})
    else:
        run_tool(what, resolve(job.argv, python), log, env=full_env, cwd=folder,
                 timeout_s=timeout_s)  # fmt: skip
    for command in job.then:
        run_tool(f"{what} ({command[0]} {command[1]})", resolve(command, python), log,
                 env=full_env, cwd=folder, timeout_s=timeout_s)  # fmt: skip


def _run_on_ray(
    what: str,
    command: list[str],
    python: str,
    log: Path,
    resources: Resources,
    env: dict[str, str],
) -> None:
    ray = str(Path(python).parent / "ray")
    log.parent.mkdir(parents=True, exist_ok=True)
    address, started = resources.ray_address, False
    if address is None:
        address, started = start_local_head(ray), True
    tail: collections.deque[str] = collections.deque(maxlen=15)

    def output(text: str) -> None:
        text = redact(text)
        with log.open("a", encoding="utf-8") as sink:
            sink.write(text)
        tail.extend(text.splitlines())

    try:
        client = RayJobs(address)
        submission = client.submit(
            command, f"honly-{Path(log).stem}-{int(time.time())}", env, {"honly": what}
        )
        output(f"$ ray job {submission} at {address}: {' '.join(command)}\n")
        status = client.wait(submission, on_output=output)
    finally:
        if started:
            subprocess.run([ray, "stop"], capture_output=True)
    if status["status"] != "SUCCEEDED":
        message = status.get("message") or status["status"]
        raise StageFailed(f"{what} (Ray job: {message})", 1, log, list(tail))
