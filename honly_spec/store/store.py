"""The content-addressed stage store.

Design note
-----------
Every stage (and every eval of a checkpoint) is identified by a *key*: the sha256 of the
canonical JSON of everything that determines its output — stage kind, backend and pinned
tool version, the stage's semantic fields with defaults filled in, the digest of every data
source it reads, the key of the stage it starts from (or the base model's identity) and a
stage-format version (`keys.STAGE_FORMAT`). Runtime fields (logging, micro-batch size,
judge endpoint and concurrency, tracking, profiles) are excluded on purpose: they change how
a stage runs, not what it produces. Hashing the whole spec would be too strict (renaming
the experiment or changing an eval would re-train everything); hashing less than the
semantic fields would silently reuse stale outputs, the classic cache bug. The schema marks
runtime fields (`x-honly-runtime`) and a test enumerates them.

Because keys chain through `start`, changing a stage changes the key of everything
downstream and nothing upstream, and two specs (or matrix cells) that share a prefix share
its outputs.

Layout: `<root>/<kind>/<key[:12]>/` holds a stage's outputs and `record.json` (full key, the
key inputs, resolved config, versions, timings). An entry only becomes visible complete: it
is written into `<root>/tmp/` and renamed into place under a per-entry lock, so a crash
never leaves a half-written entry that looks finished; the next build of that key resumes
in the directory the crashed one left (a trainer from its newest checkpoint, see
`save_steps`). `<root>/refs/<spec>/<stage>.json`
remembers the last key a spec's stage was built with, which is how `honly plan` can say
STALE and *why* (which key input changed) instead of a bare MISS.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

RECORD = "record.json"
RESUMABLE = "work/trainer/checkpoint-*"  # what a failed build keeps for the next one
KEY_PREFIX = 12


def default_home() -> Path:
    """`$HONLY_HOME`, or `~/.cache/honly`."""
    return Path(os.environ.get("HONLY_HOME") or Path.home() / ".cache" / "honly")


class Store:
    def __init__(self, root: Path, on_wait: Callable[[str, str], None] | None = None):
        self.root = Path(root)
        self.on_wait = on_wait or (lambda name, holder: None)

    def entry_dir(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:KEY_PREFIX]

    def lookup(self, kind: str, key: str) -> dict[str, Any] | None:
        """The record of a finished entry with exactly this key, else None."""
        path = self.entry_dir(kind, key) / RECORD
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if record.get("key") == key else None

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """An exclusive lock shared by every process using this store. A busy lock is
        reported (who holds it, since when) through `on_wait` before waiting for it. The
        kernel releases the lock of a process that dies, so no lock outlives its holder."""
        lock_dir = self.root / "locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        with open(lock_dir / f"{name}.lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                self.on_wait(name, handle.read().strip() or "another process")
                fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            handle.truncate()
            handle.write(
                f"pid {os.getpid()} on {socket.gethostname()} since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S')} ({' '.join(sys.argv[:3])})"
            )
            handle.flush()  # fmt: skip
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def commit(
        self, kind: str, key: str, build: Callable[[Path], dict[str, Any]], replace: bool = False
    ) -> dict[str, Any]:
        """Build an entry in a temporary directory and publish it atomically.

        `build(tmp_dir)` writes the outputs and returns the record fields. If another
        process finished the same key first, its record is returned and nothing is built;
        with `replace` (`--force`) the entry is rebuilt and swapped in."""
        with self.lock(f"{kind}-{key[:KEY_PREFIX]}"):
            existing = self.lookup(kind, key)
            if existing is not None and not replace:
                return existing
            final = self.entry_dir(kind, key)
            if final.exists() and existing is None:
                raise RuntimeError(
                    f"{final} holds a different key (sha256 prefix collision or a damaged "
                    "entry); move it away and rerun"
                )
            tmp_root = self.root / "tmp"
            tmp_root.mkdir(parents=True, exist_ok=True)
            tmp = self._resume_dir(tmp_root, f"{kind}-{key[:KEY_PREFIX]}-") or Path(
                tempfile.mkdtemp(prefix=f"{kind}-{key[:KEY_PREFIX]}-", dir=tmp_root)
            )
            try:
                record = {**build(tmp), "key": key, "kind": kind}
                write_json(tmp / RECORD, record)
                final.parent.mkdir(parents=True, exist_ok=True)
                if existing is not None:  # replace: move the old entry aside, then drop it
                    old = tmp_root / f"replaced-{tmp.name}"
                    os.rename(final, old)
                    os.rename(tmp, final)
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    os.rename(tmp, final)
            except BaseException:
                if not any(tmp.glob(RESUMABLE)):  # keep a trainer's checkpoints to resume
                    shutil.rmtree(tmp, ignore_errors=True)
                raise
            return record

    @staticmethod
    def _resume_dir(tmp_root: Path, prefix: str) -> Path | None:
        """The build directory a killed build of this key left behind (the newest; older
        ones are removed). Only called under the key's lock, so no live process owns one:
        the build resumes in it (a trainer from its last checkpoint)."""
        stale = sorted(tmp_root.glob(f"{prefix}*"), key=lambda p: p.stat().st_mtime)
        for old in stale[:-1]:
            shutil.rmtree(old, ignore_errors=True)
        return stale[-1] if stale else None

    def ref_path(self, spec_name: str, node: str) -> Path:
        return self.root / "refs" / spec_name / f"{node}.json"

    def read_ref(self, spec_name: str, node: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.ref_path(spec_name, node).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def write_ref(
        self, spec_name: str, node: str, key: str, inputs: dict[str, Any], after: str | None = None
    ) -> None:
        """Remember what a spec's node was last built from (`after`: its parent stage)."""
        write_json(self.ref_path(spec_name, node), {"key": key, "inputs": inputs, "after": after})


def write_json(path: Path, value: Any) -> None:
    """Write JSON via a temporary file and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(value, handle, indent=2, sort_keys=True, ensure_ascii=False)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
