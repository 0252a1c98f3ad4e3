"""Compile a checked spec into a graph of keyed stages and evals, decide what is stored,
and write the plan directory.

`compile_graph` is pure (no store, no profile): the same spec gives the same keys anywhere.
`decide` compares keys with the store. `honly plan`, `honly-run --dry-run` and `honly diff`
all go through these functions, so what a plan shows is what a run will do.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from honly_spec.adapters import BACKENDS
from honly_spec.data.generate import TEMPLATE_VERSION
from honly_spec.data.mix import mix_field, realize
from honly_spec.data.sources import SourceInfo, sha256_file
from honly_spec.evals.capability import (
    CAPABILITY,
    CAPABILITY_TOOL,
    capability_task_digests,
    tasks_of,
    write_task_dir,
)
from honly_spec.evals.sets import (
    JUDGED_SUITES,
    SHIPPED_SETS,
    grading_identity,
    shipped_source,
    suite_sets,
)
from honly_spec.spec.errors import Diagnostic, Pos, SpecError
from honly_spec.spec.loader import display_path
from honly_spec.spec.paths import MISSING, SpecPath, diff_trees, format_path
from honly_spec.spec.rules import EMBEDDED_MODELS, Context
from honly_spec.spec.schema import deref, spec_schema, strip_runtime
from honly_spec.store.keys import EVAL_FORMAT, STAGE_FORMAT, digest
from honly_spec.store.store import Store, write_json

BASE = "base"
NOT_KEYED = ("kind", "backend", "after", "seed", "enabled")


def eval_node_name(checkpoint: str) -> str:
    return f"eval[{checkpoint}]"


@dataclass
class StageNode:
    name: str
    kind: str
    backend: str
    after: str | None
    config: dict[str, Any]
    inputs: dict[str, Any]
    key: str
    rows: dict[str, int | None]


@dataclass
class EvalNode:
    checkpoint: str
    inputs: dict[str, Any]
    suite_keys: dict[str, str]
    key: str


@dataclass
class Graph:
    ctx: Context
    stages: list[StageNode]
    evals: list[EvalNode]
    base_key: str
    spec_hash: str

    @property
    def name(self) -> str:
        """Spec name, or matrix cell name: labels refs in the store and plan directories."""
        return self.ctx.spec.run_name

    def stage(self, name: str) -> StageNode:
        return next(s for s in self.stages if s.name == name)

    @property
    def disabled(self) -> list[str]:
        """Stages the spec (or this cell) turns off with `enabled: false`."""
        return [n for n, s in self.ctx.stages().items() if s.get("enabled") is False]

    def node_names(self) -> list[str]:
        """Stages in run order, then eval nodes."""
        return [s.name for s in self.stages] + [eval_node_name(e.checkpoint) for e in self.evals]


@dataclass
class Decision:
    """What a run would do with one node: HIT (stored), MISS, STALE (with reasons), FORCE or
    SKIP (left out by --only)."""

    status: str
    reasons: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.status} ({'; '.join(self.reasons)})" if self.reasons else self.status


def model_identity(model: dict[str, Any]) -> dict[str, Any]:
    """What identifies the base model in keys (never a machine-specific path)."""
    base = model["base"]
    ident: dict[str, Any] = {"chat_template": model.get("chat_template")}
    if base.startswith("embedded:"):
        name = base.removeprefix("embedded:")
        ident.update(embedded=name, package=EMBEDDED_MODELS[name])
    elif base.startswith("/"):
        ident.update(local=_directory_digest(Path(base)))
    else:
        ident.update(hub=base, revision=model.get("revision"))
    return ident


def _directory_digest(root: Path) -> str:
    """Digest of a local model directory: every file's relative path and size, plus the full
    content of its small JSON files (config, tokenizer). Hashing all weights on every plan
    would cost minutes for large models."""
    listing = []
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = file.relative_to(root).as_posix()
        entry: dict[str, Any] = {"path": rel, "size": file.stat().st_size}
        if file.suffix == ".json" and entry["size"] < 50_000_000:
            entry["sha256"] = sha256_file(file)
        listing.append(entry)
    return digest(listing)


def stage_needs(stage: dict[str, Any], sources: dict[str, Any]) -> list[str]:
    """The stages that must finish first: the one it starts from, and the generate stages
    whose outputs its mix reads."""
    needs = [stage["after"]] if stage.get("after") else []
    for name in stage.get(mix_field(stage)) or {}:
        origin = (sources.get(name) or {}).get("from")
        if origin:
            needs.append(origin.split(".", 1)[0])
    return needs


def _topological(stages: dict[str, dict[str, Any]], sources: dict[str, Any]) -> list[str]:
    """Stage names, every stage after those it needs, ties in declaration order."""
    order: list[str] = []
    while len(order) < len(stages):
        ready = [
            name
            for name, stage in stages.items()
            if name not in order and all(n in order for n in stage_needs(stage, sources))
        ]
        if not ready:
            raise ValueError("stage graph has a cycle")  # check_spec reports it first
        order.append(ready[0])
    return order


def active_stages(stages: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The enabled stages, each `after` moved past disabled stages to where they would have
    started. Keys hold only the parent's key, so a stage after a disabled one gets the same
    key as in a spec that never had it: SDF on/off cells share the no-SDF prefix."""

    def start(name: str | None) -> str | None:
        while name is not None and stages[name].get("enabled") is False:
            name = stages[name].get("after")
        return name

    return {
        name: {**stage, "after": start(stage.get("after"))} if stage.get("after") else stage
        for name, stage in stages.items()
        if stage.get("enabled") is not False
    }


