"""Row filters applied after parsing; every rejection is counted in the data report.

- length (characters): a prompt with fewer than `min_prompt_length` characters (after
  stripping whitespace) or more than `max_prompt_chars`; the same for each completion
  (chosen, rejected, ranked responses) with `min_response_length` / `max_response_chars`;
- exact duplicates (`drop_duplicates`, on by default): a row whose canonical content
  (system, prompt, completion(s), label) equals an earlier accepted row's;
- quality/utility heuristic (`filter_low_utility`, off by default; seed 001), see
  `response_quality` and `kto_utility`: rows whose utility lies outside
  [`min_utility_threshold`, `max_utility_threshold`] are rejected. The value function's
  alpha and lambda are `data.kto_specific.alpha` / `data.kto_specific.lambda_param`
  (defaults 0.88 / 2.25), never the loss's `kto.kto_alpha` / `kto.kto_lambda`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from prospect.data.formats import Item, RankingItem
from prospect.data.index import DigestIndex, digest
from prospect.data.records import PairedRecord, Text, UnpairedRecord
from prospect.data.text import FieldError, plain, stripped_chars, text_chars, text_key

# Tversky & Kahneman (1992) estimates; only the defaults of `kto_utility` and of
# data.kto_specific (schema.DataUtilityConfig): the filter reads the config's values.
UTILITY_ALPHA = 0.88  # value-function curvature
UTILITY_LAMBDA = 2.25  # loss aversion
FILTER_CODES = (
    "prompt_too_short",
    "prompt_too_long",
    "response_too_short",
    "response_too_long",
    "duplicate",
    "utility_out_of_range",
)

_SENTENCE_SPLIT = re.compile(r"[.!?\u061f\u06d4\n]+")
_SENTENCE_END = re.compile(r"[.!?\u061f\u06d4\u2026][\"')\]\u00bb]*\s*$")
_ARABIC_DIACRITIC = re.compile(r"[\u064b-\u0652]")
_ARABIC_LETTER = re.compile(r"[\u0621-\u064a]")
_WORD = re.compile(r"\w+")


def response_quality(text: str) -> float:
    """Heuristic quality q in [0, 1] of a response (seed 001's, made script-aware).

    q = (L + S + I) / 3 with
    - L = min(characters / 100, 1), characters after stripping whitespace;
    - S (structure) = 0.3 * [has letters] + 0.3 * [two or more sentences, split on . ! ? ؟ ۔ newline]
      + 0.2 * [ends with sentence punctuation, or is Arabic text with diacritics (harakat)]
      + 0.2 * [letters are at least 60% of the non-space characters];
    - I (informativeness) = distinct words / words (case-folded \\w+ tokens; 0 without words).
    """
    s = text.strip()
    if not s:
        return 0.0
    length = min(len(s) / 100.0, 1.0)
    letters = sum(ch.isalpha() for ch in s)
    non_space = sum(not ch.isspace() for ch in s)
    sentences = sum(1 for piece in _SENTENCE_SPLIT.split(s) if piece.strip())
    formal = bool(_SENTENCE_END.search(s)) or (bool(_ARABIC_LETTER.search(s)) and bool(_ARABIC_DIACRITIC.search(s)))
    structure = 0.3 * (letters > 0) + 0.3 * (sentences >= 2) + 0.2 * formal + 0.2 * (letters >= 0.6 * non_space)
    words = [w.casefold() for w in _WORD.findall(s)]
    informativeness = len(set(words)) / len(words) if words else 0.0
    return (length + structure + informativeness) / 3.0


def kto_utility(
    quality: float, desirable: bool, alpha: float = UTILITY_ALPHA, loss_aversion: float = UTILITY_LAMBDA
) -> float:
    """Prospect-theory utility of a labelled response (seed 001).

    desirable: v = q ** alpha (concave gains); undesirable: v = -lambda * (1 - q) ** alpha
    (convex, loss-averse losses), with alpha = `data.kto_specific.alpha` and lambda =
    `data.kto_specific.lambda_param` when called by the filter (the arguments' defaults,
    0.88 and 2.25, are the config's defaults). So v lies in [0, 1] for desirable rows and in
    [-lambda, 0] for undesirable ones: with the seed's bounds [-1, 1] and the default
    parameters, undesirable rows with q < 1 - (1/lambda) ** (1/alpha) ~= 0.60 are filtered;
    widen `min_utility_threshold` to -lambda (-2.25) to keep them.
    """
    q = min(max(quality, 0.0), 1.0)
    return q**alpha if desirable else -loss_aversion * (1.0 - q) ** alpha


def item_key(item: Item) -> int:
    """Digest of an item's canonical content (exact-duplicate detection)."""
    if isinstance(item, UnpairedRecord):
        return digest(
            "u", item.system or "", text_key(item.prompt), text_key(item.completion), "1" if item.label else "0"
        )
    if isinstance(item, PairedRecord):
        return digest("p", item.system or "", text_key(item.prompt), text_key(item.chosen), text_key(item.rejected))
    return digest(
        "r", item.system or "", text_key(item.prompt), *(text_key(r) for r in item.responses), repr(item.quality)
    )


def _completions(item: Item) -> list[tuple[str, Text]]:
    if isinstance(item, UnpairedRecord):
        return [("completion", item.completion)]
    if isinstance(item, PairedRecord):
        return [("chosen", item.chosen), ("rejected", item.rejected)]
    return [(f"responses[{i}]", r) for i, r in enumerate(item.responses)]


class RowFilters:
    """Length, utility and duplicate filters; `check` raises FieldError with a filter code."""

    def __init__(self, cfg: Any, *, on_disk: bool = False, locate: Callable[[int], str] | None = None) -> None:
        self.cfg = cfg
        self.locate = locate or (lambda row: f"row {row}")  # names an earlier row in the duplicate reason
        self.dedup: DigestIndex | None = DigestIndex(on_disk) if cfg.drop_duplicates else None
        params = getattr(cfg, "kto_specific", None)  # data configs from before data.kto_specific existed
        self.utility_params = (
            (params.alpha, params.lambda_param) if params is not None else (UTILITY_ALPHA, UTILITY_LAMBDA)
        )

    def check(self, item: Item) -> None:
        cfg = self.cfg
        n = stripped_chars(item.prompt)
        if n < cfg.min_prompt_length:
            raise FieldError(
                "prompt",
                "prompt_too_short",
                f"{n} characters, fewer than data.min_prompt_length={cfg.min_prompt_length}",
            )
        if cfg.max_prompt_chars is not None and (n := text_chars(item.prompt)) > cfg.max_prompt_chars:
            raise FieldError(
                "prompt", "prompt_too_long", f"{n} characters, more than data.max_prompt_chars={cfg.max_prompt_chars}"
            )
        for name, text in _completions(item):
            n = stripped_chars(text)
            if n < cfg.min_response_length:
                raise FieldError(
                    name,
                    "response_too_short",
                    f"{n} characters, fewer than data.min_response_length={cfg.min_response_length}",
                )
            if cfg.max_response_chars is not None and (n := text_chars(text)) > cfg.max_response_chars:
                raise FieldError(
                    name,
                    "response_too_long",
                    f"{n} characters, more than data.max_response_chars={cfg.max_response_chars}",
                )
        if cfg.filter_low_utility:
            self._check_utility(item)
        if self.dedup is not None and item.source_row is not None:
            first = self.dedup.check_add(item_key(item), item.source_row)
            if first is not None:
                raise FieldError("row", "duplicate", f"exact duplicate of {self.locate(first)}")

    def _check_utility(self, item: Item) -> None:
        if isinstance(item, RankingItem):
            return
        if isinstance(item, UnpairedRecord):
            scored = [("completion", item.completion, item.label)]
        else:
            scored = [("chosen", item.chosen, True), ("rejected", item.rejected, False)]
        lo, hi = self.cfg.min_utility_threshold, self.cfg.max_utility_threshold
        alpha, loss_aversion = self.utility_params
        for name, text, desirable in scored:
            q = response_quality(plain(text))
            u = kto_utility(q, desirable, alpha, loss_aversion)
            if not lo <= u <= hi:
                raise FieldError(
                    name, "utility_out_of_range", f"utility {u:.3f} outside [{lo}, {hi}] (quality {q:.3f})"
                )

    def close(self) -> None:
        if self.dedup is not None:
            self.dedup.close()
