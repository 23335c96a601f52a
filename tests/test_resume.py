"""Resuming without DeepSpeed continues with the checkpoint's weights: the losses after the
checkpoint equal an uninterrupted run's (transformers 5 saves legacy key names that the Trainer's
own resume did not rename: it warned and trained on from the base weights), and a checkpoint whose
weights do not all load is an error naming them."""

from __future__ import annotations

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

from conftest import watch_training
from mcmdpo.train.cli import main


def losses(output_dir) -> dict[int, float]:
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}


def train_argv(stage, checkpoint, data, output_dir, *extra) -> list[str]:
    split = "sft_train.json" if stage == "sft" else "pref_train.json"
    return ["--stage", stage, "--model_name_or_path", str(checkpoint), "--data_path", str(data / split),
            "--image_folder", str(data / "image"), "--output_dir", str(output_dir), "--max_steps", "4",
            "--learning_rate", "1e-3", "--per_device_train_batch_size", "4", "--logging_steps", "1",
            "--save_strategy", "steps", "--save_steps", "2", "--report_to", "none", "--use_cpu", "true",
            "--dataloader_num_workers", "0", "--seed", "0", "--plot", "false", *extra]


@pytest.mark.parametrize("stage, extra", [
    ("sft", ()),
    pytest.param("mcmdpo", (), marks=pytest.mark.slow),        # cached reference log-probs
    ("dpo", ("--precompute_reference_logps", "false")),        # live reference
    pytest.param("mcmdpo", ("--use_lora", "true", "--lora_dropout", "0"), marks=pytest.mark.slow),
], ids=["sft", "mcmdpo", "dpo-live-reference", "mcmdpo-lora"])
def test_resume_continues_exactly(stage, extra, tiny_checkpoint, synthetic_dir, tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert main(train_argv(stage, tiny_checkpoint, synthetic_dir, full, *extra)) == 0
    shutil.copytree(full / "checkpoint-2", resumed / "checkpoint-2")  # the run stopped after its first save
    assert main(train_argv(stage, tiny_checkpoint, synthetic_dir, resumed, *extra,
                           "--resume_from_checkpoint", str(resumed / "checkpoint-2"))) == 0
    expected, got = losses(full), losses(resumed)
    assert sorted(got) == [1, 2, 3, 4]
    for step in (3, 4):  # trained after the resume
        assert got[step] == pytest.approx(expected[step], abs=1e-6), step
    if stage == "sft":
        assert got[3] != pytest.approx(losses(full)[1], abs=1e-3)  # not the base weights' loss again


def test_a_checkpoint_missing_weights_is_an_error_naming_them(tiny_checkpoint, synthetic_dir, tmp_path, capsys):
    output = tmp_path / "run"
    assert main(train_argv("sft", tiny_checkpoint, synthetic_dir, output, "--max_steps", "2")) == 0
    weights_file = output / "checkpoint-2" / "model.safetensors"
    weights = load_file(weights_file)
    dropped = next(name for name in weights if "layers.1.mlp.down_proj" in name)
    del weights[dropped]
    save_file(weights, weights_file, metadata={"format": "pt"})
    assert main(train_argv("sft", tiny_checkpoint, synthetic_dir, output,
                           "--resume_from_checkpoint", str(output / "checkpoint-2"))) == 2
    error = capsys.readouterr().err
    assert "checkpoint-2: the weights do not match the model: 1 missing" in error and "layers.1.mlp.down_proj" in error


def test_a_mistyped_checkpoint_is_an_error_before_anything_loads(tmp_path, capsys):
    """The model path does not exist either: the checkpoint's error must come first."""
    (tmp_path / "not-a-checkpoint").mkdir()
    for path, message in ((tmp_path / "checkpoint-20", "no such folder"),
                          (tmp_path / "not-a-checkpoint", "not a training checkpoint (no trainer_state.json)")):
        assert main(train_argv("sft", tmp_path / "no-model", tmp_path, tmp_path / "out", "--resume_from_checkpoint", str(path))) == 2
        assert f"--resume_from_checkpoint {path}: {message}" in capsys.readouterr().err


def test_last_resumes_from_the_newest_complete_checkpoint(tiny_checkpoint, synthetic_dir, tmp_path, capsys):
    """A job killed while writing checkpoint-4 leaves it without its completion mark (and here
    without its optimizer state): ``last`` passes over it, says so, and resumes exactly from
    checkpoint-2."""
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert main(train_argv("sft", tiny_checkpoint, synthetic_dir, full)) == 0
    assert all((full / f"checkpoint-{step}" / "checkpoint_complete").is_file() for step in (2, 4))
    for step in (2, 4):
        shutil.copytree(full / f"checkpoint-{step}", resumed / f"checkpoint-{step}")
    (resumed / "checkpoint-4" / "checkpoint_complete").unlink()
    (resumed / "checkpoint-4" / "optimizer.pt").unlink()
    capsys.readouterr()
    assert main(train_argv("sft", tiny_checkpoint, synthetic_dir, resumed, "--resume_from_checkpoint", "last")) == 0
    out = capsys.readouterr().out
    assert f"{resumed / 'checkpoint-4'}: incomplete" in out and f"resuming from {resumed / 'checkpoint-2'}" in out
    expected, got = losses(full), losses(resumed)
    for step in (3, 4):
        assert got[step] == pytest.approx(expected[step], abs=1e-6), step


def test_last_without_a_checkpoint_starts_and_with_only_incomplete_ones_stops(tmp_path, capsys):
    from mcmdpo.train.resume import resolve_resume

    assert resolve_resume("last", tmp_path / "fresh") == (
        None, [f"--resume_from_checkpoint last: no checkpoint in {tmp_path / 'fresh'} yet, starting from the beginning"])
    (tmp_path / "run" / "checkpoint-6").mkdir(parents=True)
    assert main(train_argv("sft", tmp_path / "no-model", tmp_path, tmp_path / "run", "--resume_from_checkpoint", "last")) == 2
    assert "no complete checkpoint in" in capsys.readouterr().err


def test_older_checkpoints_are_deleted_only_after_the_new_one_is_complete(tiny_checkpoint, synthetic_dir, tmp_path):
    output = tmp_path / "run"
    assert main(train_argv("sft", tiny_checkpoint, synthetic_dir, output, "--max_steps", "6", "--save_total_limit", "2")) == 0
    assert sorted(path.name for path in output.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]
    assert all((path / "checkpoint_complete").is_file() for path in output.glob("checkpoint-*"))


@pytest.mark.slow
def test_sigterm_saves_at_the_next_step_stops_with_its_own_status_and_resumes_exactly(tiny_checkpoint, synthetic_dir, tmp_path):
    """What a scheduler does before killing a job: SIGTERM mid-run. Training saves a checkpoint at
    the next step boundary, exits with PREEMPTED_EXIT_STATUS (not 0, not a crash's 1), and
    ``last`` continues with the uninterrupted run's losses."""
    import signal
    import subprocess
    import sys

    from mcmdpo.train.preemption import PREEMPTED_EXIT_STATUS

    full, preempted = tmp_path / "full", tmp_path / "preempted"
    argv = lambda output, *extra: train_argv("sft", tiny_checkpoint, synthetic_dir, output, "--max_steps", "30",  # noqa: E731
                                             "--save_strategy", "no", *extra)
    assert main(argv(full)) == 0
    process = subprocess.Popen([sys.executable, "-m", "mcmdpo.train", *argv(preempted)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines, logged = watch_training(process, logged_steps=3)
    assert logged.wait(300), "".join(lines[-30:])
    process.send_signal(signal.SIGTERM)
    assert process.wait(300) == PREEMPTED_EXIT_STATUS, "".join(lines[-30:])
    (checkpoint,) = preempted.glob("checkpoint-*")
    stopped_at = int(checkpoint.name.split("-")[1])
    assert 3 <= stopped_at < 30 and (checkpoint / "checkpoint_complete").is_file()
    assert not (preempted / "model.safetensors").exists()  # no final model for a run that did not finish

    assert main(argv(preempted, "--resume_from_checkpoint", "last")) == 0
    expected, got = losses(full), losses(preempted)
    assert sorted(got) == list(range(1, 31))
    for step in range(stopped_at + 1, 31):
        assert got[step] == pytest.approx(expected[step], abs=1e-6), step


@pytest.mark.slow
def test_sigkill_after_a_checkpoint_then_last_continues_exactly(tiny_checkpoint, synthetic_dir, tmp_path):
    """SIGKILL (no chance to save) once checkpoint-4 is complete: ``last`` resumes from it."""
    import signal
    import subprocess
    import sys
    import time

    full, killed = tmp_path / "full", tmp_path / "killed"
    argv = lambda output, *extra: train_argv("sft", tiny_checkpoint, synthetic_dir, output, "--max_steps", "40",  # noqa: E731
                                             "--save_steps", "4", "--save_total_limit", "3", *extra)
    assert main(argv(full)) == 0
    process = subprocess.Popen([sys.executable, "-m", "mcmdpo.train", *argv(killed)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (killed / "checkpoint-4" / "checkpoint_complete").is_file():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "model.safetensors").exists()  # it did not finish
    assert main(argv(killed, "--resume_from_checkpoint", "last")) == 0
    newest = max(int(path.name.split("-")[1]) for path in killed.glob("checkpoint-*"))
    assert newest == 40
    expected, got = losses(full), losses(killed)
    for step in range(5, 41):  # at least from step 5 on: the resume started at checkpoint 4 or later
        assert got[step] == pytest.approx(expected[step], abs=1e-6), step
