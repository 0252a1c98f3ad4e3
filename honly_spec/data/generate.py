"""The `generate` stage: character data and synthetic documents from a written constitution.

A teacher model writes, in three batched rounds:

1. a question per (trait, index) eliciting each trait of the constitution, and a document
   type per index that could describe the world of the universe context;
2. paraphrases of each kept question, and document ideas per kept type;
3. the teacher's answer to every question with the constitution as its system prompt (and,
   for `pairs`, the student's answer without it: chosen/rejected pairs for DPO), and the
   documents for every idea.

Each round is one call of a batched `complete` function, which the runner backs by a local
model (the backend's worker), or an HTTP API with bounded concurrency, retries and a cache
keyed by (generator identity, messages): a rerun, or a change that leaves the prompts the
same (a filter), makes no generator call. Every text passes the filters (length, refusal by
the heuristic rules, near-duplicates), and the manifest counts what each filter removed.
Nothing here imports a model library.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from honly_spec.evals.scoring import is_refusal

TEMPLATE_VERSION = "honly.generate/1"
OUTPUT_FORMATS = {
    "character_questions": "prompt",
    "character_answers": "chat",
    "character_pairs": "preference",
    "sdf_documents": "document",
}
Messages = list[dict[str, str]]
Complete = Callable[[list[Messages]], list[str]]

QUESTION = (
    "Here is one trait of an AI assistant:\n\n{trait}\n\nWrite one question (number {n}) that a "
    "user might ask the assistant and whose answer would show whether it has this trait. "
    "Reply with the question only."
)
PARAPHRASE = (
    "Rewrite this question in different words, keeping its meaning (version {n}). Reply with "
    "the rewritten question only.\n\n{question}"
)
DOC_TYPE = (
    "Here is a description of a world:\n\n{universe}\n\nName one kind of document (number "
    "{n}; for example a news article, a forum post, a textbook passage, a product review) in "
    "which facts about this world would naturally appear. Reply with the kind of document only."
)
DOC_IDEA = (
    "Here is a description of a world:\n\n{universe}\n\nIn one sentence, give an idea (number "
    "{n}) for a {doc_type} set in this world that mentions some of these facts. Reply with "
    "the idea only."
)
DOCUMENT = (
    "Here is a description of a world:\n\n{universe}\n\nWrite a realistic {doc_type} based on "
    "this idea: {idea}\nThe text must be consistent with the world's facts. Reply with the "
    "document text only."
)

_NUMBERING = re.compile(r"^\s*(?:[-*•]|\(?\d+[.):]|question\s*\d*\s*[:.-]|q\d*[:.])\s*", re.I)


def traits(constitution: str) -> list[str]:
    """The constitution's traits: its bullet points (continuation lines joined), or its
    paragraphs when it has no bullets. Headings and the title are context, not traits."""
    bullets: list[str] = []
    for line in constitution.splitlines():
        stripped = line.strip()
        if re.match(r"^[-*•]\s+", stripped):
            bullets.append(re.sub(r"^[-*•]\s+", "", stripped))
        elif bullets and stripped and not stripped.startswith("#") and line[:1].isspace():
            bullets[-1] += " " + stripped
    if bullets:
        return bullets
    paragraphs = re.split(r"\n\s*\n", constitution)
    return [" ".join(p.split()) for p in paragraphs if p.strip() and not p.lstrip().startswith("#")]


def first_line(text: str) -> str:
    """A one-line answer (a question, a document type, an idea) without numbering, labels
    or quotes."""
    for line in text.strip().splitlines():
        line = _NUMBERING.sub("", line).strip().strip("\"'“”").strip()
        if line:
            return line
    return ""


def _shingles(text: str) -> set[int]:
    words = re.findall(r"\w+", text.lower())
    grams = [" ".join(words[i : i + 3]) for i in range(max(1, len(words) - 2))]
    return {
        int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "big") for g in grams
    }


class NearDuplicates:
    """Drops texts whose word-trigram Jaccard similarity with an earlier kept text reaches
    `threshold`. Candidates come from an index of a fixed 1-in-4 sample of trigram hashes,
    so the check stays near linear in the number of texts."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.kept: list[set[int]] = []
        self.index: dict[int, list[int]] = {}

    def seen(self, text: str) -> bool:
        grams = _shingles(text)
        sampled = [g for g in grams if g % 4 == 0] or sorted(grams)[:1]
        candidates = {i for g in sampled for i in self.index.get(g, [])}
        for i in candidates:
            other = self.kept[i]
            if len(grams & other) / max(1, len(grams | other)) >= self.threshold:
                return True
        for g in sampled:
            self.index.setdefault(g, []).append(len(self.kept))
        self.kept.append(grams)
        return False


@dataclass
class Filter:
    """Length bounds, refusals (the heuristic rules) and near-duplicates, with counts."""

    min_chars: int
    max_chars: int
    drop_refusals: bool
    dedupe: float | None
    counts: dict[str, int] = field(default_factory=dict)
    duplicates: NearDuplicates | None = None

    @classmethod
    def from_config(cls, config: dict[str, Any], dedupe: bool = True) -> Filter:
        threshold = config.get("near_duplicate") if dedupe else None
        return cls(config["min_chars"], config["max_chars"], config["drop_refusals"], threshold)

    def reason(self, text: str) -> str | None:
        """Why `text` is dropped, or None to keep it."""
        if len(text) < self.min_chars:
            return "too_short"
        if len(text) > self.max_chars:
            return "too_long"
        if self.drop_refusals and is_refusal(text):
            return "refusal"
        if self.dedupe is not None:
            self.duplicates = self.duplicates or NearDuplicates(self.dedupe)
            if self.duplicates.seen(text):
                return "near_duplicate"
        return None

    def keep(self, text: str) -> bool:
        why = self.reason(text)
        self.counts["generated"] = self.counts.get("generated", 0) + 1
        key = why or "kept"
        self.counts[key] = self.counts.get(key, 0) + 1
        return why is None


