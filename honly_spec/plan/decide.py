"""Decide what a run would do with each node of a keyed graph: HIT (stored), MISS, STALE
(with the reasons, in the user's terms), FORCE or SKIP, by comparing its key with the store
and with the ref the last run of the same spec left."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from honly_spec.evals.sets import (
    SHIPPED_SETS,
)
from honly_spec.plan.graph import BASE, Graph, eval_node_name
from honly_spec.spec.paths import MISSING, SpecPath, diff_trees, format_path
from honly_spec.store.store import Store


@dataclass
class Decision:
    """What a run would do with one node: HIT (stored), MISS, STALE (with reasons), FORCE or
    SKIP (left out by --only)."""

    status: str
    reasons: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.status} ({'; '.join(self.reasons)})" if self.reasons else self.status


def explain_change(
    stage: str,
    old: dict[str, Any],
    new: dict[str, Any],
    old_after: str | None,
    new_after: str | None,
) -> list[str]:
    """Why a stage's key inputs changed, in the user's terms (spec paths, upstream stages).
    `old_after`/`new_after` name the stages it starts from (names are not key inputs).

    Used by `plan` (STALE reasons) and `diff` (why a stage re-runs)."""
    reasons: list[str] = []
    for path, before, after in diff_trees(old, new):
        if path[0] == "start":
            reason = _start_reason(
                stage, old.get("start", {}), new.get("start", {}), old_after, new_after
            )
        else:
            reason = _stage_reason(stage, path, before, after, old, new)
        if reason not in reasons:
            reasons.append(reason)
    return reasons


def _stage_reason(
    stage: str, path: SpecPath, before: Any, after: Any, old: dict[str, Any], new: dict[str, Any]
) -> str:
    head = path[0]
    if head == "format":
        return f"honly's stage format changed ({old.get('format')} → {new.get('format')})"
    if head == "backend":
        return f"backend {old['backend'].get('tool')} → {new['backend'].get('tool')}"
    if head == "config":
        return (
            "seed"
            if path[1] == "seed"
            else _with_change(("stages", stage, *path[1:]), before, after)
        )
    if head == "data":
        return _data_reason(path, before, after)
    if head in ("constitution", "universe"):
        return f"{head} (contents changed)"
    if head == "templates":
        return f"honly's generation prompts changed ({old.get(head)} → {new.get(head)})"
    if head == "student" and old.get(head) and new.get(head):
        return "model (the student that writes rejected answers)"
    if head == "student":
        return f"stages.{stage}.outputs.character_answers.pairs"
    return _with_change(("stages", stage, *path), before, after)


def _start_reason(
    stage: str,
    old: dict[str, Any],
    new: dict[str, Any],
    old_after: str | None,
    new_after: str | None,
) -> str:
    if "model" in old and "model" in new:
        return "model"
    if "key" in old and "key" in new and old_after == new_after:
        return f"upstream {new_after} re-runs"
    return f"stages.{stage}.after ({old_after or BASE} → {new_after or BASE})"


def _with_change(path: SpecPath, before: Any, after: Any) -> str:
    """`a.b` plus ` added` / ` removed` when one side is absent."""
    suffix = " added" if before is MISSING else " removed" if after is MISSING else ""
    return format_path(path) + suffix


def _data_reason(path: SpecPath, before: Any, after: Any) -> str:
    if len(path) < 3:
        return _with_change(path, before, after)
    if path[2] == "generated":
        return f"data.{path[1]} (its generate stage re-runs)"
    return f"data.{path[1]} ({'contents' if path[2] == 'sha256' else 'definition'} changed)"


def eval_change(checkpoint: str, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Why an eval node's inputs (suite name → suite key inputs) changed."""
    reasons: list[str] = []
    for suite in sorted(old.keys() | new.keys()):
        if suite not in old or suite not in new:
            found = [f"eval.suites.{suite} {'added' if suite not in old else 'removed'}"]
        else:
            found = [
                _eval_reason(checkpoint, suite, path, before, after)
                for path, before, after in diff_trees(old[suite], new[suite])
            ]
        reasons.extend(r for r in found if r not in reasons)
    return reasons


def _eval_reason(checkpoint: str, suite: str, path: SpecPath, before: Any, after: Any) -> str:
    head = path[0]
    if head == "checkpoint":
        return f"checkpoint {checkpoint} re-runs"
    if head in ("generation", "judge"):
        return _with_change(("eval", *path), before, after)
    if head == "config":
        return _with_change(("eval", "suites", suite, *path[1:]), before, after)
    if head == "data" and len(path) > 1 and path[1] in SHIPPED_SETS:
        change = "added" if before is MISSING else "removed" if after is MISSING else "contents"
        return f"shipped eval set {path[1]} ({change})"
    if head == "data":
        return _data_reason(path, before, after)
    if head == "constitution":
        return "constitution (contents)"
    if head == "grading":
        return "honly's grading rules or rubric prompts changed"
    if head == "seed":
        return _with_change(("seed",), before, after)
    return f"honly's eval format changed ({head})"


def decide(
    graph: Graph,
    store: Store,
    force: set[str] | frozenset[str] = frozenset(),
    only: set[str] | frozenset[str] | None = None,
) -> dict[str, Decision]:
    """HIT / MISS / STALE(reasons) / FORCE / SKIP for every stage and eval node."""
    out: dict[str, Decision] = {}
    for stage in graph.stages:
        out[stage.name] = _decide_one(
            store,
            graph.name,
            stage.name,
            stage.kind,
            stage.key,
            stage.inputs,
            force,
            only,
            lambda ref, s=stage: explain_change(
                s.name, ref["inputs"], s.inputs, ref.get("after"), s.after
            ),
        )
    for node in graph.evals:
        name = eval_node_name(node.checkpoint)
        out[name] = _decide_one(
            store,
            graph.name,
            name,
            "eval",
            node.key,
            node.inputs,
            force,
            only,
            lambda ref, n=node: eval_change(n.checkpoint, ref["inputs"], n.inputs),
        )
    return out


def _decide_one(
    store: Store,
    spec_name: str,
    name: str,
    kind: str,
    key: str,
    inputs: dict[str, Any],
    force: set[str] | frozenset[str],
    only: set[str] | frozenset[str] | None,
    why: Any,
) -> Decision:
    if only is not None and name not in only:
        return Decision("SKIP")
    if name in force:
        return Decision("FORCE")
    if store.lookup(kind, key) is not None:
        return Decision("HIT")
    ref = store.read_ref(spec_name, name)
    if ref and ref.get("key") != key and isinstance(ref.get("inputs"), dict):
        return Decision("STALE", why(ref))
    return Decision("MISS")
