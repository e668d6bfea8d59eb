"""A second provider: any server with an OpenAI-compatible chat-completions endpoint and
tool calls (vLLM, Ollama, llama.cpp's server), over plain HTTP.

Connection errors are retried by the HTTP transport (`proposer.max_retries`); a 429, a
5xx or a timeout is left to the task's retries, like Claude's after its SDK gave up.
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx2

from autolab.config import ProposerParams
from autolab.proposers.base import AttemptFailed, ProposerUnavailable
from autolab.proposers.llm import LLMProposer, Reply, ToolCall
from autolab.records import Cost

STOP = {"tool_calls": "tool_use", "length": "max_tokens", "stop": "end_turn"}


def to_openai(system: list[str], tools: list[dict], messages: list[dict]) -> dict[str, Any]:
    """The neutral conversation as a chat-completions request body (without the model)."""
    out: list[dict] = [{"role": "system", "content": "\n\n".join(system)}]
    for m in messages:
        blocks = m["content"]
        text = "\n".join(b["text"] for b in blocks if b["type"] == "text")
        if m["role"] == "assistant":
            calls = [{"id": b["id"], "type": "function",
                      "function": {"name": b["name"],
                                   "arguments": b.get("raw_arguments") or json.dumps(b["input"])}}
                     for b in blocks if b["type"] == "tool_use"]
            msg: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                msg["tool_calls"] = calls
            out.append(msg)
            continue
        for b in blocks:
            if b["type"] == "tool_result":
                out.append({"role": "tool", "tool_call_id": b["tool_use_id"],
                            "content": b["content"]})
        if text:
            out.append({"role": "user", "content": text})
    fns = [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                             "parameters": t["input_schema"]}} for t in tools]
    return {"messages": out, "tools": fns}


def from_openai(data: dict) -> Reply:
    """A chat-completions response in the neutral shape; unparseable arguments are kept raw
    so the tool session can report them as malformed."""
    try:
        choice = data["choices"][0]
        msg = choice["message"]
    except (KeyError, IndexError, TypeError):
        raise AttemptFailed(f"garbled response from the server: {str(data)[:200]}") from None
    blocks: list[dict] = []
    if msg.get("content"):
        blocks.append({"type": "text", "text": msg["content"]})
    calls = []
    for i, c in enumerate(msg.get("tool_calls") or []):
        fn = c.get("function") or {}
        raw = fn.get("arguments") or ""
        try:
            args = json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError:
            args = None
        data_ok = args if isinstance(args, dict) else None
        cid, name = c.get("id") or f"call_{i}", fn.get("name", "")
        block = {"type": "tool_use", "id": cid, "name": name, "input": data_ok or {}}
        if data_ok is None:
            block["raw_arguments"] = raw if isinstance(raw, str) else json.dumps(raw)
        blocks.append(block)
        calls.append(ToolCall(id=cid, name=name, input=data_ok,
                              raw="" if data_ok is not None else str(raw)))
    u = data.get("usage") or {}
    cached = int((u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    usage = Cost(input_tokens=int(u.get("prompt_tokens", 0)) - cached, cache_read_tokens=cached,
                 output_tokens=int(u.get("completion_tokens", 0)))
    stop = choice.get("finish_reason") or ""
    return Reply(blocks=blocks, calls=calls, usage=usage, stop_reason=STOP.get(stop, stop))


class OpenAICompatBackend:
    provider = "openai_compat"

    def __init__(self, params: ProposerParams, http_client: httpx2.Client | None = None):
        cfg = params.openai_compat
        self.model, self.params = cfg.model, params
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        self._key_env = cfg.api_key_env
        self.client = http_client or httpx2.Client(
            timeout=params.timeout_s, transport=httpx2.HTTPTransport(retries=params.max_retries))

    def complete(self, system: list[str], tools: list[dict], messages: list[dict]) -> Reply:
        body = {"model": self.model, "max_tokens": self.params.max_tokens,
                **to_openai(system, tools, messages)}
        key = os.environ.get(self._key_env) if self._key_env else None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            resp = self.client.post(self.url, json=body, headers=headers,
                                    timeout=self.params.timeout_s)
        except httpx2.HTTPError as err:  # timeouts and connection errors
            raise ProposerUnavailable(f"{self.url} unreachable: {type(err).__name__}: {err}"
                                      ) from None
        if resp.status_code in (408, 409, 429) or resp.status_code >= 500:
            raise ProposerUnavailable(f"{self.url} answered {resp.status_code}: "
                                      f"{resp.text[:200]}")
        if resp.status_code >= 400:
            raise AttemptFailed(f"{self.url} refused the request ({resp.status_code}): "
                                f"{resp.text[:300]}")
        try:
            data = resp.json()
        except ValueError:
            raise AttemptFailed(f"garbled response from {self.url}: {resp.text[:200]}") from None
        return from_openai(data)

    def count_tokens(self, system: list[str], tools: list[dict],
                     messages: list[dict]) -> int | None:
        return None  # no standard counting endpoint: the local estimate is used


def openai_compat_proposer(params: ProposerParams,
                           http_client: httpx2.Client | None = None) -> LLMProposer:
    backend = OpenAICompatBackend(params, http_client)
    return LLMProposer("openai_compat", backend, params, params.price(backend.model))
