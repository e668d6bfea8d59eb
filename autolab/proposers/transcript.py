"""A proposal's conversation as Markdown, for people (the JSON beside it is exact)."""

from __future__ import annotations

import json

from autolab.records import Transcript


def _block(b: dict) -> str:
    kind = b.get("type")
    if kind == "text":
        return b["text"]
    if kind == "tool_use":
        args = b.get("raw_arguments") or json.dumps(b.get("input"), indent=1)
        return f"**tool call** `{b.get('name')}` ({b.get('id')}):\n```json\n{args}\n```"
    if kind == "tool_result":
        flag = " (error)" if b.get("is_error") else ""
        return f"**tool result**{flag} ({b.get('tool_use_id')}):\n```\n{b.get('content')}\n```"
    return f"```json\n{json.dumps(b, indent=1)}\n```"


def render(t: Transcript) -> str:
    c = t.cost
    lines = [
        f"# Proposal {t.proposal_id}, attempt {t.attempt}: {t.operator}",
        "",
        f"- Model: {t.provider} `{t.model}`; outcome: {t.outcome or '-'}"
        + (f" ({t.error})" if t.error else ""),
        f"- Tokens: {c.input_tokens} input, {c.cache_write_tokens} cache writes, "
        f"{c.cache_read_tokens} cache reads, {c.output_tokens} output; ${c.usd:.4f}; "
        f"{c.seconds:.1f} s; {len(t.turns)} response(s)",
    ]
    if t.context_notes:
        lines.append("- Context trimmed: " + "; ".join(t.context_notes))
    lines += ["", "## System (cached prefix)", ""]
    lines += [f"```\n{block}\n```" for block in t.system]
    lines += ["", "## Tools", "", "```json", json.dumps(t.tools, indent=1), "```"]
    answers = iter(t.turns)
    for m in t.messages:
        head = f"## {m['role']}"
        if m["role"] == "assistant" and (turn := next(answers, None)) is not None:
            u = turn.cost
            head += (f" (stop: {turn.stop_reason}; {u.input_tokens} in, {u.cache_write_tokens} "
                     f"cache write, {u.cache_read_tokens} cache read, {u.output_tokens} out; "
                     f"${u.usd:.4f})")
        lines += ["", head, ""] + [_block(b) for b in m["content"]]
    return "\n".join(lines) + "\n"
