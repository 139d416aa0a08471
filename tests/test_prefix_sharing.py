"""Shared prompts (engine/prefix.py): the prompt runs once and its completions on its keys and
values; log-probs and gradients equal the unshared computation (`sequence_logps` on
`collate.layout`), for KTO's main and mismatched pairs and DPO's chosen/rejected, with and
without a PEFT LoRA adapter. The oracle is the existing, independently tested unshared path."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from prospect.data.collate import PairedCollator, UnpairedCollator
from prospect.data.layout import layout, mismatched_order, prefix_layout, suffix_layout
from prospect.engine.logprobs import sequence_logps
from prospect.engine.prefix import prompt_states, suffix_logps, supports_prompt_sharing

# Unequal prompts (one of length 1: an empty prefix row) and completions.
PROMPTS = [[1, 5, 7], [2, 4, 6, 8, 10, 12, 14], [3], [30, 31], [50, 51, 52, 53]]
COMPLETIONS = [[9, 3], [11, 12, 13, 14], [20, 21, 22, 23, 24, 25], [40], [60, 61, 62]]
REJECTED = [[70, 71, 72, 73], [80], [81, 82], [83, 84, 85, 86, 87], [88, 89]]


def _model(seed=0, lora=False):
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    m = LlamaForCausalLM(cfg)
    m.config._attn_implementation = "sdpa"
    if lora:
        from peft import LoraConfig, get_peft_model

        m = get_peft_model(
            m,
            LoraConfig(
                r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights=False
            ),
        )
    return m.train()  # dropout is 0 in this config; train mode exercises the training path


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_grads_close(a, b):
    assert a.keys() == b.keys() and a
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k


@pytest.mark.parametrize("lora", [False, True])
def test_kto_main_and_mismatched_equal_unshared(lora):
    model = _model(lora=lora)
    n = len(PROMPTS)
    order = mismatched_order(n)
    kl_completions = [COMPLETIONS[j] for j in order]

    # Unshared oracle: two separate padded layouts.
    full = layout(PROMPTS, COMPLETIONS, pad_id=0)
    main_ref, len_ref = sequence_logps(model, full, "", n)
    (main_ref * torch.arange(1, n + 1)).sum().backward()  # weights so each row's gradient counts differently
    grads_ref = _grads(model)
    model.zero_grad()
    with torch.no_grad():
        kl_ref, _ = sequence_logps(model, layout(PROMPTS, kl_completions, pad_id=0), "", n)

    # Shared: prompt once; main suffixes with grad, mismatched suffixes detached without grad.
    batch = {
        **prefix_layout(PROMPTS, pad_id=0),
        **suffix_layout(PROMPTS, COMPLETIONS, pad_id=0),
        **{"kl_" + k: v for k, v in suffix_layout(PROMPTS, kl_completions, pad_id=0).items()},
    }
    states = prompt_states(model, batch)
    main, lengths = suffix_logps(model, batch, states, "", n)
    with torch.no_grad():
        kl, kl_len = suffix_logps(model, batch, states, "kl_", n, detach=True)
    (main * torch.arange(1, n + 1)).sum().backward()

    assert torch.allclose(main, main_ref, atol=1e-5), (main, main_ref)
    assert torch.allclose(kl, kl_ref, atol=1e-5), (kl, kl_ref)
    assert lengths.tolist() == len_ref.tolist() == [len(c) for c in COMPLETIONS]
    assert kl_len.tolist() == [len(c) for c in kl_completions]
    assert not kl.requires_grad
    _assert_grads_close(_grads(model), grads_ref)


@pytest.mark.parametrize("lora", [False, True])
def test_dpo_pairs_equal_unshared(lora):
    model = _model(seed=1, lora=lora)
    n = len(PROMPTS)
    full = layout(PROMPTS + PROMPTS, COMPLETIONS + REJECTED, pad_id=0)
    ref, _ = sequence_logps(model, full, "", 2 * n)
    w = torch.linspace(-1.0, 2.0, 2 * n)
    (ref * w).sum().backward()
    grads_ref = _grads(model)
    model.zero_grad()

    batch = {**prefix_layout(PROMPTS, pad_id=0), **suffix_layout(PROMPTS + PROMPTS, COMPLETIONS + REJECTED, pad_id=0)}
    logps, lengths = suffix_logps(model, batch, prompt_states(model, batch), "", 2 * n, repeats=2)
    (logps * w).sum().backward()
    assert torch.allclose(logps, ref, atol=1e-5), (logps, ref)
    assert lengths.tolist() == [len(c) for c in COMPLETIONS + REJECTED]
    _assert_grads_close(_grads(model), grads_ref)


def test_lora_disabled_reference_and_truncation():
    """The reference (adapter disabled) through the shared path, with max_length cutting completions."""
    model = _model(seed=2, lora=True)
    n = len(PROMPTS)
    with torch.no_grad(), model.disable_adapter():
        ref, ref_len = sequence_logps(model, layout(PROMPTS, COMPLETIONS, pad_id=0, max_length=6), "", n)
        batch = {**prefix_layout(PROMPTS, pad_id=0), **suffix_layout(PROMPTS, COMPLETIONS, pad_id=0, max_length=6)}
        got, got_len = suffix_logps(model, batch, prompt_states(model, batch), "", n)
    with torch.no_grad():
        policy, _ = suffix_logps(model, batch, prompt_states(model, batch), "", n)
    assert got_len.tolist() == ref_len.tolist() == [2, 0, 5, 1, 2]  # the 7-token prompt leaves no room
    assert torch.allclose(got, ref, atol=1e-5)
    assert not torch.allclose(policy, ref, atol=1e-3)  # the non-zero adapter changes the policy


def test_collators_emit_shared_layout():
    rows = [
        {"prompt_ids": p, "completion_ids": c, "label": i % 2 == 0}
        for i, (p, c) in enumerate(zip(PROMPTS, COMPLETIONS))
    ]
    b = UnpairedCollator(pad_id=0, share_prompt=True)(rows)
    # Prefix: prompts without their last token, left-padded; positions count real tokens only.
    assert b["prefix_input_ids"].shape == (5, 6)
    assert b["prefix_input_ids"][0].tolist() == [0, 0, 0, 0, 1, 5]
    assert b["prefix_position_ids"][0, -2:].tolist() == [0, 1]
    assert b["prefix_attention_mask"][2].sum() == 0  # a one-token prompt has an empty prefix
    # Suffix: last prompt token + completion, positions continuing the prompt.
    assert b["input_ids"][0, :3].tolist() == [7, 9, 3]
    assert b["position_ids"][0, :3].tolist() == [2, 3, 4]
    assert b["seq_index"][0, :4].tolist() == [-1, 0, 0, -1]
    # Mismatched: prompt i with completion (i-1) mod n.
    assert b["kl_input_ids"][0, :2].tolist() == [7, 60]
    assert b["kl_input_ids"][1, :2].tolist() == [14, 9]
    pairs = [{"prompt_ids": p, "chosen_ids": c, "rejected_ids": r} for p, c, r in zip(PROMPTS, COMPLETIONS, REJECTED)]
    d = PairedCollator(pad_id=0, share_prompt=True)(pairs)
    assert d["prefix_input_ids"].shape[0] == 5 and d["input_ids"].shape[0] == 10
    assert d["input_ids"][5, :2].tolist() == [7, 70]


def test_support_check():
    model = _model()
    assert supports_prompt_sharing(model)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert supports_prompt_sharing(model)  # the replay-safe caches keep sharing under checkpointing
    sliding = LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=32, num_hidden_layers=1, num_attention_heads=4))
    sliding.config.layer_types = ["sliding_attention"]
    assert not supports_prompt_sharing(sliding)


@pytest.mark.parametrize("method", ["kto", "dpo", "orpo", "simpo", "cpo"])
def test_trainer_loss_equal_with_and_without_sharing(method, tmp_path):
    """PreferenceTrainer's loss (policy, on-the-fly reference with the adapter disabled, KTO's z0) is the same
    whether the collator shares prompts or not, for the reference-free losses too."""
    model = _model(seed=3, lora=True)
    trainer, coll, rows = _trainer_case(method, tmp_path, model)
    losses, grads = [], []
    for share in (False, True):
        out = trainer.preference_loss(model, coll(pad_id=0, share_prompt=share)(rows))
        out.loss.backward()
        losses.append(out.loss.detach())
        grads.append(_grads(model))
        model.zero_grad()
    assert torch.allclose(losses[0], losses[1], atol=1e-6), losses
    if method in ("kto", "dpo"):  # a non-zero adapter: not the trivial value
        assert abs(float(losses[0]) - (0.5 if method == "kto" else 0.6931)) > 1e-4
    _assert_grads_close(grads[0], grads[1])


def _trainer_case(method, tmp_path, model):
    from transformers import TrainingArguments

    from prospect.config.schema import RunConfig
    from prospect.engine.trainer import PreferenceTrainer
    from prospect.losses import build_loss, build_reference_point

    if method == "kto":
        cfg = RunConfig.model_validate(
            {"method": {"name": "kto"}, "kto": {"desirable_weight": 1.0, "undesirable_weight": 1.0}}
        )
        rows = [
            {"prompt_ids": p, "completion_ids": c, "label": i % 2 == 0}
            for i, (p, c) in enumerate(zip(PROMPTS, COMPLETIONS))
        ]
        coll, z0 = UnpairedCollator, build_reference_point("batch_mismatch")
    else:
        cfg = RunConfig.model_validate({"method": {"name": method}})
        rows = [
            {"prompt_ids": p, "chosen_ids": c, "rejected_ids": r} for p, c, r in zip(PROMPTS, COMPLETIONS, REJECTED)
        ]
        coll, z0 = PairedCollator, None
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, remove_unused_columns=False)
    loss = build_loss(cfg)
    trainer = PreferenceTrainer(
        model=model, args=args, loss_fn=loss, z0_estimator=z0, reference_free=not getattr(loss, "needs_reference", True)
    )
    return trainer, coll, rows


@pytest.mark.parametrize("method", ["kto", "dpo"])
def test_checkpointing_keeps_prompt_sharing_with_equal_loss_and_gradients(method, tmp_path):
    """Gradient checkpointing with shared prompts (replay-safe caches): the same loss and gradients as the
    unshared, uncheckpointed oracle, and each prompt's attention runs once forward and once in the recompute."""
    from prospect.engine.prefix import keep_cache_under_checkpointing

    model = _model(seed=3, lora=True)
    trainer, coll, rows = _trainer_case(method, tmp_path, model)
    oracle = trainer.preference_loss(model, coll(pad_id=0, share_prompt=False)(rows))
    oracle.loss.backward()
    want = _grads(model)
    model.zero_grad()

    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    keep_cache_under_checkpointing(model)
    attn = model.get_base_model().model.layers[0].self_attn
    calls = []
    real = attn.forward

    def counting(*a, **k):
        calls.append(k["hidden_states"].shape if "hidden_states" in k else a[0].shape)
        return real(*a, **k)

    attn.forward = counting
    out = trainer.preference_loss(model, coll(pad_id=0, share_prompt=True)(rows))
    out.loss.backward()
    assert torch.allclose(out.loss.detach(), oracle.loss.detach(), atol=1e-6)
    _assert_grads_close(want, _grads(model))
    # The prompt's attention runs in the policy's forward and once in the backward recompute; the reference
    # (computed on the fly here, adapter disabled, no grad) runs it for its main and its mismatched pass.
    prompt_calls = [c for c in calls if c[1] == max(len(p) for p in PROMPTS) - 1]
    assert len(prompt_calls) == (4 if method == "kto" else 3), calls


@pytest.mark.parametrize("batch_tokens", [4096, 24])  # one batch; several (pairs sorted by length, split)
def test_paired_reference_precompute_with_shared_prompts_equals_the_plain_one(batch_tokens):
    """The reference precompute runs each pair's prompt once for chosen and rejected: same log-probs as
    running every (prompt, completion) sequence on its own (prompt [3] has no prefix at all)."""
    from prospect.engine.reference import compute_paired_reference_logps, compute_reference_logps

    model = _model(seed=5)
    pairs = list(zip(PROMPTS, COMPLETIONS, REJECTED))
    chosen, rejected = compute_paired_reference_logps(model, pairs, pad_id=0, batch_tokens=batch_tokens)
    plain = compute_reference_logps(model, [(p, c) for p, c, _ in pairs] + [(p, r) for p, _, r in pairs], pad_id=0)
    n = len(pairs)
    torch.testing.assert_close(chosen, plain[:n], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rejected, plain[n:], rtol=1e-5, atol=1e-5)
    assert not torch.equal(chosen, rejected)  # two different completions per prompt, each in its place
