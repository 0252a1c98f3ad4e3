"""Judges: models (or rules) that grade responses, behind one small interface.

    judge = Judge(JudgeConfig.from_spec(spec["eval"]["judge"]), cache=JudgeCache(path))
    scores = judge.grade(prompts, parse=strongreject.parse)

A `Judge` sends each grading prompt to its provider's client with bounded concurrency,
retries transport failures (429, 5xx, timeouts) with exponential backoff, and retries an
answer its parser cannot read; an answer still unreadable after the retries is counted and
returned as None, never silently scored. Every answer is cached by (judge identity, prompt),
so re-grading unchanged generations makes no call. Calls, cache hits, retries, parse
failures and tokens are counted in `judge.stats`.
"""

from honly_spec.evals.judges.base import (
    Completion,
    Judge,
    JudgeCache,
    JudgeConfig,
    JudgeError,
    JudgeStats,
    ParseError,
)

__all__ = [
    "Completion",
    "Judge",
    "JudgeCache",
    "JudgeConfig",
    "JudgeError",
    "JudgeStats",
    "ParseError",
]
