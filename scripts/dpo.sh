#!/usr/bin/env bash
# Stage 2, baseline: DPO on the preference set, from the SFT checkpoint (design §1.4 upstream
# defaults: lr 5e-7, 1 epoch, effective batch 64, beta 0.1, bf16, ZeRO-3 on 4 GPUs). The
# reference is the starting checkpoint; its log-probs are computed once and cached.
#
# Every path and size can be overridden from the environment:
#   MODEL_PATH        the SFT checkpoint (policy start and reference)   (checkpoints/sft)
#   DATA_PATH         preference file                                   (playground/data/pref_train.json)
#   IMAGE_FOLDER      folder image paths are relative to                (playground/data/image)
#   OUTPUT_DIR        where the checkpoint is written                   (checkpoints/dpo)
#   NUM_GPUS          processes to launch                               (4)
#   DEEPSPEED_CONFIG  ZeRO config                                       (scripts/zero3.json)
#   PER_DEVICE_BATCH  records per process and step                      (2)
#   GLOBAL_BATCH      effective batch in records                        (64)
#   LEARNING_RATE (5e-7)  EPOCHS (1)  MAX_LENGTH (2048)  BF16 (true)  BETA (0.1)
#   TRAIN_VISION_TOWER  true (default, as the original) or false: this stage's half of the paradigm (README)
#   IMAGE_ASPECT_RATIO  auto (default: pad for LLaVA, one 336 tile, 576 image tokens, as the original), pad or anyres
#   MAX_GRAD_NORM (0: no clipping, as the original)  VISION_TOWER_LR, PROJECTOR_LR (default: LEARNING_RATE)
#   EXTRA_ARGS        appended to the command line; later flags win (e.g. "--use_lora true")
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL_PATH=${MODEL_PATH:-checkpoints/sft}
DATA_PATH=${DATA_PATH:-playground/data/pref_train.json}
IMAGE_FOLDER=${IMAGE_FOLDER:-playground/data/image}
OUTPUT_DIR=${OUTPUT_DIR:-checkpoints/dpo}
NUM_GPUS=${NUM_GPUS:-4}
DEEPSPEED_CONFIG=${DEEPSPEED_CONFIG:-scripts/zero3.json}
PER_DEVICE_BATCH=${PER_DEVICE_BATCH:-2}
GLOBAL_BATCH=${GLOBAL_BATCH:-64}
LEARNING_RATE=${LEARNING_RATE:-5e-7}
EPOCHS=${EPOCHS:-1}
MAX_LENGTH=${MAX_LENGTH:-2048}
BF16=${BF16:-true}
BETA=${BETA:-0.1}
EXTRA_ARGS=${EXTRA_ARGS:-}

source scripts/_launch.sh

launch --stage dpo --beta "$BETA"
