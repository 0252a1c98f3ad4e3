"""The plan directory `honly plan` writes (plan.json, the resolved spec, per-node key
inputs, each GPU stage's compiled job) and the plan table it prints."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from honly_spec.evals.capability import (
    CAPABILITY,
    tasks_of,
    write_task_dir,
)
from honly_spec.plan.decide import Decision
from honly_spec.plan.graph import BASE, Graph, eval_node_name
from honly_spec.spec.errors import Diagnostic, Pos, SpecError
from honly_spec.spec.loader import display_path
from honly_spec.store.store import write_json


def plan_table(graph: Graph, decisions: dict[str, Decision]) -> list[dict[str, Any]]:
    """One row per node, as printed by `honly plan` and written to plan.json."""
    rows = []
    for stage in graph.stages:
        rows.append(
            {
                "node": stage.name,
                "kind": stage.kind,
                "backend": stage.backend,
                "starts_from": "-" if stage.kind == "generate" else stage.after or BASE,
                "key": stage.key,
                "status": decisions[stage.name].status,
                "reasons": decisions[stage.name].reasons,
                "rows": stage.rows,
            }
        )
    for node in graph.evals:
        name = eval_node_name(node.checkpoint)
        rows.append(
            {
                "node": name,
                "kind": "eval",
                "backend": "-",
                "starts_from": node.checkpoint,
                "key": node.key,
                "status": decisions[name].status,
                "reasons": decisions[name].reasons,
                "rows": {},
                "suites": sorted(node.suite_keys),
            }
        )
    return rows


PlannedGraph = tuple[Graph, dict[str, Decision]]


def yaml_text(data: Any) -> str:
    """A resolved spec as YAML, keys in their written order."""
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(data, Dumper=dumper, sort_keys=False, allow_unicode=True)


NativeCompiler = Callable[[Graph], dict[str, Any]]  # stage name → adapters.native.NativeJob


def _write_graph(
    graph: Graph, decisions: dict[str, Decision], folder: Path, native: NativeCompiler | None
) -> None:
    write_json(
        folder / "plan.json",
        {
            "spec": graph.name,
            "spec_file": str(graph.ctx.spec.file.resolve()),
            "spec_hash": graph.spec_hash,
            "base_key": graph.base_key,
            "nodes": plan_table(graph, decisions),
        },
    )
    (folder / "spec.resolved.yaml").write_text(yaml_text(graph.ctx.data), encoding="utf-8")
    for stage in graph.stages:
        write_json(
            folder / "stages" / f"{stage.name}.json",
            {
                "key": stage.key,
                "config": stage.config,
                "rows": stage.rows,
                "key_inputs": stage.inputs,
            },
        )
    for node in graph.evals:
        write_json(
            folder / "evals" / f"{node.checkpoint}.json",
            {"key": node.key, "suite_keys": node.suite_keys, "key_inputs": node.inputs},
        )
    for name, job in (native(graph) if native else {}).items():
        job.write(folder / "stages" / name)
    capability = ((graph.ctx.data.get("eval") or {}).get("suites") or {}).get(CAPABILITY)
    if capability is not None:  # what a run hands to lm_eval.simple_evaluate
        builtin = write_task_dir(capability, folder / "lm_eval_tasks")
        write_json(
            folder / "lm_eval_tasks" / "simple_evaluate.json",
            {
                "tasks": tasks_of(capability),
                "limit": capability.get("limit"),
                "num_fewshot": capability.get("num_fewshot"),
                "include_defaults": builtin,
                "apply_chat_template": True,
                "log_samples": True,
            },
        )


def write_plan(
    plans: list[PlannedGraph], out_dir: Path, native: NativeCompiler | None = None
) -> Path:
    """Write the plan directory, replacing any earlier one atomically: `plan.json`, the
    resolved spec and one JSON per stage and eval (resolved config and key inputs), and with
    `native` each GPU stage's compiled job under `stages/<name>/` (files and `command.sh`,
    paths pointing into the store where `honly-run` puts them). A matrix
    spec gets one such folder per cell (`seed-0/fraction-1.0/`) and a `matrix.json` index."""
    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and not _is_plan_dir(out_dir):
        what = "a directory that is not a plan" if out_dir.is_dir() else "not a directory"
        raise SpecError(
            [
                Diagnostic(
                    Pos(f"--out {display_path(out_dir)}"),
                    (),
                    f"{what}; honly replaces only its own plan directories: choose "
                    "a new or empty path",
                )
            ]
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        if len(plans) == 1 and plans[0][0].ctx.spec.cell is None:
            _write_graph(*plans[0], tmp, native)
        else:
            cells = []
            for graph, decisions in plans:
                folder = graph.ctx.spec.cell.folder
                _write_graph(graph, decisions, tmp / folder, native)
                cells.append({"cell": graph.name, "folder": folder, "spec_hash": graph.spec_hash})
            write_json(tmp / "matrix.json", {"cells": cells, "distinct": distinct_nodes(plans)})
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _is_plan_dir(path: Path) -> bool:
    """An existing directory honly may replace: empty, or one of its own plans."""
    return path.is_dir() and (
        not any(path.iterdir())
        or (path / "plan.json").is_file()
        or (path / "matrix.json").is_file()
    )


def distinct_nodes(plans: list[PlannedGraph]) -> dict[str, int]:
    """Node runs across all cells vs distinct keys among them (what the store would build)."""
    stage_keys = [s.key for graph, _ in plans for s in graph.stages]
    eval_keys = [e.key for graph, _ in plans for e in graph.evals]
    return {
        "stage_runs": len(stage_keys),
        "distinct_stages": len(set(stage_keys)),
        "eval_runs": len(eval_keys),
        "distinct_evals": len(set(eval_keys)),
    }
