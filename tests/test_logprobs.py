"""Per-sequence log-probs: the completion-only, chunked path equals a naive full-logits computation,
in padded and packed layouts, and the KTO mismatched pairs follow TRL's rotation."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from prospect.data.collate import PairedCollator, UnpairedCollator
from prospect.data.layout import layout, mismatched_order
from prospect.engine import logprobs as lp
from prospect.engine.logprobs import sequence_logps


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    m = LlamaForCausalLM(cfg).eval()
    m.config._attn_implementation = "sdpa"
    return m


def naive_logps(model, prompt, completion):
    """log pi(completion | prompt) from one unpadded forward with full logits."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(ids).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    return sum(logp[len(prompt) + j - 1, t].item() for j, t in enumerate(completion))


ROWS = [([1, 5, 7], [9, 3]), ([2, 4, 6, 8, 10], [11, 12, 13, 14]), ([3], [20, 21, 22]), ([30, 31], [40])]


@pytest.mark.parametrize("packed", [False, True])
def test_sequence_logps_matches_naive(model, packed):
    batch = layout([p for p, _ in ROWS], [c for _, c in ROWS], pad_id=0, packed=packed)
    with torch.no_grad():
        logps, lengths = sequence_logps(model, batch, "", len(ROWS))
    expected = torch.tensor([naive_logps(model, p, c) for p, c in ROWS])
    assert torch.allclose(logps, expected, atol=1e-4), (logps, expected)
    assert lengths.tolist() == [len(c) for _, c in ROWS]


def test_chunked_logsoftmax_equals_unchunked(model, monkeypatch):
    batch = layout([p for p, _ in ROWS], [c for _, c in ROWS], pad_id=0)
    with torch.no_grad():
        full, _ = sequence_logps(model, batch, "", len(ROWS))
        monkeypatch.setattr(lp, "LOGSOFTMAX_CHUNK", 3)
        chunked, _ = sequence_logps(model, batch, "", len(ROWS))
    assert torch.allclose(full, chunked, atol=1e-6)


def test_gradient_flows_only_through_completion_logps(model):
    batch = layout([[1, 2]], [[3, 4]], pad_id=0)
    logps, _ = sequence_logps(model, batch, "", 1)
    logps.sum().backward()
    assert model.model.embed_tokens.weight.grad is not None
    model.zero_grad()


def test_mismatched_pairs_follow_trl_rotation():
    # TRL pairs prompt i with completion i-1 (wrapping): (x1, yn), (x2, y1), ...
    assert mismatched_order(4) == [3, 0, 1, 2]
    rows = [{"prompt_ids": [10 + i], "completion_ids": [20 + i], "label": i % 2 == 0} for i in range(3)]
    b = UnpairedCollator(pad_id=0)(rows)
    assert b["kl_input_ids"][:, :2].tolist() == [[10, 22], [11, 20], [12, 21]]
    assert b["label"].tolist() == [True, False, True]


def test_paired_collator_chosen_then_rejected():
    rows = [
        {"prompt_ids": [1, 2], "chosen_ids": [3], "rejected_ids": [4, 5], "h_w": 0, "h_l": 1},
        {"prompt_ids": [6], "chosen_ids": [7, 8], "rejected_ids": [9], "h_w": 1, "h_l": 0},
    ]
    b = PairedCollator(pad_id=0)(rows)
    assert b["input_ids"].shape[0] == 4
    assert b["seq_index"][0].tolist()[:3] == [-1, -1, 0]
    assert b["seq_index"][2].tolist()[:4] == [-1, -1, 2, 2]
    assert b["h_w"].tolist() == [0, 1] and b["h_l"].tolist() == [1, 0]
