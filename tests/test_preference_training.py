"""DPO and MCM-DPO training, in process, on the tiny model and the synthetic data."""

from __future__ import annotations

import math
import json
import logging

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText

from mcmdpo.data.image_inputs import ImageInputs
from mcmdpo.data import load_examples
from mcmdpo.preference.dataset import NegativeConfig, PreferenceDataset
from mcmdpo.data.synthetic import write_dataset
from mcmdpo.eval.preferences import evaluate_preferences, sequence_logps_of
from mcmdpo.model import load_model
from mcmdpo.train.cli import main
from mcmdpo.preference.layout import MCMDPO_LAYOUT, MCMDPO_TERMS
from mcmdpo.preference.packing import sequence_packing

COMMON = ["--save_strategy", "no", "--use_cpu", "true", "--dataloader_num_workers", "0", "--seed", "0"]


def pref_argv(stage, checkpoint, data_dir, output_dir, cache_dir, *extra, data="pref_train.json"):
    return [
        "--stage", stage, "--model_name_or_path", str(checkpoint), "--data_path", str(data_dir / data),
        "--image_folder", str(data_dir / "image"), "--output_dir", str(output_dir), "--reference_cache_dir", str(cache_dir),
        "--per_device_train_batch_size", "8", "--logging_steps", "1", "--report_to", "none", *COMMON, *extra,
    ]


@pytest.fixture(scope="module")
def noisy_sft(tiny_checkpoint, tmp_path_factory):
    """An SFT checkpoint trained on very noisy alt-text (half the targets are rejected-style),
    the situation preference optimisation is for: it has learnt the task's shape, not which
    responses are right."""
    root = tmp_path_factory.mktemp("noisy")
    data = write_dataset(root / "data", seed=0, num_sft=2000, num_pref_train=400, num_pref_test=100, num_test=4, sft_noise=0.5)
    argv = [
        "--stage", "sft", "--model_name_or_path", str(tiny_checkpoint), "--data_path", str(data / "sft_train.json"),
        "--image_folder", str(data / "image"), "--output_dir", str(root / "sft"), "--max_steps", "300",
        "--per_device_train_batch_size", "16", "--learning_rate", "2e-3", "--logging_steps", "50", "--report_to", "none", *COMMON,
        # The vision tower frozen and gradients clipped: at this learning rate the tiny model
        # otherwise learns not to use the image at all (paradigm (d) is tested elsewhere).
        "--train_vision_tower", "false", "--max_grad_norm", "1.0",
    ]
    assert main(argv) == 0
    return root / "sft", data


