"""Compile a checked spec into a graph of keyed stages and evals, decide what is stored,
and write the plan directory.

`compile_graph` is pure (no store, no profile): the same spec gives the same keys anywhere.
`decide` compares keys with the store. `honly plan`, `honly-run --dry-run` and `honly diff`
all go through these functions, so what a plan shows is what a run will do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from honly_spec.adapters import BACKENDS
from honly_spec.data.generate import TEMPLATE_VERSION
from honly_spec.data.mix import mix_field, realize
from honly_spec.data.sources import SourceInfo, sha256_file
from honly_spec.evals.capability import (
    CAPABILITY,
    CAPABILITY_TOOL,
    capability_task_digests,
)
from honly_spec.evals.sets import (
    JUDGED_SUITES,
    grading_identity,
    shipped_source,
    suite_sets,
)
from honly_spec.spec.rules import EMBEDDED_MODELS, Context
from honly_spec.spec.schema import deref, spec_schema, strip_runtime
from honly_spec.store.keys import EVAL_FORMAT, STAGE_FORMAT, digest

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
