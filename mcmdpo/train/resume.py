"""Resuming from a checkpoint with the weights it holds.

transformers 5 saves a checkpoint's weights under their original (legacy) names, e.g. LLaVA's
``language_model.model.*``, and ``from_pretrained`` renames them back when it loads; the Trainer's
own resume loads them without the renaming, warns about "missing keys" for every weight and
trains on from the base weights. Here the checkpoint is read as ``from_pretrained`` reads it, and
a weight that does not load is an error naming it. DeepSpeed (its own engine checkpoint) and LoRA
(adapters) resume through the Trainer's paths, which load by the model's own names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME

from mcmdpo.model.loading import CheckpointError

FULL_WEIGHTS = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME, WEIGHTS_INDEX_NAME)


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
    reads them (see the module's docstring)."""

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        from peft import PeftModel

        target = self.model if model is None else model
        full_weights = any((Path(resume_from_checkpoint) / name).is_file() for name in FULL_WEIGHTS)
        if self.is_fsdp_enabled or isinstance(target, PeftModel) or not full_weights:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_checkpoint_weights(target, resume_from_checkpoint)
