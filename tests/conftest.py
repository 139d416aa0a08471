import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")
sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Tokenization and reference caches go to a per-session temp dir (the tiny model cache is shared)."""
    if "PROSPECT_TEST_KEEP_CACHE" not in os.environ:
        monkeypatch.setenv("PROSPECT_CACHE", str(tmp_path_factory.getbasetemp() / "prospect-cache"))
