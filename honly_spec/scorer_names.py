"""Names of the scorers a spec may use as RL reward terms.

Validation must not import scorer code (it pulls in judges and model clients), so the
built-in names are listed here with one line each; other packages add scorers through the
`honly.scorers` entry-point group, whose names are read from package metadata only.
"""

from __future__ import annotations

ENTRY_POINT_GROUP = "honly.scorers"

BUILTIN_REWARD_SCORERS: dict[str, str] = {
    "compliance": "1 when the response fully answers the request, 0 when it refuses",
    "refusal": "1 when the response refuses (use a negative weight to penalize refusals)",
    "character": "agreement of the response with the constitution's stated character",
    "steerability": "1 when the response follows the operator's system-prompt instruction",
}


def reward_scorer_names() -> list[str]:
    """Built-in reward scorers plus those registered by installed packages (reading package
    metadata costs tens of milliseconds, so callers ask only for names that are not built in)."""
    from importlib.metadata import entry_points

    plugins = [ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)]
    return sorted({*BUILTIN_REWARD_SCORERS, *plugins})
