"""Preference data from a user's own alt-text, in five stages: collect, correct, sample, rank,
pair (``python -m mcmdpo.build``; :mod:`mcmdpo.build.cli`).

From Python, :func:`build` runs the stages an options object asks for and returns the report; each
stage is also a function of the options alone (``run_collect``, ``run_correct``, ``run_sample``,
``run_rank``, ``run_pair``), reading the previous stage's file in ``options.output_dir``."""

from importlib import import_module
from typing import Any

# Where each public name lives. Imported on first use, so that importing one light module of the
# package (the annotation schema, which the web app's annotation page reads) does not load torch.
_HOMES = {
    "run_collect": "collect", "run_correct": "correct", "RANKERS": "options", "STAGES": "options", "BuildOptions": "options",
    "OptionsError": "options", "check_options": "options", "pairs_path": "pairs_file", "run_pair": "pairs_file",
    "build": "pipeline", "check_inputs": "pipeline", "run_rank": "rank", "read_report": "report", "run_sample": "sample",
    "BuildError": "stage_files",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"mcmdpo.build.{_HOMES[name]}"), name)


__all__ = [
    "RANKERS",
    "STAGES",
    "BuildError",
    "BuildOptions",
    "OptionsError",
    "build",
    "check_inputs",
    "check_options",
    "pairs_path",
    "read_report",
    "run_collect",
    "run_correct",
    "run_pair",
    "run_rank",
    "run_sample",
]
