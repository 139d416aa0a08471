"""Pydantic models of one run (seed 000 layout: model, training, data, kto, optimization, logging).

Names and defaults follow the seeds; where the seeds clash, DESIGN.md decides and the
alias table in `aliases.py` says which seed name maps where. Every field has help
text (`description`): it is what `Model.model_fields[name].description` and
`RunConfig.model_json_schema()` give, and what docs/data.md and docs/config_aliases.md
describe. `prospect config show` prints the resolved values, not the help text.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

METHODS = ("kto", "dpo", "ipo", "factual_dpo", "dpo_kto")


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class ModelConfig(Section):
    name: str = Field(
        "Qwen/Qwen-7B",
        description="Hugging Face model id, local directory, or a GGUF file path/name. "
        "Aliases: model_name, base_model, id.",
    )
    max_length: int | None = Field(
        None,
        gt=0,
        description="Cap on tokens per sequence (prompt + completion); the smaller of this and the method section's max_length applies.",
    )
    gguf_file: str | None = Field(
        None, description="GGUF file name inside `name` (a directory) to load through transformers."
    )
    revision: str | None = Field(None, description="Model revision (branch, tag or commit) on the hub.")
    trust_remote_code: bool = Field(
        False, description="Allow model code from the model repository to run. Off by default (safety)."
    )
    torch_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "float32",
        description="dtype the base weights are loaded in. bf16 base + fp32 adapters is the CPU speed option.",
    )
    attn_implementation: str | None = Field(None, description="'sdpa', 'eager' or 'flash_attention_2' (CUDA only).")
    use_safetensors: bool | None = Field(
        None, description="Require safetensors weights (None: prefer safetensors, refuse pickle from untrusted paths)."
    )
    tokenizer_name: str | None = Field(None, description="Tokenizer to use if different from the model.")
    chat_template: str | None = Field(None, description="Jinja chat template overriding the tokenizer's.")
    model_init_kwargs: dict[str, Any] | None = Field(
        None, description="Extra kwargs for from_pretrained of the policy."
    )


class TrainingConfig(Section):
    learning_rate: float = Field(1.0e-6, gt=0, description="Peak learning rate. Alias: lr.")
    batch_size: int = Field(4, gt=0, description="Per-device train batch size. Alias: per_device_train_batch_size.")
    eval_batch_size: int | None = Field(None, gt=0, description="Per-device eval batch size (default: batch_size).")
    num_epochs: float = Field(1.0, gt=0, description="Number of epochs. Alias: num_train_epochs.")
    max_steps: int = Field(-1, description="If > 0: total optimizer steps, overriding num_epochs.")
    gradient_accumulation_steps: int = Field(
        1, gt=0, description="Micro-batches per optimizer step. Alias: grad_accumulation."
    )
    warmup_steps: int = Field(0, ge=0, description="Linear warmup steps.")
    warmup_ratio: float = Field(
        0.0, ge=0, le=1, description="Warmup as a fraction of total steps (used if warmup_steps is 0)."
    )
    lr_scheduler_type: str = Field(
        "linear", description="transformers scheduler name: linear, cosine, constant, constant_with_warmup, ..."
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping norm (0 disables).")
    optim: str = Field("adamw_torch", description="transformers optimizer name.")
    seed: int = Field(42, description="Random seed for data order, splits and initialisation.")
    output_dir: str = Field("runs", description="Directory under which run directories are created.")
    run_name: str | None = Field(None, description="Run directory name (sanitised; default: <model short>_<method>).")
    logging_steps: int = Field(1, gt=0, description="Log every N optimizer steps.")
    save_steps: int = Field(50, gt=0, description="Checkpoint every N optimizer steps.")
    save_total_limit: int | None = Field(2, description="Keep at most N checkpoints.")
    eval_steps: int | None = Field(
        None, gt=0, description="Evaluate every N steps (default: only at the end). Alias: evaluation.eval_interval."
    )
    resume: bool | Literal["auto"] = Field(
        "auto", description="Resume from the run directory's last checkpoint: true, false or auto (if one exists)."
    )
    group_by_length: bool = Field(
        True, description="Sample batches of similar length to cut padding (the in-batch KTO pairing stays valid)."
    )
    shuffle: bool = Field(
        True,
        description="Shuffle training rows each epoch; false keeps the data's order (sequential; overrides group_by_length), e.g. to compare runs row for row.",
    )
    padding_free: bool = Field(
        False, description="Pack rows without padding (position ids restart per row) where the model allows."
    )
    share_prompt: bool = Field(
        True,
        description="Run each prompt once and its completions on its cached keys/values (KTO's mismatched pass, DPO's chosen and rejected): exact (same log-probs and gradients to float rounding), +20% (KTO) and +27% (DPO) samples/s on SmolLM2 for ~10% more memory (docs/performance.md). Ignored with padding_free, gradient checkpointing or sliding-window models.",
    )
    dataloader_num_workers: int = Field(0, ge=0, description="DataLoader worker processes.")
    max_nonfinite_steps: int = Field(3, ge=1, description="Stop the run after this many non-finite losses in a row.")
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop after N evaluations without improvement of metric_for_best_model."
    )


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
        from prospect.data.labels import mapping_value

        return {k: mapping_value(val, f"label_mapping[{k!r}]", key=k) for k, val in v.items()}

    @field_validator("arabic_label_mapping")
    @classmethod
    def _arabic_mapping_values(cls, v: dict[str, str]) -> dict[str, str]:
        """Check that every value names a label (kept as written: the seed's type is Dict[str, str])."""
        from prospect.data.labels import mapping_value

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

            from prospect.config.loader import ConfigWarning

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


class PreferenceSpecificConfig(Section):
    """Settings shared by every method family."""

    beta: float = Field(0.1, gt=0, description="KL strength beta.")
    reference_free: bool = Field(
        False, description="Use a uniform reference (log pi_ref = 0) where the formula allows."
    )
    reference_model_name: str | None = Field(
        None, description="A separate reference model (default: the base model / adapter disabled)."
    )
    precompute_ref_log_probs: bool = Field(
        True, description="Compute reference log-probs once before training and cache them on disk."
    )
    max_length: int = Field(2048, gt=0, description="Max tokens of prompt + completion.")
    max_prompt_length: int = Field(1024, gt=0, description="Max prompt tokens.")
    max_target_length: int = Field(1024, gt=0, description="Max completion tokens. Alias: max_completion_length.")
    truncation_mode: Literal["keep_end", "keep_start"] = Field(
        "keep_end", description="Which end of an over-long prompt to keep."
    )
    model_init_kwargs: dict[str, Any] | None = Field(
        None, description="Seed compatibility: kwargs for the policy's from_pretrained."
    )
    ref_model_init_kwargs: dict[str, Any] | None = Field(
        None, description="kwargs for the reference model's from_pretrained."
    )
    force_use_ref_model: bool = Field(False, description="Load a separate reference copy even with LoRA.")


class KTOSpecificConfig(PreferenceSpecificConfig):
    desirable_weight: float | Literal["auto"] = Field(
        1.0, description="lambda_D; 'auto' picks it by the KTO 1:1-4:3 rule."
    )
    undesirable_weight: float | Literal["auto"] = Field(
        1.0, description="lambda_U; 'auto' picks it by the KTO 1:1-4:3 rule."
    )
    loss_type: str = Field(
        "kto",
        description="'kto' (Ethayarajh et al. 2024), 'prospect' (this project's prospect-theory extension), 'apo_zero_unpaired'.",
    )
    kto_alpha: float = Field(
        1.0, gt=0, description="prospect: exponent alpha on (1 - sigma(u)) (curvature of the value function)."
    )
    kto_beta_s: float = Field(1.0, gt=0, description="prospect: sensitivity beta_s scaling beta inside the sigmoid.")
    kto_gamma: float = Field(
        0.88, gt=0, le=1, description="prospect: Tversky-Kahneman probability weighting exponent g."
    )
    kto_lambda: float = Field(
        2.25, gt=0, description="prospect: loss aversion lambda multiplying undesirable losses (seed 000 meaning)."
    )
    use_weighting: bool = Field(
        True, description="prospect: weight examples by pi_g(q)/q (detached, normalised to mean 1)."
    )
    weighting_temperature: float = Field(1.0, gt=0, description="prospect: weights are raised to 1/temperature.")
    reference_point: Literal["batch_mismatch", "window_mismatch", "running", "zero"] = Field(
        "batch_mismatch",
        description="Estimator of z0: mismatched pairs in each batch (TRL), across the accumulation window (any batch size), a running mean, or 0.",
    )
    max_completion_length: int | None = Field(
        None,
        gt=0,
        description="TRL's name of max_target_length: folded into it when the config is validated (then reads "
        "back as null). Both given with different values is an error; assigning either later wins.",
    )

    @model_validator(mode="after")
    def _completion_alias(self, info: ValidationInfo) -> KTOSpecificConfig:
        """Fold max_completion_length into max_target_length, then clear it.

        Cleared, because a kept alias re-applied itself on every later validation: an
        assignment of max_target_length (or a resolved config reloaded with an override)
        was silently reset to the alias. On assignment (`info.field_name` set) the name
        just assigned wins; in one input, two different values are an error.
        """
        alias = self.max_completion_length
        if alias is None:
            return self
        # info.field_name is the assigned field on assignment, the parent's field ("kto") when nested.
        if (
            info.field_name != "max_completion_length"
            and "max_target_length" in self.model_fields_set
            and self.max_target_length != alias
        ):
            raise ValueError(
                f"max_completion_length ({alias}) and max_target_length ({self.max_target_length}) are one setting "
                "(max_completion_length is TRL's name) given different values: keep one (to override a file's "
                "value from the command line, --set the key the file uses)"
            )
        object.__setattr__(self, "max_target_length", alias)
        object.__setattr__(self, "max_completion_length", None)
        return self


class DPOSpecificConfig(PreferenceSpecificConfig):
    loss_type: str | list[str] = Field(
        "sigmoid",
        description="TRL loss type(s): sigmoid, hinge, ipo, robust, exo_pair, nca_pair, bco_pair, sppo_hard, aot, aot_unpaired, apo_zero, apo_down, discopop, sft, sigmoid_norm.",
    )
    loss_weights: list[float] | None = Field(None, description="Weights when loss_type is a list.")
    label_smoothing: float = Field(0.0, ge=0, le=0.5, description="Conservative DPO / robust label smoothing epsilon.")
    discopop_tau: float = Field(0.05, description="DiscoPOP temperature.")
    curriculum: Literal["reference_margin", "column"] | None = Field(
        None, description="Order pairs easy-to-hard (seed 003 track A)."
    )
    curriculum_column: str | None = Field(
        None, description="Column giving pair difficulty when curriculum is 'column'."
    )


class MethodConfig(Section):
    name: Literal["kto", "dpo", "ipo", "factual_dpo", "dpo_kto"] = Field("kto", description="Training method.")
    delta: float = Field(0.0, ge=0, description="factual_dpo: factuality margin Delta (seed 004). 0 = plain DPO.")
    kto_weight: float = Field(
        0.1, ge=0, description="dpo_kto: weight of the KTO term (seed 003's kto_lambda / lambda)."
    )


class OptimizationConfig(Section):
    use_lora: bool = Field(
        True, description="Train a LoRA adapter (the reference is the base with the adapter disabled)."
    )
    lora_rank: int = Field(16, gt=0, description="LoRA rank r. Aliases: lora_r, r.")
    lora_alpha: float | None = Field(None, gt=0, description="LoRA alpha (default 2*rank).")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout.")
    lora_target_modules: str | list[str] = Field(
        "all-linear", description="Modules to adapt, e.g. [q_proj, v_proj] or 'all-linear'. Alias: target_modules."
    )
    use_quantization: bool = Field(
        False, description="Load the base in 4-bit (QLoRA, bitsandbytes, CUDA only; ignored with a warning on CPU)."
    )
    quantization_bits: Literal[4, 8] = Field(4, description="4 or 8 bit.")
    bf16: bool = Field(False, description="bf16 mixed precision (used when the hardware supports it, else a warning).")
    fp16: bool = Field(False, description="fp16 mixed precision (CUDA only).")
    use_gradient_checkpointing: bool = Field(False, description="Trade compute for memory.")
    deepspeed_config: str | None = Field(None, description="DeepSpeed JSON config path (multi-GPU).")


class LoggingConfig(Section):
    report_to: list[str] = Field(
        default_factory=list, description="Trackers: tensorboard, wandb, mlflow (none: metrics.jsonl only)."
    )
    use_wandb: bool = Field(False, description="Seed alias: adds 'wandb' to report_to.")
    wandb_project: str | None = Field(None, description="W&B project.")
    entity: str | None = Field(None, description="W&B entity.")
    run_prefix: str | None = Field(None, description="Prefix of tracker run names (e.g. FactualDPO).")
    wandb_mode: Literal["offline", "online", "disabled"] = Field(
        "offline", description="W&B mode; offline needs no network."
    )
    mlflow_tracking_uri: str | None = Field(None, description="MLflow store (default: <output_dir>/mlruns).")
    log_level: str = Field("info", description="Console log level.")


class EvaluationConfig(Section):
    metrics: list[str] = Field(
        default_factory=lambda: ["reward_accuracy", "margin", "kl"],
        description="Eval metrics; user metrics as 'pkg.module:function'.",
    )
    eval_interval: int | None = Field(None, gt=0, description="Evaluate every N steps (alias of training.eval_steps).")
    save_best_only: bool = Field(False, description="Keep only the best checkpoint by metric_for_best_model.")
    metric_for_best_model: str = Field(
        "eval_rewards/accuracies",
        description="Metric for best-checkpoint selection (e.g. eval_rewards/accuracies, eval_loss with greater_is_better: false).",
    )
    greater_is_better: bool = Field(True, description="Direction of metric_for_best_model.")
    num_generation_samples: int = Field(
        3, ge=0, description="Prompts whose generations are written to the run directory."
    )
    max_new_tokens: int = Field(48, gt=0, description="Tokens generated per sample.")


class ModelEntry(Section):
    id: str = Field(..., description="Model id or path.")
    short: str | None = Field(None, description="Filesystem-friendly short name used in run names.")
    gguf_file: str | None = Field(None, description="GGUF file inside id.")


class RunConfig(Section):
    """A whole run. `KTOConfig` and `DPOConfig` are this with a different default method."""

    method: MethodConfig = Field(default_factory=MethodConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    data: KTODataConfig = Field(default_factory=KTODataConfig)
    kto: KTOSpecificConfig = Field(default_factory=KTOSpecificConfig)
    dpo: DPOSpecificConfig = Field(default_factory=DPOSpecificConfig)
    optimization: OptimizationConfig = Field(default_factory=OptimizationConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    models: list[ModelEntry] | None = Field(None, description="Model registry for `prospect sweep` (seed 004).")
    sweep: dict[str, list[Any]] | None = Field(None, description="Grid over dotted config keys for `prospect sweep`.")

    @field_validator("method", mode="before")
    @classmethod
    def _method_shorthand(cls, v: Any) -> Any:
        # `method: kto` is shorthand for `method: {name: kto}`.
        if isinstance(v, str):
            return {"name": v}
        return v

    @model_validator(mode="after")
    def _evaluation_needed(self) -> RunConfig:
        # Best-checkpoint selection and early stopping compare evaluations: without an
        # interval there is one evaluation, at the end, and nothing to select or stop on.
        every = self.training.eval_steps or self.evaluation.eval_interval
        if self.training.early_stopping_patience and not every:
            raise ValueError(
                "training.early_stopping_patience needs evaluations during training: "
                "set evaluation.eval_interval (or training.eval_steps)"
            )
        if self.evaluation.save_best_only and not every:
            raise ValueError(
                "evaluation.save_best_only needs evaluations during training: "
                "set evaluation.eval_interval (or training.eval_steps)"
            )
        return self

    # --- derived settings -------------------------------------------------
    @property
    def method_section(self) -> PreferenceSpecificConfig:
        """The section holding beta and reference settings of the active method."""
        return self.kto if self.method.name == "kto" else self.dpo

    @property
    def is_unpaired(self) -> bool:
        """True when the method trains on unpaired (labelled) rows."""
        return self.method.name == "kto"

    @property
    def effective_max_length(self) -> int:
        sec = self.method_section.max_length
        return min(sec, self.model.max_length) if self.model.max_length else sec

    # --- YAML in and out --------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str, overrides: list[str] | None = None) -> RunConfig:
        """Load and validate a YAML file (seed aliases accepted), then apply `a.b=v` overrides."""
        from prospect.config.loader import load_config

        return load_config(path, overrides or [], config_cls=cls)

    def to_yaml(self, path: str | None = None) -> str:
        """Write the fully resolved config as YAML (secrets redacted); returns the text."""
        from prospect.config.loader import dump_config

        return dump_config(self, path)


class KTOConfig(RunConfig):
    """Configuration of a KTO run (seed 000)."""


class DPOConfig(RunConfig):
    """Configuration of a DPO-family run (same layout, default method dpo)."""

    method: MethodConfig = Field(default_factory=lambda: MethodConfig(name="dpo"))
