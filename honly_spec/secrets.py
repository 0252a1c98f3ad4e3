"""Secrets stay out of everything honly writes.

API keys reach honly only through environment variables (a spec names the variable with
`api_key_env`; a literal key in a spec is a validation error). Their values are still worth
guarding where text from the outside world is written or shown: a tool's log, an API's
error message, the error printed at exit. `redact` replaces the value of every variable
that looks like a secret (its name ends in `_KEY`, `_TOKEN`, `_SECRET` or `_PASSWORD`, or a
spec names it) with `***`.
"""

from __future__ import annotations

import os
import re

SECRET_NAME = re.compile(r"(_KEY|_TOKEN|_SECRET|_PASSWORD)$|^(HF_TOKEN|WANDB_API_KEY)$", re.I)
MIN_LENGTH = 8  # shorter values are too likely to occur in ordinary text
_named: set[str] = set()


def register(name: str | None) -> None:
    """Treat the variable `name` (a spec's `api_key_env`) as a secret from now on."""
    if name:
        _named.add(name)


def secret_values() -> list[str]:
    values = {
        value
        for name, value in os.environ.items()
        if (name in _named or SECRET_NAME.search(name)) and len(value) >= MIN_LENGTH
    }
    return sorted(values, key=len, reverse=True)  # longest first: no partial leftovers


def redact(text: str) -> str:
    for value in secret_values():
        text = text.replace(value, "***")
    return text
