"""Run configuration: pydantic models, YAML in and out, dotted overrides, seed aliases."""
from prospect.config.schema import *  # noqa: F401,F403
