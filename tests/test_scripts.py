"""The stage scripts as a user runs them: DeepSpeed on two CPU processes, the tiny model."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from transformers import AutoModelForImageTextToText, AutoProcessor

from conftest import REPO_ROOT


def run_script(name: str, **env: str) -> None:
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / name)],
        env={**os.environ, "DS_ACCELERATOR": "cpu", "NUM_GPUS": "2", "BF16": "false", **env},
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]


@pytest.mark.slow
def test_sft_script_under_deepspeed_zero2(tiny_checkpoint, synthetic_dir, tmp_path):
    out = tmp_path / "sft"
    run_script(
        "sft.sh",
        MODEL_PATH=str(tiny_checkpoint), DATA_PATH=str(synthetic_dir / "sft_train.json"),
        IMAGE_FOLDER=str(synthetic_dir / "image"), OUTPUT_DIR=str(out),
        DEEPSPEED_CONFIG=str(REPO_ROOT / "scripts" / "zero2.json"), PER_DEVICE_BATCH="4", GLOBAL_BATCH="16",
        LEARNING_RATE="2e-3", EXTRA_ARGS="--max_steps 8 --dataloader_num_workers 0 --report_to none --save_strategy no",
    )
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


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, zero, precompute, extra",
    [
        ("mcmdpo.sh", "zero3.json", True, ""),
        ("mcmdpo.sh", "zero3.json", False, ""),
        ("mcmdpo.sh", "zero3.json", True, " --shared_prefix true --activation_checkpointing false"),
        ("dpo.sh", "zero2.json", True, ""),
    ],
)
def test_preference_scripts_under_deepspeed(tiny_checkpoint, synthetic_dir, tmp_path, script, zero, precompute, extra):
    """MCM-DPO under ZeRO-3 (policy and reference partitioned over both processes) and DPO
    under ZeRO-2; reference log-probs precomputed on both processes then training, or (live) a
    partitioned reference model running beside the policy; and the shared-prefix step."""
    out = tmp_path / "out"
    run_script(
        script,
        MODEL_PATH=str(tiny_checkpoint), DATA_PATH=str(synthetic_dir / "pref_train.json"),
        IMAGE_FOLDER=str(synthetic_dir / "image"), OUTPUT_DIR=str(out),
        DEEPSPEED_CONFIG=str(REPO_ROOT / "scripts" / zero), PER_DEVICE_BATCH="2", GLOBAL_BATCH="8",
        LEARNING_RATE="1e-3",
        EXTRA_ARGS=f"--max_steps 4 --dataloader_num_workers 0 --report_to none --save_strategy no --reference_cache_dir {tmp_path / 'cache'}"
        f" --precompute_reference_logps {str(precompute).lower()}{extra}",
    )
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    first = state["log_history"][0]
    # The reference (cached, gathered from both processes, or live) matches the policy at step one.
    assert first["rewards/chosen"] == pytest.approx(0, abs=1e-5) and first["rewards/rejected"] == pytest.approx(0, abs=1e-5)
    assert ("margins/image" in first) == (script == "mcmdpo.sh")
    import torch

    caches = list((tmp_path / "cache").glob("*.pt"))
    assert len(caches) == int(precompute)
    if precompute:
        assert torch.load(caches[0]).shape == (200, 8 if script == "mcmdpo.sh" else 2)
    # The saved model is whole (ZeRO-3 gathers it) and reloads with the Auto classes.
    trained = dict(AutoModelForImageTextToText.from_pretrained(out).named_parameters())
    base = dict(AutoModelForImageTextToText.from_pretrained(tiny_checkpoint).named_parameters())
    head = "lm_head.weight"
    assert trained[head].shape == base[head].shape and not torch.equal(trained[head], base[head])
