#!/usr/bin/env bash
# Evaluations and benchmarks on a machine with a real GPU, from a prebuilt qwm binary (no Rust
# toolchain needed there). Everything lands in OUTDIR; every step has a time limit so a slow
# step cannot eat the others' time. Evaluations are resumable JSON files: rerunning with the
# same OUTDIR continues them.
#
#   tools/gpu_run.sh QWM_BIN OUTDIR [EVAL_SECONDS] [JOBS] [EPISODES]
#
# The machine needs a Vulkan loader and the driver's ICD dependencies: on NVIDIA images
# without them, unpack Debian's libvulkan1 and libglvnd0 (+ libegl1, libgl1, libglx0) first.
# Check that `qwm info` lists the GPU: `--backend gpu` falls back to the CPU backend (with a
# notice on stderr) when no adapter opens, and the evaluations would then run on the CPU.
set -u
Q=$1
OUT=$2
EVAL_S=${3:-240}
JOBS=${4:-12}
EPISODES=${5:-50}
mkdir -p "$OUT/eval"
step() { # name seconds cmd...
    local name=$1 secs=$2
    shift 2
    local t0=$(date +%s)
    timeout "$secs" "$@" >"$OUT/$name.txt" 2>&1
    echo "$name: rc $? in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/steps.txt"
}
date -u +%FT%TZ >"$OUT/date.txt"
step info 30 "$Q" info
step smoke 40 "$Q" plan --env wall --model random --max-iter 1 --opt-steps 2 --backend gpu --out "$OUT/smoke"
# Benchmarks first (short, and what the speed targets need), then the evaluations. bench_all is
# the cross-vendor record (docs/BENCHMARKS.md, `qwm bench compare`).
step bench_all 240 "$Q" bench all --json "$OUT/bench_all.json"
step bench_quant 120 "$Q" bench quant --json "$OUT/quant.json"
step bench_kernels 60 "$Q" bench kernels --json "$OUT/kernels.json"
step bench_plan_wall 45 "$Q" bench plan --model assets/wall.safetensors --json "$OUT/plan_wall.json"
QWM_MATMUL=tiled step bench_plan_wall_f32tiled 45 "$Q" bench plan --model assets/wall.safetensors --json "$OUT/plan_wall_f32tiled.json"
step bench_model_dinowm 90 "$Q" bench model --config dinowm --no-cpu --batches 1,32,300 --reps 1 --json "$OUT/model_dinowm.json"
# Float results for both shipped models and the Wall quantization grid (RTN), in parallel.
# The Wall model's layers are 64 to 192 wide, so its coarse group is g64: g128 is refused.
JOBLIST="pointmaze:fp wall:fp wall:w8 wall:w8g64 wall:w8g32 wall:w6 wall:w6g64 wall:w6g32 \
wall:w4 wall:w4g64 wall:w4g32 wall:w3 wall:w3g64 wall:w3g32 wall:w2 wall:w2g64 wall:w2g32 \
wall:w8a8 wall:w8a8t wall:w4a8"
t0=$(date +%s)
printf '%s\n' $JOBLIST | xargs -P "$JOBS" -I{} sh -c 'e=${1%%:*}; q=${1#*:}; \
    timeout '"$EVAL_S"' '"$Q"' eval --env $e --backend gpu --quant $q --episodes '"$EPISODES"' \
    --json '"$OUT"'/eval/${e}_$q.json > '"$OUT"'/eval/${e}_$q.log 2>&1' _ {}
echo "eval: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/steps.txt"
