"""Config error and warning messages: one line per problem, `where: key as written: reason`.

`where` is `file:line` or the command-line option (`--set kto.beta=0`, `--lr 5e-6`) the
value came from; a key the user wrote under a seed name shows both (`training.beta
(= kto.beta)`); an unknown key gets the closest valid key (`did you mean ...`) or the
valid keys of its section; pydantic's messages are shortened and at most five are shown.
Warnings (`ConfigWarning`) point at the user's line of code, not at prospect.config.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from prospect.config.aliases import METHOD_NAMES, UNSUPPORTED_HINTS, aliases_at
from prospect.config.keys import Path, dotted, leaf_keys, model_at
from prospect.config.redact import redact_value
from prospect.errors import ConfigError, ConfigWarning

_MAX_ERRORS = 5  # lines shown for one failed validation


@dataclass(frozen=True)
class Origin:
    """Where a value came from, for messages: a file line or a command-line option."""

    where: str  # "my.yaml:12" or "--set kto.beta=0.2"
    written: str  # the key as the user wrote it
    is_override: bool = False


def suggest(path: Path, config_cls: type[BaseModel]) -> str:
    """' (did you mean 'kto.beta'?)' for an unknown key at `path`, or a list of valid keys."""
    section = tuple(p for p in path[:-1] if not isinstance(p, int))
    leaf = str(path[-1])
    model = model_at(config_cls, section)
    prefix = dotted(path[:-1]) + "." if path[:-1] else ""
    if model is not None:
        names = list(model.model_fields) + aliases_at(dotted(section))
        close = difflib.get_close_matches(leaf, names, n=1, cutoff=0.6)
        if close:
            return f" (did you mean '{prefix}{close[0]}'?)"
    # the key may live in another section (training.lora_rank -> optimization.lora_rank)
    everything = leaf_keys(config_cls)
    by_leaf = {k.rsplit(".", 1)[-1]: k for k in reversed(everything)}
    close = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.75)
    if close:
        return f" (did you mean '{by_leaf[close[0]]}'?)"
    close = difflib.get_close_matches(dotted(path), everything, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    if model is not None:
        names = list(model.model_fields)
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        return f" (valid keys{' in ' + dotted(section) if section else ''}: {shown})"
    return ""


def _locate(path: Path, origins: Mapping[Path, Origin], source: str) -> tuple[str, str, bool]:
    """(where, key as written, from an override) for `path`, via its longest known prefix."""
    for n in range(len(path), 0, -1):
        origin = origins.get(path[:n])
        if origin is not None:
            written = origin.written + ("." + dotted(path[n:]) if path[n:] else "")
            return origin.where, written, origin.is_override
    return source, dotted(path), False


def fail(path: Path, message: str, origins: Mapping[Path, Origin], source: str) -> ConfigError:
    return ConfigError(_line(path, message, origins, source))


def _line(path: Path, message: str, origins: Mapping[Path, Origin], source: str) -> str:
    where, written, is_override = _locate(path, origins, source)
    canonical = dotted(path)
    if is_override and where.startswith(f"--set {canonical}="):
        return f"{where}: {message}"  # the key is already in the option as typed
    key = written if written == canonical or not canonical else f"{written} (= {canonical})"
    where, key = _visible(where), _visible(key)
    return f"{where}: {key}: {message}" if key else f"{where}: {message}"


def _visible(text: str) -> str:
    """`text` with control characters escaped (a YAML key may hold a newline): one problem, one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def short_repr(value: Any) -> str:
    text = redact_value(None, repr(value))  # messages get logged too
    return text if len(text) <= 60 else text[:57] + "..."


def _data_path(loc: Sequence[Any], data: Any, err_type: str) -> Path:
    """The part of a pydantic error location that exists in the input (drops union tags)."""
    path: list[Any] = []
    current = data
    for i, part in enumerate(loc):
        if isinstance(current, dict) and not isinstance(part, (list, dict)) and part in current:
            current = current[part]
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            current = current[part]
        elif err_type == "missing" and i == len(loc) - 1:
            pass
        else:
            break
        path.append(part)
    return tuple(path)


_SHOULD = "input should be "
MSG_NOISE = re.compile(r", unable to parse string as an? \w+$")


def validation_error(
    exc: ValidationError, data: Any, origins: Mapping[Path, Origin], source: str, config_cls: type[BaseModel]
) -> ConfigError:
    grouped: dict[Path, list[str]] = {}
    inputs: dict[Path, Any] = {}
    for err in exc.errors():
        path = _data_path(err["loc"], data, err["type"])
        if err["type"] == "extra_forbidden":
            message = "unknown key" + (_hint_unsupported(path) or suggest(path, config_cls))
        elif err["type"] == "missing":
            message = "required key missing"
        else:
            message = MSG_NOISE.sub("", err["msg"])
            message = message[:1].lower() + message[1:]
            inputs.setdefault(path, err.get("input"))
        grouped.setdefault(path, [])
        if message not in grouped[path]:
            grouped[path].append(message)
    lines = []
    for path, messages in grouped.items():
        # union members: "input should be a valid number or 'auto'"
        message = messages[0] + "".join(
            " or " + (m[len(_SHOULD) :] if m.startswith(_SHOULD) and messages[0].startswith(_SHOULD) else m)
            for m in messages[1:]
        )
        if path in inputs and not isinstance(inputs[path], (dict, list)):
            message += f", got {short_repr(inputs[path])}"
        lines.append((_sort_key(path, origins), _line(path, message, origins, source)))
    lines.sort(key=lambda item: item[0])
    text = [line for _, line in lines[:_MAX_ERRORS]]
    if len(lines) > _MAX_ERRORS:
        text.append(f"... and {len(lines) - _MAX_ERRORS} more")
    return ConfigError("\n".join(text))


def _hint_unsupported(path: Path) -> str:
    if len(path) == 1 and path[0] in UNSUPPORTED_HINTS:
        return f": {UNSUPPORTED_HINTS[path[0]]}"
    return ""


def _sort_key(path: Path, origins: Mapping[Path, Origin]) -> tuple[int, int, str]:
    where, _, is_override = _locate(path, origins, "")
    line = where.rsplit(":", 1)[-1] if not is_override else ""
    return (1 if is_override else 0, int(line) if line.isdigit() else 0, dotted(path))


def unknown_name(kind: str, name: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown {kind} {name!r}{hint}; valid: {', '.join(valid)}"


def check_method(name: Any, where: str) -> str:
    if isinstance(name, str) and name in METHOD_NAMES:
        return name
    close = difflib.get_close_matches(str(name), METHOD_NAMES, n=1, cutoff=0.5)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise ConfigError(f"{where}: unknown method {short_repr(name)}{hint}; valid methods: {', '.join(METHOD_NAMES)}")


def warn_pending(pending: Sequence[tuple[Origin, Any, str | None]], method: str) -> None:
    seen: set[str] = set()
    for origin, rule, message in pending:
        if message is None:
            if rule is None or not rule.methods or method in rule.methods:
                continue
            message = (
                f"sets {rule.target}, which has no effect with method {method} "
                f"(only with {', '.join(rule.methods)}): {rule.note}"
            )
        text = f"{origin.where}: {origin.written}: {message}"
        if text not in seen:
            seen.add(text)
            warnings.warn(text, ConfigWarning, stacklevel=caller_level())


def caller_level() -> int:
    """warnings stacklevel pointing at the first frame outside prospect.config."""
    here = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == here:
        frame, level = frame.f_back, level + 1
    return level
