#!/usr/bin/env bash
# Stage 2: MCM-DPO on the preference set, from the SFT checkpoint, the paper's recipe of
# configs/mcmdpo.yaml, under the DeepSpeed launcher (ZeRO-3 on 4 GPUs by
# default). The reference is the starting checkpoint; its log-probs are computed once and cached.
#
# Paths and the launch come from the environment (defaults in parentheses):
#   MODEL_PATH        the SFT checkpoint (policy start and reference)   (checkpoints/sft)
#   DATA_PATH         preference file                                   (playground/data/pref_train.json)
#   IMAGE_FOLDER      folder image paths are relative to                (playground/data/image)
#   OUTPUT_DIR        where the checkpoint is written                   (checkpoints/mcmdpo)
#   NUM_GPUS          processes per node                                (4; HOSTFILE: its slots)
#   DEEPSPEED_CONFIG  ZeRO config; empty: no DeepSpeed config           (scripts/zero3.json)
#   MASTER_PORT       rendezvous port                                   (random in 29500-30499; several nodes: 29500)
#   NNODES            nodes, each running this script                   (1)
#   NODE_RANK         this node's number, 0 at MASTER_ADDR              (several nodes: required)
#   MASTER_ADDR       node 0's address                                  (several nodes: required)
#   HOSTFILE          a DeepSpeed hostfile instead of NNODES            (see scripts/_launch.sh)
# Every other default is configs/mcmdpo.yaml's; each of these, when set, overrides its value:
#   LEARNING_RATE  EPOCHS  MAX_LENGTH  BF16  BETA
#   PER_DEVICE_BATCH  records per process and micro-step (--per_device_train_batch_size)
#   GLOBAL_BATCH      records per optimizer step over all processes (--global_batch_size; it sets
#                     the gradient accumulation)
#   SEQUENCE_PACKING  tree or none
#   NEGATIVE_IMAGE    diffusion, black, rotate, crop or random
#   DIFFUSION_STEP  NORMALIZER
#   TERMS             the terms switched on, e.g. "response image context"
#   TERM_WEIGHTS      NAME=W pairs, e.g. "response=1.0 image=0.5 context=0.5"
#   TRAIN_VISION_TOWER  true or false: this stage's half of the paradigm (README)
#   IMAGE_ASPECT_RATIO  auto, pad or anyres
#   MAX_GRAD_NORM (0: no clipping)  VISION_TOWER_LR, PROJECTOR_LR (unset: the learning rate)
#   EXTRA_ARGS        appended to the command line; later flags win (e.g. "--use_lora true")
set -euo pipefail
if [[ -n "${NUM_TERMS+set}" ]]; then  # the old variable, set (even empty): say what replaced it
    echo "error: NUM_TERMS is gone: name the terms instead, e.g. TERMS=\"response image\" for the first two (python -m mcmdpo.train --help lists them in order under --terms)" >&2
    exit 2
fi
cd "$(dirname "$0")/.."

STAGE=mcmdpo
MODEL_PATH=${MODEL_PATH:-checkpoints/sft}
DATA_PATH=${DATA_PATH:-playground/data/pref_train.json}
IMAGE_FOLDER=${IMAGE_FOLDER:-playground/data/image}
OUTPUT_DIR=${OUTPUT_DIR:-checkpoints/mcmdpo}
DEEPSPEED_CONFIG=${DEEPSPEED_CONFIG-scripts/zero3.json}
EXTRA_ARGS=${EXTRA_ARGS:-}

source scripts/_launch.sh

pass_if_set BETA --beta
pass_if_set SEQUENCE_PACKING --sequence_packing
pass_if_set NEGATIVE_IMAGE --negative_image
pass_if_set DIFFUSION_STEP --diffusion_step
pass_if_set NORMALIZER --normalizer
pass_words_if_set TERMS --terms
pass_words_if_set TERM_WEIGHTS --term_weights
launch
