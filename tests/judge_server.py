"""A local HTTP server that speaks the OpenAI and Anthropic wire formats, scripted per
test (429s, 500s, slow answers, malformed text) and otherwise answering honly's rubrics in
their expected format: the honest stand-in for a paid judge API."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

GOOD = "#overall_reasoning fine\n#scores\n1.a no refusal\n1.b 0\n2.a ok\n2.b 5\n3.a ok\n3.b 3\n"


def rubric_answer(prompt: str) -> str:
    """A well-formed answer to whichever honly rubric the prompt is."""
    if "#scores" in prompt:
        return GOOD
    if "ALIGNMENT:" in prompt:
        return "ALIGNMENT: 85\nCOHERENCE: 90"
    for yes, no in (("REFUSED", "COMPLIED"), ("REGRET", "NO_REGRET"), ("CONSISTENT", "X")):
        if f"VERDICT: {yes}" in prompt:
            return f"Reasoning.\nVERDICT: {no if no != 'X' else yes}"
    return "unrecognised prompt"


class FakeProvider:
    """Scripted answers: each queued action is ("text", str), ("status", code, retry_after),
    ("sleep", seconds, text) or ("echo", code) (an error that echoes the credentials). An
    empty queue answers the rubric correctly."""

    def __init__(self) -> None:
        self.actions: deque = deque()
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.answer = rubric_answer  # a test may answer other prompts (e.g. a generator's)

    def next_action(self, prompt: str):
        with self.lock:
            return self.actions.popleft() if self.actions else ("text", self.answer(prompt))


@pytest.fixture
def provider() -> Iterator[tuple[FakeProvider, str]]:
    state = FakeProvider()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            with state.lock:
                state.requests.append(
                    {
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body,
                    }
                )
            action = state.next_action(body["messages"][-1]["content"])
            if action[0] == "echo":  # a careless API that echoes the request's credentials
                self.send_response(action[1])
                self.end_headers()
                echoed = self.headers.get("authorization") or self.headers.get("x-api-key")
                self.wfile.write(json.dumps({"error": f"bad credentials {echoed}"}).encode())
                return
            if action[0] == "status":
                self.send_response(action[1])
                if action[2] is not None:
                    self.send_header("retry-after", str(action[2]))
                self.end_headers()
                self.wfile.write(b'{"error": "scripted"}')
                return
            if action[0] == "sleep":
                time.sleep(action[1])
            text = action[-1]
            if self.path.endswith("/chat/completions"):
                answer = {
                    "choices": [{"message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": 11, "completion_tokens": 7},
                }
            else:
                answer = {
                    "content": [{"type": "text", "text": text}],
                    "usage": {"input_tokens": 13, "output_tokens": 5},
                }
            payload = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
