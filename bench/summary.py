"""One case's row of bench/bench_train.py (per-run numbers, ratios, loss agreement) and the summary over
profiles: each target of issue 17 checked per profile, and the worst case over profiles per metric.

Ratios of a case (Prospect = the `prospect` run, Prospect's defaults):

    per_step    Prospect samples/s over the timed steps / the FASTER of TRL's two settings (trl-gc, trl),
                both at the epoch's mean row length (`samples_s_at_mean_length`, bench/measure.py)
    whole_run   Prospect samples/s over every step plus its reference precompute / the faster TRL
                setting by the same measure (TRL computes its reference inside each step)
    rss         Prospect peak RSS / TRL's default (trl-gc: gradient checkpointing on)
    loss        |first-step loss of prospect-seq - that of trl-gc| (same rows, same batch order)

The claim is the worst case over profiles: the smallest speed ratios, the largest RSS ratio and loss gap.
"""

from __future__ import annotations

from typing import Any

from measure import nominal_flops, summarize
from profiles import BATCH

# issue 17: per-step >= x2 TRL's faster setting, whole run >= x1.8, peak RSS <= TRL default (stretch x0.7)
TARGETS = {"per_step": 2.0, "whole_run": 1.8, "rss": 1.0, "rss_stretch": 0.7, "loss": 1e-5}
TRL_RUNS = ("trl-gc", "trl")


def _step_tokens(data: dict, seq_rows: list[list[int]]) -> list[int]:
    cols = ("completion_ids", "chosen_ids", "rejected_ids")
    return [
        sum(len(r["prompt_ids"]) + sum(len(r[c]) for c in cols if c in r) for r in (data["rows"][i] for i in idx))
        for idx in seq_rows
    ]


def case_row(case: dict, runs: dict[str, dict], specs: dict[str, dict], peaks: dict[str, float]) -> dict[str, Any]:
    """The table row of one case from its runs' results (`runs`) and specs (`specs`, for warm/steps)."""
    data, model_dir, n_steps = case["data"], case["model_dir"], case["warm"] + case["steps"]
    longest = max(s["warm"] + s["steps"] for s in specs.values())
    seq_rows = [list(range(i * BATCH, (i + 1) * BATCH)) for i in range(longest)]
    toks, flops = _step_tokens(data, seq_rows), nominal_flops(model_dir, data, seq_rows)
    row: dict[str, Any] = {
        "case": case["name"],
        "model": model_dir.name,
        "method": case["method"],
        "profile": case["profile"],
        "warm": case["warm"],
        "steps": case["steps"],
    }
    epoch_tokens, epoch_flops = sum(toks[:n_steps]), sum(flops[:n_steps])
    row_tokens = epoch_tokens / (BATCH * n_steps)
    for name, res in runs.items():
        if res.get("failed"):
            row[name] = {"failed": True}
            continue
        warm = specs[name]["warm"]
        if res.get("step_tokens"):  # Prospect: the tokens of the batches as its sampler drew them
            st = res["step_tokens"]
            row[name] = summarize(res, warm, BATCH, st, [x * epoch_flops / epoch_tokens for x in st], row_tokens)
        else:  # TRL: sequential batches
            row[name] = summarize(res, warm, BATCH, toks, flops, row_tokens)
        row[name]["gflops_vs_peak"] = row[name]["gflops"] / peaks["bfloat16" if "bf16" in name else "float32"]
        for key in (
            "reference_precompute",
            "tokenize_s",
            "gradient_checkpointing",
            "share_prompt",
            "wall_s",
            "step_tokens",
        ):
            if key in res:
                row[name][key] = res[key]
        if "ref_mismatched_seconds" in res:
            row[name]["ref_mismatched_s_per_step"] = res["ref_mismatched_seconds"] / len(res["times"])
    row.update(ratios(row))
    p1, t1 = runs.get("prospect-seq", {}), runs.get("trl-gc", {})
    if p1.get("losses") and t1.get("losses"):
        row["first_loss"] = {
            "prospect": p1["losses"][0],
            "trl": t1["losses"][0],
            "abs_diff": abs(p1["losses"][0] - t1["losses"][0]),
            "rel_diff": abs(p1["losses"][0] - t1["losses"][0]) / max(abs(t1["losses"][0]), 1e-12),
            "token_ids_match": bool(t1.get("token_ids_match")) and p1.get("token_ids_match", True),
            "same_adapter": p1.get("adapter_checksum") == t1.get("adapter_checksum"),
        }
        t2 = runs.get("trl", {})
        if t2.get("losses"):  # TRL against itself (checkpointing off / on): the float32 noise floor
            row["first_loss"]["trl_vs_trl_gc"] = abs(t2["losses"][0] - t1["losses"][0])
    b16 = runs.get("prospect-bf16", {})
    if p1.get("losses") and b16.get("losses"):
        k = min(len(p1["losses"]), len(b16["losses"]))
        diffs = [abs(x - y) for x, y in zip(p1["losses"][:k], b16["losses"][:k])]
        row["bf16_drift"] = {"steps": k, "max_abs": max(diffs), "last_abs": diffs[-1]}
    return row


