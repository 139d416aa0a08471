"""QLoRA (optimization.use_quantization) on CPU: bitsandbytes' CPU backend, the tiny model.

The oracle for log-probs is the tiny model loaded 4-bit by transformers directly (a
BitsAndBytesConfig written out here, not Prospect's), with log-softmax computed here.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from helpers import learnable_unpaired, write_config, write_jsonl
from prospect.cli import main
from prospect.config.schema import RunConfig
from prospect.errors import ConfigError, ModelLoadError
from prospect.testing import tiny_model_dir

pytest.importorskip("bitsandbytes")

TINY = str(tiny_model_dir())
QLORA = {"use_lora": True, "lora_rank": 4, "lora_dropout": 0.0, "use_quantization": True}
PROMPTS = [[1, 5, 7], [2, 4, 6, 8, 10, 12, 14], [3], [30, 31]]
CHOSEN = [[9, 3], [11, 12, 13, 14], [20, 21, 22, 23, 24, 25], [40]]
REJECTED = [[70, 71, 72, 73], [80], [81, 82], [83, 84, 85, 86, 87]]


def _cfg(**opt) -> RunConfig:
    return RunConfig.model_validate({"model": {"name": TINY}, "optimization": {**QLORA, **opt}})


def _oracle_4bit():
    """The tiny model in 4-bit NF4 (double quant, float32 compute), loaded without Prospect; CPU
    inference repacking (bfloat16 constants) off, as Prospect does, so it computes the weights as quantized."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    q = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    model = AutoModelForCausalLM.from_pretrained(TINY, quantization_config=q, device_map={"": "cpu"})
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    return model.eval()


def _logps(model, prompt: list[int], completion: list[int]) -> float:
    """log p(completion | prompt) summed over the completion tokens, by hand from the logits."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
    return sum(lp[t - 1, ids[0, t]].item() for t in range(len(prompt), ids.shape[1]))


def _perturb_lora(model) -> None:
    """Non-zero LoRA B matrices, so the adapter changes the output (B starts at 0)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)


# ----------------------------------------------------------------------------- loading
def test_4bit_load_on_cpu_gives_linear4bit_layers_and_a_float32_adapter():
    from bitsandbytes.nn import Linear4bit

    from prospect.engine.model import load_policy_and_reference

    policy, reference, _ = load_policy_and_reference(_cfg())
    assert reference is None  # the reference is the same 4-bit base with the adapter disabled
    base = policy.get_base_model()
    kinds = {type(m.base_layer) for n, m in base.named_modules() if n.endswith(("q_proj", "down_proj"))}
    assert kinds == {Linear4bit}
    layer = base.model.layers[0].self_attn.q_proj.base_layer
    assert layer.weight.quant_state.quant_type == "nf4" and layer.weight.dtype == torch.uint8
    trainable = {n: p for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and p.dtype == torch.float32 for n, p in trainable.items())
    assert not base.is_gradient_checkpointing  # decided later, in engine/checkpointing.py


def test_full_finetuning_with_quantization_is_refused():
    from prospect.engine.model import load_policy_and_reference

    with pytest.raises(ConfigError, match="use_lora"):
        load_policy_and_reference(_cfg(use_lora=False))


def test_missing_bitsandbytes_is_one_clear_error_naming_the_extra(monkeypatch):
    from prospect.engine.model import load_policy_and_reference

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # `import bitsandbytes` now raises ImportError
    with pytest.raises(ModelLoadError, match=r'bitsandbytes.*pip install -e "\.\[qlora\]"'):
        load_policy_and_reference(_cfg())


def test_missing_bitsandbytes_through_the_cli_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    data = write_jsonl(tmp_path / "d.jsonl", learnable_unpaired(4, seed=3))
    cfg = write_config(tmp_path / "c.yaml", data={"train_file": str(data)}, optimization=QLORA)
    assert main(["train", str(cfg), "--quiet"]) != 0
    err = capsys.readouterr().err
    assert 'pip install -e ".[qlora]"' in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if "bitsandbytes" in line]) == 1


def test_seed_alias_load_in_4bit_turns_quantization_on(tmp_path):
    import yaml

    from prospect.engine.model import quantization_summary
    from prospect.recipes.config import load_run_config

    for block in ("optimization", "hyperparams"):  # seed 004 writes it in hyperparams
        path = tmp_path / f"{block}.yaml"
        path.write_text(yaml.safe_dump({"model": {"name": TINY}, block: {"load_in_4bit": True}}))
        cfg = load_run_config(str(path))
        assert cfg.optimization.use_quantization, block
    want = {"bits": 4, "type": "nf4", "double_quant": True, "compute_dtype": "float32"}
    assert quantization_summary(cfg) == want
    assert quantization_summary(_cfg(use_quantization=False)) is None
    assert quantization_summary(_cfg(bf16=True))["compute_dtype"] == "bfloat16"


