#!/usr/bin/env bash
# One MCM-DPO step at LLaVA-1.5-7B's real shape on one GPU (random bf16 weights, nothing
# downloaded): plain vs packed step, activation checkpointing on, sdpa and flash-attention 2
# where installed; one table of step time, tokens/s and torch.cuda.max_memory_allocated.
# Estimated at 1-2 minutes on one H100/H200-class GPU, not yet measured (stopped at
# GPU_CHECK_TIMEOUT, 480 s by default).
# Without CUDA it runs the same code on a tiny shape in seconds (what CI calls: < 1 min).
# First, where torchvision is installed (the GPU machines), it checks that plain transformers'
# AutoProcessor loads the whole processor of the checkpoints this project writes
# (benchmarks/portable_processors.py, ~30 s), and prints whether training turns TF32 on.
#
#   bash benchmarks/gpu_check.sh [--records N] [--steps N]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
"$PYTHON" benchmarks/portable_processors.py
# The original trains with --tf32 True: a run's arguments turn it on where the GPU has TF32.
"$PYTHON" -c "
import torch
from mcmdpo.train.arguments import AltTextTrainingArguments
arguments = AltTextTrainingArguments(output_dir='/tmp/tf32-check', report_to='none')
print(f'tf32: --tf32 {arguments.tf32}, matmul.allow_tf32 {torch.backends.cuda.matmul.allow_tf32}')"
exec timeout "${GPU_CHECK_TIMEOUT:-480}" "$PYTHON" benchmarks/gpu_check.py "$@"
