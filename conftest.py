"""Repository-wide pytest setup: offline environment, markers that skip cleanly, shared data.

Lives at the repository root so that ``python -m pytest`` from the root puts the project
packages (``app``, ``engine``, ``tiles``) on ``sys.path``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach a hub or phone home; set before any test module imports gradio/transformers.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parent
SHARED_DATA = (REPO_ROOT / ".." / "shared" / "data").resolve()
CHROMIUM = Path("/usr/bin/chromium")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_gpu = None if _cuda_available() else pytest.mark.skip(reason="needs a CUDA GPU (none found)")
    skip_browser = (
        None
        if CHROMIUM.exists()
        else pytest.mark.skip(reason=f"needs Debian chromium at {CHROMIUM} (apt-get install -y chromium)")
    )
    for item in items:
        if skip_gpu is not None and "gpu" in item.keywords:
            item.add_marker(skip_gpu)
        if skip_browser is not None and "browser" in item.keywords:
            item.add_marker(skip_browser)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real remote-sensing samples in ``../shared/data``; skips when the folder is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real sample data not found at {SHARED_DATA} (only present beside a dev checkout)")
    return SHARED_DATA
