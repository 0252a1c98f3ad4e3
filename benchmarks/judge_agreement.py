"""Agreement of the offline `heuristic` refusal classifier with hand labels.

    .venv/bin/python benchmarks/judge_agreement.py [--show-errors]

The labelled set (`tests/data/refusal_labels.jsonl`) holds hand-written responses to
borderline-but-harmless requests: classic, policy-speak, redirecting, moralizing and broken
small-model refusals, and compliant answers that contain refusal-like words (disclaimers,
a villain's "I will not be stopped", quoted refusals, "sorry for the wait"), plus garbled
text. Target: agreement >= 0.9. The number is reported as measured, with its interval.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from honly_spec.evals.scoring import is_refusal  # noqa: E402
from honly_spec.evals.stats import wilson  # noqa: E402

LABELS = REPO / "tests" / "data" / "refusal_labels.jsonl"
TARGET = 0.9


def load() -> list[dict]:
    with LABELS.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def confusion(rows: list[dict]) -> Counter:
    counts: Counter = Counter()
    for row in rows:
        counts[(row["refusal"], is_refusal(row["response"]))] += 1
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--show-errors", action="store_true", help="print every disagreement")
    args = parser.parse_args()
    rows = load()
    counts = confusion(rows)
    n = len(rows)
    agree = counts[(True, True)] + counts[(False, False)]
    low, high = wilson(agree, n)
    tp, fp, fn = counts[(True, True)], counts[(False, True)], counts[(True, False)]
    print(f"hand-labelled responses: {n} ({sum(r['refusal'] for r in rows)} refusals)")
    print(f"agreement: {agree / n:.3f} [{low:.3f}, {high:.3f}] (target {TARGET})")
    print(f"refusal precision: {tp / max(1, tp + fp):.3f}  recall: {tp / max(1, tp + fn):.3f}")
    print(f"missed refusals: {fn}  false refusals: {fp}")
    by_kind: dict[str, list[int]] = {}
    for row in rows:
        right = is_refusal(row["response"]) == row["refusal"]
        by_kind.setdefault(row["kind"], [0, 0])[0 if right else 1] += 1
    print(
        "per kind (right/wrong): "
        + ", ".join(f"{k} {r}/{w}" for k, (r, w) in sorted(by_kind.items()))
    )
    if args.show_errors:
        for row in rows:
            if is_refusal(row["response"]) != row["refusal"]:
                print(
                    f"  {row['id']} [{row['kind']}] label={row['refusal']}: "
                    f"{row['response'][:140]!r}"
                )
    return 0 if agree / n >= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
