"""Third-party preference layouts (issue 18): each read right from a small file in its shape.

The fixtures in tests/fixtures/data/layouts/ are rows written for these tests in the shape of
the real files (named in each test and in tests/fixtures/data/README.md); no third-party data
is copied. The last test checks accepted + rejected == rows_read on every fixture.
"""

from __future__ import annotations

import json
from pathlib import Path

from prospect.config.schema import KTODataConfig
from prospect.data.pipeline import read_items

LAYOUTS = Path(__file__).parent / "fixtures" / "data" / "layouts"


def U(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def items_of(name: str, **cfg) -> tuple[list, dict]:
    items, report = read_items(str(LAYOUTS / name), KTODataConfig(**cfg))
    return items, report.to_dict()


# ---- 18.2: TRL standard implicit prompt ----------------------------------------------------
def test_trl_implicit_prompt_strings_common_prefix_at_a_word_boundary():
    """Shape: TRL's "preference, standard, implicit prompt" rows (docs/dataset_formats and
    scripts/generate_zen_dataset.py's implicit_prompt_preference): chosen/rejected strings only."""
    from trl.data_utils import extract_prompt

    items, rep = items_of("trl_implicit_prompt.jsonl")
    rows = [json.loads(line) for line in (LAYOUTS / "trl_implicit_prompt.jsonl").read_text().splitlines()]
    for item, row in zip(items[:2], rows[:2]):  # prefixes ending at a space: exactly TRL's extract_prompt
        oracle = extract_prompt(row)
        assert (item.prompt, item.chosen, item.rejected) == (oracle["prompt"], oracle["chosen"], oracle["rejected"])
    assert (items[0].prompt, items[0].chosen) == ("The sky is", " blue.")
    # "blue" / "black" share "bl": TRL would cut inside the word; the prompt stops at the space instead
    assert (items[2].prompt, items[2].chosen, items[2].rejected) == ("The sky is", " blue", " black")
    assert rep["shapes"] == {"paired:implicit_prompt_text": 3}  # the count of rows read this way
    assert [(r["row"], r["code"]) for r in rep["rejected"]] == [(4, "missing_field")]  # "Yes." / "No.": no prompt


# ---- 18.1: Anthropic HH transcripts -> turns -----------------------------------------------
def test_hh_rlhf_transcripts_become_alternating_turns():
    """Shape: Anthropic/hh-rlhf rows ({"chosen", "rejected"} transcripts); expected values worked
    by hand from TRL's examples/datasets/hh-rlhf-helpful-base.py, plus stripping and merging."""
    items, rep = items_of("hh_rlhf.jsonl")
    assert items[0].prompt == [U("user", "How do I boil an egg?")]
    assert items[0].chosen == [U("assistant", "Put it in boiling water for nine minutes.")]
    assert items[0].rejected == [U("assistant", "I don't know.")]
    # multi-turn: every earlier turn is kept; the completion is stripped of its spaces
    assert items[1].prompt == [
        U("user", "Name a red fruit."),
        U("assistant", "A strawberry."),
        U("user", "And a yellow one?"),
    ]
    assert items[1].chosen == [U("assistant", "A banana.")] and items[1].rejected == [U("assistant", "A cucumber.")]
    # two Human turns in a row: one user message (chat templates expect alternating roles)
    assert items[2].prompt == [U("user", "Hi.\n\nAre you there?")]
    assert rep["shapes"] == {"paired:hh": 3} and rep["rejected_by_reason"] == {"identical_pair": 1}


def test_hh_turns_reach_the_chat_template_as_turns(tmp_path):
    """With a chat template the HH prompt is rendered as separate turns, not one user message."""
    from prospect.data.tokenize import RecordTokenizer, TokenizeSettings
    from prospect.testing import load_tiny_tokenizer

    tok = load_tiny_tokenizer()
    tok.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    items, _ = items_of("hh_rlhf.jsonl")
    rt = RecordTokenizer(tok, TokenizeSettings(max_length=512, max_prompt_length=256, max_completion_length=256))
    prompt, completion = rt.render(items[1].prompt, items[1].chosen, None)
    assert prompt == "<|user|>Name a red fruit.\n<|assistant|>A strawberry.\n<|user|>And a yellow one?\n<|assistant|>"
    assert completion == "A banana.\n"
