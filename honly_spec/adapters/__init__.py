"""Backends that run stages, and what each can do.

Each backend names the tool release it compiles for; that pin is part of every stage key, so
upgrading a tool re-runs the stages it trained and nothing else. The compilers and launchers
of each tool live in modules of this package (one per tool version, so the next flag rename
is one new file); this catalog is all the spec core needs to validate and key a stage, and it
imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backend:
    name: str
    kinds: frozenset[str]
    algorithms: frozenset[str]
    tool: str


BACKENDS: dict[str, Backend] = {
    backend.name: backend
    for backend in (
        Backend(
            "local",
            frozenset({"sft", "rl"}),
            frozenset({"grpo", "dpo"}),
            "trl==1.16.0",
        ),
        Backend(
            "axolotl",
            frozenset({"sft"}),
            frozenset(),
            "axolotl==0.21.0",
        ),
        Backend(
            "openrlhf",
            frozenset({"rl"}),
            frozenset({"grpo", "reinforce", "rloo", "ppo", "dpo"}),
            "openrlhf==0.11.2",
        ),
    )
}
