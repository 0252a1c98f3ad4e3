"""From eval config to generation requests, and from replies to metrics with intervals.

All suites of a checkpoint share one generation pass: their items are pooled and a
conversation asked by two suites (the same set in `refusal` and `compliance`, the same
question in `sycophancy` and `sandbagging`) is generated once. Multi-turn items are
generated turn by turn by the backend, each follow-up sent after the model's own reply.
Each suite then grades its items; every metric is reported with n, a 95% interval
(`stats.summarize`) and the number of unscored samples (a judge that never answered
readably, a probe whose precondition did not hold), and per-sample values go to
`samples.jsonl`.
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

from honly_spec.data.materialize import prompt_messages, read_source
from honly_spec.evals.sets import shipped_source, suite_sets
from honly_spec.evals.stats import summarize
from honly_spec.evals.suites import SUITES, Grader, Item


def source_of(name: str, sources: dict[str, Any]) -> dict[str, Any]:
    """A `data` source, or one of honly's shipped sets."""
    if name in sources:
        return sources[name]
    return shipped_source(name)


def set_rows(
    name: str, source: dict[str, Any], limit: int | None, seed: int
) -> list[dict[str, Any]]:
    """Rows {index, messages, label} of a set: all, or the first `limit` of a seeded
    shuffle (the same order for every suite, so smaller limits pick subsets)."""
    loaded = read_source(name, source)
    order = list(range(len(loaded)))
    if limit is not None:
        random.Random(f"{seed}:eval:{name}").shuffle(order)
        order = sorted(order[:limit])
    chat = source["format"] == "chat"
    return [
        {
            "index": i,
            "messages": prompt_messages(loaded[i]) if chat else loaded[i]["messages"],
            "label": loaded[i].get("label"),
        }
        for i in order
    ]


def suite_items(
    suite: str, config: dict[str, Any], sources: dict[str, Any], seed: int, samples: int
) -> list[Item]:
    """Every item a suite asks, each repeated `samples` times (`generation.samples`)."""
    items = []
    for name in suite_sets(suite, config):
        rows = set_rows(name, source_of(name, sources), config.get("limit"), seed)
        for item in SUITES[suite].items(config, name, rows, seed):
            for sample in range(samples):
                if samples == 1:
                    items.append(item)
                    continue
                items.append(
                    Item(
                        f"{item.id}#{sample}",
                        item.set,
                        item.row,
                        item.variant,
                        item.messages,
                        item.followups,
                        item.label,
                        item.sample * samples + sample,
                        item.extra,
                    )
                )
    return items


def conversation_id(item: Item) -> str:
    """Same conversation, same id: pooled generation asks it once."""
    payload = json.dumps([item.messages, item.followups, item.sample], sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:20]


def generation_requests(items: list[Item]) -> list[dict[str, Any]]:
    """Distinct conversations of `items` as worker requests {id, messages, followups}."""
    requests: dict[str, dict[str, Any]] = {}
    for item in items:
        requests.setdefault(
            conversation_id(item),
            {
                "id": conversation_id(item),
                "messages": item.messages,
                "followups": list(item.followups),
            },
        )
    return list(requests.values())


def aggregate(named_values: list[tuple[str, float | None]]) -> dict[str, dict[str, Any]]:
    """Metric name → {mean, n, ci_low, ci_high, unscored}; a metric whose every sample is
    unscored keeps its count with mean and interval None."""
    scored: dict[str, list[float]] = {}
    unscored: dict[str, int] = {}
    for name, value in named_values:
        scored.setdefault(name, [])
        unscored.setdefault(name, 0)
        if value is None:
            unscored[name] += 1
        else:
            scored[name].append(float(value))
    out = {}
    for name in sorted(scored):
        if scored[name]:
            out[name] = {**summarize(scored[name]), "unscored": unscored[name]}
        else:
            empty = {"mean": None, "n": 0, "ci_low": None, "ci_high": None}
            out[name] = {**empty, "unscored": unscored[name]}
    return out


def score_suite(
    suite: str, items: list[Item], replies: dict[str, list[str]], grader: Grader
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Metrics `suite/set/metric` and one sample record per item."""
    turns = [replies[conversation_id(item)] for item in items]
    values = SUITES[suite].grade(items, turns, grader)
    named = []
    samples = []
    for item, replies_of_item, per_item in zip(items, turns, values, strict=True):
        named += [(f"{suite}/{item.set}/{metric}", v) for metric, v in per_item.items()]
        samples.append(
            {
                "suite": suite,
                "id": item.id,
                "set": item.set,
                "row": item.row,
                "variant": item.variant,
                "sample": item.sample,
                "messages": item.messages,
                "followups": list(item.followups),
                "label": item.label,
                "responses": replies_of_item,
                "scores": per_item,
            }
        )
    return aggregate(named), samples
