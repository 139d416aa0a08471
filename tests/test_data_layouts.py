"""Third-party preference layouts (issue 18): each read right from a small file in its shape.

The fixtures in tests/fixtures/data/layouts/ are rows written for these tests in the shape of
the real files (named in each test and in tests/fixtures/data/README.md); no third-party data
is copied. The last test checks accepted + rejected == rows_read on every fixture.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prospect.config.schema import KTODataConfig
from prospect.data import inspect_file, load_records
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


# ---- 18.3: data.messages_column; LLaMA-Factory's dataset_info.json --------------------------
LF = LAYOUTS / "llamafactory"


def test_messages_column_names_a_renamed_conversation_column(tmp_path):
    rows = [{"dialog": [U("user", "Hi"), U("assistant", "Hello.")], "label": True}]
    p = tmp_path / "d.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert inspect_file(p)["rejected_by_reason"] == {"unknown_format": 1}  # unnamed: not recognised
    items, report = read_items(str(p), KTODataConfig(messages_column="dialog"))
    assert items[0].prompt == [U("user", "Hi")] and items[0].completion == [U("assistant", "Hello.")]
    assert report.shapes == {"unpaired:conversation": 1}


def test_llamafactory_registry_sharegpt_kto_with_renamed_columns_and_tags():
    """Shape: LLaMA-Factory's data/dataset_info.json entries (file_name, formatting, columns, tags)
    and its sharegpt KTO demo rows (kto_en_demo.json: messages + a boolean tag), with every name changed."""
    cfg = KTODataConfig(dataset_info=str(LF / "dataset_info.json"), dataset="kto_dialog")
    assert cfg.train_file == str(LF / "kto_dialog.json")  # file_name, relative to the registry
    rep = inspect_file(cfg.train_file, cfg)
    assert rep["accepted"] == 2 and rep["labels"] == {"desirable": 1, "undesirable": 1}
    assert rep["rejected_by_reason"] == {"missing_field": 1}  # row 3 has no assistant turn to learn from
    loaded = load_records(cfg.model_copy(update={"validation_split_percentage": 0.0}), kind="unpaired")
    first, second = loaded.train
    assert first.prompt == [U("user", "Where is my parcel?")] and first.completion == [
        U("assistant", "It arrives tomorrow.")
    ]
    assert first.system == "You are a courier's assistant." and first.label is True
    assert second.prompt == [U("user", "Hi"), U("assistant", "Hello."), U("user", "Cancel my order.")]
    assert second.label is False


def test_llamafactory_registry_alpaca_and_sharegpt_ranking():
    """Shapes: LLaMA-Factory alpaca ranking rows with renamed columns, and its dpo_en_demo.json
    (sharegpt conversations + chosen/rejected message objects), and its alpaca KTO layout."""
    info = str(LF / "dataset_info.json")
    items, rep = read_items(str(LF / "dpo_alpaca.json"), KTODataConfig(dataset_info=info, dataset="dpo_alpaca"))
    rep = rep.to_dict()
    assert [(p.prompt, p.chosen, p.rejected) for p in items] == [
        ("Translate to French\ncat", "chat", "chien"),  # instruction + "\n" + input, as LLaMA-Factory joins them
        ("Capital of Italy?", "Rome", "Milan"),
    ]
    assert rep["shapes"] == {"paired:alpaca": 2}
    cfg = KTODataConfig(dataset_info=info, dataset="dpo_sharegpt")
    items, _ = read_items(cfg.train_file, cfg)
    assert items[0].prompt == [U("system", "Be terse."), U("user", "2+2?")]
    assert items[0].chosen == [U("assistant", "4")] and items[0].rejected == [U("assistant", "5")]
    cfg = KTODataConfig(dataset_info=info, dataset="kto_alpaca")
    items, _ = read_items(cfg.train_file, cfg)
    assert [(r.prompt, r.completion, r.label) for r in items] == [
        ("Say hi", "hi", True),
        ("Say bye\npolitely", "go away", False),
    ]


def test_llamafactory_registry_errors_are_config_errors(tmp_path):
    from pydantic import ValidationError

    info = str(LF / "dataset_info.json")
    with pytest.raises(ValidationError, match="set data.dataset as well"):
        KTODataConfig(dataset_info=info)
    with pytest.raises(
        ValidationError, match=r"no dataset 'nope' in .*dataset_info.json \(it has: dpo_alpaca, dpo_sharegpt"
    ):
        KTODataConfig(dataset_info=info, dataset="nope")
    bad = tmp_path / "dataset_info.json"
    bad.write_text('{"x": {"file_name": "x.json", "formatting": "openai"}}', encoding="utf-8")
    with pytest.raises(ValidationError, match="formatting 'openai'"):
        KTODataConfig(dataset_info=str(bad), dataset="x")
    # an explicit train_file is read with the entry's layout
    cfg = KTODataConfig(dataset_info=info, dataset="dpo_alpaca", train_file=str(LF / "dpo_alpaca.json"))
    assert cfg.train_file == str(LF / "dpo_alpaca.json")


# ---- 18.9: AlpacaEval / pairwise judges, Nectar, LLaMA-Factory messages; warnings ----------
def test_alpaca_eval_pairwise_judge_rows():
    """Shape: AlpacaEval annotation files (instruction, output_1, output_2, generator_1/2, annotator,
    preference: 1 or 2, AlpacaEval 2's soft values in between, 1.5 or 0 for a tie)."""
    items, rep = items_of("alpaca_eval.jsonl")
    assert [(p.source_row, p.chosen, p.rejected) for p in items] == [
        (1, "Paris is the capital.", "Lyon."),  # preference 1: output_1
        (2, "Lyon.", "Paris is the capital."),  # 2: output_2
        (5, "Paris is the capital.", "Lyon."),  # 1.2: output_1
        (6, "Lyon.", "Paris is the capital."),  # 1.8: output_2
    ]
    assert items[0].prompt == "Question 1: what is the capital of France?"
    assert rep["shapes"] == {"paired:pairwise_judge": 4}
    assert [(r["row"], r["code"]) for r in rep["rejected"]] == [
        (3, "tie"),
        (4, "tie"),
        (7, "bad_value"),
        (8, "bad_value"),
    ]
    # strict mode stops at the malformed row 7, not at the ties (they are skipped and counted)
    with pytest.raises(Exception, match=r"alpaca_eval.jsonl:7: preference: expected 1 or 2, got 'x'"):
        read_items(str(LAYOUTS / "alpaca_eval.jsonl"), KTODataConfig(strict=True))


def test_nectar_answers_become_a_ranking_with_hh_turns():
    """Shape: berkeley-nest/Nectar rows (prompt as an HH transcript ending in "Assistant:",
    answers: [{answer, model, rank}], turns, num_responses, source, good_natured)."""
    items, rep = items_of("nectar.jsonl")
    first, second = items
    assert first.prompt == [U("user", "Give me a fruit.")]
    assert first.responses == [[U("assistant", t)] for t in ("An apple.", "A mango, ripe and sweet.", "No.")]
    assert first.quality == [-2.0, -1.0, -3.0]  # -rank
    assert second.prompt == [U("user", "Hi"), U("assistant", "Hello."), U("user", "Name a colour.")]
    assert rep["shapes"] == {"ranking:nectar": 2} and rep["rejected_by_reason"] == {"bad_ranking": 1}
    cfg = KTODataConfig(train_file=str(LAYOUTS / "nectar.jsonl"), validation_split_percentage=0.0)
    pairs = load_records(cfg, kind="paired").train
    assert [(p.chosen, p.rejected) for p in pairs] == [
        ([U("assistant", "A mango, ripe and sweet.")], [U("assistant", "An apple.")]),
        ([U("assistant", "A mango, ripe and sweet.")], [U("assistant", "No.")]),
        ([U("assistant", "Blue.")], [U("assistant", "Seven.")]),  # two answers share rank 1: both pair
        ([U("assistant", "Blue!")], [U("assistant", "Seven.")]),
    ]


def test_llamafactory_chosen_messages_with_content_parts_and_loss_weight():
    """Shape: LLaMA-Factory's newer layout: chosen_messages / rejected_messages holding the whole
    conversation, content as [{type: text, value}] parts, per-message and per-row loss_weight."""
    items, rep = items_of("llamafactory_messages.jsonl")
    first, second = items
    assert first.prompt == [U("user", "What is 3x3?")]
    assert (first.chosen, first.rejected) == ([U("assistant", "9")], [U("assistant", "6")])
    assert first.extra == {"weight": 0.5}  # the row's loss_weight
    assert second.prompt == [U("system", "Answer in Russian."), U("user", "Say hello")]
    assert second.chosen == [U("assistant", "Привет")]
    assert rep["shapes"] == {"paired:llamafactory_messages": 2}
    assert rep["notes"]["message_loss_weight_not_used"] == 1
    assert [(r["row"], r["code"]) for r in rep["rejected"]] == [(3, "bad_type")]  # an image part


def test_user_role_completion_and_unordered_scores_are_counted_as_warnings():
    _, rep = items_of("completion_user_role.jsonl")
    assert rep["accepted"] == 3 and rep["notes"]["completion_only_user_message"] == 1
    assert any("completion_only_user_message (rows 2)" in w for w in rep["warnings"])
    # Shape: HuggingFaceH4/ultrafeedback_binarized (prompt, chosen/rejected messages, score_chosen/score_rejected)
    _, rep = items_of("ultrafeedback_scores.jsonl")
    assert rep["accepted"] == 3 and rep["notes"]["chosen_score_not_above_rejected"] == 2
    assert any("chosen_score_not_above_rejected (rows 2, 3)" in w for w in rep["warnings"])


# ---- 18.7: rows used / converted / unused, and a refusal when too few remain ----------------
def test_paired_method_on_unpaired_data_is_summarised_and_refused(tmp_path, caplog):
    """Shape: LLaMA-Factory's kto_en_demo.json (messages + a boolean label), mostly one row per
    prompt: DPO can pair only the one prompt that has both labels (1 pair of 20 rows)."""
    import logging

    import yaml

    from prospect.cli import main

    data = str(LAYOUTS / "llamafactory_kto_demo.json")
    cfg = tmp_path / "run.yaml"  # prepare() loads no model: the name is never opened
    run = {"method": "dpo", "model": {"name": "no/model"}, "training": {"batch_size": 4, "output_dir": str(tmp_path)}}
    cfg.write_text(yaml.safe_dump({**run, "data": {"train_file": data, "validation_split_percentage": 0}}), "utf-8")
    with caplog.at_level(logging.INFO, logger="prospect"):
        rc = main(["train", str(cfg), "--dry-run"])
    assert rc == 2  # a config error: the fix is in the config
    err = [r.getMessage() for r in caplog.records]
    assert not any(m.startswith("data: read") for m in err)  # refused before the summary is printed

    from prospect.errors import ConfigError
    from prospect.recipes import load_run_config, prepare

    run_cfg = load_run_config(str(cfg))
    with pytest.raises(ConfigError) as e:
        prepare(run_cfg, write=False)
    msg = str(e.value)
    assert msg.startswith(f"{data}: only 1 pair left to train on from 20 rows read (18 unused)")
    assert "fewer than data.min_rows_used=8" in msg and "method: kto" in msg  # 2 batches of training.batch_size 4

    caplog.clear()
    run_cfg.data.min_rows_used = 1
    with caplog.at_level(logging.INFO, logger="prospect"):
        run = prepare(run_cfg, write=False)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("data: read"))
    assert line == (
        "data: read 20 rows, accepted 20, rejected 0; 2 unpaired rows paired into 1 pair; 18 unpaired rows unused "
        "(no row of the other label with the same prompt); training on 1 pair (validation: 0)"
    )
    assert run.report["usage"] == {"kind": "paired", "train": 1, "validation": 0, "unused": 18, "min_rows_used": 1}


