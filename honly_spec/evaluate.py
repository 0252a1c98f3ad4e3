"""Eval suites on generated responses: which prompts each suite asks, and how it scores them.

All suites of a checkpoint share one generation pass: the prompts of every set are pooled
(a set used by two suites is generated once) and generated in batches by the backend; then
each suite scores the responses with its registered scorer. Every metric is reported with
n and a 95% interval (`stats.summarize`); per-sample scores go to `samples.jsonl`.
"""

from __future__ import annotations

import random
from typing import Any

from honly_spec.materialize import prompt_messages, read_source
from honly_spec.scoring import load_scorer
from honly_spec.stats import summarize

# suite → (scorer, metric name); a suite's metric is computed per eval set
SUITE_METRICS: dict[str, tuple[str, str]] = {
    "refusal": ("refusal", "refusal_rate"),
    "compliance": ("compliance", "compliance_rate"),
    "steerability": ("steerability", "follow_rate"),
    "character": ("character", "consistency"),
}


def unsupported_suites(suites: dict[str, Any]) -> list[str]:
    """Suites of a spec that this version cannot run yet (or that lack `sets`)."""
    return [s for s, c in suites.items() if s not in SUITE_METRICS or not (c or {}).get("sets")]


def prompt_rows(suites: dict[str, Any], sources: dict[str, Any], seed: int) -> list[dict]:
    """One row per prompt of every set used by any suite: {id, set, messages, label}."""
    limits: dict[str, int | None] = {}
    for config in suites.values():
        for name in config["sets"]:
            limit = config.get("limit")
            old = limits.get(name, 0)
            limits[name] = None if limit is None or old is None else max(old, limit)
    rows = []
    for name, limit in limits.items():
        loaded = read_source(name, sources[name])
        order = list(range(len(loaded)))
        if limit is not None:
            random.Random(f"{seed}:eval:{name}").shuffle(order)
            order = sorted(order[:limit])
        for index in order:
            row = loaded[index]
            messages = (
                prompt_messages(row) if sources[name]["format"] == "chat" else row["messages"]
            )
            rows.append(
                {
                    "id": f"{name}/{index}",
                    "set": name,
                    "messages": messages,
                    "label": row.get("label"),
                }
            )
    return rows


def score(
    suites: dict[str, Any], rows: list[dict], generations: list[dict]
) -> tuple[dict[str, dict[str, float | int]], list[dict]]:
    """Metrics `suite/set/metric` → summary, and one sample record per generation."""
    by_id = {row["id"]: row for row in rows}
    samples = []
    per_metric: dict[str, list[float]] = {}
    for generation in generations:
        row = by_id[generation["id"]]
        scores = {}
        for suite, config in suites.items():
            if row["set"] not in config["sets"]:
                continue
            scorer_name, metric = SUITE_METRICS[suite]
            value = load_scorer(scorer_name).fn(
                row["messages"], generation["response"], row["label"]
            )
            scores[suite] = value
            per_metric.setdefault(f"{suite}/{row['set']}/{metric}", []).append(value)
        samples.append(
            {
                **generation,
                "set": row["set"],
                "prompt": row["messages"],
                "label": row["label"],
                "scores": scores,
            }
        )
    return {name: summarize(values) for name, values in sorted(per_metric.items())}, samples