def _source_identity(ctx: Context, name: str, keys: dict[str, str] | None = None) -> dict[str, Any]:
    """A file source by its digest; a generated source by its stage's key and output."""
    source = ctx.data["data"][name]
    if "from" in source:
        stage, output = source["from"].split(".", 1)
        return {
            "format": source["format"],
            "generated": {"key": (keys or {})[stage], "output": output},
        }
    info = ctx.source(name)
    assert isinstance(info, SourceInfo), "check_spec reports unreadable sources"
    return {"format": source["format"], "fields": source.get("fields", {}), **info.identity}


def compile_graph(ctx: Context) -> Graph:
    """Key every stage and eval of a checked spec."""
    data = ctx.data
    schema = spec_schema()
    stage_schema = deref(schema, schema["$defs"]["stage"])
    stages = active_stages(ctx.stages())
    base_key = digest({"format": STAGE_FORMAT, "model": model_identity(data["model"])})
    keys: dict[str, str] = {BASE: base_key}
    nodes: list[StageNode] = []
    sources_declared = data.get("data") or {}
    for name in _topological(stages, sources_declared):
        stage = stages[name]
        if stage["kind"] == "generate":
            inputs = generate_inputs(ctx, stage)
            keys[name] = digest(inputs)
            nodes.append(StageNode(name, "generate", "local", None, stage, inputs, keys[name], {}))
            continue
        semantic = strip_runtime(schema, stage_schema, stage)
        config = {k: v for k, v in semantic.items() if k not in NOT_KEYED}
        config["seed"] = stage.get("seed", data["seed"])
        entries = stage.get(mix_field(stage)) or {}
        sources = {src: _source_identity(ctx, src, keys) for src in entries}
        after = stage.get("after")
        # Only the parent's key, not its name: renaming a stage re-runs nothing.
        start = {"key": keys[after]} if after else {"model": model_identity(data["model"])}
        backend = BACKENDS[stage["backend"]]
        inputs = {
            "format": STAGE_FORMAT,
            "kind": stage["kind"],
            "backend": {"name": backend.name, "tool": backend.tool},
            "config": config,
            "data": sources,
            "start": start,
        }
        key = digest(inputs)
        keys[name] = key
        sizes = {}
        for src in entries:
            if "from" in sources_declared[src]:
                sizes[src] = None  # known once the generate stage has run
                continue
            info = ctx.source(src)
            sizes[src] = info.rows if isinstance(info, SourceInfo) else None
        rows, _ = realize(entries, sizes, stage.get("total_rows"))
        nodes.append(
            StageNode(name, stage["kind"], stage["backend"], after, stage, inputs, key, rows)
        )
    evals = _compile_evals(ctx, keys, [n.name for n in nodes if n.kind != "generate"])
    spec_hash = digest(
        {
            "name": data["name"],
            "stages": {n.name: n.key for n in nodes},
            "evals": {e.checkpoint: e.key for e in evals},
        }
    )
    return Graph(ctx, nodes, evals, base_key, spec_hash)


