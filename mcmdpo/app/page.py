"""The web page: an image, a post and decoding settings in; every loaded checkpoint's alt-text and
margins out, side by side; a typed alt-text scored under each. Every request is answered: a bad
input or a failure becomes a message in the page, never an exception out of the server."""

from __future__ import annotations

import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import gradio as gr

from mcmdpo.data.conversation import DEFAULT_MAX_LENGTH
from mcmdpo.app.engine import Checkpoint, Score, ScoringError, build_question, generate, score
from mcmdpo.app.examples import Example, unrelated_post
from mcmdpo.app.uploads import DEFAULT_MAX_PIXELS, DEFAULT_MAX_TEXT_CHARS, InputError, read_image, require_text
from mcmdpo.data.negatives import NegativeConfig
from mcmdpo.data.synthetic import INSTRUCTION
from mcmdpo.eval.generation import GenerationSettings

GREEDY, SAMPLING = "greedy / beam search", "sampling"

INTRO = """# Alt-text from your checkpoints
Drop an image, paste the social-media post it comes with, and every loaded checkpoint writes its
alt-text. Under each answer: **log p**, the alt-text's log-probability under that model (summed over
its tokens); the **image margin**, log p(alt-text | post, image) − log p(alt-text | post, diffused
image); and the **context margin**, the same against an unrelated post. They are computed as the
held-out preference evaluation computes them (`python -m mcmdpo.eval.preferences`): a positive
margin means the real image (the real post) makes the alt-text more likely, and the larger it is,
the more the answer depends on it."""


@dataclass(frozen=True)
class PageSettings:
    """What every request is checked and scored with (the command line's flags)."""

    instruction: str = INSTRUCTION
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_upload_bytes: int | None = None
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS
    negatives: NegativeConfig = NegativeConfig()
    max_length: int = DEFAULT_MAX_LENGTH
    max_new_tokens: int = 64
    num_beams: int = 3


def format_score(value: Score) -> str:
    """One model's numbers as one line of the page."""
    cut = " (alt-text cut at --max_length)" if value.truncated else ""
    return (f"**image margin** {value.image_margin:+.3f} · **context margin** {value.context_margin:+.3f} · "
            f"log p {value.logp:.2f}{cut}")


def error_message(error: Exception, refused: str = "") -> str:
    """What the page shows for a failed request (``refused``: what could not be done, e.g. "Cannot
    write alt-text"): an input's own message, else the exception."""
    lead = f"⚠️ {refused}: " if refused else "⚠️ "
    if isinstance(error, (InputError, ScoringError)):
        return f"{lead}{error}"
    return f"{lead}something went wrong ({type(error).__name__}: {error}). The server is still running; the console has the details."


def log_failure(what: str, error: Exception) -> None:
    if isinstance(error, (InputError, ScoringError)):
        print(f"{what}: refused: {error}", file=sys.stderr, flush=True)
    else:
        print(f"{what}: failed:\n{traceback.format_exc()}", file=sys.stderr, flush=True)


def decoding(strategy: str, max_new_tokens: float, num_beams: float, temperature: float, top_p: float) -> GenerationSettings:
    """The page's decoding controls as generation settings (temperature 0 is greedy / beam search)."""
    sampling = strategy == SAMPLING
    if sampling and not temperature > 0:
        raise InputError("Sampling needs a temperature above 0.")
    return GenerationSettings(
        temperature=float(temperature) if sampling else 0.0,
        num_beams=max(1, int(num_beams)),
        max_new_tokens=max(1, int(max_new_tokens)),
        top_p=float(top_p) if sampling and top_p < 1 else None,
    )


