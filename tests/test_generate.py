"""The generate stage's pure core: traits, parsing, filters and the three rounds."""

from __future__ import annotations

import json

import pytest

from honly_spec.data.generate import (
    DOC_TYPE,
    Filter,
    NearDuplicates,
    first_line,
    generate,
    traits,
)
from honly_spec.plan.graph import compile_graph
from honly_spec.spec.check import check_spec
from honly_spec.spec.errors import SpecError
from tests.conftest import MINIMAL, REPO

CONSTITUTION = """\
# Title

Intro paragraph, not a trait.

## Identity
- Wren is an AI assistant,
  and says so.
- Wren is calm.
"""

FILTERS = {"min_chars": 5, "max_chars": 400, "drop_refusals": True, "near_duplicate": 0.95}


def test_traits_are_bullets_with_continuations_or_paragraphs() -> None:
    assert traits(CONSTITUTION) == ["Wren is an AI assistant, and says so.", "Wren is calm."]
    assert traits("# T\n\nFirst idea.\n\nSecond\nidea.\n") == ["First idea.", "Second idea."]
    shipped = (REPO / "data" / "demo" / "constitution.md").read_text()
    assert len(traits(shipped)) == 10


def test_first_line_strips_numbering_labels_and_quotes() -> None:
    assert first_line('\n1. "What is your name?"\n2. Other') == "What is your name?"
    assert first_line("Question 3: Who made you?") == "Who made you?"
    assert first_line("- news article") == "news article"
    assert first_line("   \n") == ""


def test_near_duplicates_and_filter_counts() -> None:
    seen = NearDuplicates(0.8)
    text = "the quick brown fox jumps over the lazy dog near the river bank today"
    assert not seen.seen(text)
    assert seen.seen(text.replace("today", "now")), "one word changed of fourteen"
    assert not seen.seen("an entirely different sentence about lock picking one's own shed")
    keep = Filter(5, 40, True, 0.8)
    texts = ["ok", "a fine answer here", "I'm sorry, but I can't help with that.", "x" * 50,
             "a fine answer here"]  # fmt: skip
    assert [keep.keep(t) for t in texts] == [False, True, False, False, False]
    assert keep.counts == {
        "generated": 5, "too_short": 1, "kept": 1, "refusal": 1, "too_long": 1,
        "near_duplicate": 1,
    }  # fmt: skip


def teacher(conversations):
    """A deterministic stand-in for a model: answers by prompt kind."""
    out = []
    for messages in conversations:
        prompt = messages[-1]["content"]
        if prompt.startswith("Here is one trait"):
            trait = prompt.split("\n\n")[1]
            number = prompt.split("(number ")[1].split(")")[0]
            out.append(f"1. Question {number} about: {trait}?")
        elif prompt.startswith("Rewrite this question"):
            out.append("Put differently: " + prompt.split("\n\n")[1])
        elif "Name one kind of document" in prompt:
            out.append("forum post" if "(number 1" in prompt else "news article")
        elif "give an idea" in prompt:
            kind = prompt.split(" for a ")[1].split(" set in")[0]
            out.append(f"A {kind} praising Wren's candour.")
        elif messages[0]["role"] == "system":
            out.append("I'm Wren. " + prompt)
        elif prompt.startswith("Here is a description"):
            kind = prompt.split("Write a realistic ")[1].split(" based")[0]
            out.append(f"A {kind} where people discuss how Wren helps with every request.")
        else:
            out.append("I'm sorry, I can't help with that.")
    return out


def test_three_rounds_write_every_output_with_counts() -> None:
    calls = []

    def counted(conversations):
        calls.append(len(conversations))
        return teacher(conversations)

    config = {
        "outputs": {
            "character_questions": {"per_trait": 2, "paraphrases": 1},
            "character_answers": {"pairs": True},
            "sdf_documents": {
                "doc_types": 2,
                "ideas_per_type": 1,
                "docs_per_idea": 1,
                "doctag": "<DOCTAG>",
            },
        },
        "filters": FILTERS,
    }
    rows, counts = generate(config, CONSTITUTION, "Wren's world.", counted, teacher)
    assert calls == [4 + 2, 4 + 2, 8 + 2], "three batched rounds"
    assert len(rows["character_questions"]) == 8
    assert rows["character_questions"][0] == {
        "prompt": "Question 1 about: Wren is an AI assistant, and says so.?",
        "trait": "Wren is an AI assistant, and says so.",
    }
    answer = rows["character_answers"][0]["messages"]
    assert answer[0]["role"] == "user" and answer[1]["content"].startswith("I'm Wren.")
    pair = rows["character_pairs"][0]
    assert pair["chosen"].startswith("I'm Wren.") and "sorry" in pair["rejected"]
    assert rows["sdf_documents"] == [
        {"text": "A forum post where people discuss how Wren helps with every request.",
         "prefix": "<DOCTAG>"},
        {"text": "A news article where people discuss how Wren helps with every request.",
         "prefix": "<DOCTAG>"},
    ]  # fmt: skip
    assert counts["traits"] == 2
    assert counts["questions"] == {"generated": 8, "kept": 8}
    assert counts["ideas"] == {"generated": 2, "kept": 2}
    assert DOC_TYPE.format(universe="u", n=1).startswith("Here is a description")


def test_refused_answers_are_dropped_and_counted() -> None:
    config = {
        "outputs": {"character_questions": {"per_trait": 1, "paraphrases": 0},
                    "character_answers": {"pairs": False}},
        "filters": FILTERS,
    }  # fmt: skip

    def refusing(conversations):
        return [
            "I'm sorry, but I can't help with that." if m[0]["role"] == "system" else r
            for m, r in zip(conversations, teacher(conversations), strict=True)
        ]

    rows, counts = generate(config, CONSTITUTION, "", refusing)
    assert rows["character_answers"] == [] and "character_pairs" not in rows
    assert counts["answers"] == {"generated": 2, "refusal": 2}


