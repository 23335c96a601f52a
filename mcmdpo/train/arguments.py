"""Arguments of a training run, as dataclasses read by ``transformers.HfArgumentParser``.

Each default is written once: the method's where the method's code keeps it (the term registry,
the negatives' configuration, the sequence length), the others here; the recipes under
``configs/`` hold only what the paper's recipe changes (a test checks that none restates a
default). A flag that does nothing in a run is an error: a field's ``stages`` metadata names the
stages that read it, its ``requires`` metadata the switch it needs, and :func:`check_flags` refuses
any such flag given a value other than its default, across all three dataclasses."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from transformers import TrainingArguments

from mcmdpo.data.conversation import DEFAULT_MAX_LENGTH
from mcmdpo.data.negatives import NEGATIVE_IMAGE_TYPES, NegativeConfig
from mcmdpo.data.templates import CONVERSATION_TEMPLATES
from mcmdpo.model.loading import IMAGE_ASPECT_RATIOS
from mcmdpo.preference.layout import DPO_LAYOUT, MCMDPO_LAYOUT, TERMS, PreferenceLayout, build_layout, parse_weights
from mcmdpo.preference.objectives import DEFAULT_OBJECTIVE, OBJECTIVES, PARAMETER_NAMES, PRESETS, ObjectiveParameters, ObjectiveSum, parse_objective
from mcmdpo.preference.packing import SEQUENCE_PACKINGS
from mcmdpo.train.console import available_workers
from mcmdpo.train.data_cache import DEFAULT_DATA_CACHE_DIR
from mcmdpo.train.reference_cache import DEFAULT_CACHE_DIR
from mcmdpo.train.resume import resolve_resume
from mcmdpo.train.sft_loss import SFT_LOSS_REDUCTIONS

STAGES = ("sft", "dpo", "mcmdpo")
PREFERENCE_STAGES = ("dpo", "mcmdpo")
# What --terms and --normalizer default to in each preference stage: DPO is MCM-DPO's response term alone.
STAGE_LAYOUTS = {"dpo": DPO_LAYOUT, "mcmdpo": MCMDPO_LAYOUT}
NEGATIVES = NegativeConfig()  # the negatives' defaults
OBJECTIVE_PARAMETERS = ObjectiveParameters()  # the objectives' defaults
# Flags renamed: the old name is an error that names the new one.
RENAMED_FLAGS = {"preference_step": "sequence_packing (tree, the default, or none; packed was tree, plain none)"}


class FlagMetadata(dict):
    """A field's metadata with what the flag needs to mean something: ``stages`` (the stages that
    read it) and ``requires`` (the switch it needs). ``HfArgumentParser`` hands a field's metadata
    to ``argparse.add_argument`` as keywords (``dict(field.metadata)``), so these two keys are
    left out of what iterating the metadata shows; ``metadata.get`` reads them."""

    DECLARATIONS = ("stages", "requires")

    def keys(self):  # type: ignore[override]
        return [key for key in super().keys() if key not in self.DECLARATIONS]

    def __iter__(self):
        return iter(self.keys())


def preference_only(**kwargs) -> FlagMetadata:
    """Metadata of a flag only the preference stages read."""
    return FlagMetadata(kwargs, stages=PREFERENCE_STAGES)


def lora_only(**kwargs) -> FlagMetadata:
    """Metadata of a flag only read with --use_lora."""
    return FlagMetadata(kwargs, requires="use_lora")


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
        default=None, metadata=preference_only(help="DPO/MCM-DPO reference checkpoint (default: the starting checkpoint)")
    )
    use_lora: bool = field(default=False, metadata={"help": "train LoRA adapters on the language model instead of its weights"})
    lora_r: int = field(default=64, metadata=lora_only(help="LoRA rank"))
    lora_alpha: int = field(default=16, metadata=lora_only(help="LoRA alpha (scale = alpha / r)"))
    lora_dropout: float = field(default=0.05, metadata=lora_only(help="LoRA dropout"))
    lora_target_modules: list[str] | None = field(
        default=None, metadata=lora_only(help="module names or one regex (default: the language model's attention and MLP projections)")
    )
    merge_lora: bool = field(default=False, metadata=lora_only(help="save the merged model instead of the adapters"))

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


@dataclass
class DataArguments:
    data_path: str = field(metadata={"help": "training file: JSON array, JSON Lines or parquet"})
    image_folder: str | None = field(default=None, metadata={"help": "folder that image paths are relative to"})


# Flags that only mean something with a negative image (which a preference layout may not score).
NEGATIVE_IMAGE_ONLY = ("negative_image", "diffusion_step", "fixed_negatives")


@dataclass
class AltTextTrainingArguments(TrainingArguments):
    stage: str = field(default="sft", metadata={"help": f"training stage, one of {STAGES}"})
    max_length: int = field(
        default=DEFAULT_MAX_LENGTH,
        metadata={"help": "longest sequence in tokens (image tokens included); longer ones are cut from the end"},
    )
    plot: bool = field(default=True, metadata={"help": "draw the training curves to OUTPUT_DIR/training_curves.png"})
    data_cache_dir: str = field(
        default=str(DEFAULT_DATA_CACHE_DIR),
        metadata={"help": "where the data checks' results are kept (keyed by the data file's sha256 and every image's size and "
                          "mtime, the lengths also by the processor and length settings), so a restart skips them; "
                          "none: check everything again and keep nothing"},
    )
    # Image tensors are extra columns the model signature check would drop.
    remove_unused_columns: bool = field(default=False)
    dataloader_num_workers: int = field(
        default_factory=available_workers,
        metadata={"help": "DataLoader workers per process (default: the machine's cores shared among its processes, "
                          "one left for the process, at most 4)"},
    )
    # Replicas log errors only: the first process shows each warning once.
    log_level_replica: str = field(default="error", metadata={"help": "logging level on processes other than the first"})
    # The original clips no gradient (its zero3.json sets no gradient_clipping).
    max_grad_norm: float = field(default=0.0, metadata={"help": "gradient clipping norm; 0 (the original's) clips nothing"})
    vision_tower_lr: float | None = field(default=None, metadata={"help": "learning rate of the vision tower (default: --learning_rate)"})
    projector_lr: float | None = field(default=None, metadata={"help": "learning rate of the projector (default: --learning_rate)"})

    sft_loss_reduction: str = field(
        default=SFT_LOSS_REDUCTIONS[0],
        metadata=FlagMetadata(
            help="how SFT weighs answer tokens: token (transformers': every answer token of the global batch alike, long answers "
                 "weigh more) or example (the original's: each example's token mean, then every example alike)",
            stages=("sft",)),
    )
    beta: float = field(default=0.1, metadata=preference_only(help="DPO / MCM-DPO temperature"))
    logps_reduction: str = field(default="sum", metadata=preference_only(help="sequence log-prob over answer tokens: sum or mean"))
    precompute_reference_logps: bool = field(
        default=True, metadata=preference_only(help="compute reference log-probs once before training and cache them on disk")
    )
    reference_cache_dir: str = field(default=str(DEFAULT_CACHE_DIR), metadata=preference_only(help="where cached reference log-probs live"))

    terms: list[str] | None = field(
        default=None,
        metadata=preference_only(help=f"preference terms switched on, by name, in this order: {', '.join(TERMS)} "
                                      "(default: all seven for mcmdpo, response for dpo)"),
    )
    term_weights: list[str] | None = field(
        default=None,
        metadata=preference_only(help="NAME=WEIGHT per term to reweight (default: the paper's "
                                      + " ".join(f"{t.name}={t.weight:g}" for t in TERMS.values()) + ")"),
    )
    normalizer: float | None = field(
        default=None,
        metadata=preference_only(help=f"term weights are divided by this (default: {MCMDPO_LAYOUT.normalizer:g}, the sum of the "
                                      "seven default weights as the original, also with fewer terms on; 1 for dpo)"),
    )
    negative_image: str = field(
        default=NEGATIVES.image_type, metadata=preference_only(help=f"negative image: one of {NEGATIVE_IMAGE_TYPES}")
    )
    diffusion_step: int = field(
        default=NEGATIVES.diffusion_step,
        metadata=preference_only(help="forward-diffusion step (of 1000) of the 'diffusion' negative image"),
    )
    negative_seed: int = field(default=NEGATIVES.seed, metadata=preference_only(help="seeds every record's negative context and image"))
    fixed_negatives: bool = field(
        default=NEGATIVES.fixed,
        metadata=preference_only(help="draw each record's random negative image (diffusion noise, rotation, crop) once for the whole "
                                      "run; by default it is drawn anew every epoch, as the original does (seeded by seed, record "
                                      "and epoch)"),
    )
    sequence_packing: str = field(
        default=SEQUENCE_PACKINGS[0],
        metadata=preference_only(help="tree (exact, fast: each record's sequences per image packed into one prefix-tree row, the "
                                      "image through the language model once per row) or none (every sequence in full, as the "
                                      "original; for comparison and for attention kernels that take no 4-D mask)"),
    )
    objective: str = field(
        default=DEFAULT_OBJECTIVE,
        metadata=preference_only(help=f"how the terms' margins become a loss: one of {', '.join(OBJECTIVES)}, a named sum "
                                      f"({', '.join(PRESETS)}), or a weighted sum such as 'sigmoid:0.8+bco_pair:0.2+sft:1.0' "
                                      "(docs/objectives.md; default: MCM-DPO's and DPO's sigmoid)"),
    )
    label_smoothing: float = field(
        default=OBJECTIVE_PARAMETERS.label_smoothing,
        metadata=preference_only(help="--objective robust: the probability that a preference label is flipped, in [0, 0.5)"),
    )
    exo_epsilon: float = field(
        default=OBJECTIVE_PARAMETERS.exo_epsilon, metadata=preference_only(help="--objective exo_pair: the target's smoothing")
    )
    simpo_gamma: float = field(
        default=OBJECTIVE_PARAMETERS.simpo_gamma, metadata=preference_only(help="--objective simpo: the target reward margin gamma")
    )
    discopop_tau: float = field(
        default=OBJECTIVE_PARAMETERS.discopop_tau, metadata=preference_only(help="--objective discopop: the mixing temperature tau")
    )
    desirable_weight: float = field(
        default=OBJECTIVE_PARAMETERS.desirable_weight, metadata=preference_only(help="--objective kto: weight of desirable alt-text")
    )
    undesirable_weight: float = field(
        default=OBJECTIVE_PARAMETERS.undesirable_weight, metadata=preference_only(help="--objective kto: weight of undesirable alt-text")
    )
    global_batch_size: int | None = field(
        default=None,
        metadata={"help": "examples per optimizer step over all processes of all nodes: sets --gradient_accumulation_steps "
                          "to it / (per-device batch x WORLD_SIZE)"},
    )

    @property
    def layout(self) -> PreferenceLayout:
        """The preference layout of this run (a preference stage)."""
        preset = self.objectives.layout or STAGE_LAYOUTS[self.stage]  # mdpo and kto bring their own
        return build_layout(
            tuple(self.terms) if self.terms else preset.term_names,
            {**dict(zip(preset.term_names, preset.weights)), **parse_weights(self.term_weights or ())},
            preset.normalizer if self.normalizer is None else self.normalizer,
        )

    @property
    def objectives(self) -> ObjectiveSum:
        """The objective of this run (a preference stage), with the parameters it reads."""
        return parse_objective(self.objective, ObjectiveParameters(**{name: getattr(self, name) for name in PARAMETER_NAMES}))

    @property
    def negatives(self) -> NegativeConfig:
        return NegativeConfig(self.negative_image, self.diffusion_step, self.negative_seed, self.fixed_negatives)

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"--stage must be one of {STAGES}, got {self.stage!r}")
        if self.resume_from_checkpoint is not None:  # before any data or model is loaded
            self.resume_from_checkpoint, notices = resolve_resume(self.resume_from_checkpoint, self.output_dir)
            if int(os.environ.get("RANK", "0")) == 0:
                for notice in notices:
                    print(f"note: {notice}", flush=True)
        if self.resume_from_checkpoint is not None:
            checkpoint = Path(self.resume_from_checkpoint)
            if not checkpoint.is_dir():
                raise ValueError(f"--resume_from_checkpoint {checkpoint}: no such folder")
            if not (checkpoint / "trainer_state.json").is_file():
                raise ValueError(f"--resume_from_checkpoint {checkpoint}: not a training checkpoint (no trainer_state.json)")
        unused = unused_flags(self, self.stage)
        if unused:
            raise ValueError(f"--stage {self.stage} does not use {', '.join('--' + n for n in unused)}")
        changed = changed_fields(self)
        if self.logps_reduction not in ("sum", "mean"):
            raise ValueError(f"--logps_reduction must be sum or mean, got {self.logps_reduction!r}")
        if self.sft_loss_reduction not in SFT_LOSS_REDUCTIONS:
            raise ValueError(f"--sft_loss_reduction must be one of {SFT_LOSS_REDUCTIONS}, got {self.sft_loss_reduction!r}")
        if self.sequence_packing not in SEQUENCE_PACKINGS:
            raise ValueError(f"--sequence_packing must be one of {SEQUENCE_PACKINGS}, got {self.sequence_packing!r}")
        if self.stage != "sft":
            unused = self.objectives.unused_flags(changed)  # also a clear error now for a malformed objective
            if unused:
                raise ValueError(f"--objective {self.objective} does not use {', '.join('--' + n for n in unused)}")
            layout = self.layout  # a clear error now for unknown terms or malformed weights
            unused = [name for name in changed if name in NEGATIVE_IMAGE_ONLY and not layout.uses_negative_image]
            if "negative_seed" in changed and not (layout.uses_negative_image or layout.uses_negative_context):
                unused.append("negative_seed")
            if unused:
                raise ValueError(f"no active term (--terms {' '.join(layout.term_names)}) scores that negative, so "
                                 f"{', '.join('--' + n for n in unused)} would do nothing")
            negatives = self.negatives  # validates the negative image settings
            kind = negatives.kind
            unread = [name for name in ("diffusion_step",) if name in changed and name not in kind.parameters]
            unread += ["fixed_negatives"] if "fixed_negatives" in changed and not kind.drawn_at_random else []
            if unread:
                raise ValueError(f"--negative_image {kind.name} does not use {', '.join('--' + n for n in unread)}")
        if self.dataloader_persistent_workers and self.stage != "sft" and self.layout.uses_negative_image and self.negatives.redrawn_each_epoch:
            raise ValueError("negatives are drawn anew each epoch, which persistent data-loader workers would not see: "
                             "drop --dataloader_persistent_workers or add --fixed_negatives true")
        if self.tf32 is None:
            from transformers.utils import is_torch_tf32_available

            # The original trains with --tf32 True; on a GPU without TF32 (and on a CPU) it stays off.
            self.tf32 = True if is_torch_tf32_available() else None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not (self.use_cpu or self.deepspeed) and not cuda_available():
            # Without it the Trainer sets up no process group on a machine without a GPU, and each
            # process launched by torchrun would train on its share of the data alone.
            self.use_cpu = True
        if self.global_batch_size is not None:
            steps = accumulation_steps(self.global_batch_size, self.per_device_train_batch_size)
            if self.gradient_accumulation_steps not in (1, steps):
                raise ValueError(f"--gradient_accumulation_steps {self.gradient_accumulation_steps} contradicts --global_batch_size "
                                 f"{self.global_batch_size} (which needs {steps}): give one of them")
            self.gradient_accumulation_steps = steps
        if (self.vision_tower_lr is not None or self.projector_lr is not None) and self.deepspeed:
            config = self.deepspeed if isinstance(self.deepspeed, dict) else json.loads(Path(self.deepspeed).read_text())
            if "optimizer" in config:
                raise ValueError("--vision_tower_lr / --projector_lr need the Trainer's optimizer: the DeepSpeed config "
                                 f"{self.deepspeed} defines its own, which would ignore them")
        super().__post_init__()


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def field_default(spec: dataclasses.Field) -> object:
    return spec.default if spec.default_factory is dataclasses.MISSING else spec.default_factory()


def changed_fields(arguments: object) -> list[str]:
    """The fields of a dataclass instance given a value other than their default."""
    return [spec.name for spec in dataclasses.fields(arguments) if spec.init and getattr(arguments, spec.name) != field_default(spec)]


def unused_flags(arguments: object, stage: str) -> list[str]:
    """The changed fields whose ``stages`` metadata leaves ``stage`` out."""
    stages = {spec.name: spec.metadata.get("stages") for spec in dataclasses.fields(arguments)}
    return [name for name in changed_fields(arguments) if stages[name] is not None and stage not in stages[name]]


def check_flags(model_args: ModelArguments, data_args: DataArguments, training_args: AltTextTrainingArguments) -> None:
    """Refuse, before anything loads, a flag that would do nothing in this run: one whose stage is
    another (each dataclass's own ``__post_init__`` checks its own; this one sees all three), one
    whose switch is off (``requires``), and the combinations where a setting is overridden."""
    stage = training_args.stage
    unused = [*unused_flags(model_args, stage), *unused_flags(data_args, stage)]
    if unused:
        raise ValueError(f"--stage {stage} does not use {', '.join('--' + n for n in unused)}")
    for arguments in (model_args, data_args, training_args):
        requires = {spec.name: spec.metadata.get("requires") for spec in dataclasses.fields(arguments)}
        off = [name for name in changed_fields(arguments) if requires[name] and not getattr(model_args, requires[name])]
        if off:
            raise ValueError(f"{', '.join('--' + n for n in off)} would do nothing without --use_lora true")
    if model_args.use_lora and not model_args.train_language_model:
        raise ValueError("--use_lora trains adapters on the language model and freezes its weights either way, so "
                         "--train_language_model false would do nothing: drop it")
    if model_args.ref_model_name_or_path and stage != "sft" and not training_args.objectives.needs_reference:
        raise ValueError(f"--objective {training_args.objective} needs no reference model, so --ref_model_name_or_path would do nothing")
    if model_args.use_lora and model_args.ref_model_name_or_path and not training_args.precompute_reference_logps:
        raise ValueError("with --use_lora and --precompute_reference_logps false the reference is the policy with its adapters "
                         "switched off, so --ref_model_name_or_path would do nothing: drop it, or cache the reference "
                         "(--precompute_reference_logps true)")


def accumulation_steps(global_batch_size: int, per_device_batch_size: int) -> int:
    """Gradient accumulation that makes ``global_batch_size`` examples per optimizer step over
    every process the launcher started (WORLD_SIZE: all nodes' processes)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    per_step = per_device_batch_size * world_size
    if global_batch_size % per_step:
        raise ValueError(f"--global_batch_size {global_batch_size} is not a multiple of per-device batch x processes = "
                         f"{per_device_batch_size} x {world_size}")
    return global_batch_size // per_step
