"""Scripted model servers behind httpx2.MockTransport: Claude's Messages API and an
OpenAI-compatible chat-completions endpoint. Each request gets the next scripted step, or
what a step function makes of the request."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import httpx2

Step = dict | httpx2.Response | Callable[[dict], "dict | httpx2.Response"]
FAKE_KEY = "sk-ant-test-not-a-real-key"


def text(t: str) -> dict:
    return {"type": "text", "text": t}


def tool(name: str, call_id: str | None = None, **args: Any) -> dict:
    tool.n = getattr(tool, "n", 0) + 1
    return {"type": "tool_use", "id": call_id or f"toolu_{tool.n:04d}", "name": name,
            "input": args}


def message(*blocks: dict, stop: str | None = None, usage: tuple[int, int, int, int] = (
        400, 300, 0, 0), model: str = "claude-sonnet-4-6") -> dict:
    """A Messages API response; usage is (input, output, cache writes, cache reads)."""
    i, o, w, r = usage
    if stop is None:
        stop = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
    return {"id": "msg_test", "type": "message", "role": "assistant", "model": model,
            "content": list(blocks), "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": i, "output_tokens": o, "cache_creation_input_tokens": w,
                      "cache_read_input_tokens": r}}


def error(status: int, kind: str = "overloaded_error", msg: str = "Overloaded") -> httpx2.Response:
    """An API error; retry-after-ms keeps the SDK's backoff short in tests."""
    return httpx2.Response(status, headers={"retry-after-ms": "1"},
                           json={"type": "error", "error": {"type": kind, "message": msg}})


class MockClaude:
    """The Messages API: POST /v1/messages answers from the script, count_tokens counts
    characters / 4. Every request body and its headers are kept."""

    def __init__(self, script: list[Step] | Callable[[dict], Step]):
        self.script = script
        self.requests: list[dict] = []
        self.headers: list[dict] = []

    @property
    def messages_requests(self) -> list[dict]:
        return [r for r in self.requests if "max_tokens" in r]

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if request.url.path.endswith("/count_tokens"):
            return httpx2.Response(200, json={"input_tokens": len(json.dumps(body)) // 4})
        if callable(self.script):
            step = self.script(body)
        elif self.script:
            step = self.script.pop(0)
        else:
            step = error(500, "api_error", "script exhausted")
        if callable(step):
            step = step(body)
        return step if isinstance(step, httpx2.Response) else httpx2.Response(200, json=step)

    def client(self) -> httpx2.Client:
        return httpx2.Client(transport=httpx2.MockTransport(self.handler))


def operator_of(body: dict) -> str:
    """The operator a request is about, read from its first user message ('## Task: x')."""
    first = body["messages"][0]["content"][0]["text"]
    found = re.search(r"^## Task: (\w+)", first, re.M)
    return found.group(1) if found else "?"


def turn_of(body: dict) -> int:
    """0 for a conversation's first request, 1 after one response, ..."""
    return sum(m["role"] == "assistant" for m in body["messages"])


def last_tool_results(body: dict) -> list[dict]:
    last = body["messages"][-1]["content"]
    return [b for b in last if b.get("type") == "tool_result"]
