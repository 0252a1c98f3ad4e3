"""The `capability` suite: lm-eval tasks, run by `lm_eval.simple_evaluate` in the backend.

honly ships offline tasks on local JSONL (`honly_arith`), compiled here into lm-eval task
YAML with absolute data paths; any other name is an lm-eval built-in task (those download
their datasets from the hub, so they need a network or a warm HF cache). The compile step
is pure and golden-tested; the worker runs it. Metric names are made MLflow-safe:
`exact_match,number` becomes `exact_match.number` (lm-eval joins metric and filter with a
comma, which MLflow rejects).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from honly_spec.data.sources import sha256_file
from honly_spec.evals.sets import DIR as SETS_DIR

CAPABILITY = "capability"
CAPABILITY_TOOL = "lm-eval==0.4.13"
DEFAULT_TASKS = ("honly_arith",)


def _arith_task(data_file: Path) -> dict[str, Any]:
    return {
        "task": "honly_arith",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file)}},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": "{{question}} Answer with the number only.",
        "doc_to_target": "{{answer}}",
        "generation_kwargs": {"until": ["\n\n"], "do_sample": False, "max_gen_toks": 24},
        # the last number of the reply: "17 + 25 = 42" answers 42
        "filter_list": [
            {
                "name": "number",
                "filter": [
                    {"function": "regex", "regex_pattern": "(-?[0-9]+)", "group_select": -1},
                    {"function": "take_first"},
                ],
            }
        ],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1},
    }


# offline task name → (data file, task builder)
OFFLINE_TASKS = {"honly_arith": (SETS_DIR / "capability_arith.jsonl", _arith_task)}


def tasks_of(config: dict[str, Any]) -> list[str]:
    return list(config.get("tasks") or DEFAULT_TASKS)


def capability_task_digests(config: dict[str, Any]) -> dict[str, str]:
    """Key input per task: the digest of an offline task's data, or the built-in's name
    (pinned by the lm-eval version in the key)."""
    return {
        task: sha256_file(OFFLINE_TASKS[task][0]) if task in OFFLINE_TASKS else "lm-eval"
        for task in tasks_of(config)
    }


def write_task_dir(config: dict[str, Any], folder: Path) -> bool:
    """Write the YAML of every offline task the config names into `folder`; True when a
    built-in lm-eval task is named too (so the task index must include the defaults)."""
    folder.mkdir(parents=True, exist_ok=True)
    builtin = False
    for task in tasks_of(config):
        if task not in OFFLINE_TASKS:
            builtin = True
            continue
        data_file, build = OFFLINE_TASKS[task]
        text = yaml.safe_dump(build(data_file.resolve()), sort_keys=False)
        (folder / f"{task}.yaml").write_text(text, encoding="utf-8")
    return builtin


def metric_name(task: str, key: str) -> str:
    """`exact_match,number` of `honly_arith` → `capability/honly_arith/exact_match.number`
    (the filter is dropped when it is lm-eval's `none`)."""
    metric, _, filter_name = key.partition(",")
    suffix = metric if filter_name in ("", "none") else f"{metric}.{filter_name}"
    return f"{CAPABILITY}/{task}/{suffix}"


def run_lm_eval(model: Any, job: dict[str, Any]) -> dict[str, Any]:
    """`lm_eval.simple_evaluate` on an lm-eval model object (transformers or vLLM), with the
    job's tasks, limit and seeds; per-sample metric values go to `job["output"]` so honly
    computes its own intervals. Runs inside the backend's environment."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    seed = job["seed"]
    results = lm_eval.simple_evaluate(
        model=model,
        tasks=job["tasks"],
        num_fewshot=job.get("num_fewshot"),
        limit=job.get("limit"),
        task_manager=TaskManager(
            include_path=job["task_dir"], include_defaults=job["builtin_tasks"]
        ),
        log_samples=True,
        apply_chat_template=True,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
    )
    with Path(job["output"]).open("w", encoding="utf-8") as handle:
        for task, samples in results["samples"].items():
            for sample in samples:
                row = {
                    "task": task,
                    "doc_id": sample["doc_id"],
                    "target": str(sample["target"]),
                    "response": [str(r) for r in sample["resps"][0]],
                    "filtered": str(sample["filtered_resps"][0]),
                    "filter": sample["filter"],
                    "metrics": {m: float(sample[m]) for m in sample["metrics"]},
                }
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    summary = {
        task: {k: v for k, v in values.items() if isinstance(v, int | float)}
        for task, values in results["results"].items()
    }
    return {"lm_eval": summary, "versions": results.get("versions", {})}
