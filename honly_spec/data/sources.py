"""Data sources as the planner sees them: identity (digest) and size, nothing more.

Reading and validating every row happens when a stage materializes its mix; planning only
needs to know that a file exists, how many rows it has (for realized mix counts) and its
sha256 (for stage keys). A hub source (`hf:ORG/NAME@REVISION#SPLIT`) is identified by its
pinned revision; its size is unknown until it is downloaded.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

HUB_SOURCE = re.compile(
    r"^hf:(?P<repo>[^@#\s/]+/[^@#\s/]+)(?:@(?P<revision>[^#\s]+))?(?:#(?P<split>\S+))?$"
)
LOCAL_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


@dataclass(frozen=True)
class SourceInfo:
    """What a plan knows about one source. `rows` is None when it cannot be known yet."""

    identity: dict
    rows: int | None


class SourceProblem(ValueError):
    """A source that cannot be used; the message says why (the caller adds the position)."""


def describe_source(path: str) -> SourceInfo:
    """Digest and row count of a local source, or the identity of a hub source."""
    hub = HUB_SOURCE.match(path)
    if path.startswith("hf:"):
        if not hub:
            raise SourceProblem(f"`{path}` is not a hub source; write hf:ORG/NAME@REVISION#SPLIT")
        return SourceInfo(
            {
                "hub": hub["repo"],
                "revision": hub["revision"],
                "split": hub["split"] or "train",
            },
            None,
        )
    file = Path(path)
    if not file.exists():
        raise SourceProblem(f"data file not found: {path}")
    if not file.is_file():
        raise SourceProblem(f"{path} is not a file")
    if file.suffix not in LOCAL_SUFFIXES:
        raise SourceProblem(
            f"unsupported data file type `{file.suffix or '(none)'}`; "
            "use .jsonl, .json, .csv or .parquet"
        )
    try:
        return SourceInfo({"sha256": sha256_file(file)}, count_rows(file))
    except OSError as exc:
        raise SourceProblem(f"cannot read {path}: {exc.strerror}") from None


def sha256_file(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parquet_module():
    """pyarrow.parquet, or a SourceProblem saying how to get it."""
    try:
        import pyarrow.parquet
    except ImportError:
        raise SourceProblem("reading Parquet needs the `pyarrow` package") from None
    return pyarrow.parquet


def _check_jsonl(file: Path) -> int:
    """Rows of a JSONL file, each checked to be a UTF-8 JSON object, so that `honly
    validate` names the first bad line before any GPU time is spent (the data stage checks
    each row's fields)."""
    rows = 0
    with file.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            where = f"{file}:{number}"
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise SourceProblem(f"{where}: not valid UTF-8; save the file as UTF-8") from None
            except json.JSONDecodeError as error:
                raise SourceProblem(f"{where}: not valid JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise SourceProblem(f"{where}: each row must be a JSON object") from None
            rows += 1
    if rows == 0:
        raise SourceProblem(f"{file} has no rows")
    return rows


def count_rows(file: Path) -> int:
    """Rows in a JSONL file (non-blank lines), a JSON list, a CSV file (records after the
    header), or a Parquet file (metadata)."""
    if file.suffix == ".parquet":
        try:
            return parquet_module().read_metadata(file).num_rows
        except OSError as exc:
            raise SourceProblem(f"{file} is not a readable Parquet file: {exc}") from None
    if file.suffix == ".jsonl":
        return _check_jsonl(file)
    if file.suffix == ".csv":
        try:
            with file.open(encoding="utf-8-sig", newline="") as handle:
                return sum(1 for _ in csv.DictReader(handle))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise SourceProblem(f"{file} is not a readable CSV file: {exc}") from None
    try:
        loaded = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceProblem(f"{file} is not valid JSON: {exc}") from None
    if not isinstance(loaded, list):
        raise SourceProblem(f"{file} must hold a JSON list of rows")
    return len(loaded)
