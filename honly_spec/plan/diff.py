"""`honly diff A B`: what changed between two specs, and which stages and evals that re-runs.

Changed paths come from the resolved specs (after `extends`, overrides and defaults), each
with the file position that set the new (or old) value. Stage verdicts come from comparing
stage keys, with reasons from the same `explain_change` the planner uses for STALE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from honly_spec.plan.decide import eval_change, explain_change
from honly_spec.plan.graph import Graph, eval_node_name
from honly_spec.spec.errors import Pos, nearest_pos
from honly_spec.spec.loader import LoadedSpec
from honly_spec.spec.paths import MISSING, SpecPath, diff_trees
from honly_spec.spec.schema import marked_paths, matches, spec_schema


@dataclass
class PathChange:
    path: SpecPath
    old: Any
    new: Any
    where: Pos
    runtime: bool

    @property
    def sign(self) -> str:
        return "+" if self.old is MISSING else "-" if self.new is MISSING else "~"


@dataclass
class NodeVerdict:
    node: str
    verdict: str  # reused | re-run | added | removed
    reasons: list[str]


def spec_changes(a: LoadedSpec, b: LoadedSpec) -> list[PathChange]:
    """Changed paths of the resolved specs, each with the position that set it."""
    runtime = marked_paths(spec_schema(), "x-honly-runtime")
    return [
        PathChange(
            path,
            old,
            new,
            b.pos(path) if new is not MISSING else _removed_at(a, b, path),
            any(matches(p, path[: len(p)]) for p in runtime),
        )
        for path, old, new in diff_trees(a.data, b.data)
    ]


def _removed_at(a: LoadedSpec, b: LoadedSpec, path: SpecPath) -> Pos:
    """Where B dropped a path: its `!delete` marker if it has one, else where A set it."""
    marker = nearest_pos(b.deleted, path, Pos(""))
    return marker if marker.file else a.pos(path)


def node_verdicts(a: Graph, b: Graph) -> list[NodeVerdict]:
    """Per stage and eval of B (then those only in A): reused, re-run (why), added, removed."""
    out: list[NodeVerdict] = []
    old_stages = {s.name: s for s in a.stages}
    for stage in b.stages:
        before = old_stages.get(stage.name)
        if before is None:
            out.append(NodeVerdict(stage.name, "added", []))
        elif before.key == stage.key:
            out.append(NodeVerdict(stage.name, "reused", []))
        else:
            out.append(
                NodeVerdict(
                    stage.name,
                    "re-run",
                    explain_change(
                        stage.name, before.inputs, stage.inputs, before.after, stage.after
                    ),
                )
            )
    new_names = {s.name for s in b.stages}
    out.extend(NodeVerdict(s.name, "removed", []) for s in a.stages if s.name not in new_names)
    old_evals = {e.checkpoint: e for e in a.evals}
    for node in b.evals:
        name = eval_node_name(node.checkpoint)
        before = old_evals.get(node.checkpoint)
        if before is None:
            out.append(NodeVerdict(name, "added", []))
        elif before.key == node.key:
            out.append(NodeVerdict(name, "reused", []))
        else:
            out.append(
                NodeVerdict(
                    name, "re-run", eval_change(node.checkpoint, before.inputs, node.inputs)
                )
            )
    new_checkpoints = {e.checkpoint for e in b.evals}
    out.extend(
        NodeVerdict(eval_node_name(e.checkpoint), "removed", [])
        for e in a.evals
        if e.checkpoint not in new_checkpoints
    )
    return out
