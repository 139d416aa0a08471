"""Prospect: align causal language models with human preference data.

KTO (flagship), DPO, IPO, Factual-DPO and a DPO+KTO hybrid, from one YAML file.
Public API names follow the seeds (KTOConfig, KTOSpecificConfig, KTODataConfig,
KTODataLoader, KTODataError, KTOLabelError and the DPO counterparts).
"""

from __future__ import annotations

__version__ = "0.1.0"

from prospect.config.schema import (  # noqa: E402
    DPOConfig,
    DPOSpecificConfig,
    KTOConfig,
    KTODataConfig,
    KTOSpecificConfig,
    RunConfig,
)
from prospect.errors import (  # noqa: E402
    ConfigError,
    DPODataError,
    DPOLabelError,
    KTODataError,
    KTOLabelError,
    ProspectError,
)

DPODataConfig = KTODataConfig


def __getattr__(name: str):  # lazy: importing prospect must not import torch
    if name in ("KTODataLoader", "DPODataLoader"):
        from prospect.data import loader

        return getattr(loader, name)
    raise AttributeError(name)


__all__ = [
    "KTOConfig",
    "KTOSpecificConfig",
    "KTODataConfig",
    "DPOConfig",
    "DPOSpecificConfig",
    "DPODataConfig",
    "RunConfig",
    "KTODataLoader",
    "DPODataLoader",
    "KTODataError",
    "KTOLabelError",
    "DPODataError",
    "DPOLabelError",
    "ConfigError",
    "ProspectError",
]