class Handlers:
    """The page's requests, each answering with the values of its outputs."""

    def __init__(self, checkpoints: Sequence[Checkpoint], settings: PageSettings):
        self.checkpoints = list(checkpoints)
        self.settings = settings

    def _inputs(self, image_path: str | None, instruction: str, post: str, unrelated: str) -> tuple[Any, str, str]:
        image = read_image(image_path, self.settings.max_pixels, self.settings.max_upload_bytes)
        post = require_text(post, "post (the context)", self.settings.max_text_chars)
        unrelated = require_text(unrelated, "unrelated post (for the context margin)", self.settings.max_text_chars)
        instruction = instruction if instruction is not None else self.settings.instruction
        return image, build_question(instruction, post), build_question(instruction, unrelated)

    def preview(self, image_path: str | None) -> tuple[Any, str]:
        """The uploaded image as the models will see it, or the message saying why not."""
        if not image_path:
            return None, ""
        try:
            image = read_image(image_path, self.settings.max_pixels, self.settings.max_upload_bytes)
            return image, f"Image {image.width} x {image.height}: ready."
        except Exception as error:  # noqa: BLE001 - a request never takes the server down
            log_failure("upload", error)
            return None, error_message(error)

    def describe(
        self, image_path: str | None, instruction: str, post: str, unrelated: str,
        strategy: str, max_new_tokens: float, num_beams: float, temperature: float, top_p: float, seed: float,
    ) -> Iterator[list[Any]]:
        """Alt-text and margins from every checkpoint, shown as each finishes:
        [message, alt-text 1, margins 1, alt-text 2, margins 2, ...]."""
        count = len(self.checkpoints)
        values: list[Any] = ["", *[""] * (2 * count)]
        try:
            image, question, unrelated_question = self._inputs(image_path, instruction, post, unrelated)
            settings = decoding(strategy, max_new_tokens, num_beams, temperature, top_p)
        except Exception as error:  # noqa: BLE001
            log_failure("alt-text request", error)
            values[0] = error_message(error, "Cannot write alt-text")
            yield values
            return
        start = time.perf_counter()
        failures = 0
        for number, checkpoint in enumerate(self.checkpoints):
            values[0] = f"Writing alt-text with {checkpoint.label} ({number + 1} of {count}) ..."
            yield values
            try:
                alt_text = generate(checkpoint, image, question, settings, int(seed or 0))
                values[1 + 2 * number] = alt_text
                values[2 + 2 * number] = format_score(score(
                    checkpoint, image, question, alt_text, unrelated_question, self.settings.negatives, self.settings.max_length
                ))
            except Exception as error:  # noqa: BLE001
                failures += 1
                log_failure(f"{checkpoint.label}", error)
                values[2 + 2 * number] = error_message(error)
        took = time.perf_counter() - start
        values[0] = (f"{count - failures} of {count} models answered in {took:.1f} s"
                     + (" (see the message under each that did not)." if failures else "."))
        print(f"alt-text request: {values[0]}", file=sys.stderr, flush=True)
        yield values

    def score_typed(self, image_path: str | None, instruction: str, post: str, unrelated: str, alt_text: str) -> list[Any]:
        """The typed alt-text's log-prob and margins under every checkpoint, as a table: [message, table]."""
        try:
            image, question, unrelated_question = self._inputs(image_path, instruction, post, unrelated)
            alt_text = require_text(alt_text, "alt-text to score", self.settings.max_text_chars)
        except Exception as error:  # noqa: BLE001
            log_failure("score request", error)
            return [error_message(error, "Cannot score"), ""]
        start = time.perf_counter()
        rows = ["| model | log p | image margin | context margin |", "|---|---|---|---|"]
        problems = []
        for checkpoint in self.checkpoints:
            try:
                value = score(checkpoint, image, question, alt_text, unrelated_question, self.settings.negatives, self.settings.max_length)
                rows.append(f"| {checkpoint.label} | {value.logp:.2f} | {value.image_margin:+.3f} | {value.context_margin:+.3f} |")
            except Exception as error:  # noqa: BLE001
                log_failure(f"{checkpoint.label} score", error)
                problems.append(error_message(error))
                rows.append(f"| {checkpoint.label} | – | – | – |")
        message = " ".join(problems) or f"Scored under {len(self.checkpoints)} models in {time.perf_counter() - start:.1f} s."
        return [message, "\n".join(rows)]


