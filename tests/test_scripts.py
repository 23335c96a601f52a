"""The stage scripts as a user runs them: DeepSpeed on two CPU processes, the tiny model."""

from __future__ import annotations

import json
import shutil
import os
import subprocess
import sys

import pytest
from transformers import AutoModelForImageTextToText, AutoProcessor

from conftest import REPO_ROOT, logged_losses, stage_script_env, watch_training

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # DeepSpeed on two processes, through the scripts


def run_script(name: str, timeout: int = 900, **env: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / name)],
        env={**os.environ, "DS_ACCELERATOR": "cpu", "NUM_GPUS": "2", "BF16": "false", **env},
        capture_output=True, text=True, timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def test_sft_script_under_deepspeed_zero2(one_node_run):
    out, _ = one_node_run("sft.sh", "zero2")
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    # Two processes x 2 per device x accumulation 2 = the global batch of 8: 4 steps cover 32.
    assert state["train_batch_size"] == 2
    assert abs(state["log_history"][-2]["epoch"] - 4 * 8 / 256) < 1e-6
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert losses[-1] < losses[0]
    model = AutoModelForImageTextToText.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    assert type(model).__name__ == "LlavaForConditionalGeneration" and processor.chat_template


def check_preference_run(out, cache, base, script: str, precompute: bool) -> None:
    """What a preference script's run must show: its steps, a reference equal to the policy at step
    one, MCM-DPO's margins, one cache entry when precomputed, and a whole, trained checkpoint."""
    import torch

    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    first = state["log_history"][0]
    # The reference (cached, gathered from both processes, or live) matches the policy at step one.
    assert first["rewards/chosen"] == pytest.approx(0, abs=1e-5) and first["rewards/rejected"] == pytest.approx(0, abs=1e-5)
    assert ("margins/image" in first) == (script == "mcmdpo.sh")
    caches = list(cache.glob("*.pt"))
    assert len(caches) == int(precompute)
    if precompute:
        # One epoch of negatives (4 steps of 8 records), so one row of reference log-probs.
        assert torch.load(caches[0]).shape == (1, 200, 8 if script == "mcmdpo.sh" else 2)
    # The saved model is whole (ZeRO-3 gathers it) and reloads with the Auto classes.
    trained = dict(AutoModelForImageTextToText.from_pretrained(out).named_parameters())
    base = dict(AutoModelForImageTextToText.from_pretrained(base).named_parameters())
    head = "lm_head.weight"
    assert trained[head].shape == base[head].shape and not torch.equal(trained[head], base[head])


def test_mcmdpo_script_under_zero3_with_the_reference_precomputed(one_node_run, tiny_checkpoint):
    """MCM-DPO under ZeRO-3, policy and reference partitioned over both processes, the reference
    log-probs precomputed on both and gathered (the scripts' default step: packed)."""
    out, _ = one_node_run("mcmdpo.sh", "zero3")
    check_preference_run(out, out.parent / "cache", tiny_checkpoint, "mcmdpo.sh", precompute=True)


@pytest.mark.parametrize("script, zero, precompute", [("mcmdpo.sh", "zero3.json", False)])
def test_preference_scripts_under_deepspeed(tiny_checkpoint, synthetic_dir, tmp_path, script, zero, precompute):
    """MCM-DPO under ZeRO-3 with a live reference (a partitioned reference model running beside
    the policy). scripts/dpo.sh under ZeRO-2 with the reference precomputed runs in
    tests/test_recipe_options.py (paradigm b)."""
    out = tmp_path / "out"
    run_script(
        script,
        MODEL_PATH=str(tiny_checkpoint), DATA_PATH=str(synthetic_dir / "pref_train.json"),
        IMAGE_FOLDER=str(synthetic_dir / "image"), OUTPUT_DIR=str(out),
        DEEPSPEED_CONFIG=str(REPO_ROOT / "scripts" / zero), PER_DEVICE_BATCH="2", GLOBAL_BATCH="8",
        LEARNING_RATE="1e-3",
        EXTRA_ARGS=f"--max_steps 4 --dataloader_num_workers 0 --report_to none --save_strategy no --reference_cache_dir {tmp_path / 'cache'}"
        f" --precompute_reference_logps {str(precompute).lower()}",
    )
    check_preference_run(out, tmp_path / "cache", tiny_checkpoint, script, precompute)


