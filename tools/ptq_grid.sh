#!/usr/bin/env bash
# The PTQ methods' Wall grid on the CPU backend (issue 18), one run at a time, resumable:
# every report is rewritten after each episode and an existing one resumes. EPISODES sets
# the episode count of this pass (a later pass with more episodes continues the same
# reports). All runs share one calibration inputs file (CALIB), captured by the first.
#   EPISODES=10 nice -n 19 bash tools/ptq_grid.sh
set -u
QWM=${QWM:-target/release/qwm}
EPISODES=${EPISODES:-10}
OUT=${OUT:-docs/results/vm-cpu/ptq}
CALIB=${CALIB:-/var/tmp/ptq/wall.calib.safetensors}
CALIB_EPISODES=${CALIB_EPISODES:-8}
mkdir -p "$OUT"
# method:spec pairs, most informative first (per-channel 4 and 3 bits separate the methods).
CELLS="gptq:w4 awq:w4 omniquant:w4 gptq:w3 awq:w3 omniquant:w3 smoothquant:w4a8 gptq:w4a8 awq:w4a8 omniquant:w4a8 rtn:w4a8 smoothquant:w8a8 gptq:w8a8 awq:w8a8 omniquant:w8a8 gptq:w4g32 awq:w4g32 omniquant:w4g32"
for cell in $CELLS; do
  m=${cell%%:*}; s=${cell#*:}
  echo "== $m $s ($EPISODES episodes) $(date -u +%H:%M:%S)"
  RAYON_NUM_THREADS=1 "$QWM" eval --env wall --backend cpu --quant "$s" --method "$m" \
    --calib "$CALIB" --calib-episodes "$CALIB_EPISODES" --episodes "$EPISODES" --json "$OUT/wall_${s}_${m}.json" 2>&1 | tail -4
done
echo "== done $(date -u +%H:%M:%S)"
