"""scripts/iterate.sh, as a user runs it: SFT once, then two on-policy rounds (pairs built from the
previous model's own samples, MCM-DPO on them), each measured; the rounds' figures side by side;
RESUME=1 keeps the finished rounds."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import REPO_ROOT, stage_script_env
from mcmdpo.build.rounds import collect_rounds

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def run_iterate(tmp_path, tiny_checkpoint, synthetic_dir, **extra: str) -> subprocess.CompletedProcess:
    settings = dict(
        ROUNDS="2", OUTPUT_ROOT=str(tmp_path / "rounds"), MODEL_PATH=str(tiny_checkpoint),
        SFT_DATA_PATH=str(synthetic_dir / "sft_train.json"), IMAGE_FOLDER=str(synthetic_dir / "image"),
        PREF_TEST=str(synthetic_dir / "pref_test.json"), TEST_DATA=str(synthetic_dir / "test.jsonl"),
        NUM_GPUS="1", DEEPSPEED_CONFIG=str(REPO_ROOT / "scripts" / "zero2.json"), PER_DEVICE_BATCH="4", GLOBAL_BATCH="4", LEARNING_RATE="1e-3",
        EXTRA_ARGS="--max_steps 2 --dataloader_num_workers 0 --report_to none --save_strategy no --plot false",
        PREF_EXTRA_ARGS=f"--reference_cache_dir {tmp_path / 'cache'}",
        BUILD_ARGS="--num_candidates 2 --max_new_tokens 12 --quiet",
    )
    return subprocess.run(["bash", str(REPO_ROOT / "scripts" / "iterate.sh")], capture_output=True, text=True, timeout=1700,
                          env=stage_script_env(**{**settings, **extra}))


def test_two_rounds_build_from_the_previous_model_train_and_are_measured(tiny_checkpoint, synthetic_dir, tmp_path):
    result = run_iterate(tmp_path, tiny_checkpoint, synthetic_dir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    root = tmp_path / "rounds"
    for number in (1, 2):
        folder = root / f"round{number}"
        pairs = json.loads((folder / "build" / "pairs.json").read_text())
        previous = root / "sft" if number == 1 else root / "round1" / "model"
        # On-policy: each round samples from the model the round before it trained.
        assert pairs and all(pair["provenance"]["sampler"]["checkpoint"] == str(previous) for pair in pairs), pairs[0]["provenance"]
        assert (folder / "model" / "model.safetensors").is_file() and (folder / "done").is_file()
    rounds = collect_rounds(root)
    assert sorted(rounds) == [0, 1, 2]
    for number in (1, 2):
        assert rounds[number]["pairs"] > 0 and 0 <= rounds[number]["preference_accuracy"] <= 1 and "cider" in rounds[number]
    assert json.loads((root / "rounds.json").read_text())["2"] == rounds[2]
    assert (root / "rounds.png").stat().st_size > 10_000
    # Two rounds with other seeds sample other candidates from other models.
    rejected = [[json.loads(pair["text"])["rejected"] for pair in json.loads((root / f"round{n}" / "build" / "pairs.json").read_text())]
                for n in (1, 2)]
    assert rejected[0] != rejected[1]

    again = run_iterate(tmp_path, tiny_checkpoint, synthetic_dir, RESUME="1")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "round 1: done earlier" in again.stdout and "round 2: done earlier" in again.stdout and "== SFT" not in again.stdout


def test_settings_that_cannot_work_stop_before_anything_runs(tmp_path, tiny_checkpoint, synthetic_dir):
    for extra, message in ((dict(ROUNDS="0"), "ROUNDS must be a whole number"), (dict(PREFERENCE="kto"), "PREFERENCE must be"),
                           (dict(PREF_TEST=str(tmp_path / "absent.json")), "absent.json: no such file")):
        result = run_iterate(tmp_path, tiny_checkpoint, synthetic_dir, **extra)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert not (tmp_path / "rounds" / "sft").exists()
