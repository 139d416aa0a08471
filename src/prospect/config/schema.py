"""The run config: `RunConfig` (seed 000 layout: model, training, data, kto, optimization, logging)
and the seeds' names for it, `KTOConfig` and `DPOConfig`.

The sections are defined in `sections.py` and `data_config.py` and importable from here too;
`prospect config show` prints the resolved values, not the help text.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from prospect.config.data_config import DataUtilityConfig, KTODataConfig
from prospect.config.methods import METHODS
from prospect.config.pipeline import load_file
from prospect.config.sections import (
    DPOSpecificConfig,
    EvaluationConfig,
    KTOSpecificConfig,
    LoggingConfig,
    MethodConfig,
    ModelConfig,
    ModelEntry,
    OptimizationConfig,
    PreferenceSpecificConfig,
    Section,
    TrainingConfig,
)
from prospect.config.yaml_dialect import dump_config

__all__ = [
    "Section",
    "ModelConfig",
    "TrainingConfig",
    "DataUtilityConfig",
    "KTODataConfig",
    "PreferenceSpecificConfig",
    "KTOSpecificConfig",
    "DPOSpecificConfig",
    "MethodConfig",
    "OptimizationConfig",
    "LoggingConfig",
    "EvaluationConfig",
    "ModelEntry",
    "RunConfig",
    "KTOConfig",
    "DPOConfig",
]


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
        """The section holding beta and reference settings of the active method (its table row's `section`)."""
        section: PreferenceSpecificConfig = getattr(self, METHODS[self.method.name].section)
        return section

    @property
    def is_unpaired(self) -> bool:
        """True when the method trains on unpaired (labelled) rows (its table row's `kind`)."""
        return METHODS[self.method.name].kind == "unpaired"

    @property
    def effective_max_length(self) -> int:
        sec = self.method_section.max_length
        return min(sec, self.model.max_length) if self.model.max_length else sec

    # --- YAML in and out --------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str, overrides: list[str] | None = None) -> RunConfig:
        """Load and validate a YAML file (seed aliases accepted), then apply `a.b=v` overrides."""
        return load_file(path, overrides or [], cls)

    def to_yaml(self, path: str | None = None) -> str:
        """Write the fully resolved config as YAML (secrets redacted); returns the text."""
        return dump_config(self, path)


class KTOConfig(RunConfig):
    """Configuration of a KTO run (seed 000)."""


class DPOConfig(RunConfig):
    """Configuration of a DPO-family run (same layout, default method dpo)."""

    method: MethodConfig = Field(default_factory=lambda: MethodConfig(name="dpo"))
