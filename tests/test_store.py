"""The content-addressed store: atomic publication, exact-key lookup, one builder per key."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import pytest

from honly_spec.store import Store, write_json

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
