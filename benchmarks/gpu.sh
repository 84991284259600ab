#!/usr/bin/env bash
# Run every c2l benchmark on a CUDA machine in a few minutes; JSON results go to the folder named by the
# first argument or $OUT (default ./bench-out). Each benchmark measures the plain eager fp32 path beside
# the fast paths in the same process, so every figure is also a ratio; summarize.py turns the JSON files
# into the table of docs/performance.md (summary.md).
#
#   benchmarks/gpu_wheels.sh          # once, on a machine with PyPI: wheels the GPU image lacks → .whl/
#   bash benchmarks/gpu.sh "$OUT"     # on the GPU machine (device tool: carry [".whl"], timeout_s 600)
#
# Budget: the whole script stops starting new work after BENCH_TOTAL seconds (default 420) and every
# benchmark has its own cap; the torch.compile variants run last and only while time is left, so the core
# figures always come back. Environment:
#   BENCH_DEVICE=cuda|cpu   where to run (cpu: a plumbing check of this script, with BENCH_QUICK=1)
#   BENCH_QUICK=1           tiny settings for every benchmark (minutes on a 2-core CPU, seconds on a GPU)
#   BENCH_COMPILE=0|1       the torch.compile variants (default: 1 on CUDA, 0 when BENCH_QUICK=1)
#   BENCH_TOTAL=seconds     the overall budget (default 420); PYTHON=python interpreter (default python3)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-bench-out}}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-python3}"
if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/c2l-site .whl/*.whl \
        && export PYTHONPATH="/tmp/c2l-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
DEV="${BENCH_DEVICE:-cuda}"
QUICK="${BENCH_QUICK:-0}"
if [ "$QUICK" = 1 ]; then COMPILE="${BENCH_COMPILE:-0}"; else COMPILE="${BENCH_COMPILE:-1}"; fi
TOTAL="${BENCH_TOTAL:-420}"
START=$SECONDS

{ nvidia-smi || true; "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no cuda")'; } \
    > "$OUT_DIR/device.txt" 2>&1
echo "device: $(tail -n 1 "$OUT_DIR/device.txt")  quick=$QUICK compile=$COMPILE budget=${TOTAL}s" >&2

: > "$OUT_DIR/runs.tsv"
run() {  # run NAME CAP_SECONDS ARGS…: stdout (JSON) → NAME.json, stderr → NAME.log; a line in runs.tsv
    local name=$1 cap=$2; shift 2
    local left=$((TOTAL - (SECONDS - START)))
    if [ "$left" -lt 20 ]; then
        echo "== $name: skipped (budget spent)" >&2
        printf '%s\tskipped\t0\n' "$name" >> "$OUT_DIR/runs.tsv"
        return
    fi
    local limit=$((cap < left ? cap : left))
    local t0=$SECONDS
    echo "== $name (≤ ${limit} s): $*" >&2
    timeout -k 5 "$limit" "$@" > "$OUT_DIR/$name.json" 2> "$OUT_DIR/$name.log"
    local rc=$?
    if [ "$rc" -eq 0 ]; then
        echo "   ok in $((SECONDS - t0)) s" >&2
        printf '%s\tok\t%s\n' "$name" "$((SECONDS - t0))" >> "$OUT_DIR/runs.tsv"
    else
        echo "   FAILED (exit $rc) after $((SECONDS - t0)) s; tail of $name.log:" >&2
        tail -n 5 "$OUT_DIR/$name.log" >&2
        printf '%s\tfailed(%s)\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >> "$OUT_DIR/runs.tsv"
    fi
}

if [ "$QUICK" = 1 ]; then
    SG=(--batch-sizes 1 --iters 1 --warmup 0 --variants float32)
    PR=(--steps 4 --batch-sizes 1 --reps 1 --variants eager,graph)
    PRC=(--steps 4 --batch-sizes 1 --compile-batches 1 --reps 1 --variants compile+graph)
    CL=(--batches 1 --min-time 0 --min-iters 1 --input-size 64)
    SM=(--candidates 2 --repeats 1 --warmup 0 --no-stages --batch-size 2)
    SMF=(--candidates 2 --repeats 1 --warmup 0 --no-stages --batch-size 2)
    TR=(--batch-size 16 --dim 64 --steps-cpu 1 --steps-cuda 2 --variants fp32,bf16+fused,bf16+fused+graph)
    TRC=(--batch-size 16 --dim 64 --steps-cpu 1 --steps-cuda 2 --variants fp32,bf16+fused+compile)
    GD=(--n-samples 2 --batch-size 2)
    SGC=(--batch-sizes 1 --iters 1 --warmup 0 --variants float32,float16+compile)
else
    SG=(--batch-sizes 1 32 --iters 10 --warmup 3)
    PR=(--steps 4 1000 --batch-sizes 1 16 --reps 5 --reps-long 1 --variants eager,graph)
    PRC=(--steps 4 1000 --batch-sizes 16 --compile-batches 16 --reps 5 --reps-long 1 --variants compile+graph)
    CL=(--batches 1,16,64 --min-time 1 --min-iters 3)
    SM=(--repeats 10 --warmup 2)
    SMF=(--repeats 3 --warmup 1 --no-stages)
    TR=(--steps-cuda 50 --variants fp32,bf16+fused,bf16+fused+graph)
    TRC=(--steps-cuda 50 --variants bf16+fused+compile)
    GD=(--n-samples 1024 --batch-size 64)
    SGC=(--batch-sizes 32 --iters 10 --warmup 3 --variants float32,float16+compile)
fi

# the core figures (each with its eager fp32 baseline), most important first
run prior       150 "$PY" benchmarks/prior.py    --device "$DEV" "${PR[@]}"
run sample      150 "$PY" benchmarks/sample.py   --device "$DEV" "${SM[@]}"
run sample_fp32 120 env C2L_CUDA_GRAPHS=0 "$PY" benchmarks/sample.py --device "$DEV" --dtype float32 "${SMF[@]}"
run stylegan    150 "$PY" benchmarks/stylegan.py --device "$DEV" "${SG[@]}"
run train       120 "$PY" benchmarks/train.py    --device "$DEV" "${TR[@]}"
run gendata     150 "$PY" benchmarks/gendata.py  --device "$DEV" "${GD[@]}"
run clip         90 "$PY" benchmarks/clip.py     --device "$DEV" "${CL[@]}"
# torch.compile variants: slow to build, so last, each in its own process (a timeout loses only itself)
if [ "$COMPILE" = 1 ]; then
    run prior_compile    150 "$PY" benchmarks/prior.py    --device "$DEV" "${PRC[@]}"
    run train_compile    150 "$PY" benchmarks/train.py    --device "$DEV" "${TRC[@]}"
    run stylegan_compile 150 "$PY" benchmarks/stylegan.py --device "$DEV" "${SGC[@]}"
fi
echo "total $((SECONDS - START)) s" >&2
SUMDEV="${DEV%%:*}"
"$PY" benchmarks/summarize.py "$OUT_DIR" --device "$SUMDEV" > "$OUT_DIR/summary.md" 2> "$OUT_DIR/summary.log" || true
cat "$OUT_DIR/summary.md" >&2
