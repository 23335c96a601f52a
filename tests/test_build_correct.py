"""The builder's correct stage: the guard against a correction that changes the meaning (pure
functions, by hand), a corrector behind a fake OpenAI-compatible server started here on
127.0.0.1 (the prompt file's text asked, a failure retried, planted meaning changes kept out and
counted, replies cached), and local models (a text-only instruct LM and a vision-language
checkpoint) whose batched replies equal one-at-a-time generation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from build_support import FakeChatServer, message_text, quick_options, read_stage_lines, sft_records, write_json
from mcmdpo.build import read_report, run_collect, run_correct
from mcmdpo.build.guard import check_correction, edit_distance, names, numbers
from mcmdpo.build.prompts import PROMPT_FOLDER
from mcmdpo.eval import openai_client
from mcmdpo.eval.generation import GenerationSettings, generate_batch
from mcmdpo.model.loading import load_checkpoint
from mcmdpo.tiny.instruct import write_tiny_instruct_checkpoint


# ---------------------------------------------------------------- the guard, by hand

def test_edit_distance_and_the_facts_a_correction_must_keep():
    assert edit_distance("kitten", "sitting") == 3 and edit_distance("", "abc") == 3 and edit_distance("same", "same") == 0
    assert numbers("Two dogs, 3 cats and 1,200 birds; the 2nd one") == {"2": 1, "3": 1, "1200": 1, "2nd": 1}
    assert names("Emma and Paris. Then I met Bob in London") == {"paris", "bob", "london"}
    assert names("Emma and Paris. Then I met Bob in London", sentence_starts=True) == {"emma", "paris", "bob", "london"}


@pytest.mark.parametrize("original, corrected, kept, reason", [
    ("A dog sits on teh grass.", "A dog sits on the grass.", True, None),
    ("a red square on the left", "A red square on the left.", True, None),  # capitalising the first word is no name
    ("2 dogs run along the river in paris", "Two dogs run along the river in Paris.", True, None),  # a number spelled out, a name capitalised: the same facts
    ("Two dogs play in the park.", "Three dogs play in the park.", False, "number_changed"),
    ("A dog in the park.", "A dog in the park at 5.", False, "number_changed"),
    ("A photo of Emma holding a cup.", "A photo of a woman holding a cup.", False, "name_changed"),
    ("A photo of a woman holding a cup.", "A photo of Emma holding a cup.", False, "name_changed"),
    ("A blue circle.", "An image showing a small blue circle on a plain white background.", False, "edit_ratio"),
    ("A blue circle.", "  ", False, "empty_reply"),
])
def test_the_guard_keeps_the_original_where_the_meaning_may_change(original, corrected, kept, reason):
    verdict = check_correction(original, corrected, max_edit_ratio=0.3)
    assert (verdict.accepted, verdict.reason) == (kept, reason)


def test_the_edit_ratio_is_the_distance_over_the_original_length():
    original, corrected = "abcdefghij", "abcdefgXYZ"  # 3 edits in 10 characters
    assert check_correction(original, corrected, 0.3).accepted
    assert check_correction(original, corrected, 0.29).reason == "edit_ratio"
    assert check_correction(original, corrected, 0.3).edit_ratio == pytest.approx(0.3)


# ---------------------------------------------------------------- through an endpoint

# alt-text -> the endpoint's reply, and what the stage keeps
PLANTED = [
    ("A dog sits on teh grass.", "A dog sits on the grass.", "A dog sits on the grass.", None),
    ("Two dogs play in the park.", "Three dogs play in the park.", "Two dogs play in the park.", "number_changed"),
    ("Emma holds a cup of coffee.", "A woman holds a cup of coffee.", "Emma holds a cup of coffee.", "name_changed"),
    ("a red square on the left", 'Corrected alt-text: "A red square on the left."', "A red square on the left.", None),
    ("A blue circle on the right.", "An image showing a small blue circle placed on a plain white background, seen from above.",
     "A blue circle on the right.", "edit_ratio"),
    ("A green triangle on the right.", "A green triangle on the right.", "A green triangle on the right.", None),
]


@pytest.fixture
def planted_collect(synthetic_dir, tmp_path):
    records = sft_records(synthetic_dir, len(PLANTED))
    for record, (alt_text, *_) in zip(records, PLANTED):
        record["conversations"][1]["value"] = alt_text
    data = write_json(tmp_path / "alt.json", records)
    options = quick_options(data, synthetic_dir / "image", tmp_path / "out")
    run_collect(options)
    return data, options


def test_an_endpoint_corrects_and_the_guard_keeps_planted_meaning_changes_out(planted_collect, monkeypatch):
    data, collected = planted_collect
    monkeypatch.setattr(openai_client, "BACKOFF_S", 0.0)
    monkeypatch.setenv("TEST_CORRECTOR_KEY", "sk-test")
    replies = {alt_text: reply for alt_text, reply, _, _ in PLANTED}
    template = (PROMPT_FOLDER / "correction.txt").read_text()
    with FakeChatServer(lambda body: replies[message_text(body).rsplit("Alt-text: ", 1)[1]]) as server:
        server.failures = {0}  # the first request fails once and is asked again
        options = quick_options(data, collected.image_folder, collected.output_dir, corrector=f"endpoint:{server.url}",
                                corrector_model_name="fixer-1", api_key_env="TEST_CORRECTOR_KEY", endpoint_workers=2)
        section = run_correct(options)
        assert len(server.requests) == len(PLANTED) + 1
        first = next(body for body in server.requests if message_text(body).endswith(PLANTED[0][0]))  # two in flight: any order
        assert first["path"] == "/v1/chat/completions" and first["model"] == "fixer-1" and first["temperature"] == 0
        assert first["messages"] == [{"role": "user", "content": template.replace("{alt_text}", PLANTED[0][0]).strip()}]
        assert first["authorization"] == "Bearer sk-test"

        lines = read_stage_lines(Path(options.output_dir) / "correct.jsonl")
        assert [line["alt_text"] for line in lines] == [kept for _, _, kept, _ in PLANTED]
        assert [line["alt_text_original"] for line in lines] == [alt_text for alt_text, *_ in PLANTED]
        assert [line["correction"]["kept_original"] for line in lines] == [reason for *_, reason in PLANTED]
        assert lines[1]["correction"]["changes"] == {"lost": ["2"], "added": ["3"]}
        assert lines[2]["correction"]["changes"] == {"lost": ["emma"], "added": []}
        assert section["corrected"] == 2 and section["unchanged"] == 1 and section["kept_original_count"] == 3
        ids = {reason: [record["id"] for record in group["records"]] for reason, group in section["kept_original"].items()}
        assert ids == {"edit_ratio": ["sft_4"], "number_changed": ["sft_1"], "name_changed": ["sft_2"]}
        assert read_report(options.output_dir)["correct"]["kept_original"] == section["kept_original"]

        # Another guard setting redoes the stage from the cached replies: nothing is asked again.
        asked = len(server.requests)
        looser = quick_options(data, collected.image_folder, collected.output_dir, corrector=f"endpoint:{server.url}",
                               corrector_model_name="fixer-1", max_edit_ratio=10.0)
        section = run_correct(looser)
        assert len(server.requests) == asked and not section["up_to_date"]
        assert read_stage_lines(Path(options.output_dir) / "correct.jsonl")[4]["alt_text"] == PLANTED[4][1]


# ---------------------------------------------------------------- local models

@pytest.fixture(scope="module")
def instruct_model(tmp_path_factory) -> Path:
    return write_tiny_instruct_checkpoint(tmp_path_factory.mktemp("instruct") / "model")


def short_alt_texts(synthetic_dir: Path, count: int) -> list[dict]:
    """SFT records with short alt-text (a correction's room in tokens follows its length)."""
    records = sft_records(synthetic_dir, count)
    for record, text in zip(records, ["A red square.", "Blue circle, left.", "Two green shapes.", "A felt star.", "Yellow."]):
        record["conversations"][1]["value"] = text
    return records


def test_a_local_instruct_model_corrects_in_batches_as_it_would_one_by_one(instruct_model, synthetic_dir, tmp_path):
    data = write_json(tmp_path / "alt.json", short_alt_texts(synthetic_dir, 5))
    prompt = tmp_path / "my_prompt.txt"
    prompt.write_text("Fix this alt-text, keep its facts.\nPost: {context}\nAlt-text: {alt_text}\n")
    options = quick_options(data, synthetic_dir / "image", tmp_path / "out", corrector=f"model:{instruct_model}",
                            correction_prompt=str(prompt), correction_batch_size=3, min_words=1)
    run_collect(options)
    section = run_correct(options)
    lines = read_stage_lines(tmp_path / "out" / "correct.jsonl")

    # One prompt at a time, straight through transformers: the same replies.
    tokenizer = AutoTokenizer.from_pretrained(instruct_model)
    model = AutoModelForCausalLM.from_pretrained(instruct_model).eval()
    limit = 2 * max(len(tokenizer(line["alt_text_original"], add_special_tokens=False)["input_ids"]) for line in lines) + 16
    for line in lines:
        filled = prompt.read_text().replace("{context}", line["context"]).replace("{alt_text}", line["alt_text_original"]).strip()
        text = tokenizer.apply_chat_template([{"role": "user", "content": filled}], tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            output = model.generate(ids, max_new_tokens=limit, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                    eos_token_id=tokenizer.eos_token_id)
        assert line["correction"]["reply"] == tokenizer.decode(output[0, ids.shape[1]:], skip_special_tokens=True).strip()
    # A random model's replies are no corrections: the guard kept every original, and counted them.
    assert all(line["alt_text"] == line["alt_text_original"] and not line["correction"]["accepted"] for line in lines)
    assert section["kept_original_count"] == 5 and section["corrected"] == 0


def test_a_vision_language_checkpoint_corrects_text_only(tiny_checkpoint, synthetic_dir, tmp_path):
    data = write_json(tmp_path / "alt.json", short_alt_texts(synthetic_dir, 2))
    options = quick_options(data, synthetic_dir / "image", tmp_path / "out", corrector=f"model:{tiny_checkpoint}",
                            correction_batch_size=2)
    run_collect(options)
    run_correct(options)
    lines = read_stage_lines(tmp_path / "out" / "correct.jsonl")
    checkpoint = load_checkpoint(tiny_checkpoint, padding_side="left")
    tokenizer = checkpoint.processor.tokenizer
    limit = 2 * max(len(tokenizer(line["alt_text_original"], add_special_tokens=False)["input_ids"]) for line in lines) + 16
    template = (PROMPT_FOLDER / "correction.txt").read_text()
    prompts = [template.replace("{alt_text}", line["alt_text_original"]).strip() for line in lines]
    expected = generate_batch(checkpoint.model.eval(), checkpoint.processor, checkpoint.family.inputs, prompts, [None] * 2,
                              GenerationSettings(temperature=0.0, num_beams=1, max_new_tokens=limit))
    assert [line["correction"]["reply"] for line in lines] == expected
    assert json.loads((tmp_path / "out" / "build_report.json").read_text())["correct"]["records"] == 2
