"""The YAML recipes under configs/: what the paper's run sets beyond the arguments' defaults, each
written once (no recipe restates a default, the scripts hold none of their values), how the
command line reads them, and that the resulting runs are the paper's. Fast: no model is built."""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO_ROOT
from mcmdpo.train.arguments import AltTextTrainingArguments, DataArguments, ModelArguments
from mcmdpo.train.cli import main, parse_arguments
from mcmdpo.train import recipes
from mcmdpo.train.recipes import RecipeError, read_recipe, with_recipe

STAGES = ("sft", "dpo", "mcmdpo")
TYPES = (ModelArguments, DataArguments, AltTextTrainingArguments)
# Every variable through which the scripts override a recipe value, and the flag it sets.
OVERRIDES = {
    "LEARNING_RATE": "--learning_rate", "EPOCHS": "--num_train_epochs", "PER_DEVICE_BATCH": "--per_device_train_batch_size",
    "GLOBAL_BATCH": "--global_batch_size", "MAX_LENGTH": "--max_length", "BF16": "--bf16", "BETA": "--beta",
    "NEGATIVE_IMAGE": "--negative_image", "DIFFUSION_STEP": "--diffusion_step", "NORMALIZER": "--normalizer",
    "TERMS": "--terms", "TERM_WEIGHTS": "--term_weights", "TRAIN_VISION_TOWER": "--train_vision_tower",
    "IMAGE_ASPECT_RATIO": "--image_aspect_ratio", "MAX_GRAD_NORM": "--max_grad_norm", "VISION_TOWER_LR": "--vision_tower_lr",
    "PROJECTOR_LR": "--projector_lr", "SEQUENCE_PACKING": "--sequence_packing",
}
# What the scripts may still default themselves: paths, the launch, and paradigm.sh's own choices.
SCRIPT_DEFAULTS = {
    "MODEL_PATH", "DATA_PATH", "IMAGE_FOLDER", "OUTPUT_DIR", "NUM_GPUS", "DEEPSPEED_CONFIG", "MASTER_PORT", "EXTRA_ARGS",
    "DS_ACCELERATOR", "PREFERENCE", "OUTPUT_ROOT", "SFT_MODEL_PATH", "SFT_DATA_PATH", "SFT_EXTRA_ARGS", "PREF_DATA_PATH",
    "PREF_EXTRA_ARGS", "1", "RESUME", "NNODES", "NODE_RANK", "MASTER_ADDR", "HOSTFILE", "OMP_NUM_THREADS",
}
TRAINING_SCRIPTS = ("_launch.sh", "sft.sh", "dpo.sh", "mcmdpo.sh", "paradigm.sh")


def required(tmp_path: Path) -> list[str]:
    """The flags no recipe gives, and --use_cpu so that the recipes' bf16 parses without a GPU."""
    return ["--model_name_or_path", "m", "--data_path", "d.json", "--output_dir", str(tmp_path / "out"), "--use_cpu", "true"]


def parsed(arguments: tuple[Any, ...], key: str) -> Any:
    return next(getattr(args, key) for args in arguments if hasattr(args, key))


def comparable(value: Any) -> Any:
    """A recipe value and its parsed argument, in one form: enums by value, NAME=W items (or a
    mapping) as a dict of floats, report_to as a list."""
    value = getattr(value, "value", value)
    if isinstance(value, Mapping):
        return {str(name): float(weight) for name, weight in value.items()}
    if isinstance(value, list) and value and all(isinstance(item, str) and "=" in item for item in value):
        return {name: float(weight) for name, weight in (item.split("=", 1) for item in value)}
    return value