def test_lora_gradients_over_4bit_equal_those_over_the_dequantized_base():
    """After an eval-mode pass without gradients (as the reference precompute runs), the LoRA
    gradients of the 4-bit policy equal those of the same adapter on the dequantized float base
    (W = dequant(nf4), an ordinary nn.Linear): the base layers pass gradients through."""
    from peft import get_peft_model, set_peft_model_state_dict
    from peft.utils import get_peft_model_state_dict

    from prospect.engine.model import load_policy_and_reference, lora_config

    cfg = _cfg()
    policy, _, _ = load_policy_and_reference(cfg)
    _perturb_lora(policy)
    ids = torch.tensor([PROMPTS[1] + CHOSEN[1], PROMPTS[0] + CHOSEN[2] + [5, 6]])
    policy.eval()
    with torch.no_grad(), policy.disable_adapter():
        policy(input_ids=ids)  # the eval pass that must not change the layout
    policy.train()
    policy(input_ids=ids, labels=ids).loss.backward()
    got = {k: p.grad for k, p in policy.named_parameters() if p.grad is not None}

    floats = get_peft_model(_oracle_4bit().dequantize(), lora_config(cfg))
    set_peft_model_state_dict(floats, get_peft_model_state_dict(policy))
    assert type(floats.get_base_model().model.layers[0].mlp.down_proj.base_layer) is torch.nn.Linear
    floats.train()
    floats(input_ids=ids, labels=ids).loss.backward()
    want = {k: p.grad for k, p in floats.named_parameters() if p.grad is not None}
    assert got.keys() == want.keys() and len(got) > 0
    for k in want:
        assert torch.allclose(got[k], want[k], atol=1e-5, rtol=1e-3), k


