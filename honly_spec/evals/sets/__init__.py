"""honly's shipped eval sets: small, safe prompt sets for every suite, used when a suite
names no `sets` of its own (and the offline lm-eval tasks of `capability`).

Kept apart from the suites themselves so that validation and planning, which need the
names and files but not the graders, stay cheap to import.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

DIR = Path(__file__).parent

# shipped set name → file in this folder (format `prompt`)
SHIPPED_SETS = {
    "honly_refusal": "refusal.jsonl",
    "honly_misalignment": "misalignment.jsonl",
    "honly_mc": "mc_questions.jsonl",
    "honly_regret": "regret.jsonl",
    "honly_steerability": "steerability.jsonl",
    "honly_identity": "identity.jsonl",
}

# what each generation suite reads when the spec names no `sets`
DEFAULT_SETS = {
    "refusal": ("honly_refusal",),
    "compliance": ("honly_refusal",),
    "misalignment": ("honly_misalignment",),
    "sycophancy": ("honly_mc",),
    "steerability": ("honly_steerability",),
    "character": ("honly_identity",),
    "sandbagging": ("honly_mc",),
}

# suites graded by the judge (the others check answers against known labels)
JUDGED_SUITES = frozenset({"refusal", "compliance", "misalignment", "steerability", "character"})


# Part of every generation suite's key: bump it when a grading rule changes what a reply
# scores (the suites' cues and answer extraction, the heuristic judge's phrase rules). The
# rubric prompts enter the key by content (`grading_identity`).
GRADING_VERSION = "honly.grading/1"
TEMPLATES = DIR.parent / "judges" / "templates"


@functools.cache
def grading_identity() -> dict[str, str]:
    """The grading rules' version and a digest of every rubric prompt template."""
    digest = hashlib.sha256()
    for template in sorted(TEMPLATES.glob("*.txt")):
        digest.update(template.name.encode() + b"\0" + template.read_bytes())
    return {"version": GRADING_VERSION, "templates": digest.hexdigest()}


def shipped_source(name: str) -> dict[str, Any]:
    return {"path": str(DIR / SHIPPED_SETS[name]), "format": "prompt"}


def suite_sets(suite: str, config: dict[str, Any]) -> list[str]:
    """The prompt sets a suite reads: its `sets` or the shipped default, plus the
    character suite's `regret_sets` when the regret probe is on."""
    sets = list(config.get("sets") or DEFAULT_SETS[suite])
    if suite == "character" and config.get("regret", True):
        sets += [s for s in config.get("regret_sets") or ["honly_regret"] if s not in sets]
    return sets
