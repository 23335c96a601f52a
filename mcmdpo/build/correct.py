"""The correct stage: each kept alt-text's grammar and spelling corrected, its meaning kept.

``--corrector none`` copies the alt-text; ``model:PATH`` asks a local instruct model (a text-only
causal LM through transformers, batched with left padding, greedy; a vision-language checkpoint of
a family the project trains is asked text-only, through the inference code); ``endpoint:URL`` an
OpenAI-compatible endpoint (:mod:`mcmdpo.build.endpoints`). The prompt is a file
(:mod:`mcmdpo.build.prompts`). The guard (:mod:`mcmdpo.build.guard`) keeps the original where the
correction changes too much, and the report counts each reason. ``OUT/correct.jsonl``: one line
per kept record, with ``alt_text`` (the corrected or kept text), ``alt_text_original`` and
``correction`` (the reply and the guard's verdict; null with no corrector)."""

from __future__ import annotations

from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from mcmdpo.build.collect import STAGE as COLLECT, kept_records
from mcmdpo.build.endpoints import endpoint_client, ordered_map, reply_cache
from mcmdpo.build.fingerprints import checkpoint_fingerprint
from mcmdpo.build.guard import GUARD_REASONS, check_correction
from mcmdpo.build.models import device_of_process, dtype_for, load_generator
from mcmdpo.build.options import ENDPOINT_PREFIX, MODEL_PREFIX, BuildOptions, spec_target
from mcmdpo.build.prompts import fill, read_prompt
from mcmdpo.build.report import grouped
from mcmdpo.build.stage_files import UPSTREAM_KEY, read_chain
from mcmdpo.build.stage_run import StageRun
from mcmdpo.caching import text_sha256

STAGE = "correct"
VERSION = 1
QUOTES = ('"', "'", "“", "”", "‘", "’", "`")
LABELS = ("corrected alt-text:", "corrected alt text:", "corrected:", "alt-text:", "alt text:")


class Corrector(Protocol):
    batch_size: int

    def replies(self, prompts: list[str]) -> list[str]:
        """The corrector's raw reply to each prompt, in order."""


def clean_reply(reply: str) -> str:
    """A reply as the corrected text: a leading label ("Corrected alt-text:") and one pair of
    surrounding quotes taken away."""
    text = reply.strip()
    for label in LABELS:
        if text.lower().startswith(label):
            text = text[len(label):].strip()
            break
    if len(text) >= 2 and text[0] in QUOTES and text[-1] in QUOTES:
        text = text[1:-1].strip()
    return text


def _max_new_tokens(count_tokens: Any, alt_texts: list[str]) -> int:
    """Room for a correction: twice the longest alt-text's tokens and 16, at most 1024. One number
    for the whole stage, so batching changes no reply."""
    longest = max((count_tokens(text) for text in alt_texts), default=0)
    return min(1024, 2 * longest + 16)


