"""Every private (or undocumented) transformers API the project overrides or calls, named in one
place: what it is, the parameters we rely on, where we use it and why. transformers changes
these without notice; ``tests/test_compat.py`` checks each against the installed version, so an
upgrade that changes one fails that fast test naming it, not a training run hours later.

An override must keep the whole parameter list (transformers calls it with its own arguments);
a call relies on the leading parameters it passes. The code that relies on an API carries
:func:`relies_on` with its entry, so that the list and the code cannot drift apart: the test
checks that every entry's ``where`` is marked with it.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

OVERRIDE, CALL = "override", "call"
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class PrivateAPI:
    """One API: ``name`` on each of ``owners`` (``module:attribute``), and the parameter names we
    rely on (all of them for an override, the leading ones for a call)."""

    owners: tuple[str, ...]
    name: str
    parameters: tuple[str, ...]
    use: str  # OVERRIDE or CALL
    where: str  # ``module:qualified name`` of the code that relies on it
    why: str

    def title(self, owner: str | None = None) -> str:
        """``Trainer._save_checkpoint(self, model, trial)``: the API on ``owner`` (default: the
        first), with the parameters we rely on."""
        module, _, attribute = (owner or self.owners[0]).partition(":")
        named = ".".join(part for part in (attribute or module, self.name) if part)
        return f"{named}({', '.join(self.parameters)})"

    def found(self, owner: str) -> tuple[str, ...] | None:
        """The parameter names the installed transformers gives it on ``owner``; None when gone."""
        module, _, attribute = owner.partition(":")
        try:
            target: Any = importlib.import_module(module)
            for part in [*attribute.split("."), self.name]:
                target = getattr(target, part) if part else target
        except (ImportError, AttributeError):
            return None
        return tuple(inspect.signature(target).parameters)

    def change(self) -> str | None:
        """What the installed transformers changed about it, or None when nothing we rely on."""
        import transformers

        for owner in self.owners:
            found = self.found(owner)
            if found is None:
                now = "gone"
            elif (found == self.parameters) if self.use == OVERRIDE else (found[:len(self.parameters)] == self.parameters):
                continue
            else:
                now = f"({', '.join(found)})"
            return (f"transformers {transformers.__version__} changed {self.title(owner)} → {now}: "
                    f"see mcmdpo/compat.py ({self.use} in {self.where}: {self.why})")
        return None


SAVE_CHECKPOINT = PrivateAPI(
    ("transformers:Trainer",), "_save_checkpoint", ("self", "model", "trial"), OVERRIDE,
    "mcmdpo.train.resume:CheckpointWeightsMixin._save_checkpoint",
    "marks each checkpoint complete once every process has written it, and rotates old ones only then",
)
GET_OUTPUT_DIR = PrivateAPI(
    ("transformers:Trainer",), "_get_output_dir", ("self", "trial"), CALL,
    "mcmdpo.train.resume:CheckpointWeightsMixin._save_checkpoint",
    "the folder the checkpoint just saved lies in, to mark it complete",
)
ROTATE_CHECKPOINTS = PrivateAPI(
    ("transformers.trainer_utils:",), "rotate_checkpoints", ("output_dir", "save_total_limit", "best_model_checkpoint"), CALL,
    "mcmdpo.train.resume:CheckpointWeightsMixin._save_checkpoint",
    "--save_total_limit applied after the new checkpoint is marked complete, not before",
)
LOAD_FROM_CHECKPOINT = PrivateAPI(
    ("transformers:Trainer",), "_load_from_checkpoint", ("self", "resume_from_checkpoint", "model"), OVERRIDE,
    "mcmdpo.train.resume:CheckpointWeightsMixin._load_from_checkpoint",
    "resumes with the weights renamed as from_pretrained renames them (the Trainer's own resume does not)",
)
GET_TRAIN_SAMPLER = PrivateAPI(
    ("transformers:Trainer",), "_get_train_sampler", ("self", "train_dataset"), OVERRIDE,
    "mcmdpo.train.sampling:LengthGroupingMixin._get_train_sampler",
    "groups batches by the dataset's cheap length estimates instead of encoding every item first",
)
LENGTH_GROUPED_SAMPLER = PrivateAPI(
    ("transformers.trainer_pt_utils:LengthGroupedSampler",), "", ("batch_size", "dataset", "lengths"), CALL,
    "mcmdpo.train.sampling:LengthGroupingMixin._get_train_sampler",
    "the Trainer's own length grouping, given the lengths",
)
SET_INITIAL_TRAINING_VALUES = PrivateAPI(
    ("transformers:Trainer",), "set_initial_training_values", ("self", "args", "dataloader"), CALL,
    "mcmdpo.train.drawn_records:drawn_records",
    "the epochs, steps per epoch and steps train() will run, to know which records it draws before it starts",
)
NUM_MULTIMODAL_TOKENS = PrivateAPI(
    tuple(f"transformers:{name}" for name in ("LlavaProcessor", "LlavaNextProcessor", "LlavaOnevisionProcessor",
                                              "Qwen2_5_VLProcessor", "Qwen3VLProcessor", "Gemma3Processor", "Idefics3Processor")),
    "_get_num_multimodal_tokens", ("self", "image_sizes"), CALL,
    "mcmdpo.data.lengths:image_token_count",
    "an image's token count from its size alone, so the length checks encode one image per count "
    "(without it they encode one per size: slower, same result)",
)

PRIVATE_APIS: tuple[PrivateAPI, ...] = (
    SAVE_CHECKPOINT, GET_OUTPUT_DIR, ROTATE_CHECKPOINTS, LOAD_FROM_CHECKPOINT, GET_TRAIN_SAMPLER, LENGTH_GROUPED_SAMPLER,
    SET_INITIAL_TRAINING_VALUES, NUM_MULTIMODAL_TOKENS,
)


def relies_on(*apis: PrivateAPI) -> Callable[[F], F]:
    """Mark a function as relying on ``apis`` (it is returned unchanged, the entries recorded on
    it). An override must carry the overridden API's name."""

    def mark(function: F) -> F:
        for api in apis:
            if api.use == OVERRIDE and function.__name__ != api.name:
                raise TypeError(f"{function.__qualname__} is marked as overriding {api.title()}")
        function.__relies_on__ = (*getattr(function, "__relies_on__", ()), *apis)  # type: ignore[attr-defined]
        return function

    return mark


def changes(apis: tuple[PrivateAPI, ...] = PRIVATE_APIS) -> list[str]:
    """What the installed transformers changed among ``apis``, one message each."""
    return [message for message in (api.change() for api in apis) if message is not None]
