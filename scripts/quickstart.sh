#!/usr/bin/env bash
# The end-to-end demo on a laptop CPU: a tiny random LLaVA, the synthetic alt-text data, SFT.
#   OUTPUT_DIR   where everything is written (runs/quickstart)
#   SFT_STEPS    SFT optimiser steps (300)
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -f .venv/bin/activate ]] && source .venv/bin/activate
OUTPUT_DIR=${OUTPUT_DIR:-runs/quickstart}
SFT_STEPS=${SFT_STEPS:-300}
export TOKENIZERS_PARALLELISM=false

mkdir -p "$OUTPUT_DIR"
python -m mcmdpo.model.tiny --output_dir "$OUTPUT_DIR/base"
python -m mcmdpo.data.synthetic --output_dir "$OUTPUT_DIR/data"
for split in sft_train pref_train pref_test; do
    python -m mcmdpo.data.validate "$OUTPUT_DIR/data/$split.json" --image_folder "$OUTPUT_DIR/data/image" --quiet
done
python -m mcmdpo.data.validate "$OUTPUT_DIR/data/test.jsonl" --image_folder "$OUTPUT_DIR/data/image" --quiet

python -m mcmdpo.train --stage sft \
    --model_name_or_path "$OUTPUT_DIR/base" \
    --data_path "$OUTPUT_DIR/data/sft_train.json" \
    --image_folder "$OUTPUT_DIR/data/image" \
    --output_dir "$OUTPUT_DIR/sft" \
    --max_steps "$SFT_STEPS" --per_device_train_batch_size 16 --learning_rate 2e-3 \
    --lr_scheduler_type cosine --warmup_steps 0.03 --logging_steps 10 \
    --save_strategy no --report_to tensorboard --use_cpu true --dataloader_num_workers 0 --seed 0

echo "SFT checkpoint: $OUTPUT_DIR/sft (training curves: $OUTPUT_DIR/sft/training_curves.png)"