@pytest.mark.parametrize("stage", STAGES)
def test_each_recipe_parses_to_the_argument_dataclasses(stage, tmp_path, monkeypatch):
    """Every key lands in its field with its value, whether the recipe is named or leads the command line."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    recipe = read_recipe(REPO_ROOT / "configs" / f"{stage}.yaml")
    assert recipe["stage"] == stage
    named = parse_arguments(["--config", str(REPO_ROOT / "configs" / f"{stage}.yaml"), *required(tmp_path)])
    leading = parse_arguments([str(REPO_ROOT / "configs" / f"{stage}.yaml"), *required(tmp_path)])
    for arguments in (named, leading):
        for key, value in recipe.items():
            expected = [value] if key == "report_to" else value
            assert comparable(parsed(arguments, key)) == comparable(expected), key
        training = arguments[2]
        # One process: the whole global batch is accumulated.
        assert training.gradient_accumulation_steps == recipe["global_batch_size"] // recipe["per_device_train_batch_size"]


def test_without_a_recipe_the_dataclass_defaults_apply_and_the_packaged_ones_sit_at_the_repo_root():
    assert recipes.configs_dir() == REPO_ROOT / "configs"
    assert with_recipe(["--stage", "dpo", "--seed", "1"], TYPES) == ["--stage", "dpo", "--seed", "1"]


def test_a_flag_on_the_command_line_wins_over_the_recipe(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    recipe = str(REPO_ROOT / "configs" / "mcmdpo.yaml")
    # Before or after --config: the recipe's flags go in front of every flag given.
    _, _, training = parse_arguments([
        "--learning_rate", "1e-3", "--config", recipe, "--terms", "response", "image", "--term_weights", "image=1.0",
        "--bf16", "false", "--global_batch_size", "8", "--diffusion_step", "500", *required(tmp_path),
    ])
    assert training.learning_rate == 1e-3 and training.bf16 is False and training.diffusion_step == 500
    # A list flag is replaced whole, not merged with the recipe's.
    assert training.terms == ["response", "image"] and comparable(training.term_weights) == {"image": 1.0}
    assert training.gradient_accumulation_steps == 4  # 8 records / 2 per device
    assert training.num_train_epochs == 2 and training.beta == 0.1  # the rest is the recipe's
    # A leading recipe (also behind deepspeed's --local_rank) reads the same.
    _, _, leading = parse_arguments([recipe, "--learning_rate", "1e-3", *required(tmp_path)])
    assert leading.stage == "mcmdpo" and leading.learning_rate == 1e-3 and leading.layout.normalizer == 2.8
    flags = with_recipe(["--local_rank=0", recipe, "--learning_rate", "1e-3"], TYPES)
    assert flags[:2] == ["--stage", "mcmdpo"] and flags[-3:] == ["--local_rank=0", "--learning_rate", "1e-3"]


def test_recipe_values_become_flags(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("bf16: false\nlora_target_modules: [q_proj, v_proj]\nterm_weights: {image: 1.0, all: 0.5}\nlearning_rate: 5.0e-7\n")
    assert with_recipe(["--config", str(path), "--seed", "1"], TYPES) == [
        "--bf16", "false", "--lora_target_modules", "q_proj", "v_proj", "--term_weights", "image=1.0", "all=0.5",
        "--learning_rate", "5e-07", "--seed", "1",
    ]
    # The last --config wins, as for any flag (a script's EXTRA_ARGS can name another recipe).
    assert with_recipe(["--config", "absent.yaml", "--seed", "1", f"--config={path}"], TYPES)[:2] == ["--bf16", "false"]
    with pytest.raises(RecipeError, match="absent.yaml: no such file"):  # over a leading recipe too
        with_recipe([str(path), "--config", str(path.with_name("absent.yaml"))], TYPES)
    # --config none: no recipe at all, the dataclasses' own defaults.
    assert with_recipe(["--config", "none", "--stage", "dpo"], TYPES) == ["--stage", "dpo"]
    assert with_recipe(["--config", str(path), "--config", "none"], TYPES) == []
    assert with_recipe(["--stage", "dpo", "--help"], TYPES) == ["--stage", "dpo", "--help"]


def test_an_unknown_key_is_a_clear_error_naming_the_file_and_the_key(tmp_path, capsys):
    path = tmp_path / "typo.yaml"
    path.write_text("stage: sft\nlearning_rat: 1.0e-5\n")
    with pytest.raises(RecipeError, match=rf"recipe {re.escape(str(path))}: 'learning_rat' is not an argument.*'learning_rate'"):
        with_recipe(["--config", str(path)], TYPES)
    # Through the command line: the message, exit status 2, no traceback.
    assert main(["--config", str(path), *required(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "learning_rat" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "text, message",
    [
        ("- stage: sft\n", "must be a mapping"),
        ("vision_tower_lr: null\n", "'vision_tower_lr' holds null"),
        ("terms: []\n", "'terms' is empty"),
        ("stage: [sft\n", "not valid YAML"),
    ],
)
def test_a_malformed_recipe_is_a_clear_error(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=re.escape(message)) as error:
        with_recipe(["--config", str(path)], TYPES)
    assert str(path) in str(error.value)


def test_missing_recipes_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(RecipeError, match="no such file"):
        with_recipe(["--config", str(tmp_path / "absent.yaml")], TYPES)
    monkeypatch.chdir(tmp_path)  # a relative recipe path from elsewhere: the error points at the packaged one
    with pytest.raises(RecipeError, match=r"configs/mcmdpo.yaml: no such file \(the packaged one is "):
        with_recipe(["--config", "configs/mcmdpo.yaml"], TYPES)


# The paper's released training scripts, written out by hand: what a run of each recipe must be.
UPSTREAM_TABLE = {"sft": (2e-5, 1, 128), "dpo": (5e-7, 1, 64), "mcmdpo": (5e-7, 2, 64)}
UPSTREAM_COMMON = {
    "lr_scheduler_type": "cosine", "warmup_steps": 0.03, "weight_decay": 0.0, "max_length": 2048, "activation_checkpointing": True,
    "bf16": True, "train_vision_tower": True, "image_aspect_ratio": "auto", "max_grad_norm": 0,
}
UPSTREAM_MCMDPO = {"beta": 0.1, "negative_image": "diffusion", "diffusion_step": 700}
UPSTREAM_MCMDPO_TERMS = {"response": 1.0, "image": 0.5, "context": 0.5, "context_response": 0.2, "image_response": 0.2,
                         "context_image": 0.2, "all": 0.2}


def recipe_run(stage: str, tmp_path: Path) -> tuple[Any, ...]:
    return parse_arguments(["--config", str(REPO_ROOT / "configs" / f"{stage}.yaml"), *required(tmp_path)])


def test_the_mcmdpo_recipe_runs_the_upstream_objective(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    arguments = recipe_run("mcmdpo", tmp_path)
    for key, value in UPSTREAM_MCMDPO.items():
        assert parsed(arguments, key) == value, key
    layout = arguments[2].layout  # the seven terms in the paper's order, its weights over their sum
    assert dict(zip(layout.term_names, layout.weights)) == UPSTREAM_MCMDPO_TERMS
    assert list(layout.term_names) == list(UPSTREAM_MCMDPO_TERMS) and layout.normalizer == pytest.approx(2.8)


@pytest.mark.parametrize("stage", STAGES)
def test_each_recipe_runs_the_upstream_optimisation(stage, tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    arguments = recipe_run(stage, tmp_path)
    training = arguments[2]
    assert (training.learning_rate, training.num_train_epochs, training.global_batch_size) == UPSTREAM_TABLE[stage]
    for key, value in UPSTREAM_COMMON.items():
        assert comparable(parsed(arguments, key)) == value, key
    if stage == "sft":  # the original's micro-batch of one: each example's token mean, every example alike
        assert training.sft_loss_reduction == "example"
    if stage == "dpo":  # MCM-DPO's response term alone, not normalised
        layout = training.layout
        assert (training.beta, layout.term_names, layout.weights, layout.normalizer) == (0.1, ("response",), (1.0,), 1.0)


def fields(arguments: tuple[Any, ...]) -> list[dict[str, Any]]:
    """The parsed values of every argument (not the objects a parse sets up beside them)."""
    return [{spec.name: getattr(args, spec.name) for spec in dataclasses.fields(args)} for args in arguments]


@pytest.mark.parametrize("stage", STAGES)
def test_no_recipe_restates_a_default(stage, tmp_path, monkeypatch):
    """Each default is written once: a recipe key whose removal leaves the run unchanged restates
    one (``stage`` names what the recipe is for and stays)."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    recipe = read_recipe(REPO_ROOT / "configs" / f"{stage}.yaml")
    whole = recipe_run(stage, tmp_path)
    for key in recipe:
        if key == "stage":
            continue
        lean = tmp_path / f"without_{key}.yaml"
        lean.write_text(yaml.safe_dump({k: v for k, v in recipe.items() if k != key}))
        without = parse_arguments(["--config", str(lean), *required(tmp_path)])
        assert fields(without) != fields(whole), f"configs/{stage}.yaml: {key!r} restates its default"


