"""What this project writes loads with plain transformers (and so with vLLM, lmms-eval and the hub),
for every family: the tiny checkpoints as written, a processor saved again as training saves it,
and a checkpoint written by one SFT step. Checked in a subprocess that never imports mcmdpo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mcmdpo.model import ARCHITECTURES
from mcmdpo.model.processors import load_checkpoint_processor
from mcmdpo.tiny import TinyModelSpec, write_tiny_checkpoint
from mcmdpo.train.cli import main as train_main

# The families whose published processors carry a video part (transformers looks its config up
# before anything else in AutoProcessor.from_pretrained).
WITH_VIDEO = {"qwen2_5_vl", "qwen3_vl", "llava_onevision"}

PLAIN_TRANSFORMERS = """
import json, sys
from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer
from transformers.video_processing_utils import BaseVideoProcessor

found = {}
for folder, has_video in json.loads(sys.argv[1]):
    AutoModelForImageTextToText.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    image_processor = AutoImageProcessor.from_pretrained(folder)
    video = BaseVideoProcessor.get_video_processor_dict(folder)[0] if has_video else None
    shared = {key: value for key, value in image_processor.to_dict().items() if video and key in video}
    found[folder] = {"video": video, "image": shared, "vocab": len(tokenizer)}
assert not any(name == "mcmdpo" or name.startswith("mcmdpo.") for name in sys.modules), "mcmdpo was imported"
print(json.dumps(found))
"""


def load_with_plain_transformers(folders: dict[str, bool], cwd: Path) -> dict[str, dict]:
    result = subprocess.run([sys.executable, "-c", PLAIN_TRANSFORMERS, json.dumps(list(folders.items()))], cwd=cwd,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_every_familys_checkpoint_and_a_resaved_processor_load_with_plain_transformers(tmp_path):
    folders: dict[str, bool] = {}
    for name in ARCHITECTURES:
        written = write_tiny_checkpoint(tmp_path / name, TinyModelSpec(architecture=name))
        # Training saves the processor it loaded (the trainer's processing_class) into its output.
        resaved = tmp_path / f"{name}_resaved"
        load_checkpoint_processor(written).save_pretrained(resaved)
        for suffix in ("config.json", "model.safetensors", "generation_config.json"):
            (resaved / suffix).write_bytes((written / suffix).read_bytes())
        folders[str(written)] = folders[str(resaved)] = name in WITH_VIDEO
    found = load_with_plain_transformers(folders, tmp_path)
    for folder, has_video in folders.items():
        video = found[folder]["video"]
        assert (video is not None) == has_video, folder
        if has_video:  # the video processor normalises (and, for Qwen, patches) as the image processor does
            assert found[folder]["image"] and all(video[key] == value for key, value in found[folder]["image"].items()), video
            assert "image_mean" in found[folder]["image"] and ("qwen" not in folder or "patch_size" in found[folder]["image"])


@pytest.mark.slow
def test_a_checkpoint_trained_one_sft_step_still_loads_with_plain_transformers(synthetic_dir, tmp_path):
    """The case found broken: a Qwen2.5-VL checkpoint trained one step lost its video-processor
    config, so AutoProcessor (which reads it first) could not load it anywhere."""
    start = write_tiny_checkpoint(tmp_path / "start", TinyModelSpec(architecture="qwen2_5_vl"))
    out = tmp_path / "sft"
    assert train_main([
        "--stage", "sft", "--model_name_or_path", str(start), "--data_path", str(synthetic_dir / "sft_train.json"),
        "--image_folder", str(synthetic_dir / "image"), "--output_dir", str(out), "--max_steps", "1",
        "--per_device_train_batch_size", "1", "--report_to", "none", "--save_strategy", "no", "--plot", "false",
        "--dataloader_num_workers", "0", "--use_cpu", "true", "--max_length", "4096",
    ]) == 0
    found = load_with_plain_transformers({str(out): True}, tmp_path)
    assert found[str(out)]["video"]["temporal_patch_size"] == 2


@pytest.mark.parametrize("name", sorted(WITH_VIDEO))
def test_a_carried_video_config_is_saved_as_it_came(tmp_path, name):
    """A checkpoint that ships its own video-processor config (as the published ones do) keeps
    it, unchanged, through a load and a save."""
    written = write_tiny_checkpoint(tmp_path / name, TinyModelSpec(architecture=name))
    shipped = json.loads((written / "video_preprocessor_config.json").read_text())
    shipped["fps"] = 1.5  # a setting no image processor has: it can only come from the carried config
    (written / "video_preprocessor_config.json").write_text(json.dumps(shipped))
    load_checkpoint_processor(written).save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "video_preprocessor_config.json").read_text()) == shipped