def test_packed_step_logs_the_plain_steps_losses_under_zero3_through_the_script(tiny_checkpoint, synthetic_dir, tmp_path):
    """scripts/mcmdpo.sh as shipped (tree-packed step, activation checkpointing on, ZeRO-3 over 2
    processes, cached reference) against SEQUENCE_PACKING=none: the same losses step by step."""
    histories = {}
    for step in ("none", "tree"):
        out = tmp_path / step
        run_script(
            "mcmdpo.sh", SEQUENCE_PACKING=step,
            MODEL_PATH=str(tiny_checkpoint), DATA_PATH=str(synthetic_dir / "pref_train.json"),
            IMAGE_FOLDER=str(synthetic_dir / "image"), OUTPUT_DIR=str(out),
            DEEPSPEED_CONFIG=str(REPO_ROOT / "scripts" / "zero3.json"), PER_DEVICE_BATCH="2", GLOBAL_BATCH="8", LEARNING_RATE="0.05",
            # SGD: Adam's first steps would scale float-rounding gradients up to +-lr.
            EXTRA_ARGS=f"--max_steps 3 --optim sgd --dataloader_num_workers 0 --report_to none --save_strategy no "
                       f"--reference_cache_dir {tmp_path / 'cache'}",
        )
        histories[step] = [e for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    plain, packed = histories["none"], histories["tree"]
    for a, b in zip(plain, packed, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
        assert b["margins/image"] == pytest.approx(a["margins/image"], abs=1e-4)


def test_paper_recipe_on_a_real_shape_llava16_with_the_real_sample_data(tmp_path):
    """LLaVA-1.6-Vicuna as the paper runs it (pad protocol, vicuna_v1 prompt, vision tower
    trained, no clipping) on the real Twitter sample: scripts/sft.sh and scripts/mcmdpo.sh under
    ZeRO-3 on two CPU processes, then inference on the real test sample."""
    from mcmdpo.tiny import TinyModelSpec, write_tiny_checkpoint
    from test_real_checkpoints import upstream

    twitter = upstream("twitter")
    base = write_tiny_checkpoint(tmp_path / "base", TinyModelSpec(like="llava-v1.6-vicuna-7b"))
    common = dict(IMAGE_FOLDER=str(twitter / "image" / "twitter_train"), DEEPSPEED_CONFIG=str(REPO_ROOT / "scripts" / "zero3.json"),
                  PER_DEVICE_BATCH="1", GLOBAL_BATCH="2", LEARNING_RATE="1e-3")
    run_script("sft.sh", MODEL_PATH=str(base), DATA_PATH=str(twitter / "twitter_train.json"), OUTPUT_DIR=str(tmp_path / "sft"),
               EXTRA_ARGS="--max_steps 2 --dataloader_num_workers 0 --report_to none --save_strategy no", **common)
    report = json.loads((tmp_path / "sft" / "data_report.json").read_text())
    assert report["dropped"] == report["truncated"] == 0 and report["kept"] == report["records"] == 10
    assert report["image_tokens"] == {"min": 576, "median": 576, "max": 576}
    run_script("mcmdpo.sh", MODEL_PATH=str(tmp_path / "sft"), DATA_PATH=str(twitter / "twitter_train.json"),
               OUTPUT_DIR=str(tmp_path / "mcmdpo"),
               EXTRA_ARGS=f"--max_steps 2 --dataloader_num_workers 0 --report_to none --save_strategy no --reference_cache_dir {tmp_path / 'cache'}",
               **common)
    report = json.loads((tmp_path / "mcmdpo" / "data_report.json").read_text())
    assert report["dropped"] == report["truncated"] == 0 and report["kept"] == 10
    state = json.loads((tmp_path / "mcmdpo" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and state["log_history"][0]["loss"] == pytest.approx(0.6931, abs=1e-3)
    # Saved as what the pad protocol runs (LLaVA-1.5 architecture), with the protocol and the
    # template recorded; the vision tower was trained (paradigm (d), the default).
    trained = AutoModelForImageTextToText.from_pretrained(tmp_path / "mcmdpo")
    assert type(trained).__name__ == "LlavaForConditionalGeneration" and trained.config.image_aspect_ratio == "pad"
    import torch

    sft_model = dict(AutoModelForImageTextToText.from_pretrained(tmp_path / "sft").named_parameters())
    base_model = dict(AutoModelForImageTextToText.from_pretrained(base).named_parameters())
    [tower] = [name for name in sft_model if "vision_tower" in name and "layers.0." in name and name.endswith("fc1.weight")]
    assert not torch.equal(sft_model[tower], base_model[tower])
    test_file = tmp_path / "test.jsonl"
    test_file.write_text("".join((twitter / "twitter_test.json").read_text().splitlines(keepends=True)[:3]))
    out = tmp_path / "predictions.jsonl"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "mcmdpo_inference.py"), "--model_name", str(tmp_path / "mcmdpo"), "--test_datasets", str(test_file),
         "--image_folder", str(twitter / "image" / "twitter_test"), "--eval_output", str(out), "--max_new_tokens", "4", "--quiet"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and all(isinstance(row["response"], str) for row in rows)


def test_sft_under_zero3_with_text_only_records_beside_image_records(tiny_checkpoint, synthetic_dir, tmp_path):
    """One process gets an image record while the other gets a text-only one, at every step:
    both must run the same forward, or ZeRO-3's collective weight gathering hangs."""
    records = json.loads((synthetic_dir / "sft_train.json").read_text())[:8]
    text_only = [{"id": f"t{i}", "conversations": [{"from": "human", "value": f"Count to {i}."}, {"from": "gpt", "value": f"{i}."}]} for i in range(8)]
    data = tmp_path / "mixed.json"
    data.write_text(json.dumps([row for pair in zip(records, text_only) for row in pair]))
    out = tmp_path / "sft"
    run_script(
        "sft.sh", timeout=300,
        MODEL_PATH=str(tiny_checkpoint), DATA_PATH=str(data), IMAGE_FOLDER=str(synthetic_dir / "image"), OUTPUT_DIR=str(out),
        DEEPSPEED_CONFIG=str(REPO_ROOT / "scripts" / "zero3.json"), PER_DEVICE_BATCH="1", GLOBAL_BATCH="2", LEARNING_RATE="1e-3",
        EXTRA_ARGS="--max_steps 4 --train_sampling_strategy sequential --dataloader_num_workers 0 --report_to none --save_strategy no",
    )
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4


def test_mcmdpo_script_under_zero3_with_a_qwen2_5_vl_checkpoint(synthetic_dir, tmp_path):
    """scripts/mcmdpo.sh as for LLaVA, on a tiny Qwen2.5-VL (real tokenizer and processor, 3-D
    rotary positions, flattened patches with their grid): ZeRO-3 on two CPU processes, the
    reference cached, the vision tower trained, and the checkpoint reloads as Qwen2.5-VL."""
    import torch

    from mcmdpo.tiny import TinyModelSpec, write_tiny_checkpoint

    base = write_tiny_checkpoint(tmp_path / "base", TinyModelSpec(architecture="qwen2_5_vl"))
    out = tmp_path / "mcmdpo"
    data = tmp_path / "pref_train.json"  # 16 records: the reference pass over all 200 would dominate the test
    data.write_text(json.dumps(json.loads((synthetic_dir / "pref_train.json").read_text())[:16]))
    run_script(
        "mcmdpo.sh", MODEL_PATH=str(base), DATA_PATH=str(data), IMAGE_FOLDER=str(synthetic_dir / "image"),
        OUTPUT_DIR=str(out), DEEPSPEED_CONFIG=str(REPO_ROOT / "scripts" / "zero3.json"), PER_DEVICE_BATCH="1", GLOBAL_BATCH="2",
        LEARNING_RATE="1e-3",
        EXTRA_ARGS=f"--max_steps 3 --dataloader_num_workers 0 --report_to none --save_strategy no --reference_cache_dir {tmp_path / 'cache'}",
    )
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and state["log_history"][0]["loss"] == pytest.approx(0.6931, abs=1e-3)
    assert all(f"accuracies/{term}" in state["log_history"][0] for term in ("response", "image", "context", "all"))
    trained = AutoModelForImageTextToText.from_pretrained(out)
    assert type(trained).__name__ == "Qwen2_5_VLForConditionalGeneration"
    before = dict(AutoModelForImageTextToText.from_pretrained(base).named_parameters())
    after = dict(trained.named_parameters())
    for name in ("model.visual.blocks.0.mlp.gate_proj.weight", "model.visual.merger.mlp.0.weight", "model.language_model.layers.0.mlp.up_proj.weight"):
        assert not torch.equal(after[name], before[name]), name


@pytest.mark.parametrize("script, zero", [("sft.sh", "zero3"), ("mcmdpo.sh", "zero3")])  # ZeRO-2: the SIGTERM test below
def test_resume_under_deepspeed_continues_exactly(one_node_run, tmp_path, script, zero):
    """SFT, and MCM-DPO with cached reference log-probs, on 2 processes: every checkpoint is marked
    complete once both have written it, and RESUME=1 continues from the newest complete one with
    the losses of an uninterrupted run."""
    full, settings = one_node_run(script, zero)
    resumed = tmp_path / "resumed"
    assert (full / "checkpoint-2" / "checkpoint_complete").is_file()
    shutil.copytree(full / "checkpoint-2", resumed / "checkpoint-2")  # the job stopped after its first save
    result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / script)], capture_output=True, text=True, timeout=900,
                            env=stage_script_env(NUM_GPUS="2", OUTPUT_DIR=str(resumed), RESUME="1", **settings))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    for step in (3, 4):
        assert logged_losses(resumed)[step] == pytest.approx(logged_losses(full)[step], abs=1e-6), step