def test_the_renamed_packing_flag_is_an_error_naming_the_new_one(tmp_path, capsys):
    assert main(["--stage", "dpo", "--preference_step", "plain", *required(tmp_path)]) == 2
    assert "--preference_step is now --sequence_packing" in capsys.readouterr().err
    old = tmp_path / "old.yaml"
    old.write_text("stage: dpo\npreference_step: packed\n")
    with pytest.raises(RecipeError, match="'preference_step' is now sequence_packing"):
        with_recipe(["--config", str(old)], TYPES)
    result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "dpo.sh")], env={**os.environ, "PREFERENCE_STEP": "plain"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "PREFERENCE_STEP is now SEQUENCE_PACKING" in result.stderr


def test_the_scripts_hold_no_recipe_value():
    for script in sorted((REPO_ROOT / "scripts").glob("*.sh")):
        text = script.read_text()
        if script.name in TRAINING_SCRIPTS:
            defaulted = set(re.findall(r"\$\{(\w+):?-", text))
            assert defaulted <= SCRIPT_DEFAULTS, f"{script.name} defaults {sorted(defaulted - SCRIPT_DEFAULTS)}"
        for value in ("5e-7", "2e-5", "0.1", "64", "128", "700", "2.8", "2048", "cosine", "0.03", "true", "false"):
            assert f":-{value}" not in text, f"{script.name} holds the default {value}"
        assert "GRAD_ACCUM" not in text and "--gradient_accumulation_steps" not in text, script.name


def launched(tmp_path: Path, script: str, **env: str) -> list[str]:
    """The arguments a stage script hands python -m mcmdpo.train, read from a stand-in deepspeed."""
    fake = tmp_path / "bin" / "deepspeed"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$ARGS_FILE"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    clean = {k: v for k, v in os.environ.items() if k not in OVERRIDES and k not in SCRIPT_DEFAULTS}
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / script)],
        env={**clean, "PATH": f"{fake.parent}:{os.environ['PATH']}", "ARGS_FILE": str(tmp_path / "args"), **env},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    args = (tmp_path / "args").read_text().splitlines()
    return args[args.index("mcmdpo.train") + 1:]


