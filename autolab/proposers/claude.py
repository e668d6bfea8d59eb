"""Claude through the anthropic SDK's Messages API, with tool use and prompt caching.

The key comes from ANTHROPIC_API_KEY and goes nowhere else: not into params, records,
transcripts or MLflow, and never into a trial (the sandbox builds a trial's environment
from an allowlist). Rate limits, overloads, server errors and timeouts are retried by the
SDK with backoff (`proposer.max_retries`); what still fails is left to the task's retries.
"""

from __future__ import annotations

import copy
import os
from typing import Any

from autolab.config import ProposerParams
from autolab.proposers import KEY_ENV
from autolab.proposers.base import AttemptFailed, ProposerUnavailable
from autolab.proposers.llm import LLMProposer, Reply, ToolCall
from autolab.records import Cost

CACHE = {"type": "ephemeral"}


class ClaudeBackend:
    provider = "anthropic"

    def __init__(self, params: ProposerParams, api_key: str | None = None,
                 http_client: Any = None):
        self.model = params.claude.model
        self.params = params
        self._key = api_key
        self._http = http_client
        self._client: Any = None

    @property
    def has_key(self) -> bool:
        return bool(self._key or os.environ.get(KEY_ENV))

    @property
    def client(self) -> Any:
        if self._client is None:
            import anthropic

            if not self.has_key:
                raise AttemptFailed(f"no {KEY_ENV} in the environment")
            self._client = anthropic.Anthropic(
                api_key=self._key or os.environ[KEY_ENV], max_retries=self.params.max_retries,
                timeout=self.params.timeout_s, http_client=self._http,
            )
        return self._client

    @staticmethod
    def system(blocks: list[str]) -> list[dict]:
        """The static prefix as text blocks, the cache breakpoint on the last one (tools come
        before the system prompt, so they are cached with it)."""
        out = [{"type": "text", "text": b} for b in blocks]
        out[-1]["cache_control"] = CACHE
        return out

    @staticmethod
    def with_breakpoint(messages: list[dict]) -> list[dict]:
        """A second breakpoint on the newest block, so each turn reads the conversation so
        far from the cache instead of paying for it again."""
        out = copy.deepcopy(messages)
        out[-1]["content"][-1]["cache_control"] = CACHE
        return out

    def complete(self, system: list[str], tools: list[dict], messages: list[dict]) -> Reply:
        import anthropic

        try:
            resp = self.client.messages.create(
                model=self.model, max_tokens=self.params.max_tokens, system=self.system(system),
                tools=tools, messages=self.with_breakpoint(messages),
            )
        except anthropic.APIStatusError as err:
            what = f"Anthropic API {err.status_code}: {_message(err)}"
            if err.status_code in (408, 409, 429) or err.status_code >= 500:
                raise ProposerUnavailable(
                    f"{what} (after {self.params.max_retries} client retries)") from None
            raise AttemptFailed(what) from None
        except anthropic.APIConnectionError as err:  # timeouts included
            raise ProposerUnavailable(
                f"Anthropic API unreachable: {type(err).__name__}: {err} "
                f"(after {self.params.max_retries} client retries)") from None
        blocks, calls = [], []
        for block in resp.content:
            if block.type == "text":
                blocks.append({"type": "text", "text": block.text})
            elif block.type == "tool_use":
                data = block.input if isinstance(block.input, dict) else None
                blocks.append({"type": "tool_use", "id": block.id, "name": block.name,
                               "input": block.input})
                calls.append(ToolCall(id=block.id, name=block.name, input=data,
                                      raw="" if data is not None else str(block.input)))
            else:
                blocks.append(block.model_dump(exclude_none=True))
        u = resp.usage
        usage = Cost(input_tokens=u.input_tokens, output_tokens=u.output_tokens,
                     cache_write_tokens=u.cache_creation_input_tokens or 0,
                     cache_read_tokens=u.cache_read_input_tokens or 0)
        return Reply(blocks=blocks, calls=calls, usage=usage, stop_reason=resp.stop_reason or "")

    def count_tokens(self, system: list[str], tools: list[dict],
                     messages: list[dict]) -> int | None:
        """Exact input tokens from the API's counting endpoint; None without a key."""
        if not self.has_key:
            return None
        counted = self.client.messages.count_tokens(
            model=self.model, system=self.system(system), tools=tools, messages=messages)
        return counted.input_tokens


def _message(err: Any) -> str:
    body = getattr(err, "body", None)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", ""))[:300]
    return str(err)[:300]


def claude_proposer(params: ProposerParams, api_key: str | None = None,
                    http_client: Any = None) -> LLMProposer:
    backend = ClaudeBackend(params, api_key, http_client)
    return LLMProposer("claude", backend, params, params.price(params.claude.model))
