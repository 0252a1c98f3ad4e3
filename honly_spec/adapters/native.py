"""What a GPU backend's compiler produces, and what it is given.

A compiler is a pure function `compile(stage, context) -> NativeJob`: the files a tool reads
(an Axolotl YAML, a reward function), the command line that launches it and the environment
it needs. Nothing runs and nothing is written until `NativeJob.write` is called, so `honly
plan` can show every compiled config without a GPU, and golden tests pin them down.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from honly_spec.spec.errors import Diagnostic, Pos, SpecError

# spec lr_scheduler → the transformers scheduler name both tools pass on (`constant` keeps
# the warmup)
SCHEDULERS = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


@dataclass(frozen=True)
class Resources:
    """The machines a stage runs on (from the runtime profile; never part of a key)."""

    nodes: int = 1
    gpus_per_node: int = 0
    launcher: str = "accelerate"
    main_address: str = "127.0.0.1"
    main_port: int = 29500
    node_rank: int = 0
    parallel: dict[str, Any] = field(default_factory=dict)
    rl: dict[str, Any] = field(default_factory=dict)
    ray_address: str | None = None

    @property
    def world_size(self) -> int:
        return self.nodes * max(1, self.gpus_per_node)

    @classmethod
    def from_profile(cls, profile: dict[str, Any]) -> Resources:
        resources = profile.get("resources") or {}
        distributed = profile.get("distributed") or {}
        return cls(
            nodes=resources.get("nodes", 1),
            gpus_per_node=resources.get("gpus_per_node", 0),
            launcher=profile.get("launcher", "accelerate"),
            main_address=distributed.get("main_address", "127.0.0.1"),
            main_port=distributed.get("main_port", 29500),
            node_rank=distributed.get("node_rank", 0),
            parallel=profile.get("parallel") or {},
            rl=profile.get("rl") or {},
            ray_address=(profile.get("ray") or {}).get("address"),
        )


@dataclass(frozen=True)
class CompileContext:
    """Everything outside the stage's own config that its native job depends on. Paths are
    absolute: tools resolve relative paths against their own working directory."""

    stage_name: str
    seed: int
    model: str  # parent weights: a full HF model directory or hub id
    data: dict[str, str]  # materialized files by stem: chat, documents, prompts, preference
    output_dir: str
    resources: Resources
    tracking_uri: str | None = None
    experiment: str | None = None


@dataclass(frozen=True)
class NativeJob:
    """A tool run: `argv` then each command of `then`, in the job's folder, with `env`."""

    tool: str
    argv: list[str]
    files: dict[str, str] = field(default_factory=dict)  # name → content, next to the job
    env: dict[str, str] = field(default_factory=dict)
    then: list[list[str]] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)  # name → symlink target

    def script(self) -> str:
        """A shell script that runs the job by hand from its folder."""
        lines = ["#!/usr/bin/env bash", f"# {self.tool} (compiled by honly)", "set -euo pipefail"]
        lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(self.env.items())]
        lines += [shlex.join(command) for command in (self.argv, *self.then)]
        return "\n".join(lines) + "\n"

    def write(self, folder: Path) -> None:
        """The job's files plus `command.sh`."""
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in self.files.items():
            (folder / name).write_text(content, encoding="utf-8")
        write_links(folder, self.links)
        (folder / "command.sh").write_text(self.script(), encoding="utf-8")


def write_links(folder: Path, links: dict[str, str]) -> None:
    for name, target in links.items():
        link = folder / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(target, target_is_directory=True)


PACKAGE_LINK = "honly_pkg"  # a folder holding only a link to honly_spec, for PYTHONPATH


def package_link() -> dict[str, str]:
    """The link that makes `honly_spec` (and nothing else of honly's environment)
    importable from a tool's environment: put `<folder>/honly_pkg` on its path."""
    package = Path(__file__).resolve().parent.parent
    return {f"{PACKAGE_LINK}/honly_spec": str(package)}


def compile_error(stage: str, path: tuple[str | int, ...], message: str) -> SpecError:
    """A spec that validates but cannot be expressed for this tool (or these resources)."""
    return SpecError([Diagnostic(Pos(f"stage `{stage}`"), ("stages", stage, *path), message)])


def accumulation(stage: str, batch: int, micro: int, devices: int) -> int:
    """Gradient accumulation so that micro × devices × accumulation = the global batch."""
    per_step = micro * devices
    if batch % per_step:
        raise compile_error(
            stage,
            ("train", "batch_size"),
            f"global batch {batch} is not a multiple of micro_batch_size {micro} × "
            f"{devices} device(s); change `train.batch_size` or `train.micro_batch_size`",
        )
    return batch // per_step
