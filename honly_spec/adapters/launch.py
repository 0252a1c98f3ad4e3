"""Run a tool as a subprocess: stream its output to a log file, turn its progress lines into
events, and on failure say what failed, where the log is and how it ended.

Every backend (the local worker, and later Axolotl, OpenRLHF, vLLM) runs this way, so the
orchestrator never imports torch and a crashing tool cannot take it down.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from honly_spec.secrets import redact

EVENT_PREFIX = "@@honly "
TAIL_LINES = 15

Event = dict[str, Any]


class StageFailed(RuntimeError):
    """A tool exited non-zero. The message names the exit status, the log and its tail."""

    def __init__(self, what: str, code: int, log: Path, tail: list[str], reason: str | None = None):
        self.code, self.log, self.tail = code, log, tail
        if reason is None and code == -signal.SIGKILL:
            reason = "killed by SIGKILL, often the kernel's out-of-memory killer: see `dmesg`"
        elif reason is None:
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
    timeout_s: float | None = None,
) -> None:
    """Run `argv`, appending stdout+stderr to `log`; `@@honly {json}` lines become events.
    The tool runs in its own process group, so a timeout or an interrupt stops every process
    it started (a launcher's workers too)."""
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
            start_new_session=True,
        )
        assert process.stdout is not None
        fired = threading.Event()

        def time_out() -> None:
            fired.set()
            _stop_group(process)

        timer = threading.Timer(timeout_s, time_out) if timeout_s else None
        if timer:
            timer.start()
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
            _stop_group(process)
            process.wait()
            raise
        finally:
            if timer:
                timer.cancel()
    if fired.is_set():
        raise StageFailed(what, code, log, list(tail), f"timed out after {timeout_s:g} s")
    if code != 0:
        raise StageFailed(what, code, log, list(tail))


def _stop_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
