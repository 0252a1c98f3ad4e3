"""Test double for vLLM, whose wheels run on CUDA only: the same `LLM`, `SamplingParams`
and `LLM.chat` shapes honly's vLLM engine uses. It records how it was configured and
called (in `$VLLM_DOUBLE_LOG`) and answers each conversation with a reply that names its
turn and last user message, so tests can check multi-turn assembly."""

import json
import os
from types import SimpleNamespace


def _log(event, **fields):
    path = os.environ.get("VLLM_DOUBLE_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"event": event, **fields}) + "\n")


class SamplingParams:
    def __init__(self, **kwargs):
        assert "max_tokens" in kwargs, "vLLM's default max_tokens is 16: always set it"
        self.kwargs = kwargs


class LLM:
    def __init__(self, model, **kwargs):
        assert os.path.isdir(model), f"model directory not found: {model}"
        _log("engine", model=model, **kwargs)

    def chat(self, messages, sampling_params=None, use_tqdm=True, lora_request=None):
        lora = None if lora_request is None else lora_request.lora_path
        _log("chat", batch=len(messages), sampling=sampling_params.kwargs, lora=lora)
        outputs = []
        for conversation in messages:
            turn = sum(1 for m in conversation if m["role"] == "assistant")
            text = f" reply {turn} to: {conversation[-1]['content'][:40]} "
            outputs.append(SimpleNamespace(outputs=[SimpleNamespace(text=text)]))
        return outputs
