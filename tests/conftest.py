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
    from mcmdpo.tiny import write_tiny_checkpoint

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


def stage_script_env(**settings: str) -> dict[str, str]:
    """The environment a test runs a stage script in: DeepSpeed's CPU accelerator, fp32, and one
    thread per process (two processes share two cores; and the same arithmetic whichever launcher
    starts them)."""
    return {**os.environ, "DS_ACCELERATOR": "cpu", "BF16": "false", "OMP_NUM_THREADS": "1", **settings}


def short_run_settings(script: str, zero: str, tiny_checkpoint: Path, synthetic_dir: Path, cache_dir: Path) -> dict[str, str]:
    """A 4-step run of ``script`` under ``scripts/<zero>.json`` with a checkpoint every 2 steps:
    8 examples (records) a step, 2 per process, accumulating 2 over 2 processes."""
    data = "sft_train.json" if script == "sft.sh" else "pref_train.json"
    return dict(
        MODEL_PATH=str(tiny_checkpoint), DATA_PATH=str(synthetic_dir / data), IMAGE_FOLDER=str(synthetic_dir / "image"),
        DEEPSPEED_CONFIG=str(REPO_ROOT / "scripts" / f"{zero}.json"), PER_DEVICE_BATCH="2",
        GLOBAL_BATCH="8", LEARNING_RATE="2e-3",
        EXTRA_ARGS="--max_steps 4 --dataloader_num_workers 0 --report_to none --save_strategy steps --save_steps 2 "
                   "--save_total_limit 2 --logging_steps 1 --plot false"
                   + ("" if script == "sft.sh" else f" --reference_cache_dir {cache_dir}"),
    )


@pytest.fixture(scope="session")
def one_node_run(tiny_checkpoint, synthetic_dir, tmp_path_factory):
    """``one_node_run(script, zero)`` -> (output dir, settings): :func:`short_run_settings` run
    once per session on one node with 2 processes (the resume and the several-node tests compare
    against it)."""
    runs: dict[tuple[str, str], tuple[Path, dict[str, str]]] = {}

    def run(script: str, zero: str) -> tuple[Path, dict[str, str]]:
        if (script, zero) not in runs:
            folder = tmp_path_factory.mktemp(f"one_node_{script.removesuffix('.sh')}_{zero}")
            settings = short_run_settings(script, zero, tiny_checkpoint, synthetic_dir, folder / "cache")
            result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / script)], capture_output=True, text=True, timeout=900,
                                    env=stage_script_env(NUM_GPUS="2", OUTPUT_DIR=str(folder / "out"), **settings))
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
            runs[script, zero] = folder / "out", settings
        return runs[script, zero]

    return run


def logged_losses(output: Path) -> dict[int, float]:
    """Step -> logged training loss, from a finished run's trainer_state.json."""
    import json

    history = json.loads((output / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}
