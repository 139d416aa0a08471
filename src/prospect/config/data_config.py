"""The `data:` section: where the preference data comes from and how rows are read, checked and filtered.

`KTODataConfig` is also the seed 001 public name (`prospect.KTODataConfig`, `DPODataConfig`);
docs/data.md describes the fields. `DataUtilityConfig` is its `kto_specific` block.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from prospect.config.labels import mapping_value
from prospect.config.sections import Section
from prospect.errors import ConfigWarning


class DataUtilityConfig(Section):
    """Seed 001's `data.kto_specific`: the value function of the utility filter, nothing else.

    It is a separate block because the seed reads `config.kto_specific.alpha` / `.lambda_param`
    from the data config; the training loss keeps its own parameters (`kto.kto_alpha`,
    `kto.kto_lambda`), so changing these never changes a loss.
    """

    alpha: float = Field(
        0.88,
        gt=0,
        description="Curvature alpha of the utility filter's value function (Tversky & Kahneman 1992: 0.88): "
        "u = q**alpha for desirable rows, -lambda_param * (1 - q)**alpha for undesirable ones. "
        "Used only when data.filter_low_utility is true; the loss uses kto.kto_alpha.",
    )
    lambda_param: float = Field(
        2.25,
        gt=0,
        description="Loss aversion lambda of the utility filter (Tversky & Kahneman 1992: 2.25); undesirable utilities "
        "lie in [-lambda_param, 0]. Used only when data.filter_low_utility is true; the loss uses kto.kto_lambda.",
    )


class KTODataConfig(Section):
    #: Why buffer_size and max_samples_in_memory do nothing (their help text and their warning).
    NO_EFFECT_REASON: ClassVar[str] = (
        "Prospect has no sample buffer to size: data.streaming (or lazy_loading) already reads the file with "
        "bounded memory, in file order, and training keeps every accepted record (cap the rows with max_samples)"
    )

    train_file: str | None = Field(
        "data/kto_train.jsonl",
        description="Training data: a file (JSONL, JSON, CSV, Parquet), a saved `datasets` directory, or a dataset name.",
    )
    validation_file: str | None = Field(
        None, description="Held-out data; if missing, validation_split_percentage of the training data is held out."
    )
    test_file: str | None = Field(None, description="Test data, evaluated after training.")
    format: Literal["auto", "unpaired", "binary", "score", "paired", "pairwise", "ranking", "conversation", "hh"] = (
        Field("auto", description="Input format; 'auto' detects it per file (with per-row fallback).")
    )
    max_samples: int | None = Field(None, gt=0, description="Use at most this many input rows.")
    validation_split_percentage: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Fraction held out when no validation_file is given (a float in [0,1); values > 1 are read as percent).",
    )
    preprocessing_num_workers: int = Field(
        1,
        ge=1,
        description="Seed compatibility; no effect at present: reading and tokenization run in the main process.",
    )
    prompt_column: str = Field("prompt", description="Column holding the prompt.")
    response_column: str = Field(
        "response", description="Column holding the completion (also found: completion, output)."
    )
    completion_column: str = Field("completion", description="Alternative completion column.")
    label_column: str = Field("label", description="Column holding the label.")
    score_column: str = Field("score", description="Numeric score column (>= score_threshold is desirable).")
    rating_column: str = Field("rating", description="Rating column (>= rating_threshold is desirable).")
    chosen_column: str = Field("chosen", description="Chosen completion column (paired data).")
    rejected_column: str = Field("rejected", description="Rejected completion column (paired data).")
    system_column: str | None = Field("system", description="Column holding a system prompt.")
    messages_column: str | None = Field(
        None,
        description="Column holding a conversation (a list of messages), when it is not named conversation, "
        "messages or conversations (those are always recognised).",
    )
    dataset_info: str | None = Field(
        None,
        description="A LLaMA-Factory dataset registry (dataset_info.json); with data.dataset it names the file "
        "(file_name, relative to the registry's directory, or hf_hub_url) and how to read it: formatting "
        "(alpaca/sharegpt), ranking, columns and tags, as LLaMA-Factory applies them. data.train_file, if set, "
        "is read with that entry's layout instead of its file_name.",
    )
    dataset: str | None = Field(None, description="The entry of data.dataset_info to train on.")
    score_threshold: float = Field(0.5, description="Scores >= this are desirable.")
    rating_threshold: float = Field(4.0, description="Ratings >= this are desirable (e.g. 4 of 5).")
    conversation_template: str = Field(
        "default", description="'default' uses the tokenizer's chat template; 'none' concatenates raw text."
    )
    apply_chat_template: bool | Literal["auto"] = Field(
        "auto", description="Wrap prompts in the chat template (auto: when the tokenizer has one)."
    )
    add_special_tokens: bool = Field(True, description="Add BOS where the tokenizer/template does not already.")
    truncation: bool = Field(
        True,
        description="Seed compatibility: over-long rows are always truncated to the method section's length "
        "limits (counted in the data report's tokenization check); false does not reject them at present.",
    )
    padding: str = Field(
        "longest", description="Kept for seed compatibility; batches are padded to their longest row (or packed)."
    )
    sanity_check: bool = Field(False, description="Use only sanity_check_size rows (quick smoke run).")
    sanity_check_size: int = Field(100, gt=0, description="Rows used when sanity_check is on.")
    ignore_bias_buffers: bool = Field(False, description="Seed compatibility; no effect.")
    disable_dropout: bool = Field(True, description="Disable dropout in policy and reference (as TRL).")
    generate_during_eval: bool = Field(False, description="Write generation samples at each evaluation.")
    balance_labels: bool = Field(
        False,
        description="Seed 001 meaning: downsample the majority label to min*(1+label_imbalance_tolerance). Default off: keep every row and weight.",
    )
    balance_strategy: Literal["auto", "downsample", "upsample", "none"] = Field(
        "auto",
        description="auto: keep every row, choose KTO weights by the 1:1-4:3 rule; downsample/upsample rows; none.",
    )
    label_imbalance_tolerance: float = Field(
        0.1, ge=0, description="Allowed excess of the majority label when downsampling."
    )
    min_samples_per_label: int = Field(1, ge=0, description="Refuse to train with fewer rows of either label.")
    min_rows_used: int | None = Field(
        None,
        ge=0,
        description="Refuse to train (exit 2) when converting the data for the method (e.g. pairing unpaired rows "
        "for DPO) leaves rows unused and fewer than this many training records remain. Default (null): two "
        "batches, 2 x training.batch_size. 0 turns the check off.",
    )
    label_mapping: dict[str, bool | int | str] = Field(
        default_factory=lambda: {
            "desirable": True,
            "undesirable": False,
            "good": True,
            "bad": False,
            "positive": True,
            "negative": False,
        },
        description="Extra label words -> desirable/undesirable, written as true/false, 1/0 or a built-in label word "
        "(good, bad, desirable, ...); stored as true/false. Takes precedence over arabic_label_mapping and the "
        "built-in table; a value that is none of these is a config error naming the key.",
    )
    arabic_label_mapping: dict[str, str] = Field(
        default_factory=lambda: {
            "جيد": "good",
            "ممتاز": "good",
            "مقبول": "good",
            "سيء": "bad",
            "ضعيف": "bad",
            "مرفوض": "bad",
        },
        description="Seed 001: Arabic label words -> a label word (good/bad or any built-in word), matched after the "
        "same cleaning as every label (diacritics, tatweel and bidi marks removed). Merged with label_mapping "
        "(label_mapping wins); the built-in table already knows these six words, so entries here add words "
        "or override them (e.g. مقبول: bad).",
    )
    convert_pairwise_to_binary: bool = Field(
        True,
        description="For unpaired (KTO) training: turn each chosen/rejected pair into unpaired rows by "
        "pairwise_sampling_strategy. false: pair rows are rejected (code pair_not_converted) and counted in "
        "the data report. Paired methods read pairs as they are either way.",
    )
    pairwise_sampling_strategy: Literal["all", "balanced", "random"] = Field(
        "all", description="How pairs become unpaired rows."
    )
    ranking_strategy: Literal["best_vs_rest", "adjacent", "all_pairs", "best_worst"] = Field(
        "best_vs_rest", description="How rankings become pairs."
    )
    min_prompt_length: int = Field(1, ge=0, description="Reject prompts shorter than this (characters, stripped).")
    min_response_length: int = Field(
        1, ge=0, description="Reject completions shorter than this (characters, stripped)."
    )
    max_prompt_chars: int | None = Field(None, gt=0, description="Reject prompts longer than this (characters).")
    max_response_chars: int | None = Field(None, gt=0, description="Reject completions longer than this (characters).")
    drop_duplicates: bool = Field(True, description="Reject exact duplicate rows (reported).")
    filter_low_utility: bool = Field(
        False,
        description="Seed 001 quality/utility heuristic filter (data/filters.py, docs/data.md); off unless asked for.",
    )
    min_utility_threshold: float = Field(
        -1.0,
        description="Utility filter lower bound (undesirable utilities reach -kto_specific.lambda_param, -2.25 by default).",
    )
    max_utility_threshold: float = Field(
        1.0, description="Utility filter upper bound (desirable utilities lie in [0, 1])."
    )
    kto_specific: DataUtilityConfig = Field(
        default_factory=DataUtilityConfig,
        description="Seed 001: alpha and lambda_param of the utility filter's value function (not the loss's).",
    )
    strict: bool = Field(False, description="Stop at the first bad row instead of reporting and skipping it.")
    streaming: bool = Field(
        False,
        description="Bounded-memory reading, in file order: the duplicate and pairing indexes live in a temporary "
        "SQLite file and a hub dataset is opened in datasets' streaming mode (local files are read row by row "
        "anyway; a .json array is loaded whole). KTODataLoader/DPODataLoader then return an IterableDataset "
        "(no resampling); `prospect train` still keeps the accepted records in memory. Alias: lazy_loading.",
    )
    lazy_loading: bool | None = Field(
        None,
        description="Seed 001 name of streaming: lazy_loading: true is streaming: true. It is folded into "
        "data.streaming when the config is validated (and reads back as null); giving both with different "
        "values is an error.",
    )
    buffer_size: int | None = Field(
        None,
        gt=0,
        description="Seed 001 (streaming buffer size). Accepted, but has NO effect, and setting it warns: "
        + NO_EFFECT_REASON
        + ".",
    )
    max_samples_in_memory: int | None = Field(
        None,
        gt=0,
        description="Seed 001 (cap on samples held in memory). Accepted, but has NO effect, and setting it warns: "
        + NO_EFFECT_REASON
        + ".",
    )
    cache_dir: str | None = Field(
        None,
        description="Disk cache of the seed API's loaders (KTODataLoader/DPODataLoader): each loaded split is saved "
        "under <cache_dir>/prospect-data/<key>/ and loaded back while the data config and input files are unchanged. "
        "A cache_dir passed to the loader's constructor takes precedence. `prospect train` does not use it.",
    )

    @field_validator("validation_split_percentage", mode="before")
    @classmethod
    def _percent(cls, v: Any) -> Any:
        # Seeds write both 0.1 and 10 for "ten percent".
        if isinstance(v, (int, float)) and not isinstance(v, bool) and 1 <= v < 100:
            return v / 100.0
        return v

    @field_validator("label_mapping")
    @classmethod
    def _label_mapping_values(cls, v: dict[str, Any]) -> dict[str, Any]:
        """Resolve every value to True/False now, so a typo fails at load time, not as rejected rows."""
        return {k: mapping_value(val, f"label_mapping[{k!r}]", key=k) for k, val in v.items()}

    @field_validator("arabic_label_mapping")
    @classmethod
    def _arabic_mapping_values(cls, v: dict[str, str]) -> dict[str, str]:
        """Check that every value names a label (kept as written: the seed's type is Dict[str, str])."""
        for k, val in v.items():
            mapping_value(val, f"arabic_label_mapping[{k!r}]", key=k)
        return v

    @field_validator("buffer_size", "max_samples_in_memory")
    @classmethod
    def _no_effect(cls, v: int | None, info: ValidationInfo) -> int | None:
        """Accepted for seed 001's examples; a warning says it does nothing, so nobody tunes it in vain."""
        if v is not None:
            import os
            import sys
            import warnings

            import pydantic

            # Point the warning at the first caller outside pydantic and prospect.config (the user's line).
            inside = tuple(os.path.dirname(os.path.abspath(f)) + os.sep for f in (__file__, pydantic.__file__))
            frame, level = sys._getframe(0), 1
            while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(inside):
                frame, level = frame.f_back, level + 1
            warnings.warn(
                f"data.{info.field_name}={v} has no effect: {cls.NO_EFFECT_REASON}", ConfigWarning, stacklevel=level
            )
        return v

    @model_validator(mode="after")
    def _dataset_registry(self) -> KTODataConfig:
        """data.dataset_info + data.dataset: the entry must exist; it gives train_file unless that is set."""
        if self.dataset_info is None and self.dataset is None:
            return self
        if self.dataset_info is None or self.dataset is None:
            missing = "dataset" if self.dataset is None else "dataset_info"
            raise ValueError(f"data.dataset_info and data.dataset go together: set data.{missing} as well")
        entry = registry_entry(self.dataset_info, self.dataset)
        if entry.get("formatting", "alpaca") not in ("alpaca", "sharegpt"):
            raise ValueError(
                f"data.dataset: formatting {entry['formatting']!r} in {self.dataset_info}: expected alpaca or sharegpt"
            )
        if "train_file" not in self.model_fields_set or self.train_file is None:  # the registry names the file
            object.__setattr__(self, "train_file", registry_location(self.dataset_info, entry))
        return self

    @model_validator(mode="after")
    def _lazy_loading_alias(self, info: ValidationInfo) -> KTODataConfig:
        """Fold seed 001's lazy_loading into streaming, then clear it.

        Cleared so that a later assignment, --set or sweep value of `streaming` is never
        overruled by a stale alias (the bug kto.max_completion_length had).
        """
        lazy = self.lazy_loading
        if lazy is None:
            return self
        # info.field_name is the assigned field on assignment, the parent's field ("data") when nested.
        if info.field_name != "lazy_loading" and "streaming" in self.model_fields_set and self.streaming != lazy:
            raise ValueError(
                f"lazy_loading ({lazy}) and streaming ({self.streaming}) are one setting "
                "(lazy_loading is seed 001's name) given different values: keep one"
            )
        object.__setattr__(self, "streaming", lazy)
        object.__setattr__(self, "lazy_loading", None)
        return self


def registry_entry(path: str, name: str) -> dict[str, Any]:
    """Entry `name` of a LLaMA-Factory dataset_info.json (ValueError naming the file and the entries)."""
    import json
    import os

    try:
        with open(os.path.expanduser(path), encoding="utf-8") as fh:
            registry = json.load(fh)
    except (OSError, ValueError) as e:
        raise ValueError(f"data.dataset_info: cannot read {path}: {e}") from None
    if not isinstance(registry, dict):
        raise ValueError(f"data.dataset_info: {path} is not a JSON object of datasets")
    entry = registry.get(name)
    if not isinstance(entry, dict):
        known = ", ".join(sorted(map(str, registry))[:20]) or "none"
        raise ValueError(f"data.dataset: no dataset {name!r} in {path} (it has: {known})")
    return entry


def registry_location(path: str, entry: dict[str, Any]) -> str:
    """Where an entry's data are: file_name relative to the registry's directory, else hf_hub_url."""
    import os

    if isinstance(entry.get("file_name"), str):
        return os.path.join(os.path.dirname(os.path.expanduser(path)), entry["file_name"])
    if isinstance(entry.get("hf_hub_url"), str):
        return entry["hf_hub_url"]
    raise ValueError(
        f"data.dataset: the entry in {path} has no file_name or hf_hub_url (script_url and ms_hub_url are not "
        "read); set data.train_file"
    )
