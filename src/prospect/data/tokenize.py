"""Records -> token ids, with a check of the tokenized data before the first step.

Each record is rendered to text (the tokenizer's chat template when it has one and the
config allows it), then prompt and completion are tokenized *separately*, so the loss
knows exactly which tokens are the completion. The check counts what commonly goes
wrong (docs/data.md, "The tokenization check"):

- double BOS: the template already starts with BOS and the tokenizer would add another;
- boundary merges: tokenizing prompt+completion as one string gives different ids than
  the two parts (the completion's first token merged with the prompt's last);
- truncation: prompts and completions cut to fit `max_prompt_length` / `max_length`.

Tokenized rows are cached on disk (a `datasets` directory keyed by the records, the
tokenizer and the length settings), so a second run on unchanged data tokenizes nothing.
Every file of an entry is checksummed; a damaged entry is removed and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prospect.data.records import PairedRecord, Text, UnpairedRecord
from prospect.data.tools import for_template, template_handles_tools, tools_text
from prospect.io import MANIFEST, atomic_write_json, cache_root, manifest_intact, write_manifest

log = logging.getLogger("prospect")


@dataclass
class TokenizeSettings:
    """Length and rendering settings that decide the token ids (part of the cache key)."""

    max_length: int
    max_prompt_length: int
    max_completion_length: int
    truncation_mode: str = "keep_end"
    use_chat_template: bool = True
    add_special_tokens: bool = True


@dataclass
class TokenizationStats:
    """Counts shown in the data report before training starts."""

    rows: int = 0
    prompt_truncated: int = 0
    completion_truncated: int = 0
    boundary_merges: int = 0
    double_bos: int = 0
    empty_completion_after_truncation: int = 0
    prompt_tokens: list[int] = field(default_factory=list)
    completion_tokens: list[int] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)
    tools: dict[str, int] = field(default_factory=dict)  # tool use flattened for the template (data/tools.py)

    def to_dict(self) -> dict[str, Any]:
        def stats(xs: list[int]) -> dict[str, float]:
            if not xs:
                return {}
            s = sorted(xs)
            return {
                "min": s[0],
                "mean": round(sum(s) / len(s), 1),
                "p50": s[len(s) // 2],
                "p95": s[min(len(s) - 1, int(0.95 * len(s)))],
                "max": s[-1],
            }

        d = {k: v for k, v in asdict(self).items() if k not in ("prompt_tokens", "completion_tokens")}
        d["prompt_token_lengths"] = stats(self.prompt_tokens)
        d["completion_token_lengths"] = stats(self.completion_tokens)
        return d


def _as_messages(text: Text, role: str) -> list[dict[str, Any]]:
    if isinstance(text, str):
        return [{"role": role, "content": text}]
    out: list[dict[str, Any]] = []
    for m in text:
        msg: dict[str, Any] = {"role": m.get("role", role), "content": m.get("content", "")}
        if m.get("tool_calls"):
            msg["tool_calls"] = m["tool_calls"]
        out.append(msg)
    return out


def _as_plain(text: Text) -> str:
    if isinstance(text, str):
        return text
    return "\n".join(m.get("content", "") for m in text)


class RecordTokenizer:
    """Turns canonical records into prompt/completion token ids and counts what went wrong."""

    def __init__(self, tokenizer: Any, settings: TokenizeSettings) -> None:
        self.tok = tokenizer
        self.s = settings
        self.chat = bool(settings.use_chat_template and getattr(tokenizer, "chat_template", None))
        self.native_tools = self.chat and template_handles_tools(tokenizer)
        self.stats = TokenizationStats()
        # BOS id if this tokenizer adds one to plain text (Llama-style), else None (ChatML-style).
        probe = list(tokenizer("x", add_special_tokens=True)["input_ids"])
        bos_id = getattr(tokenizer, "bos_token_id", None)
        self.bos_id = bos_id if bos_id is not None and probe[:1] == [bos_id] else None

    # -- rendering -----------------------------------------------------------
    def render(
        self, prompt: Text, completion: Text, system: str | None, tools: list[dict[str, Any]] | None = None
    ) -> tuple[str, str]:
        """Return (prompt_text, completion_text); their concatenation is the full sequence text.

        `tools` (a record's tool schemas) go to a chat template that handles tools, else into the
        system prompt; tool calls and results are flattened for templates without tools (data/tools.py)."""
        counts = self.stats.tools
        if not self.chat:
            if tools:
                counts["tools_in_system_prompt"] = counts.get("tools_in_system_prompt", 0) + 1
                system = "\n\n".join(x for x in (system, tools_text(tools)) if x)
            for text in (prompt, completion):  # count tool calls / results read as plain text
                if isinstance(text, list):
                    for_template(_as_messages(text, "user"), None, False, counts)
            p = _as_plain(prompt)
            if system:
                p = f"{system}\n\n{p}"
            return p, _as_plain(completion)
        msgs, done = for_template(_as_messages(prompt, "user"), tools, self.native_tools, counts)
        answer, _ = for_template(_as_messages(completion, "assistant"), None, self.native_tools, counts)
        if tools and done is None:  # flattened: the schemas go into the system prompt
            system = "\n\n".join(x for x in (system, tools_text(tools)) if x)
        if system and not (msgs and msgs[0]["role"] == "system"):
            msgs = [{"role": "system", "content": system}] + msgs
        kw = {"tools": done} if done else {}
        prompt_text = self.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, **kw)
        full = self.tok.apply_chat_template(msgs + answer, tokenize=False, **kw)
        if full.startswith(prompt_text):
            return prompt_text, full[len(prompt_text) :]
        # Templates that rewrite earlier turns (rare): fall back to the plain completion.
        return prompt_text, _as_plain(completion)

    # -- tokenizing ------------------------------------------------------------
    def _ids(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def _with_bos(self, ids: list[int]) -> list[int]:
        """Add BOS once where the tokenizer normally adds it; never twice (counted if the text had two)."""
        bos = self.bos_id
        if bos is None:
            return ids
        if len(ids) >= 2 and ids[0] == ids[1] == bos:
            self.stats.double_bos += 1
            return ids[1:]
        if ids[:1] == [bos] or not self.s.add_special_tokens:
            return ids
        return [bos] + ids

    def _truncate(self, prompt_ids: list[int], completion_ids: list[int]) -> tuple[list[int], list[int]]:
        s = self.s
        if len(prompt_ids) > s.max_prompt_length or len(prompt_ids) + len(completion_ids) > s.max_length:
            if len(prompt_ids) > s.max_prompt_length:
                self.stats.prompt_truncated += 1
                keep = s.max_prompt_length
                prompt_ids = prompt_ids[-keep:] if s.truncation_mode == "keep_end" else prompt_ids[:keep]
        budget = min(s.max_completion_length, s.max_length - len(prompt_ids))
        if len(completion_ids) > budget:
            self.stats.completion_truncated += 1
            completion_ids = completion_ids[: max(budget, 0)]
        return prompt_ids, completion_ids

    def encode(
        self, prompt: Text, completion: Text, system: str | None, tools: list[dict[str, Any]] | None = None
    ) -> tuple[list[int], list[int]]:
        prompt_text, completion_text = self.render(prompt, completion, system, tools)
        p, c = self._ids(prompt_text), self._ids(completion_text)
        if self._ids(prompt_text + completion_text) != p + c:
            # The tokenizer merges across the boundary; we keep the separate ids so the
            # completion mask is exact, and report how often this happens.
            self.stats.boundary_merges += 1
        p = self._with_bos(p)
        eos = self.tok.eos_token_id
        if not self.chat and eos is not None and (not c or c[-1] != eos):
            c = c + [eos]
        p, c = self._truncate(p, c)
        if not c:
            self.stats.empty_completion_after_truncation += 1
        self.stats.prompt_tokens.append(len(p))
        self.stats.completion_tokens.append(len(c))
        if len(self.stats.examples) < 2:
            self.stats.examples.append(
                {
                    "prompt_text": prompt_text,
                    "completion_text": completion_text,
                    "prompt_tokens": len(p),
                    "completion_tokens": len(c),
                }
            )
        return p, c

    def unpaired_row(self, r: UnpairedRecord) -> dict[str, Any]:
        self.stats.rows += 1
        p, c = self.encode(r.prompt, r.completion, r.system, r.tools)
        return {
            "prompt_ids": p,
            "completion_ids": c,
            "label": bool(r.label),
            "weight": 1.0 if r.weight is None else float(r.weight),
            "source_row": -1 if r.source_row is None else int(r.source_row),
        }

    def paired_row(self, r: PairedRecord) -> dict[str, Any]:
        self.stats.rows += 1
        p, c = self.encode(r.prompt, r.chosen, r.system, r.tools)
        p2, rj = self.encode(r.prompt, r.rejected, r.system, r.tools)
        # Chosen and rejected share one prompt: keep the shorter truncation of the two.
        if p2 != p:
            p = p if len(p) <= len(p2) else p2
        return {
            "prompt_ids": p,
            "chosen_ids": c,
            "rejected_ids": rj,
            "h_w": int(r.h_w or 0),
            "h_l": int(r.h_l or 0),
            "margin": 0.0 if r.margin is None else float(r.margin),
            "source_row": -1 if r.source_row is None else int(r.source_row),
        }


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Hash of what decides token ids: vocab, special tokens, chat template, class."""
    h = hashlib.sha256()
    h.update(type(tokenizer).__name__.encode())
    h.update(json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False).encode())
    h.update(str(getattr(tokenizer, "chat_template", "")).encode())
    h.update(json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def records_fingerprint(records: Sequence[UnpairedRecord | PairedRecord]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps(r.to_dict(), ensure_ascii=False, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def tokenize_records(
    records: Sequence[UnpairedRecord | PairedRecord],
    tokenizer: Any,
    settings: TokenizeSettings,
    *,
    kind: str,
    tokenizer_key: str | None = None,
    use_cache: bool = True,
    desc: str = "Tokenizing",
) -> tuple[datasets.Dataset, dict[str, Any]]:  # noqa: F821
    """Tokenize records into a `datasets.Dataset`; returns (dataset, tokenization stats dict).

    The result is cached under $PROSPECT_CACHE/tokenized/<key>, key = records + tokenizer +
    settings, and reloaded without tokenizing on a later run.
    """
    import datasets
    from tqdm.auto import tqdm

    key_src = json.dumps(
        [kind, records_fingerprint(records), tokenizer_key or tokenizer_fingerprint(tokenizer), asdict(settings)],
        sort_keys=True,
    )
    key = hashlib.sha256(key_src.encode()).hexdigest()[:20]
    cdir = cache_root() / "tokenized" / key
    if use_cache and cdir.exists():
        loaded = _load_cached(cdir)
        if loaded is not None:
            return loaded
    rt = RecordTokenizer(tokenizer, settings)
    make = rt.unpaired_row if kind == "unpaired" else rt.paired_row
    rows = [make(r) for r in tqdm(records, desc=desc, disable=len(records) < 500)]
    ds = datasets.Dataset.from_list(rows) if rows else datasets.Dataset.from_dict({})
    stats = rt.stats.to_dict()
    stats["chat_template_applied"] = rt.chat
    if use_cache and rows:
        ds = _store_cached(cdir, ds, stats)
    stats["cache"] = "miss"
    return ds, stats


def _load_cached(cdir: Path) -> tuple[Any, dict[str, Any]] | None:
    """The cached (dataset, stats) of `cdir` if every file matches its recorded checksum, else None.

    A damaged entry (a flipped byte, a truncated file, a torn stats file, no manifest because
    the writer was killed) is removed with a warning, so it is recomputed, never trusted.
    """
    import datasets

    try:
        if not manifest_intact(cdir):
            raise ValueError("a file is missing or differs from its recorded checksum")
        stats = json.loads((cdir / "stats.json").read_text(encoding="utf-8"))
        ds = datasets.load_from_disk(str(cdir / "data"))
    except Exception as e:  # noqa: BLE001 - any failure means: do not trust it
        log.warning("tokenization cache %s is damaged (%s); recomputing", cdir, e)
        shutil.rmtree(cdir, ignore_errors=True)
        return None
    stats["cache"] = "hit"
    return ds, stats


def _store_cached(cdir: Path, ds: Any, stats: dict[str, Any]) -> Any:
    """Write the entry beside its place, checksum it, rename it into place; returns the dataset to use."""
    import datasets

    tmp = cdir.with_name(cdir.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    ds.save_to_disk(str(tmp / "data"))
    atomic_write_json(tmp / "stats.json", stats)
    write_manifest(tmp)
    cdir.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(cdir, ignore_errors=True)  # a damaged entry in the way
    try:
        os.replace(tmp, cdir)
    except OSError:  # another process renamed its (equal) entry into place first
        shutil.rmtree(tmp, ignore_errors=True)
    return datasets.load_from_disk(str(cdir / "data")) if (cdir / MANIFEST).exists() else ds


def row_lengths(ds: Any) -> list[int]:
    """Each row's length as the length-grouped sampler and the eval order read it: prompt + longest completion."""
    return [p + c for p, c in row_shapes(ds)]


def row_shapes(ds: Any) -> list[tuple[int, int]]:
    """Each row's (prompt tokens, longest completion tokens), as `engine.batch_plan` composes batches by them."""
    cols = [c for c in ("completion_ids", "chosen_ids", "rejected_ids") if c in ds.column_names]
    return [(len(r["prompt_ids"]), max(len(r[c]) for c in cols)) for r in ds.select_columns(["prompt_ids", *cols])]


def row_groups(ds: Any) -> list[bool] | None:
    """Each row's label where rows are unpaired (the mix every length-grouped batch keeps); None for pairs."""
    return [bool(v) for v in ds["label"]] if "label" in ds.column_names else None


def with_length(ds: Any) -> Any:
    """`ds` with the `length` column (`row_lengths`) the length-grouped sampler and the eval order read."""
    return ds.add_column("length", row_lengths(ds))