def test_sigterm_under_deepspeed_saves_exits_75_and_resumes_exactly(tiny_checkpoint, synthetic_dir, tmp_path):
    """A scheduler's SIGTERM to the job script: both processes save at the same step boundary, the
    script exits 75, and RESUME=1 continues with the losses of an uninterrupted run."""
    import signal

    settings = {"MODEL_PATH": str(tiny_checkpoint), "DATA_PATH": str(synthetic_dir / "sft_train.json"),
                "IMAGE_FOLDER": str(synthetic_dir / "image"), "DEEPSPEED_CONFIG": str(REPO_ROOT / "scripts" / "zero2.json"),
                "PER_DEVICE_BATCH": "4", "GLOBAL_BATCH": "8", "LEARNING_RATE": "2e-3",
                "EXTRA_ARGS": "--max_steps 16 --dataloader_num_workers 0 --report_to none --save_strategy no --logging_steps 1 "
                              "--plot false"}
    full, preempted = tmp_path / "full", tmp_path / "preempted"
    run_script("sft.sh", **settings, OUTPUT_DIR=str(full))
    process = subprocess.Popen(["bash", str(REPO_ROOT / "scripts" / "sft.sh")],
                               env={**os.environ, "DS_ACCELERATOR": "cpu", "NUM_GPUS": "2", "BF16": "false", **settings,
                                    "OUTPUT_DIR": str(preempted)},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, logged = watch_training(process, logged_steps=3)
    assert logged.wait(600), "".join(lines[-40:])
    process.send_signal(signal.SIGTERM)
    assert process.wait(600) == 75, "".join(lines[-40:])
    (checkpoint,) = preempted.glob("checkpoint-*")
    stopped_at = int(checkpoint.name.split("-")[1])
    assert (checkpoint / "checkpoint_complete").is_file() and stopped_at < 16
    run_script("sft.sh", **settings, OUTPUT_DIR=str(preempted), RESUME="1")

    def losses(output):
        return {e["step"]: e["loss"] for e in json.loads((output / "trainer_state.json").read_text())["log_history"] if "loss" in e}

    for step in range(stopped_at + 1, 17):
        assert losses(preempted)[step] == pytest.approx(losses(full)[step], abs=1e-6), step
