"""Benchmark: the preference-data builder's sample and rank stages (``python -m mcmdpo.build``),
measured side by side in one run, and what building pairs at scale would cost on GPUs (an
estimate, not a measurement).

    python benchmarks/bench_build.py [--json OUT] [--num_candidates 4 8] [--sample_records 2]
        [--max_new_tokens 32] [--rank_records 50] [--judge_records 1] [--repeats 3] [--gpus 8]

The model and records (``benchmarks/common.py``): the benchmark LLaVA (a 7B LLaVA's FLOP
proportions at hidden size 256 and 4 layers, random weights, float32 on the CPU as the builder
runs it there) and preference records with the real token profile (35-token system prompt,
~100-token posts, ~30-token alt-texts, 1024x768 photos, 576 image tokens under ``pad``), read by
the collect and correct stages as a user's alt-text.

**Sampling**: candidates/s of the builder's own code (``mcmdpo.build.sample.sample_record``: the N
candidates of a record in one ``generate`` call of N rows, seeded by the record) against one
candidate at a time (the same prompt and image generated N times, one call of one row each, from
the same per-record seed), for each N of ``--num_candidates``, at temperature 1 and top-p 0.9 (the
builder's defaults), over ``--sample_records`` records; the median of ``--repeats`` alternating
runs after one warm-up. Every candidate is exactly ``--max_new_tokens`` tokens long (32: the
records' alt-texts are ~30 tokens): the end of text is held back until then (``min_new_tokens`` in
the model's generation config), because a random model ends at random and the two ways would
otherwise do different work.

**Ranking**: records/s of each ranker on the same records, each given ``--rank_candidates`` (4)
candidates (the record's rejected alt-text and other records' alt-texts: real sentences), through
the rank stage's own code (``mcmdpo.build.rank.make_ranker``, then ``score`` in the stage's
chunks), after the model rankers' loading:

- ``reference``: CIDEr-D + ROUGE-L over the pool of ``--rank_records`` records (pycocoevalcap; its
  PTB tokenizer runs Java, whose CPU time is counted);
- ``clip``: CLIPScore with a tiny random CLIP (``mcmdpo.tiny.clip``: ViT-B/32's geometry and real
  tokenizer, tiny widths);
- ``judge`` with a local VLM (``--judge model:PATH``: the benchmark LLaVA itself, greedy, 16 new
  tokens at most), on ``--judge_records`` records: N (N - 1) comparisons a record;
- ``judge`` with an endpoint (``--judge endpoint:URL``): a fake OpenAI-compatible server on
  127.0.0.1, in a process of its own, answering at once; what is timed is the client's side (the
  image as a PNG data URL, the requests, the reply cache in the output folder, ``--endpoint_workers``
  threads), not any model: a real endpoint adds its own latency;
- ``human``: the answers in an annotation database the benchmark writes
  (``mcmdpo.build.annotations``: every two of a record's alt-texts, its own and its candidates',
  compared once), read and counted.

**Timing**: CPU time of this process (and of the children it waited for: the PTB tokenizer's
Java) with one torch thread, as the other benchmarks here; wall times beside it in the JSON. The
machine's load average (``os.getloadavg``) before and after is reported with the figures.

**Estimate: building pairs at scale on GPUs.** FLOPs of one candidate (``benchmarks/flops.py``,
``candidate_flops``; 2 FLOPs per multiply-add; P prompt tokens, image tokens included, T new
tokens; h hidden size, L layers, per-token decoder multiply-adds D = L (4 h^2 + 3 h m) for MLP
width m, head H = h V for vocabulary V):

    F = 2 [ vision (tiles x tower + image tokens x projector)
          + P D + 2 L h P (P + 1) / 2 + H                    (prefill: the first new token)
          + (T - 1)(D + H) + 2 L h sum_{t=1}^{T-1} (P + t) ]  (decode: one token a step, KV cache)

i.e. about 2 x parameters per token plus attention. At LLaVA-1.5-7B's shape (Vicuna-7B on CLIP
ViT-L/14-336) with this run's measured P and T the FLOP ratio 7B / benchmark model scales the
measured candidates/s to what this CPU would do at 7B. The GPU figure divides the 7B's FLOPs for
``--target_records`` records x N candidates by an assumed achieved rate (``--gpu_peak_tflops``,
default 989: an H100 SXM's dense bf16 peak, times ``--gpu_flop_efficiency``, default 0.4, a
fraction batched prefill reaches): the measured CPU rate cancels out of it, so it rests on the
assumption alone. A second figure takes the builder's call shape into account: one record a
``generate`` call, N rows, so each of the T - 1 decode steps must read the 7B's weights (bf16) and
the rows' KV caches whatever N is; the step takes the longer of its FLOPs at the assumed rate and
its bytes at ``--gpu_bandwidth_tbps`` (3.35: H100 SXM's HBM3) x ``--gpu_bandwidth_efficiency``
(0.6). The same sum with one row a call (N calls a record), set beside it, shows what the
builder's batching saves on a GPU. None of them counts eager ``generate``'s per-step launch overhead, correction, ranking or
loading, so all are lower bounds; sharded over ``--gpus`` processes (torchrun) the wall time is
GPU-hours / GPUs, as records are independent.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
from common import write_bench_checkpoint, write_bench_data
from flops import LLAVA_7B, ModelShape, candidate_flops, candidate_macs, kv_cache_values, language_weights

FORMULA = ("F = 2 [ vision + P D + L h P (P + 1) + H + (T - 1)(D + H) + 2 L h sum_{t=1}^{T-1} (P + t) ]: prefill of the P-token "
           "prompt (image tokens included), then T - 1 one-token decode steps from the KV cache; D = L (4 h^2 + 3 h m) decoder "
           "multiply-adds a token, H = h V the head; about 2 x parameters a token plus attention")

SERVER = r"""
import hashlib, json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = "".join(part.get("text", "") for part in body["messages"][0]["content"])
        verdict = ("first", "second", "tie")[hashlib.sha256(text.encode()).digest()[0] % 3]
        data = json.dumps({"id": "b", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": verdict},
                                        "finish_reason": "stop"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def cpu_seconds() -> float:
    """CPU time of this process, every thread, and of the children it has waited for."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed(function: Callable[[], Any]) -> tuple[float, float]:
    """(CPU s, wall s) of one call."""
    cpu, wall = cpu_seconds(), time.perf_counter()
    function()
    return cpu_seconds() - cpu, time.perf_counter() - wall


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def shape_of(config: Any) -> ModelShape:
    """The :class:`ModelShape` of a LLaVA checkpoint's config."""
    text, vision = config.text_config, config.vision_config
    return ModelShape(hidden=text.hidden_size, layers=text.num_hidden_layers, intermediate=text.intermediate_size,
                      vocab=text.vocab_size, vision_hidden=vision.hidden_size, vision_layers=vision.num_hidden_layers,
                      vision_intermediate=vision.intermediate_size,
                      vision_tokens=(vision.image_size // vision.patch_size) ** 2 + 1)


# ---------------------------------------------------------------- setting up

def prepare(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The benchmark checkpoint, the records as collect and correct leave them, and a sample
    stage file holding real-sentence candidates (what the rankers read)."""
    from mcmdpo.build import BuildOptions, build
    from mcmdpo.build.sample import sample_inputs
    from mcmdpo.build.stage_files import read_stage, stage_path, write_complete
    from mcmdpo.model.loading import load_processor

    checkpoint = write_bench_checkpoint(workdir / "model", "llava")
    processor = load_processor(str(checkpoint))
    count = max(args.sample_records, args.rank_records, args.judge_records, args.rank_candidates + 1)
    data, images = write_bench_data(workdir / "data", processor.tokenizer, count)
    base = workdir / "base"
    build(BuildOptions(data_path=str(data), image_folder=str(images), output_dir=str(base), stages=["collect", "correct"],
                       quiet=True), echo=None)
    corrected = read_stage(base, "correct")
    records = corrected.records
    if len(records) < count:
        raise RuntimeError(f"collect kept {len(records)} of {count} benchmark records")
    # Candidates: the record's own rejected alt-text, then the next records' alt-texts.
    rejected = {str(raw["idx"]): json.loads(raw["text"])["rejected"] for raw in json.loads(data.read_text())}
    lines = []
    for i, record in enumerate(records):
        others = [records[(i + k) % len(records)]["alt_text"] for k in range(1, args.rank_candidates)]
        lines.append({**record, "candidates": [rejected.get(str(record["id"]), others[0]), *others]})
    options = BuildOptions(output_dir=str(base), sampler_model=str(checkpoint), num_candidates=args.rank_candidates,
                           max_new_tokens=args.max_new_tokens, quiet=True)
    write_complete(stage_path(base, "sample"), "sample", sample_inputs(options, corrected.sha256), lines)
    return {"checkpoint": checkpoint, "images": images, "base": base, "records": records}


def fresh_folder(base: Path, folder: Path) -> Path:
    """A new output folder holding ``base``'s collect, correct and sample files (no reply cache)."""
    folder.mkdir(parents=True)
    for stage in ("collect", "correct", "sample"):
        shutil.copy(base / f"{stage}.jsonl", folder / f"{stage}.jsonl")
    return folder


# ---------------------------------------------------------------- sampling

class GenerateLog:
    """Wraps ``model.generate`` to note each call's rows, prompt length, image tokens and each
    row's new tokens (up to its first end-of-text token, included)."""

    def __init__(self, model: Any, stops: list[int], image_token_id: int):
        self.calls: list[dict[str, int]] = []
        generate = model.generate

        def logged(*args: Any, **kwargs: Any) -> Any:
            output = generate(*args, **kwargs)
            prompt = kwargs["input_ids"]
            new = output[:, prompt.shape[1]:].tolist()
            lengths = [next((i + 1 for i, token in enumerate(row) if token in stops), len(row)) for row in new]
            self.calls.append({"rows": prompt.shape[0], "prompt": prompt.shape[1],
                               "image_tokens": int((prompt[0] == image_token_id).sum()), "new_tokens": sum(lengths)})
            return output

        model.generate = logged

    def since(self, start: int) -> dict[str, float]:
        calls = self.calls[start:]
        rows = sum(call["rows"] for call in calls)
        return {"calls": len(calls), "candidates": rows, "prompt_tokens": calls[0]["prompt"], "image_tokens": calls[0]["image_tokens"],
                "new_tokens_per_candidate": sum(call["new_tokens"] for call in calls) / rows}


def bench_sampling(args: argparse.Namespace, setup: dict[str, Any]) -> dict[str, Any]:
    from mcmdpo.build import BuildOptions
    from mcmdpo.build.models import load_generator
    from mcmdpo.build.records import open_image
    from mcmdpo.build.sample import record_seed, sample_record, settings_of
    from mcmdpo.eval.generation import generate_batch

    def options_for(count: int) -> Any:
        return BuildOptions(output_dir=str(setup["base"]), sampler_model=str(setup["checkpoint"]), num_candidates=count,
                            max_new_tokens=args.max_new_tokens, quiet=True)

    checkpoint, model = load_generator(str(setup["checkpoint"]), None)  # as the sample stage loads it
    # Every candidate runs to --max_new_tokens, so both ways do the same work: a random model's
    # end-of-text tokens come at random (generate reads this from the model's generation config).
    model.generation_config.min_new_tokens = args.max_new_tokens
    stops = settings_of(options_for(2)).generate_kwargs(checkpoint.processor, model.generation_config.eos_token_id)["eos_token_id"]
    log = GenerateLog(model, stops, model.config.image_token_index)
    records = setup["records"][: args.sample_records]
    images = [open_image(record, str(setup["images"]), setup["base"]) for record in records]

    def builder(options: Any) -> None:
        for record, image in zip(records, images):
            sample_record(model, checkpoint, record["question"], image, record["key"], options)

    def one_at_a_time(options: Any) -> None:
        for record, image in zip(records, images):
            with torch.random.fork_rng():
                torch.manual_seed(record_seed(options.seed, record["key"]))
                for _ in range(options.num_candidates):
                    generate_batch(model, checkpoint.processor, checkpoint.family.inputs, [record["question"]], [image],
                                   settings_of(options))

    warm = options_for(2)  # one warm-up of each way
    sample_record(model, checkpoint, records[0]["question"], images[0], records[0]["key"], warm)
    generate_batch(model, checkpoint.processor, checkpoint.family.inputs, [records[0]["question"]], [images[0]], settings_of(warm))

    results: dict[str, Any] = {}
    for count in args.num_candidates:
        options = options_for(count)
        ways = {"builder": builder, "one_at_a_time": one_at_a_time}
        times: dict[str, list[tuple[float, float]]] = {way: [] for way in ways}
        tokens: dict[str, dict[str, float]] = {}
        for repeat in range(args.repeats):
            for way in (list(ways) if repeat % 2 == 0 else list(ways)[::-1]):
                start = len(log.calls)
                times[way].append(timed(lambda: ways[way](options)))
                tokens[way] = log.since(start)
        candidates = count * len(records)
        entry: dict[str, Any] = {"records": len(records), "candidates": candidates}
        for way in ways:
            cpu = statistics.median(t[0] for t in times[way])
            wall = statistics.median(t[1] for t in times[way])
            entry[way] = {"candidates_per_s": candidates / cpu, "candidates_per_s_wall": candidates / wall,
                          "cpu_s": [round(t[0], 3) for t in times[way]], "wall_s": [round(t[1], 3) for t in times[way]],
                          **tokens[way]}
        entry["speedup"] = entry["builder"]["candidates_per_s"] / entry["one_at_a_time"]["candidates_per_s"]
        results[str(count)] = entry
    return {"shape": shape_of(model.config), "results": results}


# ---------------------------------------------------------------- ranking

def write_answers(path: Path, records: list[dict[str, Any]]) -> int:
    """An annotation database: for each record every two of its alt-texts (its own and its
    candidates') compared once by one annotator, the choices cycling through all five."""
    from mcmdpo.build.annotations import CHOICES, add_answer, create_database

    create_database(path)
    count = 0
    for record in records:
        texts = [(None, record["alt_text"]), *enumerate(record["candidates"])]
        for a in range(len(texts)):
            for b in range(a + 1, len(texts)):
                (first_index, first), (second_index, second) = texts[a], texts[b]
                add_answer(path, record["key"], first, second, "annotator-1", CHOICES[count % len(CHOICES)],
                           first_candidate=first_index, second_candidate=second_index)
                count += 1
    return count


def score_all(ranker: Any, records: list[dict[str, Any]]) -> list[Any]:
    """As the rank stage scores: the whole pool at once, or in the ranker's chunks."""
    if ranker.whole_pool:
        return ranker.score(records)
    scored = []
    for start in range(0, len(records), ranker.chunk):
        scored += ranker.score(records[start:start + ranker.chunk])
    return scored


def bench_ranking(args: argparse.Namespace, setup: dict[str, Any], workdir: Path) -> dict[str, Any]:
    from mcmdpo.build import BuildOptions
    from mcmdpo.build.rank import make_ranker
    from mcmdpo.build.rankers import RANKERS
    from mcmdpo.tiny.clip import write_tiny_clip

    base, checkpoint = setup["base"], setup["checkpoint"]
    folders = iter(range(10**6))

    def options(**settings: Any) -> Any:
        return BuildOptions(output_dir=str(fresh_folder(base, workdir / f"rank{next(folders)}")), stages=["rank"], quiet=True,
                            **settings)

    clip = write_tiny_clip(workdir / "clip")
    answers = workdir / "answers.sqlite"
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{int(server.stdout.readline())}/v1"
        _, sampled, _ = make_ranker(options())
        answer_count = write_answers(answers, sampled[: args.rank_records])
        cases = {
            "reference": ({"ranker": "reference"}, args.rank_records, False),
            "clip": ({"ranker": "clip", "clip_model": str(clip)}, args.rank_records, False),
            "judge_local": ({"ranker": "judge", "judge": f"model:{checkpoint}"}, args.judge_records, False),
            "judge_endpoint": ({"ranker": "judge", "judge": f"endpoint:{url}", "judge_model_name": "bench-judge",
                                "endpoint_workers": args.endpoint_workers}, args.rank_records, True),
            "human": ({"ranker": "human", "annotations": str(answers)}, args.rank_records, True),
        }
        results: dict[str, Any] = {}
        for name, (settings, count, build_each_time) in cases.items():
            records = sampled[:count]
            if not build_each_time:
                ranker, _, _ = make_ranker(options(**settings))
                if ranker.name != "reference":  # load the model: a warm-up on one record of two candidates
                    ranker.score([{**records[0], "candidates": records[0]["candidates"][:2]}])
            times, scored = [], []
            for _ in range(args.repeats):
                if build_each_time:
                    # A fresh output folder (the endpoint's reply cache) and ranker (the human
                    # ranker reads the database when it is made: part of its work).
                    run_options = options(**settings)
                    image_folder = make_ranker(run_options)[0].image_folder

                    def run() -> None:
                        scored[:] = score_all(RANKERS[run_options.ranker](run_options, image_folder), records)
                else:
                    def run() -> None:
                        scored[:] = score_all(ranker, records)
                times.append(timed(run))
            cpu = statistics.median(t[0] for t in times)
            wall = statistics.median(t[1] for t in times)
            entry = {"records": len(records), "candidates_per_record": args.rank_candidates, "records_per_s": len(records) / cpu,
                     "records_per_s_wall": len(records) / wall, "cpu_s": [round(t[0], 3) for t in times],
                     "wall_s": [round(t[1], 3) for t in times]}
            if name.startswith("judge"):
                asked = sum(line["details"]["asked"] for line in scored)
                entry.update(comparisons=asked, comparisons_per_s=asked / cpu, comparisons_per_s_wall=asked / wall,
                             unparsable=sum(line["details"]["counts"]["unparsable"] for line in scored))
            if name == "human":
                entry.update(answers=answer_count, answers_used=sum(line["details"]["answers"] for line in scored))
            results[name] = entry
        return results
    finally:
        server.terminate()
        server.wait()


# ---------------------------------------------------------------- the estimate

def estimate(args: argparse.Namespace, sampling: dict[str, Any]) -> dict[str, Any]:
    """The cost of building ``--target_records`` records' candidates with a 7B sampler: measured
    candidates/s scaled by the FLOP ratio, and GPU-hours at the assumed GPU rates (see the module
    docstring). Everything here is arithmetic on assumptions: an estimate, not a measurement."""
    shape: ModelShape = sampling["shape"]
    peak = args.gpu_peak_tflops * 1e12
    flop_rate = peak * args.gpu_flop_efficiency
    byte_rate = args.gpu_bandwidth_tbps * 1e12 * args.gpu_bandwidth_efficiency
    out: dict[str, Any] = {
        "label": "estimate, not a measurement",
        "formula": FORMULA,
        "assumptions": {"model": "LLaVA-1.5-7B (Vicuna-7B, CLIP ViT-L/14-336), bf16 weights and KV cache, pad: 1 tile",
                        "gpu_peak_tflops": args.gpu_peak_tflops, "gpu_flop_efficiency": args.gpu_flop_efficiency,
                        "gpu_bandwidth_tbps": args.gpu_bandwidth_tbps, "gpu_bandwidth_efficiency": args.gpu_bandwidth_efficiency,
                        "target_records": args.target_records, "gpus": args.gpus,
                        "not_counted": "per-step launch overhead of eager generate, correction, ranking, loading"},
        "per_n": {},
    }
    for count, entry in sampling["results"].items():
        measured = entry["builder"]
        prompt, image_tokens = measured["prompt_tokens"], measured["image_tokens"]
        new_tokens = args.max_new_tokens
        tiny = candidate_flops(shape, prompt, image_tokens, 1, new_tokens)
        big = candidate_flops(LLAVA_7B, prompt, image_tokens, 1, new_tokens)
        ratio = big / tiny
        rows = int(count)
        candidates = args.target_records * rows
        cpu_rate_7b = measured["candidates_per_s"] / ratio
        # FLOP-bound: every FLOP at the assumed achieved rate.
        flop_bound_h = candidates * big / flop_rate / 3600
        # The builder's call shape: one record, N rows a generate call; prefill at the FLOP rate, each
        # decode step the longer of its FLOPs and its bytes (weights once, each row's KV cache).
        macs = candidate_macs(LLAVA_7B, prompt, image_tokens, 1, new_tokens)

        def call_seconds(rows: int) -> tuple[float, float]:
            """(prefill s, decode s) of one generate call of ``rows`` rows at the 7B."""
            prefill = rows * 2 * (macs["vision"] + macs["prefill"]) / flop_rate
            decode = 0.0
            for step in range(1, new_tokens):
                flops = rows * 2 * (LLAVA_7B.decoder_macs + LLAVA_7B.head_macs + LLAVA_7B.attention_macs(1, prompt + step))
                values = language_weights(LLAVA_7B) + rows * kv_cache_values(LLAVA_7B, prompt + step)
                decode += max(flops / flop_rate, 2 * values / byte_rate)
            return prefill, decode

        prefill_s, decode_s = call_seconds(rows)
        call_shape_h = args.target_records * (prefill_s + decode_s) / 3600
        one_at_a_time_h = args.target_records * rows * sum(call_seconds(1)) / 3600
        out["per_n"][count] = {
            "prompt_tokens": prompt, "image_tokens": image_tokens, "new_tokens": new_tokens,
            "flops_per_candidate_bench": tiny, "flops_per_candidate_7b": big, "flop_ratio_7b_over_bench": ratio,
            "measured_candidates_per_s_bench_cpu": measured["candidates_per_s"],
            "achieved_cpu_gflops": measured["candidates_per_s"] * tiny / 1e9,
            "scaled_7b_candidates_per_s_this_cpu": cpu_rate_7b,
            "scaled_7b_cpu_core_hours": candidates / cpu_rate_7b / 3600,
            "candidates": candidates,
            "gpu_hours_flop_bound": flop_bound_h,
            "gpu_hours_builder_call_shape": call_shape_h,
            "gpu_hours_one_at_a_time": one_at_a_time_h,
            "prefill_share_of_call_shape": prefill_s / (prefill_s + decode_s),
            "wall_hours_on_gpus_flop_bound": flop_bound_h / args.gpus,
            "wall_hours_on_gpus_builder_call_shape": call_shape_h / args.gpus,
        }
    return out


# ---------------------------------------------------------------- output

def rate(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:,.1f}"


def tables(results: dict[str, Any]) -> str:
    settings = results["settings"]
    lines = [f"Sampling: {settings['sample_records']} records, max_new_tokens {settings['max_new_tokens']}, CPU time with "
             f"{results['torch_threads']} thread, median of {settings['repeats']}",
             "",
             "| N | builder: one call of N rows | one call per candidate | builder / one at a time | new tokens per candidate |",
             "|---|---|---|---|---|"]
    for count, entry in results["sampling"].items():
        builder, single = entry["builder"], entry["one_at_a_time"]
        lines.append(f"| {count} | {builder['candidates_per_s']:.2f} candidates/s | {single['candidates_per_s']:.2f} candidates/s | "
                     f"**{entry['speedup']:.2f}x** | {builder['new_tokens_per_candidate']:.1f} / "
                     f"{single['new_tokens_per_candidate']:.1f} |")
    lines += ["", f"Ranking: {settings['rank_candidates']} candidates a record, CPU time, median of {settings['repeats']}", "",
              "| ranker | records | records/s (CPU) | records/s (wall) | comparisons/s (CPU) |", "|---|---|---|---|---|"]
    names = {"reference": "reference (CIDEr-D + ROUGE-L)", "clip": "clip (tiny CLIP)", "judge_local": "judge, local VLM",
             "judge_endpoint": "judge, endpoint (client side only)", "human": "human (SQLite answers)"}
    for name, entry in results["ranking"].items():
        per_s = f"{entry['comparisons_per_s']:.1f}" if "comparisons_per_s" in entry else "-"
        lines.append(f"| {names[name]} | {entry['records']} | {rate(entry['records_per_s'])} | {rate(entry['records_per_s_wall'])} | "
                     f"{per_s} |")
    guess = results["estimate"]
    assumed = guess["assumptions"]
    lines += ["", f"ESTIMATE (not a measurement): {assumed['target_records']:,} records with a 7B sampler, "
              f"{assumed['gpu_peak_tflops']:g} TFLOP/s peak x {assumed['gpu_flop_efficiency']:g}, "
              f"{assumed['gpu_bandwidth_tbps']:g} TB/s x {assumed['gpu_bandwidth_efficiency']:g}, {assumed['gpus']} GPUs",
              f"FLOPs of a candidate: {FORMULA}", "",
              "| N | TFLOP per candidate (7B) | FLOP ratio 7B / bench | 7B on this CPU core (scaled) | GPU-hours, FLOP-bound | "
              f"GPU-hours, one record a call (builder) | GPU-hours, one candidate a call | wall hours on {assumed['gpus']} GPUs |",
              "|---|---|---|---|---|---|---|---|"]
    for count, entry in guess["per_n"].items():
        lines.append(f"| {count} | {entry['flops_per_candidate_7b'] / 1e12:.2f} | {entry['flop_ratio_7b_over_bench']:,.0f} | "
                     f"{entry['scaled_7b_cpu_core_hours']:,.0f} core-hours | {entry['gpu_hours_flop_bound']:.1f} | "
                     f"{entry['gpu_hours_builder_call_shape']:.1f} | {entry['gpu_hours_one_at_a_time']:.1f} | "
                     f"{entry['wall_hours_on_gpus_flop_bound']:.1f}-"
                     f"{entry['wall_hours_on_gpus_builder_call_shape']:.1f} |")
    lines += ["", f"load average (1, 5, 15 min): {results['load_before']} before, {results['load_after']} after"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--num_candidates", type=int, nargs="+", default=[4, 8], help="candidates per record to time sampling at")
    parser.add_argument("--sample_records", type=int, default=2, help="records sampled per run")
    parser.add_argument("--max_new_tokens", type=int, default=32)
    parser.add_argument("--rank_records", type=int, default=50, help="records ranked by reference, clip, the endpoint judge, human")
    parser.add_argument("--judge_records", type=int, default=1, help="records ranked by the local VLM judge")
    parser.add_argument("--rank_candidates", type=int, default=4, help="candidates per record when ranking")
    parser.add_argument("--endpoint_workers", type=int, default=4, help="the endpoint judge's requests in flight (builder default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--target_records", type=int, default=200_000, help="records of the estimate")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs of the estimate's wall time")
    parser.add_argument("--gpu_peak_tflops", type=float, default=989.0, help="dense bf16 peak (H100 SXM: 989)")
    parser.add_argument("--gpu_flop_efficiency", type=float, default=0.4, help="achieved share of the peak")
    parser.add_argument("--gpu_bandwidth_tbps", type=float, default=3.35, help="memory bandwidth (H100 SXM: 3.35)")
    parser.add_argument("--gpu_bandwidth_efficiency", type=float, default=0.6, help="achieved share of the bandwidth")
    args = parser.parse_args()
    if min(args.num_candidates) < 2 or args.rank_candidates < 2:
        parser.error("a record needs at least 2 candidates")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results: dict[str, Any] = {"torch_threads": torch.get_num_threads(), "settings": {
        key: getattr(args, key) for key in ("num_candidates", "sample_records", "max_new_tokens", "rank_records", "judge_records",
                                            "rank_candidates", "endpoint_workers", "repeats")}}
    results["load_before"] = load_average()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        setup = prepare(args, Path(tmp))
        sampling = bench_sampling(args, setup)
        results["sampling"] = sampling["results"]
        results["ranking"] = bench_ranking(args, setup, Path(tmp))
    results["estimate"] = estimate(args, sampling)
    results["load_after"] = load_average()
    results["seconds"] = round(time.perf_counter() - started, 1)
    print(tables(results))
    print(f"\n({results['seconds']:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
