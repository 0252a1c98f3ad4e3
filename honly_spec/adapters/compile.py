"""Compile every GPU-backend stage of a planned spec into its native job.

The context of a stage's job comes from the plan: its materialized data files and output
directory are store entries (`<store>/<kind>/<key[:12]>/`), and the model it starts from is
the base model or its parent stage's output. GPU tools hand a full model from stage to
stage: a LoRA stage's job ends by merging its adapter (`<output>/model/merged`), and the
next stage starts from that.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from honly_spec.adapters import axolotl, openrlhf
from honly_spec.adapters.native import CompileContext, NativeJob, Resources
from honly_spec.materialize import stage_outputs
from honly_spec.plan import Graph, StageNode

COMPILERS: dict[str, Callable[[dict[str, Any], CompileContext], NativeJob]] = {
    "axolotl": axolotl.compile_stage,
    "openrlhf": openrlhf.compile_stage,
}


def entry(store_root: Path, stage: StageNode) -> Path:
    return store_root / stage.kind / stage.key[:12]


def base_model(graph: Graph, store_root: Path) -> str:
    base = graph.ctx.data["model"]["base"]
    if base.startswith("embedded:"):
        return str(store_root / "model" / graph.base_key[:12] / "weights")
    return base


def start_model(graph: Graph, stage: StageNode, store_root: Path) -> str:
    """The full model a GPU stage starts from: the base, or its parent's output (merged
    when the parent trained a LoRA adapter)."""
    if stage.after is None:
        return base_model(graph, store_root)
    parent = graph.stage(stage.after)
    model = entry(store_root, parent) / "model"
    return str(model / "merged" if parent.config.get("lora") else model)


def native_jobs(
    graph: Graph,
    store_root: Path,
    resources: Resources,
    tracking_uri: str | None = None,
    experiment: str | None = None,
) -> dict[str, NativeJob]:
    """Stage name → native job, for every stage whose backend is a GPU tool."""
    jobs = {}
    sources = graph.ctx.data["data"]
    for stage in graph.stages:
        if stage.backend not in COMPILERS:
            continue
        folder = entry(store_root, stage)
        files = stage_outputs(stage.config, sources)
        ctx = CompileContext(
            stage_name=stage.name,
            seed=stage.inputs["config"]["seed"],
            model=start_model(graph, stage, store_root),
            data={Path(name).stem: str(folder / "data" / name) for name in files},
            output_dir=str(folder),
            resources=resources,
            tracking_uri=tracking_uri,
            experiment=experiment,
        )
        jobs[stage.name] = COMPILERS[stage.backend](stage.config, ctx)
    return jobs
