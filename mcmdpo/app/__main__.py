"""python -m mcmdpo.app --model CKPT [--model CKPT ...] [--host 127.0.0.1] [--port 7860] ...
python -m mcmdpo.app annotate --candidates FILE --image_folder DIR --db FILE [--overlap K] ...
python -m mcmdpo.app export --db FILE --output pairs.json [--min_agreement F]

With ``--model``: serves the comparison page of :mod:`mcmdpo.app.page` for the given checkpoints
on this machine only (no share link, no analytics); see docs/app.md. ``annotate`` serves the
annotation page (:mod:`mcmdpo.app.annotate_cli`) and ``export`` turns its answers into pairs
(:mod:`mcmdpo.app.export`); see docs/annotation.md."""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from mcmdpo.app.uploads import DEFAULT_MAX_PIXELS, DEFAULT_MAX_TEXT_CHARS, DEFAULT_MAX_UPLOAD_MB

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 7860


def build_parser() -> argparse.ArgumentParser:
    from mcmdpo.data.conversation import DEFAULT_MAX_LENGTH
    from mcmdpo.data.negatives import NegativeConfig
    from mcmdpo.data.templates import CONVERSATION_TEMPLATES
    from mcmdpo.model.loading import DTYPES, IMAGE_ASPECT_RATIOS

    negatives = NegativeConfig()  # the evaluation's

    parser = argparse.ArgumentParser(prog="python -m mcmdpo.app", description="Try checkpoints in the browser: alt-text, log-probs and margins side by side.",
                                     epilog="Also: python -m mcmdpo.app annotate --help (people choose between alt-texts), "
                                            "python -m mcmdpo.app export --help (their answers as pairs).")
    parser.add_argument("--model", action="append", required=True, metavar="[LABEL=]CKPT",
                        help="a checkpoint (any family the project supports, or LoRA adapters); repeat for several; "
                             "LABEL names its column (default: the folder's name, with its parents where two are alike)")
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--examples", default=None, help="a test or preference file whose first records are the page's examples "
                                                           "(default: a few synthetic test records written into a temporary folder)")
    parser.add_argument("--image_folder", default=None, help="folder the --examples file's image paths are relative to")
    parser.add_argument("--num_examples", type=int, default=4)
    parser.add_argument("--instruction", default=None, help="the prompt before the post, \\n a line break (default: the data's, "
                                                            "'Given an image and context, generate alt-text for the image.\\nContext:\\n')")
    parser.add_argument("--image_aspect_ratio", choices=IMAGE_ASPECT_RATIOS, default="auto", help="image protocol (default: the checkpoint's)")
    parser.add_argument("--conversation_template", choices=CONVERSATION_TEMPLATES, default="auto")
    parser.add_argument("--dtype", choices=sorted(set(DTYPES) - {"auto"}), default="float32",
                        help="float32 (the preference evaluation's) or bfloat16 / float16 to halve a large model's memory on a GPU")
    parser.add_argument("--device", default=None, help="default: cuda where available, else cpu")
    parser.add_argument("--max_new_tokens", type=int, default=64, help="the page's starting value (its slider goes to 512)")
    parser.add_argument("--num_beams", type=int, default=3, help="the page's starting value")
    parser.add_argument("--diffusion_step", type=int, default=negatives.diffusion_step, help="noise of the diffused image of the image margin (the evaluation's)")
    parser.add_argument("--negative_seed", type=int, default=negatives.seed, help="seed of that noise (the evaluation's)")
    parser.add_argument("--max_length", type=int, default=DEFAULT_MAX_LENGTH, help="longest scored sequence in tokens (the evaluation's)")
    parser.add_argument("--max_pixels", type=int, default=DEFAULT_MAX_PIXELS, help="largest image accepted, in pixels")
    parser.add_argument("--max_upload_mb", type=float, default=DEFAULT_MAX_UPLOAD_MB, help="largest upload accepted, in MB")
    parser.add_argument("--max_text_chars", type=int, default=DEFAULT_MAX_TEXT_CHARS, help="longest post or alt-text accepted")
    return parser