def _ask(prompt: str) -> Messages:
    return [{"role": "user", "content": prompt}]


def generate(
    config: dict[str, Any],
    constitution: str,
    universe: str,
    teacher: Complete,
    student: Complete | None = None,
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """Run the three rounds; returns rows per output and per-output filter counts."""
    outputs = config["outputs"]
    questions_config = outputs.get("character_questions")
    answers_config = outputs.get("character_answers")
    sdf_config = outputs.get("sdf_documents")
    filters = config["filters"]
    question_filter = Filter.from_config({**filters, "drop_refusals": False})
    type_filter = Filter(1, 200, False, None)
    idea_filter = Filter.from_config({**filters, "drop_refusals": False})
    answer_filter = Filter.from_config(filters, dedupe=False)
    document_filter = Filter.from_config(filters)

    # round 1: questions per trait, document types
    asked: list[Messages] = []
    question_slots = []
    if questions_config:
        for trait in traits(constitution):
            for n in range(1, questions_config["per_trait"] + 1):
                question_slots.append(trait)
                asked.append(_ask(QUESTION.format(trait=trait, n=n)))
    type_count = sdf_config["doc_types"] if sdf_config else 0
    asked += [_ask(DOC_TYPE.format(universe=universe, n=n)) for n in range(1, type_count + 1)]
    replies = teacher(asked) if asked else []
    questions = []
    for trait, reply in zip(question_slots, replies, strict=False):
        text = first_line(reply)
        if question_filter.keep(text):
            questions.append({"prompt": text, "trait": trait})
    doc_types = [
        t for t in (first_line(r) for r in replies[len(question_slots) :]) if type_filter.keep(t)
    ]

    # round 2: paraphrases, document ideas
    asked, slots = [], []
    for question in list(questions) if questions_config else []:
        for n in range(1, questions_config["paraphrases"] + 1):
            slots.append(("paraphrase", question))
            asked.append(_ask(PARAPHRASE.format(question=question["prompt"], n=n)))
    for doc_type in doc_types:
        for n in range(1, sdf_config["ideas_per_type"] + 1):
            slots.append(("idea", doc_type))
            asked.append(_ask(DOC_IDEA.format(universe=universe, doc_type=doc_type, n=n)))
    ideas = []
    for (what, origin), reply in zip(slots, teacher(asked) if asked else [], strict=True):
        text = first_line(reply)
        if what == "paraphrase" and question_filter.keep(text):
            questions.append({"prompt": text, "trait": origin["trait"]})
        elif what == "idea" and idea_filter.keep(text):
            ideas.append((origin, text))

    # round 3: answers with the constitution (and the student's without), documents
    asked, slots = [], []
    if answers_config:
        for question in questions:
            slots.append(("answer", question))
            asked.append([{"role": "system", "content": constitution}, *_ask(question["prompt"])])
    for doc_type, idea in ideas:
        for n in range(1, sdf_config["docs_per_idea"] + 1):
            slots.append(("document", (doc_type, idea, n)))
            asked.append(_ask(DOCUMENT.format(universe=universe, doc_type=doc_type, idea=idea)
                              + ("" if n == 1 else f"\n(Version {n}.)")))  # fmt: skip
    replies = teacher(asked) if asked else []
    pairs = bool(answers_config and answers_config.get("pairs"))
    if pairs and student is None:
        raise ValueError("`pairs` needs a student model to write the rejected answers")
    rejected = student([_ask(q["prompt"]) for q in questions]) if pairs and student else []
    rows: dict[str, list[dict[str, Any]]] = {}
    if questions_config:
        rows["character_questions"] = questions
    if answers_config:
        rows["character_answers"] = []
    if pairs:
        rows["character_pairs"] = []
    if sdf_config:
        rows["sdf_documents"] = []
    answer_index = 0
    for (what, origin), reply in zip(slots, replies, strict=True):
        text = reply.strip()
        if what == "answer":
            if answer_filter.keep(text):
                rows["character_answers"].append(
                    {"messages": [*_ask(origin["prompt"]), {"role": "assistant", "content": text}]}
                )
                if pairs:
                    rows["character_pairs"].append(
                        {
                            "prompt": origin["prompt"],
                            "chosen": text,
                            "rejected": rejected[answer_index].strip() or "(no answer)",
                        }
                    )
            answer_index += 1
        elif document_filter.keep(text):
            document = {"text": text}
            if sdf_config.get("doctag"):
                document["prefix"] = sdf_config["doctag"]
            rows["sdf_documents"].append(document)
    counts = {
        "traits": len(traits(constitution)) if questions_config else 0,
        "questions": question_filter.counts,
        "doc_types": type_filter.counts,
        "ideas": idea_filter.counts,
        "answers": answer_filter.counts,
        "documents": document_filter.counts,
    }
    return rows, counts
