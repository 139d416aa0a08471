"""User-facing error types.

Every error a *user* can cause (a bad config, a bad data row, a missing file) is a
`ProspectError`. The CLI prints its message on one line to stderr and exits with
`exit_code`, never with a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Any

#: Characters of a user value quoted in an error message or a rejected row's reason.
MAX_REASON_VALUE = 60


def show(value: Any) -> str:
    """A short, always-encodable rendering of a user value for error messages."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > MAX_REASON_VALUE:
        text = text[: MAX_REASON_VALUE - 3] + "..."
    # Lone surrogates (broken UTF-16 escapes in the input) must not break report writing.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class ProspectError(Exception):
    """Base class of errors caused by user input; printed without a traceback."""

    exit_code: int = 1


class ConfigError(ProspectError, ValueError):
    """A run configuration that cannot be used (unknown key, wrong type, bad value)."""

    exit_code = 2


class ConfigWarning(UserWarning):
    """A config that loads but contains something ignored or without effect."""


class ModelLoadError(ProspectError):
    """A model or tokenizer that cannot be found or loaded."""


class KTODataError(ProspectError, ValueError):
    """Raised when preference data cannot be read or processed (seed 001 name)."""


class KTOLabelError(KTODataError):
    """Raised when a label cannot be normalised to desirable/undesirable (seed 001 name)."""


class DPODataError(KTODataError):
    """Raised when paired (chosen/rejected) data cannot be read or processed."""


class DPOLabelError(DPODataError):
    """Raised when a pair's preference direction cannot be determined."""


class TrainingError(ProspectError):
    """A run that must stop for a reason the user can act on (e.g. repeated non-finite losses)."""