def test_8bit_loads_and_trains_on_cpu():
    from bitsandbytes.nn import Linear8bitLt

    from prospect.engine.model import load_policy_and_reference, quantization_summary

    cfg = _cfg(quantization_bits=8)
    assert quantization_summary(cfg)["bits"] == 8
    policy, _, _ = load_policy_and_reference(cfg)
    assert type(policy.get_base_model().model.layers[0].self_attn.q_proj.base_layer) is Linear8bitLt
    _perturb_lora(policy)  # with B = 0 (its start), A gets no gradient
    ids = torch.tensor([PROMPTS[1] + CHOSEN[1]])
    policy(input_ids=ids, labels=ids).loss.backward()
    grads = [p.grad for n, p in policy.named_parameters() if "lora_A" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


# ----------------------------------------------------------------------------- reference
def test_adapter_disabled_reference_equals_the_4bit_base():
    from prospect.engine.model import load_policy_and_reference
    from prospect.engine.reference import reference_context

    policy, _, _ = load_policy_and_reference(_cfg())
    _perturb_lora(policy)
    policy.eval()
    oracle = _oracle_4bit()
    with reference_context(policy, None)() as ref:
        got = [_logps(ref, p, c) for p, c in zip(PROMPTS, CHOSEN, strict=True)]
    want = [_logps(oracle, p, c) for p, c in zip(PROMPTS, CHOSEN, strict=True)]
    assert got == pytest.approx(want, abs=1e-5)
    with_adapter = [_logps(policy, p, c) for p, c in zip(PROMPTS, CHOSEN, strict=True)]
    assert max(abs(a - b) for a, b in zip(with_adapter, want, strict=True)) > 1e-2  # the adapter matters


def test_reference_precompute_over_4bit_matches_and_is_keyed_by_quantization(tmp_path, monkeypatch):
    from datasets import Dataset

    from prospect.data.tokenize import TokenizeSettings
    from prospect.engine.model import load_policy_and_reference
    from prospect.engine.reference import attach_reference, reference_context

    monkeypatch.setenv("PROSPECT_CACHE", str(tmp_path / "cache"))
    ds = Dataset.from_dict({"prompt_ids": PROMPTS, "chosen_ids": CHOSEN, "rejected_ids": REJECTED})
    settings = TokenizeSettings(max_length=32, max_prompt_length=16, max_completion_length=16)
    oracle = _oracle_4bit()
    notes = {}
    for quantized in (True, False):
        policy, _, tok = load_policy_and_reference(_cfg(use_quantization=quantized))
        _perturb_lora(policy)
        out, notes[quantized] = attach_reference(
            reference_context(policy, None), tok, settings, {"train": ds}, "paired"
        )
        if quantized:
            want = [_logps(oracle, p, c) for p, c in zip(PROMPTS, REJECTED, strict=True)]
            assert out["train"]["ref_rejected_logps"] == pytest.approx(want, abs=1e-4)
    # The float32 base must not reuse the 4-bit entry: both computed ("miss"), two cache files.
    assert notes == {True: {"train": "miss"}, False: {"train": "miss"}}
    assert len(list((tmp_path / "cache" / "reference").glob("*.safetensors"))) == 2


def test_prompt_sharing_over_4bit_equals_unshared():
    """DPO's chosen and rejected on the shared prompt's keys/values = two unshared passes (log-probs, grads)."""
    from prospect.data.layout import layout, prefix_layout, suffix_layout
    from prospect.engine.logprobs import sequence_logps
    from prospect.engine.model import load_policy_and_reference
    from prospect.engine.prefix import prompt_states, suffix_logps, supports_prompt_sharing

    policy, _, _ = load_policy_and_reference(_cfg())
    _perturb_lora(policy)
    assert supports_prompt_sharing(policy)
    n = len(PROMPTS)

    def grads():
        g = {k: p.grad.clone() for k, p in policy.named_parameters() if p.grad is not None}
        policy.zero_grad()
        return g

    chosen, _ = sequence_logps(policy, layout(PROMPTS, CHOSEN, pad_id=0), "", n)
    rejected, _ = sequence_logps(policy, layout(PROMPTS, REJECTED, pad_id=0), "", n)
    (chosen.sum() - 2 * rejected.sum()).backward()
    want = grads()
    batch = {
        **prefix_layout(PROMPTS, pad_id=0),
        **suffix_layout(PROMPTS, CHOSEN, pad_id=0),
        **{"kl_" + k: v for k, v in suffix_layout(PROMPTS, REJECTED, pad_id=0).items()},
    }
    states = prompt_states(policy, batch)
    s_chosen, _ = suffix_logps(policy, batch, states, "", n)
    s_rejected, _ = suffix_logps(policy, batch, states, "kl_", n)
    assert torch.allclose(s_chosen, chosen, atol=1e-4) and torch.allclose(s_rejected, rejected, atol=1e-4)
    (s_chosen.sum() - 2 * s_rejected.sum()).backward()
    got = grads()
    assert got.keys() == want.keys() and got
    for k in want:
        assert torch.allclose(got[k], want[k], atol=1e-4, rtol=1e-3), k


# ----------------------------------------------------------------------------- training through the CLI
def _pairs(n: int) -> list[dict]:
    """Paired rows (polite chosen, rude rejected) with Factual-DPO's labels (chosen factual)."""
    rows = learnable_unpaired(n, seed=3)
    good = [r for r in rows if r["label"]]
    return [
        {"prompt": r["prompt"], "chosen": r["completion"], "rejected": "No. Go away.", "h_w": 0, "h_l": 1} for r in good
    ]


def _train(root: Path, name: str, method: str | dict, **sections) -> Path:
    """`prospect train` with QLoRA for 2 steps; returns the run directory."""
    unpaired = (method if isinstance(method, str) else method["name"]) == "kto"
    data = write_jsonl(root / f"{name}.jsonl", learnable_unpaired(8, seed=3) if unpaired else _pairs(8))
    cfg = write_config(
        root / f"{name}.yaml",
        method=method,
        training={"max_steps": 2, "save_steps": 100, "run_name": name, "batch_size": 4},
        data={"train_file": str(data), "validation_split_percentage": 0.0},
        optimization=QLORA,
        **sections,
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("prospect.eval.plots.plot_run", lambda run_dir: [])
        assert main(["train", str(cfg), "--quiet"]) == 0
    return root / "runs" / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("qlora")
    done: dict[str, Path] = {}

    def get(method: str) -> Path:
        if method not in done:
            done[method] = _train(root, method, method)
        return done[method]

    return get


def _adapter(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


@pytest.mark.parametrize("method", ["kto", "dpo"])
def test_qlora_trains_through_prospect_train(runs, method):
    run = runs(method)
    res = json.loads((run / "results.json").read_text())
    assert res["global_step"] == 2 and res["nonfinite_steps"] == 0
    assert res["quantization"]["bits"] == 4 and res["quantization"]["type"] == "nf4"
    assert res["reference"]["mode"] == "precomputed"
    losses = [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    # The adapter moved (PEFT starts every B at 0); only adapter tensors are saved.
    final = _adapter(run / "final")
    assert final and all("lora_" in k for k in final)
    assert all(v.abs().max() > 0 for k, v in final.items() if "lora_B" in k)
    assert not (run / "final" / "model.safetensors").exists()


@pytest.mark.parametrize("method", ["kto", "dpo"])
def test_qlora_base_stays_fixed_while_the_adapter_trains(tmp_path, method):
    """Through the recipe steps (as `prospect train` runs them): 4-bit base bytes and quant
    constants identical after training, every LoRA tensor changed."""
    from prospect.recipes.config import load_run_config
    from prospect.recipes.training import add_reference, fit, load_models, make_trainer, prepare, tokenize

    data = write_jsonl(tmp_path / "d.jsonl", learnable_unpaired(8, seed=3) if method == "kto" else _pairs(8))
    cfg_path = write_config(
        tmp_path / "c.yaml",
        method=method,
        training={"max_steps": 2, "save_steps": 100, "batch_size": 4},
        data={"train_file": str(data), "validation_split_percentage": 0.0},
        optimization=QLORA,
    )
    run = prepare(load_run_config(str(cfg_path)))
    models = load_models(run)
    params = dict(models.policy.named_parameters())
    base = {n: p.detach().clone() for n, p in params.items() if "lora_" not in n}
    absmax = {n: p.quant_state.absmax.clone() for n, p in params.items() if hasattr(p, "quant_state")}
    lora = {n: p.detach().clone() for n, p in params.items() if "lora_" in n}
    assert absmax and lora
    trainer = make_trainer(run, models, add_reference(run, models, tokenize(run, models)), quiet=True)
    fit(run, trainer)
    params = dict(models.policy.named_parameters())
    assert all(torch.equal(params[n], t) for n, t in base.items())
    assert all(torch.equal(params[n].quant_state.absmax, t) for n, t in absmax.items())
    changed = [n for n, t in lora.items() if not torch.equal(params[n].detach(), t)]
    assert len(changed) == len(lora)


def test_export_merge_of_a_qlora_run_is_a_float_model(runs, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = runs("kto")
    out = tmp_path / "merged"
    assert main(["export", str(run), "--merge", "-o", str(out)]) == 0
    marker = json.loads((out / "prospect_export.json").read_text())
    assert marker["merged"] and marker["dequantized_base"] and marker["quantization"]["type"] == "nf4"
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    merged = AutoModelForCausalLM.from_pretrained(str(out)).eval()  # plain transformers, no bitsandbytes config
    assert {p.dtype for p in merged.parameters()} == {torch.float32}
    assert type(merged.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    # It computes what the trained QLoRA model computes: dequantized 4-bit base + adapter.
    trained = PeftModel.from_pretrained(_oracle_4bit(), str(run / "final")).eval()
    for p, c in zip(PROMPTS, CHOSEN, strict=True):
        assert _logps(merged, p, c) == pytest.approx(_logps(trained, p, c), abs=1e-3)


def test_eval_of_a_qlora_run_scores_the_adapter_on_the_4bit_base(runs):
    from bitsandbytes.nn import Linear4bit
    from peft import PeftModel

    from prospect.config.loader import load_saved_config
    from prospect.recipes.evaluate import load_for_eval

    run = runs("kto")
    models = load_for_eval(load_saved_config(run / "config.yaml"), run / "final")
    assert type(models.policy.get_base_model().model.layers[0].self_attn.q_proj.base_layer) is Linear4bit
    trained = PeftModel.from_pretrained(_oracle_4bit(), str(run / "final")).eval()
    p, c = PROMPTS[1], CHOSEN[1]
    assert _logps(models.policy, p, c) == pytest.approx(_logps(trained, p, c), abs=1e-5)


# ----------------------------------------------------------------------------- the other methods
@pytest.mark.slow
@pytest.mark.parametrize(
    "name,method",
    [("ipo", {"name": "dpo"}), ("factual_dpo", {"name": "factual_dpo"}), ("dpo_kto", {"name": "dpo_kto"})],
)
def test_other_methods_train_with_qlora(tmp_path, name, method):
    extra = {"dpo": {"loss_type": "ipo"}} if name == "ipo" else {}
    run = _train(tmp_path, name, method, **extra)
    res = json.loads((run / "results.json").read_text())
    assert res["global_step"] == 2 and res["quantization"]["bits"] == 4
    final = _adapter(run / "final")
    assert any(v.abs().max() > 0 for k, v in final.items() if "lora_B" in k)
