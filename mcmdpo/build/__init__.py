"""Preference data from a user's own alt-text, in five stages: collect, correct, sample, rank,
pair (``python -m mcmdpo.build``; :mod:`mcmdpo.build.cli`).

From Python, :func:`build` runs the stages an options object asks for and returns the report; each
stage is also a function of the options alone (``run_collect``, ``run_correct``, ``run_sample``,
``run_rank``, ``run_pair``), reading the previous stage's file in ``options.output_dir``."""

from mcmdpo.build.collect import run_collect
from mcmdpo.build.correct import run_correct
from mcmdpo.build.options import RANKERS, STAGES, BuildOptions, OptionsError, check_options
from mcmdpo.build.pairs_file import pairs_path, run_pair
from mcmdpo.build.pipeline import build, check_inputs
from mcmdpo.build.rank import run_rank
from mcmdpo.build.report import read_report
from mcmdpo.build.sample import run_sample
from mcmdpo.build.stage_files import BuildError

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
