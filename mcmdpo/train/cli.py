"""The one training entry point for every stage.

    python -m mcmdpo.train --stage sft --model_name_or_path CKPT --data_path FILE \\
        --image_folder DIR --output_dir OUT [any transformers.TrainingArguments flag]

or, on several GPUs, ``deepspeed --module mcmdpo.train ... --deepspeed scripts/zero3.json``.
A single ``.json`` or ``.yaml`` argument holding the same keys works too. The data is validated
(every record, every image) before any model is loaded.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from transformers import HfArgumentParser, Trainer, set_seed

from mcmdpo.data.collate import PaddingCollator
from mcmdpo.data.loading import load_examples
from mcmdpo.data.records import DataValidationError, Problem
from mcmdpo.data.sft_dataset import SFTDataset, check_lengths
from mcmdpo.model.freezing import set_trainable_components
from mcmdpo.model.loading import CheckpointError, load_model, load_processor
from mcmdpo.train.arguments import AltTextTrainingArguments, DataArguments, ModelArguments
from mcmdpo.train.plotting import plot_training_curves

logger = logging.getLogger("mcmdpo.train")


def parse_arguments(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, AltTextTrainingArguments]:
    parser = HfArgumentParser((ModelArguments, DataArguments, AltTextTrainingArguments))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(argv[0])
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(argv[0])
    return parser.parse_args_into_dataclasses(args=argv)


def run(model_args: ModelArguments, data_args: DataArguments, training_args: AltTextTrainingArguments) -> Trainer:
    """Validate the data, build the model, train, save an HF-format checkpoint and the curves."""
    main_process = training_args.process_index == 0
    loaded = load_examples(data_args.data_path, "sft", data_args.image_folder, show_progress=main_process)
    processor = load_processor(model_args.model_name_or_path)
    examples, report = check_lengths(loaded, processor, training_args.max_length, show_progress=main_process)
    if main_process:
        logger.info("%s: %s", data_args.data_path, report.summary(training_args.max_length))
        if report.dropped:
            logger.warning("dropped records (idx): %s", report.dropped[:20])
    if not examples:
        raise DataValidationError(
            [Problem(data_args.data_path, f"no record fits in --max_length {training_args.max_length} with its answer")]
        )

    set_seed(training_args.seed)
    model = load_model(model_args.model_name_or_path, model_args.model_dtype, model_args.attn_implementation)
    model.config.use_cache = False
    counts = set_trainable_components(
        model, model_args.train_vision_tower, model_args.train_projector, model_args.train_language_model
    )
    if main_process:
        logger.info("trainable parameters per component: %s", counts)
    if training_args.activation_checkpointing:
        model.enable_input_require_grads()

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=SFTDataset(examples, processor, data_args.image_folder, training_args.max_length),
        data_collator=PaddingCollator(processor.tokenizer.pad_token_id),
        processing_class=processor,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.save_state()
    # save_model writes the processor too (it is the trainer's processing_class).
    if trainer.is_world_process_zero() and training_args.plot:
        plot_training_curves(
            trainer.state.log_history,
            Path(training_args.output_dir) / "training_curves.png",
            title=f"{training_args.stage}: {Path(training_args.output_dir).name}",
        )
    return trainer


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    model_args, data_args, training_args = parse_arguments(argv)
    try:
        run(model_args, data_args, training_args)
    except DataValidationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def main_exit() -> None:
    sys.exit(main())
