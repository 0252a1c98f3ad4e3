"""The judge machinery shared by every provider: config, cache, retries, concurrency."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol, TypeVar

from honly_spec.secrets import register

T = TypeVar("T")
PROMPT_VERSION = "honly.judge/1"


class JudgeError(RuntimeError):
    """A judge call that cannot succeed (bad key, 4xx, retries exhausted)."""


class ParseError(ValueError):
    """The judge answered, but not in the format its parser expects."""


@dataclass(frozen=True)
class JudgeConfig:
    provider: str
    model: str | None = None
    temperature: float = 0.0
    max_tokens: int = 512
    base_url: str | None = None
    api_key_env: str | None = None
    concurrency: int = 8
    max_retries: int = 3
    timeout_s: float = 60.0

    @classmethod
    def from_spec(cls, judge: dict[str, Any]) -> JudgeConfig:
        return cls(**{k: v for k, v in judge.items() if k in cls.__dataclass_fields__})

    def identity(self) -> dict[str, Any]:
        """What makes two judges give the same answer (endpoint, key and limits do not)."""
        return {
            "provider": self.provider,
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "prompt_version": PROMPT_VERSION,
        }

    def api_key(self) -> str | None:
        """The key from the environment; secrets never come from the spec."""
        if not self.api_key_env:
            return None
        register(self.api_key_env)
        key = os.environ.get(self.api_key_env)
        if not key:
            raise JudgeError(f"the judge's API key variable `{self.api_key_env}` is not set")
        return key


@dataclass(frozen=True)
class Completion:
    text: str
    input_tokens: int = 0
    output_tokens: int = 0


class ChatClient(Protocol):
    def complete(self, messages: list[dict[str, str]]) -> Completion: ...


class TransientError(RuntimeError):
    """Worth retrying: rate limits, server errors, timeouts. `wait_s` if the server said."""

    def __init__(self, message: str, wait_s: float | None = None):
        super().__init__(message)
        self.wait_s = wait_s


@dataclass
class JudgeStats:
    calls: int = 0
    cache_hits: int = 0
    retries: int = 0
    parse_failures: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "lock"}


class JudgeCache:
    """Answers by sha256(judge identity, messages), in one sqlite file (safe across threads
    and processes)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, text TEXT)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    @staticmethod
    def key(identity: dict[str, Any], messages: list[dict[str, str]]) -> str:
        payload = json.dumps([identity, messages], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def get(self, key: str) -> str | None:
        with self._connect() as db:
            row = db.execute("SELECT text FROM answers WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, text: str) -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?)", (key, text))


def _with_reminder(messages: list[dict[str, str]], attempt: int) -> list[dict[str, str]]:
    """The same request with a format reminder appended to the last turn (roles must keep
    alternating for some providers, so no extra message is added)."""
    last = messages[-1]
    reminder = f"\n\n(Attempt {attempt + 1}: answer in exactly the requested format.)"
    return [*messages[:-1], {**last, "content": last["content"] + reminder}]


class Judge:
    def __init__(
        self,
        config: JudgeConfig,
        client: ChatClient | None = None,
        cache: JudgeCache | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        from honly_spec.evals.judges.clients import make_client

        self.config = config
        self.client = client or make_client(config)
        self.cache = cache
        self.sleep = sleep
        self.stats = JudgeStats()

    def _call(self, messages: list[dict[str, str]]) -> Completion:
        """One answer from the provider; transport failures retried with backoff."""
        for attempt in range(self.config.max_retries + 1):
            try:
                self.stats.add(calls=1)
                done = self.client.complete(messages)
                break
            except TransientError as error:
                if attempt == self.config.max_retries:
                    raise JudgeError(
                        f"judge failed after {attempt + 1} attempts: {error}"
                    ) from None
                self.stats.add(retries=1)
                self.sleep(error.wait_s if error.wait_s is not None else 0.5 * 2**attempt)
        return done

    def complete(self, conversations: list[list[dict[str, str]]]) -> list[str]:
        """Answers in input order. A client with `complete_batch` (a local model run in the
        backend) gets every uncached conversation at once; an HTTP client gets them with
        bounded concurrency."""
        identity = self.config.identity()
        keys = [JudgeCache.key(identity, m) for m in conversations]
        answers: list[str | None] = [None] * len(conversations)
        if self.cache is not None:
            answers = [self.cache.get(key) for key in keys]
        todo = [i for i, found in enumerate(answers) if found is None]
        self.stats.add(cache_hits=len(conversations) - len(todo))
        batch = getattr(self.client, "complete_batch", None)
        if batch is not None and todo:
            self.stats.add(calls=len(todo))
            done = batch([conversations[i] for i in todo])
            for i, completion in zip(todo, done, strict=True):
                self._keep(keys[i], completion)
                answers[i] = completion.text
        elif todo:
            with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
                calls = pool.map(lambda i: self._call(conversations[i]), todo)
                for i, completion in zip(todo, calls, strict=True):
                    self._keep(keys[i], completion)
                    answers[i] = completion.text
        return [a if a is not None else "" for a in answers]

    def _keep(self, key: str, completion: Completion) -> None:
        self.stats.add(input_tokens=completion.input_tokens, output_tokens=completion.output_tokens)
        if self.cache is not None:
            self.cache.put(key, completion.text)

    def grade(
        self, conversations: Sequence[list[dict[str, str]]], parse: Callable[[str], T]
    ) -> list[T | None]:
        """Parsed grades in input order; None where the judge never answered readably.
        An unreadable answer is asked again (with a format reminder) up to `max_retries`
        times, in rounds, so batch clients see each round as one batch."""
        results: list[T | None] = [None] * len(conversations)
        pending = list(range(len(conversations)))
        for attempt in range(self.config.max_retries + 1):
            if not pending:
                break
            variants = [
                conversations[i] if attempt == 0 else _with_reminder(conversations[i], attempt)
                for i in pending
            ]
            unreadable = []
            for i, text in zip(pending, self.complete(variants), strict=True):
                try:
                    results[i] = parse(text)
                except ParseError:
                    self.stats.add(parse_failures=1)
                    unreadable.append(i)
            pending = unreadable
        return results
