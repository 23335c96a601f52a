"""Check a data file before training or inference:

    python -m mcmdpo.data.validate DATA_FILE --image_folder DIR [--kind preference|sft|test]

Exits 0 when every record and image is good, 1 otherwise, listing every problem found. Warnings
(the same idx on several records, an image path that leaves the image folder) are listed too,
each line starting "warning: ", and do not change the exit status.
"""

from __future__ import annotations

import argparse
import sys

from mcmdpo.data.loading import find_problems
from mcmdpo.data.parsing import KINDS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mcmdpo.data.validate", description=__doc__.split("\n\n")[0])
    parser.add_argument("data_files", nargs="+", metavar="DATA_FILE", help="JSON array, JSON Lines or parquet file(s)")
    parser.add_argument("--image_folder", default=None, help="folder that image paths are relative to")
    parser.add_argument("--kind", choices=KINDS, default=None, help="what the file holds (default: guessed from its first record)")
    parser.add_argument("--skip_images", action="store_true", help="check records only, do not decode images")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    failed = False
    for data_file in args.data_files:
        loaded, problems = find_problems(
            data_file, args.kind, args.image_folder, check_images=not args.skip_images, show_progress=not args.quiet
        )
        for problem in problems:
            print(problem)
        for warning in loaded.warnings:
            print(f"warning: {warning}")
        status = "OK" if not problems else f"{len(problems)} problem(s)"
        if loaded.warnings:
            status += f", {len(loaded.warnings)} warning(s)"
        print(f"{data_file}: {len(loaded.examples)} valid {loaded.kind} record(s), {status}")
        failed = failed or bool(problems)
    return 1 if failed else 0


def main_exit() -> None:
    sys.exit(main())


if __name__ == "__main__":
    main_exit()