@pytest.mark.slow
@pytest.mark.timeout(800)
def test_mcmdpo_raises_held_out_preference_accuracy_and_margins(noisy_sft, tmp_path):
    sft, data = noisy_sft
    out = tmp_path / "mcmdpo"
    argv = pref_argv("mcmdpo", sft, data, out, tmp_path / "cache", "--max_steps", "40", "--learning_rate", "1e-4",
                     "--train_vision_tower", "false", "--max_grad_norm", "1.0")
    argv[argv.index("--report_to") + 1] = "tensorboard"
    assert main(argv) == 0
    evaluate = lambda path: evaluate_preferences(path, data / "pref_test.json", data / "image", show_progress=False)  # noqa: E731
    before, after = evaluate(sft), evaluate(out)
    report = {k: (before[k], after[k]) for k in ("response_accuracy", "image_margin", "context_margin")}
    assert after["response_accuracy"] >= before["response_accuracy"] + 0.1, report
    assert after["image_margin"] > before["image_margin"] + 0.1, report
    assert after["context_margin"] > before["context_margin"] + 0.1, report

    # Every dimension's reward, margin and accuracy is logged, with the usual DPO metrics...
    logged = json.loads((out / "trainer_state.json").read_text())["log_history"][0]
    for name in MCMDPO_TERMS:
        assert {f"rewards/{name}", f"margins/{name}", f"accuracies/{name}"} <= logged.keys()
    assert {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected"} <= logged.keys()
    # ...at step one the policy is the reference, so every reward is zero.
    assert logged["rewards/chosen"] == pytest.approx(0, abs=1e-5) and logged["margins/all"] == pytest.approx(0, abs=1e-5)
    # ...and also to TensorBoard.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    [events] = list(out.rglob("events.out.tfevents.*"))
    accumulator = EventAccumulator(str(events.parent))
    accumulator.Reload()
    assert {"train/margins/image", "train/accuracies/context", "train/loss"} <= set(accumulator.Tags()["scalars"])
    assert (out / "training_curves.png").is_file()


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_cached_reference_logps_equal_live_ones(tiny_checkpoint, synthetic_dir, tmp_path, caplog):
    cache = tmp_path / "cache"
    run = lambda out, *extra: main(pref_argv("mcmdpo", tiny_checkpoint, synthetic_dir, tmp_path / out, cache, "--max_steps", "3", "--learning_rate", "1e-3", *extra))  # noqa: E731
    assert run("first") == 0
    [cached_file] = list(cache.glob("*.pt"))
    cached = torch.load(cached_file)
    description = json.loads(cached_file.with_suffix(".json").read_text())
    assert description["negatives"] == {"image_type": "diffusion", "diffusion_step": 700, "seed": 0, "fixed": False}

    examples = load_examples(synthetic_dir / "pref_train.json", "preference", synthetic_dir / "image", show_progress=False).examples
    dataset = PreferenceDataset(examples, None, synthetic_dir / "image", 2048, ImageInputs(), NegativeConfig())
    from mcmdpo.model import load_family, load_processor

    dataset.processor = load_processor(str(tiny_checkpoint))
    # Training ran tree-packed: every sequence in full agrees.
    packing = sequence_packing("none", dataset.processor, MCMDPO_LAYOUT, load_family(str(tiny_checkpoint)))
    live = sequence_logps_of(load_model(str(tiny_checkpoint)), dataset, packing, batch_size=5, show_progress=False)
    assert cached.shape == (1, 200, 8) and live.shape == (200, 8)  # 3 steps: one epoch of negatives
    scored = ~cached[0].isnan().any(dim=1)  # 3 steps of 8: the 24 records they draw, no other
    assert int(scored.sum()) == 24
    torch.testing.assert_close(cached[0][scored], live[scored], rtol=1e-6, atol=1e-5)  # float32: batch composition differs

    # The next run reads the cache instead of running the reference model...
    mtime = cached_file.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="mcmdpo.train"):
        assert run("second") == 0
    assert "24 of them cached" in caplog.text and "rows computed" not in caplog.text
    assert cached_file.stat().st_mtime_ns == mtime and len(list(cache.glob("*.pt"))) == 1
    # ...and other negative settings get their own entry.
    assert run("third", "--negative_image", "rotate") == 0
    assert len(list(cache.glob("*.pt"))) == 2

    # Training on cached reference log-probs is training against the live reference model.
    assert run("live", "--precompute_reference_logps", "false") == 0
    losses = lambda out: [e["loss"] for e in json.loads((tmp_path / out / "trainer_state.json").read_text())["log_history"] if "loss" in e]  # noqa: E731
    assert losses("live") == pytest.approx(losses("first"), abs=1e-5)


@pytest.mark.slow
def test_the_reference_pass_scores_only_the_records_a_run_draws(tiny_checkpoint, synthetic_dir, tmp_path):
    """2 steps of 2 records score those 4 records' reference log-probs, no other; 4 steps then add
    the 4 they draw next; and training on them is training on a cache that holds every record."""
    from mcmdpo.train.cli import parse_arguments, run

    records = json.loads((synthetic_dir / "pref_train.json").read_text())[:16]
    data = tmp_path / "data"
    data.mkdir()
    (data / "pref_train.json").write_text(json.dumps(records))
    (data / "image").symlink_to(synthetic_dir / "image")

    def train(out, cache, *extra):
        argv = pref_argv("mcmdpo", tiny_checkpoint, data, tmp_path / out, tmp_path / cache, "--per_device_train_batch_size", "2",
                         "--learning_rate", "1e-3", "--fixed_negatives", "true", *extra)
        trainer = run(*parse_arguments(argv))
        [cached] = [torch.load(path) for path in (tmp_path / cache).glob("*.pt")]
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
        return trainer.reference_rows_computed, int((~cached[0].isnan().any(dim=1)).sum()), losses

    assert train("two", "growing", "--max_steps", "2")[:2] == (4, 4)
    computed, cached, losses = train("four", "growing", "--max_steps", "4")
    assert (computed, cached, len(losses)) == (4, 8, 4)
    assert train("epoch", "whole", "--num_train_epochs", "1")[:2] == (16, 16)
    computed, cached, losses_on_everything = train("four_again", "whole", "--max_steps", "4")
    assert (computed, cached) == (0, 16)
    assert losses == pytest.approx(losses_on_everything, abs=1e-6)


