"""The method table: the one list of training methods and loss-type names.

Everything that needs a method's name or a static fact about it reads this table: the
config schema (valid `method.name`), the alias table (which section a seed key lands in),
the loss builders (`prospect.losses`, checked at import to cover exactly these names), the
data layer (unpaired or paired records, reorientation) and the docs. Nothing below
`prospect.recipes` compares `method.name` with a string: it asks this table or the loss
object (`loss.needs_reference_point`, `loss.needs_reference`, ...).

Adding a method: one `Method(...)` row here, plus one loss module in `prospect/losses/`
whose builder is registered with `@register_method("<name>")`; see docs/architecture.md.
Adding a loss type: its name in `LOSS_TYPES[<section>]` plus its class registered with
`@register_unpaired` / `@register_paired`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["unpaired", "paired"]
SectionName = Literal["kto", "dpo"]


@dataclass(frozen=True)
class Method:
    """Static facts of one training method.

    name: the value of `method.name`.
    kind: the records it trains on: "unpaired" (prompt, completion, label) or "paired"
      (prompt, chosen, rejected); the data layer converts between them.
    section: the config section holding its beta, reference and length settings.
    summary / paper: one line each, for docs, `prospect config show` and model cards.
    reorients_pairs: pairs are reoriented by their factuality indicators before training.
    needs_both_labels: training refuses data lacking either label (a KTO batch needs both).
    """

    name: str
    kind: Kind
    section: SectionName
    summary: str
    paper: str
    reorients_pairs: bool = False
    needs_both_labels: bool = False


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "kto",
            "unpaired",
            "kto",
            "Kahneman-Tversky Optimization on desirable/undesirable completions",
            "Ethayarajh et al. 2024, KTO: Model Alignment as Prospect Theoretic Optimization (arXiv:2402.01306)",
            needs_both_labels=True,
        ),
        Method(
            "dpo",
            "paired",
            "dpo",
            "Direct Preference Optimization on chosen/rejected pairs",
            "Rafailov et al. 2023, Direct Preference Optimization (arXiv:2305.18290)",
        ),
        Method(
            "ipo",
            "paired",
            "dpo",
            "Identity Preference Optimization (squared loss on length-averaged log-ratios)",
            "Azar et al. 2023, A General Theoretical Paradigm to Understand Learning from Human Preferences (arXiv:2310.12036)",
        ),
        Method(
            "factual_dpo",
            "paired",
            "dpo",
            "DPO with a factuality margin Delta (Factual-DPO++, SafeDPO-style)",
            "Kim et al. 2025, SafeDPO (arXiv:2505.20065); seed 004 Factual-DPO++",
            reorients_pairs=True,
        ),
        Method(
            "dpo_kto",
            "paired",
            "dpo",
            "DPO plus a weighted KTO term on the same pairs (seed 003 track B)",
            "Rafailov et al. 2023 + Ethayarajh et al. 2024",
        ),
        Method(
            "orpo",
            "paired",
            "dpo",
            "Odds Ratio Preference Optimization: NLL on chosen + lambda x odds-ratio term, no reference model",
            "Hong et al. 2024, ORPO: Monolithic Preference Optimization without Reference Model (arXiv:2403.07691)",
        ),
        Method(
            "simpo",
            "paired",
            "dpo",
            "Simple Preference Optimization: length-normalised reward with a target margin gamma, no reference model",
            "Meng et al. 2024, SimPO: Simple Preference Optimization with a Reference-Free Reward (arXiv:2405.14734)",
        ),
        Method(
            "cpo",
            "paired",
            "dpo",
            "Contrastive Preference Optimization: reference-free DPO loss + NLL on chosen",
            "Xu et al. 2024, Contrastive Preference Optimization: Pushing the Boundaries of LLM Performance in "
            "Machine Translation (arXiv:2401.08417)",
        ),
    )
}

#: Valid loss-type names per section (`kto.loss_type`, `dpo.loss_type`). The loss registries
#: in `prospect.losses` are checked at import to hold exactly these names.
LOSS_TYPES: dict[SectionName, tuple[str, ...]] = {
    "kto": ("kto", "prospect", "apo_zero_unpaired"),
    "dpo": (
        "sigmoid",
        "hinge",
        "ipo",
        "exo_pair",
        "nca_pair",
        "robust",
        "bco_pair",
        "sppo_hard",
        "aot",
        "aot_unpaired",
        "apo_zero",
        "apo_down",
        "discopop",
        "sft",
        "sigmoid_norm",
    ),
}
