"""Run configuration: pydantic models, YAML in and out, dotted overrides, seed aliases."""

from prospect.config.loader import (  # noqa: F401
    ConfigWarning,
    apply_overrides,
    config_with_overrides,
    dump_config,
    load_config,
    loads_config,
    parse_cli_shortcuts,
    redact_secrets,
    resolve_shortcuts,
    valid_keys,
)
from prospect.config.schema import *  # noqa: F401,F403
