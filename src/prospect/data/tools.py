"""Tool use in conversations (ShareGPT / LLaMA-Factory `function_call`, `observation`, `tools`).

Reading (text.py, formats.py): a message with role `function_call` whose content is a JSON
call `{"name": ..., "arguments": ...}` (or a list of them) becomes an assistant message that
keeps the text as `content` and the parsed calls as `tool_calls`
(`[{"type": "function", "function": {"name", "arguments"}}]`, the shape chat templates take);
`observation` is the role `tool`. A row's `tools` column (a JSON list of function schemas,
or the list itself) is kept on the record (`record.tools`).

Rendering (tokenize.py, `for_template`): when the tokenizer's chat template handles tools
(it mentions `tool_calls` or `tools`), the messages go to `apply_chat_template` with their
`tool_calls` (content emptied, so the call is not written twice) and the record's tools as
`tools=`. Otherwise they are flattened, and the tokenization report counts what was:
`tool_calls_flattened` (the call's JSON text is the assistant's words), `tool_results_flattened`
(a `tool` message becomes a user message) and `tools_in_system_prompt` (the schemas are written
into the system prompt as "Available tools: <JSON>").
"""

from __future__ import annotations

import json
from typing import Any

FUNCTION_CALL_ROLE = "function_call"


def parse_tool_calls(content: str) -> list[dict[str, Any]] | None:
    """The calls in a function_call message's JSON content, or None when it is not such JSON."""
    try:
        value = json.loads(content)
    except (ValueError, RecursionError):
        return None
    calls = value if isinstance(value, list) else [value]
    if not calls or not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in calls):
        return None
    out = []
    for c in calls:
        args = c.get("arguments", {})
        if isinstance(args, str):  # OpenAI writes arguments as a JSON string
            try:
                args = json.loads(args)
            except (ValueError, RecursionError):
                pass
        out.append({"type": "function", "function": {"name": c["name"], "arguments": args}})
    return out


def parse_tools(value: Any) -> list[dict[str, Any]] | None:
    """A `tools` cell (JSON text or a list of schemas) -> list of schemas; None when empty or unreadable."""
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            return None
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list) and value and all(isinstance(t, dict) for t in value):
        return value
    return None


def row_tools(row: dict[str, Any], texts: tuple[Any, ...], notes: dict[str, int]) -> list[dict[str, Any]] | None:
    """The row's `tools` (FieldError when present but unreadable); counts rows with tools / tool calls in `notes`."""
    from prospect.data.text import FieldError

    raw = row.get("tools")
    tools = parse_tools(raw)
    if tools is None and raw not in (None, "", [], "[]"):
        raise FieldError("tools", "bad_value", "expected a JSON list of tool (function) schemas")
    if tools is not None:
        notes["rows_with_tools"] = notes.get("rows_with_tools", 0) + 1
    if any(isinstance(t, list) and any(m.get("tool_calls") for m in t) for t in texts):
        notes["rows_with_tool_calls"] = notes.get("rows_with_tool_calls", 0) + 1
    return tools


def template_handles_tools(tokenizer: Any) -> bool:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # named templates
        template = " ".join(str(t) for t in template.values())
    return isinstance(template, str) and ("tool_calls" in template or "tools" in template)


def for_template(
    msgs: list[dict[str, Any]], tools: list[dict[str, Any]] | None, native: bool, counts: dict[str, int]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """(messages, tools) to give apply_chat_template (module doc); `counts` gets what was flattened."""
    if native:
        out = [{**m, "content": ""} if m.get("tool_calls") else m for m in msgs]
        return out, tools
    out = []
    for m in msgs:
        if m.get("tool_calls"):
            counts["tool_calls_flattened"] = counts.get("tool_calls_flattened", 0) + 1
            m = {"role": "assistant", "content": m.get("content", "")}
        elif m.get("role") == "tool":
            counts["tool_results_flattened"] = counts.get("tool_results_flattened", 0) + 1
            m = {"role": "user", "content": m.get("content", "")}
        out.append({"role": m["role"], "content": m.get("content", "")})
    if tools:
        counts["tools_in_system_prompt"] = counts.get("tools_in_system_prompt", 0) + 1
    return out, None


def tools_text(tools: list[dict[str, Any]]) -> str:
    """The schemas as a system-prompt paragraph (flattened rendering)."""
    return "Available tools: " + json.dumps(tools, ensure_ascii=False)