def build_page(
    checkpoints: Sequence[Checkpoint], examples: Sequence[Example], settings: PageSettings = PageSettings(),
    examples_label: str = "Examples: click one, then Write alt-text",
) -> gr.Blocks:
    """The Gradio page for ``checkpoints`` (one column each), with ``examples`` to click."""
    handlers = Handlers(checkpoints, settings)
    example_list = list(examples)
    with gr.Blocks(title="mcmdpo: alt-text", analytics_enabled=False) as page:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Image (drop it here)", file_types=["image"], type="filepath", elem_id="image-upload", height=120)
                preview = gr.Image(label="What the models see", interactive=False, height=180, elem_id="preview")
                limit_mb = f", {settings.max_upload_bytes / 1e6:g} MB" if settings.max_upload_bytes else ""
                gr.Markdown(f"Limits: images up to {settings.max_pixels:,} pixels{limit_mb}; posts and alt-text up to "
                            f"{settings.max_text_chars:,} characters.", elem_id="limits")
            with gr.Column(scale=2):
                post = gr.Textbox(label="Post (the context)", lines=3, placeholder="Paste the social-media post here", elem_id="post")
                with gr.Row():
                    strategy = gr.Radio([GREEDY, SAMPLING], value=GREEDY, label="Decoding", elem_id="strategy")
                    max_new_tokens = gr.Slider(1, 512, value=settings.max_new_tokens, step=1, label="Max new tokens")
                    num_beams = gr.Slider(1, 8, value=settings.num_beams, step=1, label="Beams")
                with gr.Row():
                    temperature = gr.Slider(0.05, 2.0, value=0.7, step=0.05, label="Temperature (sampling)")
                    top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Top-p (sampling; 1 = off)")
                    seed = gr.Number(value=0, precision=0, label="Seed (sampling)")
                with gr.Accordion("Prompt and the unrelated post", open=False):
                    instruction = gr.Textbox(label="Instruction (the prompt before the post)", value=settings.instruction, lines=2)
                    unrelated = gr.Textbox(
                        label="Unrelated post (the context margin compares the alt-text under it)",
                        value=unrelated_post(example_list, 0), lines=2, elem_id="unrelated",
                    )
                submit = gr.Button("Write alt-text", variant="primary", elem_id="submit")
        message = gr.Markdown(elem_id="message")
        outputs: list[gr.components.Component] = []
        with gr.Row(equal_height=True):
            for number, checkpoint in enumerate(checkpoints):
                with gr.Column():
                    gr.Markdown(f"### {checkpoint.label}\n`{checkpoint.path}`")
                    outputs.append(gr.Textbox(label=f"{checkpoint.label}: alt-text", lines=3, interactive=False, elem_id=f"alt-text-{number}"))
                    outputs.append(gr.Markdown(elem_id=f"margins-{number}"))
        with gr.Row():
            typed = gr.Textbox(label="Your alt-text, to score under every model", lines=2, elem_id="typed", scale=3)
            score_button = gr.Button("Score this alt-text", elem_id="score", scale=1)
        score_table = gr.Markdown(elem_id="scores")
        if example_list:
            # The instruction is a column only where an example's differs from the page's.
            own_instruction = any(e.instruction != settings.instruction for e in example_list)
            columns = [upload, *([instruction] if own_instruction else []), post, typed, unrelated]
            gr.Examples(
                [[str(e.image_path), *([e.instruction] if own_instruction else []), e.post, e.alt_text, unrelated_post(example_list, n)]
                 for n, e in enumerate(example_list)],
                columns, label=examples_label,
            )
        upload.change(handlers.preview, upload, [preview, message])
        request = [upload, instruction, post, unrelated]
        submit.click(handlers.describe, [*request, strategy, max_new_tokens, num_beams, temperature, top_p, seed], [message, *outputs])
        score_button.click(handlers.score_typed, [*request, typed], [message, score_table])
    return page

