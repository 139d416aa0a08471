"""Prospect alone on one bench/ length profile under several settings: step times and peak RSS.

    HF_HUB_OFFLINE=1 python bench/probe_settings.py short kto \\
        '{"default": {}, "gc_off": {"optimization": {"use_gradient_checkpointing": false}}}'

Each variant is a bench_train.py worker spec fragment (`optimization` overrides Prospect's
settings) run in its own process on the same generated data (batch 8, 1 warm + 1 timed step),
without the TRL runs: for trying a setting quickly. The numbers of docs/performance.md's
partial-checkpointing table came from this.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_train  # noqa: E402
from profiles import BATCH, PROFILES, make_data, smol_model_dir  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    profile, method, variants = args[0], args[1], json.loads(args[2])
    from transformers import AutoTokenizer

    warm, steps = 1, 1
    model_dir = smol_model_dir()
    tok = AutoTokenizer.from_pretrained(model_dir)
    tmp = Path(tempfile.mkdtemp(prefix="prospect-probe-"))
    data = make_data(tok, method, BATCH * (warm + steps), seed=1234, profile=PROFILES[profile])
    data_file = tmp / "data.json"
    data_file.write_text(json.dumps(data))
    base = bench_train.worker_spec(tok, model_dir, data_file, 5e-5, warm, steps)
    base |= {"impl": "prospect", "order": "grouped", "n_rows": BATCH * (warm + steps)}
    for name, extra in variants.items():
        res = bench_train.spawn({**base, **extra, "work_dir": str(tmp / name)}, tmp, name)
        if res.get("failed"):
            continue
        times = [round(t, 2) for t in res["times"]]
        print(f"{name}: peak RSS {res['peak_rss_mb']:.0f} MB, steps {times} s, "
              f"checkpointing {json.dumps(res.get('gradient_checkpointing'))}")  # fmt: skip


if __name__ == "__main__":
    main()
