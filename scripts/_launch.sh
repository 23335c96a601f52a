# Shared by the stage scripts (sourced after each has set STAGE and its paths): the recipe, the
# environment's overrides of it, and the launch. Every default of a run lives in
# configs/$STAGE.yaml; a variable named here overrides its value when set, and changes nothing
# when unset or empty. Gradient accumulation follows from the global batch in Python, over every
# process of every node (WORLD_SIZE, which the launchers set).
#
# Where the processes run (README "Several nodes"):
#   one node (default)  deepspeed --num_gpus NUM_GPUS (4)
#   NNODES > 1          torchrun-style rendezvous: the same command on every node with its
#                       NODE_RANK (0..NNODES-1), meeting at MASTER_ADDR:MASTER_PORT (node 0);
#                       NUM_GPUS processes per node
#   HOSTFILE            DeepSpeed's hostfile ("host slots=N" per line): run on the first host, the
#                       launcher starts the others over ssh; with NODE_RANK (and MASTER_ADDR) set,
#                       one launcher per node and no ssh. NUM_GPUS, when set, replaces the slots.
if [[ -n "${PREFERENCE_STEP+set}" ]]; then  # the old variable, set (even empty): say what replaced it
    echo "error: PREFERENCE_STEP is now SEQUENCE_PACKING: tree (was packed) or none (was plain)" >&2
    exit 2
fi
NNODES=${NNODES:-1}
# Every node must name the same port: random only where one node launches everything.
if [[ -z "${MASTER_PORT:-}" ]]; then
    if [[ "$NNODES" != 1 || -n "${HOSTFILE:-}" ]]; then MASTER_PORT=29500; else MASTER_PORT=$(( 29500 + RANDOM % 1000 )); fi
fi
# The launcher of the active environment, else the one scripts/install.sh put in .venv.
if ! command -v deepspeed >/dev/null && [[ -x .venv/bin/deepspeed ]]; then
    export PATH="$PWD/.venv/bin:$PATH"
fi

ARGS=(
    --config "configs/$STAGE.yaml"
    --model_name_or_path "$MODEL_PATH"
    --data_path "$DATA_PATH"
    --image_folder "$IMAGE_FOLDER"
    --output_dir "$OUTPUT_DIR"
)

# pass_if_set VARIABLE FLAG: FLAG with the variable's value, when the variable is set.
pass_if_set() {
    [[ -n "${!1:-}" ]] && ARGS+=("$2" "${!1}")
    return 0
}

# pass_words_if_set VARIABLE FLAG: the same for a list flag, one value per word.
pass_words_if_set() {
    local -a values
    [[ -n "${!1:-}" ]] || return 0
    read -ra values <<< "${!1}"
    ARGS+=("$2" "${values[@]}")
}

# The overrides every stage takes.
pass_if_set LEARNING_RATE --learning_rate
pass_if_set EPOCHS --num_train_epochs
pass_if_set PER_DEVICE_BATCH --per_device_train_batch_size
pass_if_set GLOBAL_BATCH --global_batch_size
pass_if_set MAX_LENGTH --max_length
pass_if_set BF16 --bf16
pass_if_set TRAIN_VISION_TOWER --train_vision_tower
pass_if_set IMAGE_ASPECT_RATIO --image_aspect_ratio
pass_if_set MAX_GRAD_NORM --max_grad_norm
pass_if_set VISION_TOWER_LR --vision_tower_lr
pass_if_set PROJECTOR_LR --projector_lr
# RESUME=1: continue from the newest complete checkpoint in OUTPUT_DIR (or start, if there is none).
[[ "${RESUME:-}" == 1 ]] && ARGS+=(--resume_from_checkpoint last)

# descendants PID: every process below PID.
descendants() {
    local child
    for child in $(pgrep -P "$1"); do
        echo "$child"
        descendants "$child"
    done
}

# On SIGTERM (a scheduler's notice before it kills the job), the training processes are told, not
# the launcher (DeepSpeed's would kill them 30 s later): each saves a checkpoint at the next
# step boundary and exits with status 75, which the launcher and this script pass on. RESUME=1
# then continues from that checkpoint.
forward_sigterm() {
    local pid
    date > "$SIGTERM_STAMP"
    for pid in $(descendants "$1"); do
        if tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "-m mcmdpo.train"; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
}

# launch_fail MESSAGE: stop before anything starts.
launch_fail() {
    echo "error: $1" >&2
    exit 2
}

