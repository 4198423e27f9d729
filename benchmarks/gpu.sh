#!/usr/bin/env bash
# GPU figures in one go (meant to take under 5 minutes; not yet timed on a GPU):
#   1. training images/s of pyrovae's step against the plain PyTorch loop, MLP 784-400-50 and
#      the conv network at batch 256, in float32, under bf16 autocast (--precision bf16) and
#      compiled (--compile), each pair side by side in one process
#      (benchmarks/train_throughput.py; the target is a ratio >= 0.9);
#   2. time to quality: seconds of training of `pyrovae train --preset best` at batch 256
#      until test log p(x) (K=1000, first 2000 test images) reaches -235 nats
#      (benchmarks/time_to_quality.py).
# Copy the tables it prints into benchmarks/README.md, with the GPU's name and the date.
#
# Usage, from the repository root, in an environment with pyrovae installed:
#   bash benchmarks/gpu.sh                 # needs CUDA; writes under runs/gpu-bench/
#   DEVICE=cpu bash benchmarks/gpu.sh --smoke   # a quick check that it runs, on a CPU
set -euo pipefail

DEVICE=${DEVICE:-cuda}
DATA_DIR=${DATA_DIR:-/usr/share/datasets/fashion-mnist}
OUT=${OUT:-runs/gpu-bench}
smoke=0
[[ "${1:-}" == "--smoke" ]] && smoke=1

if [[ "$DEVICE" == cuda* ]] && ! python -c 'import torch, sys; sys.exit(not torch.cuda.is_available())'; then
    echo "gpu.sh: no CUDA device visible to torch; it measures a GPU (DEVICE=cpu bash benchmarks/gpu.sh --smoke to check it runs)" >&2
    exit 1
fi
if [[ ! -f "$DATA_DIR/t10k-images-idx3-ubyte.gz" && ! -f "$DATA_DIR/t10k-images-idx3-ubyte" ]]; then
    echo "gpu.sh: no Fashion-MNIST IDX files in $DATA_DIR (apt-get install dataset-fashion-mnist, or set DATA_DIR)" >&2
    exit 1
fi
mkdir -p "$OUT"
python -c 'import torch; print("torch", torch.__version__, "|",
    torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")'

if (( smoke )); then
    reps=1; images=512; budget=5; k=20; test=100; chunk=1; archs="mlp"
else
    reps=5; images=51200; budget=120; k=1000; test=2000; chunk=2; archs="mlp conv"
fi

echo "== training images/s, pyrovae / plain PyTorch, batch 256"
python benchmarks/train_throughput.py --device "$DEVICE" --arch $archs --batch-size 256 \
    --reps "$reps" --images "$images" --json "$OUT/throughput-fp32.json"
python benchmarks/train_throughput.py --device "$DEVICE" --arch $archs --batch-size 256 \
    --reps "$reps" --images "$images" --precision bf16 --no-memory --json "$OUT/throughput-bf16.json"
python benchmarks/train_throughput.py --device "$DEVICE" --arch mlp --batch-size 256 \
    --reps "$reps" --images "$images" --compile --no-memory --json "$OUT/throughput-compile.json"

echo "== time to log p(x) >= -235 nats, --preset best, batch 256"
rm -rf "$OUT/time-to-quality"
python benchmarks/time_to_quality.py --device "$DEVICE" --data-dir "$DATA_DIR" \
    --out "$OUT/time-to-quality" --budget "$budget" --chunk "$chunk" -k "$k" --test-size "$test" \
    | tee "$OUT/time-to-quality.txt"
