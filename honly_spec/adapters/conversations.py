"""Multi-turn generation, shared by every generation engine (the local worker, vLLM).

A request is `{id, messages, followups}`: the model replies to `messages`, then each
follow-up user turn is sent after its own previous reply. Engines generate in rounds:
round k holds the k-th reply of every conversation that has one, so each round is one
batch. Pure Python, importable in any tool environment.
"""

from __future__ import annotations

from typing import Any


def rounds(requests: list[dict[str, Any]]) -> int:
    return 1 + max((len(r.get("followups", [])) for r in requests), default=0)


def active(requests: list[dict[str, Any]], turn: int) -> list[int]:
    """Indexes of the conversations that have a reply in round `turn`."""
    return [i for i, r in enumerate(requests) if len(r.get("followups", [])) >= turn]


def so_far(request: dict[str, Any], replies: list[str]) -> list[dict[str, str]]:
    """The conversation to continue: its messages, then each reply and follow-up so far."""
    messages = list(request["messages"])
    for reply, followup in zip(replies, request.get("followups", []), strict=False):
        messages += [
            {"role": "assistant", "content": reply},
            {"role": "user", "content": followup},
        ]
    return messages