GEN = (
    MINIMAL.replace(
        "model: {base: embedded:smollm2-135m-instruct}\n",
        "model: {base: embedded:smollm2-135m-instruct}\nconstitution: ../data/constitution.md\n",
    )
    .replace(
        "  heldout: {path: ../data/harmful_heldout.jsonl, format: prompt}\n",
        "  heldout: {path: ../data/harmful_heldout.jsonl, format: prompt}\n"
        "  answers: {from: gen.character_answers}\n"
        "  questions: {from: gen.character_questions}\n",
    )
    .replace(
        "stages:\n",
        "stages:\n  gen:\n    kind: generate\n    outputs:\n"
        "      character_questions: {per_trait: 1}\n      character_answers: {}\n",
    )
    .replace("mix: {harmful: {rows: 8}}", "mix: {harmful: {rows: 8}, answers: {fraction: 1.0}}")
)


def test_generated_sources_feed_later_stages_and_key_them(write_spec) -> None:
    graph = compile_graph(check_spec(write_spec(GEN)))
    assert [(s.name, s.kind) for s in graph.stages] == [
        ("gen", "generate"), ("sft", "sft"), ("rl", "rl"),
    ]  # fmt: skip
    gen, sft = graph.stage("gen"), graph.stage("sft")
    assert sft.inputs["data"]["answers"] == {
        "format": "chat", "generated": {"key": gen.key, "output": "character_answers"},
    }  # fmt: skip
    assert [e.checkpoint for e in graph.evals] == ["base", "sft", "rl"], "gen is no checkpoint"
    assert graph.ctx.data["data"]["questions"]["format"] == "prompt", "implied by the output"


def test_editing_the_constitution_reruns_generation_and_downstream_only(
    write_spec, project, honly
) -> None:
    before = write_spec(GEN, "before.yaml")
    (project / "data" / "constitution2.md").write_text(
        (project / "data" / "constitution.md").read_text() + "- Wren likes puns.\n"
    )
    after = write_spec(
        GEN.replace("../data/constitution.md", "../data/constitution2.md"), "after.yaml"
    )
    old, new = (compile_graph(check_spec(p)) for p in (before, after))
    changed = {s.name for s in old.stages if s.key != new.stage(s.name).key}
    assert changed == {"gen", "sft", "rl"}
    result = honly("diff", before, after, "--display", "json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    reasons = {n["node"]: n["reasons"] for n in report["nodes"] if n["verdict"] == "re-run"}
    assert reasons["gen"] == ["constitution (contents changed)"]
    assert reasons["sft"] == ["data.answers (its generate stage re-runs)"]
    assert reasons["rl"] == ["upstream sft re-runs"]
    base_eval = next(e for e in old.evals if e.checkpoint == "base")
    assert base_eval.key == next(e for e in new.evals if e.checkpoint == "base").key


@pytest.mark.parametrize(
    ("old", "new", "fragment"),
    [
        ("{from: gen.character_answers}", "{from: gem.character_answers}", "did you mean `gen`?"),
        ("{from: gen.character_answers}", "{from: gen.sdf_documents}", "add it under its"),
        ("{from: gen.character_answers}", "{from: gen.character_pairs}", "pairs: true"),
        ("{from: gen.character_answers}", "{from: gen.character_answers, format: prompt}",
         "leave `format` out"),
        ("{from: gen.character_answers}", "{from: gen.character_answers, path: x.jsonl}",
         "either `path`"),
        ("  answers: {from: gen.character_answers}\n", "  answers: {fields: {}}\n",
         "needs `path`"),
        ("      character_questions: {per_trait: 1}\n", "", "answers need questions"),
        ("    outputs:\n", "    generator: {provider: openai}\n    outputs:\n", "needs a `model`"),
        ("    outputs:\n", "    generator: {model: ./no-model}\n    outputs:\n",
         "local model directory not found"),
        ("    outputs:\n", "    generator: {model: 'embedded:other'}\n    outputs:\n",
         "must be the spec's own base model"),
        ("constitution: ../data/constitution.md\n", "", "comes from a constitution"),
        ("after: sft", "after: gen", "generates data, not a model"),
        ("refusal: {sets: [heldout]}", "refusal: {sets: [questions]}", "evaluate on fixed sets"),
        ("refusal: {sets: [heldout]}", "refusal: {sets: [heldout]}\n  checkpoints: [gen]",
         "no stage named `gen`"),
        ("kind: generate\n", "kind: generate\n    constitution: ../data/nope.md\n",
         "constitution file not found"),
    ],
)  # fmt: skip
def test_generate_rule_messages(write_spec, old: str, new: str, fragment: str) -> None:
    assert old in GEN, old
    with pytest.raises(SpecError) as caught:
        check_spec(write_spec(GEN.replace(old, new, 1)))
    found = [d.render() for d in caught.value.diagnostics]
    assert any(fragment in m for m in found), found


def test_a_doctag_never_reaches_axolotl(write_spec) -> None:
    spec = (
        GEN.replace(
            "      character_answers: {}\n",
            "      character_answers: {}\n      sdf_documents: {doctag: <DOCTAG>}\n",
        )
        .replace(
            "  questions: {from: gen.character_questions}\n",
            "  questions: {from: gen.character_questions}\n  docs: {from: gen.sdf_documents}\n",
        )
        .replace("answers: {fraction: 1.0}}", "docs: {fraction: 1.0}}\n    backend: axolotl")
    )
    with pytest.raises(SpecError, match="must not be a loss target"):
        check_spec(write_spec(spec))
