#!/usr/bin/env bash
# Run every c2l benchmark on a CUDA machine in a few minutes; JSON results go to the folder named by
# $OUT or the first argument (default ./bench-out). Each benchmark measures the plain eager fp32 path
# beside the fast paths in the same process, so every figure is also a ratio; summarize.py makes the
# table of docs/performance.md from the JSON files.
#
#   benchmarks/gpu_wheels.sh        # once, on a machine with PyPI: wheels the GPU image lacks → .whl/
#   benchmarks/gpu.sh "$OUT"        # on the GPU machine (device tool: carry [".whl"])
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
LIMIT="${BENCH_TIMEOUT:-240}"
DEV="${BENCH_DEVICE:-cuda}"

{ nvidia-smi || true; "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no cuda")'; } \
    > "$OUT_DIR/device.txt" 2>&1

run() {  # run NAME SCRIPT ARGS…: stdout (JSON) → NAME.json, stderr → NAME.log
    local name=$1; shift
    local t0=$SECONDS
    echo "== $name: $*" >&2
    if timeout "$LIMIT" "$PY" "$@" > "$OUT_DIR/$name.json" 2> "$OUT_DIR/$name.log"; then
        echo "   ok in $((SECONDS - t0)) s" >&2
    else
        echo "   FAILED (exit $?) after $((SECONDS - t0)) s; tail of $name.log:" >&2
        tail -n 5 "$OUT_DIR/$name.log" >&2
    fi
}

run stylegan benchmarks/stylegan.py --device "$DEV" --batch-sizes 1 8 32 --compile
run prior    benchmarks/prior.py    --device "$DEV" --steps 4 50 1000 --batch-sizes 1 16
run clip     benchmarks/clip.py     --device "$DEV" --batches 1,16,64
run sample   benchmarks/sample.py   --device "$DEV"
run train    benchmarks/train.py    --device "$DEV"
run gendata  benchmarks/gendata.py  --device "$DEV"
"$PY" benchmarks/summarize.py "$OUT_DIR" > "$OUT_DIR/summary.md" 2> "$OUT_DIR/summary.log" || true
cat "$OUT_DIR/summary.md" >&2
