"""What training prints: one compact line per logging step on the main process (the full metrics
still go to trainer_state.json, TensorBoard and the plots), and no repeats of third-party warnings
from every other process."""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

from transformers import PrinterCallback, ProgressCallback, Trainer

SUMMARY_KEYS = ("train_runtime", "train_loss")


def compact_line(logs: dict[str, Any], step: int, max_steps: int) -> str | None:
    """``step 3/30 | loss 0.6523 | lr 9.5e-04 | margins response 0.120 image 0.050``: the loss,
    the learning rate and each preference term's margin; the run's summary in one line at the end."""
    if "loss" in logs:
        parts = [f"step {step}/{max_steps}", f"loss {logs['loss']:.4f}"]
        if "learning_rate" in logs:
            parts.append(f"lr {logs['learning_rate']:.2e}")
        margins = [f"{key.removeprefix('margins/')} {value:.3f}" for key, value in logs.items()
                   if key.startswith("margins/") and isinstance(value, (int, float))]
        if margins:
            parts.append("margins " + " ".join(margins))
        return " | ".join(parts)
    if all(key in logs for key in SUMMARY_KEYS):
        return f"done: {step} steps in {logs['train_runtime']:.1f} s, mean loss {logs['train_loss']:.4f}"
    return None


class CompactProgressCallback(ProgressCallback):
    """The progress bar, with :func:`compact_line` written above it instead of the logs dict."""

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if state.is_world_process_zero and self.training_bar is not None:
            line = compact_line(logs or {}, state.global_step, state.max_steps)
            if line:
                self.training_bar.write(line)


class CompactPrinterCallback(PrinterCallback):
    """Without progress bars (``--disable_tqdm``): :func:`compact_line`, printed."""

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            line = compact_line(logs or {}, state.global_step, state.max_steps)
            if line:
                print(line, flush=True)


def use_compact_console(trainer: Trainer) -> None:
    """Swap the Trainer's printing callbacks for the compact ones."""
    for default, compact in ((ProgressCallback, CompactProgressCallback), (PrinterCallback, CompactPrinterCallback)):
        if trainer.pop_callback(default) is not None:
            trainer.add_callback(compact)


def quiet_other_processes() -> None:
    """On every process but the first (``RANK`` > 0 under a launcher), third-party warnings and
    library logging below errors are dropped: the first process shows them once. Everywhere:
    torch's deprecation notice for the collective names DeepSpeed's ZeRO calls at every step
    (nothing a user can act on; under torchrun it repeats at every step)."""
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning)
    if int(os.environ.get("RANK", "0")) == 0:
        return
    warnings.filterwarnings("ignore")
    import transformers

    transformers.logging.set_verbosity_error()
    for name in ("deepspeed", "DeepSpeed", "accelerate", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)


def available_workers() -> int:
    """DataLoader workers per training process: the machine's cores shared among the processes
    on it (``LOCAL_WORLD_SIZE``), one left for the process itself, at most 4 (the upstream recipe)."""
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("LOCAL_SIZE", "1")))
    return max(0, min(4, (os.cpu_count() or 1) // max(1, processes) - 1))
