"""Test double for vllm.lora.request (see vllm/__init__.py)."""

from dataclasses import dataclass


@dataclass
class LoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str

    def __post_init__(self):
        assert self.lora_int_id >= 1, "vLLM LoRA ids start at 1"
