"""DPO and MCM-DPO: a thin ``transformers.Trainer`` subclass that scores each record's sequences
under the policy with the sequence packing it is given, takes the reference log-probs from the batch
(precomputed) or from a frozen reference, and applies the loss it is given (a
:class:`~mcmdpo.preference.losses.PreferenceLoss`: DPO and MCM-DPO differ only in its layout)."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections import defaultdict
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm
from transformers import Trainer, TrainerCallback

from mcmdpo.train.resume import CheckpointWeightsMixin
from mcmdpo.preference.losses import PreferenceLoss
from mcmdpo.train.optimizer import ComponentLearningRateMixin
from mcmdpo.train.sampling import LengthGroupingMixin
from mcmdpo.preference.batch import ANSWER_TOKENS, DESIRABLE, INDEX, REFERENCE_LOGPS
from mcmdpo.preference.packing import SequencePacking

logger = logging.getLogger("mcmdpo.train")


def prepare_reference_model(model: nn.Module, trainer: Trainer) -> nn.Module:
    """A frozen, evaluation-mode reference on the trainer's device. Under ZeRO-3 its weights stay
    partitioned across processes, inside an inference-only DeepSpeed engine."""
    model.eval()
    model.requires_grad_(False)
    if trainer.is_deepspeed_enabled:
        import deepspeed

        config = copy.deepcopy(trainer.accelerator.state.deepspeed_plugin.deepspeed_config)
        if config.get("zero_optimization", {}).get("stage") == 3:
            config.pop("optimizer", None)
            config.pop("scheduler", None)
            engine, *_ = deepspeed.initialize(model=model, config=config)
            engine.eval()
            return engine
    return model.to(trainer.accelerator.device)


class PreferenceTrainer(CheckpointWeightsMixin, ComponentLearningRateMixin, LengthGroupingMixin, Trainer):
    """``args`` is an :class:`~mcmdpo.train.arguments.AltTextTrainingArguments`; ``train_dataset``
    a :class:`~mcmdpo.preference.dataset.PreferenceDataset`; ``packing`` scores its
    batches (its collator becomes the data collator) and ``loss`` turns the log-probs into losses.

    The reference is, in order: the batch's ``reference_logps`` (precomputed), ``reference_model``,
    or the policy with its LoRA adapters disabled."""

    def __init__(
        self, *args: Any, loss: PreferenceLoss, packing: SequencePacking, reference_model: nn.Module | None = None, **kwargs: Any
    ):
        super().__init__(*args, data_collator=packing.collator, **kwargs)
        self.loss = loss
        self.packing = packing
        # Our loss is a mean over records: the Trainer must divide it over accumulation steps.
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = False
        self.reference_model = prepare_reference_model(reference_model, self) if reference_model is not None else None
        self._stored_metrics: dict[str, list[float]] = defaultdict(list)

    @property
    def num_sequences(self) -> int:
        return len(self.loss.layout.triples)

    def _reference_context(self):
        if self.reference_model is not None:
            return nullcontext()
        unwrapped = self.accelerator.unwrap_model(self.model)
        if not hasattr(unwrapped, "disable_adapter"):
            raise RuntimeError("no reference: pass reference_model, precompute reference log-probs, or train with LoRA")
        return unwrapped.disable_adapter()

    def sequence_logps(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """[records, sequences] log-probs (columns: the layout's triples)."""
        return self.packing.logps(model, batch, self.args.logps_reduction == "mean")

    @torch.no_grad()
    def reference_logps(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with self._reference_context():
            return self.sequence_logps(self.reference_model if self.reference_model is not None else self.model, batch)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        policy = self.sequence_logps(model, inputs)
        reference = None  # a reference-free objective (SimPO, ORPO) runs no reference
        if REFERENCE_LOGPS in inputs:
            reference = inputs[REFERENCE_LOGPS].to(policy)
            if reference.isnan().any():  # the reference pass scored only the records it foresaw this run drawing
                unscored = inputs[INDEX][reference.isnan().any(dim=-1).cpu()].tolist()
                raise RuntimeError(f"records at positions {unscored} of the training data have no reference log-probs: the "
                                   "reference pass did not foresee that this run draws them")
        elif self.loss.needs_reference:
            reference = self.reference_logps(inputs).to(policy)
        losses, metrics = self.loss(policy, reference, inputs[ANSWER_TOKENS], inputs.get(DESIRABLE))
        for name, values in metrics.items():
            self._stored_metrics[name].append(self.accelerator.gather_for_metrics(values.detach()).float().mean().item())
        loss = losses.mean()
        return (loss, {"policy_logps": policy.detach()}) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        for name, values in self._stored_metrics.items():
            logs[name] = sum(values) / len(values)
        self._stored_metrics.clear()
        super().log(logs, start_time)

    @torch.no_grad()
    def compute_reference_logps(self, dataset: Any, logps: torch.Tensor, records: list[list[int]]) -> int:
        """Fill ``logps`` ([epochs, records, sequences]) with the reference log-probs of ``records``
        (per epoch, dataset positions) under each epoch's negatives, spread over all processes and
        gathered on each. Returns how many rows it computed."""
        computed = 0
        todo = sum(map(len, records))
        for epoch, positions in enumerate(records):
            if not positions:
                continue
            dataset.set_negatives_epoch(epoch)
            loader = self.accelerator.prepare(DataLoader(
                Subset(dataset, positions), batch_size=self.args.per_device_train_batch_size, shuffle=False,
                collate_fn=self.data_collator, num_workers=self.args.dataloader_num_workers,
            ))
            description = "reference log-probs" + (f" (epoch {epoch + 1}/{len(records)})" if len(records) > 1 else "")
            started = time.perf_counter()
            for batch in tqdm(loader, desc=description, disable=not self.is_world_process_zero()):
                rows = self.accelerator.gather_for_metrics(self.reference_logps(batch).float()).cpu()
                indices = self.accelerator.gather_for_metrics(batch[INDEX]).cpu()
                logps[epoch, indices] = rows
                if computed == 0 and self.is_world_process_zero():
                    per_row = (time.perf_counter() - started) / len(indices)
                    logger.info("reference log-probs: %d rows to compute, about %s (first batch: %.2f s a record)",
                                todo, format_duration(per_row * (todo - len(indices))), per_row)
                computed += len(indices)
        dataset.set_negatives_epoch(0)
        return computed


def format_duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


class NegativesEpochCallback(TrainerCallback):
    """Tells the preference dataset which epoch begins, before its loader starts, so each epoch
    draws its own negative images (and reads its own reference log-probs)."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # state.epoch is fractional once training is under way (e.g. 1.37 when resuming mid-epoch).
        self.dataset.set_negatives_epoch(math.floor((state.epoch or 0) + 1e-6))