def parse_model(argument: str) -> tuple[str | None, str]:
    """(label or None, path) of a --model value: ``LABEL=CKPT`` or a path (one that exists wins)."""
    label, sep, path = argument.partition("=")
    if not sep or Path(argument).exists() or not label:
        return None, argument
    return label, path


def unique_labels(paths: list[str]) -> list[str]:
    """Each checkpoint's folder name, with as many parent folders as it takes to tell them apart."""
    parts = [Path(path).resolve().parts if Path(path).exists() else Path(path).parts for path in paths]
    for depth in range(1, max(map(len, parts)) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [f"{number + 1}: {path}" for number, path in enumerate(paths)]


def compare_main(argv: list[str] | None = None) -> int:
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # no telemetry, no version check: nothing leaves the machine
    args = build_parser().parse_args(argv)
    start = time.perf_counter()

    from PIL import Image

    from mcmdpo.app.engine import LoadOptions, load_checkpoint
    from mcmdpo.app.examples import examples_from_file, synthetic_examples
    from mcmdpo.data.negatives import NegativeConfig
    from mcmdpo.data.records import DataValidationError
    from mcmdpo.data.synthetic import INSTRUCTION
    from mcmdpo.model.loading import CheckpointError

    # Our own limit decides, with its numbers; PIL's (89.5 M pixels, an error at twice that) only where ours is higher.
    Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, args.max_pixels)
    parsed = [parse_model(value) for value in args.model]
    defaults = unique_labels([path for _, path in parsed])
    options = LoadOptions(args.image_aspect_ratio, args.conversation_template, args.dtype, args.device)
    workdir = Path(tempfile.mkdtemp(prefix="mcmdpo-app-"))
    atexit.register(shutil.rmtree, workdir, True)
    try:
        negatives = NegativeConfig(diffusion_step=args.diffusion_step, seed=args.negative_seed)  # the image margin: diffusion noise
        checkpoints = []
        for number, ((label, path), default) in enumerate(zip(parsed, defaults)):
            print(f"[{number + 1}/{len(parsed)}] ", end="", file=sys.stderr)
            checkpoints.append(load_checkpoint(path, label or default, options))
        if args.examples:
            examples = examples_from_file(args.examples, args.image_folder, args.num_examples, workdir)
            examples_label = f"Examples from {args.examples}: click one, then Write alt-text"
        else:
            examples = synthetic_examples(workdir / "synthetic", args.num_examples)
            examples_label = "Examples (the synthetic task's test records, as the demo's checkpoints learn it): click one, then Write alt-text"
    except (CheckpointError, DataValidationError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    print("building the page ...", file=sys.stderr, flush=True)
    from mcmdpo.app.page import PageSettings, build_page

    settings = PageSettings(
        instruction=args.instruction.replace("\\n", "\n") if args.instruction is not None else INSTRUCTION,
        max_pixels=args.max_pixels, max_upload_bytes=int(args.max_upload_mb * 1e6), max_text_chars=args.max_text_chars,
        negatives=negatives, max_length=args.max_length, max_new_tokens=args.max_new_tokens, num_beams=args.num_beams,
    )
    page = build_page(checkpoints, examples, settings, examples_label)
    page.queue(default_concurrency_limit=1)  # one request at a time: the models share this machine's cores
    try:
        page.launch(
            server_name=args.host, server_port=args.port, share=False, inbrowser=False, show_error=True, quiet=True,
            max_file_size=int(args.max_upload_mb * 1e6), allowed_paths=[str(workdir)], enable_monitoring=False,
            footer_links=[], mcp_server=False, pwa=False, ssr_mode=False, prevent_thread_lock=True,
        )
    except OSError as error:  # e.g. the port is taken
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"ready in {time.perf_counter() - start:.1f} s: {len(checkpoints)} model(s) on {page.local_url} (Ctrl-C stops it)",
          file=sys.stderr, flush=True)
    try:
        page.block_thread()
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    """The comparison page, or the subcommand named first."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "annotate":
        from mcmdpo.app.annotate_cli import main as annotate_main

        return annotate_main(argv[1:])
    if argv and argv[0] == "export":
        from mcmdpo.app.export import main as export_main

        return export_main(argv[1:])
    return compare_main(argv)


if __name__ == "__main__":
    sys.exit(main())
