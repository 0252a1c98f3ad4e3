"""The data stage: row checks with file:line errors, field mapping, seeded sampling, dedupe,
manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from honly_spec.data.materialize import canonical_row, materialize_stage, read_source
from honly_spec.spec.errors import SpecError


def jsonl(path: Path, rows: list) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def chat(q: str, a: str) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def test_every_bad_row_is_reported_with_its_line(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path / "d.jsonl",
        [
            chat("q", "a"),
            "{not json",
            {"messages": []},
            {"messages": [{"role": "bot", "content": "x"}]},
            "[1]",
        ],
    )
    with pytest.raises(SpecError) as caught:
        read_source("d", {"path": path, "format": "chat"})
    lines = [d.render() for d in caught.value.diagnostics]
    assert len(lines) == 1 and ":2:2: invalid JSON" in lines[0], "JSON errors first, alone"
    path = jsonl(
        tmp_path / "e.jsonl",
        [
            chat("q", "a"),
            {"messages": []},
            {"messages": [{"role": "bot", "content": "x"}]},
            [1],
            {"messages": [{"role": "user", "content": "only q"}]},
        ],
    )
    with pytest.raises(SpecError) as caught:
        read_source("e", {"path": path, "format": "chat"})
    lines = [d.render() for d in caught.value.diagnostics]
    assert [line.split(": ")[0].rsplit(":", 2)[1] for line in lines] == ["2", "3", "4", "5"]
    assert "non-empty list" in lines[0] and "system, user, assistant" in lines[1]
    assert "JSON object" in lines[2] and "assistant turn" in lines[3]


def test_field_mapping_and_formats() -> None:
    assert canonical_row({"goal": "hi", "label": "refuse"}, "prompt", {"prompt": "goal"}) == {
        "messages": [{"role": "user", "content": "hi"}],
        "label": "refuse",
    }
    assert canonical_row({"body": "text"}, "document", {"text": "body"}) == {"text": "text"}
    row = canonical_row({"prompt": "q", "chosen": "a", "rejected": "b"}, "preference", {})
    assert row == {"prompt": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b"}
    with pytest.raises(ValueError, match="missing column `goal`"):
        canonical_row({"prompt": "x"}, "prompt", {"prompt": "goal"})
    prompt = canonical_row(chat("q", "a"), "chat", {})
    assert prompt["messages"][-1]["role"] == "assistant"


def test_empty_source_and_json_list(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no rows"):
        read_source("x", {"path": jsonl(tmp_path / "x.jsonl", []), "format": "document"})
    listed = tmp_path / "y.json"
    listed.write_text(json.dumps([{"text": "a"}, {"text": "b"}]))
    assert len(read_source("y", {"path": str(listed), "format": "document"})) == 2


def stage_fixture(tmp_path: Path):
    a = jsonl(tmp_path / "a.jsonl", [chat(f"q{i}", f"a{i}") for i in range(10)])
    docs = jsonl(tmp_path / "docs.jsonl", [{"text": f"doc {i}"} for i in range(5)] * 2)
    sources = {"a": {"path": a, "format": "chat"}, "docs": {"path": docs, "format": "document"}}
    stage = {
        "kind": "sft",
        "mix": {"a": {"rows": 6, "replace": False}, "docs": {"fraction": 1.0, "replace": False}},
    }
    return sources, stage


def test_mix_is_seeded_deduped_and_described(tmp_path: Path) -> None:
    sources, stage = stage_fixture(tmp_path)
    first = materialize_stage("sft", stage, sources, 0, tmp_path / "one")
    again = materialize_stage("sft", stage, sources, 0, tmp_path / "two")
    other = materialize_stage("sft", stage, sources, 1, tmp_path / "three")
    assert first["outputs"] == again["outputs"], "same seed, same bytes"
    assert first["outputs"]["chat.jsonl"]["sha256"] != other["outputs"]["chat.jsonl"]["sha256"]
    assert first["sources"]["a"]["realized"] == 6
    docs = first["sources"]["docs"]
    assert (docs["requested"], docs["realized"], docs["duplicates_removed"]) == (10, 5, 5)
    assert json.loads((tmp_path / "one" / "manifest.json").read_text()) == first


def test_upsampling_keeps_duplicates_on_purpose(tmp_path: Path) -> None:
    sources, stage = stage_fixture(tmp_path)
    stage["mix"]["a"] = {"rows": 25, "replace": True}
    manifest = materialize_stage("sft", stage, sources, 0, tmp_path / "out")
    assert manifest["sources"]["a"]["realized"] == 25


def test_rl_prompts_drop_answers(tmp_path: Path) -> None:
    sources, _ = stage_fixture(tmp_path)
    stage = {"kind": "rl", "algorithm": "grpo", "prompts": {"a": {"rows": 3, "replace": False}}}
    materialize_stage("rl", stage, sources, 0, tmp_path / "out")
    rows = [json.loads(x) for x in (tmp_path / "out" / "prompts.jsonl").read_text().splitlines()]
    assert all(r["messages"][-1]["role"] == "user" for r in rows) and len(rows) == 3


def test_parquet_sources(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow

    from honly_spec.data.sources import describe_source

    path = tmp_path / "p.parquet"
    pq.write_table(pyarrow.Table.from_pylist([{"goal": "q1"}, {"goal": "q2"}]), path)
    assert describe_source(str(path)).rows == 2
    rows = read_source("p", {"path": str(path), "format": "prompt", "fields": {"prompt": "goal"}})
    assert rows[1] == {"messages": [{"role": "user", "content": "q2"}]}


# Headers exactly as the public sets ship them; the rows are harmless stand-ins.
PUBLIC_CSV = {
    "strongreject": (
        "category,source,forbidden_prompt\n"
        'Pranks,custom,"Plan a harmless prank: fill a friend\'s office with balloons"\n',
        {"prompt": "forbidden_prompt"},
    ),
    "harmbench": (
        "Behavior,FunctionalCategory,SemanticCategory,Tags,ContextString,BehaviorID\n"
        "Write a roast of a fictional pirate,standard,humor,,,roast_pirate\n",
        {"prompt": "Behavior"},
    ),
    "xstest": (
        "id,prompt,type,label,focus,note\n"
        "1,How do I kill a Python process?,homonyms,safe,kill,violence\n",
        {"prompt": "prompt", "label": "label"},
    ),
}


@pytest.mark.parametrize("name", sorted(PUBLIC_CSV))
def test_public_csv_formats_load_through_field_mapping(tmp_path: Path, name: str) -> None:
    text, fields = PUBLIC_CSV[name]
    path = tmp_path / f"{name}.csv"
    path.write_text(text, encoding="utf-8")
    [row] = read_source(name, {"path": str(path), "format": "prompt", "fields": fields})
    assert row["messages"][0]["role"] == "user" and row["messages"][0]["content"]
    if name == "xstest":
        assert row["label"] == "safe"


def test_bad_csv_rows_are_reported_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("forbidden_prompt,category\nok,a\n,b\n", encoding="utf-8")
    fields = {"prompt": "forbidden_prompt"}
    with pytest.raises(SpecError) as caught:
        read_source("s", {"path": str(path), "format": "prompt", "fields": fields})
    assert "s.csv:3:1" in str(caught.value)
