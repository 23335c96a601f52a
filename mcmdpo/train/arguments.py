"""Arguments of a training run, as dataclasses read by ``transformers.HfArgumentParser``."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from transformers import TrainingArguments

from mcmdpo.data.negatives import NEGATIVE_IMAGE_TYPES
from mcmdpo.data.templates import CONVERSATION_TEMPLATES
from mcmdpo.model.loading import IMAGE_ASPECT_RATIOS
from mcmdpo.train.losses import DEFAULT_NORMALIZER, DEFAULT_TERM_WEIGHTS, TERM_NAMES
from mcmdpo.train.reference_cache import DEFAULT_CACHE_DIR

STAGES = ("sft", "dpo", "mcmdpo")


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={"help": "HF-format LLaVA-family checkpoint (folder or hub name)"})
    train_vision_tower: bool = field(
        default=True,
        metadata={"help": "train the vision encoder in this stage (upstream: true in both stages, paradigm (d)); "
                          "paradigms (a)-(d) of the README are its value per stage"},
    )
    train_projector: bool = field(default=True, metadata={"help": "train the multimodal projector"})
    train_language_model: bool = field(default=True, metadata={"help": "train the language model (and its head)"})
    model_dtype: str = field(
        default="float32",
        metadata={"help": "dtype the weights are loaded in: float32, bfloat16, float16 or auto; mixed precision is --bf16"},
    )
    attn_implementation: str | None = field(default=None, metadata={"help": "eager, sdpa or flash_attention_2"})
    image_aspect_ratio: str = field(
        default="auto",
        metadata={"help": f"image protocol, one of {IMAGE_ASPECT_RATIOS}: pad (LLaVA's: a square padded with the mean colour, "
                          "one tile, 576 tokens; also for LLaVA-1.6, as the original trains it), anyres (the checkpoint's own "
                          "processor), auto (what the checkpoint records, else pad for LLaVA)"},
    )
    conversation_template: str = field(
        default="auto",
        metadata={"help": f"one of {CONVERSATION_TEMPLATES}: vicuna_v1 (the original's conv_vicuna_v1, system prompt included), "
                          "checkpoint (its own chat template), auto (vicuna_v1 for LLaVA)"},
    )
    bits: int = field(
        default=16,
        metadata={"help": "QLoRA: load the language model in 4 or 8 bits through bitsandbytes (needs --use_lora and a CUDA GPU)"},
    )
    ref_model_name_or_path: str | None = field(
        default=None, metadata={"help": "DPO/MCM-DPO reference checkpoint (default: the starting checkpoint)"}
    )
    use_lora: bool = field(default=False, metadata={"help": "train LoRA adapters on the language model instead of its weights"})
    lora_r: int = field(default=64, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha (scale = alpha / r)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "module names or one regex (default: the language model's attention and MLP projections)"}
    )
    merge_lora: bool = field(default=False, metadata={"help": "save the merged model instead of the adapters"})

    @property
    def reference_path(self) -> str:
        return self.ref_model_name_or_path or self.model_name_or_path

    def __post_init__(self) -> None:
        if self.image_aspect_ratio not in IMAGE_ASPECT_RATIOS:
            raise ValueError(f"--image_aspect_ratio must be one of {IMAGE_ASPECT_RATIOS}, got {self.image_aspect_ratio!r}")
        if self.conversation_template not in CONVERSATION_TEMPLATES:
            raise ValueError(f"--conversation_template must be one of {CONVERSATION_TEMPLATES}, got {self.conversation_template!r}")
        if self.bits not in (4, 8, 16):
            raise ValueError(f"--bits must be 4, 8 or 16, got {self.bits}")
        if self.bits != 16:
            if not self.use_lora:
                raise ValueError("--bits 4|8 (QLoRA) trains LoRA adapters on the quantised model: add --use_lora true")
            import importlib.util

            import torch

            if not torch.cuda.is_available():
                raise ValueError("--bits 4|8 (QLoRA) needs a CUDA GPU: bitsandbytes' 4- and 8-bit layers do not train on this machine's CPU")
            if importlib.util.find_spec("bitsandbytes") is None:
                raise ValueError("--bits 4|8 (QLoRA) needs bitsandbytes: pip install -e '.[qlora]'")
        if self.merge_lora and not self.use_lora:
            raise ValueError("--merge_lora needs --use_lora")


@dataclass
class DataArguments:
    data_path: str = field(metadata={"help": "training file: JSON array, JSON Lines or parquet"})
    image_folder: str | None = field(default=None, metadata={"help": "folder that image paths are relative to"})


# Flags that only mean something in some stages: setting them elsewhere is an error, not a no-op.
PREFERENCE_ONLY = ("beta", "logps_reduction", "precompute_reference_logps", "reference_cache_dir", "shared_prefix")
MCMDPO_ONLY = ("term_weights", "normalizer", "num_terms", "negative_image", "diffusion_step", "negative_seed", "fixed_negatives")


@dataclass
class AltTextTrainingArguments(TrainingArguments):
    stage: str = field(default="sft", metadata={"help": f"training stage, one of {STAGES}"})
    max_length: int = field(
        default=2048, metadata={"help": "longest sequence in tokens (image tokens included); longer ones are cut from the end"}
    )
    plot: bool = field(default=True, metadata={"help": "draw the training curves to OUTPUT_DIR/training_curves.png"})
    # Image tensors are extra columns the model signature check would drop.
    remove_unused_columns: bool = field(default=False)
    # The original clips no gradient (its zero3.json sets no gradient_clipping).
    max_grad_norm: float = field(default=0.0, metadata={"help": "gradient clipping norm; 0 (the original's) clips nothing"})
    vision_tower_lr: float | None = field(default=None, metadata={"help": "learning rate of the vision tower (default: --learning_rate)"})
    projector_lr: float | None = field(default=None, metadata={"help": "learning rate of the projector (default: --learning_rate)"})

    beta: float = field(default=0.1, metadata={"help": "DPO / MCM-DPO temperature"})
    logps_reduction: str = field(default="sum", metadata={"help": "sequence log-prob over answer tokens: sum or mean"})
    precompute_reference_logps: bool = field(
        default=True, metadata={"help": "compute reference log-probs once before training and cache them on disk"}
    )
    reference_cache_dir: str = field(default=str(DEFAULT_CACHE_DIR), metadata={"help": "where cached reference log-probs live"})

    term_weights: list[float] = field(
        default_factory=lambda: list(DEFAULT_TERM_WEIGHTS),
        metadata={"help": f"MCM-DPO weights of the seven terms, in the order {', '.join(TERM_NAMES)}"},
    )
    normalizer: float = field(default=DEFAULT_NORMALIZER, metadata={"help": "MCM-DPO weights are divided by this"})
    num_terms: int = field(default=7, metadata={"help": "MCM-DPO terms switched on, cumulatively in the order of --term_weights"})
    negative_image: str = field(default="diffusion", metadata={"help": f"negative image: one of {NEGATIVE_IMAGE_TYPES}"})
    diffusion_step: int = field(default=700, metadata={"help": "forward-diffusion step (of 1000) of the 'diffusion' negative image"})
    negative_seed: int = field(default=0, metadata={"help": "seeds every record's negative context and image"})
    fixed_negatives: bool = field(
        default=False,
        metadata={"help": "draw each record's random negative image (diffusion noise, rotation, crop) once for the whole run; "
                          "by default it is drawn anew every epoch, as the original does (seeded by seed, record and epoch)"},
    )
    shared_prefix: bool = field(
        default=False,
        metadata={"help": "exact, cheaper DPO/MCM-DPO step: each record's distinct images encoded once, its distinct prompts "
                          "run once, both responses continue from the cached prompt (needs --activation_checkpointing false)"},
    )

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"--stage must be one of {STAGES}, got {self.stage!r}")
        defaults = {f.name: f.default if f.default_factory is dataclasses.MISSING else f.default_factory() for f in dataclasses.fields(self)}
        unused = [name for name in PREFERENCE_ONLY + MCMDPO_ONLY if self.stage == "sft" and getattr(self, name) != defaults[name]]
        unused += [name for name in MCMDPO_ONLY if self.stage == "dpo" and getattr(self, name) != defaults[name]]
        if unused:
            raise ValueError(f"--stage {self.stage} does not use {', '.join('--' + n for n in unused)}")
        if self.logps_reduction not in ("sum", "mean"):
            raise ValueError(f"--logps_reduction must be sum or mean, got {self.logps_reduction!r}")
        if len(self.term_weights) != len(TERM_NAMES):
            raise ValueError(f"--term_weights needs {len(TERM_NAMES)} values ({', '.join(TERM_NAMES)}), got {len(self.term_weights)}")
        if not 1 <= self.num_terms <= len(TERM_NAMES):
            raise ValueError(f"--num_terms must be in 1..{len(TERM_NAMES)}, got {self.num_terms}")
        if self.shared_prefix and self.activation_checkpointing:
            raise ValueError("--shared_prefix needs the prompt's key/value cache: add --activation_checkpointing false")
        if self.dataloader_persistent_workers and not self.fixed_negatives and self.stage == "mcmdpo":
            raise ValueError("negatives are drawn anew each epoch, which persistent data-loader workers would not see: "
                             "drop --dataloader_persistent_workers or add --fixed_negatives true")
        if self.negative_image not in NEGATIVE_IMAGE_TYPES:
            raise ValueError(f"--negative_image must be one of {NEGATIVE_IMAGE_TYPES}, got {self.negative_image!r}")
        if (self.vision_tower_lr is not None or self.projector_lr is not None) and self.deepspeed:
            config = self.deepspeed if isinstance(self.deepspeed, dict) else json.loads(Path(self.deepspeed).read_text())
            if "optimizer" in config:
                raise ValueError("--vision_tower_lr / --projector_lr need the Trainer's optimizer: the DeepSpeed config "
                                 f"{self.deepspeed} defines its own, which would ignore them")
        super().__post_init__()
