"""Build MCM-DPO preference pairs from a user's own alt-text.

    python -m mcmdpo.build --data_path FILE --image_folder DIR --output_dir OUT \\
        --sampler_model SFT_CHECKPOINT [--stages collect correct sample rank pair] [...]

(also installed as ``mcmdpo-build``; under ``torchrun --nproc_per_node N -m mcmdpo.build ...`` the
sample stage is shared out among N processes). Stages: collect (read and clean the alt-text),
correct (grammar and spelling), sample (candidates from your model), rank (score them), pair (write
OUT/pairs.json in the upstream preference format, ready for scripts/dpo.sh and scripts/mcmdpo.sh).
Each stage writes OUT/STAGE.jsonl and its section of OUT/build_report.json; a rerun continues where
the last one stopped, and redoes a stage whose inputs changed. Exits 2 on bad input, before any
long work.
"""

from __future__ import annotations

import argparse
import sys
import typing
from typing import Any

from mcmdpo.build.annotations import AnnotationError
from mcmdpo.build.options import BuildOptions, OptionsError, default_of, option_fields
from mcmdpo.build.pipeline import build
from mcmdpo.build.stage_files import BuildError
from mcmdpo.data.records import DataValidationError
from mcmdpo.eval.openai_client import ChatError
from mcmdpo.model.loading import CheckpointError

PROGRAM = "python -m mcmdpo.build"
ERRORS = (OptionsError, BuildError, DataValidationError, CheckpointError, ChatError, AnnotationError)


def _value_type(annotation: Any) -> Any:
    """The type a flag's text becomes: the one non-None type of ``annotation`` (``float | None``: float)."""
    arguments = [argument for argument in typing.get_args(annotation) if argument is not type(None)]
    return _value_type(arguments[0]) if arguments else annotation


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Each flag's default after its help; the description as written."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__, formatter_class=HelpFormatter)
    hints = typing.get_type_hints(BuildOptions)
    for spec in option_fields():
        kind = _value_type(hints[spec.name])
        flags: dict[str, Any] = {"help": spec.metadata["help"], "default": default_of(spec)}
        if kind is bool:
            flags["action"] = "store_true"
        else:
            flags["type"] = str if kind is list else kind
            if spec.metadata["choices"]:
                flags["choices"] = spec.metadata["choices"]
            if spec.metadata["nargs"]:
                flags["nargs"] = spec.metadata["nargs"]
        if spec.name == "output_dir":
            flags["required"] = True
            flags["default"] = argparse.SUPPRESS
        parser.add_argument(f"--{spec.name}", **flags)
    return parser


def parse_options(argv: list[str] | None = None) -> BuildOptions:
    return BuildOptions(**vars(build_parser().parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    try:
        report = build(options)
    except ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if "pair" in options.stages and "pair" in report:
        print(f"pairs: {options.output_dir}/{report['pair']['pairs_file']}")
    return 0


def main_exit() -> None:
    sys.exit(main())
