"""The main job, reduced: scripts/quickstart.sh runs the whole pipeline and writes a well-formed
summary.json, report.md and plots."""

from __future__ import annotations

import json
import math
import os
import subprocess

import pytest

from conftest import REPO_ROOT

REQUIRED = ("cider", "bleu4", "meteor", "rougel", "preference_accuracy", "image_margin", "context_margin")


@pytest.mark.slow
def test_quickstart_pipeline_reduced(tmp_path):
    out = tmp_path / "quickstart"
    reduced = ("--num_sft 96 --num_pref_train 32 --num_pref_test 16 --num_test 8 --sft_steps 20 --pref_steps 4 "
               "--max_new_tokens 8 --num_beams 2")
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "quickstart.sh")],
        env={**os.environ, "OUTPUT_DIR": str(out), "EXTRA_ARGS": reduced},
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == ["base", "sft", "dpo", "mcmdpo"]
    for model, metrics in summary.items():
        for name in REQUIRED:
            assert isinstance(metrics[name], float) and math.isfinite(metrics[name]), (model, name)
        assert 0 <= metrics["preference_accuracy"] <= 1
    report = (out / "report.md").read_text()
    assert "| model | cider | bleu4 | meteor | rougel | preference_accuracy | image_margin | context_margin |" in report
    assert all(f"| {model} |" in report for model in summary)
    for plot in ("training_curves.png", "scores.png", "margins.png"):
        assert (out / plot).stat().st_size > 10_000, plot
    for model in summary:
        assert len((out / "predictions" / f"{model}.jsonl").read_text().splitlines()) == 8


@pytest.mark.slow
def test_the_demo_runs_on_another_family(tmp_path):
    """--architecture: the same pipeline on a tiny Qwen2.5-VL (real tokenizer, processor, template)."""
    from mcmdpo.demo import main

    out = tmp_path / "qwen"
    assert main(["--output_dir", str(out), "--architecture", "qwen2_5_vl", "--num_sft", "16", "--num_pref_train", "8",
                 "--num_pref_test", "4", "--num_test", "4", "--sft_steps", "3", "--pref_steps", "2", "--pref_batch", "2",
                 "--max_new_tokens", "4", "--num_beams", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == ["base", "sft", "dpo", "mcmdpo"]
    assert json.loads((out / "base" / "config.json").read_text())["model_type"] == "qwen2_5_vl"
    assert all(len((out / "predictions" / f"{model}.jsonl").read_text().splitlines()) == 4 for model in summary)
