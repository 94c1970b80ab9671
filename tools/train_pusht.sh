#!/usr/bin/env bash
# Train (or resume) the PushT world model in stages; every stage is resumable, so rerunning
# this script after an interruption (or in a later session) continues where the run stopped.
# docs/MODELS.md (PushT) explains the settings.
#
#   tools/train_pusht.sh [WORK] [QWM]        train or resume (run from the repository root)
#   tools/train_pusht.sh --save [WORK]       copy the run's resume files into assets/train/pusht/
#
# WORK (default /var/tmp/qwm-pusht) holds the dataset (WORK/data, regenerated
# deterministically when missing: ~1.5 min) and the run (WORK/pusht.safetensors and its run
# directory WORK/pusht.safetensors.train). A new session continues the run from the files
# `--save` committed (assets/train/pusht/{checkpoint.safetensors,state.json,loss.csv}): when
# WORK has no run yet they are copied in before training resumes. `state.json` records the
# dataset path, so WORK must be the path of the original run (/var/tmp/qwm-pusht).
#
# Stages (the schedule is the only thing that changes between them):
#   A. encoder: 16 epochs of 250 steps (pixel head + probes on agent and block pose +
#      temporal-distance term);
#   B. predictor: PRED_EPOCHS (default 60) epochs of 500 steps (teacher forcing), no decoder;
#   C. decoder: 1 epoch of 1000 steps (visualization only).
# Short epochs because a checkpoint is written only at the end of an epoch: on a shared
# 2-core box a niced run may get a few percent of a core, and an interruption loses at most
# one epoch.
# Each stage ends by writing WORK/pusht.safetensors. Run it under `nice -n 19` on a shared box.
set -euo pipefail
SAVED=assets/train/pusht
if [ "${1:-}" = "--save" ]; then
    RUN=${2:-/var/tmp/qwm-pusht}/pusht.safetensors.train
    mkdir -p "$SAVED"
    # A consistent pair: qwm train renames the checkpoint, then state.json, into place at
    # each epoch's end; retry until both copies equal their sources and the state is the
    # newer file (not between the two renames).
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        cp "$RUN/checkpoint.safetensors" "$RUN/state.json" "$RUN/loss.csv" "$RUN/loss.png" "$SAVED/"
        if cmp -s "$RUN/checkpoint.safetensors" "$SAVED/checkpoint.safetensors" &&
            cmp -s "$RUN/state.json" "$SAVED/state.json" &&
            [ ! "$RUN/checkpoint.safetensors" -nt "$RUN/state.json" ]; then
            break
        fi
        sleep 5
    done
    tail -n +2 "$SAVED/loss.csv" | cut -d, -f1 | sort | uniq -c
    echo "saved to $SAVED ($(du -sh "$SAVED" | cut -f1)); commit it"
    exit 0
fi
WORK=${1:-/var/tmp/qwm-pusht}
Q=${2:-target/release/qwm}
PRED_EPOCHS=${PRED_EPOCHS:-60}
DATA=$WORK/data
OUT=$WORK/pusht.safetensors
RUN=$OUT.train
mkdir -p "$WORK"
if [ ! -f "$RUN/state.json" ] && [ -f "$SAVED/state.json" ]; then
    echo "resuming the committed run in $SAVED"
    mkdir -p "$RUN"
    cp "$SAVED/checkpoint.safetensors" "$SAVED/state.json" "$SAVED/loss.csv" "$RUN/"
fi
"$Q" data --env pusht --episodes 1000 --steps 100 --seed 0 --size 64 --out "$DATA"
COMMON=(--env pusht --data "$DATA" --out "$OUT" --resize 64 --patch 16
    --probe-state 0,1,2,3,4 --flat-probe-weight 1 --td-weight 30 --seed 0)
count() { # finished epochs of a phase
    if [ -f "$RUN/loss.csv" ]; then grep -c "^$1," "$RUN/loss.csv" || true; else echo 0; fi
}
if [ "$(count predictor)" -eq 0 ] && [ "$(count encoder)" -lt 16 ]; then
    echo "stage A: encoder ($(count encoder)/16 epochs done)"
    "$Q" train "${COMMON[@]}" --encoder-epochs 16 --predictor-epochs 0 --decoder-epochs 0 \
        --max-steps-per-epoch 250
fi
if [ "$(count decoder)" -eq 0 ] && [ "$(count predictor)" -lt "$PRED_EPOCHS" ]; then
    echo "stage B: predictor ($(count predictor)/$PRED_EPOCHS epochs done)"
    "$Q" train "${COMMON[@]}" --encoder-epochs 16 --predictor-epochs "$PRED_EPOCHS" \
        --decoder-epochs 0 --max-steps-per-epoch 500
fi
echo "stage C: decoder ($(count decoder)/1 epochs done)"
"$Q" train "${COMMON[@]}" --encoder-epochs 16 --predictor-epochs "$(count predictor)" \
    --decoder-epochs 1 --max-steps-per-epoch 1000
echo "done: $OUT"
