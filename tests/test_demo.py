"""The main job, reduced: scripts/quickstart.sh runs the whole pipeline and writes a well-formed
summary.json, report.md and plots."""

from __future__ import annotations

import json
import math
import os
import subprocess

import pytest

from conftest import REPO_ROOT

REQUIRED = ("cider", "bleu4", "meteor", "rougel", "preference_accuracy", "image_margin", "context_margin", "chair_s", "chair_i",
            "object_recall")


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_quickstart_pipeline_reduced_over_two_seeds(tmp_path):
    """Two seeds, reduced data and evaluation but the demo's SFT recipe: SFT reads the image at
    both seeds (held-out image accuracy well above chance), and the report shows both."""
    out = tmp_path / "quickstart"
    reduced = ("--seeds 0 1 --num_sft 2000 --num_pref_train 32 --num_pref_test 64 --num_test 8 --pref_steps 4 "
               "--max_new_tokens 8 --num_beams 2 --build_records 32 --build_candidates 2")
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "quickstart.sh")],
        env={**os.environ, "OUTPUT_DIR": str(out), "EXTRA_ARGS": reduced},
        capture_output=True, text=True, timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == ["base", "sft", "dpo", "mcmdpo", "mcmdpo_built", "per_seed"]
    assert list(summary["per_seed"]) == ["0", "1"]
    for model in ("base", "sft", "dpo", "mcmdpo", "mcmdpo_built"):
        for name in REQUIRED:
            values = [summary["per_seed"][seed][model][name] for seed in ("0", "1")]
            assert all(isinstance(v, float) and math.isfinite(v) for v in values), (model, name)
            assert summary[model][name] == pytest.approx(sum(values) / 2)
        assert 0 <= summary[model]["preference_accuracy"] <= 1
    for seed in ("0", "1"):
        assert summary["per_seed"][seed]["sft"]["image_accuracy"] >= 0.75, seed  # chance: 0.5
    report = (out / "report.md").read_text()
    assert "## Over 2 seeds (0, 1): mean (min–max)" in report and "### Seed 0" in report and "### Seed 1" in report
    assert "SFT learns to use the image: **yes**" in report
    assert "MCM-DPO on pairs built from the SFT model's own samples improves on SFT (CIDEr): **" in report
    for seed in ("0", "1"):  # the pairs were built from the SFT model's samples of the SFT split's first 32 records
        pairs = json.loads((out / f"seed{seed}" / "build" / "pairs.json").read_text())
        assert 0 < len(pairs) <= 32 and all(p["provenance"]["sampler"]["checkpoint"] == str(out / f"seed{seed}" / "sft") for p in pairs)
    assert "## Hallucination check: CHAIR on the alt-text" in report
    assert f"python -m mcmdpo.app --model {out}/seed0/sft --model {out}/seed0/dpo --model {out}/seed0/mcmdpo" in report
    for seed in ("0", "1"):  # SFT reads the image: far fewer wrong shapes than the untrained model names
        assert summary["per_seed"][seed]["sft"]["object_recall"] > summary["per_seed"][seed]["base"]["object_recall"], seed
    for plot in ("training_curves.png", "scores.png", "margins.png", "hallucination.png"):
        assert (out / plot).stat().st_size > 10_000, plot
    for seed in ("0", "1"):
        for model in ("base", "sft", "dpo", "mcmdpo", "mcmdpo_built"):
            assert len((out / f"seed{seed}" / "predictions" / f"{model}.jsonl").read_text().splitlines()) == 8
            assert len((out / f"seed{seed}" / "predictions" / "objhal" / f"{model}.jsonl").read_text().splitlines()) == 8


def test_verdicts_respect_the_spread_over_seeds():
    from mcmdpo.demo_report import claim, render_report, verdict

    assert verdict([2.1, 1.9, 2.4], [0.8, 0.9, 0.7], 0.01) == "yes"
    assert verdict([-0.0001, -0.0004, 0.0002], [-0.0004, 0.0001, -0.0002], 0.01) == "not shown"  # equal within noise
    assert verdict([0.3, 0.2], [0.9, 1.0], 0.01) == "no"  # reversed at every seed
    assert verdict([2.0, 0.5], [1.0, 1.0], 0.01) == "not shown"  # holds at one seed only
    per_seed = {
        0: {"dpo": {"image_margin": 0.85}, "mcmdpo": {"image_margin": 2.09}},
        1: {"dpo": {"image_margin": -0.0004}, "mcmdpo": {"image_margin": -0.0001}},
    }
    line = claim(per_seed, "mcmdpo", "dpo", "image_margin", "MCM-DPO makes the model more sensitive to the image")
    assert "**not shown**" in line and "seed 0: 2.09 vs 0.85" in line and "seed 1: -0.00 vs -0.00" in line
    metrics = {m: 1.0 for m in ("cider", "bleu4", "meteor", "rougel", "preference_accuracy", "image_accuracy", "image_margin",
                                "context_margin")}
    models = {name: dict(metrics) for name in ("base", "sft", "dpo", "mcmdpo")}
    models["sft"]["cider"] = 50.0
    report = render_report({0: models, 1: models}, {"seeds": [0, 1]}, {"total_s": 1.0})
    assert "SFT beats the untrained model on CIDEr: **yes**" in report
    assert "MCM-DPO makes the model more sensitive to the image than DPO does: **not shown**" in report
    assert "python -m mcmdpo.app --model OUTPUT_DIR/seed0/sft --model OUTPUT_DIR/seed0/dpo --model OUTPUT_DIR/seed0/mcmdpo" in report
    assert "than ipo" not in report  # no other objective ran
    with_ipo = {**models, "dpo_ipo": {**metrics, "image_margin": 0.5}}
    report = render_report({0: with_ipo, 1: with_ipo}, {"seeds": [0, 1]}, {"total_s": 1.0})
    assert "MCM-DPO makes the model more sensitive to the image than ipo: **yes**" in report
    assert "DPO with the ipo objective improves on SFT (CIDEr): **no**" in report


@pytest.mark.slow
@pytest.mark.timeout(700)
def test_the_demo_runs_on_another_family(tmp_path):
    """--architecture: the same pipeline on a tiny Qwen2.5-VL (real tokenizer, processor, template)."""
    from mcmdpo.demo import main

    out = tmp_path / "qwen"
    assert main(["--output_dir", str(out), "--architecture", "qwen2_5_vl", "--seeds", "0", "--num_sft", "16", "--num_pref_train", "8",
                 "--num_pref_test", "4", "--num_test", "4", "--sft_steps", "3", "--pref_steps", "2", "--pref_batch", "2",
                 "--max_new_tokens", "4", "--num_beams", "1", "--build_records", "0", "--objectives", "simpo", "kto"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    # --build_records 0: no built pairs; SimPO (no reference) and KTO (the pairs unpaired) beside the others
    assert list(summary) == ["base", "sft", "dpo", "mcmdpo", "dpo_simpo", "dpo_kto", "per_seed"]
    assert json.loads((out / "seed0" / "base" / "config.json").read_text())["model_type"] == "qwen2_5_vl"
    assert all(len((out / "seed0" / "predictions" / f"{m}.jsonl").read_text().splitlines()) == 4 for m in summary["per_seed"]["0"])
