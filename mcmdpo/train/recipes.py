"""Recipes: the YAML files under ``configs/`` that hold every default of a run (torchtune's habit).

A recipe is a flat mapping from argument names (of ``ModelArguments``, ``DataArguments`` and
``AltTextTrainingArguments``) to values. :func:`with_recipe` turns the recipe a command line asks
for into flags placed *before* that command line's own, so any flag given wins (argparse keeps
the last occurrence; a list flag such as ``--terms`` is replaced whole)::

    python -m mcmdpo.train --config configs/mcmdpo.yaml --model_name_or_path CKPT ...
    python -m mcmdpo.train configs/mcmdpo.yaml --model_name_or_path CKPT ...   # a leading recipe
    python -m mcmdpo.train --stage dpo --model_name_or_path CKPT ...           # no recipe: the dataclasses' defaults

Without a recipe a run takes the dataclasses' defaults (the method's, and transformers'
TrainingArguments' for the optimisation), which tests and the demo build on; the scripts always
pass their stage's recipe.

As for any flag, the last ``--config`` wins (a script's EXTRA_ARGS can name another recipe).

Values become flag values: a list its items (``--terms response image``), a mapping NAME=VALUE
items (``--term_weights response=1.0 image=0.5``), a boolean ``true``/``false``.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from argparse import SUPPRESS, ArgumentParser
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

import mcmdpo
from mcmdpo.train.arguments import RENAMED_FLAGS

CONFIG_FLAG = "--config"
NO_RECIPE = "none"
RECIPE_SUFFIXES = (".yaml", ".yml")
ACCUMULATION_FLAG = "--gradient_accumulation_steps"
# deepspeed's launcher puts --local_rank=N before the script's own arguments.
_LAUNCHER_ARGUMENT = re.compile(r"--local_rank=\d+$")


class RecipeError(ValueError):
    """A recipe that cannot be found, read or turned into flags (the CLI prints it and exits 2)."""


def configs_dir() -> Path:
    """The shipped recipes: ``configs/`` at the root of the source tree holding ``mcmdpo`` (an
    editable install, as scripts/install.sh makes; a wheel does not carry them)."""
    return Path(mcmdpo.__file__).resolve().parents[1] / "configs"


def add_config_argument(parser: ArgumentParser) -> None:
    """Show ``--config`` in ``--help``; :func:`with_recipe` consumes it before the parser runs."""
    parser.add_argument(
        CONFIG_FLAG, default=SUPPRESS, metavar="PATH",
        help=f"YAML recipe: its values replace the defaults shown here, and the flags given override them "
             f"(the scripts pass configs/<stage>.yaml; {NO_RECIPE}: no recipe)",
    )


def with_recipe(argv: Sequence[str], dataclass_types: Iterable[type]) -> list[str]:
    """``argv`` with the flags of its recipe in front and the recipe's own mention removed."""
    path, rest = find_recipe(argv)
    if path is None:
        return rest
    recipe = read_recipe(path)
    if any(a == ACCUMULATION_FLAG or a.startswith(ACCUMULATION_FLAG + "=") for a in rest):
        # An accumulation given by hand replaces the recipe's global batch, which would set it otherwise.
        recipe.pop("global_batch_size", None)
    return recipe_flags(recipe, path, argument_names(dataclass_types)) + rest


def find_recipe(argv: Sequence[str]) -> tuple[Path | None, list[str]]:
    """The recipe ``argv`` asks for and ``argv`` without that request: the last ``--config PATH``
    (``none``: no recipe; the last wins as for any flag, so a script's EXTRA_ARGS can name
    another), else a leading ``.yaml`` argument, else none. ``--help`` takes no recipe: help
    shows the dataclasses' defaults, whatever the recipes hold."""
    named: list[str] = []
    rest: list[str] = []
    arguments = iter(argv)
    for argument in arguments:
        if argument == CONFIG_FLAG:
            value = next(arguments, None)
            if value is None or value.startswith("-"):
                raise RecipeError(f"{CONFIG_FLAG} needs a recipe path (or {NO_RECIPE})")
            named.append(value)
        elif argument.startswith(CONFIG_FLAG + "="):
            named.append(argument.split("=", 1)[1])
        else:
            rest.append(argument)
    first = 1 if rest and _LAUNCHER_ARGUMENT.match(rest[0]) else 0
    if len(rest) > first and not rest[first].startswith("-") and rest[first].endswith(RECIPE_SUFFIXES):
        named.insert(0, rest.pop(first))
    if {"-h", "--help"} & set(rest) or named[-1:] == [NO_RECIPE]:
        return None, rest
    return (Path(named[-1]) if named else None), rest


def read_recipe(path: Path) -> dict[str, Any]:
    """The recipe's mapping (an empty file is an empty recipe)."""
    if not path.is_file():
        packaged = configs_dir().parent / path
        hint = f" (the packaged one is {packaged})" if not path.is_absolute() and packaged.is_file() else ""
        raise RecipeError(f"recipe {path}: no such file{hint}")
    try:
        recipe = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise RecipeError(f"recipe {path}: not valid YAML: {error}") from None
    if recipe is None:
        return {}
    if not isinstance(recipe, dict):
        raise RecipeError(f"recipe {path}: must be a mapping of flag names to values, got {type(recipe).__name__}")
    return recipe


def argument_names(dataclass_types: Iterable[type]) -> set[str]:
    """Every flag name the parser of these dataclasses takes (without the dashes)."""
    return {f.name for cls in dataclass_types for f in dataclasses.fields(cls) if f.init}


def recipe_flags(recipe: Mapping[str, Any], path: Path, known: set[str]) -> list[str]:
    """The recipe as command-line flags, in its order; a key that is no argument is an error."""
    flags: list[str] = []
    for key, value in recipe.items():
        if key in RENAMED_FLAGS:
            raise RecipeError(f"recipe {path}: {key!r} is now {RENAMED_FLAGS[key]}")
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RecipeError(f"recipe {path}: {key!r} is not an argument of python -m mcmdpo.train{hint}")
        flags += [f"--{key}", *_flag_values(value, path, key)]
    return flags


def _flag_values(value: Any, path: Path, key: str) -> list[str]:
    if isinstance(value, Mapping):
        items = [f"{name}={_scalar(item, path, key)}" for name, item in value.items()]
    elif isinstance(value, list):
        items = [_scalar(item, path, key) for item in value]
    else:
        return [_scalar(value, path, key)]
    if not items:
        raise RecipeError(f"recipe {path}: {key!r} is empty; drop the key to keep the default")
    return items


def _scalar(value: Any, path: Path, key: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    shown = "null" if value is None else type(value).__name__
    raise RecipeError(f"recipe {path}: {key!r} holds {shown}, which no flag takes (drop the key to keep the default)")
