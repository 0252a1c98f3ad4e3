"""Data-mix semantics: how `rows`, `fraction` and `weight` become realized row counts.

- `rows: N` takes N rows of the source.
- `fraction: F` takes floor(F × source rows): 1.0 is the whole source.
- `weight: W` takes a W share of the stage's `total_rows`; shares are rounded with the
  largest-remainder method, so weights that sum to 1 realize exactly `total_rows`.

Taking more rows than a source has is upsampling and must be asked for with `replace: true`
(sampling with replacement); otherwise it is an error, never a silent cap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

ONLINE_RL_FORMATS = frozenset({"prompt", "chat", "preference"})
FORMATS_BY_USE: dict[str, frozenset[str]] = {
    "sft": frozenset({"chat", "document"}),
    "rl": ONLINE_RL_FORMATS,
    "dpo": frozenset({"preference"}),
}


def mix_use(stage: dict[str, Any]) -> str:
    """Which formats table applies: `sft`, `rl` (online) or `dpo`."""
    if stage.get("kind") == "rl":
        return "dpo" if stage.get("algorithm") == "dpo" else "rl"
    return "sft"


def mix_field(stage: dict[str, Any]) -> str:
    """The key that holds a stage's data mix."""
    return "prompts" if stage.get("kind") == "rl" else "mix"


@dataclass(frozen=True)
class MixProblem:
    source: str
    field: str
    message: str


def realize(
    entries: dict[str, dict[str, Any]], sizes: dict[str, int | None], total_rows: int | None
) -> tuple[dict[str, int | None], list[MixProblem]]:
    """Row count per source (None when the source size is unknown) and any problems."""
    counts: dict[str, int | None] = {}
    problems: list[MixProblem] = []
    weights = {name: e["weight"] for name, e in entries.items() if "weight" in e}
    counts.update(_largest_remainder(weights, total_rows) if total_rows else {})
    for name, entry in entries.items():
        size = sizes.get(name)
        if "rows" in entry:
            counts[name] = entry["rows"]
        elif "fraction" in entry:
            # the epsilon keeps 0.29 × 100 at 29 despite binary floating point
            counts[name] = None if size is None else math.floor(entry["fraction"] * size + 1e-9)
            if counts[name] == 0:
                problems.append(
                    MixProblem(
                        name,
                        "fraction",
                        f"fraction {entry['fraction']} of {size} rows is 0 rows",
                    )
                )
        elif name not in counts:
            counts[name] = None
        wanted = counts[name]
        if wanted is not None and size is not None and wanted > size and not entry["replace"]:
            field = next(k for k in ("rows", "fraction", "weight") if k in entry)
            problems.append(
                MixProblem(
                    name,
                    field,
                    f"asks for {wanted} rows but source `{name}` has {size}; lower it, or set "
                    "`replace: true` to upsample with replacement",
                )
            )
    return counts, problems


def _largest_remainder(weights: dict[str, float], total: int) -> dict[str, int]:
    exact = {name: w * total for name, w in weights.items()}
    counts = {name: math.floor(x) for name, x in exact.items()}
    target = min(total, round(sum(exact.values())))
    leftovers = sorted(exact, key=lambda n: (counts[n] - exact[n], n))
    for name in leftovers[: max(0, target - sum(counts.values()))]:
        counts[name] += 1
    return counts
