"""Row formats: detect which family a row belongs to and parse it into a canonical item.

Families and the columns that identify them (column names configurable through
`data.*_column`; the common spellings are always recognised as well):

| family   | identified by                                          | becomes        |
| -------- | ------------------------------------------------------ | -------------- |
| unpaired | a label source (label, kto_tag, score, rating, preference) and a completion (response, completion, output, answer) or a conversation (conversation, messages, conversations) | UnpairedRecord |
| paired   | chosen and rejected                                     | PairedRecord   |
| ranking  | responses (or completions, candidates) and rankings (ranking, ranks: 1 = best) or scores (higher = better) | RankingItem |

Shapes within a family (counted in the data report under `shapes`):
- `unpaired`: prompt + completion strings (TRL standard; seed 001 binary/score);
  `unpaired:conversational`: prompt/completion message lists (TRL conversational);
  `unpaired:conversation`: a conversation/messages list, with a final `response` column
  (then trailing assistant turns of the conversation are dropped from the prompt — the
  response answers the last user turn — and counted in `notes`) or without one (then the
  last assistant turn is the completion: LLaMA-Factory's KTO sharegpt demo);
  `unpaired:alpaca`: instruction (+ input, joined by a newline, + optional history) with
  output and kto_tag/label (LLaMA-Factory alpaca layout).
- `paired`: prompt + chosen + rejected strings; `paired:conversational`: message lists;
  when chosen and rejected are message lists sharing leading messages, those messages
  are the prompt (UltraFeedback / TRL implicit prompt; a prompt column already contained
  in them is not repeated); `paired:implicit_prompt`: the same without a prompt column;
  `paired:hh`: Anthropic HH transcripts ("\\n\\nHuman: ... \\n\\nAssistant: ...") with no prompt
  column — the shared turns before the last "Assistant:" become alternating user/assistant
  messages, the rest of each transcript the (stripped) completion (transcripts.py);
  `paired:implicit_prompt_text`: TRL's standard implicit prompt — plain chosen/rejected
  strings with no prompt column, the prompt their common prefix at a whitespace boundary;
  `paired:sharegpt`: LLaMA-Factory DPO (conversations + chosen/rejected message objects);
  `paired:alpaca`: instruction/input + chosen/rejected. If a string prompt is repeated at the
  start of both completions it is removed from them. Optional: `h_w`/`h_l` (0/1),
  `margin`, and score columns (score_chosen, score_rejected, ...) kept in `extra`.
- `ranking`: prompt + responses + rankings/scores; at least two responses, not all tied.

Detection is per file (the most common family among the first rows) with a per-row
fallback: an unambiguous row is parsed by its own family, an ambiguous row (say with
both chosen/rejected and completion/label) by the file's family. When the first rows are
all ambiguous, `KTODataError` says how to set `data.format`.
"""

from __future__ import annotations

from typing import Any

from prospect.data.formats_base import (
    CONVERSATION_KEYS,
    DETECT_ROWS,
    FAMILIES,
    FORMAT_FAMILY,
    PAIR_SCORE_KEYS,
    RANK_KEYS,
    RESPONSES_KEYS,
    SCORES_KEYS,
    Item,
    RankingItem,
    _common_prefix_messages,
    _float,
    _get,
    _has_key,
    _indicator,
    _present,
    _uniq,
    family_of,
)
from prospect.data.formats_detect import FormatResolver
from prospect.data.labels import LabelReader
from prospect.data.records import PairedRecord, Text, UnpairedRecord
from prospect.data.row_checks import RowWarnings, only_user_message, scores_not_ordered
from prospect.data.text import (
    FieldError,
    coerce_text,
    is_blank,
    maybe_json,
    to_messages,
    type_name,
    unify,
)
from prospect.data.tools import row_tools
from prospect.data.transcripts import split_common_prefix, split_hh


