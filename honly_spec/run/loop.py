"""`honly-run`: execute a plan — build every node that is not stored, in order, and log it.

For each spec (or matrix cell): the base model is prepared once (the embedded GGUF is
converted into a store entry keyed like the `base` checkpoint), then every stage in `after`
order and every eval. A stored node is reused (its MLflow child run is tagged `cached` and
points at the run that built it); a missing one is built into a temporary directory by the
backend, in a subprocess, and published atomically. A failed node stops the run: the nodes
finished before it stay stored, its MLflow run is marked FAILED, and the message names the
log and its last lines.

Exit status: 0 done, 1 a node failed, 2 a problem in the input, 3 something this version
cannot run yet (a GPU backend, an eval suite still to come).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from honly_spec import __version__
from honly_spec.adapters import BACKENDS
from honly_spec.adapters.compile import COMPILERS, produced_model, stage_context
from honly_spec.adapters.launch import run_tool
from honly_spec.adapters.local.job import (
    WORKER_MODULE,
    Checkpoint,
    compile_generate,
    compile_lm_eval,
    compile_prepare,
    compile_train,
)
from honly_spec.adapters.native import PACKAGE_LINK, Resources, package_link, write_links
from honly_spec.adapters.native_run import run_native
from honly_spec.adapters.openrlhf import TENSORBOARD_DIR
from honly_spec.adapters.tensorboard_bridge import bridge as bridge_tensorboard
from honly_spec.adapters.vllm_generate import compile_vllm_generate, compile_vllm_lm_eval
from honly_spec.data.generate import generate
from honly_spec.data.materialize import materialize_stage
from honly_spec.data.sources import sha256_file
from honly_spec.evals.capability import CAPABILITY, metric_name, tasks_of, write_task_dir
from honly_spec.evals.evaluate import aggregate, generation_requests, score_suite, suite_items
from honly_spec.evals.judges import (
    Completion,
    Judge,
    JudgeCache,
    JudgeConfig,
    JudgeError,
    JudgeStats,
)
from honly_spec.evals.judges.clients import make_client
from honly_spec.evals.sets import JUDGED_SUITES
from honly_spec.evals.suites import Grader
from honly_spec.plan.decide import Decision
from honly_spec.plan.graph import BASE, EvalNode, Graph, StageNode, eval_node_name, stage_needs
from honly_spec.plan.write import plan_table, yaml_text
from honly_spec.run.progress import Display
from honly_spec.run.tracking import Tracker, flat_params, git_state
from honly_spec.spec.errors import Diagnostic, Pos, SpecError
from honly_spec.spec.matrix import value_label
from honly_spec.spec.rules import EMBEDDED_MODELS
from honly_spec.store.keys import digest
from honly_spec.store.store import Store, write_json

VLLM_MODULE = "honly_spec.adapters.vllm_generate"
GENERATE = "generate"
SUITE_KIND = "suite"  # one stored entry per (checkpoint, suite) key
EXIT_FAILED = 1
EXIT_NOT_AVAILABLE = 3


# worker tasks that run data-parallel when the profile asks for several processes
PARALLEL_TASKS = frozenset({"sft", "dpo"})


def launch_prefix(python: str, launcher: str, processes: int) -> list[str]:
    """The launcher command that starts `processes` copies of a module on this machine
    (then `-m MODULE ARGS` follows); the worker reads RANK/WORLD_SIZE from it."""
    if launcher == "accelerate":
        return [
            python,
            "-m",
            "accelerate.commands.launch",
            f"--num_processes={processes}",
            "--num_machines=1",
            "--mixed_precision=no",
            "--dynamo_backend=no",
            "--multi_gpu",  # accelerate's multi-process mode; on CPU the worker picks gloo
            "-m",
        ]
    return [
        python,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
    ]


class NotAvailable(Exception):
    """Something the spec asks for that this version cannot run; the message says what."""


@dataclass
class Runtime:
    """Where and how nodes run (from the profile); never part of a key."""

    store: Store
    python: str
    tracking_uri: str
    display: Display
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    launcher: str = "python"
    profile: dict[str, Any] = field(default_factory=dict)
    processes: int = 1  # data-parallel training processes (torchrun / accelerate)


def check_runnable(graph: Graph, decisions: dict[str, Decision], profile: dict) -> None:
    """Refuse up front what cannot run here, before any node is built."""
    problems = []
    gpus = (profile.get("resources") or {}).get("gpus_per_node", 0)
    for stage in graph.stages:
        to_build = decisions[stage.name].status in ("MISS", "STALE", "FORCE")
        if not to_build or stage.backend == "local":
            continue
        env = (profile.get("envs") or {}).get(stage.backend) or {}
        if not gpus or "python" not in env:
            problems.append(
                f"stage `{stage.name}` uses backend `{stage.backend}`, which runs on GPUs in "
                f"its own environment: use a GPU profile whose `envs.{stage.backend}.python` "
                "names that environment (e.g. --profile profiles/1gpu.yaml), or plan it with "
                "--dry-run"
            )
    todo = [e for e in graph.evals if decisions[eval_node_name(e.checkpoint)].status != "SKIP"]
    judge = (graph.ctx.data.get("eval") or {}).get("judge") or {}
    if todo and judge.get("provider") == "vllm":
        problems.append(
            "the `vllm` judge runs with the GPU backends, which are not part of this version; "
            "serve the judge with `vllm serve` and use `provider: openai` with its `base_url`, "
            "or use `provider: hf`"
        )
    key_env = judge.get("api_key_env")
    if todo and key_env and not os.environ.get(key_env):
        problems.append(f"the judge's API key variable `{key_env}` is not set")
    model = str(judge.get("model", ""))
    if todo and model.startswith("embedded:") and model != graph.ctx.data["model"]["base"]:
        problems.append(
            f"an embedded judge model must be the spec's own base model; `{model}` is not"
        )
    if problems:
        raise NotAvailable("\n".join(problems))


def check_selection(graph: Graph, decisions: dict[str, Decision], store: Store) -> None:
    """`--only` must not leave out an unstored node that a selected node needs."""
    problems = []
    selected = {n for n, d in decisions.items() if d.status != "SKIP"}
    sources = graph.ctx.data.get("data") or {}
    for stage in graph.stages:
        for needed in stage_needs(stage.config, sources) if stage.name in selected else []:
            parent = graph.stage(needed)
            if needed not in selected and store.lookup(parent.kind, parent.key) is None:
                problems.append((stage.name, needed))
    for node in graph.evals:
        name = eval_node_name(node.checkpoint)
        if name in selected and node.checkpoint != BASE and node.checkpoint not in selected:
            stage = graph.stage(node.checkpoint)
            if store.lookup(stage.kind, stage.key) is None:
                problems.append((name, node.checkpoint))
    if problems:
        raise SpecError(
            [
                Diagnostic(
                    Pos(f"--only {who}"),
                    (),
                    f"needs `{what}`, which is not stored and --only leaves out; add it",
                )
                for who, what in problems
            ]
        )


class LocalModelClient:
    """A local transformers model run by the backend's worker, as a batch client for the
    judge machinery (`Judge.complete`): the `hf` judge, and a generate stage's `local`
    teacher and student. Each call is one batched generation job."""

    def __init__(
        self,
        cell: CellRun,
        node: str,
        key: str,
        checkpoint: Checkpoint,
        config: JudgeConfig,
        tmp: Path,
        seed: int = 0,
    ):
        self.cell, self.node, self.key = cell, node, key
        self.checkpoint, self.config, self.tmp, self.seed = checkpoint, config, tmp, seed
        self.rounds = 0

    def complete_batch(self, conversations: list[list[dict[str, str]]]) -> list[Completion]:
        self.rounds += 1
        folder = Path(tempfile.mkdtemp(prefix=f"model-{self.rounds}-", dir=self.tmp))
        with (folder / "prompts.jsonl").open("w", encoding="utf-8") as handle:
            for index, messages in enumerate(conversations):
                handle.write(json.dumps({"id": str(index), "messages": messages}) + "\n")
        settings = {
            "temperature": self.config.temperature,
            "top_p": 1.0,
            "max_new_tokens": self.config.max_tokens,
            "seed": self.seed,
        }
        log = self.cell._log_path(self.node, self.key, f"{self.config.provider}{self.rounds}")
        what = f"{self.node}: {self.config.provider} model"
        vllm = self.cell._vllm_python(self.checkpoint)
        if vllm:  # a GPU profile with a vLLM environment
            job = compile_vllm_generate(
                self.checkpoint.path, list(self.checkpoint.adapters), settings,
                "prompts.jsonl", "answers.jsonl", tensor_parallel=self.cell._tensor_parallel(),
            )  # fmt: skip
            self.cell._run_vllm(what, job, folder, vllm, log)
        else:
            job = compile_generate(
                self.checkpoint, Path("prompts.jsonl"), settings, Path("answers.jsonl"),
                Path("work"),
            )  # fmt: skip
            self.cell._worker(what, self.node, job, folder, log)
        with (folder / "answers.jsonl").open(encoding="utf-8") as handle:
            answers = {row["id"]: row["responses"][0] for row in map(json.loads, handle)}
        shutil.rmtree(folder)  # the answers are cached; the job's log stays in logs/
        return [Completion(answers[str(i)]) for i in range(len(conversations))]


class CellRun:
    """Runs one spec instance (one matrix cell)."""

    def __init__(
        self, graph: Graph, decisions: dict[str, Decision], runtime: Runtime, tracker: Tracker
    ):
        self.graph, self.decisions, self.rt, self.tracker = graph, decisions, runtime, tracker
        self.data = graph.ctx.data
        self.checkpoints: dict[str, Checkpoint] = {}
        self.generated: dict[str, Path] = {}  # generate stage → its store entry
        self.results: dict[str, dict[str, dict[str, float]]] = {}

    # --- shared -------------------------------------------------------------------------

    def _log_path(self, node: str, key: str, part: str = "") -> Path:
        """`<store>/logs/<spec>/<node>[-part]-<key>-<time>.log`: one file per process."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = f"{node}-{part}" if part else node
        return self.rt.store.root / "logs" / self.graph.name / f"{name}-{key[:12]}-{stamp}.log"

    def _worker(self, what: str, node: str, job: dict[str, Any], folder: Path, log: Path) -> dict:
        job_file = folder / "job.json"
        write_json(job_file, job)

        def on_event(event: dict[str, Any]) -> None:
            if event.get("event") == "progress":
                self.rt.display.progress(
                    node, event.get("step", 0), event.get("total"), event.get("what", "")
                )
            elif event.get("event") == "log" and "loss" in event:
                state = self.rt.display.nodes[node]
                self.rt.display.progress(
                    node, state["step"], state["total"], f"loss {event['loss']:.3f}"
                )

        command = [self.rt.python, "-m", WORKER_MODULE, str(job_file)]
        processes = self.rt.processes if job["task"] in PARALLEL_TASKS else 1
        if processes > 1:
            command = [*launch_prefix(self.rt.python, self.rt.launcher, processes), *command[2:]]
        env = {
            "HONLY_THREADS": str(max(1, self.rt.threads // processes)),
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "WANDB_MODE": "disabled",
        }
        if not self._base_is_hub():
            env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
        run_tool(what, command, log, on_event, env, timeout_s=self._timeout())
        return json.loads((folder / job["result"]).read_text(encoding="utf-8"))

    def _base_is_hub(self) -> bool:
        base = self.data["model"]["base"]
        return not base.startswith(("embedded:", "/"))

    def _record(
        self,
        node: str,
        kind: str,
        key: str,
        inputs: dict,
        run_id: str,
        started: float,
        **extra: Any,
    ) -> dict[str, Any]:
        return {
            "node": node,
            "spec": self.graph.name,
            "kind": kind,
            "key": key,
            "inputs": inputs,
            "honly_version": __version__,
            "mlflow_run_id": run_id,
            "git": git_state(self.graph.ctx.spec.file.resolve().parent),
            "timings": {"started": started, "seconds": round(time.time() - started, 3)},
            **extra,
        }

    # --- base model ---------------------------------------------------------------------

    def base_checkpoint(self) -> Checkpoint:
        model = self.data["model"]
        base = model["base"]
        if not base.startswith("embedded:"):
            return Checkpoint(base, model.get("revision"))
        name = base.removeprefix("embedded:")
        key = self.graph.base_key
        entry = self.rt.store.entry_dir("model", key)
        if self.rt.store.lookup("model", key) is None:
            self.rt.display.add("model", "prepare", "MISS")
            self.rt.display.started("model")
            started = time.time()

            def build(tmp: Path) -> dict[str, Any]:
                job = compile_prepare(name, EMBEDDED_MODELS[name], Path("weights"), Path("work"))
                result = self._worker(
                    "embedded model", "model", job, tmp, self._log_path("model", key)
                )
                shutil.rmtree(tmp / "work", ignore_errors=True)
                return {
                    "node": "model",
                    "embedded": name,
                    "package": EMBEDDED_MODELS[name],
                    "result": result,
                    "gguf_sha256": sha256_file(Path(result["gguf"])),
                    "weights_sha256": {
                        f.name: sha256_file(f) for f in sorted((tmp / "weights").iterdir())
                    },
                    "timings": {"started": started, "seconds": round(time.time() - started, 3)},
                }

            self.rt.store.commit("model", key, build)
            self.rt.display.finished("model", "done")
        return Checkpoint(str(entry / "weights"))

    # --- stages -------------------------------------------------------------------------

    def stage(self, stage: StageNode) -> None:
        decision = self.decisions[stage.name]
        store = self.rt.store
        record = store.lookup(stage.kind, stage.key)
        parent = self.checkpoints.get(stage.after or BASE)  # None: a skipped, unbuilt parent
        if decision.status == "SKIP" and parent is None:
            return
        assert parent is not None, "check_selection builds a selected stage's parents first"
        if decision.status == "SKIP":
            if record is not None and stage.kind == GENERATE:
                self.generated[stage.name] = store.entry_dir(GENERATE, stage.key)
            elif record is not None:
                self.checkpoints[stage.name] = self._output_checkpoint(stage, parent)
            return
        display = self.rt.display
        tags = {
            "honly.node": stage.name,
            "honly.kind": stage.kind,
            "honly.key": stage.key,
            "honly.backend": stage.backend,
        }
        if record is not None and decision.status != "FORCE":
            with self.tracker.run(
                stage.name,
                {
                    **tags,
                    "honly.cached": "true",
                    "honly.source_run_id": str(record.get("mlflow_run_id")),
                },
                flat_params(stage.config),
                nested=True,
            ):
                pass
            display.finished(stage.name, "cached")
        else:
            display.started(stage.name)
            started = time.time()
            with self.tracker.run(
                stage.name,
                {**tags, "honly.cached": "false"},
                flat_params(stage.config),
                nested=True,
            ) as run_id:
                record = self.rt.store.commit(
                    stage.kind,
                    stage.key,
                    lambda tmp: self._build_stage(stage, parent, tmp, run_id, started),
                    replace=decision.status == "FORCE",
                )
                loss = record["result"].get("train_loss")
                if loss is not None:  # GPU tools log their own losses into this run
                    self.tracker.metrics({"train_loss": loss})
            display.finished(stage.name, "done", f"loss {loss:.3f}" if loss is not None else "")
        store.write_ref(self.graph.name, stage.name, stage.key, stage.inputs, stage.after)
        if stage.kind == GENERATE:
            self.generated[stage.name] = store.entry_dir(GENERATE, stage.key)
        else:
            self.checkpoints[stage.name] = self._output_checkpoint(stage, parent)

    def _output_checkpoint(self, stage: StageNode, parent: Checkpoint) -> Checkpoint:
        """What a stored stage hands on: the local backend's adapter on top of its parent,
        or a GPU tool's full (merged) model."""
        if stage.backend != "local":
            return Checkpoint(produced_model(self.rt.store.root, stage))
        entry = self.rt.store.entry_dir(stage.kind, stage.key)
        return parent.after(entry / "model", bool(stage.config.get("lora")))

    def _build_stage(
        self, stage: StageNode, parent: Checkpoint, tmp: Path, run_id: str, started: float
    ) -> dict[str, Any]:
        if stage.kind == GENERATE:
            return self._build_generate(stage, parent, tmp, run_id, started)
        seed = stage.inputs["config"]["seed"]
        manifest = materialize_stage(stage.name, stage.config, self.sources(), seed, tmp / "data")
        if stage.backend != "local":
            return self._build_native(stage, tmp, run_id, started, manifest)
        files = {Path(name).stem: f"data/{name}" for name in manifest["outputs"]}
        job = compile_train(stage.config, seed, parent, files, Path("model"), Path("work"))
        result = self._worker(
            f"stage {stage.name}", stage.name, job, tmp, self._log_path(stage.name, stage.key)
        )
        shutil.rmtree(tmp / "work" / "trainer", ignore_errors=True)
        history = result.pop("log_history", [])
        write_json(tmp / "train_log.json", history)
        self.tracker.series(
            "loss", [(int(e.get("step", 0)), e["loss"]) for e in history if "loss" in e]
        )
        return self._stage_record(stage, run_id, started, manifest, result, parent.as_job())

    def sources(self) -> dict[str, dict[str, Any]]:
        """The spec's data sources, each generated one pointing at its stage's stored file
        (the stages that read it run after that stage)."""
        out = {}
        for name, source in self.data["data"].items():
            if "from" in source:
                stage, output = source["from"].split(".", 1)
                source = {**source, "path": str(self.generated[stage] / f"{output}.jsonl")}
            out[name] = source
        return out

    def _build_generate(
        self, stage: StageNode, parent: Checkpoint, tmp: Path, run_id: str, started: float
    ) -> dict[str, Any]:
        """Write the generate stage's outputs and manifest into its store entry."""
        config = stage.config
        spec_constitution = self.data.get("constitution")
        constitution_file = config.get("constitution") or spec_constitution
        universe_file = config.get("universe") or constitution_file
        constitution = (
            Path(constitution_file).read_text(encoding="utf-8") if constitution_file else ""
        )
        universe = Path(universe_file).read_text(encoding="utf-8") if universe_file else ""
        generator = config["generator"]
        seed = stage.inputs["seed"]
        cache = JudgeCache(self.rt.store.root / "cache" / "generate.sqlite")
        identity = digest(stage.inputs["generator"])  # the cache's name for this teacher
        teacher_config = JudgeConfig.from_spec({**generator, "model": identity})
        client = None
        if generator["provider"] == "local":
            model = generator.get("model")
            own = not model or model == self.data["model"]["base"]
            checkpoint = parent if own else Checkpoint(model)
            client = LocalModelClient(self, stage.name, stage.key, checkpoint, teacher_config,
                                      tmp, seed)  # fmt: skip
        else:
            client = make_client(JudgeConfig.from_spec(generator))
        teacher = Judge(teacher_config, client=client, cache=cache)
        student = None
        if stage.inputs["student"] is not None:
            student_config = JudgeConfig(
                "student", digest(stage.inputs["student"]), generator["temperature"],
                generator["max_tokens"],
            )  # fmt: skip
            client = LocalModelClient(
                self, stage.name, stage.key, parent, student_config, tmp, seed
            )
            student = Judge(student_config, client=client, cache=cache)
        self.rt.display.progress(stage.name, 0, None, f"{generator['provider']} generator")
        try:
            rows, counts = generate(
                config, constitution, universe, teacher.complete,
                student.complete if student else None,
            )  # fmt: skip
        except JudgeError as error:
            raise JudgeError(
                f"stage {stage.name}: the generator failed ({error}); answers received so far "
                "are cached, so a rerun asks only for the rest"
            ) from None
        outputs = {}
        for output, found in rows.items():
            path = tmp / f"{output}.jsonl"
            with path.open("w", encoding="utf-8") as handle:
                for row in found:
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            outputs[output] = {"rows": len(found), "sha256": sha256_file(path)}
        calls = {"teacher": teacher.stats.as_dict()}
        if student:
            calls["student"] = student.stats.as_dict()
        manifest = {"outputs": outputs, "filters": counts, "generator": calls}
        write_json(tmp / "manifest.json", manifest)
        self.tracker.metrics(
            {f"rows/{o}": v["rows"] for o, v in outputs.items()}
            | {f"generator/{k}": v for k, v in calls["teacher"].items()}
        )
        self.rt.display.progress(stage.name, 1, 1, ", ".join(
            f"{o} {v['rows']}" for o, v in outputs.items()))  # fmt: skip
        return self._record(
            stage.name, GENERATE, stage.key, stage.inputs, run_id, started,
            config=config, manifest=manifest, result={"outputs": outputs},
        )  # fmt: skip

    def _build_native(
        self, stage: StageNode, tmp: Path, run_id: str, started: float, manifest: dict
    ) -> dict[str, Any]:
        """Compile the stage for its GPU tool and run it in the tool's environment. The
        stage's MLflow run is handed over (`MLFLOW_RUN_ID`), so the tool logs into it."""
        resources = Resources.from_profile(self.rt.profile)
        experiment = experiment_name(self.data)
        ctx = stage_context(
            self.graph, stage, self.rt.store.root, tmp, resources, self.rt.tracking_uri, experiment
        )
        job = COMPILERS[stage.backend](stage.config, ctx)
        env = {
            "MLFLOW_TRACKING_URI": self.rt.tracking_uri,
            "MLFLOW_EXPERIMENT_NAME": experiment,
            "MLFLOW_RUN_ID": run_id,
        }
        python = os.path.expanduser(self.rt.profile["envs"][stage.backend]["python"])
        log = self._log_path(stage.name, stage.key)
        self.rt.display.progress(stage.name, 0, None, f"{job.tool} running; log {log.name}")
        try:
            run_native(
                f"stage {stage.name}", job, tmp, python, log, resources, env, self._timeout()
            )
        finally:  # a failed run's curves are worth seeing too
            points = self._copy_curves(stage.name, tmp / TENSORBOARD_DIR)
        result = {"tool": job.tool, "command": job.script(), "log": str(log)}
        if points:
            result["tensorboard_points"] = points
        return self._stage_record(stage, run_id, started, manifest, result, {"path": ctx.model})

    def _copy_curves(self, stage: str, folder: Path) -> int:
        """TensorBoard scalars into the stage's MLflow run. An unreadable event file (a
        crashed writer) is reported, never allowed to hide the tool's own outcome."""
        try:
            return bridge_tensorboard(folder, self.tracker.series)
        except Exception as error:  # curves are auxiliary to the stage
            self.rt.display.message(f"stage {stage}: TensorBoard scalars not copied: {error}")
            return 0

    def _stage_record(
        self,
        stage: StageNode,
        run_id: str,
        started: float,
        manifest: dict,
        result: dict,
        parent: dict,
    ) -> dict[str, Any]:
        return self._record(
            stage.name,
            stage.kind,
            stage.key,
            stage.inputs,
            run_id,
            started,
            backend=BACKENDS[stage.backend].tool,
            config=stage.config,
            manifest=manifest,
            result=result,
            parent=parent,
        )

    # --- evals --------------------------------------------------------------------------

    def evaluate(self, node: EvalNode) -> None:
        name = eval_node_name(node.checkpoint)
        decision = self.decisions[name]
        if decision.status == "SKIP":
            return
        kind, store, display = "eval", self.rt.store, self.rt.display
        record = store.lookup(kind, node.key)
        tags = {
            "honly.node": name,
            "honly.kind": kind,
            "honly.key": node.key,
            "honly.checkpoint": node.checkpoint,
        }
        eval_config = self.data["eval"]
        params = flat_params(
            {
                "generation": eval_config["generation"],
                "judge": {
                    k: v for k, v in eval_config["judge"].items() if k not in ("api_key_env",)
                },
            }
        )
        cached = record is not None and decision.status != "FORCE"
        if not cached:
            display.started(name)
        started = time.time()
        with self.tracker.run(
            name,
            {
                **tags,
                "honly.cached": str(cached).lower(),
                "honly.source_run_id": str((record or {}).get("mlflow_run_id")),
            },
            params,
            nested=True,
        ) as run_id:
            if not cached:
                record = self.rt.store.commit(
                    kind,
                    node.key,
                    lambda tmp: self._build_eval(node, tmp, run_id, started),
                    replace=decision.status == "FORCE",
                )
            entry = store.entry_dir(kind, node.key)
            metrics = json.loads((entry / "results.json").read_text(encoding="utf-8"))
            self.tracker.metrics(_metric_values(metrics))
            self.tracker.metrics(
                {f"judge/{k}": v for k, v in (record or {}).get("judge", {}).items()}
            )
            self.tracker.artifact(entry / "results.json")
            for samples in sorted((entry / "samples").iterdir()):
                self.tracker.artifact(samples, "samples")
        self.results[node.checkpoint] = metrics
        display.finished(name, "cached" if cached else "done")
        store.write_ref(self.graph.name, name, node.key, node.inputs)

    def _build_eval(self, node: EvalNode, tmp: Path, run_id: str, started: float) -> dict:
        """Build the suites of `node` that are not stored (all of them with --force),
        reuse the others, and collect every suite's results into the node's entry."""
        suites = self.data["eval"]["suites"]
        force = self.decisions[eval_node_name(node.checkpoint)].status == "FORCE"
        store = self.rt.store
        reused = {
            s: not force and store.lookup(SUITE_KIND, node.suite_keys[s]) is not None
            for s in suites
        }
        todo = [s for s in suites if not reused[s]]
        stats = JudgeStats()
        generated = [s for s in todo if s != CAPABILITY]
        if generated:
            self._build_generated_suites(node, generated, tmp, stats)
        if CAPABILITY in todo:
            self._build_capability(node, tmp)
        metrics: dict[str, Any] = {}
        (tmp / "samples").mkdir()
        for suite in suites:
            entry = store.entry_dir(SUITE_KIND, node.suite_keys[suite])
            metrics.update(json.loads((entry / "results.json").read_text(encoding="utf-8")))
            shutil.copyfile(entry / "samples.jsonl", tmp / "samples" / f"{suite}.jsonl")
        write_json(tmp / "results.json", metrics)
        name = eval_node_name(node.checkpoint)
        return self._record(
            name,
            "eval",
            node.key,
            node.inputs,
            run_id,
            started,
            checkpoint=node.checkpoint,
            suites={s: {"key": node.suite_keys[s], "reused": reused[s]} for s in suites},
            judge=stats.as_dict(),
        )

    def _build_generated_suites(
        self, node: EvalNode, suites: list[str], tmp: Path, stats: JudgeStats
    ) -> None:
        """One pooled generation pass for the items of every suite in `suites`, then each
        suite graded and stored under its own key."""
        eval_config = self.data["eval"]
        generation = {**eval_config["generation"]}
        generation.setdefault("seed", self.data["seed"])
        items = {
            s: suite_items(
                s,
                eval_config["suites"][s],
                self.data["data"],
                generation["seed"],
                generation["samples"],
            )
            for s in suites
        }
        requests = generation_requests([i for found in items.values() for i in found])
        folder = tmp / "generate"
        folder.mkdir()
        with (folder / "prompts.jsonl").open("w", encoding="utf-8") as handle:
            for request in requests:
                handle.write(json.dumps(request, ensure_ascii=False) + "\n")
        name = eval_node_name(node.checkpoint)
        checkpoint = self.checkpoints[node.checkpoint]
        log = self._log_path(name, node.key)
        vllm = self._vllm_python(checkpoint)
        if vllm:
            vllm_job = compile_vllm_generate(
                checkpoint.path,
                list(checkpoint.adapters),
                generation,
                "prompts.jsonl",
                "generations.jsonl",
                tensor_parallel=self._tensor_parallel(),
            )
            self.rt.display.progress(name, 0, None, "vLLM generating")
            self._run_vllm(f"vLLM eval generation for {name}", vllm_job, folder, vllm, log)
        else:
            job = compile_generate(
                checkpoint,
                Path("prompts.jsonl"),
                generation,
                Path("generations.jsonl"),
                Path("work"),
            )
            self._worker(f"eval of {node.checkpoint}", name, job, folder, log)
        with (folder / "generations.jsonl").open(encoding="utf-8") as handle:
            replies = {row["id"]: row["responses"] for row in map(json.loads, handle)}
        for suite in suites:
            judge = self._judge(node, tmp) if suite in JUDGED_SUITES else None
            grader = Grader(judge, self._constitution())
            self.rt.display.progress(name, 0, None, f"grading {suite}")
            metrics, samples = score_suite(suite, items[suite], replies, grader)
            suite_stats = judge.stats.as_dict() if judge else JudgeStats().as_dict()
            stats.add(**suite_stats)
            self._commit_suite(node, suite, metrics, samples, judge=suite_stats)

    def _gpus(self) -> int:
        return (self.rt.profile.get("resources") or {}).get("gpus_per_node", 0)

    def _timeout(self) -> float | None:
        """The profile's `stage_timeout_s`: no tool process runs longer."""
        return self.rt.profile.get("stage_timeout_s")

    def _tensor_parallel(self) -> int:
        return Resources.from_profile(self.rt.profile).rl.get("vllm_tensor_parallel", 1)

    def _vllm_python(self, checkpoint: Checkpoint) -> str | None:
        """The profile's vLLM environment, where a GPU profile names one and vLLM can serve
        the checkpoint (at most one adapter); else None (the local backend runs it)."""
        vllm = (self.rt.profile.get("envs") or {}).get("vllm")
        if vllm and "python" in vllm and self._gpus() and len(checkpoint.adapters) <= 1:
            return os.path.expanduser(vllm["python"])
        return None

    def _run_vllm(self, what: str, job: dict, folder: Path, python: str, log: Path) -> dict:
        """Run a vLLM engine job in the profile's vLLM environment; returns its result."""
        write_json(folder / "job.json", job)
        write_links(folder, package_link())
        env = {
            "PYTHONPATH": str(folder / PACKAGE_LINK),
            "VLLM_NO_USAGE_STATS": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }
        command = [python, "-m", VLLM_MODULE, "job.json"]
        run_tool(what, command, log, env=env, cwd=folder, timeout_s=self._timeout())
        return json.loads((folder / "result.json").read_text(encoding="utf-8"))

    def _build_capability(self, node: EvalNode, tmp: Path) -> None:
        config = self.data["eval"]["suites"][CAPABILITY]
        folder = tmp / "capability"
        folder.mkdir()
        builtin = write_task_dir(config, folder / "tasks")
        job = compile_lm_eval(
            self.checkpoints[node.checkpoint],
            config,
            tasks_of(config),
            Path("tasks"),
            builtin,
            self.data["seed"],
            Path("samples.jsonl"),
            Path("work"),
        )
        name = eval_node_name(node.checkpoint)
        log = self._log_path(name, node.key, "lm-eval")
        checkpoint = self.checkpoints[node.checkpoint]
        vllm = self._vllm_python(checkpoint)
        if vllm:
            vllm_job = compile_vllm_lm_eval(job, list(checkpoint.adapters), self._tensor_parallel())
            self.rt.display.progress(name, 0, None, "lm-eval on vLLM")
            result = self._run_vllm(f"lm-eval (vLLM) on {node.checkpoint}", vllm_job, folder,
                                    vllm, log)  # fmt: skip
        else:
            result = self._worker(f"lm-eval on {node.checkpoint}", name, job, folder, log)
        with (folder / "samples.jsonl").open(encoding="utf-8") as handle:
            samples = [json.loads(line) for line in handle if line.strip()]
        named = [
            (metric_name(s["task"], f"{metric},{s['filter']}"), value)
            for s in samples
            for metric, value in s["metrics"].items()
        ]
        self._commit_suite(node, CAPABILITY, aggregate(named), samples, lm_eval=result)

    def _commit_suite(
        self,
        node: EvalNode,
        suite: str,
        metrics: dict[str, Any],
        samples: list[dict[str, Any]],
        **extra: Any,
    ) -> None:
        def build(folder: Path) -> dict[str, Any]:
            write_json(folder / "results.json", metrics)
            with (folder / "samples.jsonl").open("w", encoding="utf-8") as handle:
                for sample in samples:
                    handle.write(json.dumps(sample, ensure_ascii=False) + "\n")
            return {
                "suite": suite,
                "checkpoint": node.checkpoint,
                "inputs": node.inputs[suite],
                "honly_version": __version__,
                **extra,
            }

        self.rt.store.commit(SUITE_KIND, node.suite_keys[suite], build, replace=True)

    def _constitution(self) -> str | None:
        path = self.data.get("constitution")
        return Path(path).read_text(encoding="utf-8") if path else None

    def _judge(self, node: EvalNode, tmp: Path) -> Judge | None:
        """The spec's judge (None for `heuristic`), answers cached in the store."""
        config = JudgeConfig.from_spec(self.data["eval"]["judge"])
        if config.provider == "heuristic":
            return None
        cache = JudgeCache(self.rt.store.root / "cache" / "judge.sqlite")
        client = None
        if config.provider == "hf":
            checkpoint = self._judge_checkpoint(config)
            name = eval_node_name(node.checkpoint)
            client = LocalModelClient(self, name, node.key, checkpoint, config, tmp)
        return Judge(config, client=client, cache=cache)

    def _judge_checkpoint(self, config: JudgeConfig) -> Checkpoint:
        if config.model == self.data["model"]["base"]:
            return self.checkpoints[BASE]
        return Checkpoint(str(config.model))

    # --- the whole cell -----------------------------------------------------------------

    def run(self) -> dict[str, dict[str, dict[str, float]]]:
        graph = self.graph
        cell = graph.ctx.spec.cell
        axes = (
            {f"honly.axis.{axis}": value_label(value) for axis, _, value in cell.assignments}
            if cell
            else {}
        )
        tags = {
            "honly.spec": self.data["name"],
            "honly.cell": graph.name,
            "honly.arm": arm_name(graph),
            "honly.seed": str(self.data["seed"]),
            **axes,
            "honly.spec_hash": graph.spec_hash,
            "honly.spec_file": str(graph.ctx.spec.file),
            **{f"honly.key.{s.name}": s.key for s in graph.stages},
            **git_state(graph.ctx.spec.file.resolve().parent),
        }
        params = flat_params(
            {
                "model": self.data["model"],
                "seed": self.data["seed"],
                **{f"stages.{s.name}": s.config for s in graph.stages},
            }
        )
        with self.tracker.run(graph.name, tags, params):
            self.tracker.text(yaml_text(self.data), "spec.resolved.yaml")
            self.tracker.text(json.dumps(plan_table(graph, self.decisions), indent=2), "plan.json")
            self.checkpoints[BASE] = self.base_checkpoint()
            for stage in graph.stages:
                self.stage(stage)
            for node in graph.evals:
                self.evaluate(node)
            self.tracker.metrics(
                {
                    f"{checkpoint}/{metric}": summary["mean"]
                    for checkpoint, metrics in self.results.items()
                    for metric, summary in metrics.items()
                    if summary["mean"] is not None
                }
            )
        return self.results


def _read_text(path: str | None) -> str:
    return Path(path).read_text(encoding="utf-8") if path else ""


def arm_name(graph: Graph) -> str:
    """The cell's name without its seed: cells that differ only by seed are one arm."""
    cell = graph.ctx.spec.cell
    if cell is None:
        return graph.name
    seed_parts = {
        f"seed-{value_label(value)}" for axis, _, value in cell.assignments if axis == "seed"
    }
    return "/".join(p for p in graph.name.split("/") if p not in seed_parts)


def _metric_values(metrics: dict[str, dict[str, Any]]) -> dict[str, float]:
    """MLflow metrics of a results table: the mean and `/n`, `/ci_low`, `/ci_high`,
    `/unscored` (a metric with nothing scored logs only its counts)."""
    out = {}
    for name, summary in metrics.items():
        for part in ("mean", "n", "ci_low", "ci_high", "unscored"):
            if summary.get(part) is not None:
                out[name if part == "mean" else f"{name}/{part}"] = summary[part]
    return out


def results_table(results: dict[str, dict[str, dict[str, Any]]]) -> list[list[str]]:
    """Rows = metrics, columns = checkpoints; each cell `mean [low, high] n=N`, plus the
    count of unscored samples where there are any."""
    metrics = sorted({m for per in results.values() for m in per})
    return [[metric, *(_cell(results[c].get(metric)) for c in results)] for metric in metrics]


def _cell(summary: dict[str, Any] | None) -> str:
    if summary is None:
        return "-"
    unscored = f" ({summary['unscored']} unscored)" if summary.get("unscored") else ""
    if summary["mean"] is None:
        return f"n=0{unscored}"
    low, high = summary["ci_low"], summary["ci_high"]
    mean = summary["mean"]
    digits = 0 if max(abs(mean), abs(high)) > 10 else 2
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}] n={summary['n']}{unscored}"


def tracking_uri(data: dict[str, Any], store: Store) -> str:
    """The spec's MLflow URI, or a sqlite database inside the store."""
    configured = ((data.get("tracking") or {}).get("mlflow") or {}).get("uri")
    return configured or f"sqlite:///{store.root / 'mlflow.db'}"


def experiment_name(data: dict[str, Any]) -> str:
    """One MLflow experiment per spec family: `tracking.mlflow.experiment` or the name."""
    return ((data.get("tracking") or {}).get("mlflow") or {}).get("experiment") or data["name"]


def default_python(profile: dict[str, Any]) -> str:
    env = (profile.get("envs") or {}).get("local") or {}
    if "image" in env:
        raise NotAvailable("running the local backend in a container is not supported yet")
    return os.path.expanduser(env.get("python", sys.executable))