PATHS = ["--model_name_or_path", "checkpoints/sft", "--data_path", "playground/data/pref_train.json",
         "--image_folder", "playground/data/image", "--output_dir", "checkpoints/mcmdpo"]


def test_a_script_passes_the_recipe_and_no_override_unless_set(tmp_path):
    assert launched(tmp_path, "mcmdpo.sh") == [
        "--config", "configs/mcmdpo.yaml", *PATHS, "--deepspeed", "scripts/zero3.json",
    ]
    # Variables of another stage do not leak in (paradigm.sh runs both stages in one environment).
    assert launched(tmp_path, "sft.sh", BETA="0.2", TERMS="response", DEEPSPEED_CONFIG="")[:2] == ["--config", "configs/sft.yaml"]
    assert "--beta" not in launched(tmp_path, "sft.sh", BETA="0.2") and "--terms" not in launched(tmp_path, "dpo.sh", TERMS="image")


def test_every_override_reaches_its_argument(tmp_path, monkeypatch):
    env = {
        "LEARNING_RATE": "1e-3", "EPOCHS": "3", "PER_DEVICE_BATCH": "1", "GLOBAL_BATCH": "8", "MAX_LENGTH": "512",
        "BF16": "false", "BETA": "0.2", "NEGATIVE_IMAGE": "diffusion", "DIFFUSION_STEP": "500", "NORMALIZER": "1.5",
        "TERMS": "response image", "TERM_WEIGHTS": "response=1.0 image=2.0", "TRAIN_VISION_TOWER": "false",
        "IMAGE_ASPECT_RATIO": "pad", "MAX_GRAD_NORM": "1.0", "VISION_TOWER_LR": "1e-4", "PROJECTOR_LR": "2e-4",
        "SEQUENCE_PACKING": "none",
    }
    args = launched(tmp_path, "mcmdpo.sh", DEEPSPEED_CONFIG="", EXTRA_ARGS="--max_steps 5 --learning_rate 2e-3", **env)
    assert args[:10] == ["--config", "configs/mcmdpo.yaml", *PATHS]
    for variable, value in env.items():
        flag = OVERRIDES[variable]
        assert args[args.index(flag) + 1:args.index(flag) + 1 + len(value.split())] == value.split(), variable
    assert args[-4:] == ["--max_steps", "5", "--learning_rate", "2e-3"] and "--deepspeed" not in args
    # The launched command line parses, each value in its argument; EXTRA_ARGS wins.
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    model, _, training = parse_arguments(args)
    assert training.learning_rate == 2e-3 and training.max_steps == 5 and training.num_train_epochs == 3
    assert training.gradient_accumulation_steps == 8 and training.max_length == 512 and not training.bf16
    assert (training.beta, training.negative_image, training.diffusion_step, training.normalizer) == (0.2, "diffusion", 500, 1.5)
    assert training.terms == ["response", "image"] and comparable(training.term_weights) == {"response": 1.0, "image": 2.0}
    assert (training.max_grad_norm, training.vision_tower_lr, training.projector_lr, training.sequence_packing) == (1.0, 1e-4, 2e-4, "none")
    assert model.train_vision_tower is False and model.image_aspect_ratio == "pad"


