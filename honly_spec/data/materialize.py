"""The data stage: read sources, check every row, realize a stage's mix, write its files.

Rows are mapped onto the canonical formats (`chat`, `document`, `prompt`, `preference`) via
the source's `fields`, and every row is checked; a bad row is reported as `file:line: what`
and nothing is written. Sampling is seeded per (stage seed, stage, source), so a mix is the
same on every machine. After sampling, exact duplicate rows are dropped unless the entry
upsamples on purpose (`replace: true`); the manifest records requested and realized counts,
duplicates removed, and the sha256 of every source and output file.

Outputs of a stage's mix (inside its store entry):
- sft: `chat.jsonl` ({messages}) and `documents.jsonl` ({text}, and a `prefix` such as
  `<DOCTAG>` that is read but never a loss target)
- online rl: `prompts.jsonl` ({messages} ending in a user turn)
- dpo: `preference.jsonl` ({prompt: messages, chosen, rejected})
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
from pathlib import Path
from typing import Any

from honly_spec.data.mix import mix_field, mix_use, realize
from honly_spec.data.sources import HUB_SOURCE, SourceProblem, parquet_module, sha256_file
from honly_spec.spec.errors import Diagnostic, Pos, SpecError
from honly_spec.spec.loader import display_path
from honly_spec.store.keys import canonical_json
from honly_spec.store.store import write_json

ROLES = frozenset({"system", "user", "assistant"})
MAX_REPORTED = 20
OUTPUT_FILES = {"chat": "chat.jsonl", "document": "documents.jsonl"}


class RowProblem(ValueError):
    pass


def _messages(value: Any, what: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise RowProblem(f"`{what}` must be a non-empty list of {{role, content}} messages")
    out = []
    for index, message in enumerate(value):
        if not isinstance(message, dict):
            raise RowProblem(f"`{what}[{index}]` must be a mapping with `role` and `content`")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise RowProblem(f"`{what}[{index}].role` must be one of system, user, assistant")
        if not isinstance(content, str):
            raise RowProblem(f"`{what}[{index}].content` must be a string")
        out.append({"role": role, "content": content})
    return out


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RowProblem(f"`{what}` must be a non-empty string")
    return value


def prompt_messages(row: dict[str, Any]) -> list[dict[str, str]]:
    """A prompt as messages ending in a user turn (chat rows drop their final answer)."""
    if "prompt" in row and isinstance(row["prompt"], str):
        return [{"role": "user", "content": _text(row["prompt"], "prompt")}]
    key = "prompt" if "prompt" in row else "messages"
    messages = _messages(row.get(key), key)
    while messages and messages[-1]["role"] == "assistant":
        messages.pop()
    if not messages or messages[-1]["role"] != "user":
        raise RowProblem(f"`{key}` must contain a user turn")
    return messages


def canonical_row(row: Any, fmt: str, fields: dict[str, str]) -> dict[str, Any]:
    """Map one raw row onto the canonical shape of `fmt`, or raise `RowProblem`."""
    if not isinstance(row, dict):
        raise RowProblem("each row must be a JSON object")
    row = {**row, **{canon: row[col] for canon, col in fields.items() if col in row}}
    missing = [f"`{col}` (for {canon})" for canon, col in fields.items() if col not in row]
    if missing:
        raise RowProblem(f"missing column {', '.join(missing)}")
    if fmt == "chat":
        messages = _messages(row.get("messages"), "messages")
        if "system" in row:
            messages = [{"role": "system", "content": _text(row["system"], "system")}, *messages]
        if not any(m["role"] == "assistant" for m in messages):
            raise RowProblem("a chat row needs at least one assistant turn to learn from")
        return {"messages": messages}
    if fmt == "document":
        document = {"text": _text(row.get("text"), "text")}
        if row.get("prefix") is not None:  # e.g. <DOCTAG>: read, but never a loss target
            document["prefix"] = _text(row["prefix"], "prefix")
        return document
    if fmt == "prompt":
        out: dict[str, Any] = {"messages": prompt_messages(row)}
        if row.get("label") is not None:
            out["label"] = _text(row["label"], "label")
        return out
    if fmt == "preference":
        prompt = prompt_messages(row)
        answers = {}
        for side in ("chosen", "rejected"):
            value = row.get(side)
            if isinstance(value, list):
                answers[side] = _messages(value, side)[-1]["content"]
            else:
                answers[side] = _text(value, side)
        return {"prompt": prompt, **answers}
    raise RowProblem(f"unknown format {fmt}")


def _raw_rows(path: str, source_label: str) -> list[tuple[int, Any]]:
    """(line number, parsed value) for each row of a local JSONL/JSON/CSV file or hub
    dataset. CSV (the format StrongREJECT, HarmBench and XSTest ship) gives one mapping per
    record, keyed by the header; `fields:` maps its columns."""
    if path.startswith("hf:"):
        return list(enumerate(_hub_rows(path), start=1))
    file = Path(path)
    if file.suffix == ".parquet":
        try:
            table = parquet_module().read_table(file)
        except (SourceProblem, OSError) as exc:
            raise SpecError([Diagnostic(Pos(source_label), (), str(exc))]) from None
        return list(enumerate(table.to_pylist(), start=1))
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise SpecError([Diagnostic(Pos(source_label), (), "not valid UTF-8 text")]) from None
    except OSError as exc:
        raise SpecError(
            [Diagnostic(Pos(source_label), (), f"cannot read: {exc.strerror}")]
        ) from None
    if file.suffix == ".csv":
        try:
            reader = csv.DictReader(io.StringIO(text, newline=""))
            return [(reader.line_num, row) for row in reader]
        except csv.Error as exc:
            raise SpecError([Diagnostic(Pos(source_label), (), f"invalid CSV: {exc}")]) from None
    if file.suffix == ".json":
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(
                [
                    Diagnostic(
                        Pos(source_label, exc.lineno, exc.colno), (), f"invalid JSON: {exc.msg}"
                    )
                ]
            ) from None
        if not isinstance(loaded, list):
            raise SpecError(
                [Diagnostic(Pos(source_label), (), "a .json source holds a list of rows")]
            )
        return list(enumerate(loaded, start=1))
    rows, problems = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            problems.append(
                Diagnostic(Pos(source_label, number, exc.colno), (), f"invalid JSON: {exc.msg}")
            )
    if problems:
        raise SpecError(_capped(problems))
    return rows


def _hub_rows(path: str) -> list[Any]:
    match = HUB_SOURCE.match(path)
    assert match, "validated by check_spec"
    try:
        import datasets
    except ImportError:
        raise SpecError(
            [Diagnostic(Pos(path), (), "reading hub datasets needs the `datasets` package")]
        ) from None
    try:
        loaded = datasets.load_dataset(
            match["repo"], revision=match["revision"], split=match["split"] or "train"
        )
    except Exception as exc:  # network, auth, missing split: all are the user's to fix
        raise SpecError([Diagnostic(Pos(path), (), f"cannot load hub dataset: {exc}")]) from None
    return list(loaded)


def _capped(problems: list[Diagnostic]) -> list[Diagnostic]:
    if len(problems) <= MAX_REPORTED:
        return problems
    rest = len(problems) - MAX_REPORTED
    last = problems[MAX_REPORTED]
    return [*problems[:MAX_REPORTED], Diagnostic(last.pos, (), f"... and {rest} more problems")]


def read_source(name: str, source: dict[str, Any]) -> list[dict[str, Any]]:
    """Every row of a source in canonical form; all bad rows reported together."""
    label = source["path"] if source["path"].startswith("hf:") else display_path(source["path"])
    rows, problems = [], []
    for number, raw in _raw_rows(source["path"], label):
        try:
            rows.append(canonical_row(raw, source["format"], source.get("fields", {})))
        except RowProblem as problem:
            problems.append(
                Diagnostic(
                    Pos(label, number, 1), ("data", name), f"{source['format']} row: {problem}"
                )
            )
    if problems:
        raise SpecError(_capped(problems))
    if not rows:
        raise SpecError([Diagnostic(Pos(label), ("data", name), "the source has no rows")])
    return rows


def _sample(rows: list[dict], count: int, replace: bool, seed: str) -> list[dict]:
    rng = random.Random(seed)
    if replace:
        return [rows[rng.randrange(len(rows))] for _ in range(count)]
    order = list(range(len(rows)))
    rng.shuffle(order)
    return [rows[i] for i in sorted(order[:count])]


def _dedupe(rows: list[dict]) -> tuple[list[dict], int]:
    seen: set[str] = set()
    out = []
    for row in rows:
        digest = hashlib.sha256(canonical_json(row).encode()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            out.append(row)
    return out, len(rows) - len(out)


def materialize_stage(
    stage_name: str,
    stage: dict[str, Any],
    sources: dict[str, dict[str, Any]],
    seed: int,
    out_dir: Path,
) -> dict[str, Any]:
    """Realize a stage's mix into `out_dir`; return the manifest (also written there)."""
    field = mix_field(stage)
    entries = stage[field]
    loaded = {name: read_source(name, sources[name]) for name in entries}
    counts, problems = realize(
        entries, {n: len(r) for n, r in loaded.items()}, stage.get("total_rows")
    )
    if problems:
        raise SpecError(
            [
                Diagnostic(None, ("stages", stage_name, field, p.source, p.field), p.message)
                for p in problems
            ]
        )
    by_file: dict[str, list[dict]] = {}
    report = {}
    for name, rows in loaded.items():
        entry = entries[name]
        picked = _sample(rows, counts[name], entry["replace"], f"{seed}:{stage_name}:{name}")
        removed = 0
        if not entry["replace"]:
            picked, removed = _dedupe(picked)
        fmt = sources[name]["format"]
        target = _output_file(stage, fmt)
        by_file.setdefault(target, []).extend(_as_training_row(row, fmt, stage) for row in picked)
        report[name] = {
            "format": fmt,
            "source_rows": len(rows),
            "requested": counts[name],
            "realized": len(picked),
            "duplicates_removed": removed,
            "file": target,
            "source_sha256": None
            if sources[name]["path"].startswith("hf:")
            else sha256_file(Path(sources[name]["path"])),
        }
    rng = random.Random(f"{seed}:{stage_name}:order")
    outputs = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    for filename, rows in sorted(by_file.items()):
        rng.shuffle(rows)
        path = out_dir / filename
        with path.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        outputs[filename] = {"rows": len(rows), "sha256": sha256_file(path)}
    manifest = {"stage": stage_name, "use": mix_use(stage), "sources": report, "outputs": outputs}
    write_json(out_dir / "manifest.json", manifest)
    return manifest


