"""Local-backend jobs: golden compiled jobs, and the batch shapes handed to TRL."""

from __future__ import annotations

from pathlib import Path

from honly_spec.adapters.local.job import (
    Checkpoint,
    compile_generate,
    compile_lm_eval,
    compile_train,
)
from honly_spec.adapters.local.worker import grpo_batches
from honly_spec.plan.graph import compile_graph
from honly_spec.spec.check import check_spec


def test_checkpoint_chain() -> None:
    base = Checkpoint("/store/model/abc/weights")
    sft = base.after(Path("/store/sft/1/model"), lora=True)
    rl = sft.after(Path("/store/rl/2/model"), lora=True)
    assert rl.as_job() == {
        "path": "/store/model/abc/weights",
        "revision": None,
        "adapters": ["/store/sft/1/model", "/store/rl/2/model"],
    }
    full = sft.after(Path("/store/sft/3/model"), lora=False)
    assert full == Checkpoint("/store/sft/3/model")


def test_compiled_jobs_golden(write_spec) -> None:
    graph = compile_graph(check_spec(write_spec()))
    sft, rl = graph.stages
    parent = Checkpoint("/w")
    job = compile_train(
        sft.config, 0, parent, {"chat": "data/chat.jsonl"}, Path("model"), Path("work")
    )
    assert job == {
        "task": "sft",
        "model": {"path": "/w", "revision": None, "adapters": []},
        "data": {"chat": "data/chat.jsonl"},
        "train": {
            "epochs": 1,
            "learning_rate": 1e-4,
            "batch_size": 16,
            "lr_scheduler": "cosine",
            "warmup_ratio": 0.0,
            "weight_decay": 0.0,
            "gradient_checkpointing": False,
            "logging_steps": 10,
            "save_steps": 0,
            "seq_len": 2048,
            "packing": False,
            "loss_on": "assistant",
        },
        "lora": {"r": 8, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
        "seed": 0,
        "output_dir": "model",
        "work_dir": "work",
        "result": "work/result.json",
    }
    job = compile_train(
        rl.config, 0, parent, {"prompts": "data/prompts.jsonl"}, Path("model"), Path("work")
    )
    assert job["task"] == "grpo"
    assert job["reward"] == {"compliance": 1.0}
    assert job["rollout"] == {
        "samples_per_prompt": 8,
        "max_new_tokens": 1024,
        "temperature": 1.0,
        "top_p": 1.0,
        "batch_size": 32,
    }
    generation = {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 8, "samples": 1, "seed": 3}
    job = compile_generate(parent, Path("p.jsonl"), generation, Path("g.jsonl"), Path("work"))
    assert job["generation"] == {
        "temperature": 0.0,
        "top_p": 1.0,
        "max_new_tokens": 8,
    }
    assert job["seed"] == 3 and job["batch_size"] == 16
    config = {"tasks": ["honly_arith"], "limit": 4}
    job = compile_lm_eval(
        parent, config, ["honly_arith"], Path("tasks"), False, 7, Path("s.jsonl"), Path("work")
    )
    assert job == {
        "task": "lm_eval",
        "model": parent.as_job(),
        "tasks": ["honly_arith"],
        "task_dir": "tasks",
        "builtin_tasks": False,
        "limit": 4,
        "num_fewshot": None,
        "seed": 7,
        "batch_size": 8,
        "output": "s.jsonl",
        "work_dir": "work",
        "result": "work/result.json",
    }


def test_grpo_batches_fit_what_trl_accepts() -> None:
    shape = grpo_batches(8, {"samples_per_prompt": 8, "batch_size": 32}, {"batch_size": 64})
    assert shape == {"generation_batch": 64, "responses_per_step": 64, "micro_batch": 64}
    shape = grpo_batches(
        100, {"samples_per_prompt": 4, "batch_size": 6}, {"batch_size": 10, "micro_batch_size": 4}
    )
    assert shape == {"generation_batch": 24, "responses_per_step": 8, "micro_batch": 4}
    for prompts in range(1, 12):
        s = grpo_batches(prompts, {"samples_per_prompt": 3, "batch_size": 5}, {"batch_size": 7})
        assert s["generation_batch"] % s["responses_per_step"] == 0
        assert s["responses_per_step"] % s["micro_batch"] == 0
        assert s["generation_batch"] % 3 == 0
