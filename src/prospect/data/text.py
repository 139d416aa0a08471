"""Text fields of a row: plain strings or chat message lists, coerced to one shape.

A prompt or completion arrives as a string, a list of messages, or (LLaMA-Factory
DPO) a single message object. Messages may use the OpenAI spelling
`{"role", "content"}` or the ShareGPT spelling `{"from", "value"}`; both become
`{"role": ..., "content": ...}` with the ShareGPT roles mapped
(human -> user, gpt -> assistant, observation -> tool). Content given as a list of
parts keeps only text parts; an image or audio part rejects the row (text models).

`FieldError` is how every row-level problem is reported: the field, a short code
(used to count reasons in the data report) and a human reason.
"""

from __future__ import annotations

import json
from typing import Any

from prospect.data.records import Message, Text
from prospect.data.tools import FUNCTION_CALL_ROLE, parse_tool_calls

ROLE_ALIASES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "chatgpt": "assistant",
    "system": "system",
    "observation": "tool",
    "tool": "tool",
    "function": "tool",
}
MAX_REASON_VALUE = 60


class FieldError(Exception):
    """A row-level problem: `field` (column), `code` (short category) and `reason` (for people).

    `label` marks label problems, which strict mode raises as KTOLabelError / DPOLabelError.
    """

    def __init__(self, field: str, code: str, reason: str, *, label: bool = False) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.code = code
        self.reason = reason
        self.label = label


def show(value: Any) -> str:
    """A short, always-encodable rendering of a user value for error messages."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > MAX_REASON_VALUE:
        text = text[: MAX_REASON_VALUE - 3] + "..."
    # Lone surrogates (broken UTF-16 escapes in the input) must not break report writing.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def type_name(value: Any) -> str:
    """JSON-ish name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _check_unicode(text: str, field: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise FieldError(
            field, "invalid_unicode", "contains invalid Unicode (an unpaired surrogate or undecodable byte)"
        ) from None
    return text


def _content(value: Any, field: str) -> str:
    if isinstance(value, str):
        return _check_unicode(value, field)
    if isinstance(value, list):  # content parts: [{"type": "text", "text": ...}, ...]
        pieces = []
        for part in value:
            if isinstance(part, str):
                pieces.append(part)
            elif (
                isinstance(part, dict)
                and part.get("type", "text") == "text"
                and isinstance(text := part.get("text", part.get("value")), str)
            ):  # {"type": "text", "text": ...} (OpenAI) or {"type": "text", "value": ...} (LLaMA-Factory)
                pieces.append(text)
            else:
                raise FieldError(field, "bad_type", "non-text message content (images, audio) is not supported")
        return _check_unicode("".join(pieces), field)
    raise FieldError(field, "bad_type", f"message content must be text, got {type_name(value)}")


def to_message(item: Any, field: str) -> Message:
    """One message in either spelling -> {"role", "content"}."""
    if not isinstance(item, dict):
        raise FieldError(field, "bad_type", f"expected a message object, got {type_name(item)}")
    role = item.get("role", item.get("from"))
    if not isinstance(role, str) or not role.strip():
        raise FieldError(field, "bad_message", "message without a role (expected 'role' or 'from')")
    if "content" in item:
        content = item["content"]
    elif "value" in item:
        content = item["value"]
    else:
        raise FieldError(field, "bad_message", "message without content (expected 'content' or 'value')")
    if content is None:
        content = ""
    name = role.strip().lower()
    text = _content(content, field)
    if name == FUNCTION_CALL_ROLE:  # a tool call (ShareGPT / LLaMA-Factory): an assistant turn, see tools.py
        calls = parse_tool_calls(text)
        return {"role": "assistant", "content": text, **({"tool_calls": calls} if calls else {})}  # type: ignore[dict-item]
    return {"role": ROLE_ALIASES.get(name, name), "content": text}


def to_messages(value: Any, field: str) -> list[Message]:
    """A list of messages (or one message object) -> list of {"role", "content"}."""
    if isinstance(value, dict):
        return [to_message(value, field)]
    if not isinstance(value, (list, tuple)):
        raise FieldError(field, "bad_type", f"expected a list of messages, got {type_name(value)}")
    if not value:
        raise FieldError(field, "empty_text", "empty message list")
    return [to_message(m, f"{field}[{i}]") for i, m in enumerate(value)]


def maybe_json(value: Any, want_list: bool = True) -> Any:
    """CSV cells hold JSON text for lists; decode a string that looks like a JSON list."""
    if isinstance(value, str) and want_list:
        s = value.strip()
        if s.startswith("[") and s.endswith("]"):
            try:
                return json.loads(s)
            except (ValueError, RecursionError):
                return value
    return value


def coerce_text(value: Any, field: str, *, stringly: bool = False) -> Text:
    """A prompt/completion value -> str or list of messages; FieldError if impossible.

    `stringly` (CSV input): a cell holding a JSON list of message objects is decoded.
    """
    if value is None:
        raise FieldError(field, "missing_field", "missing")
    if isinstance(value, str):
        if stringly and value.lstrip().startswith("[{"):
            decoded = maybe_json(value)
            if isinstance(decoded, list) and decoded and all(isinstance(m, dict) for m in decoded):
                return to_messages(decoded, field)
        return _check_unicode(value, field)
    if isinstance(value, (list, tuple, dict)):
        return to_messages(value, field)
    raise FieldError(field, "bad_type", f"expected text or a list of messages, got {type_name(value)}")


def as_messages(text: Text, role: str) -> list[Message]:
    """Promote a plain string to a one-message list (used when a row mixes both shapes)."""
    return [{"role": role, "content": text}] if isinstance(text, str) else text


def unify(prompt: Text, *completions: Text) -> tuple[Text, ...]:
    """Make prompt and completions all strings or all message lists (conversational wins)."""
    if isinstance(prompt, str) and all(isinstance(c, str) for c in completions):
        return (prompt, *completions)
    return (as_messages(prompt, "user"), *(as_messages(c, "assistant") for c in completions))


def text_chars(text: Text | None) -> int:
    """Characters of a text: len of a string, summed content lengths of messages."""
    if text is None:
        return 0
    if isinstance(text, str):
        return len(text)
    return sum(len(m["content"]) for m in text)


def stripped_chars(text: Text) -> int:
    """Characters after stripping whitespace (per message for message lists)."""
    if isinstance(text, str):
        return len(text.strip())
    return sum(len(m["content"].strip()) for m in text)


def is_blank(text: Text) -> bool:
    """True for an empty or whitespace-only string, or messages whose contents are all blank."""
    return stripped_chars(text) == 0


def text_key(text: Text | None) -> str:
    """A canonical string of a text, for exact-duplicate detection and grouping by prompt."""
    if text is None:
        return "\x00"
    if isinstance(text, str):
        return "s" + text
    return "m" + json.dumps(text, ensure_ascii=False, separators=(",", ":"))


def plain(text: Text) -> str:
    """The text content alone (message contents joined by newlines), for heuristics."""
    if isinstance(text, str):
        return text
    return "\n".join(m["content"] for m in text)
