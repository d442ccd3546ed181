#!/usr/bin/env bash
# One prepared accelerator benchmark (GPU or TPU machine), meant to fit in 8 minutes (the run is
# cut off by `timeout 470`; never timed on an accelerator): the training
# iteration at 64x64 and 128x128, batch 64 and 256, and generation at batch 1 and 64, each in
# float32 and bfloat16, through benchmarks/run.py; JSON to $OUT (default bench_accel.json).
#
#     bash benchmarks/gpu.sh                      # on the accelerator machine, from the repo root
#     ROWS=train-64-b4 STEPS=1 bash benchmarks/gpu.sh   # a smoke run (any machine)
#
# It uses the machine image's own jax (GPU images ship a CUDA build; our pin would replace it
# with a CPU wheel): a venv with --system-site-packages, this package installed without deps,
# and only the missing pure-Python dependencies added. The PyTorch reference
# (../shared/reference/wav2pix_torch_ref.py) runs on the CPU only, so it is not run here.
# NOT YET RUN on an accelerator: no GPU machine was lent to the sessions that wrote it.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench_accel.json}
STEPS=${STEPS:-10}
ROWS=${ROWS:-train-64-b64,train-64-b64-bf16,train-64-b256,train-64-b256-bf16,train-128-b64,train-128-b64-bf16,train-128-b256,train-128-b256-bf16,generate-64-b1,generate-64-b1-bf16,generate-64-b64,generate-64-b64-bf16,peak}
VENV=${VENV:-.venv-accel}
[ -x "$VENV/bin/python" ] || python3 -m venv --system-site-packages "$VENV"
"$VENV/bin/python" -m pip install -q --no-deps -e .
# What the image may lack; pip leaves an installed jax alone when it satisfies these.
"$VENV/bin/python" -m pip install -q 'flax>=0.12' 'optax>=0.2.8' 'orbax-checkpoint>=0.12' \
  ml_collections clu absl-py numpy scipy soundfile pillow
"$VENV/bin/python" - <<'PY'
import jax
print(f"jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.devices()}")
PY
start=$(date +%s)
timeout 470 "$VENV/bin/python" -m benchmarks.run --rows="$ROWS" --steps="$STEPS" --warmup=3 \
  --gen-steps=20 --out="$OUT"
echo "benchmarks/gpu.sh: $(( $(date +%s) - start )) s; results in $OUT"