class LocalCorrector:
    """A local instruct model, greedy. A text-only causal LM is prompted through its tokenizer's
    chat template (the prompt as is without one); a checkpoint of a family the project trains
    is prompted through the inference code, text only."""

    def __init__(self, path: str, dtype: str | None, batch_size: int, alt_texts: list[str]):
        from transformers import AutoConfig

        from mcmdpo.model.families import UnsupportedModelError, family_for

        self.batch_size = batch_size
        self.device = device_of_process()
        config = AutoConfig.from_pretrained(path)
        try:
            family_for(config)
            self.vision_language = True
        except UnsupportedModelError:
            self.vision_language = False
        if self.vision_language:
            self.checkpoint, self.model = load_generator(path, dtype, device=self.device)
            count = lambda text: len(self.checkpoint.processor.tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
        else:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from mcmdpo.model.loading import DTYPES

            self.tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
            if self.tokenizer.pad_token is None:
                self.tokenizer.pad_token = self.tokenizer.unk_token or self.tokenizer.eos_token
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype_for(self.device, dtype)]).to(self.device).eval()
            count = lambda text: len(self.tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
        self.max_new_tokens = _max_new_tokens(count, alt_texts)

    def replies(self, prompts: list[str]) -> list[str]:
        if self.vision_language:
            from mcmdpo.eval.generation import GenerationSettings, generate_batch

            settings = GenerationSettings(temperature=0.0, num_beams=1, max_new_tokens=self.max_new_tokens)
            return generate_batch(self.model, self.checkpoint.processor, self.checkpoint.family.inputs, prompts,
                                  [None] * len(prompts), settings)
        return text_generate(self.model, self.tokenizer, prompts, self.max_new_tokens)


@torch.no_grad()
def text_generate(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Greedy replies of a causal LM to user messages, batched with left padding."""
    if tokenizer.chat_template:
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
                 for prompt in prompts]
    else:
        texts = list(prompts)
    bos = tokenizer.bos_token
    encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not (bos and texts[0].startswith(bos)))
    encoded = {key: value.to(model.device) for key, value in encoded.items()}
    stops = model.generation_config.eos_token_id
    stops = [stops] if isinstance(stops, int) else list(stops or [])
    eos = list(dict.fromkeys([token for token in (tokenizer.eos_token_id, *stops) if token is not None]))
    output = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                            pad_token_id=tokenizer.pad_token_id, eos_token_id=eos or None)
    new_tokens = output[:, encoded["input_ids"].shape[1]:]
    return [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


class EndpointCorrector:
    """An OpenAI-compatible endpoint, several requests in flight, every reply cached in
    ``OUT/cache/correct.jsonl``."""

    def __init__(self, options: BuildOptions):
        self.client = endpoint_client(options, options.corrector, options.corrector_model_name, "corrector")
        self.cache = reply_cache(options, STAGE)
        self.workers = options.endpoint_workers
        self.batch_size = 4 * options.endpoint_workers

    def replies(self, prompts: list[str]) -> list[str]:
        return list(ordered_map(lambda prompt: self.cache.reply(self.client, prompt), prompts, self.workers))


def correct_inputs(options: BuildOptions, upstream_sha256: str) -> dict[str, Any]:
    inputs: dict[str, Any] = {"version": VERSION, UPSTREAM_KEY: upstream_sha256, "corrector": options.corrector}
    if options.corrector == "none":
        return inputs
    inputs.update(prompt_sha256=text_sha256(read_prompt("correction", options.correction_prompt)),
                  max_edit_ratio=options.max_edit_ratio)
    if options.corrector.startswith(MODEL_PREFIX):
        inputs.update(model=checkpoint_fingerprint(spec_target(options.corrector)), dtype=dtype_for(device_of_process(), options.dtype))
    else:
        inputs.update(model_name=options.corrector_model_name)
    return inputs


def make_corrector(options: BuildOptions, alt_texts: list[str]) -> Corrector:
    if options.corrector.startswith(ENDPOINT_PREFIX):
        return EndpointCorrector(options)
    return LocalCorrector(spec_target(options.corrector), options.dtype, options.correction_batch_size, alt_texts)


def corrected_line(record: dict[str, Any], reply: str | None, max_edit_ratio: float) -> dict[str, Any]:
    """The record with its final alt-text: the correction when the guard keeps it, else the original."""
    original = record["alt_text"]
    if reply is None:
        return {**record, "alt_text_original": original, "correction": None}
    corrected = clean_reply(reply)
    verdict = check_correction(original, corrected, max_edit_ratio)
    correction = {"reply": reply, "accepted": verdict.accepted, "kept_original": verdict.reason, "edit_ratio": verdict.edit_ratio}
    if verdict.changes:
        correction["changes"] = verdict.changes
    return {**record, "alt_text": corrected if verdict.accepted else original, "alt_text_original": original,
            "correction": correction}


def run_correct(options: BuildOptions) -> dict[str, Any]:
    upstream = read_chain(options.output_dir, (COLLECT,))[COLLECT]
    records = kept_records(upstream.records)
    run = StageRun(options.output_dir, STAGE, correct_inputs(options, upstream.sha256), [record["key"] for record in records])
    pending = records[len(run.done):]
    if pending and options.corrector == "none":
        run.writer.append(corrected_line(record, None, options.max_edit_ratio) for record in pending)
    elif pending:
        template = read_prompt("correction", options.correction_prompt)
        corrector = make_corrector(options, [record["alt_text"] for record in records])
        with tqdm(total=len(records), initial=len(run.done), desc="correcting alt-text", disable=options.quiet) as progress:
            for start in range(0, len(pending), corrector.batch_size):
                batch = pending[start:start + corrector.batch_size]
                prompts = [fill(template, alt_text=record["alt_text"], context=record["context"]) for record in batch]
                replies = corrector.replies(prompts)
                run.writer.append(corrected_line(record, reply, options.max_edit_ratio) for record, reply in zip(batch, replies))
                progress.update(len(batch))
    return run.finish(correct_section(run.done, options.corrector))


def correct_section(lines: list[dict[str, Any]], corrector: str) -> dict[str, Any]:
    kept = grouped((line["correction"]["kept_original"], line["id"], None) for line in lines
                   if line["correction"] and not line["correction"]["accepted"])
    changed = sum(line["alt_text"] != line["alt_text_original"] for line in lines)
    return {"status": "complete", "corrector": corrector, "records": len(lines), "corrected": changed,
            "unchanged": len(lines) - changed - sum(group["count"] for group in kept.values()),
            "kept_original_count": sum(group["count"] for group in kept.values()),
            "kept_original": {reason: kept[reason] for reason in GUARD_REASONS if reason in kept}}
