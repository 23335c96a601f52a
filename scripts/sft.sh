#!/usr/bin/env bash
# Stage 1: supervised fine-tuning on an alt-text corpus (design §1.4 upstream defaults:
# lr 2e-5, 1 epoch, effective batch 128, cosine, warmup 3%, max length 2048, gradient
# checkpointing, bf16, ZeRO-3 on 4 GPUs).
#
# Every path and size can be overridden from the environment:
#   MODEL_PATH        HF-format LLaVA checkpoint              (llava-hf/llava-v1.6-vicuna-7b-hf)
#   DATA_PATH         SFT data file                           (playground/data/sft_train.json)
#   IMAGE_FOLDER      folder image paths are relative to      (playground/data/image)
#   OUTPUT_DIR        where the checkpoint is written         (checkpoints/sft)
#   NUM_GPUS          processes to launch                     (4)
#   DEEPSPEED_CONFIG  ZeRO config                             (scripts/zero3.json)
#   PER_DEVICE_BATCH  micro-batch per process                 (4)
#   GLOBAL_BATCH      effective batch; accumulation = GLOBAL_BATCH / (PER_DEVICE_BATCH * NUM_GPUS)  (128)
#   LEARNING_RATE (2e-5)  EPOCHS (1)  MAX_LENGTH (2048)  BF16 (true)
#   TRAIN_VISION_TOWER  true (default, as the original) or false: this stage's half of the paradigm (README)
#   IMAGE_ASPECT_RATIO  auto (default: pad for LLaVA, one 336 tile, 576 image tokens, as the original), pad or anyres
#   MAX_GRAD_NORM (0: no clipping, as the original)  VISION_TOWER_LR, PROJECTOR_LR (default: LEARNING_RATE)
#   EXTRA_ARGS        appended to the command line; later flags win (e.g. "--max_steps 10")
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL_PATH=${MODEL_PATH:-llava-hf/llava-v1.6-vicuna-7b-hf}
DATA_PATH=${DATA_PATH:-playground/data/sft_train.json}
IMAGE_FOLDER=${IMAGE_FOLDER:-playground/data/image}
OUTPUT_DIR=${OUTPUT_DIR:-checkpoints/sft}
NUM_GPUS=${NUM_GPUS:-4}
DEEPSPEED_CONFIG=${DEEPSPEED_CONFIG:-scripts/zero3.json}
PER_DEVICE_BATCH=${PER_DEVICE_BATCH:-4}
GLOBAL_BATCH=${GLOBAL_BATCH:-128}
LEARNING_RATE=${LEARNING_RATE:-2e-5}
EPOCHS=${EPOCHS:-1}
MAX_LENGTH=${MAX_LENGTH:-2048}
BF16=${BF16:-true}
EXTRA_ARGS=${EXTRA_ARGS:-}

source scripts/_launch.sh

launch --stage sft
