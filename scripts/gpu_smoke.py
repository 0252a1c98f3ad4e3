"""GPU smoke run: the local backend end to end on CUDA with a tiny randomly initialised model.

    python scripts/gpu_smoke.py OUT [--allow-cpu]

Builds a 2-layer Llama (random weights, a 1,024-token BPE tokenizer trained on the demo
data, a chat template) in OUT, then runs `honly-run` on `specs/ci_smoke.yaml` with that
model as `model.base`: the data stage, LoRA SFT, DPO, GRPO, and every eval category
(lm-eval capability, pooled batched generation, scoring). It needs no network and uploads
nothing but the repository. It then checks that every training and generation job ran on
the GPU, that a rerun executes nothing, and writes `OUT/gpu-smoke.json` (stage seconds,
devices, metrics). The weights are random, so the metrics only show the path works.

Exit codes: 0 passed, 1 a check failed, 3 no GPU (without `--allow-cpu`) or a missing
package. `--allow-cpu` runs the same path on CPU; the test suite does that.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NEEDED = ("yaml", "jsonschema", "rich", "mlflow", "torch", "transformers", "trl", "peft",
          "accelerate", "datasets", "lm_eval", "tokenizers")  # fmt: skip
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]


def missing_packages() -> list[str]:
    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


def make_tiny_model(folder: Path) -> int:
    """A random 2-layer Llama with its own small tokenizer; returns the parameter count."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    texts = []
    for file in sorted((REPO / "data" / "demo").glob("*.jsonl")):
        texts.append(file.read_text(encoding="utf-8"))
    texts.append((REPO / "data" / "demo" / "constitution.md").read_text(encoding="utf-8"))
    bpe = Tokenizer(models.BPE(unk_token="<|pad|>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=1024, special_tokens=SPECIAL))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, pad_token="<|pad|>", eos_token="<|end|>", unk_token="<|pad|>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def write_spec(spec: Path, model_dir: Path) -> Path:
    """The CI smoke spec with the tiny model as its base."""
    spec.write_text(
        "honly: 1\nname: gpu-smoke\n"
        f"extends: {REPO / 'specs' / 'ci_smoke.yaml'}\n"
        f"model: {{base: {model_dir}}}\n"
        "tracking: {mlflow: {experiment: honly-gpu-smoke}}\n",
        encoding="utf-8",
    )
    return spec


def honly_run(spec: Path, home: Path, *extra: str) -> tuple[int, float, str]:
    env = {**os.environ, "HONLY_HOME": str(home), "PYTHONPATH": str(REPO)}
    code = "import sys; from honly_spec.cli import run_main; sys.exit(run_main(sys.argv[1:]))"
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, str(spec), "--display", "plain", *extra],
        env=env, capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    return done.returncode, time.perf_counter() - start, done.stdout + done.stderr


def records(store: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in store.glob("*/*/record.json")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--allow-cpu", action="store_true")
    args = parser.parse_args()
    missing = missing_packages()
    if missing:
        print(f"gpu-smoke: missing Python packages: {', '.join(missing)}", file=sys.stderr)
        return 3
    import torch

    gpu = torch.cuda.is_available()
    if not gpu and not args.allow_cpu:
        print("gpu-smoke: no CUDA device (use --allow-cpu to run on CPU)", file=sys.stderr)
        return 3
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    model_dir = out / "tiny-model"
    parameters = make_tiny_model(model_dir)
    spec = write_spec(out / "gpu-smoke.yaml", model_dir)
    home = out / "home"
    code, first, log = honly_run(spec, home)
    (out / "run.log").write_text(log, encoding="utf-8")
    summary: dict = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if gpu else "cpu",
        "model_parameters": parameters,
        "run_exit": code,
        "run_seconds": round(first, 1),
        "checks": {},
    }
    if code == 0:
        code_again, again, _ = honly_run(spec, home)
        store = home / "store"
        jobs = records(store)
        trained = [r for r in jobs if r["kind"] in ("sft", "rl")]
        devices = {r["node"]: (r.get("result") or {}).get("device") for r in trained}
        summary["stage_devices"] = devices
        summary["stage_seconds"] = {r["node"]: r["timings"]["seconds"] for r in trained}
        summary["rerun_seconds"] = round(again, 1)
        want = "cuda" if gpu else "cpu"
        summary["checks"] = {
            "every_training_job_on_the_device": bool(devices)
            and all(str(d).startswith(want) for d in devices.values()),
            "rerun_executes_nothing": code_again == 0 and again < first / 3,
            "every_category_measured": _categories(store),
        }
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    (out / "gpu-smoke.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(json.dumps(summary, indent=2))
    if code != 0:
        print(log[-4000:], file=sys.stderr)
        return 1
    return 0 if all(summary["checks"].values()) else 1


def _categories(store: Path) -> bool:
    """Every eval category of the study has at least one metric at the last checkpoint."""
    suites = {r.get("suite") for r in records(store) if r["kind"] == "suite"}
    wanted = {"capability", "refusal", "compliance", "misalignment", "sycophancy",
              "sandbagging", "steerability", "character"}  # fmt: skip
    return wanted <= suites


if __name__ == "__main__":
    raise SystemExit(main())
