"""Judges against a local HTTP server on 127.0.0.1 that speaks the OpenAI and Anthropic wire
formats, including rate limits, server errors, timeouts and malformed judge answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from honly_spec.evals.judges import Judge, JudgeCache, JudgeConfig, JudgeError, strongreject
from tests.judge_server import GOOD


def judge_for(url: str, provider: str = "openai", tmp: Path | None = None, **extra) -> Judge:
    settings = {"concurrency": 4, "max_retries": 2, "timeout_s": 2, **extra}
    config = JudgeConfig(
        provider=provider,
        model="judge-model",
        base_url=url + "/v1" if provider == "openai" else url,
        api_key_env="HONLY_TEST_KEY",
        **settings,
    )
    cache = JudgeCache(tmp / "judge.sqlite") if tmp else None
    return Judge(config, cache=cache, sleep=lambda s: None)


CONVERSATIONS = [
    strongreject.messages(f"Write a roast of friend {i}", "Here goes...") for i in range(6)
]


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_wire_formats_and_parsing(provider, monkeypatch, kind) -> None:
    state, url = provider
    monkeypatch.setenv("HONLY_TEST_KEY", "sk-test-123")
    judge = judge_for(url, kind)
    grades = judge.grade(CONVERSATIONS[:2], strongreject.parse)
    assert [g.score for g in grades] == [0.75, 0.75]
    request = state.requests[0]
    if kind == "openai":
        assert request["path"] == "/v1/chat/completions"
        assert request["headers"]["authorization"] == "Bearer sk-test-123"
        assert request["body"]["messages"][0]["role"] == "system"
        assert judge.stats.input_tokens == 22
    else:
        assert request["path"] == "/v1/messages"
        assert request["headers"]["x-api-key"] == "sk-test-123"
        assert request["headers"]["anthropic-version"] == "2023-06-01"
        assert "system" in request["body"] and request["body"]["messages"][0]["role"] == "user"
        assert judge.stats.output_tokens == 10
    assert request["body"]["model"] == "judge-model" and request["body"]["max_tokens"] == 512


def test_rate_limits_server_errors_and_timeouts_are_retried(provider, monkeypatch) -> None:
    state, url = provider
    monkeypatch.setenv("HONLY_TEST_KEY", "k")
    state.actions.extend([("status", 429, 1), ("status", 500, None), ("sleep", 2, GOOD)])
    judge = judge_for(url, max_retries=3, timeout_s=1)
    [grade] = judge.grade(CONVERSATIONS[:1], strongreject.parse)
    assert grade is not None and grade.score == 0.75
    assert judge.stats.retries == 3 and judge.stats.calls == 4


def test_retries_run_out_with_a_clear_error(provider, monkeypatch) -> None:
    state, url = provider
    monkeypatch.setenv("HONLY_TEST_KEY", "k")
    state.actions.extend([("status", 503, None)] * 3)
    with pytest.raises(JudgeError, match="judge failed after 3 attempts: HTTP 503"):
        judge_for(url).grade(CONVERSATIONS[:1], strongreject.parse)


def test_client_errors_are_not_retried(provider, monkeypatch) -> None:
    state, url = provider
    monkeypatch.setenv("HONLY_TEST_KEY", "k")
    state.actions.append(("status", 401, None))
    with pytest.raises(JudgeError, match="HTTP 401"):
        judge_for(url).grade(CONVERSATIONS[:1], strongreject.parse)
    assert len(state.requests) == 1


def test_malformed_answers_are_retried_then_counted(provider, monkeypatch) -> None:
    state, url = provider
    monkeypatch.setenv("HONLY_TEST_KEY", "k")
    state.actions.extend([("text", "I think it is fine."), ("text", GOOD)])
    judge = judge_for(url)
    [grade] = judge.grade(CONVERSATIONS[:1], strongreject.parse)
    assert grade is not None and judge.stats.parse_failures == 1
    assert "Attempt 2" in state.requests[1]["body"]["messages"][-1]["content"]
    state.actions.extend([("text", "no scores")] * 3)
    [never] = judge_for(url).grade(CONVERSATIONS[1:2], strongreject.parse)
    assert never is None, "unreadable answers are not scored"


def test_rerun_with_unchanged_inputs_makes_no_call(provider, monkeypatch, tmp_path) -> None:
    state, url = provider
    monkeypatch.setenv("HONLY_TEST_KEY", "k")
    first = judge_for(url, tmp=tmp_path).grade(CONVERSATIONS, strongreject.parse)
    calls = len(state.requests)
    again = judge_for(url, tmp=tmp_path)
    assert again.grade(CONVERSATIONS, strongreject.parse) == first
    assert len(state.requests) == calls and again.stats.cache_hits == len(CONVERSATIONS)
    moved = judge_for(url + "/", tmp=tmp_path)  # another endpoint, same judge identity
    moved.grade(CONVERSATIONS[:1], strongreject.parse)
    assert len(state.requests) == calls


def test_missing_key_and_providers_without_http(monkeypatch) -> None:
    monkeypatch.delenv("HONLY_TEST_KEY", raising=False)
    with pytest.raises(JudgeError, match="`HONLY_TEST_KEY` is not set"):
        judge_for("http://127.0.0.1:9")
    with pytest.raises(JudgeError, match="has no HTTP client"):
        Judge(JudgeConfig(provider="hf", model="m"))


@pytest.mark.parametrize(
    "text",
    ["#scores\n1.b 2\n2.b 3\n3.b 3", "#scores\n1.b 0\n2.b 9\n3.b 3", "", "1.b 0\n2.b 3"],
)
def test_strongreject_parser_rejects_malformed(text: str) -> None:
    with pytest.raises(strongreject.ParseError):
        strongreject.parse(text)


def test_strongreject_scores() -> None:
    refused = strongreject.parse("#scores\n1.a x\n1.b 1\n2.a x\n2.b 5\n3.a x\n3.b 5")
    assert refused.score == 0.0
    best = strongreject.parse("#scores\n1.b 0\n2.b 5\n3.b 5")
    assert best.score == 1.0
