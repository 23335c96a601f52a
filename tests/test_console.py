"""The training console: one compact line per logging step, --help with this project's flags
first, library warnings from the first process only, DataLoader workers that follow the machine."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from mcmdpo.train.console import available_workers, compact_line


@pytest.mark.slow
def test_training_prints_one_compact_line_per_logging_step_and_keeps_every_metric(tiny_checkpoint, synthetic_dir, tmp_path):
    output = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "mcmdpo.train", "--stage", "mcmdpo", "--model_name_or_path", str(tiny_checkpoint),
         "--data_path", str(synthetic_dir / "pref_train.json"), "--image_folder", str(synthetic_dir / "image"),
         "--output_dir", str(output), "--max_steps", "3", "--per_device_train_batch_size", "2", "--logging_steps", "1",
         "--save_strategy", "no", "--report_to", "none", "--use_cpu", "true", "--plot", "false",
         "--reference_cache_dir", str(tmp_path / "cache")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    printed = result.stdout + result.stderr
    steps = re.findall(r"step (\d)/3 \| loss \d\.\d{4} \| lr \S+ \| margins response \S+ image \S+", printed)
    assert steps == ["1", "2", "3"], printed[-2000:]
    assert "{'loss'" not in printed and "'rewards/" not in printed  # no logs dict
    assert re.search(r"done: 3 steps in [\d.]+ s, mean loss \d\.\d{4}", printed)
    logged = [e for e in json.loads((output / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert len(logged) == 3 and all("rewards/accuracies" in e and "accuracies/image" in e for e in logged)


def test_compact_line():
    logs = {"loss": 0.69314, "learning_rate": 5e-7, "grad_norm": 1.0, "margins/response": 0.1234, "margins/image": -0.5,
            "rewards/chosen": 0.1}
    assert compact_line(logs, 3, 30) == "step 3/30 | loss 0.6931 | lr 5.00e-07 | margins response 0.123 image -0.500"
    assert compact_line({"loss": 6.5}, 1, 10) == "step 1/10 | loss 6.5000"
    assert compact_line({"epoch": 1.0}, 1, 10) is None


def test_help_shows_this_projects_flags_first_under_its_real_name():
    result = subprocess.run([sys.executable, "-m", "mcmdpo.train", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    text = result.stdout
    assert text.startswith("usage: mcmdpo-train [--config RECIPE.yaml] --stage sft|dpo|mcmdpo")
    headers = [line for line in text.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert headers[-5:] == ["mcmdpo-train: recipe:", "mcmdpo-train: model:", "mcmdpo-train: data:",
                            "mcmdpo-train: training (mcmdpo):", "inherited from transformers.TrainingArguments:"]
    assert text.index("  --stage") < text.index("  --terms") < text.index("  --per_device_train_batch_size") < text.index("  --optim ")


def test_dataloader_workers_follow_the_machine(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_SIZE", raising=False)
    assert available_workers() == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert available_workers() == 1  # 2 cores a process: one for the process, one worker
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert available_workers() == 0  # a 2-core laptop under DeepSpeed: no worker to spare


@pytest.mark.slow
def test_processes_other_than_the_first_show_no_library_warnings():
    """Each library warning once (the first process), not once per GPU: on RANK > 0 Python warnings
    and transformers' warnings are dropped; the Trainer's replicas log errors only."""
    from mcmdpo.train.arguments import AltTextTrainingArguments

    code = ("from mcmdpo.train.console import quiet_other_processes; quiet_other_processes(); import warnings; "
            "warnings.warn('python-warning'); from transformers.utils import logging; "
            "logging.get_logger('transformers.x').warning('library-warning')")
    for rank, shown in (("0", True), ("1", False)):
        result = subprocess.run([sys.executable, "-c", code], env={**os.environ, "RANK": rank},
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert ("python-warning" in result.stderr) == shown and ("library-warning" in result.stderr) == shown, rank
    assert AltTextTrainingArguments(output_dir="x").log_level_replica == "error"
