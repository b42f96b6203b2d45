"""Shared fixtures: the read-only folder of real datasets the tests read in place."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The datasets folder: env GENAD_DATA_DIR (the Makefile sets it) or ../shared/data."""
    folder = Path(os.environ.get("GENAD_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")
    if not (folder / "adbench").is_dir():
        pytest.skip(f"datasets folder not found at {folder}; set GENAD_DATA_DIR")
    return folder


@pytest.fixture
def data_env(shared_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the loaders at the shared datasets, with a dead mirror so nothing is downloaded."""
    monkeypatch.setenv("GENAD_DATA_DIR", str(shared_data_dir))
    monkeypatch.setenv("GENAD_DATA_MIRROR", "http://127.0.0.1:9/")
    return shared_data_dir


@pytest.fixture(autouse=True)
def one_thread():
    """Test nets are tiny: one torch thread is as fast, and does not stall on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
