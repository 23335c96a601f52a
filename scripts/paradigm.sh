#!/usr/bin/env bash
# The paper's paradigm study, one command per paradigm: SFT, then the preference stage
# (PREFERENCE=mcmdpo, the default, or dpo), each with that paradigm's vision-encoder setting:
#
#   paradigm   SFT stage   alignment stage
#   a          frozen      frozen
#   b          frozen      trained
#   c          trained     frozen
#   d          trained     trained      (the original's, and the paper's best)
#
#   bash scripts/paradigm.sh d
#
# Writes checkpoints/paradigm_<x>/sft and checkpoints/paradigm_<x>/<PREFERENCE> (OUTPUT_ROOT
# overrides checkpoints/paradigm_<x>). Every other variable of scripts/sft.sh and of the stage
# script applies to both stages (NUM_GPUS, DEEPSPEED_CONFIG, IMAGE_FOLDER, EXTRA_ARGS, ...);
# SFT_MODEL_PATH, SFT_DATA_PATH and SFT_EXTRA_ARGS set the first stage's model, data and extra
# flags, PREF_DATA_PATH and PREF_EXTRA_ARGS the second stage's (e.g. "--reference_cache_dir D").
set -euo pipefail
cd "$(dirname "$0")/.."

PARADIGM=${1:-}
case "$PARADIGM" in
    a) SFT_VE=false; PREF_VE=false ;;
    b) SFT_VE=false; PREF_VE=true ;;
    c) SFT_VE=true; PREF_VE=false ;;
    d) SFT_VE=true; PREF_VE=true ;;
    *) echo "usage: bash scripts/paradigm.sh a|b|c|d   (PREFERENCE=mcmdpo|dpo)" >&2; exit 2 ;;
esac
PREFERENCE=${PREFERENCE:-mcmdpo}
if [[ "$PREFERENCE" != mcmdpo && "$PREFERENCE" != dpo ]]; then
    echo "error: PREFERENCE must be mcmdpo or dpo, got $PREFERENCE" >&2
    exit 2
fi
OUTPUT_ROOT=${OUTPUT_ROOT:-checkpoints/paradigm_$PARADIGM}

echo "paradigm ($PARADIGM): vision encoder trained in SFT: $SFT_VE, in $PREFERENCE: $PREF_VE -> $OUTPUT_ROOT"
TRAIN_VISION_TOWER=$SFT_VE MODEL_PATH=${SFT_MODEL_PATH:-${MODEL_PATH:-llava-hf/llava-v1.6-vicuna-7b-hf}} \
    DATA_PATH=${SFT_DATA_PATH:-playground/data/sft_train.json} OUTPUT_DIR="$OUTPUT_ROOT/sft" \
    EXTRA_ARGS="${EXTRA_ARGS:-} ${SFT_EXTRA_ARGS:-}" bash scripts/sft.sh
TRAIN_VISION_TOWER=$PREF_VE MODEL_PATH="$OUTPUT_ROOT/sft" \
    DATA_PATH=${PREF_DATA_PATH:-playground/data/pref_train.json} OUTPUT_DIR="$OUTPUT_ROOT/$PREFERENCE" \
    EXTRA_ARGS="${EXTRA_ARGS:-} ${PREF_EXTRA_ARGS:-}" bash "scripts/$PREFERENCE.sh"
