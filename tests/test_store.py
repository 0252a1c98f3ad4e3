"""The content-addressed store: atomic publication, exact-key lookup, one builder per key."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from honly_spec.store.store import Store, write_json

KEY = "ab" * 32


def test_commit_publishes_atomically(tmp_path: Path) -> None:
    store = Store(tmp_path)

    def build(tmp: Path) -> dict:
        (tmp / "weights.bin").write_bytes(b"x")
        assert store.lookup("sft", KEY) is None, "not visible before the rename"
        return {"note": "built"}

    record = store.commit("sft", KEY, build)
    assert record == {"note": "built", "key": KEY, "kind": "sft"}
    assert store.lookup("sft", KEY) == record
    assert (store.entry_dir("sft", KEY) / "weights.bin").read_bytes() == b"x"
    assert not list((tmp_path / "tmp").iterdir())


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path)

    def build(tmp: Path) -> dict:
        (tmp / "partial").write_text("half")
        raise RuntimeError("trainer crashed")

    with pytest.raises(RuntimeError):
        store.commit("sft", KEY, build)
    assert store.lookup("sft", KEY) is None
    assert not store.entry_dir("sft", KEY).exists()
    assert not list((tmp_path / "tmp").iterdir())


def test_lookup_needs_the_full_key(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.commit("sft", KEY, lambda tmp: {})
    other = KEY[:12] + "cd" * 26
    assert store.lookup("sft", other) is None
    with pytest.raises(RuntimeError, match="different key"):
        store.commit("sft", other, lambda tmp: {})


def _build_once(root: str, log: str) -> None:
    def build(tmp: Path) -> dict:
        with open(log, "a") as handle:
            handle.write("built\n")
        time.sleep(0.3)
        return {}

    Store(Path(root)).commit("sft", KEY, build)


def test_two_processes_build_a_key_once(tmp_path: Path) -> None:
    log = tmp_path / "log"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_build_once, args=(str(tmp_path / "s"), str(log))) for _ in "ab"]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    assert log.read_text() == "built\n"


def test_refs_and_json_writes(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert store.read_ref("spec", "sft") is None
    store.write_ref("spec", "sft", KEY, {"a": 1})
    assert store.read_ref("spec", "sft") == {"key": KEY, "inputs": {"a": 1}, "after": None}
    write_json(tmp_path / "x.json", {"b": [1]})
    assert json.loads((tmp_path / "x.json").read_text()) == {"b": [1]}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".x.json")] == []


def _hold_lock(root: str, ready: str, release: str) -> None:
    import time as clock

    with Store(Path(root)).lock("sft-abc"):
        Path(ready).write_text("held")
        while not Path(release).exists():
            clock.sleep(0.05)


def test_a_busy_lock_says_who_holds_it_and_a_dead_holder_frees_it(tmp_path: Path) -> None:
    import signal

    ctx = multiprocessing.get_context("spawn")
    ready, release = tmp_path / "ready", tmp_path / "release"
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path), str(ready), str(release)))
    holder.start()
    while not ready.exists():
        time.sleep(0.05)
    waits: list[tuple[str, str]] = []

    def waiting(name: str, who: str) -> None:
        waits.append((name, who))
        os.kill(holder.pid, signal.SIGKILL)  # the holder dies while we wait

    store = Store(tmp_path, on_wait=waiting)
    with store.lock("sft-abc"):  # waits, reports the holder, gets it once the holder dies
        pass
    holder.join(10)
    assert holder.exitcode == -signal.SIGKILL
    [(name, who)] = waits
    assert name == "sft-abc" and who.startswith(f"pid {holder.pid} on ")
    with store.lock("sft-abc"):  # free now: no report
        pass
    assert len(waits) == 1


def test_a_killed_build_leaves_nothing_visible_and_the_next_resumes_in_its_folder(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path)
    left = tmp_path / "tmp" / f"sft-{KEY[:12]}-killed"
    (left / "work" / "trainer" / "checkpoint-2").mkdir(parents=True)
    older = tmp_path / "tmp" / f"sft-{KEY[:12]}-older"
    older.mkdir()
    os.utime(older, (1, 1))
    assert store.lookup("sft", KEY) is None
    seen = []

    def build(tmp: Path) -> dict:
        seen.append(tmp)
        assert (tmp / "work" / "trainer" / "checkpoint-2").is_dir()
        return {}

    store.commit("sft", KEY, build)
    assert seen == [left] and not older.exists() and not left.exists()
    assert store.lookup("sft", KEY) is not None

    def failing(tmp: Path) -> dict:
        (tmp / "work" / "trainer" / "checkpoint-4").mkdir(parents=True)
        raise RuntimeError("crashed after a checkpoint")

    other = "b" * 64
    with contextlib.suppress(RuntimeError):
        store.commit("sft", other, failing)
    [kept] = (tmp_path / "tmp").glob(f"sft-{other[:12]}-*")
    assert (kept / "work" / "trainer" / "checkpoint-4").is_dir(), "checkpoints are kept"
    assert store.lookup("sft", other) is None
