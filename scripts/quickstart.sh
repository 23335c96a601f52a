#!/usr/bin/env bash
# The end-to-end demo on a laptop CPU (about 9.5 minutes on 2 cores): at each of three seeds, a tiny random
# LLaVA and the synthetic alt-text data; SFT; DPO and MCM-DPO from the same SFT checkpoint;
# inference with base, SFT, DPO and MCM-DPO on the test split; COCO scoring; held-out preference
# evaluation; object hallucination (CHAIR) of the alt-text; then over the seeds summary.json,
# report.md and plots (see mcmdpo/demo.py).
#   OUTPUT_DIR   where everything is written (runs/quickstart)
#   EXTRA_ARGS   flags of python -m mcmdpo.demo, e.g. "--seeds 0 1 2 3 4 --pref_steps 200"
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -f .venv/bin/activate ]] && source .venv/bin/activate
export TOKENIZERS_PARALLELISM=false
OUTPUT_DIR=${OUTPUT_DIR:-runs/quickstart}
# The CPU kernels the figures are computed with, the same on any x86-64 CPU with AVX2 (docs/demo.md).
export ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_CBWR=AVX2
# shellcheck disable=SC2086  # EXTRA_ARGS is split into flags on purpose
python -m mcmdpo.demo --output_dir "$OUTPUT_DIR" ${EXTRA_ARGS:-}
