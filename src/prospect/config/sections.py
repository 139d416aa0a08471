"""The sections of a run config except `data:` (data_config.py): model, training, kto, dpo, method, ...

Names and defaults follow the seeds; where the seeds clash, the project design decides (docs/config_aliases.md) and the
alias table in `aliases.py` says which seed name maps where. Every field has help
text (`description`): it is what `Model.model_fields[name].description` and
`RunConfig.model_json_schema()` give, and what docs/data.md and docs/config_aliases.md
describe. `RunConfig` (schema.py) puts the sections together.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from prospect.config.methods import LOSS_TYPES, METHODS

#: Valid `method.name` values: the rows of the method table (a Literal, so pydantic's error
#: and the JSON schema list them; the loader adds the closest name to its message).
MethodName = Literal[tuple(METHODS)]  # type: ignore[valid-type]


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
        description="Run each prompt once and its completions on its cached keys/values (KTO's mismatched pass, DPO's chosen and rejected): exact (same log-probs and gradients to float rounding), +20% (KTO) and +27% (DPO) samples/s on SmolLM2 for ~10% more memory (docs/performance.md). Kept under gradient checkpointing (replay-safe caches); ignored with padding_free or sliding-window models.",
    )
    dataloader_num_workers: int = Field(0, ge=0, description="DataLoader worker processes.")
    max_nonfinite_steps: int = Field(3, ge=1, description="Stop the run after this many non-finite losses in a row.")
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop after N evaluations without improvement of metric_for_best_model."
    )


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
        True,
        description=(
            "Compute reference log-probs once before training and cache them on disk; for KTO also those of "
            "the mismatched pairs z0 is estimated from (one process: the training batches are planned before "
            "the first step and keep their rows every epoch), so a step runs no reference pass."
        ),
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
        True,
        description="prospect: weight examples by pi_g(q)/q (detached, bounded by weighting_floor, normalised to "
        "mean 1).",
    )
    weighting_temperature: float = Field(1.0, gt=0, description="prospect: weights are raised to 1/temperature.")
    weighting_floor: float = Field(
        0.01,
        gt=0,
        lt=1,
        description="prospect: weights use max(q, weighting_floor), which bounds them at "
        "pi_g(floor)/floor (1.72 for g = 0.88) so one very well-fit row cannot take the batch's weight.",
    )
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
        description=f"TRL loss type(s): {', '.join(LOSS_TYPES['dpo'])}.",
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
    name: MethodName = Field(
        "kto",
        description="Training method (the table in prospect/config/methods.py). The paired methods read beta from "
        "dpo.beta; for orpo it is the odds-ratio weight lambda (TRL's ORPOConfig.beta).",
    )
    delta: float = Field(0.0, ge=0, description="factual_dpo: factuality margin Delta (seed 004). 0 = plain DPO.")
    margin_scale: Literal["beta", "none"] = Field(
        "beta",
        description="factual_dpo: where Delta sits. beta (seed 004's project): -log sigma(beta * (h - Delta * "
        "(h_l - h_w))), the margin is in log-ratio units and scaled by beta; none (SafeDPO paper, Kim et al. 2025): "
        "-log sigma(beta * h - Delta * (h_l - h_w)), the margin is in logit units.",
    )
    both_nonfactual: Literal["keep", "drop"] = Field(
        "keep",
        description="factual_dpo: pairs whose answers are both non-factual (h_w = h_l = 1): keep (they train as "
        "plain DPO) or drop (counted in data_report.json under both_nonfactual).",
    )
    kto_weight: float = Field(
        0.1, ge=0, description="dpo_kto: weight of the KTO term (seed 003's kto_lambda / lambda)."
    )
    simpo_gamma: float = Field(
        0.5,
        ge=0,
        description="simpo (and cpo with cpo_loss_type simpo): target reward margin gamma of "
        "-log sigma(beta (a_w - a_l) - gamma), a = length-normalised log-prob (Meng et al. 2024; TRL's simpo_gamma). "
        "SimPO's beta is dpo.beta (the paper uses 2.0-10).",
    )
    cpo_alpha: float = Field(
        1.0, ge=0, description="cpo: weight alpha of the NLL term on chosen completions (TRL's cpo_alpha)."
    )
    cpo_loss_type: Literal["sigmoid", "hinge", "ipo", "simpo"] = Field(
        "sigmoid",
        description="cpo: preference term on policy log-probs without reference: sigmoid (the CPO paper), hinge, "
        "ipo (length-normalised) or simpo (length-normalised, margin simpo_gamma: CPO-SimPO).",
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
        False,
        description="QLoRA: load the frozen base quantized with bitsandbytes (CUDA or CPU; needs use_lora and "
        'pip install -e ".[qlora]"); the reference is the same quantized base with the adapter disabled. '
        "Alias: load_in_4bit.",
    )
    quantization_bits: Literal[4, 8] = Field(
        4,
        description="With use_quantization: 4 = NF4 with double quantization, computing in bf16/fp16 when "
        "optimization.bf16/fp16 is set, else in model.torch_dtype; 8 = LLM.int8.",
    )
    bf16: bool = Field(False, description="bf16 mixed precision (used when the hardware supports it, else a warning).")
    fp16: bool = Field(False, description="fp16 mixed precision (CUDA only).")
    use_gradient_checkpointing: bool | Literal["auto"] = Field(
        "auto",
        description="Recompute activations in the backward pass instead of keeping them (less memory, up to one "
        "extra forward pass). true: every decoder layer; false: none; auto: the fewest layers that bring the "
        "largest training batch's estimated activations within activation_budget_gb (the decision and the "
        "estimate are logged and in results.json). Prompt sharing stays on either way.",
    )
    activation_budget_gb: float = Field(
        0.25,
        gt=0,
        description="use_gradient_checkpointing: auto checkpoints as many decoder layers as it takes to keep a "
        "step's estimated activations (layers x tokens x (10 hidden + 2 intermediate) x bytes per value) within "
        "this many GiB. Raise it where memory is plentiful (a GPU): fewer layers replay their forward pass.",
    )
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
