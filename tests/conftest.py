"""Shared fixtures: a tiny random LLaVA checkpoint and a small synthetic data set, built once per
test session through the same commands users run; and a watcher of training subprocesses."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
UPSTREAM_SAMPLES = REPO_ROOT.parent / "shared" / "upstream-samples"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from mcmdpo.model.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    from mcmdpo.data.synthetic import write_dataset

    return write_dataset(tmp_path_factory.mktemp("synthetic"), seed=0, num_sft=256, num_pref_train=200, num_pref_test=64, num_test=16)


@pytest.fixture(scope="session")
def processor(tiny_checkpoint):
    from mcmdpo.model.loading import load_processor

    return load_processor(str(tiny_checkpoint))


def watch_training(process: subprocess.Popen, logged_steps: int) -> tuple[list[str], threading.Event]:
    """Collect a training subprocess's output (stdout with stderr merged) in a thread; the event
    is set once it has printed ``logged_steps`` compact step lines (``... | loss ...``)."""
    lines: list[str] = []
    logged = threading.Event()

    def read() -> None:
        for line in process.stdout:
            lines.append(line)
            if sum("| loss " in seen for seen in lines) >= logged_steps:
                logged.set()

    threading.Thread(target=read, daemon=True).start()
    return lines, logged
