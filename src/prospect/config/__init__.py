"""Run configuration: pydantic models, YAML in and out, dotted overrides, seed aliases, the method table."""

from prospect.config.loader import (  # noqa: F401
    REDACTED,
    ConfigWarning,
    apply_overrides,
    config_with_overrides,
    dump_config,
    load_config,
    load_saved_config,
    loads_config,
    parse_cli_shortcuts,
    redact_secrets,
    resolve_shortcuts,
    valid_keys,
)
from prospect.config.methods import LOSS_TYPES, METHODS, Method  # noqa: F401
from prospect.config.schema import *  # noqa: F401,F403
