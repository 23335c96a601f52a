"""What the image protocol does to the real data, before a long run: the length check of every
sequence MCM-DPO trains on (own and other records' contexts, clean and negative images), under
``pad`` and ``anyres``, with a LLaVA-1.6-Vicuna real-shape checkpoint (real tokenizer and
processor, tiny weights) on the upstream sample files.

    python benchmarks/protocol_lengths.py [--samples ../shared/upstream-samples] [--max_length 2048] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from mcmdpo.data.lengths import check_lengths
from mcmdpo.data.loading import load_examples
from mcmdpo.preference.dataset import NegativeConfig, PreferenceDataset
from mcmdpo.model.loading import load_family, load_processor
from mcmdpo.tiny import TinyModelSpec, write_tiny_checkpoint

FILES = {"twitter": ("twitter/twitter_train.json", "twitter/image/twitter_train"),
         "pinterest": ("pinterest/pinterest_train.json", "pinterest/image/pinterest_train")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", default=str(Path(__file__).resolve().parents[2] / "shared" / "upstream-samples"))
    parser.add_argument("--max_length", type=int, default=2048)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = write_tiny_checkpoint(Path(scratch) / "llava16", TinyModelSpec(like="llava-v1.6-vicuna-7b"))
        for protocol in ("pad", "anyres"):
            processor = load_processor(str(checkpoint), image_aspect_ratio=protocol)
            inputs = load_family(str(checkpoint), protocol).inputs
            for name, (data, images) in FILES.items():
                loaded = load_examples(Path(args.samples) / data, "preference", Path(args.samples) / images, show_progress=False)
                dataset = PreferenceDataset(loaded.examples, processor, Path(args.samples) / images, args.max_length, inputs, NegativeConfig())
                report = check_lengths(dataset, loaded.image_sizes, show_progress=False)
                results[f"{protocol}/{name}"] = {k: v for k, v in report.as_dict().items() if not k.endswith("_idx")}
                print(f"{protocol:7s} {name:10s} {report.summary()}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
