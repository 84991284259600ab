#!/usr/bin/env bash
# Download (here, where PyPI is reachable) the pure-Python wheels that the GPU machine's image lacks,
# into .whl/ (git-ignored). benchmarks/gpu.sh installs them there with --no-index.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation py \
    -d .whl open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 platformdirs==4.14.8
ls -la .whl
