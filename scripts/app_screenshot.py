"""The README's screenshot of the browser app (docs/app.png): two checkpoints answering one of the
page's own examples, and that example's reference alt-text scored under both.

    .venv/bin/python scripts/app_screenshot.py [--model CKPT --model CKPT] [--example 2] [--output docs/app.png]

Default models: the demo's SFT and MCM-DPO checkpoints at seed 0 (runs/quickstart/seed0/sft and
.../mcmdpo, which `bash scripts/quickstart.sh` writes). Needs Debian's chromium and the dev extra's
playwright, as the browser test does (nothing is downloaded).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = [REPO_ROOT / "runs" / "quickstart" / "seed0" / name for name in ("sft", "mcmdpo")]


def main(argv: list[str] | None = None) -> int:
    from mcmdpo.app import browser
    from mcmdpo.app.examples import synthetic_examples, unrelated_post

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", default=None, help="a checkpoint (repeat; default: the demo's SFT and MCM-DPO, seed 0)")
    parser.add_argument("--example", type=int, default=2, choices=range(4), help="which of the page's four synthetic examples to answer")
    parser.add_argument("--output", default=str(REPO_ROOT / "docs" / "app.png"))
    parser.add_argument("--width", type=int, default=1400)
    args = parser.parse_args(argv)
    models = [Path(model) for model in args.model] if args.model else DEFAULT_MODELS
    missing = [str(model) for model in models if not model.is_dir()]
    if missing:
        print(f"error: no checkpoint at {', '.join(missing)} (bash scripts/quickstart.sh writes the demo's)", file=sys.stderr)
        return 2
    chromium = browser.find_chromium()
    if chromium is None:
        print("error: chromium not found (apt-get install chromium, or set MCMDPO_CHROMIUM)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        # The page's own four examples: the same records, written the same way (seed 0).
        examples = synthetic_examples(Path(scratch), 4)
        example = examples[args.example]
        with browser.serve(models) as server, browser.open_page(server.url, chromium, (args.width, 1000)) as (page, blocked):
            print(browser.upload_and_wait(page, example.image_path))
            page.click("text=Prompt and the unrelated post")
            browser.fill(page, "unrelated", unrelated_post(examples, args.example))  # as the example's row sets it
            page.click("text=Prompt and the unrelated post")
            print(browser.write_alt_text(page, example.post))
            for (alt_text, margins), model in zip(browser.answers(page, len(models)), models):
                print(f"{model}: {alt_text} | {margins}")
            print(browser.score_typed(page, example.alt_text)[1])
            output = Path(args.output)
            output.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(output), full_page=True)
            if blocked:
                print(f"note: the page asked for {blocked}; blocked", file=sys.stderr)
    print(f"screenshot: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
