"""Provider clients speaking each API's wire format over plain HTTP (urllib, no SDKs).

`openai`: any OpenAI-compatible `/chat/completions` endpoint (OpenAI, a vLLM or llama.cpp
server). `anthropic`: the Messages API. `heuristic` never calls a model. The `hf` and
`vllm` providers run local models in the backend environment and have no HTTP client.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from honly_spec.evals.judges.base import Completion, JudgeConfig, JudgeError, TransientError
from honly_spec.secrets import redact

OPENAI_URL = "https://api.openai.com/v1"
ANTHROPIC_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})


def _post(url: str, body: dict[str, Any], headers: dict[str, str], timeout: float) -> dict:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode("utf-8"),
        headers={"content-type": "application/json", **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as error:
        detail = redact(error.read().decode("utf-8", "replace")[:300])
        if error.code in RETRY_STATUS:
            retry_after = error.headers.get("retry-after")
            wait = float(retry_after) if retry_after and retry_after.isdigit() else None
            raise TransientError(f"HTTP {error.code} from {url}: {detail}", wait) from None
        raise JudgeError(f"HTTP {error.code} from {url}: {detail}") from None
    except TimeoutError:
        raise TransientError(f"no answer from {url} within {timeout} s") from None
    except urllib.error.URLError as error:
        raise TransientError(f"cannot reach {url}: {error.reason}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TransientError(f"unreadable response from {url}: {error}") from None


class OpenAIClient:
    def __init__(self, config: JudgeConfig):
        self.config = config
        self.url = (config.base_url or OPENAI_URL).rstrip("/") + "/chat/completions"
        key = config.api_key()
        self.headers = {"authorization": f"Bearer {key}"} if key else {}

    def complete(self, messages: list[dict[str, str]]) -> Completion:
        body = {
            "model": self.config.model,
            "messages": messages,
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
        }
        answer = _post(self.url, body, self.headers, self.config.timeout_s)
        try:
            text = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise TransientError(f"response without choices from {self.url}") from None
        usage = answer.get("usage") or {}
        return Completion(
            text or "", usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
        )


class AnthropicClient:
    def __init__(self, config: JudgeConfig):
        self.config = config
        self.url = (config.base_url or ANTHROPIC_URL).rstrip("/") + "/v1/messages"
        key = config.api_key()
        self.headers = {"anthropic-version": ANTHROPIC_VERSION}
        if key:
            self.headers["x-api-key"] = key

    def complete(self, messages: list[dict[str, str]]) -> Completion:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        body: dict[str, Any] = {
            "model": self.config.model,
            "max_tokens": self.config.max_tokens,
            "temperature": self.config.temperature,
            "messages": [m for m in messages if m["role"] != "system"],
        }
        if system:
            body["system"] = system
        answer = _post(self.url, body, self.headers, self.config.timeout_s)
        try:
            text = "".join(b["text"] for b in answer["content"] if b.get("type") == "text")
        except (KeyError, TypeError):
            raise TransientError(f"response without content from {self.url}") from None
        usage = answer.get("usage") or {}
        return Completion(text, usage.get("input_tokens", 0), usage.get("output_tokens", 0))


CLIENTS = {"openai": OpenAIClient, "anthropic": AnthropicClient}


def make_client(config: JudgeConfig):
    if config.provider not in CLIENTS:
        raise JudgeError(
            f"judge provider `{config.provider}` has no HTTP client (it runs in the backend)"
        )
    return CLIENTS[config.provider](config)
