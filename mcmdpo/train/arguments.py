"""Arguments of a training run, as dataclasses read by ``transformers.HfArgumentParser``."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

STAGES = ("sft",)


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={"help": "HF-format LLaVA-family checkpoint (folder or hub name)"})
    train_vision_tower: bool = field(
        default=False,
        metadata={"help": "train the vision encoder in this stage; paradigms (a)-(d) of the README are its value per stage"},
    )
    train_projector: bool = field(default=True, metadata={"help": "train the multimodal projector"})
    train_language_model: bool = field(default=True, metadata={"help": "train the language model (and its head)"})
    model_dtype: str = field(
        default="float32",
        metadata={"help": "dtype the weights are loaded in: float32, bfloat16, float16 or auto; mixed precision is --bf16"},
    )
    attn_implementation: str | None = field(default=None, metadata={"help": "eager, sdpa or flash_attention_2"})


@dataclass
class DataArguments:
    data_path: str = field(metadata={"help": "training file: JSON array, JSON Lines or parquet"})
    image_folder: str | None = field(default=None, metadata={"help": "folder that image paths are relative to"})


@dataclass
class AltTextTrainingArguments(TrainingArguments):
    stage: str = field(default="sft", metadata={"help": f"training stage, one of {STAGES}"})
    max_length: int = field(
        default=2048, metadata={"help": "longest sequence in tokens (image tokens included); longer ones are cut from the end"}
    )
    plot: bool = field(default=True, metadata={"help": "draw the training curves to OUTPUT_DIR/training_curves.png"})
    # Image tensors are extra columns the model signature check would drop.
    remove_unused_columns: bool = field(default=False)

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"--stage must be one of {STAGES}, got {self.stage!r}")
        super().__post_init__()
