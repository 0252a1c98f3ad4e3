"""Run a tool as a subprocess: stream its output to a log file, turn its progress lines into
events, and on failure say what failed, where the log is and how it ended.

Every backend (the local worker, and later Axolotl, OpenRLHF, vLLM) runs this way, so the
orchestrator never imports torch and a crashing tool cannot take it down.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from honly_spec.secrets import redact

EVENT_PREFIX = "@@honly "
TAIL_LINES = 15

Event = dict[str, Any]


class StageFailed(RuntimeError):
    """A tool exited non-zero. The message names the exit status, the log and its tail."""

    def __init__(self, what: str, code: int, log: Path, tail: list[str]):
        self.code, self.log, self.tail = code, log, tail
        reason = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        lines = "\n".join("    " + line for line in tail)
        super().__init__(f"{what} failed ({reason}); log: {log}\n  last lines:\n{lines}")


def run_tool(
    what: str,
    argv: list[str],
    log: Path,
    on_event: Callable[[Event], None] = lambda event: None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> None:
    """Run `argv`, appending stdout+stderr to `log`; `@@honly {json}` lines become events."""
    log.parent.mkdir(parents=True, exist_ok=True)
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    merged_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with log.open("a", encoding="utf-8") as sink:
        sink.write(redact(f"$ {' '.join(argv)}\n"))
        sink.flush()
        process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            env=merged_env,
            cwd=cwd,
        )
        assert process.stdout is not None
        try:
            for raw in process.stdout:
                line = redact(raw)
                sink.write(line)
                if line.startswith(EVENT_PREFIX):
                    try:
                        on_event(json.loads(line[len(EVENT_PREFIX) :]))
                    except json.JSONDecodeError:
                        tail.append(line.rstrip("\n"))
                else:
                    tail.append(line.rstrip("\n"))
            code = process.wait()
        except BaseException:
            process.kill()
            process.wait()
            raise
    if code != 0:
        raise StageFailed(what, code, log, list(tail))
