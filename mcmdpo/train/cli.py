"""The one training entry point for every stage.

    python -m mcmdpo.train --stage sft|dpo|mcmdpo --model_name_or_path CKPT --data_path FILE \\
        --image_folder DIR --output_dir OUT [any transformers.TrainingArguments flag]

or, on several GPUs, ``deepspeed --module mcmdpo.train --config configs/mcmdpo.yaml ...
--deepspeed scripts/zero3.json`` (the scripts do this). ``--config`` names a YAML recipe whose
values the flags given override; a single ``.json`` argument is a whole run. The data is
validated (every record, every image) before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import socket
import sys
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

import torch
from transformers import HfArgumentParser, PreTrainedModel, Trainer, TrainerCallback, TrainingArguments, set_seed

from mcmdpo.data.collate import SFTCollator
from mcmdpo.preference.dataset import PreferenceDataset
from mcmdpo.data.records import DataValidationError, Problem
from mcmdpo.data.sft_dataset import SFTDataset
from mcmdpo.model.freezing import set_trainable_components, trainable_parameter_counts
from mcmdpo.model.loading import CheckpointError, LoadedCheckpoint, load_checkpoint
from mcmdpo.model.lora import apply_lora
from mcmdpo.train.console import quiet_other_processes, use_compact_console
from mcmdpo.train.data_checks import DataChecks
from mcmdpo.train.data_fingerprints import length_settings
from mcmdpo.train.preemption import PREEMPTED_EXIT_STATUS, PreemptionCallback
from mcmdpo.train.several_nodes import SharedFolderError, check_shared_folders, lost_another_process
from mcmdpo.train.arguments import RENAMED_FLAGS, AltTextTrainingArguments, DataArguments, ModelArguments, check_flags
from mcmdpo.train.plotting import plot_training_curves
from mcmdpo.train.preference_trainer import NegativesEpochCallback, PreferenceTrainer, prepare_reference_model
from mcmdpo.train.recipes import CONFIG_FLAG, add_config_argument, with_recipe
from mcmdpo.train.drawn_records import drawn_records, merged_epochs
from mcmdpo.train.reference_cache import cache_key, load_cached, missing_rows, save_cached
from mcmdpo.train.sft_trainer import SFTTrainer
from mcmdpo.preference.losses import PreferenceLoss
from mcmdpo.preference.packing import packing_for, sequence_packing

logger = logging.getLogger("mcmdpo.train")


PROGRAM = "mcmdpo-train"  # also python -m mcmdpo.train, and what the scripts' launcher runs


def parse_arguments(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, AltTextTrainingArguments]:
    """The run's arguments: its recipe, if any (``--config PATH`` or a leading ``.yaml``; see
    :mod:`mcmdpo.train.recipes`), overridden by the flags given. A single ``.json`` argument is
    the whole run, no recipe under it."""
    parser = HfArgumentParser(
        (ModelArguments, DataArguments, AltTextTrainingArguments), prog=PROGRAM,
        usage="%(prog)s [--config RECIPE.yaml] --stage sft|dpo|mcmdpo --model_name_or_path CKPT --data_path DATA "
              "--image_folder DIR --output_dir DIR [flags below]",
        description="Train a vision-language model to write alt-text: SFT, DPO or MCM-DPO (see README).",
    )
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        arguments = parser.parse_json_file(argv[0])
    else:
        add_config_argument(parser)
        own_flags_first(parser)
        argv = with_recipe(argv, parser.dataclass_types)
        renamed = [old for old in RENAMED_FLAGS if any(a == f"--{old}" or a.startswith(f"--{old}=") for a in argv)]
        if renamed:
            raise ValueError("; ".join(f"--{old} is now --{RENAMED_FLAGS[old]}" for old in renamed))
        arguments = parser.parse_args_into_dataclasses(args=argv)
    check_flags(*arguments)
    return arguments


def own_flags_first(parser: ArgumentParser) -> None:
    """``--help`` lists this project's flags first, by group (recipe, model, data, training), and
    the ~150 flags it inherits from ``transformers.TrainingArguments`` after them."""
    inherited = {f.name for f in dataclasses.fields(TrainingArguments)}
    own = {
        "recipe": [CONFIG_FLAG.removeprefix("--")],
        "model": [f.name for f in dataclasses.fields(ModelArguments)],
        "data": [f.name for f in dataclasses.fields(DataArguments)],
        "training (mcmdpo)": [f.name for f in dataclasses.fields(AltTextTrainingArguments) if f.name not in inherited],
    }
    groups = {title: parser.add_argument_group(f"{PROGRAM}: {title}") for title in own}
    rest = parser.add_argument_group("inherited from transformers.TrainingArguments")
    ordered: list[Any] = []
    for title, names in own.items():
        for action in [a for a in parser._optionals._group_actions if a.dest in names]:
            parser._optionals._group_actions.remove(action)
            groups[title]._group_actions.append(action)
            ordered.append(action)
    for action in [a for a in parser._optionals._group_actions if a.dest != "help"]:
        parser._optionals._group_actions.remove(action)
        rest._group_actions.append(action)
    help_actions = [a for a in parser._actions if a.dest == "help"]
    parser._actions[:] = help_actions + ordered + [a for a in parser._actions if a not in ordered and a not in help_actions]


def load_training_data(
    data_args: DataArguments, training_args: AltTextTrainingArguments, model_args: ModelArguments
) -> tuple[Any, LoadedCheckpoint]:
    """Validate the data before anything else is loaded; then, with the checkpoint's processor
    under the run's image protocol (its weights not loaded yet), measure every sequence each record trains on and keep the
    records that keep an answer within max_length. The checks run once per job, shared among its
    processes, and are cached in --data_cache_dir (:mod:`mcmdpo.train.data_checks`). The report is
    logged and written to OUTPUT_DIR/data_report.json. Returns (dataset, checkpoint)."""
    main_process = training_args.process_index == 0
    kind = "sft" if training_args.stage == "sft" else "unpaired" if training_args.objectives.unpaired else "preference"
    settings = length_settings(training_args.stage) if kind == "sft" else length_settings(
        training_args.stage, training_args.negatives, training_args.layout)
    checks = DataChecks(data_args.data_path, kind, data_args.image_folder, training_args.data_cache_dir, settings,
                        show_progress=main_process)
    loaded = checks.load_examples()
    if main_process:  # duplicate idx values, image paths leaving --image_folder: train, but say so
        for warning in loaded.warnings[:20]:
            logger.warning("data: %s", warning)
        if len(loaded.warnings) > 20:
            logger.warning("data: ... and %d more warnings (python -m mcmdpo.data.validate %s lists them all)",
                           len(loaded.warnings) - 20, data_args.data_path)
    checkpoint = load_checkpoint(
        model_args.model_name_or_path, image_aspect_ratio=model_args.image_aspect_ratio,
        conversation_template=model_args.conversation_template, dtype=None,
    )
    processor, family = checkpoint.processor, checkpoint.family
    # The dataset over every record plans the sequences; the checks measure them and the dataset
    # keeps the records that fit.
    if kind == "sft":
        dataset: Any = SFTDataset(loaded.examples, processor, data_args.image_folder, training_args.max_length, family.inputs)
    else:
        dataset = PreferenceDataset(
            loaded.examples, processor, data_args.image_folder, training_args.max_length, family.inputs,
            training_args.negatives, training_args.layout,
        )
    report = checks.check_lengths(dataset, loaded.image_sizes, show_progress=main_process)
    dataset.keep_records(report.kept)
    checks.confirm_agreement(loaded, report)
    if main_process:
        logger.info("%s: %s", data_args.data_path, report.summary())
        if report.dropped:
            logger.warning("dropped records (idx): %s", report.dropped[:20])
        path = report.write(Path(training_args.output_dir) / "data_report.json")
        print(f"data report ({checkpoint.protocol} images): {report.summary()} -> {path}", flush=True)
    if not report.kept:
        raise DataValidationError(
            [Problem(data_args.data_path, f"no record fits in --max_length {training_args.max_length} with its answer")]
        )
    return dataset, checkpoint


def build_policy(model_args: ModelArguments, training_args: AltTextTrainingArguments, checkpoint: LoadedCheckpoint) -> PreTrainedModel:
    model = checkpoint.load_model(
        model_args.model_dtype, model_args.attn_implementation, quantization_config(model_args, training_args, checkpoint.family)
    )
    model.config.use_cache = False
    if model_args.bits != 16:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=training_args.activation_checkpointing)
    if model_args.use_lora:
        set_trainable_components(model, False, False, False)
        model = apply_lora(
            model, model_args.lora_r, model_args.lora_alpha, model_args.lora_dropout, model_args.lora_target_modules,
            model_args.train_vision_tower, model_args.train_projector,
        )
    else:
        set_trainable_components(
            model, model_args.train_vision_tower, model_args.train_projector, model_args.train_language_model
        )
    if training_args.process_index == 0:
        logger.info("trainable parameters per component: %s", trainable_parameter_counts(model))
    if training_args.activation_checkpointing:
        model.enable_input_require_grads()
    return model


def quantization_config(model_args: ModelArguments, training_args: AltTextTrainingArguments, family: ModelFamily) -> Any:
    """QLoRA as the original offers it (--bits 4|8): NF4 with double quantisation, computing in the
    training precision; the vision tower, projector and head stay unquantised."""
    if model_args.bits == 16:
        return None
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if training_args.bf16 else torch.float16 if training_args.fp16 else torch.float32
    return BitsAndBytesConfig(
        load_in_4bit=model_args.bits == 4,
        load_in_8bit=model_args.bits == 8,
        bnb_4bit_compute_dtype=compute,
        bnb_4bit_use_double_quant=True,
        bnb_4bit_quant_type="nf4",
        llm_int8_threshold=6.0,
        llm_int8_skip_modules=[*family.vision_encoder, *family.projector, "lm_head"],
    )


def reference_dtype(model_args: ModelArguments, training_args: AltTextTrainingArguments) -> str:
    """The reference runs in the precision the policy trains in (a bf16 run scores the reference
    in bf16 too, which also halves its memory)."""
    return "bfloat16" if training_args.bf16 else "float16" if training_args.fp16 else model_args.model_dtype


def load_reference(model_args: ModelArguments, training_args: AltTextTrainingArguments, protocol: str) -> PreTrainedModel:
    """The frozen reference, under the image protocol the policy resolved (a reference checkpoint
    that records another one would otherwise see other image tensors)."""
    return load_checkpoint(
        model_args.reference_path, image_aspect_ratio=protocol, dtype=reference_dtype(model_args, training_args),
        attn_implementation=model_args.attn_implementation,
    ).model


def attach_reference_logps(
    trainer: PreferenceTrainer, dataset: PreferenceDataset, protocol: str, model_args: ModelArguments,
    data_args: DataArguments, training_args: AltTextTrainingArguments,
) -> None:
    """Reference log-probs for the records this run draws, before it starts: read from the cache,
    and those it lacks computed with the reference model once (spread over all processes) and
    added to it; training then runs no reference forward. A run of a few steps scores the records
    those steps draw, not the whole file; a later, longer run adds only the new ones."""
    key, description = cache_key(
        data_args.data_path, data_args.image_folder, model_args.reference_path, dataset.negatives, dataset.layout,
        training_args.max_length, training_args.logps_reduction, reference_dtype(model_args, training_args),
        [dataset.examples[p].idx for p in dataset.keep], protocol, dataset.processor.chat_template, trainer.packing.name,
    )
    drawn = drawn_records(trainer)
    if not dataset.epochs_differ:  # the same negatives every epoch: one row per record
        drawn = [merged_epochs(drawn)]
    logps = load_cached(training_args.reference_cache_dir, key, (len(drawn), len(dataset), len(dataset.triples)))
    missing = missing_rows(logps, drawn)
    if training_args.world_size > 1:  # every process acts on the first one's reading of the cache
        from accelerate.utils import broadcast_object_list

        logps, missing = broadcast_object_list([logps, missing])
    main_process = trainer.is_world_process_zero()
    if main_process:
        logger.info("reference log-probs: %d of %d records drawn by this run, %d of them cached (%s/%s.pt)",
                    len(merged_epochs(drawn)), len(dataset), sum(map(len, drawn)) - sum(map(len, missing)),
                    training_args.reference_cache_dir, key)
    trainer.reference_rows_computed = 0
    if any(missing):
        reference = load_reference(model_args, training_args, protocol)
        trainer.reference_model = prepare_reference_model(reference, trainer)
        trainer.reference_rows_computed = trainer.compute_reference_logps(dataset, logps, missing)
        if main_process:
            path = save_cached(training_args.reference_cache_dir, key, logps, description)
            logger.info("reference log-probs: %d rows computed and added to %s", trainer.reference_rows_computed, path)
        trainer.reference_model = None  # not needed any more: free its memory before training
        del reference
        gc.collect()
    dataset.reference_logps = logps


def folders_every_node_uses(training_args: AltTextTrainingArguments) -> dict[str, str]:
    """The folders each process reads what another wrote: the checkpoints (every process writes its
    shard of a ZeRO checkpoint and reads it back on resume; not with --save_on_each_node) and the
    reference log-prob cache (written by the first process, read by all)."""
    folders = {}
    if not training_args.save_on_each_node:
        folders["--output_dir"] = training_args.output_dir
    if training_args.stage != "sft" and training_args.precompute_reference_logps and training_args.objectives.needs_reference:
        folders["--reference_cache_dir"] = training_args.reference_cache_dir
    return folders


def run(
    model_args: ModelArguments, data_args: DataArguments, training_args: AltTextTrainingArguments,
    callbacks: list[TrainerCallback] | None = None,
) -> Trainer:
    """Validate the data, build the model, train, save an HF-format checkpoint and the curves.
    ``callbacks`` are handed to the Trainer (the benchmarks time steps with one)."""
    # Set up the (distributed) devices now: ranks must be known before logging, and ZeRO-3 must
    # see the world size before from_pretrained partitions the weights.
    _ = training_args.device
    if training_args.deepspeed:
        import deepspeed

        # On GPUs accelerate has done this already; on DeepSpeed's CPU accelerator it set up plain
        # torch.distributed, which ZeRO-3's partitioned loading does not see until this wraps it.
        deepspeed.init_distributed()
    check_shared_folders(folders_every_node_uses(training_args))
    dataset, checkpoint = load_training_data(data_args, training_args, model_args)
    processor = checkpoint.processor
    set_seed(training_args.seed)
    pad_id = processor.tokenizer.pad_token_id
    if training_args.stage == "sft":
        has_text_only = any(example.image is None for example in dataset.examples)
        blank_image, blank_tokens = dataset.blank_image() if has_text_only else (None, None)
        collator = SFTCollator(pad_id, blank_image=blank_image, blank_tokens=blank_tokens)
        trainer = SFTTrainer(
            model=build_policy(model_args, training_args, checkpoint), args=training_args, train_dataset=dataset,
            data_collator=collator, processing_class=processor, callbacks=callbacks,
        )
    else:
        packing_name, notice = packing_for(training_args.sequence_packing, model_args.attn_implementation)
        if notice and training_args.process_index == 0:
            print(f"note: {notice}", flush=True)
        model = build_policy(model_args, training_args, checkpoint)
        live_reference = None
        needs_reference = training_args.objectives.needs_reference  # SimPO, ORPO: no reference loaded, none cached
        if needs_reference and not training_args.precompute_reference_logps and not model_args.use_lora:
            live_reference = load_reference(model_args, training_args, checkpoint.protocol)
        trainer = PreferenceTrainer(
            model=model, args=training_args, train_dataset=dataset,
            loss=PreferenceLoss(training_args.layout, training_args.beta, training_args.objectives,
                                training_args.logps_reduction == "mean"),
            packing=sequence_packing(packing_name, processor, training_args.layout, checkpoint.family),
            processing_class=processor, reference_model=live_reference,
            callbacks=[NegativesEpochCallback(dataset), *(callbacks or [])],
        )
        if needs_reference and training_args.precompute_reference_logps:
            attach_reference_logps(trainer, dataset, checkpoint.protocol, model_args, data_args, training_args)

    use_compact_console(trainer)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    preempted = any(isinstance(callback, PreemptionCallback) and callback.preempted for callback in callbacks or [])
    if preempted:
        if trainer.is_world_process_zero():
            print(f"preempted: checkpoint-{trainer.state.global_step} saved; RESUME=1 (--resume_from_checkpoint last) "
                  "continues from it", file=sys.stderr, flush=True)
    else:
        save(trainer, model_args, training_args, processor)
    if not preempted and trainer.is_world_process_zero() and training_args.plot:
        plot_training_curves(
            trainer.state.log_history,
            Path(training_args.output_dir) / "training_curves.png",
            title=f"{training_args.stage}: {Path(training_args.output_dir).name}",
        )
    # Leave together: a process exiting while another is still saving can abort the gloo/NCCL group.
    trainer.accelerator.wait_for_everyone()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return trainer


def save(trainer: Trainer, model_args: ModelArguments, training_args: AltTextTrainingArguments, processor: Any) -> None:
    """An HF checkpoint in output_dir: the full model, or LoRA adapters (merged on request). The
    processor is saved with it (save_model writes the trainer's processing_class)."""
    trainer.save_state()
    if model_args.use_lora and model_args.merge_lora:
        if trainer.is_world_process_zero():
            merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
            merged.save_pretrained(training_args.output_dir)
            processor.save_pretrained(training_args.output_dir)
        return
    trainer.save_model(training_args.output_dir)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    quiet_other_processes()
    try:
        model_args, data_args, training_args = parse_arguments(argv)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    preemption = PreemptionCallback()
    try:
        run(model_args, data_args, training_args, callbacks=[preemption])
    except (DataValidationError, CheckpointError, SharedFolderError) as error:
        if isinstance(error, DataValidationError) and int(os.environ.get("RANK", "0")) > 0:
            # Every process found the same problems (the checks are gathered): process 0 lists them.
            print(f"error: {len(error.problems)} problem(s) in the input data (process 0 lists them)", file=sys.stderr)
        else:
            print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        if not lost_another_process(error):
            raise
        rank = os.environ.get("RANK", "0")
        print(f"\nerror: process {rank} on {socket.gethostname()} lost another process of the job ({type(error).__name__}: "
              f"{str(error).splitlines()[0][:300]}). A node or process died or was killed (its own log says why); this "
              "process stops too. RESUME=1 (--resume_from_checkpoint last) continues from the newest complete checkpoint.",
              file=sys.stderr, flush=True)
        return 1
    return PREEMPTED_EXIT_STATUS if preemption.preempted else 0


def main_exit() -> None:
    sys.exit(main())