@pytest.mark.parametrize("merge", [False, True])
def test_dpo_with_lora(tiny_checkpoint, synthetic_dir, tmp_path, merge):
    """LoRA adapters on the language model; the reference is the policy with its adapters off
    (live here), the output adapters or a merged model, both loading through the Auto classes."""
    out = tmp_path / "dpo-lora"
    extra = ["--use_lora", "true", "--lora_r", "8", "--lora_alpha", "16", "--merge_lora", str(merge).lower(), "--train_vision_tower", "false",
             "--precompute_reference_logps", "false", "--max_steps", "6", "--learning_rate", "5e-3"]
    assert main(pref_argv("dpo", tiny_checkpoint, synthetic_dir, out, tmp_path / "cache", *extra)) == 0
    log = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert log[0]["rewards/chosen"] == pytest.approx(0, abs=1e-6)  # adapters start as the identity
    assert log[-2]["rewards/margins"] > 0
    assert (out / "adapter_config.json").is_file() != merge
    trained = dict(AutoModelForImageTextToText.from_pretrained(out).named_parameters())
    base = dict(AutoModelForImageTextToText.from_pretrained(tiny_checkpoint).named_parameters())
    q_proj = "model.language_model.layers.0.self_attn.q_proj"
    if merge:  # a plain model whose weights now hold the trained adapters
        assert not any("lora" in name for name in trained)
        assert not torch.equal(trained[f"{q_proj}.weight"], base[f"{q_proj}.weight"])
    else:  # the base model with the trained adapters loaded on top
        assert not torch.equal(trained[f"{q_proj}.lora_B.default.weight"], torch.zeros_like(trained[f"{q_proj}.lora_B.default.weight"]))
        assert torch.equal(trained[f"{q_proj}.base_layer.weight"], base[f"{q_proj}.weight"])
    # Only the language model was adapted: the vision tower is the base one.
    assert all(torch.equal(value, base[name]) for name, value in trained.items() if "vision_tower" in name)


