"""The same work as an honly node, written directly against TRL/transformers (the baseline
of `pipeline_overhead.py`).

    python benchmarks/direct_trl.py sft|generate MODEL_DIR DATA.jsonl OUT_DIR THREADS CONFIG_JSON

Prints `{"seconds": ...}` on its last line.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    start = time.time()  # like honly's node times, this includes importing the libraries
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    task, model_dir, data, out, threads, raw_config = sys.argv[1:7]
    config = json.loads(raw_config)
    torch.set_num_threads(int(threads))
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with open(data, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    if task == "sft":
        train_sft(model, tokenizer, rows, config, out)
    else:
        generate(model, tokenizer, rows, config)
    print(json.dumps({"seconds": time.time() - start}))


def train_sft(model, tokenizer, rows, config, out) -> None:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    train, lora = config["train"], config["lora"]
    args = SFTConfig(
        output_dir=out,
        num_train_epochs=train["epochs"],
        learning_rate=train["learning_rate"],
        per_device_train_batch_size=train["batch_size"],
        max_length=train["seq_len"],
        lr_scheduler_type=train["lr_scheduler"],
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=0,
        use_cpu=True,
        disable_tqdm=True,
    )
    dataset = Dataset.from_list(
        [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows]
    )
    peft_config = LoraConfig(
        r=lora["r"], lora_alpha=lora["alpha"], target_modules="all-linear", task_type="CAUSAL_LM"
    )
    SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    ).train()


def generate(model, tokenizer, rows, config) -> None:
    """Every conversation turn by turn, like the eval: after the first reply, each
    follow-up user turn is appended and the next reply generated (16 per batch)."""
    import torch

    tokenizer.padding_side = "left"
    conversations = [list(r["messages"]) for r in rows]
    rounds = 1 + max(len(r.get("followups", [])) for r in rows)
    for turn in range(rounds):
        active = [i for i, r in enumerate(rows) if len(r.get("followups", [])) >= turn]
        for start in range(0, len(active), 16):
            chunk = active[start : start + 16]
            batch = tokenizer.apply_chat_template(
                [conversations[i] for i in chunk],
                add_generation_prompt=True,
                padding=True,
                return_tensors="pt",
                return_dict=True,
            )
            with torch.no_grad():
                out = model.generate(
                    **batch,
                    max_new_tokens=config["max_new_tokens"],
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                )
            texts = tokenizer.batch_decode(
                out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True
            )
            for i, text in zip(chunk, texts, strict=True):
                followups = rows[i].get("followups", [])
                conversations[i].append({"role": "assistant", "content": text.strip()})
                if turn < len(followups):
                    conversations[i].append({"role": "user", "content": followups[turn]})


if __name__ == "__main__":
    main()
