"""Benchmark: batched inference against one record at a time, and our scoring against calling
pycocoevalcap directly, each measured side by side in one run.

    python benchmarks/bench_inference_scoring.py [--json OUT] [--records 48] [--score_records 1000]

Inference: a tiny random LLaVA (the test factory's, or ``--model_name``) on synthetic test records,
the same decoding settings both ways (upstream: 3 beams; here ``--max_new_tokens`` 32 by default),
after one warm-up batch; reports samples/s of batch size 1 and 8 and their ratio (goal >= 3).

Scoring: ``--score_records`` synthetic predictions scored by ``get_score.py``'s code path (reading
the file, PTB tokenisation, BLEU/METEOR/ROUGE-L/CIDEr, per-record file) and by pycocoevalcap
called directly on the same records; median of ``--repeats`` alternating runs; reports the ratio
ours / direct (goal <= 1.5).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import report


def bench_inference(args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    from mcmdpo.data.loading import load_examples
    from mcmdpo.data.synthetic import write_dataset
    from mcmdpo.eval.generation import GenerationSettings, generate_responses
    from mcmdpo.model.loading import load_family, load_model, load_processor
    from mcmdpo.tiny import write_tiny_checkpoint

    data = write_dataset(workdir / "data", num_sft=1, num_pref_train=2, num_pref_test=2, num_test=args.records)
    model_path = args.model_name or str(write_tiny_checkpoint(workdir / "tiny"))
    processor = load_processor(model_path, padding_side="left")
    model = load_model(model_path).eval()
    inputs = load_family(model_path).inputs
    examples = load_examples(data / "test.jsonl", "test", data / "image", show_progress=False).examples
    settings = GenerationSettings(temperature=0.0, num_beams=args.num_beams, max_new_tokens=args.max_new_tokens)

    def run(batch_size: int) -> float:
        list(generate_responses(model, processor, inputs, examples[:batch_size], data / "image", settings, batch_size))  # warm-up
        start = time.perf_counter()
        for _ in generate_responses(model, processor, inputs, examples, data / "image", settings, batch_size):
            pass
        return len(examples) / (time.perf_counter() - start)

    one, batched = run(1), run(args.batch_size)
    return {
        "inference_records": len(examples),
        "num_beams": args.num_beams,
        "max_new_tokens": args.max_new_tokens,
        "samples_per_s_batch_1": one,
        f"samples_per_s_batch_{args.batch_size}": batched,
        "batched_speedup": batched / one,
    }


def bench_scoring(args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    from mcmdpo.data.synthetic import generate_records
    from mcmdpo.eval.alt_text_scores import score_file

    rng = random.Random(0)
    rows = []
    for i, record in enumerate(generate_records("bench", args.score_records, seed=0)):
        words = record.chosen.split()
        rng.shuffle(words) if rng.random() < 0.3 else None
        rows.append({"idx": i, "chosen": record.chosen, "response": " ".join(words[: rng.randint(3, len(words))])})
    path = workdir / "predictions.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))

    def direct() -> None:
        tokenizer = PTBTokenizer()
        gts = tokenizer.tokenize({row["idx"]: [{"caption": row["chosen"]}] for row in rows})
        res = tokenizer.tokenize({row["idx"]: [{"caption": row["response"]}] for row in rows})
        with contextlib.redirect_stdout(io.StringIO()):  # as ours does: BLEU prints its internals
            for scorer in (Bleu(4), Meteor(), Rouge(), Cider()):
                scorer.compute_score(gts, res)

    def ours() -> None:
        score_file(path, "coco")

    times: dict[str, list[float]] = {"ours": [], "direct": []}
    for _ in range(args.repeats):
        for name, fn in (("direct", direct), ("ours", ours)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    ours_s, direct_s = statistics.median(times["ours"]), statistics.median(times["direct"])
    return {"score_records": len(rows), "scoring_s_ours": ours_s, "scoring_s_direct": direct_s, "scoring_ratio": ours_s / direct_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--model_name", default=None, help="checkpoint to time (default: a tiny random LLaVA)")
    parser.add_argument("--records", type=int, default=48)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--num_beams", type=int, default=3)
    parser.add_argument("--max_new_tokens", type=int, default=32)
    parser.add_argument("--score_records", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        results = {"torch_threads": torch.get_num_threads(), **bench_inference(args, Path(tmp)), **bench_scoring(args, Path(tmp))}
    report(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
