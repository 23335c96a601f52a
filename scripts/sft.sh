#!/usr/bin/env bash
# Stage 1: supervised fine-tuning on an alt-text corpus, the upstream recipe of configs/sft.yaml,
# under the DeepSpeed launcher (ZeRO-3 on 4 GPUs by default).
#
# Paths and the launch come from the environment (defaults in parentheses):
#   MODEL_PATH        HF-format LLaVA checkpoint              (llava-hf/llava-v1.6-vicuna-7b-hf)
#   DATA_PATH         SFT data file                           (playground/data/sft_train.json)
#   IMAGE_FOLDER      folder image paths are relative to      (playground/data/image)
#   OUTPUT_DIR        where the checkpoint is written         (checkpoints/sft)
#   NUM_GPUS          processes per node                      (4; HOSTFILE: its slots)
#   DEEPSPEED_CONFIG  ZeRO config; empty: no DeepSpeed config (scripts/zero3.json)
#   MASTER_PORT       rendezvous port                         (random in 29500-30499; several nodes: 29500)
#   NNODES            nodes, each running this script         (1)
#   NODE_RANK         this node's number, 0 at MASTER_ADDR    (several nodes: required)
#   MASTER_ADDR       node 0's address                        (several nodes: required)
#   HOSTFILE          a DeepSpeed hostfile instead of NNODES  (see scripts/_launch.sh)
# Every other default is configs/sft.yaml's; each of these, when set, overrides its value:
#   LEARNING_RATE  EPOCHS  MAX_LENGTH  BF16
#   PER_DEVICE_BATCH  micro-batch per process (--per_device_train_batch_size)
#   GLOBAL_BATCH      examples per optimizer step over all processes (--global_batch_size; it sets
#                     the gradient accumulation)
#   TRAIN_VISION_TOWER  true or false: this stage's half of the paradigm (README)
#   IMAGE_ASPECT_RATIO  auto, pad or anyres
#   MAX_GRAD_NORM (0: no clipping)  VISION_TOWER_LR, PROJECTOR_LR (unset: the learning rate)
#   EXTRA_ARGS        appended to the command line; later flags win (e.g. "--max_steps 10")
set -euo pipefail
cd "$(dirname "$0")/.."

STAGE=sft
MODEL_PATH=${MODEL_PATH:-llava-hf/llava-v1.6-vicuna-7b-hf}
DATA_PATH=${DATA_PATH:-playground/data/sft_train.json}
IMAGE_FOLDER=${IMAGE_FOLDER:-playground/data/image}
OUTPUT_DIR=${OUTPUT_DIR:-checkpoints/sft}
DEEPSPEED_CONFIG=${DEEPSPEED_CONFIG-scripts/zero3.json}
EXTRA_ARGS=${EXTRA_ARGS:-}

source scripts/_launch.sh

launch