@pytest.mark.slow
def test_alignment_with_the_vision_tower_trained_reloads_it(tiny_checkpoint, synthetic_dir, tmp_path):
    out = tmp_path / "mcmdpo-ve"
    extra = ["--train_vision_tower", "true", "--max_steps", "3", "--learning_rate", "1e-3"]
    assert main(pref_argv("mcmdpo", tiny_checkpoint, synthetic_dir, out, tmp_path / "cache", *extra)) == 0
    start = {k: v for k, v in load_file(tiny_checkpoint / "model.safetensors").items() if "vision_tower" in k}
    saved = {k: v for k, v in load_file(out / "model.safetensors").items() if "vision_tower" in k}
    assert start.keys() == saved.keys()
    assert sum(not torch.equal(start[k], saved[k]) for k in saved) > len(saved) // 2
    # The Auto classes reload exactly the trained tower, not the starting one.
    base = dict(AutoModelForImageTextToText.from_pretrained(tiny_checkpoint).named_parameters())
    reloaded = dict(AutoModelForImageTextToText.from_pretrained(out).named_parameters())
    vision = [name for name in reloaded if "vision_tower" in name]
    assert sum(not torch.equal(reloaded[n], base[n]) for n in vision) == sum(not torch.equal(start[k], saved[k]) for k in saved)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--stage", "sft", "--beta", "0.2"], "--stage sft does not use --beta"),
        (["--stage", "sft", "--terms", "image"], "--stage sft does not use --terms"),
        (["--stage", "dpo", "--negative_image", "black"], "scores that negative, so --negative_image would do nothing"),
        (["--stage", "dpo", "--negative_seed", "3"], "scores that negative, so --negative_seed would do nothing"),
        (["--stage", "mcmdpo", "--terms", "response", "--diffusion_step", "500"], "--diffusion_step would do nothing"),
        (["--stage", "mcmdpo", "--terms", "response", "colour"], "unknown preference term(s) colour"),
        (["--stage", "mcmdpo", "--term_weights", "1", "2"], "term weight '1' is not NAME=WEIGHT"),
        (["--stage", "mcmdpo", "--term_weights", "image=heavy"], "'heavy' is not a number"),
        (["--stage", "mcmdpo", "--sequence_packing", "fast"], "--sequence_packing must be one of"),
        (["--stage", "mcmdpo", "--negative_image", "black", "--diffusion_step", "300"], "--negative_image black does not use --diffusion_step"),
        (["--stage", "mcmdpo", "--negative_image", "random", "--fixed_negatives", "true"], "--negative_image random does not use --fixed_negatives"),
        (["--stage", "mcmdpo", "--global_batch_size", "6", "--per_device_train_batch_size", "4"], "--global_batch_size 6 is not a multiple"),
        (["--stage", "mcmdpo", "--global_batch_size", "8", "--gradient_accumulation_steps", "4"], "contradicts --global_batch_size"),
        (["--stage", "mcmdpo", "--negative_image", "blur"], "negative image type must be one of"),
        (["--stage", "dpo", "--merge_lora", "true"], "--merge_lora would do nothing without --use_lora true"),
        (["--stage", "sft", "--lora_r", "8", "--lora_dropout", "0.1"], "--lora_r, --lora_dropout would do nothing without --use_lora"),
        (["--stage", "sft", "--ref_model_name_or_path", "ref"], "--stage sft does not use --ref_model_name_or_path"),
        (["--stage", "sft", "--use_lora", "true", "--train_language_model", "false"], "--train_language_model false would do nothing"),
        (["--stage", "dpo", "--use_lora", "true", "--precompute_reference_logps", "false", "--ref_model_name_or_path", "ref"],
         "--ref_model_name_or_path would do nothing"),
        (["--stage", "dpo", "--preference_step", "plain"], "--preference_step is now --sequence_packing"),
    ],
)
def test_flags_a_stage_does_not_use_are_errors(argv, message, capsys, tmp_path):
    code = main([*argv, "--model_name_or_path", "x", "--data_path", "y", "--output_dir", str(tmp_path)])
    assert code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_mcmdpo_on_llava_next_with_resized_negatives(synthetic_dir, tmp_path):
    """LLaVA-1.6: a cropped negative image has its own size, so its own number of tiles and image
    tokens; the 8-way batch pads them and the cached reference still matches the policy."""
    from mcmdpo.tiny import TinyModelSpec, write_tiny_checkpoint

    checkpoint = write_tiny_checkpoint(tmp_path / "next", TinyModelSpec(architecture="llava_next"))
    out = tmp_path / "out"
    extra = ["--negative_image", "crop", "--max_steps", "3", "--learning_rate", "1e-3", "--per_device_train_batch_size", "2",
             "--image_aspect_ratio", "anyres"]
    assert main(pref_argv("mcmdpo", checkpoint, synthetic_dir, out, tmp_path / "cache", *extra)) == 0
    first = json.loads((out / "trainer_state.json").read_text())["log_history"][0]
    assert first["margins/all"] == pytest.approx(0, abs=1e-5) and first["loss"] == pytest.approx(0.6931, abs=1e-4)
    assert type(AutoModelForImageTextToText.from_pretrained(out)).__name__ == "LlavaNextForConditionalGeneration"


