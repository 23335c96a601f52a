# Shared by the stage scripts (sourced after each has set its defaults): the flags every stage
# takes, gradient accumulation from the batch sizes, and the DeepSpeed launch.
if (( GLOBAL_BATCH % (PER_DEVICE_BATCH * NUM_GPUS) != 0 )); then
    echo "error: GLOBAL_BATCH=$GLOBAL_BATCH is not a multiple of PER_DEVICE_BATCH*NUM_GPUS=$((PER_DEVICE_BATCH * NUM_GPUS))" >&2
    exit 2
fi
GRAD_ACCUM=$(( GLOBAL_BATCH / (PER_DEVICE_BATCH * NUM_GPUS) ))
MASTER_PORT=${MASTER_PORT:-$(( 29500 + RANDOM % 1000 ))}
# The launcher of the active environment, else the one scripts/install.sh put in .venv.
if ! command -v deepspeed >/dev/null && [[ -x .venv/bin/deepspeed ]]; then
    export PATH="$PWD/.venv/bin:$PATH"
fi

# Upstream defaults shared by every stage (design §1.4); each can be overridden from the environment.
TRAIN_VISION_TOWER=${TRAIN_VISION_TOWER:-true}   # the original trains the vision encoder in both stages: paradigm (d)
IMAGE_ASPECT_RATIO=${IMAGE_ASPECT_RATIO:-auto}   # auto: what the checkpoint records, else pad for LLaVA
                                                 # (a square, one 336 tile, 576 image tokens, also for LLaVA-1.6)
MAX_GRAD_NORM=${MAX_GRAD_NORM:-0}                # the original clips no gradient
VISION_TOWER_LR=${VISION_TOWER_LR:-}             # empty: the main learning rate, as the original
PROJECTOR_LR=${PROJECTOR_LR:-}

COMMON_ARGS=(
    --model_name_or_path "$MODEL_PATH"
    --data_path "$DATA_PATH"
    --image_folder "$IMAGE_FOLDER"
    --output_dir "$OUTPUT_DIR"
    --train_vision_tower "$TRAIN_VISION_TOWER"
    --image_aspect_ratio "$IMAGE_ASPECT_RATIO"
    --max_grad_norm "$MAX_GRAD_NORM"
    --num_train_epochs "$EPOCHS"
    --per_device_train_batch_size "$PER_DEVICE_BATCH"
    --gradient_accumulation_steps "$GRAD_ACCUM"
    --learning_rate "$LEARNING_RATE"
    --lr_scheduler_type cosine
    --warmup_steps 0.03
    --weight_decay 0.0
    --max_length "$MAX_LENGTH"
    --activation_checkpointing true
    --bf16 "$BF16"
    --logging_steps 1
    --save_strategy steps --save_steps 500 --save_total_limit 1
    --dataloader_num_workers 4
    --report_to tensorboard
)
[[ -n "$VISION_TOWER_LR" ]] && COMMON_ARGS+=(--vision_tower_lr "$VISION_TOWER_LR")
[[ -n "$PROJECTOR_LR" ]] && COMMON_ARGS+=(--projector_lr "$PROJECTOR_LR")

# launch STAGE_FLAGS...: the stage's own flags, then the common ones, then DEEPSPEED_CONFIG, then
# EXTRA_ARGS last so that its flags win.
launch() {
    local deepspeed_args=()
    [[ -n "$DEEPSPEED_CONFIG" ]] && deepspeed_args=(--deepspeed "$DEEPSPEED_CONFIG")
    # DeepSpeed's CPU accelerator (no GPU): the Trainer must then set up gloo processes itself.
    [[ "${DS_ACCELERATOR:-}" == cpu ]] && deepspeed_args+=(--use_cpu true)
    set -x
    # shellcheck disable=SC2086  # EXTRA_ARGS is split into flags on purpose
    deepspeed --num_gpus "$NUM_GPUS" --master_port "$MASTER_PORT" --module mcmdpo.train \
        "$@" "${COMMON_ARGS[@]}" "${deepspeed_args[@]}" $EXTRA_ARGS
}
