"""The build, stage after stage: :func:`build` checks every option and input first (a bad one
stops it before any long work), then runs the stages asked for in pipeline order, each resuming
or redoing its file as its inputs say, and returns the report. Under torchrun the first process
runs every stage and the others join it for sampling only (:mod:`mcmdpo.build.sharding`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from mcmdpo.build.annotations import read_answers
from mcmdpo.build.collect import STAGE as COLLECT, run_collect
from mcmdpo.build.correct import run_correct
from mcmdpo.build.fingerprints import data_digest
from mcmdpo.build.options import STAGES, BuildOptions, check_options, local_corrector, local_judge, ranks_with, spec_target
from mcmdpo.build.pairs_file import run_pair
from mcmdpo.build.prompts import read_prompt
from mcmdpo.build.rank import run_rank
from mcmdpo.build.report import read_report, summary_line
from mcmdpo.build.sample import run_sample
from mcmdpo.build.sharding import barrier, end_group, process_rank, start_group
from mcmdpo.build.stage_files import BuildError, read_stage
from mcmdpo.model.loading import load_checkpoint

STAGE_RUNNERS: dict[str, Callable[[BuildOptions], dict[str, Any] | None]] = {
    "collect": run_collect,
    "correct": run_correct,
    "sample": run_sample,
    "rank": run_rank,
    "pair": run_pair,
}


def _check_model(flag: str, path: str) -> None:
    """A local model is a folder; a hub name (org/name) must be readable (from the local cache when
    offline)."""
    if Path(path).is_dir():
        return
    if path.startswith((".", "/", "~")) or path.count("/") != 1:
        raise BuildError(f"{flag} {path}: no such folder")
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise BuildError(f"{flag} {path}: no such folder, and no checkpoint of that name can be read ({error})") from None


def check_inputs(options: BuildOptions) -> None:
    """Every input file the stages asked for will read, checked before any of them runs: models
    and their processors, prompts, the annotation database, and the data and image folder against
    collect's file when collect does not run."""
    if COLLECT not in options.stages and (options.data_path or options.image_folder):
        recorded = read_stage(options.output_dir, COLLECT).inputs
        if options.data_path and (str(Path(options.data_path).resolve()) != recorded["data_path"]
                                  or data_digest(options.data_path) != recorded["data_sha256"]):
            raise BuildError(f"--data_path {options.data_path} is not the data {recorded['data_path']} collect.jsonl was built "
                             "from (or it changed since): run the collect stage")
        folder = str(Path(options.image_folder).resolve()) if options.image_folder else None
        if options.image_folder and folder != recorded["image_folder"]:
            raise BuildError(f"--image_folder {options.image_folder} is not the folder collect.jsonl was built with "
                             f"({recorded['image_folder']}): run the collect stage")
    if options.image_folder and not Path(options.image_folder).is_dir():
        raise BuildError(f"--image_folder {options.image_folder}: no such folder")
    if "correct" in options.stages and options.corrector != "none":
        read_prompt("correction", options.correction_prompt)
    if local_corrector(options):
        _check_model("--corrector model:", spec_target(options.corrector))
    if "sample" in options.stages:
        _check_model("--sampler_model", options.sampler_model)
        load_checkpoint(options.sampler_model, image_aspect_ratio=options.image_aspect_ratio,
                        conversation_template=options.conversation_template, dtype=None)
    if ranks_with(options, "clip"):
        _check_model("--clip_model", options.clip_model)
    if ranks_with(options, "judge"):
        read_prompt("judge", options.judge_prompt)
        if local_judge(options):
            _check_model("--judge model:", spec_target(options.judge))
            load_checkpoint(spec_target(options.judge), dtype=None)
    if ranks_with(options, "human"):
        read_answers(options.annotations)


def build(options: BuildOptions, echo: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Run the stages of ``options.stages`` into ``options.output_dir``; the build report (each
    stage's section). ``echo`` gets one summary line per stage (None: silent)."""
    check_options(options)
    Path(options.output_dir).mkdir(parents=True, exist_ok=True)
    check_inputs(options)
    rank, _ = process_rank()
    started = start_group()
    try:
        for stage in STAGES:
            if stage not in options.stages:
                continue
            if stage == "sample":
                barrier()  # the other processes wait for the first to finish the stages before
            elif rank != 0:
                if STAGES.index(stage) > STAGES.index("sample"):
                    break
                continue
            section = STAGE_RUNNERS[stage](options)
            if section is not None and echo is not None:
                echo(summary_line(stage, section))
    finally:
        if started:
            end_group()
    return read_report(options.output_dir)
