#!/usr/bin/env bash
# On-policy rounds: SFT once, then ROUNDS times: build preference pairs from the previous model's
# own samples (python -m mcmdpo.build: collect, correct, sample, rank, pair), train the preference
# stage on them from that model, and measure it. One folder per round:
#
#   OUTPUT_ROOT/sft                      the SFT checkpoint (round 0)
#   OUTPUT_ROOT/round<r>/build/          the build's stage files, build_report.json and pairs.json
#   OUTPUT_ROOT/round<r>/model/          the checkpoint trained on them
#   OUTPUT_ROOT/round<r>/preferences.json  held-out margins and accuracies (PREF_TEST)
#   OUTPUT_ROOT/round<r>/scores.json       alt-text scores on TEST_DATA (when set)
#   OUTPUT_ROOT/rounds.json, rounds.png  every round's figures side by side
#
#   MODEL_PATH=llava-hf/llava-v1.6-vicuna-7b-hf SFT_DATA_PATH=my_alt_text.json IMAGE_FOLDER=images \
#       PREF_TEST=held_out_pairs.json ROUNDS=3 bash scripts/iterate.sh
#
# Variables (defaults in parentheses):
#   ROUNDS          rounds after SFT                                   (2)
#   OUTPUT_ROOT     where the rounds go                                (checkpoints/iterate)
#   MODEL_PATH      the model SFT starts from                          (llava-hf/llava-v1.6-vicuna-7b-hf)
#   SFT_DATA_PATH   the user's alt-text: SFT trains on it and every round builds its pairs from it
#                                                                      (playground/data/sft_train.json)
#   IMAGE_FOLDER    folder the image paths are relative to             (playground/data/image)
#   PREF_TEST       held-out preference pairs for the margins          (playground/data/pref_test.json)
#   TEST_DATA       a test file to write and score alt-text for        (unset: no alt-text scores)
#   PREFERENCE      mcmdpo or dpo                                      (mcmdpo)
#   BUILD_ARGS      flags of python -m mcmdpo.build for every round (e.g. "--num_candidates 8
#                   --corrector endpoint:URL"); each round samples with --seed <round>
#   SFT_EXTRA_ARGS, PREF_EXTRA_ARGS   extra flags of the SFT and of the preference stage
#   RESUME=1        continue: finished rounds are kept, an unfinished build or training resumes
# Every variable of scripts/sft.sh and of the preference stage's script applies to both stages
# (NUM_GPUS, DEEPSPEED_CONFIG, EXTRA_ARGS, ...).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-2}
OUTPUT_ROOT=${OUTPUT_ROOT:-checkpoints/iterate}
SFT_DATA_PATH=${SFT_DATA_PATH:-playground/data/sft_train.json}
IMAGE_FOLDER=${IMAGE_FOLDER:-playground/data/image}
PREF_TEST=${PREF_TEST:-playground/data/pref_test.json}
PREFERENCE=${PREFERENCE:-mcmdpo}
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "error: ROUNDS must be a whole number of rounds (1 or more), got '$ROUNDS'" >&2; exit 2; }
[[ "$PREFERENCE" == mcmdpo || "$PREFERENCE" == dpo ]] || { echo "error: PREFERENCE must be mcmdpo or dpo, got $PREFERENCE" >&2; exit 2; }
for input in "$SFT_DATA_PATH" "$PREF_TEST" ${TEST_DATA:+"$TEST_DATA"}; do
    [[ -f "$input" ]] || { echo "error: $input: no such file" >&2; exit 2; }
done
if [[ -x .venv/bin/python ]]; then PYTHON=${PYTHON:-.venv/bin/python}; else PYTHON=${PYTHON:-python}; fi
export IMAGE_FOLDER
mkdir -p "$OUTPUT_ROOT"

# trained FOLDER: a finished training run wrote its model there.
trained() { [[ -f "$1/trainer_state.json" && -f "$1/config.json" ]]; }
# fresh FOLDER: without RESUME=1, an earlier run's output is not mixed in.
fresh() { [[ "${RESUME:-}" == 1 ]] || rm -rf "$1"; }

# measure MODEL FOLDER: held-out margins, and alt-text scores when TEST_DATA is set.
measure() {
    "$PYTHON" -m mcmdpo.eval.preferences --model_name "$1" --data_path "$PREF_TEST" --image_folder "$IMAGE_FOLDER" \
        --output "$2/preferences.json" > /dev/null
    if [[ -n "${TEST_DATA:-}" ]]; then
        "$PYTHON" mcmdpo_inference.py --model_name "$1" --test_datasets "$TEST_DATA" --image_folder "$IMAGE_FOLDER" \
            --eval_output "$2/predictions.jsonl" --overwrite --quiet
        "$PYTHON" get_score.py --file "$2/predictions.jsonl" --summary_json "$2/scores.json" > /dev/null
    fi
}

SFT_DIR="$OUTPUT_ROOT/sft"
if ! { [[ "${RESUME:-}" == 1 ]] && trained "$SFT_DIR" && [[ -f "$SFT_DIR/preferences.json" ]]; }; then
    echo "== SFT -> $SFT_DIR"
    trained "$SFT_DIR" && [[ "${RESUME:-}" == 1 ]] || MODEL_PATH=${MODEL_PATH:-llava-hf/llava-v1.6-vicuna-7b-hf} \
        DATA_PATH="$SFT_DATA_PATH" OUTPUT_DIR="$SFT_DIR" EXTRA_ARGS="${EXTRA_ARGS:-} ${SFT_EXTRA_ARGS:-}" bash scripts/sft.sh
    measure "$SFT_DIR" "$SFT_DIR"
fi

previous="$SFT_DIR"
for (( round = 1; round <= ROUNDS; round++ )); do
    folder="$OUTPUT_ROOT/round$round"
    if [[ "${RESUME:-}" == 1 && -f "$folder/done" ]]; then
        echo "== round $round: done earlier ($folder)"
        previous="$folder/model"
        continue
    fi
    fresh "$folder"
    mkdir -p "$folder"
    echo "== round $round: pairs from $previous's samples -> $folder/build"
    # shellcheck disable=SC2086  # BUILD_ARGS is a list of flags
    "$PYTHON" -m mcmdpo.build --data_path "$SFT_DATA_PATH" --image_folder "$IMAGE_FOLDER" --output_dir "$folder/build" \
        --sampler_model "$previous" --seed "$round" ${BUILD_ARGS:-}
    echo "== round $round: $PREFERENCE on them, from $previous -> $folder/model"
    trained "$folder/model" || MODEL_PATH="$previous" DATA_PATH="$folder/build/pairs.json" OUTPUT_DIR="$folder/model" \
        EXTRA_ARGS="${EXTRA_ARGS:-} ${PREF_EXTRA_ARGS:-}" bash "scripts/$PREFERENCE.sh"
    measure "$folder/model" "$folder"
    date > "$folder/done"
    previous="$folder/model"
done
"$PYTHON" -m mcmdpo.build.rounds "$OUTPUT_ROOT"
