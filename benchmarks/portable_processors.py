"""Whether plain transformers' AutoProcessor loads the whole processor (video part included) of
the checkpoints this project writes, for the families whose processors have a video part. Needs
torchvision (the GPU machines have it; the CPU ones here do not, where it only says so).

    python benchmarks/portable_processors.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from transformers.utils import is_torchvision_available

from mcmdpo.model.processors import load_checkpoint_processor
from mcmdpo.tiny import TinyModelSpec, write_tiny_checkpoint

FAMILIES = ("qwen2_5_vl", "qwen3_vl", "llava_onevision")
LOAD = """
import json, sys
from transformers import AutoProcessor
processor = AutoProcessor.from_pretrained(sys.argv[1])
print(json.dumps({"class": type(processor).__name__, "video": type(processor.video_processor).__name__}))
"""


def main() -> int:
    if not is_torchvision_available():
        print("portable processors: skipped (torchvision is not installed here; AutoProcessor needs it for video processors)")
        return 0
    failures = 0
    with tempfile.TemporaryDirectory() as folder:
        for name in FAMILIES:
            written = write_tiny_checkpoint(Path(folder) / name, TinyModelSpec(architecture=name))
            resaved = Path(folder) / f"{name}_resaved"
            load_checkpoint_processor(written).save_pretrained(resaved)  # as training saves it
            for path in (written, resaved):
                result = subprocess.run([sys.executable, "-c", LOAD, str(path)], capture_output=True, text=True, cwd=folder)
                ok = result.returncode == 0
                failures += not ok
                shown = json.loads(result.stdout.splitlines()[-1]) if ok else result.stderr.strip().splitlines()[-1:]
                print(f"portable processors: {path.name}: {'loads' if ok else 'FAILS'} {shown}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