@pytest.mark.slow
def test_negatives_redrawn_each_epoch_keep_the_cached_reference_exact(tiny_checkpoint, synthetic_dir, tmp_path):
    """Two epochs of MCM-DPO: the cache holds each epoch's reference log-probs (the noisy-image
    sequences differ between epochs, the others do not), and training on it logs the same losses
    as training against the live reference model, which sees each epoch's own negatives."""
    records = json.loads((synthetic_dir / "pref_train.json").read_text())[:16]
    data = tmp_path / "data"
    data.mkdir()
    (data / "pref_train.json").write_text(json.dumps(records))
    (data / "image").symlink_to(synthetic_dir / "image")
    cache = tmp_path / "cache"
    run = lambda out, *extra: main(pref_argv("mcmdpo", tiny_checkpoint, data, tmp_path / out, cache, "--num_train_epochs", "2",  # noqa: E731
                                             "--learning_rate", "1e-3", *extra))
    assert run("cached") == 0
    [cached_file] = list(cache.glob("*.pt"))
    cached = torch.load(cached_file)
    assert cached.shape == (2, 16, 8)
    clean, noisy = [0, 1, 4, 5], [2, 3, 6, 7]  # columns with m_w and with m_l (SEQUENCE_NAMES)
    torch.testing.assert_close(cached[0][:, clean], cached[1][:, clean])
    assert (cached[0][:, noisy] - cached[1][:, noisy]).abs().min() > 0
    assert run("live", "--precompute_reference_logps", "false") == 0
    losses = lambda out: [e["loss"] for e in json.loads((tmp_path / out / "trainer_state.json").read_text())["log_history"] if "loss" in e]  # noqa: E731
    assert len(losses("cached")) == 4
    assert losses("live") == pytest.approx(losses("cached"), abs=1e-5)
    # --fixed_negatives: one draw, one row.
    assert run("fixed", "--fixed_negatives", "true") == 0
    assert sorted(torch.load(f).shape[0] for f in cache.glob("*.pt")) == [1, 2]


@pytest.mark.slow
def test_length_grouped_batches_cut_padding(tiny_checkpoint, synthetic_dir, tmp_path):
    """--train_sampling_strategy group_by_length groups records of similar length (from cheap
    text-length estimates, nothing encoded up front), so batches carry less padding."""
    from mcmdpo.train.cli import parse_arguments, run

    padding = {}
    for strategy in ("random", "group_by_length"):
        argv = [
            "--stage", "dpo", "--model_name_or_path", str(tiny_checkpoint), "--data_path", str(synthetic_dir / "pref_train.json"),
            "--image_folder", str(synthetic_dir / "image"), "--output_dir", str(tmp_path / strategy), "--max_steps", "1",
            "--per_device_train_batch_size", "8", "--save_strategy", "no", "--report_to", "none", "--use_cpu", "true",
            "--reference_cache_dir", str(tmp_path / "cache"), "--train_sampling_strategy", strategy, "--plot", "false",
            "--sequence_packing", "none",  # padding is counted on rows of whole sequences
        ]
        trainer = run(*parse_arguments(argv))
        padding[strategy] = sum(int((batch["attention_mask"] == 0).sum()) for batch in trainer.get_train_dataloader())
    assert padding["group_by_length"] < 0.8 * padding["random"], padding


@pytest.mark.slow
def test_an_eighth_term_is_one_layout_entry_and_trains(tiny_checkpoint, synthetic_dir, tmp_path, monkeypatch):
    """A new preference, context vs image+response ((c_l, m_w, y_w) over (c_w, m_l, y_l)), added
    to the layout registry alone: the data builds the four sequences it needs, the packed step
    scores them, the loss and the metrics take it by name, and training moves its margin."""
    from mcmdpo.preference import layout

    term = layout.Term("context_over_image_response", positive=layout.Triple(1, 0, 0), negative=layout.Triple(0, 1, 1), weight=0.6)
    monkeypatch.setitem(layout.TERMS, term.name, term)
    out, cache = tmp_path / "eighth", tmp_path / "cache"
    assert main(pref_argv("mcmdpo", tiny_checkpoint, synthetic_dir, out, cache, "--max_steps", "8", "--learning_rate", "2e-3",
                          "--terms", "response", term.name, "--term_weights", f"{term.name}=0.9")) == 0
    logged = [e for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert logged[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)  # policy = reference at step one
    assert f"margins/{term.name}" in logged[0] and "margins/image" not in logged[0]
    assert logged[-1][f"margins/{term.name}"] > logged[0][f"margins/{term.name}"] + 0.01
    [cached] = list(cache.glob("*.pt"))
    assert torch.load(cached).shape[-1] == 4  # cw_mw_yw, cw_mw_yl, cw_ml_yl, cl_mw_yw
    assert json.loads(cached.with_suffix(".json").read_text())["triples"] == ["cw_mw_yw", "cw_mw_yl", "cw_ml_yl", "cl_mw_yw"]