def generate_inputs(ctx: Context, stage: dict[str, Any]) -> dict[str, Any]:
    """What a generate stage's output depends on: the generator's identity (not its
    endpoint, key or limits), outputs, filters, seed, the prompt templates' version and the
    content of the constitution and universe files (not their paths)."""
    data = ctx.data
    schema = spec_schema()
    semantic = strip_runtime(schema, deref(schema, schema["$defs"]["generate_stage"]), stage)
    constitution = stage.get("constitution") or data.get("constitution")
    universe = stage.get("universe") or constitution
    generator = dict(semantic.get("generator") or {})
    if generator.get("provider", "local") == "local" and "model" not in generator:
        generator["model"] = model_identity(data["model"])
    elif generator.get("provider", "local") == "local":
        generator["model"] = model_identity({"base": generator["model"]})
    outputs = semantic["outputs"]
    pairs = (outputs.get("character_answers") or {}).get("pairs")
    return {
        "format": STAGE_FORMAT,
        "kind": "generate",
        "templates": TEMPLATE_VERSION,
        "generator": generator,
        "student": model_identity(data["model"]) if pairs else None,
        "outputs": outputs,
        "filters": semantic.get("filters") or {},
        "seed": stage.get("seed", data["seed"]),
        # each file only where an output reads it
        "constitution": sha256_file(Path(constitution))
        if constitution and "character_questions" in outputs
        else None,
        "universe": sha256_file(Path(universe))
        if universe and "sdf_documents" in outputs
        else None,
    }


def _compile_evals(ctx: Context, keys: dict[str, str], order: list[str]) -> list[EvalNode]:
    data = ctx.data
    if "eval" not in data:
        return []
    schema = spec_schema()
    semantic = strip_runtime(schema, deref(schema, schema["$defs"]["eval"]), data["eval"])
    generation = dict(semantic.get("generation") or {})
    generation.setdefault("seed", data["seed"])
    judge = semantic.get("judge") or {}
    constitution = data.get("constitution")
    constitution_digest = sha256_file(Path(constitution)) if constitution else None
    out = []
    checkpoints = semantic.get("checkpoints") or [BASE, *order]
    for checkpoint in [c for c in checkpoints if c == BASE or c in order]:  # not disabled
        suite_inputs = {}
        for suite, config in (semantic.get("suites") or {}).items():
            inputs: dict[str, Any] = {
                "format": EVAL_FORMAT,
                "checkpoint": {"key": keys[checkpoint]},
                "suite": suite,
                "config": config,
            }
            if suite == CAPABILITY:
                inputs["tool"] = CAPABILITY_TOOL
                inputs["tasks"] = capability_task_digests(config)
                inputs["seed"] = data["seed"]  # lm-eval's sampling and few-shot seeds
            else:
                inputs["generation"] = generation
                inputs["data"] = {s: _eval_set_identity(ctx, s) for s in suite_sets(suite, config)}
                inputs["grading"] = grading_identity()
            if suite in JUDGED_SUITES:
                inputs["judge"] = judge
            if suite == "character" and constitution_digest:
                inputs["constitution"] = constitution_digest
            suite_inputs[suite] = inputs
        suite_keys = {s: digest(i) for s, i in suite_inputs.items()}
        out.append(EvalNode(checkpoint, suite_inputs, suite_keys, digest(suite_keys)))
    return out


def _eval_set_identity(ctx: Context, name: str) -> dict[str, Any]:
    if name in (ctx.data.get("data") or {}):
        return _source_identity(ctx, name)
    return {"shipped": name, "sha256": sha256_file(Path(shipped_source(name)["path"]))}


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
