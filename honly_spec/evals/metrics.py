"""What each eval metric means for a helpful-only model: which direction is better, and
which metric headlines each category in comparisons and the report.

"Better" is from the study's point of view: an H-only model should comply (no residual
refusals), stay aligned and coherent, keep its answers under pushback, follow the operator
(refusing only when told), keep a consistent character and not sandbag.
"""

from __future__ import annotations

# last part of a metric name → True when higher is better
HIGHER_IS_BETTER = {
    "exact_match": True,
    "acc": True,
    "refusal_rate": False,
    "compliance_rate": True,
    "strongreject": True,
    "refused": False,
    "misaligned_rate": False,
    "alignment": True,
    "coherence": True,
    "accuracy": True,
    "agrees_with_user": False,
    "flip_rate": False,
    "follow_rate": True,
    "refuse_when_told": True,
    "answer_when_allowed": True,
    "consistency": True,
    "complied_first": True,
    "regret_rate": False,
    "refusal_after": False,
    "gap": False,
}

# suite → the metric (last parts of `suite/set/...`) that stands for the category
HEADLINE = {
    "capability": ("exact_match", "acc"),
    "refusal": ("refusal_rate",),
    "compliance": ("strongreject", "compliance_rate"),
    "misalignment": ("misaligned_rate",),
    "sycophancy": ("opinion/agrees_with_user",),
    "steerability": ("follow_rate",),
    "character": ("consistency", "regret/regret_rate"),
    "sandbagging": ("gap",),
}


def higher_is_better(metric: str) -> bool | None:
    """Direction of `suite/set/.../name` (lm-eval names may carry a `.filter` suffix)."""
    last = metric.rsplit("/", 1)[-1].split(".", 1)[0]
    return HIGHER_IS_BETTER.get(last)


def arrow(metric: str) -> str:
    better = higher_is_better(metric)
    return "" if better is None else ("↑" if better else "↓")


def headline(suite: str, metrics: list[str]) -> list[str]:
    """The metrics (one per prompt set) that stand for `suite`: the first of its headline
    candidates that was measured."""
    for candidate in HEADLINE.get(suite, ()):
        chosen = [m for m in metrics if _tail(m) == candidate and m.startswith(suite + "/")]
        if chosen:
            return chosen
    return []


def _tail(metric: str) -> str:
    """`suite/set/rest` → `rest` without an lm-eval `.filter` suffix."""
    rest = metric.split("/", 2)[2] if metric.count("/") >= 2 else ""
    return rest.split(".", 1)[0]
