"""The seeds' command-line shortcuts (`--lr 5e-6`, `--beta 0.2`, `--kto_lambda 0.05`, ...) as overrides.

The table of shortcuts is `aliases.SHORTCUTS`; `--beta` lands in the active method's section
and `--kto_lambda` / `--lambda` mean seed 003's DPO+KTO weight or seed 000's loss aversion
depending on the method (docs/config_aliases.md). Shortcuts are applied after `--set`.
"""

from __future__ import annotations

import difflib
import json
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from prospect.config.aliases import ALIASES, SHORTCUTS, method_section
from prospect.config.messages import caller_level, check_method
from prospect.config.overrides import Override, parse_override
from prospect.config.yaml_dialect import parse_value
from prospect.errors import ConfigError, ConfigWarning

#: The alias row of seed 003's `training.kto_lambda` (the weight of the KTO term in DPO+KTO);
#: its `methods` are those where `--kto_lambda` / `--lambda` mean that weight.
_SEED003_KTO_LAMBDA = next(a for a in ALIASES if (a.where, a.key) == ("training", "kto_lambda"))


def _kto_lambda_target(method: str) -> str:
    # seed 003 (`--lambda 0.1` on a DPO+KTO config) vs seed 000 (loss aversion).
    return _SEED003_KTO_LAMBDA.target if method in _SEED003_KTO_LAMBDA.methods else "kto.kto_lambda"


def _format_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def shortcut_overrides(options: Mapping[str, Any] | Sequence[str], method: str) -> list[Override]:
    """The overrides the seeds' shortcuts among `options` stand for, for a run of `method`."""
    pairs = _option_pairs(options)
    for name, value in pairs:  # --method changes where --beta / --kto_lambda land
        if name == "method":
            method = check_method(value, f"--method {value}")
    out: list[Override] = []
    for name, value in pairs:
        if name == "set":
            out.append(parse_override(value))
            continue
        if name == "config":
            raise ConfigError("--config names the config file itself; pass it as the CONFIG argument")
        if name in ("kto_lambda", "lambda"):
            target = _kto_lambda_target(method)
            if target == "kto.kto_lambda" and method_section(method) != "kto":
                warnings.warn(
                    f"--{name} {value}: sets kto.kto_lambda (loss aversion), which has no effect "
                    f"with method {method}; the DPO+KTO weight needs method {' or '.join(_SEED003_KTO_LAMBDA.methods)}",
                    ConfigWarning,
                    stacklevel=caller_level(),
                )
        elif name == "beta":
            target = f"{method_section(method)}.beta"
        elif name in SHORTCUTS:
            target = SHORTCUTS[name]
        else:
            close = difflib.get_close_matches(name, list(SHORTCUTS) + ["set", "config"], n=1, cutoff=0.6)
            hint = f" (did you mean --{close[0]}?)" if close else ""
            raise ConfigError(
                f"--{name}: unknown option{hint}; shortcuts: "
                + ", ".join("--" + s for s in SHORTCUTS)
                + ", --set KEY=VALUE"
            )
        shown = _format_value(value)
        out.append(Override(f"{target}={shown}", f"--{name} {shown}", target, parse_value(shown)))
    return out


def _option_pairs(options: Mapping[str, Any] | Sequence[str]) -> list[tuple[str, Any]]:
    """(name, value) pairs from a mapping (None values skipped, as argparse leaves them) or
    argv tokens (`--lr 5e-6`, `--lr=5e-6`, `--set a.b=c`)."""
    if isinstance(options, Mapping):
        pairs = []
        for name, value in options.items():
            if value is None:
                continue
            name = str(name).lstrip("-").replace("-", "_")
            values = value if name == "set" and isinstance(value, (list, tuple)) else [value]
            pairs += [(name, v) for v in values]
        return pairs
    pairs, tokens = [], list(options)
    i = 0
    while i < len(tokens):
        token = str(tokens[i])
        if not token.startswith("--") or len(token) == 2:
            raise ConfigError(f"{token}: expected an option such as --lr 5e-6 or --set kto.beta=0.2")
        name, sep, value = token[2:].partition("=")
        name = name.replace("-", "_")
        if not sep:
            if i + 1 >= len(tokens):
                raise ConfigError(f"--{name}: missing value")
            value = str(tokens[i + 1])
            i += 1
        pairs.append((name, value))
        i += 1
    return pairs


def parse_cli_shortcuts(argv_options: Mapping[str, Any] | Sequence[str], method: str = "kto") -> list[str]:
    """Map the seeds' command-line shortcuts to dotted overrides for a run of `method`.

    --lr X -> training.learning_rate=X; --beta X -> <kto|dpo>.beta=X (the active method's
    section); --kto_lambda X / --lambda X -> method.kto_weight=X for method dpo_kto (seed
    003), kto.kto_lambda=X otherwise (seed 000); --delta -> method.delta; --model/--model_id
    -> model.name; --method, --output_dir, --seed, --max_steps, --batch_size, --num_epochs
    likewise; --set KEY=VALUE passes through. A --method among the options decides `method`.
    """
    return [ov.text for ov in shortcut_overrides(argv_options, check_method(method, "method"))]