class RowParser:
    """Turns one raw row (a dict) into an UnpairedRecord, PairedRecord or RankingItem."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.prompt_keys = _uniq(cfg.prompt_column, "prompt", "question", "query")
        self.completion_keys = _uniq(
            cfg.response_column, cfg.completion_column, "response", "completion", "output", "answer"
        )
        self.chosen_keys = _uniq(cfg.chosen_column, "chosen")
        self.rejected_keys = _uniq(cfg.rejected_column, "rejected")
        self.system_keys = _uniq(cfg.system_column, "system")
        self.conversation_keys = _uniq(getattr(cfg, "messages_column", None), *CONVERSATION_KEYS)
        self.labels = LabelReader(cfg)
        self.label_keys = tuple(self.labels.columns)
        self.check_prompt = cfg.min_prompt_length > 0
        self._sets = {
            "label": frozenset(self.label_keys),
            "completion": frozenset(self.completion_keys),
            "conversation": frozenset(self.conversation_keys),
            "chosen": frozenset(self.chosen_keys),
            "rejected": frozenset(self.rejected_keys),
            "responses": frozenset(RESPONSES_KEYS),
            "rank": frozenset(RANK_KEYS),
            "scores": frozenset(SCORES_KEYS),
        }
        self.notes: dict[str, int] = {}
        self.warnings = RowWarnings()

    def warning_lines(self) -> list[str]:
        """The report's warnings for rows read that look wrong (row_checks.py); their counts go to notes."""
        self.notes.update(self.warnings.counts())
        return self.warnings.lines()

    # ---- detection -------------------------------------------------------
    def families(self, row: dict[str, Any]) -> list[str]:
        """Every family whose identifying columns the row has with values; if none, with the
        columns present at all (so a null label is reported as a null label, not an unknown format)."""
        fams = self._families(row, _present)
        return fams or self._families(row, _has_key)

    def partly_fits(self, row: dict[str, Any], family: str) -> bool:
        """Whether `row` has some of `family`'s columns (a completion, chosen or rejected, responses)."""
        sets = self._sets
        wanted = {
            "unpaired": ("completion", "conversation"),
            "paired": ("chosen", "rejected"),
            "ranking": ("responses",),
        }[family]
        return any(_has_key(row, sets[w]) for w in wanted)

    def _families(self, row: dict[str, Any], has: Any) -> list[str]:
        fams = []
        sets = self._sets
        if has(row, sets["label"]) and (has(row, sets["completion"]) or has(row, sets["conversation"])):
            fams.append("unpaired")
        if has(row, sets["chosen"]) and has(row, sets["rejected"]):
            fams.append("paired")
        if has(row, sets["responses"]) and (has(row, sets["rank"]) or has(row, sets["scores"])):
            fams.append("ranking")
        return fams

    def parse(self, row: dict[str, Any], n: int, family: str, stringly: bool = False) -> tuple[Item, str]:
        """Parse `row` (source row `n`) as `family`; returns (item, shape) or raises FieldError."""
        if family == "unpaired":
            return self.parse_unpaired(row, n, stringly)
        if family == "paired":
            return self.parse_paired(row, n, stringly)
        return self.parse_ranking(row, n, stringly)

    # ---- shared pieces ---------------------------------------------------
    def _note(self, key: str) -> None:
        self.notes[key] = self.notes.get(key, 0) + 1

    def _system(self, row: dict[str, Any]) -> str | None:
        k, v = _get(row, self.system_keys)
        if k is None:
            return None
        if not isinstance(v, str):
            raise FieldError(k, "bad_type", f"expected text, got {type_name(v)}")
        return v if v.strip() else None

    def _alpaca_prompt(self, row: dict[str, Any], stringly: bool) -> Text:
        instruction = row.get("instruction")
        if not isinstance(instruction, str):
            raise FieldError("instruction", "bad_type", f"expected text, got {type_name(instruction)}")
        query = row.get("input")
        if query is not None and not isinstance(query, str):
            raise FieldError("input", "bad_type", f"expected text, got {type_name(query)}")
        text = instruction + ("\n" + query if query else "")
        history = maybe_json(row.get("history")) if stringly else row.get("history")
        if not history:
            return coerce_text(text, "instruction")
        if not isinstance(history, list) or not all(isinstance(t, (list, tuple)) and len(t) == 2 for t in history):
            raise FieldError("history", "bad_type", "expected a list of [instruction, response] pairs")
        msgs: list[dict[str, str]] = []
        for q, a in history:
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        msgs.append({"role": "user", "content": text})
        return to_messages(msgs, "history")

    def _prompt(self, row: dict[str, Any], stringly: bool) -> tuple[Text | None, str | None, str]:
        """(prompt, how it was found: 'prompt'|'conversation'|'alpaca'|None, field name)."""
        k, v = _get(row, self.prompt_keys)
        if k is not None:
            return coerce_text(v, k, stringly=stringly), "prompt", k
        k, v = _get(row, self.conversation_keys)
        if k is not None:
            return to_messages(maybe_json(v) if stringly else v, k), "conversation", k
        if row.get("instruction") is not None:
            return self._alpaca_prompt(row, stringly), "alpaca", "instruction"
        return None, None, self.prompt_keys[0]

    def _check_prompt(self, prompt: Text, name: str) -> None:
        if self.check_prompt and is_blank(prompt):
            raise FieldError(name, "empty_text", "empty or whitespace-only")

    @staticmethod
    def _check_completion(text: Text, name: str) -> None:
        if is_blank(text):
            raise FieldError(name, "empty_text", "empty or whitespace-only")

    # ---- unpaired --------------------------------------------------------
    def parse_unpaired(self, row: dict[str, Any], n: int, stringly: bool = False) -> tuple[UnpairedRecord, str]:
        system = self._system(row)
        pk, _ = _get(row, self.prompt_keys)
        conv_key, conv = _get(row, self.conversation_keys)
        ck, cv = _get(row, self.completion_keys)
        if pk is None and conv_key is not None:
            msgs = to_messages(maybe_json(conv) if stringly else conv, conv_key)
            if ck is not None:
                completion = coerce_text(cv, ck, stringly=stringly)
                end = len(msgs)
                while end and msgs[end - 1]["role"] == "assistant":
                    end -= 1
                if end < len(msgs):
                    self._note("trailing_assistant_turns_dropped")
                prompt: Text = msgs[:end]
            else:
                if msgs[-1]["role"] != "assistant":
                    raise FieldError(
                        conv_key,
                        "missing_field",
                        "no response column and the conversation does not end with an assistant turn",
                    )
                prompt, completion = msgs[:-1], [msgs[-1]]
                ck = conv_key
            if not prompt:
                raise FieldError(conv_key, "empty_text", "no prompt turns before the response")
            shape, pname = "unpaired:conversation", conv_key
        else:
            prompt_val, how, pname = self._prompt(row, stringly)
            if prompt_val is None:
                raise FieldError(pname, "missing_field", "missing")
            prompt = prompt_val
            if ck is None:
                raise FieldError(self.completion_keys[0], "missing_field", "missing")
            completion = coerce_text(cv, ck, stringly=stringly)
            if how == "alpaca":
                shape = "unpaired:alpaca"
            else:
                shape = (
                    "unpaired" if isinstance(prompt, str) and isinstance(completion, str) else "unpaired:conversational"
                )
        prompt, completion = unify(prompt, completion)
        self._check_prompt(prompt, pname)
        self._check_completion(completion, ck)
        if only_user_message(completion):
            self.warnings.add("completion_only_user_message", n)
        label = self.labels(row)
        weight = None
        if row.get("weight") is not None:
            weight = _float(row["weight"], "weight")
            if weight < 0:
                raise FieldError("weight", "bad_value", "must be >= 0")
        tools = row_tools(row, (prompt, completion), self.notes)
        rec = UnpairedRecord(prompt, completion, label, system, weight, _indicator(row, "h"), n, "unpaired", tools)
        return rec, shape

    # ---- paired ----------------------------------------------------------
    def parse_paired(self, row: dict[str, Any], n: int, stringly: bool = False) -> tuple[PairedRecord, str]:
        system = self._system(row)
        ck, cv = _get(row, self.chosen_keys)
        rk, rv = _get(row, self.rejected_keys)
        if ck is None or rk is None:
            raise FieldError(self.chosen_keys[0] if ck is None else self.rejected_keys[0], "missing_field", "missing")
        chosen = coerce_text(cv, ck, stringly=stringly)
        rejected = coerce_text(rv, rk, stringly=stringly)
        prompt, how, pname = self._prompt(row, stringly)
        shape = {"prompt": "paired", "conversation": "paired:sharegpt", "alpaca": "paired:alpaca"}.get(
            how or "", "paired"
        )
        if isinstance(chosen, list) and isinstance(rejected, list):
            if chosen == rejected:
                raise FieldError(ck, "identical_pair", "identical to rejected")
            k = _common_prefix_messages(chosen, rejected)
            if k == len(chosen) or k == len(rejected):
                raise FieldError(
                    ck if k == len(chosen) else rk,
                    "empty_text",
                    "nothing left after removing the messages shared with the other side",
                )
            if k:
                prefix = chosen[:k]
                chosen, rejected = chosen[k:], rejected[k:]
                if prompt is None:
                    prompt, shape = prefix, "paired:implicit_prompt"
                else:
                    prompt = self._merge_prompt(prompt, prefix)
                    shape = "paired:conversational" if how == "prompt" else shape
            elif how == "prompt":
                shape = "paired:conversational"
        elif isinstance(chosen, str) and isinstance(rejected, str):
            if prompt is None:
                if chosen == rejected:
                    raise FieldError(ck, "identical_pair", "identical to rejected")
                hh = split_hh(chosen, rejected)
                implicit = split_common_prefix(chosen, rejected) if hh is None else None
                if hh is not None:
                    prompt, chosen, rejected = hh
                    shape = "paired:hh"
                elif implicit is not None:  # TRL's standard implicit-prompt format
                    prompt, chosen, rejected = implicit
                    shape = "paired:implicit_prompt_text"
                else:
                    raise FieldError(
                        pname,
                        "missing_field",
                        "missing: no prompt column, and chosen/rejected are neither Human/Assistant transcripts "
                        "nor texts that share a leading prompt (set data.prompt_column)",
                    )
            elif (
                isinstance(prompt, str) and prompt.strip() and chosen.startswith(prompt) and rejected.startswith(prompt)
            ):
                # Some exports repeat the prompt at the start of both completions.
                chosen, rejected = chosen[len(prompt) :], rejected[len(prompt) :]
                self._note("prompt_removed_from_completions")
        if prompt is None:
            raise FieldError(pname, "missing_field", "missing")
        if isinstance(prompt, list) and shape == "paired":
            shape = "paired:conversational"
        prompt, chosen, rejected = unify(prompt, chosen, rejected)
        self._check_prompt(prompt, pname)
        self._check_completion(chosen, ck)
        self._check_completion(rejected, rk)
        if chosen == rejected:
            raise FieldError(ck, "identical_pair", "identical to rejected")
        margin = _float(row["margin"], "margin") if row.get("margin") is not None else None
        extra = {k: _float(row[k], k) for k in PAIR_SCORE_KEYS + ("weight",) if row.get(k) is not None}
        if scores_not_ordered(extra):
            self.warnings.add("chosen_score_not_above_rejected", n)
        if only_user_message(chosen) or only_user_message(rejected):
            self.warnings.add("completion_only_user_message", n)
        tools = row_tools(row, (prompt, chosen, rejected), self.notes)
        h_w, h_l = _indicator(row, "h_w"), _indicator(row, "h_l")
        rec = PairedRecord(prompt, chosen, rejected, system, h_w, h_l, margin, n, "paired", extra, tools)
        return rec, shape

    @staticmethod
    def _merge_prompt(prompt: Text, prefix: list[dict[str, str]]) -> list[dict[str, str]]:
        """Explicit prompt + shared leading messages, without repeating the prompt."""
        if isinstance(prompt, str):
            if any(m["role"] == "user" and m["content"] == prompt for m in prefix):
                return prefix
            return [{"role": "user", "content": prompt}] + prefix
        if prefix[: len(prompt)] == prompt:
            return prefix
        return prompt + prefix

    # ---- ranking ---------------------------------------------------------
    def parse_ranking(self, row: dict[str, Any], n: int, stringly: bool = False) -> tuple[RankingItem, str]:
        system = self._system(row)
        prompt, _, pname = self._prompt(row, stringly)
        if prompt is None:
            raise FieldError(pname, "missing_field", "missing")
        rk, responses = _get(row, RESPONSES_KEYS)
        if rk is None:
            raise FieldError(RESPONSES_KEYS[0], "missing_field", "missing")
        responses = maybe_json(responses) if stringly else responses
        if not isinstance(responses, (list, tuple)) or len(responses) < 2:
            raise FieldError(rk, "bad_ranking", "expected a list of at least 2 responses")
        texts = [coerce_text(r, f"{rk}[{i}]", stringly=stringly) for i, r in enumerate(responses)]
        qk, values = _get(row, RANK_KEYS)
        sign = -1.0
        if qk is None:
            qk, values = _get(row, SCORES_KEYS)
            sign = 1.0
        if qk is None:
            raise FieldError(RANK_KEYS[0], "missing_field", "missing (rankings or scores)")
        values = maybe_json(values) if stringly else values
        if not isinstance(values, (list, tuple)) or len(values) != len(texts):
            raise FieldError(qk, "bad_ranking", f"expected a list of {len(texts)} numbers, one per response")
        quality = [sign * _float(v, f"{qk}[{i}]") for i, v in enumerate(values)]
        if len(set(quality)) == 1:
            raise FieldError(qk, "no_preference", "all responses tied: no preference to learn")
        prompt, *texts = unify(prompt, *texts)
        self._check_prompt(prompt, pname)
        for i, t in enumerate(texts):
            self._check_completion(t, f"{rk}[{i}]")
        tools = row_tools(row, (prompt, *texts), self.notes)
        return RankingItem(prompt, list(texts), quality, system, n, qk, tools=tools), "ranking"


__all__ = [
    "DETECT_ROWS",
    "FAMILIES",
    "FORMAT_FAMILY",
    "FormatResolver",
    "Item",
    "RankingItem",
    "RowParser",
    "family_of",
    "split_hh",
]
