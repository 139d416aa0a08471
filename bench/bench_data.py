"""Data benchmark: `prospect data inspect` on a generated N-row JSONL file (default 1,000,000).

Generates a JSONL file of unpaired feedback rows in a temporary directory (English and
Arabic text, mixed label spellings, shared prompts, ~0.1% broken or bad rows), runs
`prospect data inspect FILE --json --streaming` on it in a fresh child process per size, and prints
rows/s and the child's peak RSS (resource.getrusage ru_maxrss). With `--compare M` a
second, smaller size runs too, so you can see that peak memory does not grow with the file.

    python bench/bench_data.py                      # 1,000,000 rows
    python bench/bench_data.py --rows 200000 --compare 20000
    python bench/bench_data.py --no-streaming       # in-memory indexes, for comparison
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

LABELS = ["good", "bad", "desirable", "undesirable", True, False, 1, 0, "جيد", "سيء", "ممتاز", "ضعيف"]
WORDS_EN = "the a model answer question explain because therefore data value result good clear short long".split()
WORDS_AR = "ما هي عاصمة فرنسا الذكاء الاصطناعي التعليم أساس التقدم القراءة فوائد عديدة".split()


def generate(path: str, rows: int, seed: int = 0) -> None:
    """Write `rows` non-blank JSONL rows (plus a few blank lines, which are not rows)."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(rows):
            if i % 1000 == 999:
                fh.write('{"prompt": "broken", "response": \n')  # invalid JSON
                continue
            if i % 1000 == 500:
                fh.write(json.dumps({"prompt": "q", "response": "a", "label": "maybe"}) + "\n")  # unknown label
                continue
            j = i % 50_000  # 50,000 distinct prompts, each seen 20 times in 1M rows
            words = WORDS_AR if j % 3 == 0 else WORDS_EN
            prompt = f"{' '.join(words[(j + k) % len(words)] for k in range(6))} #{j}"
            response = " ".join(rng.choices(words, k=rng.randint(5, 60))) + f" {i}"
            label = LABELS[(i + i // 50_000) % len(LABELS)]  # even index: desirable; a prompt's repeats alternate
            fh.write(json.dumps({"prompt": prompt, "response": response, "label": label}, ensure_ascii=False) + "\n")
            if i % 50_000 == 0:
                fh.write("\n")


def child(path: str, streaming: bool) -> None:
    """Run `prospect data inspect PATH --json [--streaming]` (the CLI's own entry point, in this
    process) once and print one JSON line with the numbers."""
    import contextlib
    import io

    from prospect.cli import main as cli

    out = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out):
        rc = cli(["data", "inspect", path, "--json"] + (["--streaming"] if streaming else []))
    dt = time.perf_counter() - t0
    assert rc == 0, rc
    report = json.loads(out.getvalue())
    assert report["accepted"] + len(report["rejected"]) == report["rows_read"]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "rows": report["rows_read"],
                "seconds": round(dt, 2),
                "rows_per_s": round(report["rows_read"] / dt),
                "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
                "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
                "accepted": report["accepted"],
                "rejected": len(report["rejected"]),
                "labels": report["labels"],
                "pairs": report["pairs"],
                "suggested_weights": report["suggested_weights"],
                "streaming": streaming,
            }
        )
    )


def run(rows: int, streaming: bool, tmp: str) -> dict:
    path = os.path.join(tmp, f"bench_{rows}.jsonl")
    t0 = time.perf_counter()
    generate(path, rows)
    gen_s = time.perf_counter() - t0
    out = subprocess.run(
        [sys.executable, __file__, "--child", path] + ([] if streaming else ["--no-streaming"]),
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["file_mib"] = round(os.path.getsize(path) / 2**20, 1)
    result["generate_seconds"] = round(gen_s, 2)
    os.unlink(path)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--compare", type=int, default=0, help="also run this (smaller) size, to compare peak RSS")
    ap.add_argument("--no-streaming", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, not args.no_streaming)
        return
    with tempfile.TemporaryDirectory(prefix="prospect-bench-") as tmp:
        for n in [x for x in (args.compare, args.rows) if x]:
            r = run(n, not args.no_streaming, tmp)
            print(
                f"{r['rows']:>9} rows ({r['file_mib']} MiB): {r['seconds']:.1f} s wall ({r['cpu_seconds']:.1f} s CPU), {r['rows_per_s']:,} rows/s, "
                f"peak RSS {r['peak_rss_mib']} MiB, accepted {r['accepted']}, rejected {r['rejected']}, "
                f"labels {r['labels']}, weights {r['suggested_weights']}"
            )
            print(json.dumps(r))


if __name__ == "__main__":
    main()