# ---- 18.8: ShareGPT function_call / observation / tools -------------------------------------
TOOL_TEMPLATE = (  # a minimal template that handles tools, in the way Qwen2.5's or Llama 3.1's do
    "{% if tools %}<tools>{{ tools | map(attribute='name') | join(',') }}</tools>{{ '\\n' }}{% endif %}"
    "{% for m in messages %}<|{{ m['role'] }}|>{% if m.get('tool_calls') %}"
    "<call>{{ m['tool_calls'][0]['function']['name'] }}({{ m['tool_calls'][0]['function']['arguments'] | tojson }})</call>"
    "{% else %}{{ m['content'] }}{% endif %}{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def test_sharegpt_tool_calls_and_tools_are_read():
    """Shape: LLaMA-Factory's glaive_toolcall demo (sharegpt conversations with function_call and
    observation turns, a `tools` column holding JSON schemas), with a kto_tag per row."""
    items, rep = items_of("sharegpt_tools.json")
    first = items[0]
    assert first.prompt[0] == U("user", "Weather in Oslo?")
    call = first.prompt[1]
    assert call["role"] == "assistant" and call["tool_calls"] == [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
    ]
    assert first.prompt[2] == U("tool", '{"temp_c": 3}')
    assert first.completion == [U("assistant", "It is 3 degrees in Oslo.")]
    assert first.tools[0]["name"] == "get_weather" and items[2].tools is None  # an empty tools cell
    assert rep["notes"]["rows_with_tools"] == 2 and rep["notes"]["rows_with_tool_calls"] == 2
    assert [(r["row"], r["field"], r["code"]) for r in rep["rejected"]] == [(4, "tools", "bad_value")]


def test_tool_calls_go_to_a_template_that_handles_tools_else_are_flattened_and_reported():
    from prospect.data.tokenize import RecordTokenizer, TokenizeSettings
    from prospect.testing import load_tiny_tokenizer

    items, _ = items_of("sharegpt_tools.json")
    settings = TokenizeSettings(max_length=512, max_prompt_length=256, max_completion_length=256)
    tok = load_tiny_tokenizer()
    tok.chat_template = TOOL_TEMPLATE
    rt = RecordTokenizer(tok, settings)
    prompt, completion = rt.render(items[0].prompt, items[0].completion, None, items[0].tools)
    assert prompt == (
        '<tools>get_weather</tools>\n<|user|>Weather in Oslo?\n<|assistant|><call>get_weather({"city": "Oslo"})</call>\n'
        '<|tool|>{"temp_c": 3}\n<|assistant|>'
    )
    assert completion == "It is 3 degrees in Oslo.\n" and rt.stats.tools == {}

    plain = load_tiny_tokenizer()  # its ChatML template knows no tools: flattened, and counted
    rt = RecordTokenizer(plain, settings)
    rt.unpaired_row(items[0])
    prompt, _ = rt.render(items[0].prompt, items[0].completion, None, items[0].tools)
    assert 'Available tools: [{"name": "get_weather"' in prompt and '{"name": "get_weather", "arguments"' in prompt
    assert rt.stats.tools == {"tool_calls_flattened": 2, "tool_results_flattened": 2, "tools_in_system_prompt": 2}
    assert rt.stats.to_dict()["tools"] == rt.stats.tools  # in the tokenization report (data_report.json)


# ---- every shape: the report's counts reconcile ---------------------------------------------
def _fixture_configs() -> list[tuple[str, dict]]:
    """(file, data settings) for every fixture above; LLaMA-Factory files with their registry entry."""
    out = [(str(p), {}) for p in sorted(LAYOUTS.glob("*.json*"))]
    registry = json.loads((LF / "dataset_info.json").read_text(encoding="utf-8"))
    out += [
        (str(LF / entry["file_name"]), {"dataset_info": str(LF / "dataset_info.json"), "dataset": name})
        for name, entry in registry.items()
    ]
    return out


@pytest.mark.parametrize("path,settings", _fixture_configs(), ids=lambda v: Path(v).name if isinstance(v, str) else "")
@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"streaming": True},
        {"convert_pairwise_to_binary": False},
        {"ranking_strategy": "best_worst", "drop_duplicates": False},
        {"ranking_strategy": "adjacent", "min_response_length": 4},
    ],
    ids=["default", "streaming", "no_pair_conversion", "best_worst", "adjacent_min_len"],
)
def test_counts_reconcile_on_every_layout(path, settings, variant):
    """accepted + rejected == rows_read, for no method and for each kind, and the conversions add up."""
    cfg = KTODataConfig(**settings, **variant)
    for kind in (None, "unpaired", "paired"):
        rep = inspect_file(path, cfg, kind=kind)
        assert rep["rows_read"] > 0 and rep["accepted"] + len(rep["rejected"]) == rep["rows_read"], (kind, rep)
        assert sum(rep["shapes"].values()) == rep["accepted"]
        assert sum(rep["rejected_by_reason"].values()) == len(rep["rejected"])
        conv = rep["conversions"]
        up = conv["unpaired_to_pairs"]
        assert up["rows"] == 2 * up["pairs"] + up["unused"]
        rp, ru = conv["ranking_to_pairs"], conv["ranking_to_unpaired"]
        assert rp["used"] + rp["unused"] == rp["responses"] == ru["responses"]
        assert ru["desirable"] + ru["undesirable"] + ru["unused"] == ru["responses"]
    try:
        loaded = load_records(cfg.model_copy(update={"train_file": path}), kind="paired")
    except Exception as e:  # a file with nothing to pair is refused with a one-line data error
        assert type(e).__name__ in ("DPODataError", "KTODataError") and "\n" not in str(e)
    else:
        assert loaded.report.reconciles


def test_tools_of_a_ranking_row_reach_its_pairs_and_rows(tmp_path):
    tools = [{"name": "f", "parameters": {"type": "object", "properties": {}}}]
    row = {"prompt": "Q", "responses": ["a", "b"], "rankings": [1, 2], "tools": json.dumps(tools)}
    p = tmp_path / "r.jsonl"
    p.write_text(json.dumps(row) + "\n", encoding="utf-8")
    cfg = KTODataConfig(train_file=str(p), validation_split_percentage=0.0)
    assert [x.tools for x in load_records(cfg, kind="paired").train] == [tools]
    assert [x.tools for x in load_records(cfg, kind="unpaired").train] == [tools, tools]