def ratios(row: dict) -> dict[str, Any]:
    """per_step / whole_run against TRL's faster setting (by each measure), rss against trl-gc."""
    p = row.get("prospect", {})
    peers = [n for n in TRL_RUNS if "samples_s" in row.get(n, {})]
    if "samples_s" not in p or not peers:
        return {}
    step_peer = max(peers, key=lambda n: row[n]["samples_s_at_mean_length"])
    whole_peer = max(peers, key=lambda n: row[n]["samples_s_with_reference"])
    out = {
        "peer": step_peer,
        "ratio_samples": p["samples_s_at_mean_length"] / row[step_peer]["samples_s_at_mean_length"],
        "peer_whole_run": whole_peer,
        "ratio_samples_with_reference": p["samples_s_with_reference"] / row[whole_peer]["samples_s_with_reference"],
    }
    if "rss_mb" in row.get("trl-gc", {}):
        out["ratio_rss"] = p["rss_mb"] / row["trl-gc"]["rss_mb"]  # against TRL's default
    return out


def verdicts(row: dict) -> dict[str, bool | None]:
    """Pass (True) / miss (False) / not measured (None) of each target of issue 17 for one row."""
    loss = row.get("first_loss", {}).get("abs_diff")

    def check(value: float | None, ok: Any) -> bool | None:
        return None if value is None else bool(ok(value))

    return {
        "per_step": check(row.get("ratio_samples"), lambda v: v >= TARGETS["per_step"]),
        "whole_run": check(row.get("ratio_samples_with_reference"), lambda v: v >= TARGETS["whole_run"]),
        "rss": check(row.get("ratio_rss"), lambda v: v <= TARGETS["rss"]),
        "loss": check(loss, lambda v: v < TARGETS["loss"]),
    }


def worst_case(table: list[dict]) -> dict[str, dict]:
    """Per method: the worst value of each metric over its profiles, and the profile that sets it."""
    out: dict[str, dict] = {}
    metrics = (
        ("per_step", "ratio_samples", min),
        ("whole_run", "ratio_samples_with_reference", min),
        ("rss", "ratio_rss", max),
    )
    for method in sorted({r["method"] for r in table}):
        rows = [r for r in table if r["method"] == method]
        entry: dict[str, Any] = {}
        for label, key, pick in metrics:
            have = [r for r in rows if key in r]
            if have:
                w = pick(have, key=lambda r: r[key])
                entry[label] = {"value": w[key], "case": w["case"]}
        have = [r for r in rows if "first_loss" in r]
        if have:
            w = max(have, key=lambda r: r["first_loss"]["abs_diff"])
            entry["loss"] = {"value": w["first_loss"]["abs_diff"], "case": w["case"]}
        out[method] = entry
    return out


def _mark(v: bool | None) -> str:
    return "-" if v is None else "pass" if v else "MISS"


def print_summary(table: list[dict]) -> dict[str, Any]:
    """Print the per-profile pass/miss table and the worst case per method; returns both for the JSON."""
    t = TARGETS
    print(
        f"\n== summary (targets: per-step >= x{t['per_step']:g} TRL's faster setting, whole run >= "
        f"x{t['whole_run']:g}, peak RSS <= x{t['rss']:g} TRL default (stretch x{t['rss_stretch']:g}), "
        f"first-step |loss diff| < {t['loss']:g})"
    )
    print(f"{'case':30s} {'per-step':>16s} {'whole run':>16s} {'RSS vs trl-gc':>16s} {'|loss diff|':>16s}")

    def cell(v: float | None, fmt: str, ok: bool | None) -> str:
        return f"{'-' if v is None else format(v, fmt)} {_mark(ok):>4s}".rjust(16)

    per_case = {}
    for r in table:
        v = verdicts(r)
        per_case[r["case"]] = v
        loss = r.get("first_loss", {}).get("abs_diff")
        print(
            f"{r['case']:30s} {cell(r.get('ratio_samples'), '.2f', v['per_step'])} "
            f"{cell(r.get('ratio_samples_with_reference'), '.2f', v['whole_run'])} "
            f"{cell(r.get('ratio_rss'), '.2f', v['rss'])} {cell(loss, '.1e', v['loss'])}"
        )
    worst = worst_case(table)
    for method, entry in worst.items():
        parts = [f"{k} {e['value']:.3g} ({e['case']})" for k, e in entry.items()]
        print(f"worst case {method}: " + ", ".join(parts))
    return {"targets": TARGETS, "verdicts": per_case, "worst_case": worst}
