"""Resuming from a checkpoint with the weights it holds, and knowing which checkpoints are whole.

transformers 5 saves a checkpoint's weights under their original (legacy) names, e.g. LLaVA's
``language_model.model.*``, and ``from_pretrained`` renames them back when it loads; the Trainer's
own resume loads them without the renaming, warns about "missing keys" for every weight and
trains on from the base weights. Here the checkpoint is read as ``from_pretrained`` reads it, and
a weight that does not load is an error naming it. DeepSpeed (its own engine checkpoint) and LoRA
(adapters) resume through the Trainer's paths, which load by the model's own names.

A checkpoint counts as complete once every process has finished writing it: only then does the
main process write its :data:`COMPLETE_MARKER`. ``--resume_from_checkpoint last`` takes the newest
complete one in the output folder (:func:`resolve_resume`), so a job killed while saving resumes
from the checkpoint before."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from transformers.trainer_utils import rotate_checkpoints
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME

from mcmdpo.compat import GET_OUTPUT_DIR, LOAD_FROM_CHECKPOINT, ROTATE_CHECKPOINTS, SAVE_CHECKPOINT, relies_on
from mcmdpo.files import write_text_atomically
from mcmdpo.model.loading import CheckpointError

FULL_WEIGHTS = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME, WEIGHTS_INDEX_NAME)
COMPLETE_MARKER = "checkpoint_complete"
LAST = "last"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def checkpoints_newest_first(output_dir: str | Path) -> list[Path]:
    """The ``checkpoint-N`` folders of ``output_dir``, highest step first."""
    folder = Path(output_dir)
    found = [path for path in folder.iterdir() if path.is_dir() and _CHECKPOINT.match(path.name)] if folder.is_dir() else []
    return sorted(found, key=lambda path: int(_CHECKPOINT.match(path.name).group(1)), reverse=True)


def is_complete(checkpoint: Path) -> bool:
    return (checkpoint / COMPLETE_MARKER).is_file()


def resolve_resume(value: str, output_dir: str | Path) -> tuple[str | None, list[str]]:
    """``--resume_from_checkpoint last``: the newest complete checkpoint of ``output_dir`` (None
    when there is no checkpoint at all: the run starts from the beginning), with a notice for each
    newer, incomplete one it passes over. Incomplete checkpoints alone are an error: starting
    again would silently throw their training away."""
    if value != LAST:
        return value, []
    if not output_dir:
        raise ValueError("--resume_from_checkpoint last looks in --output_dir: pass it")
    found = checkpoints_newest_first(output_dir)
    complete = next((path for path in found if is_complete(path)), None)
    if complete is None and found:
        raise ValueError(f"--resume_from_checkpoint last: no complete checkpoint in {output_dir} (incomplete: "
                         f"{', '.join(path.name for path in found)}); name one to resume from it anyway")
    if complete is None:
        return None, [f"--resume_from_checkpoint last: no checkpoint in {output_dir} yet, starting from the beginning"]
    newer = found[: found.index(complete)]  # all incomplete, or complete would be one of them
    notices = [f"{path}: incomplete (no {COMPLETE_MARKER}: its writing was cut short), skipped" for path in newer]
    return str(complete), [*notices, f"resuming from {complete}"]


def checkpoint_weights(model: Any, checkpoint: str | Path) -> dict[str, Any]:
    """The checkpoint's weights under the model's own parameter names, read by ``from_pretrained``
    into a model of the same class and configuration on the CPU (once, at resume). A weight the
    checkpoint lacks (which ``from_pretrained`` would initialise at random), holds in excess or in
    another shape is a :class:`CheckpointError` naming it, never a warning."""
    loaded, info = type(model).from_pretrained(str(checkpoint), config=model.config, dtype=model.dtype, device_map="cpu",
                                               output_loading_info=True)
    problems = [f"{len(keys)} {kind} ({', '.join(map(str, keys[:8]))}{', ...' if len(keys) > 8 else ''})"
                for kind, keys in (("missing", sorted(info.get("missing_keys", ()))),
                                   ("unexpected", sorted(info.get("unexpected_keys", ()))),
                                   ("of another shape", sorted(map(str, info.get("mismatched_keys", ()))))) if keys]
    if problems:
        raise CheckpointError(f"{checkpoint}: the weights do not match the model: " + "; ".join(problems))
    return loaded.state_dict()


def load_checkpoint_weights(model: Any, checkpoint: str | Path) -> None:
    """Load every weight of ``checkpoint`` into ``model``, all of them or an error."""
    result = model.load_state_dict(checkpoint_weights(model, checkpoint), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"{checkpoint}: the weights do not match the model: missing {result.missing_keys[:8]}, "
                              f"unexpected {result.unexpected_keys[:8]}")


class CheckpointWeightsMixin:
    """For a Trainer: ``--resume_from_checkpoint`` loads the full weights as ``from_pretrained``
    reads them, and every checkpoint is marked complete once all processes have written it (see
    the module's docstring)."""

    @relies_on(SAVE_CHECKPOINT, GET_OUTPUT_DIR, ROTATE_CHECKPOINTS)
    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        # Older checkpoints are deleted (--save_total_limit) only once this one is marked complete,
        # never before: a job killed in between still has a complete checkpoint to resume from.
        limit = self.args.save_total_limit
        self.args.save_total_limit = None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        self.accelerator.wait_for_everyone()  # every process's part (DeepSpeed shards) is written
        if self.args.should_save:
            run_dir = self._get_output_dir(trial=trial)
            write_text_atomically(Path(run_dir) / f"checkpoint-{self.state.global_step}" / COMPLETE_MARKER,
                                  f"step {self.state.global_step}\n")
            rotate_checkpoints(output_dir=run_dir, save_total_limit=limit, best_model_checkpoint=self.state.best_model_checkpoint)

    @relies_on(LOAD_FROM_CHECKPOINT)
    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        from peft import PeftModel

        target = self.model if model is None else model
        full_weights = any((Path(resume_from_checkpoint) / name).is_file() for name in FULL_WEIGHTS)
        if self.is_fsdp_enabled or isinstance(target, PeftModel) or not full_weights:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_checkpoint_weights(target, resume_from_checkpoint)
