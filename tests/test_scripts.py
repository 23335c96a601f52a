"""scripts/sft.sh as a user runs it: DeepSpeed ZeRO-2, two CPU processes, the tiny model."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from transformers import AutoModelForImageTextToText, AutoProcessor

from conftest import REPO_ROOT


@pytest.mark.slow
def test_sft_script_under_deepspeed_zero2(tiny_checkpoint, synthetic_dir, tmp_path):
    out = tmp_path / "sft"
    env = {
        **os.environ,
        "DS_ACCELERATOR": "cpu",
        "MODEL_PATH": str(tiny_checkpoint),
        "DATA_PATH": str(synthetic_dir / "sft_train.json"),
        "IMAGE_FOLDER": str(synthetic_dir / "image"),
        "OUTPUT_DIR": str(out),
        "NUM_GPUS": "2",
        "DEEPSPEED_CONFIG": str(REPO_ROOT / "scripts" / "zero2.json"),
        "PER_DEVICE_BATCH": "4",
        "GLOBAL_BATCH": "16",
        "LEARNING_RATE": "2e-3",
        "BF16": "false",
        "EXTRA_ARGS": "--max_steps 8 --dataloader_num_workers 0 --report_to none --save_strategy no",
    }
    result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "sft.sh")], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 8
    # Two processes x 4 per device x accumulation 2 = the global batch of 16: 8 steps cover 128.
    assert state["train_batch_size"] == 4
    assert abs(state["log_history"][-2]["epoch"] - 8 * 16 / 256) < 1e-6
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert losses[-1] < losses[0]
    model = AutoModelForImageTextToText.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    assert type(model).__name__ == "LlavaForConditionalGeneration" and processor.chat_template