@pytest.mark.slow
def test_help_still_works():
    result = subprocess.run([sys.executable, "-m", "mcmdpo.train", "--help"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--config PATH" in result.stdout and "--global_batch_size" in result.stdout


def test_terms_alone_narrow_the_recipe(tmp_path, monkeypatch):
    """The ablation the original ran with --num_terms: TERMS="response image" alone, the recipe's
    weights of the terms left off unused and its normaliser kept (2.8, as the original)."""
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    args = launched(tmp_path, "mcmdpo.sh", DEEPSPEED_CONFIG="", TERMS="response image")
    _, _, training = parse_arguments([*args, "--use_cpu", "true"])
    assert training.layout.term_names == ("response", "image")
    assert training.layout.weights == (1.0, 0.5) and training.layout.normalizer == 2.8


def test_the_old_num_terms_variable_is_an_error_not_ignored(tmp_path):
    result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "mcmdpo.sh")], env={**os.environ, "NUM_TERMS": "2"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "NUM_TERMS is gone" in result.stderr and "TERMS=" in result.stderr


def test_an_accumulation_given_by_hand_replaces_the_recipes_global_batch(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    recipe = str(REPO_ROOT / "configs" / "mcmdpo.yaml")
    _, _, training = parse_arguments(["--config", recipe, "--gradient_accumulation_steps", "4", "--bf16", "false", *required(tmp_path)])
    assert training.gradient_accumulation_steps == 4 and training.global_batch_size is None
    _, _, training = parse_arguments(["--config", recipe, "--gradient_accumulation_steps=1", "--bf16", "false", *required(tmp_path)])
    assert training.gradient_accumulation_steps == 1
