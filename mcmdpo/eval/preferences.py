"""Held-out preference evaluation: how a model ranks each record's anchor (c_w, m_w, y_w)
against the seven negatives of MCM-DPO, from its own log-probabilities (no reference needed).

    python -m mcmdpo.eval.preferences --model_name CKPT --data_path pref_test.json \\
        --image_folder DIR [--output metrics.json]

For each dimension: margin = mean of log p(anchor) - log p(negative), accuracy = share of records
where the anchor is more likely. ``preference_accuracy`` is the response dimension's accuracy,
``image_margin`` and ``context_margin`` the margins of the image and context dimensions.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mcmdpo.data.conversation import DEFAULT_MAX_LENGTH
from mcmdpo.data.loading import load_examples
from mcmdpo.data.negatives import NEGATIVE_IMAGE_TYPES
from mcmdpo.preference.dataset import NegativeConfig, PreferenceDataset
from mcmdpo.data.records import DataValidationError
from mcmdpo.data.templates import CONVERSATION_TEMPLATES
from mcmdpo.model.loading import IMAGE_ASPECT_RATIOS, CheckpointError, load_checkpoint
from mcmdpo.preference.layout import MCMDPO_LAYOUT, PreferenceLayout
from mcmdpo.preference.packing import SequencePacking, packing_for, sequence_packing

NEGATIVES = NegativeConfig()  # the negatives' defaults, as training's


@torch.no_grad()
def sequence_logps_of(
    model: Any, dataset: PreferenceDataset, packing: SequencePacking, batch_size: int = 8, show_progress: bool = True
) -> torch.Tensor:
    """[records, sequences] log-probs of every record of ``dataset`` under ``model``."""
    model.eval()
    device = next(model.parameters()).device
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=packing.collator)
    chunks = []
    for batch in tqdm(loader, desc="scoring preference sequences", disable=not show_progress):
        batch = {key: value.to(device) for key, value in batch.items()}
        chunks.append(packing.logps(model, batch, False).float().cpu())
    return torch.cat(chunks)


def summarize(logps: torch.Tensor, layout: PreferenceLayout = MCMDPO_LAYOUT) -> dict[str, float]:
    """Per-term margins and accuracies of [records, triples] log-probs."""
    metrics: dict[str, float] = {}
    for term, (positive, negative) in zip(layout.terms, layout.pairs):
        margin = logps[:, positive] - logps[:, negative]
        metrics[f"{term.name}_margin"] = margin.mean().item()
        metrics[f"{term.name}_accuracy"] = (margin > 0).float().mean().item()
    if "response_accuracy" in metrics:
        metrics["preference_accuracy"] = metrics["response_accuracy"]
    metrics["num_records"] = float(len(logps))
    return metrics


def evaluate_preferences(
    model_path: str | Path,
    data_path: str | Path,
    image_folder: str | Path | None,
    negatives: NegativeConfig = NEGATIVES,
    max_length: int = DEFAULT_MAX_LENGTH,
    batch_size: int = 8,
    show_progress: bool = True,
    image_aspect_ratio: str = "auto",
    conversation_template: str = "auto",
) -> dict[str, float]:
    loaded = load_examples(data_path, "preference", image_folder, show_progress=show_progress)
    checkpoint = load_checkpoint(
        model_path, image_aspect_ratio=image_aspect_ratio, conversation_template=conversation_template, dtype=None
    )
    processor, family = checkpoint.processor, checkpoint.family
    dataset = PreferenceDataset(loaded.examples, processor, image_folder, max_length, family.inputs, negatives, MCMDPO_LAYOUT)
    dataset.keep_what_fits(loaded.image_sizes, show_progress=False)
    model = checkpoint.load_model()
    if torch.cuda.is_available():
        model = model.cuda()
    packing_name, notice = packing_for("tree", model.config._attn_implementation)
    if notice and show_progress:
        print(f"note: {notice}", file=sys.stderr)
    packing = sequence_packing(packing_name, processor, MCMDPO_LAYOUT, family)
    return summarize(sequence_logps_of(model, dataset, packing, batch_size, show_progress), MCMDPO_LAYOUT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mcmdpo.eval.preferences", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name", required=True, help="checkpoint to evaluate")
    parser.add_argument("--data_path", required=True, help="preference file (e.g. pref_test.json)")
    parser.add_argument("--image_folder", default=None)
    parser.add_argument("--negative_image", choices=NEGATIVE_IMAGE_TYPES, default=NEGATIVES.image_type)
    parser.add_argument("--diffusion_step", type=int, default=NEGATIVES.diffusion_step)
    parser.add_argument("--negative_seed", type=int, default=NEGATIVES.seed)
    parser.add_argument("--max_length", type=int, default=DEFAULT_MAX_LENGTH)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--image_aspect_ratio", choices=IMAGE_ASPECT_RATIOS, default="auto", help="image protocol (default: what the checkpoint records)")
    parser.add_argument("--conversation_template", choices=CONVERSATION_TEMPLATES, default="auto")
    parser.add_argument("--output", default=None, help="write the metrics as JSON here")
    args = parser.parse_args(argv)
    try:
        negatives = NegativeConfig(args.negative_image, args.diffusion_step, args.negative_seed)
        metrics = evaluate_preferences(
            args.model_name, args.data_path, args.image_folder, negatives, args.max_length, args.batch_size,
            image_aspect_ratio=args.image_aspect_ratio, conversation_template=args.conversation_template,
        )
    except (DataValidationError, CheckpointError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    text = json.dumps(metrics, indent=1)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
