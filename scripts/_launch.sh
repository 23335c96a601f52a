# Shared by the stage scripts: derive gradient accumulation and launch under DeepSpeed.
# Sourced after the script has set NUM_GPUS, PER_DEVICE_BATCH, GLOBAL_BATCH and DEEPSPEED_CONFIG.
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

launch() {
    local deepspeed_args=()
    [[ -n "$DEEPSPEED_CONFIG" ]] && deepspeed_args=(--deepspeed "$DEEPSPEED_CONFIG")
    # DeepSpeed's CPU accelerator (no GPU): the Trainer must then set up gloo processes itself.
    [[ "${DS_ACCELERATOR:-}" == cpu ]] && deepspeed_args+=(--use_cpu true)
    set -x
    deepspeed --num_gpus "$NUM_GPUS" --master_port "$MASTER_PORT" --module mcmdpo.train "$@" "${deepspeed_args[@]}"
}
