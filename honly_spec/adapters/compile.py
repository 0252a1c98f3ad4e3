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
from honly_spec.adapters.native import CompileContext, NativeJob, Resources, compile_error
from honly_spec.data.materialize import stage_outputs
from honly_spec.plan.graph import Graph, StageNode

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
    if parent.backend not in COMPILERS and parent.config.get("lora"):
        raise compile_error(
            stage.name,
            ("after",),
            f"`{parent.name}` (local backend) stored a LoRA adapter, not a full model; a GPU "
            "stage needs full weights to start from: give it a GPU backend too",
        )
    return produced_model(store_root, parent)


def stage_context(
    graph: Graph,
    stage: StageNode,
    store_root: Path,
    folder: Path,
    resources: Resources,
    tracking_uri: str | None = None,
    experiment: str | None = None,
) -> CompileContext:
    """The compile context of `stage` built in `folder` (its store entry when planning, the
    build directory when running)."""
    files = stage_outputs(stage.config, graph.ctx.data["data"])
    return CompileContext(
        stage_name=stage.name,
        seed=stage.inputs["config"]["seed"],
        model=start_model(graph, stage, store_root),
        data={Path(name).stem: str(folder / "data" / name) for name in files},
        output_dir=str(folder),
        resources=resources,
        tracking_uri=tracking_uri,
        experiment=experiment,
    )


def produced_model(store_root: Path, stage: StageNode) -> str:
    """The full model a GPU stage leaves in the store: a LoRA stage's job ends by merging
    its adapter (Axolotl's merge-lora, OpenRLHF's lora_combiner) into `model/merged`."""
    model = entry(store_root, stage) / "model"
    return str(model / "merged" if stage.config.get("lora") else model)


def native_jobs(
    graph: Graph,
    store_root: Path,
    resources: Resources,
    tracking_uri: str | None = None,
    experiment: str | None = None,
) -> dict[str, NativeJob]:
    """Stage name → native job, for every stage whose backend is a GPU tool."""
    return {
        stage.name: COMPILERS[stage.backend](
            stage.config,
            stage_context(
                graph,
                stage,
                store_root,
                entry(store_root, stage),
                resources,
                tracking_uri,
                experiment,
            ),
        )
        for stage in graph.stages
        if stage.backend in COMPILERS
    }
