"""Prompts that are implicit in the completions: Anthropic HH transcripts and TRL's implicit prompt.

- `split_hh(chosen, rejected)`: Anthropic HH-RLHF rows hold two whole transcripts,
  "\\n\\nHuman: ... \\n\\nAssistant: ..." that share everything up to the last assistant turn.
  The shared part up to its last "Assistant:" marker is split into alternating user /
  assistant messages (`hh_turns`), and what follows the marker in each transcript is that
  side's completion, stripped. This is what TRL's own converter does
  (`examples/datasets/hh-rlhf-helpful-base.py`: split at "\\n\\nHuman: " / "\\n\\nAssistant: ",
  prompt = the earlier turns, chosen/rejected = one assistant message each); Prospect also
  strips each turn and merges consecutive turns of one speaker (chat templates expect turns to
  alternate), so a multi-turn row keeps every earlier turn.
- `split_common_prefix(chosen, rejected)`: TRL's standard implicit-prompt format (plain
  `chosen` / `rejected` strings, no prompt column; `trl.data_utils.extract_prompt`): the
  prompt is their longest common prefix, cut back to a whitespace boundary so no word is
  split between prompt and completion; the whitespace starts the completions, as in TRL
  ("The sky is" + " blue." / " green."). When the prefix already ends at a word boundary
  this is exactly `extract_prompt`.
"""

from __future__ import annotations

import os
import re

from prospect.data.records import Message

HH_MARKER = "Assistant:"
HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):")
HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def hh_turns(text: str) -> list[Message]:
    """An HH transcript -> messages: user/assistant turns (stripped, empty ones dropped,
    consecutive turns of one speaker joined by a blank line); text before the first marker is a user turn."""
    parts = HH_TURN.split(text)
    pieces = [("user", parts[0])] + [(HH_ROLES[parts[i]], parts[i + 1]) for i in range(1, len(parts) - 1, 2)]
    turns: list[Message] = []
    for role, content in pieces:
        content = content.strip()
        if not content:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += "\n\n" + content
        else:
            turns.append({"role": role, "content": content})
    return turns


def split_hh(chosen: str, rejected: str) -> tuple[list[Message], str, str] | None:
    """(prompt messages, chosen, rejected) of an HH pair, or None when the shared prefix has no
    'Assistant:' marker or no turn before it (see module doc)."""
    prefix = os.path.commonprefix([chosen, rejected])
    cut = prefix.rfind(HH_MARKER)
    if cut < 0:
        return None
    turns = hh_turns(chosen[:cut])
    if not turns:
        return None
    end = cut + len(HH_MARKER)
    return turns, chosen[end:].strip(), rejected[end:].strip()


def _word_ends(text: str, n: int) -> bool:
    return n == len(text) or text[n].isspace()


def split_common_prefix(chosen: str, rejected: str) -> tuple[str, str, str] | None:
    """(prompt, chosen, rejected) by the longest common prefix at a whitespace boundary, or None
    when the two share no whole word (see module doc)."""
    n = len(os.path.commonprefix([chosen, rejected]))
    if n and not chosen[n - 1].isspace() and not (_word_ends(chosen, n) and _word_ends(rejected, n)):
        # the prefix ends inside a word of one side: back off to the whitespace before that word
        while n > 0 and not chosen[n - 1].isspace():
            n -= 1
    while n > 0 and chosen[n - 1].isspace():  # the whitespace starts the completions
        n -= 1
    prompt = chosen[:n]
    if not prompt.strip():
        return None
    return prompt, chosen[n:], rejected[n:]
