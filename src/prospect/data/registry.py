"""LLaMA-Factory's dataset registry (`data.dataset_info` + `data.dataset`): rows renamed as it reads them.

An entry of LLaMA-Factory's `dataset_info.json` says where a dataset is and how its rows are
laid out (LLaMA-Factory `src/llamafactory/data/parser.py`, `DatasetAttr`):

- `file_name` (relative to the registry's directory) or `hf_hub_url`: the data (the config
  resolves it into `data.train_file`, see `config/data_config.py`);
- `formatting`: `alpaca` (default) or `sharegpt`; `ranking`: true for chosen/rejected pairs;
- `columns`: the column of each role. alpaca: `prompt` (default instruction), `query`
  (input), `response` (output), `history`; sharegpt: `messages` (conversations); both:
  `system`, `tools`, `chosen`, `rejected`, `kto_tag`. As in LLaMA-Factory, once `columns` is
  given a role it does not list has no column (except chosen/rejected/kto_tag, which
  Prospect then still finds under their usual names);
- `tags` (sharegpt): the message keys `role_tag` (from) and `content_tag` (value) and the
  role names `user_tag` (human), `assistant_tag` (gpt), `observation_tag` (observation),
  `function_tag` (function_call) and `system_tag` (system).

`LlamaFactoryLayout(entry)(row)` returns the row with those columns under Prospect's usual
names (instruction/input/output/history, conversations, system, tools, chosen, rejected,
kto_tag) and every message as `{"role", "content"}` with the roles user, assistant, tool,
function_call and system; other columns are kept. The row parser (formats.py) then reads it
as it reads LLaMA-Factory's default layouts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prospect.config.data_config import registry_entry
from prospect.errors import KTODataError

ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "history": None}
SHAREGPT_COLUMNS = {"messages": "conversations"}
COMMON_COLUMNS = {"system": None, "tools": None, "chosen": None, "rejected": None, "kto_tag": None}
USUAL_NAMES = {"chosen": "chosen", "rejected": "rejected", "kto_tag": "kto_tag"}  # found even when unlisted
TARGET = {"prompt": "instruction", "query": "input", "response": "output", "history": "history"}
TAGS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "observation_tag": "observation",
    "function_tag": "function_call",
    "system_tag": "system",
}
ROLE_OF_TAG = {
    "user_tag": "user",
    "assistant_tag": "assistant",
    "observation_tag": "tool",
    "function_tag": "function_call",
    "system_tag": "system",
}


class LlamaFactoryLayout:
    """Renames one row of a registry entry's layout into Prospect's usual columns (module doc)."""

    def __init__(self, entry: dict[str, Any]) -> None:
        self.formatting = entry.get("formatting", "alpaca")
        if self.formatting not in ("alpaca", "sharegpt"):
            raise ValueError(f"formatting {self.formatting!r}: expected alpaca or sharegpt")
        self.ranking = bool(entry.get("ranking", False))
        roles = {**COMMON_COLUMNS, **(ALPACA_COLUMNS if self.formatting == "alpaca" else SHAREGPT_COLUMNS)}
        given = entry.get("columns")
        if isinstance(given, dict):  # LLaMA-Factory: set_attr(name, columns) -> None when not listed
            roles = {name: given.get(name) for name in roles}
        self.columns: dict[str, str | None] = {k: v if v is not None else USUAL_NAMES.get(k) for k, v in roles.items()}
        tags = {**TAGS, **(entry.get("tags") or {})} if self.formatting == "sharegpt" else dict(TAGS)
        self.role_key, self.content_key = tags["role_tag"], tags["content_tag"]
        self.roles = {str(tags[t]): role for t, role in ROLE_OF_TAG.items()}

    def message(self, m: Any) -> Any:
        """One message in the entry's tags -> {"role", "content"} (anything else is left for the parser to reject)."""
        if not isinstance(m, dict) or self.role_key not in m:
            return m
        role = m[self.role_key]
        out = {k: v for k, v in m.items() if k not in (self.role_key, self.content_key)}
        out["role"] = self.roles.get(role, role) if isinstance(role, str) else role
        out["content"] = m.get(self.content_key)
        return out

    def messages(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.message(m) for m in value]
        return self.message(value)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        cols = self.columns
        sources = {role: col for role, col in cols.items() if col is not None and col in row}
        out = {k: v for k, v in row.items() if k not in sources.values()}
        for role, col in sources.items():
            value = row[col]
            if role == "messages":
                out["conversations"] = self.messages(value)
            elif role in ("chosen", "rejected") and self.formatting == "sharegpt":
                out[role] = self.messages(value)
            else:
                out[TARGET.get(role, role)] = value
        return out


def row_adapter(cfg: Any) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
    """The row renaming for `data.dataset_info` + `data.dataset`, or None when they are unset."""
    path, name = getattr(cfg, "dataset_info", None), getattr(cfg, "dataset", None)
    if not path or not name:
        return None
    try:
        return LlamaFactoryLayout(registry_entry(path, name))
    except ValueError as e:
        raise KTODataError(f"data.dataset_info: {path}: {name}: {e}") from None
