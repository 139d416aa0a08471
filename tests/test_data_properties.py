"""Property tests: arbitrary bytes and arbitrary JSON rows never crash the reader; counts reconcile."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prospect.config.schema import KTODataConfig
from prospect.data import inspect_file, load_records
from prospect.errors import KTODataError

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = [
    "prompt",
    "completion",
    "response",
    "label",
    "chosen",
    "rejected",
    "responses",
    "rankings",
    "scores",
    "messages",
    "conversation",
    "conversations",
    "system",
    "h_w",
    "h_l",
    "h",
    "margin",
    "score",
    "rating",
    "kto_tag",
    "preference",
    "instruction",
    "input",
    "output",
    "history",
    "weight",
    "score_chosen",
]
WORDS = [
    "good",
    "bad",
    "جيد",
    "سيء",
    "true",
    "0",
    "1",
    "maybe",
    "",
    " ",
    "\u200f",
    "NaN",
    "😀",
    "\n\nHuman: hi\n\nAssistant: yo",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.integers(),
    st.just(10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(WORDS),
    st.text(max_size=12),
)
messages = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "assistant", "system", "human", "gpt", ""]),
            "content": st.one_of(st.sampled_from(WORDS), st.none(), st.integers()),
        }
    ),
    max_size=4,
)
values = st.recursive(
    st.one_of(scalars, messages),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(KEYS + ["role", "content", "from", "value"]), inner, max_size=4),
    ),
    max_leaves=12,
)
# Rows of each real format whose fields are usually valid and sometimes junk, so that accepted
# rows, every rejection reason and the conversions all get exercised.
text = st.one_of(st.sampled_from(WORDS), st.text(min_size=1, max_size=10), messages, values)
label = st.one_of(st.sampled_from(WORDS), st.booleans(), st.floats(), st.integers(-1, 6), values)
optional = {
    "system": st.one_of(st.text(max_size=5), values),
    "h_w": st.sampled_from([0, 1, 2, None]),
    "h_l": st.sampled_from([0, 1, "1", None]),
    "margin": st.floats(),
    "weight": st.floats(-1, 3),
}
near_valid = st.one_of(
    st.fixed_dictionaries({"prompt": text, "completion": text, "label": label}, optional=optional),
    st.fixed_dictionaries({"prompt": text, "response": text, "score": label}, optional=optional),
    st.fixed_dictionaries({"prompt": text, "chosen": text, "rejected": text}, optional=optional),
    st.fixed_dictionaries({"chosen": text, "rejected": text}),
    st.fixed_dictionaries(
        {
            "prompt": text,
            "responses": st.lists(text, max_size=4),
            "rankings": st.lists(st.one_of(st.integers(1, 4), st.floats()), max_size=4),
        }
    ),
    st.fixed_dictionaries(
        {
            "prompt": st.sampled_from(WORDS[:6]),
            "responses": st.lists(st.sampled_from(WORDS), min_size=3, max_size=3),
            "scores": st.lists(st.integers(0, 2), min_size=3, max_size=3),
        }
    ),
    st.fixed_dictionaries({"messages": messages, "label": label}),
    st.fixed_dictionaries({"instruction": text, "input": text, "output": text, "kto_tag": label}),
)
rows = st.one_of(
    near_valid,
    st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), values, max_size=7),
    values,  # non-object rows
)


def check(rep: dict) -> None:
    assert rep["accepted"] + len(rep["rejected"]) == rep["rows_read"]
    assert all(isinstance(r["row"], int) and r["row"] >= 1 and r["reason"] for r in rep["rejected"])
    json.dumps(rep, ensure_ascii=False, allow_nan=False).encode("utf-8")  # writable as data_report.json


def inspect_or_ambiguous(path: Path, **kw) -> dict | None:
    """inspect_file; the one documented refusal is an undecidable format (then it names data.format)."""
    try:
        return inspect_file(path, **kw)
    except KTODataError as e:
        assert "data.format" in str(e), str(e)
        return None


@SETTINGS
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".jsonl", ".json", ".csv"]))
def test_arbitrary_bytes_never_crash(data, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / f"f{suffix}"
        p.write_bytes(data)
        rep = inspect_or_ambiguous(p)
        if rep is not None:
            check(rep)
        try:
            inspect_file(p, strict=True)
        except KTODataError:
            pass  # strict mode stops at the first bad row with the documented error


@SETTINGS
@given(batch=st.lists(rows, max_size=8), blank_every=st.integers(0, 3))
def test_arbitrary_json_rows_reconcile(batch, blank_every):
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "rows.jsonl"
        lines = []
        for i, row in enumerate(batch):
            lines.append(json.dumps(row, ensure_ascii=bool(i % 2)))  # NaN/Infinity tokens included
            if blank_every and i % blank_every == 0:
                lines.append("   ")
        p.write_text("\n".join(lines), encoding="utf-8")
        n_rows = len(batch)
        rep = inspect_or_ambiguous(p)
        if rep is None:
            rep = inspect_file(p, fmt="unpaired")
        check(rep)
        assert rep["rows_read"] == n_rows
        streamed = inspect_file(p, fmt="unpaired", streaming=True)
        check(streamed)
        for kind in ("unpaired", "paired"):
            cfg = KTODataConfig(
                train_file=str(p),
                format="unpaired" if kind == "unpaired" else "paired",
                min_samples_per_label=0,
                validation_split_percentage=0.5,
            )
            try:
                loaded = load_records(cfg, kind=kind)
            except KTODataError:
                continue  # e.g. no usable pairs: a documented user error
            assert loaded.report.reconciles
            for rec in loaded.train + loaded.validation:
                texts = [rec.prompt, rec.completion] if kind == "unpaired" else [rec.prompt, rec.chosen, rec.rejected]
                assert all(isinstance(t, (str, list)) for t in texts)
            if kind == "unpaired":
                assert all(math.isfinite(v) for v in loaded.suggested_weights.values())


def test_lone_surrogate_escapes_are_rejected_not_crashing(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_text(
        '{"prompt": "\\ud800", "completion": "a", "label": 1}\n{"prompt": "q", "completion": "a", "label": "\\udfff"}\n',
        encoding="utf-8",
    )
    rep = inspect_file(p)
    check(rep)
    assert [r["code"] for r in rep["rejected"]] == ["invalid_unicode", "unknown_label"]
