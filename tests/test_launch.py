"""Tool subprocesses: a timeout stops the tool and everything it started; an out-of-memory
kill and a crash are reported with the log and its last lines."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from honly_spec.adapters.launch import StageFailed, run_tool

SPAWNS_A_CHILD = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "print('child', child.pid, flush=True)\n"
    "time.sleep(60)\n"
)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_a_timeout_stops_the_tool_and_its_children(tmp_path: Path) -> None:
    log = tmp_path / "tool.log"
    start = time.time()
    with pytest.raises(StageFailed, match=r"timed out after 1\.5 s") as caught:
        run_tool("sleepy stage", [sys.executable, "-c", SPAWNS_A_CHILD], log, timeout_s=1.5)
    assert time.time() - start < 30
    child = int(next(line for line in caught.value.tail if line.startswith("child")).split()[1])
    deadline = time.time() + 10
    while _alive(child) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(child), "the tool's own child process was stopped too"
    assert str(log) in str(caught.value)


def test_an_out_of_memory_kill_is_named(tmp_path: Path) -> None:
    killed = "import os, signal; print('allocating', flush=True); os.kill(os.getpid(), 9)"
    with pytest.raises(StageFailed, match="out-of-memory killer") as caught:
        run_tool("big stage", [sys.executable, "-c", killed], tmp_path / "oom.log")
    assert caught.value.tail == ["allocating"]


def test_a_crash_reports_status_log_and_tail(tmp_path: Path) -> None:
    crash = "import sys; print('step 1'); sys.exit('CUDA error: device-side assert')"
    with pytest.raises(StageFailed, match="exit status 1") as caught:
        run_tool("stage sft", [sys.executable, "-c", crash], tmp_path / "sft.log")
    assert caught.value.tail[-1] == "CUDA error: device-side assert"
    assert "step 1" in (tmp_path / "sft.log").read_text()
