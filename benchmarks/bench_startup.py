"""Benchmark: a training job's start-up data checks, every process checking everything itself
(before) against the checks shared among the processes (after) and read from the cache (a
restart), with 1 and 2 processes, measured side by side in one run.

    python benchmarks/bench_startup.py [--json OUT] [--records 20000] [--image_size 64] [--repeats 1]

What is timed is the data-check phase of training alone, not the model load or the first step: on
every process from a barrier after the process group is up to the dataset being ready, the
slowest process counting (training starts when every process is there). It covers parsing the
file, decoding every image, loading the processor and measuring every record's sequences:
- ``before``: what every process ran before the checks were shared, called directly here
  (``load_examples`` and ``check_lengths``: the whole file, every image, every record);
- ``after``: the training entry's ``load_training_data``, each process its share, into an empty
  cache (``--data_cache_dir`` a fresh folder, so the cache write is counted);
- ``cached``: ``load_training_data`` again on the cache the ``after`` run filled.
Processes are started with ``torch.multiprocessing`` and set up by the Trainer's own arguments
(``training_args.device``: gloo on a CPU), as under a launcher. The data: ``--records`` synthetic
SFT records, each with its own ``--image_size`` PNG (``mcmdpo.data.synthetic``), and the tiny
random LLaVA checkpoint. CPU s is the CPU time of all processes together (threads included): on a
machine with fewer cores than processes x threads, the work each setup costs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as multiprocessing
from common import report

MODES = ("before", "after", "cached")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def checks_per_process(data_args: Any, training_args: Any, model_args: Any) -> Any:
    """The data checks of an SFT run as every process ran them before they were shared: the whole
    file, every image decoded and every record measured, on each process."""
    from mcmdpo.data.lengths import check_lengths
    from mcmdpo.data.loading import load_examples
    from mcmdpo.data.sft_dataset import SFTDataset
    from mcmdpo.model.loading import load_family, load_processor

    loaded = load_examples(data_args.data_path, "sft", data_args.image_folder, show_progress=False)
    processor = load_processor(model_args.model_name_or_path, image_aspect_ratio=model_args.image_aspect_ratio,
                               conversation_template=model_args.conversation_template)
    family = load_family(model_args.model_name_or_path, model_args.image_aspect_ratio)
    dataset = SFTDataset(loaded.examples, processor, data_args.image_folder, training_args.max_length, family.inputs)
    report = check_lengths(dataset, loaded.image_sizes, show_progress=False)
    if training_args.process_index == 0:
        report.write(Path(training_args.output_dir) / "data_report.json")
    dataset.keep_records(report.kept)
    return dataset


def worker(rank: int, processes: int, port: int, mode: str, argv: list[str], result: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(processes), LOCAL_WORLD_SIZE=str(processes),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), TOKENIZERS_PARALLELISM="false", TQDM_DISABLE="1")
    logging.basicConfig(level=logging.WARNING)
    from mcmdpo.train.cli import load_training_data, parse_arguments

    model_args, data_args, training_args = parse_arguments(argv)
    _ = training_args.device  # the process group, as run() sets it up
    together = processes > 1 and torch.distributed.is_initialized()
    if together:
        torch.distributed.barrier()
    wall, cpu = time.perf_counter(), time.process_time()
    (checks_per_process if mode == "before" else load_training_data)(data_args, training_args, model_args)
    mine = (time.perf_counter() - wall, time.process_time() - cpu)
    everyone = [mine]
    if together:
        everyone = [None] * processes
        torch.distributed.all_gather_object(everyone, mine)
        torch.distributed.destroy_process_group()
    if rank == 0:
        Path(result).write_text(json.dumps({"wall_s": max(w for w, _ in everyone), "cpu_s": sum(c for _, c in everyone)}))


def time_phase(mode: str, processes: int, argv: list[str], folder: Path) -> dict[str, float]:
    result = folder / f"{mode}-{processes}-{time.monotonic_ns()}.json"
    multiprocessing.spawn(worker, args=(processes, free_port(), mode, argv, str(result)), nprocs=processes, join=True)
    return json.loads(result.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each setup, alternating; the fastest counts")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workdir", default=None, help="keep the data and checkpoint here (default: a temporary folder)")
    args = parser.parse_args()

    from mcmdpo.data.synthetic import write_dataset
    from mcmdpo.tiny import write_tiny_checkpoint

    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(args.workdir or temporary)
        data = folder / "data"
        started = time.perf_counter()
        if not (data / "sft_train.json").is_file() or len(json.loads((data / "sft_train.json").read_text())) != args.records:
            write_dataset(data, num_sft=args.records, num_pref_train=2, num_pref_test=1, num_test=1, image_size=args.image_size)
        model = folder / "tiny"
        if not (model / "config.json").is_file():
            write_tiny_checkpoint(model)
        print(f"data: {args.records} SFT records, {args.image_size}-pixel images ({time.perf_counter() - started:.0f} s to write)",
              flush=True)
        common = ["--stage", "sft", "--model_name_or_path", str(model), "--data_path", str(data / "sft_train.json"),
                  "--image_folder", str(data / "image"), "--use_cpu", "true", "--report_to", "none", "--dataloader_num_workers", "0"]
        best: dict[tuple[str, int], dict[str, float]] = {}
        for repeat in range(args.repeats):
            for processes in args.processes:
                cache = folder / f"cache-{processes}-{repeat}"
                shutil.rmtree(cache, ignore_errors=True)  # "after" fills it, "cached" reads it
                for mode in MODES:
                    cache_args = ["--data_cache_dir", str(cache)]
                    argv = [*common, "--output_dir", str(folder / f"out-{mode}-{processes}"), *cache_args]
                    timed = time_phase(mode, processes, argv, folder)
                    print(f"{mode:>6}, {processes} process(es): {timed['wall_s']:.1f} s wall, {timed['cpu_s']:.1f} s CPU", flush=True)
                    if (mode, processes) not in best or timed["wall_s"] < best[mode, processes]["wall_s"]:
                        best[mode, processes] = timed
        results: dict[str, Any] = {"records": args.records, "images": args.records, "image_size": args.image_size,
                                   "cores": os.cpu_count(), "repeats": args.repeats}
        rows = [f"data-check phase, {args.records} records and images ({os.cpu_count()} cores) | processes | wall s | CPU s, all "
                "processes | wall: before / this"]
        labels = {"before": "before: every process checks everything", "after": "after: shared, first run",
                  "cached": "after: cached restart"}
        for processes in args.processes:
            before = best["before", processes]["wall_s"]
            for mode in MODES:
                timed = best[mode, processes]
                results[f"{mode}_{processes}p"] = timed
                rows.append(f"{labels[mode]} | {processes} | {timed['wall_s']:.1f} | {timed['cpu_s']:.1f} | {before / timed['wall_s']:.2f}x")
        print("\n".join(rows))
        report(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
