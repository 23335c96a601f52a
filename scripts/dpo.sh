#!/usr/bin/env bash
# Stage 2, baseline: DPO on the preference set, from the SFT checkpoint, the upstream recipe of
# configs/dpo.yaml, under the DeepSpeed launcher (ZeRO-3 on 4 GPUs by default). The
# reference is the starting checkpoint; its log-probs are computed once and cached.
#
# Paths and the launch come from the environment (defaults in parentheses):
#   MODEL_PATH        the SFT checkpoint (policy start and reference)   (checkpoints/sft)
#   DATA_PATH         preference file                                   (playground/data/pref_train.json)
#   IMAGE_FOLDER      folder image paths are relative to                (playground/data/image)
#   OUTPUT_DIR        where the checkpoint is written                   (checkpoints/dpo)
#   NUM_GPUS          processes per node                                (4; HOSTFILE: its slots)
#   DEEPSPEED_CONFIG  ZeRO config; empty: no DeepSpeed config           (scripts/zero3.json)
#   MASTER_PORT       rendezvous port                                   (random in 29500-30499; several nodes: 29500)
#   NNODES            nodes, each running this script                   (1)
#   NODE_RANK         this node's number, 0 at MASTER_ADDR              (several nodes: required)
#   MASTER_ADDR       node 0's address                                  (several nodes: required)
#   HOSTFILE          a DeepSpeed hostfile instead of NNODES            (see scripts/_launch.sh)
# Every other default is configs/dpo.yaml's; each of these, when set, overrides its value:
#   LEARNING_RATE  EPOCHS  MAX_LENGTH  BF16  BETA
#   PER_DEVICE_BATCH  records per process and micro-step (--per_device_train_batch_size)
#   GLOBAL_BATCH      records per optimizer step over all processes (--global_batch_size; it sets
#                     the gradient accumulation)
#   SEQUENCE_PACKING  tree or none
#   TRAIN_VISION_TOWER  true or false: this stage's half of the paradigm (README)
#   IMAGE_ASPECT_RATIO  auto, pad or anyres
#   MAX_GRAD_NORM (0: no clipping)  VISION_TOWER_LR, PROJECTOR_LR (unset: the learning rate)
#   EXTRA_ARGS        appended to the command line; later flags win (e.g. "--use_lora true")
set -euo pipefail
cd "$(dirname "$0")/.."

STAGE=dpo
MODEL_PATH=${MODEL_PATH:-checkpoints/sft}
DATA_PATH=${DATA_PATH:-playground/data/pref_train.json}
IMAGE_FOLDER=${IMAGE_FOLDER:-playground/data/image}
OUTPUT_DIR=${OUTPUT_DIR:-checkpoints/dpo}
DEEPSPEED_CONFIG=${DEEPSPEED_CONFIG-scripts/zero3.json}
EXTRA_ARGS=${EXTRA_ARGS:-}

source scripts/_launch.sh

pass_if_set BETA --beta
pass_if_set SEQUENCE_PACKING --sequence_packing
launch