# launcher_command: the launcher for this node, into LAUNCHER (see the top of this file).
launcher_command() {
    [[ "$NNODES" =~ ^[1-9][0-9]*$ ]] || launch_fail "NNODES must be a whole number of nodes, got '$NNODES'"
    if [[ -n "${NODE_RANK:-}" ]] && ! [[ "$NODE_RANK" =~ ^[0-9]+$ ]]; then
        launch_fail "NODE_RANK must be this node's number (0 for the node at MASTER_ADDR), got '$NODE_RANK'"
    fi
    if [[ -n "${HOSTFILE:-}" ]]; then
        [[ -f "$HOSTFILE" ]] || launch_fail "HOSTFILE $HOSTFILE: no such file"
        [[ "$NNODES" == 1 ]] || launch_fail "HOSTFILE and NNODES both set: the hostfile lists the nodes; unset NNODES"
        LAUNCHER=(deepspeed --hostfile "$HOSTFILE" --master_port "$MASTER_PORT")
        [[ -n "${NUM_GPUS:-}" ]] && LAUNCHER+=(--num_gpus "$NUM_GPUS")
        [[ -n "${MASTER_ADDR:-}" ]] && LAUNCHER+=(--master_addr "$MASTER_ADDR")
        if [[ -n "${NODE_RANK:-}" ]]; then
            [[ -n "${MASTER_ADDR:-}" ]] || launch_fail "HOSTFILE with NODE_RANK (one launcher per node) needs MASTER_ADDR, the first host's address"
            LAUNCHER+=(--no_ssh --node_rank "$NODE_RANK")
        fi
        LAUNCHER+=(--module mcmdpo.train)
    elif (( NNODES > 1 )); then
        [[ -n "${NODE_RANK:-}" ]] || launch_fail "NNODES=$NNODES needs NODE_RANK, this node's number (0..$(( NNODES - 1 )); under Slurm \$SLURM_NODEID)"
        [[ -n "${MASTER_ADDR:-}" ]] || launch_fail "NNODES=$NNODES needs MASTER_ADDR, the address of node 0 (every node must reach it)"
        (( NODE_RANK < NNODES )) || launch_fail "NODE_RANK $NODE_RANK is not below NNODES $NNODES"
        LAUNCHER=(torchrun --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "${NUM_GPUS:-4}"
                  --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" -m mcmdpo.train)
    else
        [[ -z "${NODE_RANK:-}" || "$NODE_RANK" == 0 ]] || launch_fail "NODE_RANK $NODE_RANK without NNODES: set NNODES, the number of nodes"
        LAUNCHER=(deepspeed --num_gpus "${NUM_GPUS:-4}" --master_port "$MASTER_PORT" --module mcmdpo.train)
    fi
}

# launch: the recipe, the paths and overrides (ARGS), then DEEPSPEED_CONFIG, then EXTRA_ARGS last
# so that its flags win.
launch() {
    local deepspeed_args=() launcher status
    local -a LAUNCHER
    launcher_command
    [[ -n "$DEEPSPEED_CONFIG" ]] && deepspeed_args=(--deepspeed "$DEEPSPEED_CONFIG")
    if [[ "${DS_ACCELERATOR:-}" == cpu ]]; then
        # DeepSpeed's CPU accelerator (no GPU): the Trainer must then set up gloo processes itself.
        deepspeed_args+=(--use_cpu true)
        # The processes share this machine's cores: each using them all makes every step ~3x
        # slower (2 processes on 2 cores). Only where unset: torchrun sets 1 itself.
        if [[ -z "${OMP_NUM_THREADS:-}" ]]; then
            OMP_NUM_THREADS=$(( $(nproc) / ${NUM_GPUS:-4} ))
            (( OMP_NUM_THREADS > 0 )) || OMP_NUM_THREADS=1
            export OMP_NUM_THREADS
        fi
    fi
    set -x
    # shellcheck disable=SC2086  # EXTRA_ARGS is split into flags on purpose
    "${LAUNCHER[@]}" "${ARGS[@]}" "${deepspeed_args[@]}" $EXTRA_ARGS &
    { set +x; } 2>/dev/null
    launcher=$!
    SIGTERM_STAMP=$(mktemp)
    trap 'forward_sigterm "$launcher"' TERM
    # wait returns early when the trap runs: wait again until the launcher has exited.
    while true; do
        wait "$launcher" && status=0 || status=$?
        kill -0 "$launcher" 2>/dev/null || break
    done
    trap - TERM
    # torchrun reports a worker's exit status 75 as 1: a run told to stop that has marked a
    # checkpoint complete since then was preempted, whichever launcher ran it.
    if (( status != 0 && status != 75 )) && [[ -s "$SIGTERM_STAMP" ]] &&
        [[ -n "$(find "$OUTPUT_DIR" -maxdepth 2 -name checkpoint_complete -newer "$SIGTERM_STAMP" 2>/dev/null)" ]]; then
        status=75
    fi
    rm -f "$SIGTERM_STAMP"
    return "$status"
}