def stage_outputs(stage: dict[str, Any], sources: dict[str, Any]) -> list[str]:
    """The files the data stage writes for `stage` (one per canonical shape it trains on)."""
    mix = stage.get(mix_field(stage)) or {}
    return sorted({_output_file(stage, sources[name]["format"]) for name in mix})


def _output_file(stage: dict[str, Any], fmt: str) -> str:
    use = mix_use(stage)
    if use == "sft":
        return OUTPUT_FILES[fmt]
    return "preference.jsonl" if use == "dpo" else "prompts.jsonl"


def _as_training_row(row: dict[str, Any], fmt: str, stage: dict[str, Any]) -> dict[str, Any]:
    """Online RL trains on prompts only: chat and preference rows keep their prompt part.
    For OpenRLHF, prompt rows always carry a `label` (its `--data.label_key` reads every
    row) and preference answers are message lists (it concatenates prompt and answer
    messages before applying the chat template)."""
    openrlhf = stage.get("backend") == "openrlhf"
    if mix_use(stage) == "rl":
        if fmt in ("chat", "preference"):
            row = {"messages": row["prompt"] if fmt == "preference" else prompt_messages(row)}
        return {**row, "label": row.get("label") or ""} if openrlhf else row
    if mix_use(stage) == "dpo" and openrlhf:
        return {
            "prompt": row["prompt"],
            **{
                side: [{"role": "assistant", "content": row[side]}]
                for side in ("chosen", "rejected")
            },
        }
    return row
